//! Typed errors of the library. Each variant names the file, tensor or option at fault and,
//! where there is one, the fix; the CLI only adds context.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model `{model}` not found. Searched:\n{searched}\nFetch it with:\n  {fetch}")]
    ModelNotFound {
        model: String,
        searched: String,
        fetch: String,
    },

    #[error("{path}: missing {what}")]
    MissingFile { path: PathBuf, what: String },

    #[error("{path}: cannot read safetensors ({reason}); the file is truncated or corrupt: delete it and fetch it again")]
    CorruptWeights { path: PathBuf, reason: String },

    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },

    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}; the weights do not match config.json")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{path}: unexpected tensors the model does not use: {names}")]
    UnexpectedTensors { path: PathBuf, names: String },

    #[error("{path}: {field} = {value} is not supported ({supported})")]
    UnsupportedConfig {
        path: PathBuf,
        field: String,
        value: String,
        supported: String,
    },

    #[error("{path}: cannot read this configuration: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },

    #[error("download of `{file}` from `{repo}` failed: {reason}")]
    Download {
        repo: String,
        file: String,
        reason: String,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("GPU: {0}")]
    Gpu(String),

    #[error("invalid input: {0}")]
    Input(String),

    #[error("step {step}: non-finite {what}; the field keeps its state from before this step")]
    NonFinite { step: u64, what: String },

    #[error("step {step}: the field's parameters went non-finite in its AdamW update ({groups}); the field is not saved, its last checkpoint is kept: lower that group's learning rate, then resume")]
    NonFiniteField { step: u64, groups: String },

    #[error("step {step}: the DMTet grid's signed distances or deformations went non-finite in its Adam update; the surface is not saved, surface.safetensors keeps its last checkpoint: lower [refine] lr in the run's config.toml, then resume")]
    NonFiniteSurface { step: u64 },

    #[error("step {step}: the texture's field went non-finite in its AdamW update ({groups}); it is not saved, texture.safetensors keeps its last checkpoint: lower [refine.texture_adam]'s learning rate for that group in the run's config.toml, then resume")]
    NonFiniteTexture { step: u64, groups: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.into(),
            reason: err.to_string(),
        }
    }
}
