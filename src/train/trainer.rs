//! `train`: a classifier head on the frozen encoder. Embeddings are computed once and cached;
//! the head is trained with AdamW (seeded), its temperature fitted on the dev split, and the
//! model directory written atomically with an evaluation report.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use sha2::{Digest, Sha256};

use super::cache::EmbeddingCache;
use super::dataset::{self, CsvColumns, DatasetError, Example};
use super::eval::{self, Report};
use super::finetune::{self, FineTune};
use super::hybrid;
use crate::fsutil::{self, FsError, StagedDir};
use crate::intent::{IntentTree, TaxonomyError, Thresholds};
use crate::model::classifier::{encoder_hash, BaseRef, ClassifierMeta};
use crate::model::encoder::{self, Encoder, EncoderError, EncoderOptions};
use crate::model::files::{self, FilesError};
use crate::model::head::{self, Head, HeadKind, HeadTraining};
use crate::model::ngrams::{NgramSettings, NgramView, SparseRow};
use crate::model::source::{self, HubOptions, SourceError};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad data.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Bad taxonomy.
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    /// Base encoder not found.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Encoder failed.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// Model files.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// Writing failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Settings that do not go together.
    #[error("{0}")]
    Settings(String),
    /// Numerical failure in training.
    #[error("training (head or fine-tuning): {0}")]
    Candle(#[from] candle_core::Error),
    /// Stopped on request (a cancelled job).
    #[error("cancelled")]
    Cancelled,
}

/// Everything `train` needs.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Training data file.
    pub data: PathBuf,
    /// Dev data file (default: a fixed 10% of the training data, chosen by id hash).
    pub dev: Option<PathBuf>,
    /// Taxonomy file (default: labels from the data, chains split on '.').
    pub taxonomy: Option<PathBuf>,
    /// Base encoder: directory or hub id.
    pub base: String,
    /// Output model directory.
    pub out: PathBuf,
    /// Head training settings.
    pub head: HeadTraining,
    /// Resolution thresholds per depth.
    pub thresholds: Vec<f32>,
    /// Tune nodes' own thresholds on the tuning split (see [`super::thresholds`]).
    pub node_thresholds: bool,
    /// Encoder options (truncation, device...).
    pub encoder: EncoderOptions,
    /// Hub access.
    pub hub: HubOptions,
    /// Embedding cache directory.
    pub cache_dir: Option<PathBuf>,
    /// CSV column names.
    pub columns: CsvColumns,
    /// Also fine-tune the encoder's top layers.
    pub fine_tune: Option<FineTune>,
    /// Read an n-gram view beside the embedding (a linear head trained jointly over both).
    pub ngrams: Option<NgramSettings>,
    /// Share of in-scope examples the out-of-scope detector's threshold is chosen to reject
    /// (out of fold); the detector is trained where the data has examples labelled
    /// `out_of_scope`.
    pub scope_rejection: f32,
    /// Written tickets with several requests (`intent` + `also`) the further-request
    /// detector's threshold is calibrated on (never trained on).
    pub multi_intent: Option<PathBuf>,
    /// Share of single-request tuning tickets the further-request detector's threshold may
    /// give a further request.
    pub also_false_rate: f32,
    /// An encoder already in memory with its content hash, used instead of loading the base
    /// again when the hashes match (the server retraining beside the model it serves).
    pub preloaded: Option<(String, std::sync::Arc<Encoder>)>,
}

/// What training produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Model directory.
    pub out: PathBuf,
    /// Dev-split report.
    pub report: Report,
    /// Fitted temperature.
    pub temperature: f32,
    /// How the nodes' own thresholds were tuned, if they were.
    pub node_thresholds: Option<super::thresholds::TuningReport>,
}

/// Progress callbacks (the CLI draws bars; tests pass no-ops).
pub trait Progress {
    /// A stage starts, with a known number of steps.
    fn stage(&self, name: &str, steps: usize);
    /// Steps done in the current stage.
    fn step(&self, done: usize);
    /// A line worth showing beside the bars (a fine-tuning epoch's dev score).
    fn note(&self, _line: &str) {}
    /// Whether to stop at the next checkpoint (every chunk of embeddings, every stage).
    fn cancelled(&self) -> bool {
        false
    }
    /// The work is about to become irreversible (a candidate registered): `false` to stop
    /// instead; once it answers `true`, a later cancel request is refused.
    fn commit(&self) -> bool {
        !self.cancelled()
    }
}

/// `Err(Cancelled)` when the progress sink asks to stop.
pub fn checkpoint(progress: &dyn Progress) -> Result<(), TrainError> {
    if progress.cancelled() {
        Err(TrainError::Cancelled)
    } else {
        Ok(())
    }
}

/// A progress sink that shows nothing.
pub struct Silent;

impl Progress for Silent {
    fn stage(&self, _: &str, _: usize) {}
    fn step(&self, _: usize) {}
}

/// Whether an example id falls in the fixed 10% dev share (stable across runs and machines).
pub fn in_dev_share(id: &str) -> bool {
    Sha256::digest(id.as_bytes())[0] < 26
}

/// Labelled data for one training run, loaded and checked.
#[derive(Debug, Clone)]
pub struct TrainSets {
    /// Training examples (their embeddings are cached as one set).
    pub train: Vec<Example>,
    /// More training examples, embedded and cached apart so that the main set's cache stays
    /// valid when only these change (agents' corrections).
    pub extra: Vec<Example>,
    /// Dev examples (calibration and the report).
    pub dev: Vec<Example>,
    /// Training examples labelled `out_of_scope` (the detector's; none: no detector).
    pub out_of_scope: Vec<Example>,
    /// Dev examples labelled `out_of_scope` (scored in the report).
    pub dev_out_of_scope: Vec<Example>,
    /// Tickets with several requests, calibrating the further-request detector.
    pub multi: Vec<Example>,
    /// Taxonomy.
    pub tree: IntentTree,
    /// Output labels, in head order.
    pub labels: Vec<String>,
    /// Where the data came from, for the training record (`data`, `data_sha256`, `dev`, ...).
    pub record: serde_json::Value,
}

/// Loads the data files `opts` names.
pub fn load_sets(opts: &TrainOptions) -> Result<TrainSets, TrainError> {
    let train_set = dataset::load(&opts.data, &opts.columns, true)?;
    dataset::check_label_ids(&train_set, &opts.data)?;
    let (mut train_set, mut out_of_scope) = dataset::split_out_of_scope(train_set);
    let tree = match &opts.taxonomy {
        Some(p) => IntentTree::load(p)?,
        None => IntentTree::from_labels(&dataset::labels_from_data(&train_set)),
    };
    let labels = if opts.taxonomy.is_some() {
        dataset::taxonomy_labels(&tree)
    } else {
        dataset::labels_from_data(&train_set)
    };
    dataset::check_labels(&train_set, &labels, &opts.data)?;
    let (dev_set, dev_out_of_scope) = match &opts.dev {
        Some(p) => {
            let (dev, dev_out) =
                dataset::split_out_of_scope(dataset::load(p, &opts.columns, true)?);
            dataset::check_labels(&dev, &labels, p)?;
            (dev, dev_out)
        }
        None => {
            let (dev, rest): (Vec<Example>, Vec<Example>) =
                train_set.into_iter().partition(|e| in_dev_share(&e.id));
            train_set = rest;
            let (dev_out, rest): (Vec<Example>, Vec<Example>) =
                out_of_scope.into_iter().partition(|e| in_dev_share(&e.id));
            out_of_scope = rest;
            (dev, dev_out)
        }
    };
    let multi = match &opts.multi_intent {
        Some(p) => load_multi(p, &opts.columns, &labels)?,
        None => Vec::new(),
    };
    Ok(TrainSets {
        train: train_set,
        extra: Vec::new(),
        dev: dev_set,
        out_of_scope,
        dev_out_of_scope,
        multi,
        tree,
        labels,
        record: serde_json::json!({
            "data": opts.data.display().to_string(),
            "data_sha256": file_hash(&opts.data)?,
            "dev": opts.dev.as_ref().map(|d| d.display().to_string()),
            "multi_intent": match &opts.multi_intent {
                Some(p) => Some(serde_json::json!({
                    "path": p.display().to_string(),
                    "sha256": file_hash(p)?,
                })),
                None => None,
            },
        }),
    })
}

/// Loads a calibration set of tickets with several requests: each names its further requests
/// (`also`), all of them the model's labels.
fn load_multi(
    path: &Path,
    columns: &CsvColumns,
    labels: &[String],
) -> Result<Vec<Example>, TrainError> {
    let multi = dataset::load(path, columns, true)?;
    dataset::check_labels(&multi, labels, path)?;
    if let Some(e) = multi.iter().find(|e| e.also.is_empty()) {
        return Err(TrainError::Settings(format!(
            "{}:{}: also: a calibration ticket for further requests names none (--multi-intent \
             takes tickets with two or more requests)",
            path.display(),
            e.line
        )));
    }
    Ok(multi)
}

/// Trains and writes a classifier directory.
pub fn train(opts: &TrainOptions, progress: &dyn Progress) -> Result<TrainOutcome, TrainError> {
    train_sets(opts, load_sets(opts)?, progress)
}

/// Trains on loaded data (`opts.data`, `opts.dev` and `opts.taxonomy` are not read) and writes
/// a classifier directory.
pub fn train_sets(
    opts: &TrainOptions,
    sets: TrainSets,
    progress: &dyn Progress,
) -> Result<TrainOutcome, TrainError> {
    let TrainSets {
        train: mut train_set,
        extra,
        dev: dev_set,
        out_of_scope,
        dev_out_of_scope,
        multi,
        tree,
        labels,
        record,
    } = sets;
    check_scope(opts, out_of_scope.len())?;
    check_also(opts, &multi)?;
    if let Some(ft) = &opts.fine_tune {
        ft.check().map_err(TrainError::Settings)?;
    }
    let base_dir = source::resolve_encoder(&opts.base, &opts.hub)?;
    let base_hash = encoder_hash(&base_dir)?;
    let encoder = match &opts.preloaded {
        Some((hash, e)) if *hash == base_hash => std::sync::Arc::clone(e),
        _ => std::sync::Arc::new(Encoder::load(&base_dir, &opts.encoder)?),
    };
    let cache = EmbeddingCache::new(opts.cache_dir.clone(), &base_hash, &encoder);
    let mut xs = cache.embed(&encoder, &train_set, progress)?;
    if !extra.is_empty() {
        xs = Tensor::cat(&[xs, cache.embed(&encoder, &extra, progress)?], 0)?;
        train_set.extend(extra);
    }
    let index = |e: &Example| {
        labels
            .iter()
            .position(|l| *l == e.intent)
            .expect("labels checked above. This is a bug.") as u32
    };
    let ys: Vec<u32> = train_set.iter().map(index).collect();
    checkpoint(progress)?;
    // The view reads the out-of-scope examples' words too: the detector weighs them.
    let view_texts: Vec<&Example> = train_set.iter().chain(&out_of_scope).collect();
    let view = opts
        .ngrams
        .map(|settings| fit_view(&view_texts, &settings, opts))
        .transpose()?;
    // Fine-tuning tunes the encoder under a head that reads the embedding alone; the head with
    // the view is fitted on the tuned embeddings afterwards.
    let first_view = match opts.fine_tune {
        None => view.as_ref(),
        Some(_) => None,
    };
    let head = train_head(
        opts,
        &xs,
        &train_set,
        &ys,
        labels.len(),
        first_view,
        progress,
    )?;

    let staged = StagedDir::new(&opts.out)?;
    let mut fine_tune_epochs = None;
    let (encoder, head, base, cache) = match &opts.fine_tune {
        None => {
            let base = BaseRef {
                path: relative_path(&opts.out, &base_dir),
                sha256: base_hash,
            };
            (encoder, head, base, cache)
        }
        Some(ft) => {
            let tokenize = |set: &[Example]| {
                let texts: Vec<String> = set.iter().map(|e| e.text.clone()).collect();
                encoder
                    .text()
                    .encode_many(&texts)
                    .map_err(EncoderError::from)
            };
            let tokens = tokenize(&train_set)?;
            let dev_tokens = tokenize(&dev_set)?;
            let dev_ys: Vec<u32> = dev_set.iter().map(index).collect();
            checkpoint(progress)?;
            let train = finetune::Labelled {
                tokens: &tokens,
                ys: &ys,
            };
            let dev = (!dev_set.is_empty()).then_some(finetune::Labelled {
                tokens: &dev_tokens,
                ys: &dev_ys,
            });
            let tuned =
                finetune::fine_tune(&encoder, &head, train, dev, ft, opts.head.seed, progress)?;
            fine_tune_epochs = Some((tuned.epochs.clone(), tuned.kept));
            checkpoint(progress)?;
            let enc_dir = staged.path().join("encoder");
            copy_encoder_files(&base_dir, &enc_dir)?;
            let (file, bytes) =
                encoder::tuned_weights(&base_dir, &tuned.tensors, ft.blocks.ggml())?;
            fsutil::write_atomic(&enc_dir.join(file), &bytes)?;
            let sha256 = encoder_hash(&enc_dir)?;
            let tuned_encoder = std::sync::Arc::new(Encoder::load(&enc_dir, &opts.encoder)?);
            let cache = EmbeddingCache::new(cache.dir, &sha256, &tuned_encoder);
            // The hybrid head is trained again on the tuned encoder's embeddings.
            let head = match &view {
                None => tuned.head,
                Some(view) => {
                    let xs = cache.embed(&tuned_encoder, &train_set, progress)?;
                    let n = labels.len();
                    train_head(opts, &xs, &train_set, &ys, n, Some(view), progress)?
                }
            };
            (
                tuned_encoder,
                head,
                BaseRef {
                    path: PathBuf::from("encoder"),
                    sha256,
                },
                cache,
            )
        }
    };
    // The embeddings of the encoder that ships: the head's, unless it was fine-tuned.
    let xs = match opts.fine_tune {
        None => xs,
        Some(_) => cache.embed(&encoder, &train_set, progress)?,
    };
    let scope = if out_of_scope.is_empty() {
        None
    } else {
        let out_xs = cache.embed(&encoder, &out_of_scope, progress)?;
        let examples: Vec<&Example> = train_set.iter().chain(&out_of_scope).collect();
        Some(fit_scope(
            opts,
            &Tensor::cat(&[&xs, &out_xs], 0)?,
            &examples,
            train_set.len(),
            view.as_ref(),
            progress,
        )?)
    };
    let detector = scope.as_ref().map(|s| &s.detector);
    let also = view
        .as_ref()
        .map(|view| {
            fit_also(
                opts,
                &train_set,
                &out_of_scope,
                &labels,
                &multi,
                view,
                progress,
            )
        })
        .transpose()?
        .flatten();
    let features = |set: &[Example]| {
        view.as_ref()
            .map(|v| set.iter().map(|e| v.features(&e.text)).collect::<Vec<_>>())
    };
    let dev_x = if dev_set.is_empty() {
        None
    } else {
        Some(cache.embed(&encoder, &dev_set, progress)?)
    };
    let (temperature, dev_probs) = match &dev_x {
        None => (1.0, Vec::new()),
        Some(dev_x) => {
            let logits = head.logits(dev_x, features(&dev_set).as_deref())?;
            let dev_y: Vec<u32> = dev_set.iter().map(index).collect();
            let t = head::fit_temperature(&logits, &dev_y)?;
            (t, head::probabilities(&logits, t)?)
        }
    };
    let depth_thresholds = Thresholds::per_depth(opts.thresholds.clone());
    let tuned = match (opts.node_thresholds, &opts.fine_tune) {
        (false, _) => None,
        (true, Some(_)) => {
            // The tuned encoder saw the tuning split: its held-out scores would be too sure.
            tracing::warn!(
                "nodes' own thresholds are not tuned with --fine-tune (the fine-tuned encoder \
                 saw the tuning split); the depth thresholds serve"
            );
            None
        }
        (true, None) => {
            let fold = Fold {
                xs: &xs,
                examples: &train_set,
                ys: &ys,
                labels: &labels,
                view: view.as_ref(),
            };
            tune_node_thresholds(opts, &fold, &tree, &depth_thresholds, temperature, progress)?
        }
    };
    let thresholds = Thresholds {
        depth: opts.thresholds.clone(),
        nodes: tuned.as_ref().map(|t| t.nodes.clone()).unwrap_or_default(),
    };
    let mut report = match &dev_x {
        None => eval::evaluate(&labels, &[]),
        Some(_) => score(&tree, &labels, &thresholds, &dev_set, &dev_probs),
    };
    if let (Some(a), Some(view)) = (&also, &view) {
        // The dev split's further requests, beside the head's resolved intent.
        let resolver = tree.resolver(&labels, &thresholds);
        let langs: Vec<String> = dev_set.iter().map(language_of).collect();
        let intents: Vec<String> = dev_probs
            .iter()
            .map(|p| resolver.resolve(p, 1).intent)
            .collect();
        let found: Vec<Vec<crate::intent::Scored>> = dev_set
            .iter()
            .zip(&intents)
            .map(|(e, intent)| match intent.as_str() {
                crate::intent::UNKNOWN => Vec::new(),
                _ => a.detector.pick(&a.detector.guesses(&e.text, view), intent),
            })
            .collect();
        let items: Vec<eval::AlsoItem> = (0..dev_set.len())
            .map(|i| eval::AlsoItem {
                gold: &dev_set[i].intent,
                gold_also: &dev_set[i].also,
                intent: &intents[i],
                found: found[i].iter().map(|s| s.intent.as_str()).collect(),
                lang: &langs[i],
            })
            .collect();
        report.also = Some(eval::also_report(
            Some(a.detector.settings.threshold),
            &items,
        ));
    }
    if detector.is_some() || !dev_out_of_scope.is_empty() {
        // Which dev examples the detector rejects (none without a detector).
        let rejected = |set: &[Example], xs: Option<&Tensor>| -> Result<Vec<bool>, TrainError> {
            let (Some(d), Some(xs)) = (detector, xs) else {
                return Ok(vec![false; set.len()]);
            };
            let scores = d.scores(xs, features(set).as_deref())?;
            Ok(scores.into_iter().map(|s| d.settings.rejects(s)).collect())
        };
        let out_x = match (detector, dev_out_of_scope.is_empty()) {
            (Some(_), false) => Some(cache.embed(&encoder, &dev_out_of_scope, progress)?),
            _ => None,
        };
        let langs: Vec<String> = dev_set
            .iter()
            .chain(&dev_out_of_scope)
            .map(language_of)
            .collect();
        let flags = rejected(&dev_set, dev_x.as_ref())?
            .into_iter()
            .map(|r| (false, r))
            .chain(
                rejected(&dev_out_of_scope, out_x.as_ref())?
                    .into_iter()
                    .map(|r| (true, r)),
            );
        let items: Vec<eval::ScopeItem> = flags
            .zip(&langs)
            .map(|((gold_out, rejected), lang)| eval::ScopeItem {
                gold_out,
                rejected,
                lang,
            })
            .collect();
        report.out_of_scope = Some(eval::scope_report(
            detector.map(|d| d.settings.threshold),
            &items,
        ));
    }

    let meta = ClassifierMeta {
        format_version: files::FORMAT_VERSION,
        labels: labels.clone(),
        head: opts.head.kind,
        temperature,
        thresholds: opts.thresholds.clone(),
        node_thresholds: thresholds.nodes.clone(),
        max_tokens: encoder.text().max_tokens(),
        base,
        training: serde_json::json!({
            "data": record,
            "n_train": train_set.len(),
            "n_dev": dev_set.len(),
            "seed": opts.head.seed,
            "head": opts.head,
            "fine_tune": opts.fine_tune,
            "fine_tune_epochs": fine_tune_epochs.as_ref().map(|(scores, kept)| serde_json::json!({
                "dev": scores,
                "kept": kept,
            })),
            "ngram_features": view.as_ref().map(NgramView::len),
            "out_of_scope": scope.as_ref().map(|s| serde_json::json!({
                "examples": out_of_scope.len(),
                "folds": super::scope::FOLDS,
                "tuning_recall": s.tuning_recall,
                "tuning_rejected": s.tuning_rejected,
            })),
            "also": also.as_ref().map(|a| serde_json::json!({
                "tuning_tickets": a.tuning_tickets,
                "tuning_false_rate": a.tuning_false_rate,
                "calibration": a.calibration,
            })),
            "node_thresholds": tuned.as_ref().map(|t| &t.report),
            "base_model": opts.base,
            "date": now_rfc3339(),
            "metrics": {"accuracy": report.accuracy, "macro_f1": report.macro_f1, "ece": report.ece,
                        "per_language": report.per_language},
        }),
        ngrams: opts.ngrams,
        out_of_scope: scope.as_ref().map(|s| s.detector.settings),
        also: also.as_ref().map(|a| a.detector.settings.clone()),
    };
    let dir = staged.path();
    fsutil::write_atomic(&dir.join(files::HEAD_WEIGHTS), &head.to_safetensors()?)?;
    fsutil::write_atomic(&dir.join(files::TAXONOMY), tree.to_toml().as_bytes())?;
    if let Some(view) = &view {
        fsutil::write_atomic(&dir.join(files::NGRAMS), &view.to_json())?;
    }
    if let Some(scope) = &scope {
        fsutil::write_atomic(
            &dir.join(files::SCOPE_WEIGHTS),
            &scope.detector.to_safetensors()?,
        )?;
    }
    if let Some(also) = &also {
        fsutil::write_atomic(
            &dir.join(files::ALSO_WEIGHTS),
            &also.detector.to_safetensors()?,
        )?;
    }
    fsutil::write_json_atomic(&dir.join(files::CLASSIFIER_META), &meta)?;
    write_report(dir, &report)?;
    let out = staged.commit()?;
    Ok(TrainOutcome {
        out,
        report,
        temperature,
        node_thresholds: tuned.map(|t| t.report),
    })
}

/// Fits the n-gram view on the training texts; only a linear head reads one.
fn fit_view(
    train_set: &[&Example],
    settings: &NgramSettings,
    opts: &TrainOptions,
) -> Result<NgramView, TrainError> {
    if opts.head.kind != HeadKind::Linear {
        return Err(TrainError::Settings(
            "n-gram features go with the linear head only (--head linear)".into(),
        ));
    }
    let texts: Vec<String> = train_set.iter().map(|e| e.text.clone()).collect();
    let view = NgramView::fit(&texts, settings);
    if view.is_empty() {
        return Err(TrainError::Settings(format!(
            "no word or character n-gram occurs in {} training texts (--ngram-min-df); \
             lower it or train with --no-ngrams",
            settings.word_min_df.min(settings.char_min_df)
        )));
    }
    Ok(view)
}

/// Refuses, before any work, a detector that cannot be trained: too few examples labelled
/// `out_of_scope` in the data, or a rejection share outside (0, 1).
fn check_scope(opts: &TrainOptions, out_of_scope: usize) -> Result<(), TrainError> {
    use super::scope::MIN_EXAMPLES;
    if !(opts.scope_rejection > 0.0 && opts.scope_rejection < 1.0) {
        return Err(TrainError::Settings(format!(
            "the out-of-scope rejection share (--out-of-scope-rejection) must be between 0 and \
             1, not {}",
            opts.scope_rejection
        )));
    }
    if out_of_scope > 0 && out_of_scope < MIN_EXAMPLES {
        return Err(TrainError::Settings(format!(
            "{}: {out_of_scope} training examples are labelled out_of_scope; the out-of-scope \
             detector needs at least {MIN_EXAMPLES} (or none, for a model without one)",
            opts.data.display()
        )));
    }
    Ok(())
}

/// Refuses, before any work, a further-request share outside (0, 1), or a calibration set
/// for a model that reads no n-gram view (the detector reads it).
fn check_also(opts: &TrainOptions, multi: &[Example]) -> Result<(), TrainError> {
    if !(opts.also_false_rate > 0.0 && opts.also_false_rate < 1.0) {
        return Err(TrainError::Settings(format!(
            "the further-request share (--also-false-rate) must be between 0 and 1, not {}",
            opts.also_false_rate
        )));
    }
    if !multi.is_empty() && opts.ngrams.is_none() {
        return Err(TrainError::Settings(
            "--multi-intent: the further-request detector reads the n-gram view; this model \
             has none (--no-ngrams or --head mlp)"
                .into(),
        ));
    }
    Ok(())
}

/// Trains the further-request detector on the n-gram view of the training texts (labelled
/// with the head's labels, and `out_of_scope`), its threshold chosen on a held-out fold and
/// the calibration set `multi`; `None` when no threshold keeps the share.
fn fit_also(
    opts: &TrainOptions,
    train_set: &[Example],
    out_of_scope: &[Example],
    labels: &[String],
    multi: &[Example],
    view: &NgramView,
    progress: &dyn Progress,
) -> Result<Option<super::also::Fitted>, TrainError> {
    use super::also as detector;
    checkpoint(progress)?;
    let examples: Vec<&Example> = train_set.iter().chain(out_of_scope).collect();
    let mut outputs = labels.to_vec();
    if !out_of_scope.is_empty() {
        outputs.push(crate::intent::OUT_OF_SCOPE.to_string());
    }
    let ys: Vec<u32> = examples
        .iter()
        .map(|e| {
            outputs
                .iter()
                .position(|l| *l == e.intent)
                .expect("labels checked above. This is a bug.") as u32
        })
        .collect();
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let ids: Vec<&str> = examples.iter().map(|e| e.id.as_str()).collect();
    let single: Vec<bool> = (0..examples.len())
        .map(|i| i < train_set.len() && examples[i].also.is_empty())
        .collect();
    let rows: Vec<SparseRow> = texts.iter().map(|t| view.features(t)).collect();
    let multi: Vec<detector::Multi> = multi
        .iter()
        .map(|m| detector::Multi {
            text: &m.text,
            intent: &m.intent,
            also: &m.also,
        })
        .collect();
    progress.stage("further requests", 2 * hybrid::MAX_ITERATIONS);
    let ex = detector::Examples {
        texts: &texts,
        rows: &rows,
        ys: &ys,
        ids: &ids,
        single: &single,
        labels: &outputs,
        features: view.len(),
    };
    let c = opts.ngrams.unwrap_or_default().c;
    let fitted = detector::fit(&ex, view, c, opts.also_false_rate, &multi, &|i| {
        progress.step(i)
    });
    if fitted.is_none() {
        tracing::warn!(
            share = opts.also_false_rate,
            "no further-request detector: no threshold keeps the held-out single-request \
             tickets within --also-false-rate"
        );
    }
    Ok(fitted)
}

/// Trains the out-of-scope detector on embeddings `xs` of `examples`, the first `in_scope` of
/// them in scope and the rest labelled `out_of_scope`.
fn fit_scope(
    opts: &TrainOptions,
    xs: &Tensor,
    examples: &[&Example],
    in_scope: usize,
    view: Option<&NgramView>,
    progress: &dyn Progress,
) -> Result<super::scope::Fitted, TrainError> {
    use super::scope as detector;
    let rows: Vec<SparseRow> = examples
        .iter()
        .map(|e| view.map(|v| v.features(&e.text)).unwrap_or_default())
        .collect();
    let out: Vec<bool> = (0..examples.len()).map(|i| i >= in_scope).collect();
    let ids: Vec<String> = examples.iter().map(|e| e.id.clone()).collect();
    let settings = opts.ngrams.unwrap_or_default();
    progress.stage(
        "out-of-scope detector",
        (detector::FOLDS + 1) * hybrid::MAX_ITERATIONS,
    );
    let ex = detector::Examples {
        xs,
        rows: &rows,
        features: view.map_or(0, NgramView::len),
        out: &out,
        ids: &ids,
    };
    Ok(detector::fit(&ex, &settings, opts.scope_rejection, &|i| {
        progress.step(i)
    })?)
}

/// The training examples with their embeddings, labels and the n-gram view.
struct Fold<'a> {
    xs: &'a Tensor,
    examples: &'a [Example],
    ys: &'a [u32],
    labels: &'a [String],
    view: Option<&'a NgramView>,
}

/// Tunes nodes' own thresholds over `depth` on the tuning split (fold 0 of the training
/// examples by id hash, variants together): a head fitted on the other folds scores it, its
/// probabilities at the shipped head's `temperature`. `None` when either part is empty.
fn tune_node_thresholds(
    opts: &TrainOptions,
    all: &Fold<'_>,
    tree: &IntentTree,
    depth: &Thresholds,
    temperature: f32,
    progress: &dyn Progress,
) -> Result<Option<super::thresholds::Tuned>, TrainError> {
    let (tuning, rest): (Vec<usize>, Vec<usize>) =
        (0..all.examples.len()).partition(|&i| super::scope::fold_of(&all.examples[i].id) == 0);
    if tuning.is_empty() || rest.is_empty() {
        return Ok(None);
    }
    let pick = |idx: &[usize]| -> Result<(Tensor, Vec<Example>), TrainError> {
        let at = Tensor::new(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            all.xs.device(),
        )?;
        let examples = idx.iter().map(|&i| all.examples[i].clone()).collect();
        Ok((all.xs.index_select(&at, 0)?, examples))
    };
    let (rest_xs, rest_examples) = pick(&rest)?;
    let rest_ys: Vec<u32> = rest.iter().map(|&i| all.ys[i]).collect();
    checkpoint(progress)?;
    let held_out = train_head(
        opts,
        &rest_xs,
        &rest_examples,
        &rest_ys,
        all.labels.len(),
        all.view,
        progress,
    )?;
    let (xs, examples) = pick(&tuning)?;
    let rows = all.view.map(|v| {
        examples
            .iter()
            .map(|e| v.features(&e.text))
            .collect::<Vec<_>>()
    });
    let probs = head::probabilities(&held_out.logits(&xs, rows.as_deref())?, temperature)?;
    let gold: Vec<&str> = examples.iter().map(|e| e.intent.as_str()).collect();
    let tuned = super::thresholds::tune(tree, all.labels, depth, &probs, &gold);
    Ok(Some(tuned))
}

/// An example's language: as labelled, or detected.
pub fn language_of(e: &Example) -> String {
    e.lang
        .clone()
        .unwrap_or_else(|| crate::lang::detect(&e.text).code)
}

/// Trains the head on embeddings `xs` of `examples`: with an n-gram view, one logistic
/// regression over both (L-BFGS); else the configured head with AdamW.
fn train_head(
    opts: &TrainOptions,
    xs: &Tensor,
    examples: &[Example],
    ys: &[u32],
    labels: usize,
    view: Option<&NgramView>,
    progress: &dyn Progress,
) -> Result<Head, TrainError> {
    let Some(view) = view else {
        progress.stage("training head", opts.head.epochs);
        return Ok(head::train_head(xs, ys, labels, &opts.head, &|e| {
            progress.step(e)
        })?);
    };
    let settings = opts
        .ngrams
        .expect("a view is fitted only with settings. This is a bug.");
    let rows: Vec<_> = examples.iter().map(|e| view.features(&e.text)).collect();
    progress.stage("training head", hybrid::MAX_ITERATIONS);
    Ok(hybrid::train_hybrid(
        xs,
        &rows,
        view.len(),
        ys,
        labels,
        &settings,
        &|i| progress.step(i),
    )?)
}

/// Copies an encoder directory's files (a fine-tuned model carries its own encoder).
fn copy_encoder_files(from: &Path, to: &Path) -> Result<(), FsError> {
    std::fs::create_dir_all(to).map_err(|e| FsError::new(to, e))?;
    for name in [
        files::GGUF_WEIGHTS,
        files::SAFETENSORS_WEIGHTS,
        files::TOKENIZER,
        files::HF_CONFIG,
        files::ENCODER_META,
        files::VOCAB_MAP,
        "README.md",
    ] {
        let src = from.join(name);
        if src.exists() {
            fsutil::copy_into_staged(&src, &to.join(name))?;
        }
    }
    Ok(())
}

/// Writes `eval.json` and `eval.md` into a model directory.
pub fn write_report(dir: &Path, report: &Report) -> Result<(), FsError> {
    fsutil::write_json_atomic(&dir.join("eval.json"), report)?;
    fsutil::write_atomic(
        &dir.join("eval.md"),
        format!("# Evaluation\n\n{}", report.to_table()).as_bytes(),
    )
}

/// Scores examples into a report (language from the data, else detected). An example whose
/// intent the model does not know counts as an error under its own label (listed in the
/// report's `unseen_intents`).
pub fn score(
    tree: &IntentTree,
    labels: &[String],
    thresholds: &Thresholds,
    examples: &[Example],
    probs: &[Vec<f32>],
) -> Report {
    let resolver = tree.resolver(labels, thresholds);
    let mut gold_labels = labels.to_vec();
    for e in examples {
        if !gold_labels.contains(&e.intent) {
            gold_labels.push(e.intent.clone());
        }
    }
    let langs: Vec<String> = examples.iter().map(language_of).collect();
    let items: Vec<eval::Scored> = examples
        .iter()
        .zip(probs)
        .zip(&langs)
        .filter_map(|((e, p), l)| {
            let gold = gold_labels.iter().position(|x| *x == e.intent)?;
            let unknown = resolver.resolve(p, 1).intent == crate::intent::UNKNOWN;
            Some(eval::Scored {
                gold,
                probs: p,
                lang: l,
                unknown,
            })
        })
        .collect();
    let mut report = eval::evaluate(&gold_labels, &items);
    let (known_probs, gold): (Vec<&Vec<f32>>, Vec<&str>) = examples
        .iter()
        .zip(probs)
        .filter(|(e, _)| labels.contains(&e.intent))
        .map(|(e, p)| (p, e.intent.as_str()))
        .unzip();
    report.chains = Some(super::thresholds::chain_figures(
        tree,
        labels,
        thresholds,
        &known_probs,
        &gold,
    ));
    report
}

fn file_hash(path: &Path) -> Result<String, FsError> {
    let bytes = std::fs::read(path).map_err(|e| FsError::new(path, e))?;
    Ok(crate::import::hex(&Sha256::digest(&bytes)))
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Path of `target` relative to the directory `from` (both made absolute first).
pub fn relative_path(from: &Path, target: &Path) -> PathBuf {
    let abs = |p: &Path| {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        std::fs::canonicalize(&p).unwrap_or_else(|_| {
            // The output directory may not exist yet: canonicalise its parent.
            match (
                p.parent().and_then(|q| std::fs::canonicalize(q).ok()),
                p.file_name(),
            ) {
                (Some(parent), Some(name)) => parent.join(name),
                _ => p,
            }
        })
    };
    let (from, target) = (abs(from), abs(target));
    let common = from
        .components()
        .zip(target.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in from.components().skip(common) {
        out.push("..");
    }
    for c in target.components().skip(common) {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("models/base/e5")).unwrap();
        let rel = relative_path(
            &d.path().join("models/helpdesk"),
            &d.path().join("models/base/e5"),
        );
        assert_eq!(rel, PathBuf::from("../base/e5"));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
    }

    #[test]
    fn dev_share_is_about_ten_percent_and_stable() {
        let n = (0..10_000)
            .filter(|i| in_dev_share(&format!("ex-{i}")))
            .count();
        assert!((800..1200).contains(&n), "{n}");
        assert_eq!(in_dev_share("ex-1"), in_dev_share("ex-1"));
    }
}
