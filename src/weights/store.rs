//! A loaded set of named tensors with strict, shape-checked access.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Tensors that loaders may find in real checkpoints and legitimately ignore.
const IGNORED_SUFFIXES: &[&str] = &["embeddings.position_ids"];

/// Where tensors come from.
enum Source {
    /// Exactly the tensors read from a file.
    Loaded,
    /// Made on request with the requested shape, uniform in ±1/√fan_in (PyTorch's default
    /// init; norm weights 1, biases 0): real-size models for benchmarks without real weights.
    Random {
        rng: Box<Mutex<rand::rngs::StdRng>>,
        dtype: DType,
        device: Device,
        /// Make each tensor a `Var`, so candle computes and keeps its gradient.
        trainable: bool,
    },
    /// Made on request as zero-cost broadcast views: builds a model only to list the tensor
    /// names and shapes it needs.
    Placeholder,
}

struct Inner {
    path: PathBuf,
    /// The dtype the file stores its floating-point tensors in.
    stored_dtype: DType,
    source: Source,
    tensors: Mutex<BTreeMap<String, Tensor>>,
    used: Mutex<BTreeSet<String>>,
}

/// Named tensors read from one checkpoint file, converted to one dtype on one device.
/// Models take tensors through [`Scope`]s; [`Weights::check_all_used`] then reports leftovers.
#[derive(Clone)]
pub struct Weights(Arc<Inner>);

impl Weights {
    /// Reads a `.safetensors` file or a PyTorch pickle (`.bin`, `.pt`, `.ckpt`).
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                what: "weights file".into(),
            });
        }
        let raw: Vec<(String, Tensor)> = if is_safetensors(path) {
            candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| Error::CorruptWeights {
                    path: path.to_path_buf(),
                    reason: root_cause(&e),
                })?
                .into_iter()
                .collect()
        } else {
            candle_core::pickle::read_all(path).map_err(|e| Error::CorruptWeights {
                path: path.to_path_buf(),
                reason: root_cause(&e),
            })?
        };
        let stored_dtype = raw
            .iter()
            .map(|(_, t)| t.dtype())
            .find(|d| d.is_float())
            .unwrap_or(dtype);
        let mut tensors = BTreeMap::new();
        for (name, t) in raw {
            let t = if t.dtype().is_float() {
                t.to_dtype(dtype)?
            } else {
                t
            };
            tensors.insert(name, t.to_device(device)?);
        }
        let mut weights = Self::from_tensors(path, tensors);
        Arc::get_mut(&mut weights.0)
            .expect("not shared yet")
            .stored_dtype = stored_dtype;
        Ok(weights)
    }

    /// Random weights of whatever shapes the model asks for, reproducible from `seed`.
    pub fn random(seed: u64, dtype: DType, device: &Device) -> Self {
        Self::random_with(seed, dtype, device, false)
    }

    /// As [`Self::random`], but every tensor is a `Var`: candle then computes and keeps a
    /// gradient for each weight, as stock candle modules do (benchmarks compare against it).
    pub fn random_vars(seed: u64, dtype: DType, device: &Device) -> Self {
        Self::random_with(seed, dtype, device, true)
    }

    fn random_with(seed: u64, dtype: DType, device: &Device, trainable: bool) -> Self {
        use rand::SeedableRng;
        Self::on_request(Source::Random {
            rng: Box::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed))),
            dtype,
            device: device.clone(),
            trainable,
        })
    }

    /// Zero-memory stand-ins of whatever shapes the model asks for (see [`Self::tensors`]).
    pub fn placeholder() -> Self {
        Self::on_request(Source::Placeholder)
    }

    fn on_request(source: Source) -> Self {
        Self(Arc::new(Inner {
            path: PathBuf::from("<generated weights>"),
            stored_dtype: DType::F32,
            source,
            tensors: Mutex::new(BTreeMap::new()),
            used: Mutex::new(BTreeSet::new()),
        }))
    }

    /// Wraps tensors already in memory; `path` is only used in messages.
    pub fn from_tensors(path: &Path, tensors: BTreeMap<String, Tensor>) -> Self {
        let stored_dtype = tensors
            .values()
            .map(Tensor::dtype)
            .find(|d| d.is_float())
            .unwrap_or(DType::F32);
        Self(Arc::new(Inner {
            stored_dtype,
            path: path.to_path_buf(),
            source: Source::Loaded,
            tensors: Mutex::new(tensors),
            used: Mutex::new(BTreeSet::new()),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    pub fn stored_dtype(&self) -> DType {
        self.0.stored_dtype
    }

    pub fn root(&self) -> Scope {
        Scope {
            weights: self.clone(),
            prefix: String::new(),
        }
    }

    /// Every tensor held, by name (tests use it to check that no frozen weight gets a
    /// gradient, and to compare a model's tensor layout with a reference list).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let tensors = self.0.tensors.lock().unwrap();
        tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    }

    /// Total element count of the tensors the model took.
    pub fn used_parameter_count(&self) -> usize {
        let used = self.0.used.lock().unwrap();
        let tensors = self.0.tensors.lock().unwrap();
        used.iter().map(|n| tensors[n].elem_count()).sum()
    }

    /// Fails when the file holds tensors the model never asked for (a config/weights mismatch).
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.0.used.lock().unwrap();
        let tensors = self.0.tensors.lock().unwrap();
        let extra: Vec<&str> = tensors
            .keys()
            .filter(|k| !used.contains(*k) && !IGNORED_SUFFIXES.iter().any(|s| k.ends_with(s)))
            .map(String::as_str)
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown = extra.iter().take(8).copied().collect::<Vec<_>>().join(", ");
        let more = extra.len().saturating_sub(8);
        Err(Error::UnexpectedTensors {
            path: self.0.path.clone(),
            names: if more > 0 {
                format!("{shown} … and {more} more")
            } else {
                shown
            },
        })
    }
}

/// A name prefix into [`Weights`], like `down_blocks.0.resnets.1`.
#[derive(Clone)]
pub struct Scope {
    weights: Weights,
    prefix: String,
}

impl Scope {
    pub fn at(&self, name: impl std::fmt::Display) -> Scope {
        Scope {
            weights: self.weights.clone(),
            prefix: self.full_name(&name.to_string()),
        }
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights
            .0
            .tensors
            .lock()
            .unwrap()
            .contains_key(&self.full_name(name))
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = self.full_name(name);
        let inner = &self.weights.0;
        let mut tensors = inner.tensors.lock().unwrap();
        if !tensors.contains_key(&full) {
            if let Some(t) = inner.source.make(&full, shape)? {
                tensors.insert(full.clone(), t);
            }
        }
        let t = tensors.get(&full).ok_or_else(|| Error::MissingTensor {
            path: inner.path.clone(),
            name: full.clone(),
        })?;
        if t.dims() != shape {
            return Err(Error::ShapeMismatch {
                path: inner.path.clone(),
                name: full,
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        inner.used.lock().unwrap().insert(full);
        Ok(t.clone())
    }

    /// The device of the tensors (the CPU for placeholders).
    pub fn device(&self) -> Device {
        if let Source::Random { device, .. } = &self.weights.0.source {
            return device.clone();
        }
        let tensors = self.weights.0.tensors.lock().unwrap();
        tensors
            .values()
            .next()
            .map_or(Device::Cpu, |t| t.device().clone())
    }
}

impl Source {
    /// A new tensor `name` of `shape`, or `None` for loaded weights (where absence is an error).
    fn make(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        match self {
            Source::Loaded => Ok(None),
            Source::Placeholder => Ok(Some(
                Tensor::zeros(1, DType::F32, &Device::Cpu)?.broadcast_as(shape)?,
            )),
            Source::Random {
                rng,
                dtype,
                device,
                trainable,
            } => {
                use rand::Rng;
                let n: usize = shape.iter().product();
                let values: Vec<f32> = if name.ends_with("bias") {
                    vec![0.0; n]
                } else if shape.len() == 1 {
                    vec![1.0; n]
                } else {
                    let bound = 1.0 / (n / shape[0]).max(1) as f32;
                    let bound = bound.sqrt();
                    let mut rng = rng.lock().unwrap();
                    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
                };
                let t = Tensor::from_vec(values, shape, &Device::Cpu)?
                    .to_dtype(*dtype)?
                    .to_device(device)?;
                if *trainable {
                    Ok(Some(candle_core::Var::from_tensor(&t)?.as_tensor().clone()))
                } else {
                    Ok(Some(t))
                }
            }
        }
    }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

/// Candle wraps errors in path context; the innermost message is the useful one.
fn root_cause(e: &candle_core::Error) -> String {
    let mut msg = e.to_string();
    if let candle_core::Error::WithPath { inner, .. } = e {
        msg = inner.to_string();
    }
    msg
}
