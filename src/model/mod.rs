//! Models: the BERT encoder (dense or quantised weights), the classifier head, the on-disk
//! directory formats and where models are found. No HTTP, no rules.

pub mod bert;
pub mod classifier;
pub mod encoder;
pub mod files;
pub mod head;
pub mod kernels;
pub mod qgemm;
pub mod source;
