//! A classifier directory (`classifier.json`, `head.safetensors`, `taxonomy.toml`) and the
//! loaded classifier: encoder + head + calibrated probabilities. The base encoder is referenced
//! by a path relative to the classifier directory plus a content hash checked at load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::also::{AlsoDetector, AlsoSettings, Guess};
use super::bert::Pass;
use super::encoder::{Encoder, EncoderError, EncoderOptions};
use super::files::{self, FilesError};
use super::head::{self, Head, HeadKind};
use super::ngrams::{NgramSettings, NgramView, SparseRow};
use super::scope::{ScopeDetector, ScopeSettings};
use crate::batch::BatchLimits;
use crate::intent::{IntentTree, Resolution, TaxonomyError, ThresholdError, Thresholds};
use crate::text::Tokens;

/// Errors loading or running a classifier.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    /// A file is missing or malformed.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The encoder failed.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// The taxonomy is invalid.
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    /// The base encoder differs from the one the head was trained on.
    #[error("{dir}: base encoder {base} has content hash {found}, but the classifier was trained on {expected}")]
    BaseMismatch {
        dir: PathBuf,
        base: PathBuf,
        expected: String,
        found: String,
    },
    /// The n-gram view is unreadable.
    #[error(transparent)]
    Ngrams(#[from] super::ngrams::NgramError),
    /// The head does not match the metadata.
    #[error("{path}: {message}")]
    Head { path: PathBuf, message: String },
    /// The thresholds do not fit the taxonomy.
    #[error("{path}: {source}")]
    Thresholds {
        path: PathBuf,
        source: ThresholdError,
    },
}

/// Reference to the base encoder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    /// Path relative to the classifier directory (or absolute).
    pub path: PathBuf,
    /// sha256 over the encoder's files (see [`encoder_hash`]).
    pub sha256: String,
}

/// `classifier.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassifierMeta {
    /// Format version.
    pub format_version: u32,
    /// Output labels, in head order.
    pub labels: Vec<String>,
    /// Head shape.
    pub head: HeadKind,
    /// Calibration temperature (fitted on the dev split).
    pub temperature: f32,
    /// Resolution thresholds per depth.
    pub thresholds: Vec<f32>,
    /// Nodes' own thresholds (tuned by `train`), replacing their depth's.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_thresholds: std::collections::BTreeMap<String, f32>,
    /// Truncation used in training (tokens).
    pub max_tokens: usize,
    /// Base encoder.
    pub base: BaseRef,
    /// Training record (data hash, seed, base, date, metrics...).
    pub training: serde_json::Value,
    /// The n-gram view the head reads beside the embedding (`ngrams.json`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngrams: Option<NgramSettings>,
    /// The out-of-scope detector (`scope.safetensors`), if the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_scope: Option<ScopeSettings>,
    /// The further-request detector (`also.safetensors`), if the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also: Option<AlsoSettings>,
}

impl ClassifierMeta {
    /// The chain thresholds: per depth, and nodes' own.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            depth: self.thresholds.clone(),
            nodes: self.node_thresholds.clone(),
        }
    }
}

/// sha256 over an encoder directory's weight, config and tokenizer files (names included).
pub fn encoder_hash(dir: &Path) -> Result<String, FilesError> {
    let mut h = Sha256::new();
    for name in [
        files::GGUF_WEIGHTS,
        files::SAFETENSORS_WEIGHTS,
        files::OVERRIDES,
        files::HF_CONFIG,
        files::TOKENIZER,
        files::ENCODER_META,
    ] {
        let path = dir.join(name);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|source| FilesError::Io {
                path: path.clone(),
                source,
            })?;
            h.update(name.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    Ok(crate::import::hex(&h.finalize()))
}

/// A loaded classifier.
#[derive(Debug)]
pub struct Classifier {
    /// The encoder (shared between classifiers on the same base encoder).
    pub encoder: Arc<Encoder>,
    /// Content hash of the encoder's files (see [`encoder_hash`]).
    pub encoder_hash: String,
    /// The head.
    pub head: Head,
    /// The n-gram view the head reads beside the embedding, if it reads one.
    pub ngrams: Option<NgramView>,
    /// The out-of-scope detector, if the model has one.
    pub scope: Option<ScopeDetector>,
    /// The further-request detector, if the model has one.
    pub also: Option<AlsoDetector>,
    /// The taxonomy.
    pub tree: IntentTree,
    /// Its metadata.
    pub meta: ClassifierMeta,
    /// The chain thresholds it was trained with (per depth, and nodes' own).
    pub thresholds: Thresholds,
    /// Directory it was loaded from.
    pub dir: PathBuf,
    /// Near ties under this closest call are re-checked with a refined pass (0: never; see
    /// [`EncoderOptions::recheck_margin`]).
    pub recheck_margin: f32,
    /// Texts re-checked by [`Classifier::classify_texts`] since it was loaded.
    rechecked: AtomicU64,
}

impl Classifier {
    /// Loads a classifier directory, checking the base encoder's hash.
    pub fn load(dir: &Path, opts: &EncoderOptions) -> Result<Self, ClassifierError> {
        Self::load_sharing(dir, opts, &[])
    }

    /// Loads a classifier directory, reusing one of `loaded` (classifiers already in memory)
    /// when its encoder has the same content hash, so heads on one base share it.
    pub fn load_sharing(
        dir: &Path,
        opts: &EncoderOptions,
        loaded: &[&Classifier],
    ) -> Result<Self, ClassifierError> {
        let meta_path = files::require(
            dir,
            files::CLASSIFIER_META,
            "classifier metadata; is this a model trained by `intent-router train`?",
        )?;
        let meta: ClassifierMeta = files::read_json(&meta_path)?;
        if meta.format_version > files::FORMAT_VERSION {
            return Err(FilesError::Version {
                path: meta_path,
                found: meta.format_version,
            }
            .into());
        }
        let base = dir.join(&meta.base.path);
        if !base.is_dir() {
            return Err(FilesError::Missing {
                dir: dir.to_path_buf(),
                file: "base encoder directory",
                what: "named by base.path in classifier.json",
            }
            .into());
        }
        let found = encoder_hash(&base)?;
        if found != meta.base.sha256 {
            return Err(ClassifierError::BaseMismatch {
                dir: dir.into(),
                base,
                expected: meta.base.sha256.clone(),
                found,
            });
        }
        let tree = IntentTree::load(&files::require(dir, files::TAXONOMY, "taxonomy")?)?;
        let thresholds = meta.thresholds();
        thresholds
            .check(&tree)
            .map_err(|source| ClassifierError::Thresholds {
                path: meta_path.clone(),
                source,
            })?;
        let head_path = files::require(dir, files::HEAD_WEIGHTS, "classifier head weights")?;
        let head = Head::load(&head_path, meta.head).map_err(|e| ClassifierError::Head {
            path: head_path.clone(),
            message: e.to_string(),
        })?;
        if head.labels() != meta.labels.len() {
            let message = format!(
                "head has {} outputs but classifier.json lists {} labels",
                head.labels(),
                meta.labels.len()
            );
            return Err(ClassifierError::Head {
                path: head_path,
                message,
            });
        }
        let ngrams = load_ngrams(dir, &meta, &head, &head_path)?;
        let scope = load_scope(dir, &meta, &head, ngrams.as_ref())?;
        let also = load_also(dir, &meta, ngrams.as_ref())?;
        let opts = EncoderOptions {
            max_tokens: opts.max_tokens.or(Some(meta.max_tokens)),
            ..opts.clone()
        };
        let max_tokens = opts.max_tokens.unwrap_or(meta.max_tokens);
        let same = |c: &&&Classifier| {
            c.encoder_hash == found && c.encoder.text().max_tokens() == max_tokens
        };
        let encoder = match loaded.iter().find(same) {
            Some(c) => Arc::clone(&c.encoder),
            None => Arc::new(Encoder::load(&base, &opts)?),
        };
        // Only int8 linears approximate, and only they compute differently in a refined pass
        // (on a GPU the linears are f32 whatever was asked).
        let recheck_margin = if encoder.bert().has_int8() {
            opts.recheck_margin.max(0.0)
        } else {
            0.0
        };
        Ok(Self {
            encoder,
            encoder_hash: found,
            head,
            ngrams,
            scope,
            also,
            tree,
            meta,
            thresholds,
            dir: dir.to_path_buf(),
            recheck_margin,
            rechecked: AtomicU64::new(0),
        })
    }

    /// Calibrated label probabilities for embeddings `[n, dim]` of `texts` (the model texts the
    /// encoder read, for the n-gram view where the head reads one).
    pub fn probabilities<S: AsRef<str>>(
        &self,
        embeddings: &Tensor,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>, ClassifierError> {
        self.probabilities_with(embeddings, self.ngram_features(texts).as_deref())
    }

    /// Calibrated label probabilities for embeddings `[n, dim]` and, where the head reads
    /// them, the same texts' n-gram features (see [`Classifier::ngram_features`]).
    pub fn probabilities_with(
        &self,
        embeddings: &Tensor,
        rows: Option<&[SparseRow]>,
    ) -> Result<Vec<Vec<f32>>, ClassifierError> {
        let err = |e: candle_core::Error| ClassifierError::Head {
            path: self.dir.join(files::HEAD_WEIGHTS),
            message: e.to_string(),
        };
        let logits = self.head.logits(embeddings, rows).map_err(err)?;
        head::probabilities(&logits, self.meta.temperature).map_err(err)
    }

    /// The out-of-scope detector's probabilities for embeddings `[n, dim]` and, where the
    /// model reads them, the same texts' n-gram features; `None` without a detector.
    pub fn out_of_scope(
        &self,
        embeddings: &Tensor,
        rows: Option<&[SparseRow]>,
    ) -> Result<Option<Vec<f32>>, ClassifierError> {
        let Some(scope) = &self.scope else {
            return Ok(None);
        };
        scope
            .scores(embeddings, rows)
            .map(Some)
            .map_err(|e| ClassifierError::Head {
                path: self.dir.join(files::SCOPE_WEIGHTS),
                message: e.to_string(),
            })
    }

    /// Resolves one text's label probabilities into an intent chain under `thresholds` (the
    /// model's own, or as a running server has them edited), keeping `k` top labels, applies
    /// the out-of-scope detector's probability where there is one, and lists the further
    /// requests among the text's segment guesses (see [`Classifier::guesses`]).
    pub fn resolve(
        &self,
        probs: &[f32],
        out_of_scope: Option<f32>,
        guesses: &[Guess],
        k: usize,
        thresholds: &Thresholds,
    ) -> Resolution {
        let resolution = self
            .tree
            .resolver(&self.meta.labels, thresholds)
            .resolve(probs, k);
        let resolution = match (out_of_scope, &self.scope) {
            (Some(p), Some(scope)) => resolution.scoped(p, scope.settings.threshold),
            _ => resolution,
        };
        match &self.also {
            Some(also) if resolution.is_resolved() => {
                let more = also.pick(guesses, &resolution.intent);
                resolution.with_also(more)
            }
            _ => resolution,
        }
    }

    /// The further-request detector's guess for each segment of a model text (none without a
    /// detector, or for a text of one segment).
    pub fn guesses(&self, text: &str) -> Vec<Guess> {
        match (&self.also, &self.ngrams) {
            (Some(also), Some(view)) => also.guesses(text, view),
            _ => Vec::new(),
        }
    }

    /// The n-gram view's features of `texts`, where the head reads them.
    pub fn ngram_features<S: AsRef<str>>(&self, texts: &[S]) -> Option<Vec<SparseRow>> {
        let view = self.ngrams.as_ref()?;
        Some(texts.iter().map(|t| view.features(t.as_ref())).collect())
    }

    /// Which of these probability vectors (one per text) are near ties to encode again with
    /// [`Pass::Refine`]: those whose closest call under `thresholds` is under the re-check
    /// margin, or whose out-of-scope probability (`out_of_scope`, where the model has a
    /// detector) is that close to the detector's threshold.
    pub fn near_ties(
        &self,
        probs: &[Vec<f32>],
        out_of_scope: Option<&[f32]>,
        thresholds: &Thresholds,
    ) -> Vec<usize> {
        if self.recheck_margin <= 0.0 {
            return Vec::new();
        }
        let resolver = self.tree.resolver(&self.meta.labels, thresholds);
        let threshold = self.scope.as_ref().map(|s| s.settings.threshold);
        let close_to_threshold = |i: usize| match (out_of_scope, threshold) {
            (Some(s), Some(t)) => (s[i] - t).abs() < self.recheck_margin,
            _ => false,
        };
        (0..probs.len())
            .filter(|&i| {
                resolver.closest_call(&probs[i]) < self.recheck_margin || close_to_threshold(i)
            })
            .collect()
    }

    /// Calibrated label probabilities for texts (model text, already cleaned) and, where the
    /// model has a detector, their out-of-scope probabilities; near ties are encoded again with
    /// a refined pass and scored from that.
    pub fn classify_texts(
        &self,
        texts: &[String],
        limits: BatchLimits,
    ) -> Result<Scores, ClassifierError> {
        let tokens = self
            .encoder
            .text()
            .encode_many(texts)
            .map_err(EncoderError::from)?;
        let emb = self.encoder.embed_tokens(&tokens, limits, Pass::Infer)?;
        let rows = self.ngram_features(texts);
        let mut out_of_scope = self.out_of_scope(&emb, rows.as_deref())?;
        let mut probs = self.probabilities_with(&emb, rows.as_deref())?;
        let near = self.near_ties(&probs, out_of_scope.as_deref(), &self.thresholds);
        if !near.is_empty() {
            let again: Vec<Tokens> = near.iter().map(|&i| tokens[i].clone()).collect();
            let emb =
                self.encoder
                    .embed_tokens(&again, limits.for_pass(Pass::Refine), Pass::Refine)?;
            let near_rows: Option<Vec<SparseRow>> = rows
                .as_ref()
                .map(|r| near.iter().map(|&i| r[i].clone()).collect());
            for (&i, p) in near
                .iter()
                .zip(self.probabilities_with(&emb, near_rows.as_deref())?)
            {
                probs[i] = p;
            }
            // The detector reads the refined embedding too, as serving does.
            if let (Some(all), Some(again)) = (
                out_of_scope.as_mut(),
                self.out_of_scope(&emb, near_rows.as_deref())?,
            ) {
                for (&i, p) in near.iter().zip(again) {
                    all[i] = p;
                }
            }
            self.rechecked
                .fetch_add(near.len() as u64, Ordering::Relaxed);
        }
        Ok(Scores {
            probs,
            out_of_scope,
        })
    }

    /// Texts [`Classifier::classify_texts`] re-checked with a refined pass since loading.
    pub fn rechecked(&self) -> u64 {
        self.rechecked.load(Ordering::Relaxed)
    }
}

/// What a classifier says about a batch of texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Calibrated label probabilities, one vector per text.
    pub probs: Vec<Vec<f32>>,
    /// The out-of-scope detector's probability per text, where the model has one.
    pub out_of_scope: Option<Vec<f32>>,
}

impl Scores {
    /// The out-of-scope probability of text `i`, where the model has a detector.
    pub fn out_of_scope_of(&self, i: usize) -> Option<f32> {
        self.out_of_scope.as_ref().map(|s| s[i])
    }
}

/// The out-of-scope detector of a classifier directory, checked against the metadata and the
/// head: `scope.safetensors` where classifier.json names one, reading what the head reads.
fn load_scope(
    dir: &Path,
    meta: &ClassifierMeta,
    head: &Head,
    view: Option<&NgramView>,
) -> Result<Option<ScopeDetector>, ClassifierError> {
    let path = dir.join(files::SCOPE_WEIGHTS);
    let Some(settings) = meta.out_of_scope else {
        if path.exists() {
            return Err(ClassifierError::Head {
                path,
                message: "an out-of-scope detector, but classifier.json names none (out_of_scope)"
                    .into(),
            });
        }
        return Ok(None);
    };
    settings.check().map_err(|e| ClassifierError::Head {
        path: dir.join(files::CLASSIFIER_META),
        message: format!("out_of_scope.{e}"),
    })?;
    let path = files::require(dir, files::SCOPE_WEIGHTS, "the out-of-scope detector")?;
    let features = view.map_or(0, NgramView::len);
    ScopeDetector::load(&path, settings, head.dim(), features)
        .map(Some)
        .map_err(|e| ClassifierError::Head {
            path,
            message: e.to_string(),
        })
}

/// The further-request detector of a classifier directory, checked against the metadata and
/// the n-gram view it reads: `also.safetensors` where classifier.json names one.
fn load_also(
    dir: &Path,
    meta: &ClassifierMeta,
    view: Option<&NgramView>,
) -> Result<Option<AlsoDetector>, ClassifierError> {
    let path = dir.join(files::ALSO_WEIGHTS);
    let invalid = |path: PathBuf, message: String| ClassifierError::Head { path, message };
    let Some(settings) = &meta.also else {
        if path.exists() {
            let message = "a further-request detector, but classifier.json names none (also)";
            return Err(invalid(path, message.into()));
        }
        return Ok(None);
    };
    let meta_path = dir.join(files::CLASSIFIER_META);
    settings
        .check()
        .map_err(|e| invalid(meta_path.clone(), format!("also.{e}")))?;
    // Its outputs are the head's labels, then `out_of_scope` where it learned such segments.
    let outputs = &settings.labels;
    let same = outputs.starts_with(&meta.labels)
        && (outputs.len() == meta.labels.len()
            || outputs[meta.labels.len()..] == [crate::intent::OUT_OF_SCOPE.to_string()]);
    if !same {
        let message = format!(
            "also.labels: the further-request detector's outputs must be the head's labels \
             (classifier.json labels), then optionally out_of_scope; found {}",
            outputs.join(", ")
        );
        return Err(invalid(meta_path, message));
    }
    let Some(view) = view else {
        let message = "also: the further-request detector reads the n-gram view, and \
                       classifier.json names none (ngrams)";
        return Err(invalid(meta_path, message.into()));
    };
    let path = files::require(dir, files::ALSO_WEIGHTS, "the further-request detector")?;
    AlsoDetector::load(&path, settings.clone(), view.len())
        .map(Some)
        .map_err(|e| invalid(path, e.to_string()))
}

/// The n-gram view a classifier directory's head reads, checked against the metadata and the
/// head: both or neither, with as many features as the head has weights for.
fn load_ngrams(
    dir: &Path,
    meta: &ClassifierMeta,
    head: &Head,
    head_path: &Path,
) -> Result<Option<NgramView>, ClassifierError> {
    let mismatch = |message: String| ClassifierError::Head {
        path: head_path.to_path_buf(),
        message,
    };
    match (&meta.ngrams, head.ngrams()) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(mismatch(
            "the head has n-gram weights but classifier.json names no n-gram view".into(),
        )),
        (Some(_), None) => Err(mismatch(
            "classifier.json names an n-gram view but the head has no n-gram weights".into(),
        )),
        (Some(settings), Some(weights)) => {
            settings
                .check()
                .map_err(|e| mismatch(format!("classifier.json: ngrams.{e}")))?;
            let path = files::require(dir, files::NGRAMS, "the head's n-gram view")?;
            let view = NgramView::load(&path)?;
            if view.len() != weights.features {
                return Err(mismatch(format!(
                    "the head weighs {} n-gram features but {} lists {}",
                    weights.features,
                    path.display(),
                    view.len()
                )));
            }
            Ok(Some(view))
        }
    }
}
