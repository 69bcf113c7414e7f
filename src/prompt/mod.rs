//! The prompt distribution (DreamDistribution): soft prompts, the Gaussian they define in the
//! text encoder's output space, its losses, and the edits and compositions used at inference.

pub mod distribution;
pub mod edit;
pub mod gaussian;
pub mod import;
pub mod learner;
pub mod sequence;

pub use distribution::{DistributionMeta, PromptDistribution};
pub use edit::Edit;
pub use gaussian::Gaussian;
pub use sequence::{Frame, PositionMode, Template};
