//! Training of the out-of-scope detector (see [`crate::model::scope`]): one binary logistic
//! regression (the hybrid head's L-BFGS fit, two outputs) over the embedding and the n-gram view,
//! examples labelled `out_of_scope` against every other. Its threshold is chosen on out-of-fold
//! scores: each in-scope training example is scored by a detector fitted without its fold, and
//! the threshold rejects the asked share of them. Variants of one message (ids `X/1`, `X/2`)
//! and copies of one correction (`X#0`, `X#1`) share a fold, so a message's own variant never
//! vouches for it.

use candle_core::Tensor;
use sha2::{Digest, Sha256};

use super::hybrid;
use crate::model::ngrams::{NgramSettings, SparseRow};
use crate::model::scope::{self, ScopeDetector, ScopeSettings};

/// Folds of the out-of-fold scores the threshold is chosen on.
pub const FOLDS: usize = 5;

/// Fewest examples labelled `out_of_scope` a detector is trained on.
pub const MIN_EXAMPLES: usize = 20;

/// Share of in-scope examples the threshold is chosen to reject, unless told otherwise.
pub const DEFAULT_REJECTION: f32 = 0.01;

/// A trained detector and what its out-of-fold scores showed.
#[derive(Debug)]
pub struct Fitted {
    /// The detector, fitted on all examples.
    pub detector: ScopeDetector,
    /// Out-of-fold recall on the `out_of_scope` examples at the chosen threshold.
    pub tuning_recall: f64,
    /// Out-of-fold share of in-scope examples rejected at the chosen threshold.
    pub tuning_rejected: f64,
}

/// The fold of an example id: by the hash of the id up to its last `/` (variants of one
/// message share a fold), after cutting at `#` (the weighted copies of an agent's correction,
/// `correction:T-1#0`, `#1`, …).
pub fn fold_of(id: &str) -> usize {
    let id = id.split_once('#').map_or(id, |(g, _)| g);
    let group = id.rsplit_once('/').map_or(id, |(g, _)| g);
    usize::from(Sha256::digest(group.as_bytes())[0]) % FOLDS
}

/// The examples one fit reads.
pub struct Examples<'a> {
    /// Embeddings `[n, dim]`.
    pub xs: &'a Tensor,
    /// Their n-gram features (empty rows without a view).
    pub rows: &'a [SparseRow],
    /// Width of the n-gram view (0 without one).
    pub features: usize,
    /// Whether each is labelled `out_of_scope`.
    pub out: &'a [bool],
    /// Their ids (for the folds).
    pub ids: &'a [String],
}

/// Trains the detector on `ex` with the head's regularisation `settings`, choosing the
/// threshold that rejects `rejection` of the in-scope examples out of fold; `progress` hears
/// each L-BFGS iteration of the `FOLDS + 1` fits, numbered on from one fit to the next.
pub fn fit(
    ex: &Examples,
    settings: &NgramSettings,
    rejection: f32,
    progress: &dyn Fn(usize),
) -> candle_core::Result<Fitted> {
    let ys: Vec<u32> = ex.out.iter().map(|&o| u32::from(o)).collect();
    let folds: Vec<usize> = ex.ids.iter().map(|id| fold_of(id)).collect();
    let mut in_scores = Vec::new();
    let mut out_scores = Vec::new();
    for f in 0..FOLDS {
        let (train, held): (Vec<usize>, Vec<usize>) = (0..ys.len()).partition(|&i| folds[i] != f);
        if held.is_empty() {
            continue;
        }
        let offset = f * hybrid::MAX_ITERATIONS;
        let head = train_on(ex, &ys, &train, settings, &|i| progress(offset + i))?;
        let detector = ScopeDetector::new(
            head,
            ScopeSettings {
                threshold: 1.0,
                rejection,
            },
        );
        let (xs, rows) = select(ex, &held)?;
        for (&i, s) in held.iter().zip(detector.scores(&xs, Some(&rows))?) {
            if ex.out[i] {
                out_scores.push(s);
            } else {
                in_scores.push(s);
            }
        }
    }
    let chosen = ScopeSettings {
        threshold: scope::threshold_for(&in_scores, rejection),
        rejection,
    };
    let share = |scores: &[f32]| {
        let hit = scores.iter().filter(|&&s| chosen.rejects(s)).count();
        hit as f64 / scores.len().max(1) as f64
    };
    let all: Vec<usize> = (0..ys.len()).collect();
    let offset = FOLDS * hybrid::MAX_ITERATIONS;
    let head = train_on(ex, &ys, &all, settings, &|i| progress(offset + i))?;
    Ok(Fitted {
        detector: ScopeDetector::new(head, chosen),
        tuning_recall: share(&out_scores),
        tuning_rejected: share(&in_scores),
    })
}

/// The embeddings and features of the examples at `idx`.
fn select(ex: &Examples, idx: &[usize]) -> candle_core::Result<(Tensor, Vec<SparseRow>)> {
    let index = Tensor::from_vec(
        idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        idx.len(),
        ex.xs.device(),
    )?;
    let rows = idx.iter().map(|&i| ex.rows[i].clone()).collect();
    Ok((ex.xs.index_select(&index, 0)?, rows))
}

/// One binary fit on the examples at `idx`.
fn train_on(
    ex: &Examples,
    ys: &[u32],
    idx: &[usize],
    settings: &NgramSettings,
    progress: &dyn Fn(usize),
) -> candle_core::Result<crate::model::head::Head> {
    let (xs, rows) = select(ex, idx)?;
    let ys: Vec<u32> = idx.iter().map(|&i| ys[i]).collect();
    hybrid::train_hybrid(&xs, &rows, ex.features, &ys, 2, settings, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn variants_share_a_fold_and_folds_spread() {
        assert_eq!(fold_of("tr-a-en-001/0"), fold_of("tr-a-en-001/1"));
        assert_eq!(fold_of("correction:T-1#0"), fold_of("correction:T-1#4"));
        let mut counts = [0usize; FOLDS];
        for i in 0..1000 {
            counts[fold_of(&format!("ex-{i}"))] += 1;
        }
        assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
    }

    #[test]
    fn detector_separates_and_rejects_about_the_share_asked() {
        // In scope: embeddings near +e0; out of scope: near -e0 (with noise on a second axis).
        let n = 400;
        let mut data = Vec::new();
        let mut out = Vec::new();
        for i in 0..n {
            let o = i % 5 == 0;
            let noise = ((i * 37 % 101) as f32 / 101.0) - 0.5;
            let x = if o { -1.0 + noise } else { 1.0 + noise };
            data.extend([x, noise, 0.5]);
            out.push(o);
        }
        let xs = Tensor::from_vec(data, (n, 3), &Device::Cpu).unwrap();
        let rows = vec![SparseRow::default(); n];
        let ids: Vec<String> = (0..n).map(|i| format!("id-{i}")).collect();
        let ex = Examples {
            xs: &xs,
            rows: &rows,
            features: 0,
            out: &out,
            ids: &ids,
        };
        let fitted = fit(&ex, &NgramSettings::default(), 0.02, &|_| {}).unwrap();
        assert!(fitted.tuning_rejected <= 0.02, "{}", fitted.tuning_rejected);
        assert!(fitted.tuning_recall > 0.95, "{}", fitted.tuning_recall);
        let s = fitted.detector.scores(&xs, None).unwrap();
        assert!(s[0] > 0.9 && s[1] < 0.1, "{} {}", s[0], s[1]);
        let t = fitted.detector.settings.threshold;
        assert!(t > 0.0 && t <= 1.0);
        // The same data gives the same detector.
        let again = fit(&ex, &NgramSettings::default(), 0.02, &|_| {}).unwrap();
        assert_eq!(again.detector.settings, fitted.detector.settings);
        assert_eq!(again.detector.scores(&xs, None).unwrap(), s);
        // Written and read back (no n-gram view: zero features), it scores the same; read
        // into a model of another width, it is refused.
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("scope.safetensors");
        std::fs::write(&path, fitted.detector.to_safetensors().unwrap()).unwrap();
        let settings = fitted.detector.settings;
        let loaded = ScopeDetector::load(&path, settings, 3, 0).unwrap();
        assert_eq!(loaded.scores(&xs, None).unwrap(), s);
        let e = ScopeDetector::load(&path, settings, 4, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the out-of-scope detector reads embeddings of 3 values, the encoder gives 4"
        );
        let e = ScopeDetector::load(&path, settings, 3, 7).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the out-of-scope detector weighs 0 n-gram features, the view has 7"
        );
    }
}
