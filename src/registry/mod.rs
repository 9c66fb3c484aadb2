//! The model registry as a service: the bootstrap at startup, activation (load, warm, check the
//! rules, persist, swap), rollback, shadow mode, retraining behind the evaluation gate, and
//! following changes made by another process. It owns the swap and retrain locks, and the
//! invariant that the active rules compile against the active model's taxonomy (checked through
//! [`LiveRules`], under the rules' own lock). The HTTP API, the scheduler and the CLI call it; the
//! CLI's registry is offline (it persists, and a running server follows).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::batch::BatcherConfig;
use crate::engine::{Engine, EngineOptions};
use crate::intent::{IntentTree, TaxonomyError};
use crate::learn::{self, GateReport, LearnError, LearnSettings, ModelMetrics};
use crate::metrics::Metrics;
use crate::model::encoder::EncoderOptions;
use crate::model::files;
use crate::rules::compile::CompileErrors;
use crate::rules::live::{LiveRules, RulesError};
use crate::serving::{self, ClassifyError, LiveModels, ServingModel};
use crate::store::{Exclusive, ExclusiveLock, ModelRecord, ModelStatus, Store, StoreError};
use crate::train::finetune::FineTune;
use crate::train::trainer::{Progress, Silent, TrainError};

mod bootstrap;
mod jobs;
mod thresholds;

pub use bootstrap::{bootstrap, model_version};
pub use thresholds::{NodeThreshold, ThresholdsChange, ThresholdsView};

/// Why a registry operation failed; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed, or has no such model.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The model's files do not load.
    #[error("{0:#}")]
    Unloadable(anyhow::Error),
    /// The model does not classify (warm-up failed).
    #[error("model {id} failed its warm-up: {source}")]
    Warmup {
        /// The model.
        id: String,
        /// Why.
        source: Box<ClassifyError>,
    },
    /// The active rules do not compile against the model's taxonomy.
    #[error("the active rules (version {version}) do not compile against model {id}'s taxonomy; change the rules first")]
    RulesIncompatible {
        /// The model.
        id: String,
        /// The active rules version.
        version: i64,
        /// Every compile error.
        errors: CompileErrors,
    },
    /// The rules could not be read.
    #[error(transparent)]
    Rules(RulesError),
    /// The model's taxonomy file is wrong.
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    /// The thresholds file (`--thresholds`, `thresholds =`) cannot be read or does not fit the
    /// active model.
    #[error("thresholds file {}: {message}", path.display())]
    ThresholdsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Threshold edits that do not fit the model.
    #[error("model {id}: {source}")]
    Thresholds {
        /// The model.
        id: String,
        /// What is wrong.
        source: crate::intent::ThresholdError,
    },
    /// Only candidates run in shadow.
    #[error("model {id} is {status}; only candidates run in shadow")]
    NotACandidate {
        /// The model.
        id: String,
        /// Its status.
        status: ModelStatus,
    },
    /// No model was active before the active one.
    #[error("no earlier active model to roll back to")]
    NothingToRollBackTo,
    /// The registry has no active model (the service never started on this database).
    #[error("the model registry has no active model; start `serve` once first")]
    NoActiveModel,
    /// Another retraining holds the lock.
    #[error("a retraining is already running; try again when it ends")]
    RetrainRunning,
    /// The curated data is missing.
    #[error("learning.{what}: {} is not a file; point the config at the curated data", path.display())]
    NoTrainingData {
        /// The setting.
        what: &'static str,
        /// The path it names.
        path: PathBuf,
    },
    /// Training the candidate failed.
    #[error(transparent)]
    RetrainFailed(Box<LearnError>),
    /// The retraining thread could not start or died.
    #[error("the retraining thread {0}")]
    Thread(&'static str),
    /// A model activated elsewhere could not serve here; it is tried again after a pause
    /// (meanwhile this replica keeps serving the model it has).
    #[error(
        "model {id}, active on the database, could not serve here; trying again in {retry_in:?}"
    )]
    FollowPaused {
        /// The model.
        id: String,
        /// Until the next try.
        retry_in: Duration,
    },
}

impl RegistryError {
    /// Whether a retraining stopped because its progress sink asked it to.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::RetrainFailed(e) if matches!(**e, LearnError::Train(TrainError::Cancelled)))
    }
}

impl From<LearnError> for RegistryError {
    fn from(e: LearnError) -> Self {
        Self::RetrainFailed(Box::new(e))
    }
}

impl From<RulesError> for RegistryError {
    fn from(e: RulesError) -> Self {
        match e {
            RulesError::Store(s) => Self::Store(s),
            other => Self::Rules(other),
        }
    }
}

/// What becomes of a candidate that passes the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterGate {
    /// It is activated at once.
    Activate,
    /// It is scored beside the active model until an admin activates it.
    Shadow,
    /// It stays a candidate.
    Keep,
}

/// What one retraining did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetrainOutcome {
    /// Passed the gate and active.
    Activated,
    /// Passed the gate and running in shadow.
    Shadow,
    /// Passed the gate and kept as a candidate.
    Kept,
    /// Refused by the gate.
    Refused,
}

impl RetrainOutcome {
    /// The outcome's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Activated => "activated",
            Self::Shadow => "shadow",
            Self::Kept => "kept",
            Self::Refused => "refused",
        }
    }
}

/// A retraining's result: the registered candidate (as it stands after the policy), the gate
/// and the outcome.
#[derive(Debug)]
pub struct Retrained {
    /// The candidate's registry record.
    pub record: ModelRecord,
    /// The gate.
    pub gate: GateReport,
    /// What became of it.
    pub outcome: RetrainOutcome,
}

/// How the registry loads and serves models, and retrains them.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Data, registry directory, cache, gate tolerance, training.
    pub learn: LearnSettings,
    /// What a passing candidate becomes when the caller does not say.
    pub after_gate: AfterGate,
    /// Encoder options for loading a model.
    pub encoder: EncoderOptions,
    /// The batching worker of a new serving model.
    pub batching: BatcherConfig,
}

/// The model registry; cheap to clone (one shared state).
#[derive(Clone)]
pub struct ModelRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    rules: LiveRules,
    /// The serving models and the metrics their workers report to (`None`: offline, the CLI).
    live: Option<(LiveModels, Arc<Metrics>)>,
    config: RegistryConfig,
    /// Serialises activations and shadow changes.
    swap: tokio::sync::Mutex<()>,
    /// One retraining at a time.
    retrain: Arc<tokio::sync::Mutex<()>>,
    /// A model activated elsewhere that could not serve here, and when to try it again.
    unfollowed: std::sync::Mutex<Option<Unfollowed>>,
}

/// A model activated elsewhere that this replica could not load, warm or check against its
/// rules: loading it again at every check would cost a model load each time, so the tries
/// are spaced out (30 s, doubling up to 5 minutes).
struct Unfollowed {
    id: String,
    retry_at: Instant,
    pause: Duration,
}

/// The first pause before a model that could not serve is tried again, and the longest.
const FOLLOW_PAUSE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(300));

/// The right to retrain: one at a time in this process and on the database (across
/// replicas), held from the request until the retraining ends.
#[derive(Debug)]
pub struct RetrainPermit {
    _here: tokio::sync::OwnedMutexGuard<()>,
    _everywhere: ExclusiveLock,
}

/// A shareable progress sink for the training thread.
pub type SharedProgress = Arc<dyn Progress + Send + Sync>;

impl ModelRegistry {
    /// The registry of a running service: activations swap the serving models.
    pub fn serving(
        store: Arc<Store>,
        rules: LiveRules,
        models: LiveModels,
        metrics: Arc<Metrics>,
        config: RegistryConfig,
    ) -> Self {
        Self::new(store, rules, Some((models, metrics)), config)
    }

    /// The registry of an offline command: changes are persisted, and a running server follows.
    pub async fn offline(store: Arc<Store>, config: RegistryConfig) -> Result<Self, RegistryError> {
        let active = active_record(&store).await?;
        let tree = IntentTree::load(&Path::new(&active.path).join(files::TAXONOMY))?;
        let rules =
            LiveRules::start(Arc::clone(&store), Arc::new(Metrics::new()), None, &tree).await?;
        Ok(Self::new(store, rules, None, config))
    }

    fn new(
        store: Arc<Store>,
        rules: LiveRules,
        live: Option<(LiveModels, Arc<Metrics>)>,
        config: RegistryConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                rules,
                live,
                config,
                swap: tokio::sync::Mutex::new(()),
                retrain: Arc::new(tokio::sync::Mutex::new(())),
                unfollowed: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Every version, newest first.
    pub async fn list(&self) -> Result<Vec<ModelRecord>, RegistryError> {
        Ok(self.inner.store.models().await?)
    }

    /// The active version's record.
    pub async fn active(&self) -> Result<ModelRecord, RegistryError> {
        active_record(&self.inner.store).await
    }

    /// Makes a registered model active: loads it (sharing the encoder) and warms it, then, if
    /// the active rules compile against its taxonomy, records and swaps it in one step.
    /// Requests in flight finish on the model they started with.
    pub async fn activate(
        &self,
        id: &str,
        note: Option<&str>,
    ) -> Result<ModelRecord, RegistryError> {
        let _one = self.inner.swap.lock().await;
        self.activate_locked(id, note).await
    }

    async fn activate_locked(
        &self,
        id: &str,
        note: Option<&str>,
    ) -> Result<ModelRecord, RegistryError> {
        let store = &self.inner.store;
        let record = store.model(id).await?;
        let Some((models, _)) = &self.inner.live else {
            let tree = IntentTree::load(&Path::new(&record.path).join(files::TAXONOMY))?;
            let stored = self
                .checked(id, &tree, |rules| {
                    store.activate_model(id, note, Some(rules))
                })
                .await?;
            return Ok(stored?);
        };
        if models.active().id == record.id {
            return Ok(record);
        }
        let serving = self.start_serving(&record).await?;
        serving
            .warm_up()
            .await
            .map_err(|source| RegistryError::Warmup {
                id: id.to_string(),
                source: Box::new(source),
            })?;
        let swapped = Arc::clone(&serving);
        let swap = |rules| async move {
            let stored = store.activate_model(id, note, Some(rules)).await?;
            models.activate(swapped);
            Ok::<_, StoreError>(stored)
        };
        let stored = self
            .checked(id, &serving.engine.classifier().tree, swap)
            .await??;
        // Edits saved for it while it loaded and warmed up (it was not serving yet).
        thresholds::follow_thresholds(store, &serving).await?;
        tracing::info!(model = id, "model activated");
        Ok(stored)
    }

    /// Runs `change` (given the rules version checked) only if the active rules compile
    /// against `tree`, with no rules change in between.
    async fn checked<T, F: std::future::Future<Output = T>>(
        &self,
        id: &str,
        tree: &IntentTree,
        change: impl FnOnce(i64) -> F,
    ) -> Result<T, RegistryError> {
        self.inner
            .rules
            .check_then(tree, change)
            .await
            .map_err(|e| incompatible(id, e))
    }

    /// Re-activates the model that was active before this one.
    pub async fn rollback(&self, note: &str) -> Result<ModelRecord, RegistryError> {
        let previous = self
            .inner
            .store
            .previous_active_model()
            .await?
            .ok_or(RegistryError::NothingToRollBackTo)?;
        self.activate(&previous.id, Some(note)).await
    }

    /// Starts or stops scoring a candidate beside the active model on live traffic.
    pub async fn set_shadow(&self, id: &str, enabled: bool) -> Result<ModelRecord, RegistryError> {
        let record = self.inner.store.model(id).await?;
        if record.status != ModelStatus::Candidate {
            return Err(RegistryError::NotACandidate {
                id: id.to_string(),
                status: record.status,
            });
        }
        let _one = self.inner.swap.lock().await;
        self.shadow_locked(&record, enabled).await?;
        Ok(self.inner.store.model(id).await?)
    }

    async fn shadow_locked(
        &self,
        record: &ModelRecord,
        enabled: bool,
    ) -> Result<(), RegistryError> {
        let store = &self.inner.store;
        let live = self.inner.live.as_ref().map(|(m, _)| m);
        if !enabled {
            store
                .update_candidate(&record.id, false, &record.note)
                .await?;
            if let Some(models) = live.filter(|m| m.shadow().is_some_and(|s| s.id == record.id)) {
                models.set_shadow(None);
            }
            return Ok(());
        }
        let serving = match live {
            Some(_) => Some(self.start_serving(record).await?),
            None => None,
        };
        store
            .update_candidate(&record.id, true, &record.note)
            .await?;
        if let (Some(models), Some(serving)) = (live, serving) {
            models.set_shadow(Some(serving));
        }
        Ok(())
    }

    /// Loads a registered model and starts serving it beside the live ones (sharing their
    /// encoder when it is the same).
    async fn start_serving(
        &self,
        record: &ModelRecord,
    ) -> Result<Arc<ServingModel>, RegistryError> {
        let Some((models, metrics)) = &self.inner.live else {
            unreachable!("only a serving registry starts models. This is a bug.");
        };
        let mut others = vec![models.active()];
        others.extend(models.shadow());
        let classifier = serving::load_classifier(
            PathBuf::from(&record.path),
            self.inner.config.encoder.clone(),
            others.clone(),
        )
        .await
        .map_err(RegistryError::Unloadable)?;
        let refs: Vec<&ServingModel> = others.iter().map(|m| m.as_ref()).collect();
        let serving = Arc::new(ServingModel::start(
            classifier,
            record.id.clone(),
            self.inner.config.batching,
            Arc::clone(metrics),
            &refs,
        ));
        thresholds::follow_thresholds(&self.inner.store, &serving).await?;
        Ok(serving)
    }

    /// Trains a candidate on the base data plus agents' corrections, gates it against the
    /// active model, registers it, and applies `after` (or the configured policy) to a passing
    /// one; a refused one stays a candidate whose note says why.
    pub async fn retrain(
        &self,
        fine_tune: bool,
        after: Option<AfterGate>,
    ) -> Result<Retrained, RegistryError> {
        let permit = self.begin_retrain().await?;
        self.retrain_with(&permit, fine_tune, after, Arc::new(Silent))
            .await
    }

    /// Takes the right to retrain, when no retraining runs and the curated data is there: the
    /// checks a caller wants answered before it hands the work to a job.
    pub async fn begin_retrain(&self) -> Result<RetrainPermit, RegistryError> {
        let settings = &self.inner.config.learn;
        for (what, path) in [
            ("base_data", &settings.base_data),
            ("dev_data", &settings.dev_data),
        ] {
            if !path.is_file() {
                return Err(RegistryError::NoTrainingData {
                    what,
                    path: path.clone(),
                });
            }
        }
        self.retrain_right()
            .await?
            .ok_or(RegistryError::RetrainRunning)
    }

    /// The right to retrain, if no retraining runs in this process or any other on the
    /// database (`None` otherwise).
    pub async fn retrain_right(&self) -> Result<Option<RetrainPermit>, RegistryError> {
        let Ok(here) = Arc::clone(&self.inner.retrain).try_lock_owned() else {
            return Ok(None);
        };
        Ok(self
            .inner
            .store
            .try_exclusive(Exclusive::Retrain)
            .await?
            .map(|everywhere| RetrainPermit {
                _here: here,
                _everywhere: everywhere,
            }))
    }

    /// Retrains under a permit, reporting to `progress` (which may ask to stop: then nothing
    /// is registered and the error is [`RegistryError::is_cancelled`]).
    pub async fn retrain_with(
        &self,
        _permit: &RetrainPermit,
        fine_tune: bool,
        after: Option<AfterGate>,
        progress: SharedProgress,
    ) -> Result<Retrained, RegistryError> {
        let (engine, parent) = self.active_engine().await?;
        let (record, gate) = self
            .train_candidate(engine, &parent, fine_tune, progress)
            .await?;
        let outcome = match after.unwrap_or(self.inner.config.after_gate) {
            _ if !gate.passed => RetrainOutcome::Refused,
            AfterGate::Keep => RetrainOutcome::Kept,
            AfterGate::Shadow => {
                let _swap = self.inner.swap.lock().await;
                self.shadow_locked(&record, true).await?;
                RetrainOutcome::Shadow
            }
            AfterGate::Activate => {
                self.activate(&record.id, Some("passed the gate; activated"))
                    .await?;
                RetrainOutcome::Activated
            }
        };
        tracing::info!(model = record.id, outcome = outcome.name(), "retrained");
        Ok(Retrained {
            record: self.inner.store.model(&record.id).await?,
            gate,
            outcome,
        })
    }

    /// The active model's engine (the serving one, or loaded from its directory offline) and id.
    async fn active_engine(&self) -> Result<(Arc<Engine>, String), RegistryError> {
        if let Some((models, _)) = &self.inner.live {
            let active = models.active();
            return Ok((Arc::clone(&active.engine), active.id.clone()));
        }
        let active = self.active().await?;
        let classifier = serving::load_classifier(
            PathBuf::from(&active.path),
            self.inner.config.encoder.clone(),
            Vec::new(),
        )
        .await
        .map_err(RegistryError::Unloadable)?;
        let engine = Engine::new(classifier, EngineOptions::default());
        Ok((Arc::new(engine), active.id))
    }

    /// Trains and gates a candidate on a low-priority thread, and registers it (status
    /// `candidate`, the gate report as its metrics).
    async fn train_candidate(
        &self,
        active: Arc<Engine>,
        parent_id: &str,
        fine_tune: bool,
        progress: SharedProgress,
    ) -> Result<(ModelRecord, GateReport), RegistryError> {
        let settings = &self.inner.config.learn;
        let store = &self.inner.store;
        let added = store.added_intents().await?;
        let corrections = store.corrections().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (settings, parent) = (settings.clone(), parent_id.to_string());
        let thread_progress = Arc::clone(&progress);
        std::thread::Builder::new()
            .name("retrain".into())
            .spawn(move || {
                lower_priority();
                let r = learn::retrain(
                    active.classifier(),
                    &added,
                    &corrections,
                    &settings,
                    fine_tune.then(FineTune::default),
                    &parent,
                    &*thread_progress,
                );
                let _ = tx.send(r);
            })
            .map_err(|_| RegistryError::Thread("could not start"))?;
        let candidate = rx.await.map_err(|_| RegistryError::Thread("died"))??;
        crate::failpoint::hit("retrain.after_train")
            .await
            .map_err(StoreError::Injected)?;
        // The last moment to stop: past it the candidate is registered (and maybe activated).
        if !progress.commit() {
            if let Err(e) = std::fs::remove_dir_all(&candidate.dir) {
                tracing::warn!(
                    "removing the cancelled candidate {}: {e}",
                    candidate.dir.display()
                );
            }
            return Err(LearnError::Train(TrainError::Cancelled).into());
        }
        let record = ModelRecord {
            id: candidate.id.clone(),
            parent: Some(parent_id.to_string()),
            path: candidate.dir.display().to_string(),
            data_hash: candidate.data_hash.clone(),
            metrics: ModelMetrics::Gate(Box::new(candidate.gate.clone())),
            status: ModelStatus::Candidate,
            shadow: false,
            note: if candidate.gate.passed {
                "passed the gate".to_string()
            } else {
                format!("refused by the gate: {}", candidate.gate.reasons.join("; "))
            },
            created_at: Utc::now(),
            activated_at: None,
        };
        store.insert_model(&record).await?;
        Ok((record, candidate.gate))
    }

    /// Makes the serving models and rules match the database, where another replica or the
    /// CLI may have changed them: loads and warms a newly active model and swaps it in with the
    /// stored rules (which must compile against it), follows a rules change, starts or stops
    /// the shadow model. Writes nothing: the change is already recorded.
    pub async fn follow(&self) -> Result<(), RegistryError> {
        let Some((models, _)) = &self.inner.live else {
            return Ok(());
        };
        // Read under the lock, so that a change this process is making is either all in the
        // records or not begun.
        let _one = self.inner.swap.lock().await;
        let followed = self.follow_models(models).await;
        // The thresholds of the models serving here are followed whatever became of the rest
        // (a shadow that does not load, a model paused after a failure).
        let thresholds = self.follow_thresholds().await;
        followed?;
        Ok(thresholds?)
    }

    /// The model and rules part of [`ModelRegistry::follow`], under its lock.
    async fn follow_models(&self, models: &LiveModels) -> Result<(), RegistryError> {
        let records = self.list().await?;
        let rules = &self.inner.rules;
        let moved = records
            .iter()
            .find(|m| m.status == ModelStatus::Active)
            .filter(|a| a.id != models.active().id);
        if let Some(record) = moved {
            self.paused(&record.id)?;
            if let Err(e) = self.serve_activated(models, record).await {
                self.pause(&record.id);
                return Err(e);
            }
            *self.unfollowed() = None;
            tracing::info!(
                model = record.id,
                "model activated elsewhere: now serving it"
            );
        } else if rules.behind().await? {
            let active = models.active();
            rules
                .follow_with(&active.engine.classifier().tree, async {})
                .await
                .map_err(|e| incompatible(&active.id, e))?;
        }
        let want = records
            .iter()
            .find(|m| m.shadow && m.status == ModelStatus::Candidate);
        match (want, models.shadow().map(|s| s.id.clone())) {
            (Some(w), have) if have.as_deref() != Some(w.id.as_str()) => {
                models.set_shadow(Some(self.start_serving(w).await?));
            }
            (None, Some(_)) => models.set_shadow(None),
            _ => {}
        }
        Ok(())
    }
}

impl ModelRegistry {
    /// Loads, warms and swaps in a model activated elsewhere, with the stored rules (which
    /// must compile against it).
    async fn serve_activated(
        &self,
        models: &LiveModels,
        record: &ModelRecord,
    ) -> Result<(), RegistryError> {
        let serving = self.start_serving(record).await?;
        serving
            .warm_up()
            .await
            .map_err(|source| RegistryError::Warmup {
                id: record.id.clone(),
                source: Box::new(source),
            })?;
        let tree = &serving.engine.classifier().tree;
        self.inner
            .rules
            .follow_with(tree, async { models.activate(Arc::clone(&serving)) })
            .await
            .map_err(|e| incompatible(&record.id, e))
    }

    fn unfollowed(&self) -> std::sync::MutexGuard<'_, Option<Unfollowed>> {
        self.inner
            .unfollowed
            .lock()
            .expect("follow state lock poisoned. This is a bug.")
    }

    /// Refuses to try model `id` again before its pause is over.
    fn paused(&self, id: &str) -> Result<(), RegistryError> {
        match &*self.unfollowed() {
            Some(u) if u.id == id && Instant::now() < u.retry_at => {
                Err(RegistryError::FollowPaused {
                    id: id.to_string(),
                    retry_in: u.retry_at - Instant::now(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Model `id` could not serve: the next try waits, twice as long as the last time.
    fn pause(&self, id: &str) {
        let mut unfollowed = self.unfollowed();
        let pause = match &*unfollowed {
            Some(u) if u.id == id => (u.pause * 2).min(FOLLOW_PAUSE.1),
            _ => FOLLOW_PAUSE.0,
        };
        *unfollowed = Some(Unfollowed {
            id: id.to_string(),
            retry_at: Instant::now() + pause,
            pause,
        });
    }
}

/// A rules error met while swapping model `id`, as the registry reports it.
fn incompatible(id: &str, e: RulesError) -> RegistryError {
    match e {
        RulesError::Incompatible { version, errors } => RegistryError::RulesIncompatible {
            id: id.to_string(),
            version,
            errors,
        },
        other => other.into(),
    }
}

async fn active_record(store: &Store) -> Result<ModelRecord, RegistryError> {
    store
        .models()
        .await?
        .into_iter()
        .find(|m| m.status == ModelStatus::Active)
        .ok_or(RegistryError::NoActiveModel)
}

/// Lowers the calling thread's scheduling priority, so retraining yields to routing.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on the calling thread's id only changes its nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
