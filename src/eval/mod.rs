//! Evaluation of prompt distributions and assets (issue 20): the metrics on image features, and
//! the feature networks (CLIP's image tower so far; Inception-v3 for FID and DINO come next).

pub mod clip;
pub mod metrics;
