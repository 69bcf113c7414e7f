//! The prompt distribution (DreamDistribution): soft prompts, the Gaussian they define in the
//! text encoder's output space, and its losses.

pub mod distribution;
pub mod import;
pub mod learner;
pub mod sequence;

pub use distribution::{DistributionMeta, PromptDistribution};
pub use sequence::{Frame, PositionMode, Template};
