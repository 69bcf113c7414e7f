//! Finding and loading weights: the HF cache, diffusers folders, checkpoint files.

pub mod hub;
pub mod ldm_unet;
mod model_files;
mod store;
pub mod tensor_file;

pub use model_files::{ComponentFiles, Lookup, ModelFiles};
pub use store::{Scope, Weights};
pub use tensor_file::{save_atomic, TensorFile};
