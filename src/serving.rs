//! Models as they serve requests: a [`ServingModel`] (the engine plus the batching worker of its
//! encoder, which returns embeddings so that heads on one base share one encoder pass), the
//! classification of tickets through that worker, and [`LiveModels`], the handle to the active
//! model and the shadow that every channel reads and the model registry swaps. A request reads
//! the `Arc` of a model once and finishes on it across a swap. Knows no HTTP and no registry.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::batch::{BatchError, Batcher, BatcherConfig};
use crate::engine::{Classification, Engine, EngineOptions, Prepared};
use crate::intent::Thresholds;
use crate::metrics::Metrics;
use crate::model::bert::Pass;
use crate::model::classifier::{Classifier, ClassifierError, Scores};
use crate::model::encoder::EncoderOptions;
use crate::model::ngrams::SparseRow;
use crate::rules::compile::{CompileErrors, Compiled};
use crate::rules::live::Taxonomy;
use crate::text::TextError;
use crate::ticket::Ticket;

/// Why tickets could not be classified.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The batching worker refused or failed (queue full, stopped, inference error).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A text could not be tokenised.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The head failed on the embeddings.
    #[error(transparent)]
    Head(#[from] ClassifierError),
}

/// A model that serves requests (active) or is scored beside it (shadow).
pub struct ServingModel {
    /// Registry id: the version every response names.
    pub id: String,
    /// Tokeniser, head, taxonomy, resolver.
    pub engine: Arc<Engine>,
    /// The batching worker of the engine's encoder (shared by models on one encoder).
    pub batcher: Batcher,
    /// The chain thresholds it resolves with now.
    thresholds: RwLock<Arc<ActiveThresholds>>,
}

/// The chain thresholds a serving model resolves with: its own, with the edits stored for it
/// laid over them.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveThresholds {
    /// The stored version of the edits (0: as trained).
    pub version: i64,
    /// What resolves: the model's own thresholds with the edits laid over them.
    pub effective: Thresholds,
}

/// What classifying through a serving model gives: each ticket's classification and its
/// embedding (which a shadow model on the same encoder reuses), in input order.
pub struct Classified {
    /// The model that classified (it may have been swapped out since).
    pub model: Arc<ServingModel>,
    /// Per ticket, in order.
    pub classifications: Vec<Classification>,
    /// Per ticket, in order.
    pub embeddings: Vec<Vec<f32>>,
    /// Per ticket, in order: where the time went (zero where embeddings were given).
    pub stages: Vec<Stages>,
    /// The version of the model's threshold edits the chains were resolved with.
    pub thresholds_version: i64,
}

/// Where one ticket's classification time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// Cleaning and tokenising the request's tickets (off the async workers).
    pub tokenize: Duration,
    /// Waiting in the batching queue.
    pub queue: Duration,
    /// The encoder batch it ran in (both batches' times where a near tie was re-checked).
    pub inference: Duration,
}

impl ServingModel {
    /// Wraps a loaded classifier; reuses the batching worker of `others` that run the same
    /// encoder in memory, else starts one (its batches are counted in `metrics`).
    pub fn start(
        classifier: Classifier,
        id: String,
        batching: BatcherConfig,
        metrics: Arc<Metrics>,
        others: &[&ServingModel],
    ) -> Self {
        let shared = others
            .iter()
            .find(|o| Arc::ptr_eq(&o.engine.classifier().encoder, &classifier.encoder))
            .map(|o| o.batcher.clone());
        let engine = Arc::new(Engine::new(
            classifier,
            EngineOptions {
                top_k: 3,
                limits: batching.limits,
            },
        ));
        let batcher = shared.unwrap_or_else(|| {
            let encoder = Arc::clone(&engine.classifier().encoder);
            Batcher::start(batching, move |items, pass| {
                let start = Instant::now();
                let emb = encoder
                    .embed_batch(items, pass)
                    .map_err(|e| e.to_string())?
                    .to_vec2::<f32>()
                    .map_err(|e| e.to_string())?;
                metrics.batch(items.len(), start.elapsed().as_secs_f64());
                if pass == Pass::Refine {
                    metrics.rechecked(items.len());
                }
                Ok(emb)
            })
        });
        let thresholds = RwLock::new(Arc::new(ActiveThresholds {
            version: 0,
            effective: engine.classifier().thresholds.clone(),
        }));
        Self {
            id,
            engine,
            batcher,
            thresholds,
        }
    }

    /// The chain thresholds it resolves with now.
    pub fn thresholds(&self) -> Arc<ActiveThresholds> {
        Arc::clone(
            &self
                .thresholds
                .read()
                .expect("thresholds lock poisoned. This is a bug."),
        )
    }

    /// Resolves with the model's own thresholds and `edits` (stored as `version`) laid over
    /// them from now on, unless it has a newer version already (versions only grow: a slower
    /// reader never undoes a newer save); a request already classifying finishes with the
    /// ones it read. Whether they changed.
    pub fn set_thresholds(&self, version: i64, edits: &Thresholds) -> bool {
        let effective = self.engine.classifier().thresholds.overridden_by(edits);
        let mut current = self
            .thresholds
            .write()
            .expect("thresholds lock poisoned. This is a bug.");
        if version <= current.version {
            return false;
        }
        *current = Arc::new(ActiveThresholds { version, effective });
        true
    }

    /// Whether two models run the same encoder in memory (one embedding serves both).
    pub fn shares_encoder(&self, other: &ServingModel) -> bool {
        Arc::ptr_eq(
            &self.engine.classifier().encoder,
            &other.engine.classifier().encoder,
        )
    }

    /// Label probabilities and, where the model has a detector, out-of-scope probabilities
    /// for embeddings (one per text) and, where the model reads them, the same texts' n-gram
    /// features.
    pub fn scores(
        &self,
        embeddings: &[Vec<f32>],
        rows: Option<&[SparseRow]>,
    ) -> Result<Scores, ClassifyError> {
        let t = tensor(embeddings)?;
        let classifier = self.engine.classifier();
        Ok(Scores {
            probs: classifier.probabilities_with(&t, rows)?,
            out_of_scope: classifier.out_of_scope(&t, rows)?,
        })
    }

    /// Embeds tickets through the batching worker: cleaned and tokenised on a blocking
    /// thread (not an async worker), then all queued before any is awaited, so they can share
    /// batches; a full queue fails the whole call at once.
    async fn embed(&self, tickets: &[Ticket]) -> Result<Embedded, ClassifyError> {
        // A full queue answers at once, before any work.
        self.batcher.check_room(tickets.len())?;
        let start = Instant::now();
        let prepared = self
            .off_runtime(tickets, |engine, t| {
                let (prepared, features) = prepare(engine, t);
                let tokens = engine.classifier().encoder.text().encode(&prepared.text)?;
                Ok((prepared, features, tokens))
            })
            .await?;
        let tokenize = start.elapsed();
        let mut pending = Vec::with_capacity(prepared.len());
        // Kept for re-checking near ties, where that is on.
        let keep = self.engine.classifier().recheck_margin > 0.0;
        let mut tokens = Vec::with_capacity(if keep { prepared.len() } else { 0 });
        let mut features = Vec::with_capacity(prepared.len());
        for (prepared, f, t) in prepared {
            if keep {
                tokens.push(t.clone());
            }
            features.push(f);
            pending.push((prepared, self.batcher.submit(t, Pass::Infer)?));
        }
        let mut out = Embedded {
            prepared: Vec::with_capacity(tickets.len()),
            features: features.into_iter().collect(),
            embeddings: Vec::with_capacity(tickets.len()),
            stages: Vec::with_capacity(tickets.len()),
            tokens,
        };
        for (p, rx) in pending {
            let scored = rx.await.map_err(|_| BatchError::Stopped)??;
            out.embeddings.push(scored.values);
            out.stages.push(Stages {
                tokenize,
                queue: scored.queued,
                inference: scored.inference,
            });
            out.prepared.push(p);
        }
        Ok(out)
    }

    /// Encodes the near ties among `out`'s tickets again with a refined pass (see
    /// [`Classifier::near_ties`]) and takes their embeddings, probabilities and time from it.
    /// Whatever stops a re-check (a full queue, a failed batch) keeps that ticket's first
    /// answer: the request has one already.
    async fn recheck(
        &self,
        out: &mut Embedded,
        probs: &mut [Vec<f32>],
        out_of_scope: &mut Option<Vec<f32>>,
        thresholds: &Thresholds,
    ) {
        let near = self
            .engine
            .classifier()
            .near_ties(probs, out_of_scope.as_deref(), thresholds);
        let mut pending = Vec::with_capacity(near.len());
        for i in near {
            match self.batcher.submit(out.tokens[i].clone(), Pass::Refine) {
                Ok(rx) => pending.push((i, rx)),
                Err(e) => {
                    tracing::warn!(error = %e, "near ties not re-checked; first answers kept");
                    break;
                }
            }
        }
        for (i, rx) in pending {
            let rechecked = match rx.await {
                Ok(Ok(scored)) => {
                    let one = std::slice::from_ref(&scored.values);
                    let rows = out.features.as_ref().map(|f| std::slice::from_ref(&f[i]));
                    self.scores(one, rows)
                        .map(|mut s| (s.probs.swap_remove(0), s.out_of_scope, scored))
                }
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(BatchError::Stopped.into()),
            };
            match rechecked {
                Ok((p, scope, scored)) => {
                    probs[i] = p;
                    if let (Some(all), Some(again)) = (out_of_scope.as_mut(), scope) {
                        all[i] = again[0];
                    }
                    out.embeddings[i] = scored.values;
                    out.stages[i].queue += scored.queued;
                    out.stages[i].inference += scored.inference;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a near tie was not re-checked; first answer kept")
                }
            }
        }
    }

    /// Runs `each` over the tickets (cleaning, tokenising) on a blocking thread, never on an
    /// async worker.
    async fn off_runtime<T: Send + 'static>(
        &self,
        tickets: &[Ticket],
        each: impl Fn(&Engine, &Ticket) -> Result<T, ClassifyError> + Send + 'static,
    ) -> Result<Vec<T>, ClassifyError> {
        let engine = Arc::clone(&self.engine);
        let owned = tickets.to_vec();
        tokio::task::spawn_blocking(move || owned.iter().map(|t| each(&engine, t)).collect())
            .await
            .map_err(|e| BatchError::Inference(format!("preparing the tickets: {e}")))?
    }

    /// Classifies tickets through this model's batching worker under its thresholds of the
    /// moment (read once), results in input order, near ties re-checked; `embeddings` skips the encoder when another model on the same encoder
    /// already ran it (those are taken as they are: refined where that model's decision was
    /// close, not where this one's is).
    pub async fn classify(
        self: &Arc<Self>,
        tickets: &[Ticket],
        embeddings: Option<Vec<Vec<f32>>>,
    ) -> Result<Classified, ClassifyError> {
        let thresholds = self.thresholds();
        let (embedded, probs, out_of_scope) = match embeddings {
            Some(embeddings) => {
                let (prepared, features): (Vec<_>, Vec<_>) = self
                    .off_runtime(tickets, |engine, t| Ok(prepare(engine, t)))
                    .await?
                    .into_iter()
                    .unzip();
                let embedded = Embedded {
                    prepared,
                    features: features.into_iter().collect(),
                    stages: vec![Stages::default(); embeddings.len()],
                    embeddings,
                    tokens: Vec::new(),
                };
                let Scores {
                    probs,
                    out_of_scope,
                } = self.scores(&embedded.embeddings, embedded.features())?;
                (embedded, probs, out_of_scope)
            }
            None => {
                let mut embedded = self.embed(tickets).await?;
                let Scores {
                    mut probs,
                    mut out_of_scope,
                } = self.scores(&embedded.embeddings, embedded.features())?;
                let th = &thresholds.effective;
                self.recheck(&mut embedded, &mut probs, &mut out_of_scope, th)
                    .await;
                (embedded, probs, out_of_scope)
            }
        };
        let Embedded {
            prepared,
            embeddings,
            stages,
            ..
        } = embedded;
        let classifications = tickets
            .iter()
            .zip(prepared.into_iter().zip(probs))
            .enumerate()
            .map(|(i, (t, (p, probs)))| {
                let scope = out_of_scope.as_ref().map(|s| s[i]);
                self.engine
                    .finish(t, p, &probs, scope, &thresholds.effective)
            })
            .collect();
        Ok(Classified {
            model: Arc::clone(self),
            classifications,
            embeddings,
            stages,
            thresholds_version: thresholds.version,
        })
    }

    /// Scores one text end to end, so the first real request does not pay for warm-up.
    pub async fn warm_up(self: &Arc<Self>) -> Result<(), ClassifyError> {
        self.classify(&[Ticket::from_text("warm up")], None)
            .await
            .map(|_| ())
    }
}

/// Embeddings (one per text) as one `[n, dim]` tensor.
fn tensor(embeddings: &[Vec<f32>]) -> Result<Tensor, ClassifyError> {
    let dim = embeddings.first().map_or(0, Vec::len);
    let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (embeddings.len(), dim), &Device::Cpu).map_err(|e| {
        BatchError::Inference(format!("embeddings of {} texts: {e}", embeddings.len())).into()
    })
}

/// A ticket read for the model, and its n-gram features where the head reads them.
fn prepare(engine: &Engine, ticket: &Ticket) -> (Prepared, Option<SparseRow>) {
    let prepared = engine.prepare(ticket);
    let view = engine.classifier().ngrams.as_ref();
    let features = view.map(|v| v.features(&prepared.text));
    (prepared, features)
}

/// Tickets read for the model and their embeddings, in order.
struct Embedded {
    prepared: Vec<Prepared>,
    /// Their n-gram features, where the head reads them.
    features: Option<Vec<SparseRow>>,
    embeddings: Vec<Vec<f32>>,
    stages: Vec<Stages>,
    /// What the encoder read, where near ties are re-checked (empty otherwise, and where the
    /// embeddings were given).
    tokens: Vec<crate::text::Tokens>,
}

impl Embedded {
    /// The n-gram features, where the head reads them.
    fn features(&self) -> Option<&[SparseRow]> {
        self.features.as_deref()
    }
}

/// Loads a classifier directory off the async runtime, sharing encoders with `others`.
pub async fn load_classifier(
    dir: PathBuf,
    opts: EncoderOptions,
    others: Vec<Arc<ServingModel>>,
) -> anyhow::Result<Classifier> {
    use anyhow::Context;
    tokio::task::spawn_blocking(move || {
        let loaded: Vec<&Classifier> = others.iter().map(|m| m.engine.classifier()).collect();
        Classifier::load_sharing(&dir, &opts, &loaded)
            .with_context(|| format!("loading model {}", dir.display()))
    })
    .await?
}

impl Taxonomy for LiveModels {
    /// Compiles rules against the active model's taxonomy.
    fn compile_rules(&self, text: &str, name: &str) -> Result<Compiled, CompileErrors> {
        self.active()
            .engine
            .classifier()
            .tree
            .compile_rules(text, name)
    }

    fn model(&self) -> Option<String> {
        Some(self.active().id.clone())
    }
}

/// The handle to the models serving now: the active one and the shadow, if any. Cloning
/// shares the same state.
#[derive(Clone)]
pub struct LiveModels {
    inner: Arc<Live>,
}

struct Live {
    active: RwLock<Arc<ServingModel>>,
    shadow: RwLock<Option<Arc<ServingModel>>>,
    metrics: Arc<Metrics>,
}

impl LiveModels {
    /// Starts serving `active` (and `shadow`); the metrics name the active version.
    pub fn new(
        active: Arc<ServingModel>,
        shadow: Option<Arc<ServingModel>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.set_model(&active.id);
        Self {
            inner: Arc::new(Live {
                active: RwLock::new(active),
                shadow: RwLock::new(shadow),
                metrics,
            }),
        }
    }

    /// The active model.
    pub fn active(&self) -> Arc<ServingModel> {
        Arc::clone(
            &self
                .inner
                .active
                .read()
                .expect("model lock poisoned. This is a bug."),
        )
    }

    /// The shadow model, if any.
    pub fn shadow(&self) -> Option<Arc<ServingModel>> {
        self.inner
            .shadow
            .read()
            .expect("shadow lock poisoned. This is a bug.")
            .clone()
    }

    /// Makes `model` the active one; a model that becomes active stops being the shadow.
    pub fn activate(&self, model: Arc<ServingModel>) {
        self.inner.metrics.set_model(&model.id);
        if self.shadow().is_some_and(|s| s.id == model.id) {
            self.set_shadow(None);
        }
        *self
            .inner
            .active
            .write()
            .expect("model lock poisoned. This is a bug.") = model;
    }

    /// Sets or clears the shadow model.
    pub fn set_shadow(&self, model: Option<Arc<ServingModel>>) {
        *self
            .inner
            .shadow
            .write()
            .expect("shadow lock poisoned. This is a bug.") = model;
    }
}
