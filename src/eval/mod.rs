//! Evaluation of prompt distributions and assets (issue 20): the metrics on image features.
//! The feature networks (Inception-v3 for FID, CLIP's and DINO's image towers) come next.

pub mod metrics;
