//! Models: the BERT encoder (dense or quantised weights), the classifier head, the on-disk
//! directory formats and where models are found. No HTTP, no rules.

pub mod also;
pub mod attention;
pub mod bert;
pub mod classifier;
pub mod encoder;
pub mod files;
pub mod head;
pub mod heap;
pub mod kernels;
pub mod ngrams;
pub mod qgemm;
pub mod scope;
pub mod source;

/// Largest absolute element-wise difference of two tensors of the same shape (unit tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .expect("tensors of the same shape")
}
