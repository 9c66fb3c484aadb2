//! Training and evaluation: data sets, the head trainer and the evaluation report. Never
//! imports the HTTP layer.

pub mod also;
pub mod cache;
pub mod dataset;
pub mod eval;
pub mod finetune;
pub mod hybrid;
pub mod scope;
pub mod thresholds;
pub mod trainer;
