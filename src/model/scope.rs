//! The out-of-scope detector: a binary logistic regression over the same embedding and n-gram
//! view as the head, trained on examples labelled `out_of_scope` against every example of the
//! taxonomy, telling tickets that are no request to this business at all (misdirected mail, job
//! applications, trivia, gibberish) from the taxonomy's, spam included. Its weights live in
//! `scope.safetensors`; its threshold in `classifier.json`.

use std::path::Path;

use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

use super::head::{Head, HeadKind};
use super::ngrams::SparseRow;

/// `classifier.json`'s `out_of_scope`: how the detector decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeSettings {
    /// Probability at or above which a ticket is out of scope.
    pub threshold: f32,
    /// The share of in-scope tuning examples the threshold was chosen to reject.
    pub rejection: f32,
}

impl ScopeSettings {
    /// Whether a ticket with this out-of-scope probability is rejected.
    pub fn rejects(&self, p: f32) -> bool {
        p >= self.threshold
    }

    /// Checks the values: a threshold in (0, 1], a rejection share in (0, 1).
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!(
                "threshold: must be in (0, 1], not {}",
                self.threshold
            ));
        }
        if !(self.rejection > 0.0 && self.rejection < 1.0) {
            return Err(format!(
                "rejection: must be in (0, 1), not {}",
                self.rejection
            ));
        }
        Ok(())
    }
}

/// A detector file that does not fit the model it sits in.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// Unreadable weights.
    #[error(transparent)]
    Read(#[from] candle_core::Error),
    /// Not two outputs.
    #[error("the out-of-scope detector has {0} outputs, not 2")]
    Outputs(usize),
    /// Another embedding width.
    #[error(
        "the out-of-scope detector reads embeddings of {found} values, the encoder gives {expected}"
    )]
    Width { found: usize, expected: usize },
    /// Another n-gram view.
    #[error("the out-of-scope detector weighs {found} n-gram features, the view has {expected}")]
    Features { found: usize, expected: usize },
}

/// A loaded detector: a linear model with two outputs (in scope, out of scope).
#[derive(Debug)]
pub struct ScopeDetector {
    head: Head,
    /// Its settings.
    pub settings: ScopeSettings,
}

impl ScopeDetector {
    /// Wraps a trained two-output head.
    pub fn new(head: Head, settings: ScopeSettings) -> Self {
        Self { head, settings }
    }

    /// Loads `scope.safetensors` and checks it reads embeddings of `dim` and `features` n-gram
    /// features (0 without an n-gram view).
    pub fn load(
        path: &Path,
        settings: ScopeSettings,
        dim: usize,
        features: usize,
    ) -> std::result::Result<Self, ScopeError> {
        let head = Head::load(path, HeadKind::Linear)?;
        if head.labels() != 2 {
            return Err(ScopeError::Outputs(head.labels()));
        }
        if head.dim() != dim {
            return Err(ScopeError::Width {
                found: head.dim(),
                expected: dim,
            });
        }
        let found = head.ngrams().map_or(0, |n| n.features);
        if found != features {
            return Err(ScopeError::Features {
                found,
                expected: features,
            });
        }
        Ok(Self { head, settings })
    }

    /// The probability that each text is out of scope, for embeddings `[n, dim]` and, where the
    /// model reads an n-gram view, the same texts' features.
    pub fn scores(&self, xs: &Tensor, rows: Option<&[SparseRow]>) -> Result<Vec<f32>> {
        let empty;
        let rows = match rows {
            Some(r) => r,
            None => {
                empty = vec![SparseRow::default(); xs.dim(0)?];
                &empty
            }
        };
        let logits = self.head.logits(xs, Some(rows))?;
        let p = candle_nn::ops::softmax_last_dim(&logits)?;
        p.narrow(D::Minus1, 1, 1)?.flatten_all()?.to_vec1()
    }

    /// Writes the detector as safetensors bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.head.to_safetensors()
    }
}

/// The threshold that rejects at most `rejection` of these in-scope examples' scores: the
/// smallest value above all but that share of them (ties at the cut stay in scope).
pub fn threshold_for(in_scope: &[f32], rejection: f32) -> f32 {
    let mut sorted = in_scope.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // (A share such as 0.02 is not exact in f32: 2 of 100 must not round down to 1.)
    let allowed = (f64::from(rejection) * sorted.len() as f64 + 1e-6).floor() as usize;
    // Scores strictly above the (allowed + 1)-th highest are rejected: at most `allowed`.
    match sorted.get(allowed) {
        Some(&s) => next_up(s).min(1.0),
        None => 1.0,
    }
}

/// The next f32 above a probability in [0, 1).
fn next_up(x: f32) -> f32 {
    if x >= 1.0 {
        1.0
    } else {
        f32::from_bits(x.max(0.0).to_bits() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_rejects_at_most_the_share_asked() {
        let scores: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = threshold_for(&scores, 0.02);
        let rejected = scores.iter().filter(|&&s| s >= t).count();
        assert_eq!(rejected, 2, "threshold {t}");
        // Ties at the cut are all kept in scope rather than rejecting more than asked.
        let tied = vec![0.5f32; 10];
        let t = threshold_for(&tied, 0.1);
        assert_eq!(tied.iter().filter(|&&s| s >= t).count(), 0);
        assert_eq!(threshold_for(&[], 0.02), 1.0);
    }

    #[test]
    fn settings_are_checked() {
        let ok = ScopeSettings {
            threshold: 0.7,
            rejection: 0.01,
        };
        assert!(ok.check().is_ok());
        let e = ScopeSettings {
            threshold: 1.5,
            ..ok
        }
        .check()
        .unwrap_err();
        assert_eq!(e, "threshold: must be in (0, 1], not 1.5");
        let e = ScopeSettings {
            rejection: 0.0,
            ..ok
        }
        .check()
        .unwrap_err();
        assert_eq!(e, "rejection: must be in (0, 1), not 0");
    }
}
