//! Long operations as jobs: a retraining asked over HTTP or by the schedule runs in the
//! background as a stored job (status, progress, result or error), which callers poll and may
//! cancel. The registry does the work; this service records it. The CLI's `retrain` stays
//! synchronous and calls the registry directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::learn::GateReport;
use crate::registry::{AfterGate, ModelRegistry, RegistryError, RetrainOutcome, Retrained};
use crate::store::{
    Job, JobError, JobKind, JobProgress, JobStatus, ModelRecord, Store, StoreError,
};
use crate::train::trainer::Progress;

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// The registry refused to start (a retraining runs, no training data).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The database failed, or has no such job.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job ended already.
    #[error("job {id} is {status}; only a running job can be cancelled")]
    Finished {
        /// The job.
        id: String,
        /// How it ended.
        status: &'static str,
    },
    /// A stored job does not read as its kind.
    #[error("job {0}: stored parameters or result unreadable: {1}")]
    Corrupt(String, serde_json::Error),
}

/// What a retraining job was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrainParams {
    /// Also fine-tune the encoder's top layers (slow).
    #[serde(default)]
    pub fine_tune: bool,
    /// Run a passing candidate in shadow (true) or activate it (false); absent or null:
    /// learning.on_pass.
    #[serde(default)]
    pub shadow: Option<bool>,
}

impl RetrainParams {
    /// The policy for a passing candidate (`None`: the configured one).
    fn after_gate(self) -> Option<AfterGate> {
        self.shadow.map(|shadow| {
            if shadow {
                AfterGate::Shadow
            } else {
                AfterGate::Activate
            }
        })
    }
}

/// What a retraining job produced.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetrainResult {
    /// What became of the candidate.
    pub outcome: RetrainOutcome,
    /// The candidate as it stands after the policy.
    pub model: ModelRecord,
    /// The gate's verdict and evidence.
    pub gate: GateReport,
}

impl From<Retrained> for RetrainResult {
    fn from(r: Retrained) -> Self {
        Self {
            outcome: r.outcome,
            model: r.record,
            gate: r.gate,
        }
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobInfo {
    /// Id (`GET /v1/jobs/{id}`).
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// Where it stands.
    pub status: JobStatus,
    /// What was asked.
    pub params: RetrainParams,
    /// The last stage reported and its steps.
    pub progress: Option<JobProgress>,
    /// What came of it, once succeeded (the gate's result included).
    pub result: Option<RetrainResult>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// Whether someone asked to cancel it (it stops at the next checkpoint).
    pub cancel_requested: bool,
    /// Who started it (a token's name, `schedule`).
    pub created_by: String,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<Job> for JobInfo {
    type Error = JobsError;

    fn try_from(j: Job) -> Result<Self, JobsError> {
        let corrupt = |e| JobsError::Corrupt(j.id.clone(), e);
        Ok(Self {
            params: serde_json::from_value(j.params.clone()).map_err(corrupt)?,
            result: j
                .result
                .clone()
                .map(serde_json::from_value)
                .transpose()
                .map_err(corrupt)?,
            id: j.id,
            kind: j.kind,
            status: j.status,
            progress: j.progress,
            error: j.error,
            cancel_requested: j.cancel_requested,
            created_by: j.created_by,
            created_at: j.created_at,
            finished_at: j.finished_at,
        })
    }
}

/// How a job's failure is told: the API's error code and message for a registry error.
pub type DescribeError = fn(RegistryError) -> JobError;

/// When to retrain by itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    /// Retrain after this many new corrections (0: never by count).
    pub retrain_after: i64,
    /// Retrain this often when there are new corrections (`None`: never by time).
    pub retrain_every: Option<Duration>,
}

/// The progress of one running job, shared with its training thread.
#[derive(Default)]
struct Sink {
    progress: Mutex<JobProgress>,
    cancel: AtomicBool,
}

impl Sink {
    fn snapshot(&self) -> JobProgress {
        self.progress
            .lock()
            .expect("progress lock poisoned. This is a bug.")
            .clone()
    }
}

impl Progress for Sink {
    fn stage(&self, name: &str, steps: usize) {
        let mut p = self
            .progress
            .lock()
            .expect("progress lock poisoned. This is a bug.");
        *p = JobProgress {
            stage: name.to_string(),
            done: 0,
            total: steps as u64,
        };
    }

    fn step(&self, done: usize) {
        self.progress
            .lock()
            .expect("progress lock poisoned. This is a bug.")
            .done = done as u64;
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Starts, runs, reports and cancels jobs.
#[derive(Clone)]
pub struct Jobs {
    store: Arc<Store>,
    registry: ModelRegistry,
    describe: DescribeError,
    /// The jobs this process runs, by id.
    running: Arc<Mutex<HashMap<String, Arc<Sink>>>>,
}

/// How often a running job's progress is written (and a cancel request read).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

impl Jobs {
    /// The service; `describe` turns a registry error into the job's error.
    pub fn new(store: Arc<Store>, registry: ModelRegistry, describe: DescribeError) -> Self {
        Self {
            store,
            registry,
            describe,
            running: Arc::default(),
        }
    }

    /// Marks the jobs a previous run of the service left running as failed (`interrupted`).
    pub async fn fail_interrupted(&self) -> Result<u64, JobsError> {
        let n = self.store.fail_interrupted_jobs().await?;
        if n > 0 {
            tracing::warn!(n, "jobs cut off by a restart marked failed (interrupted)");
        }
        Ok(n)
    }

    /// Starts a retraining job, once the registry agrees to retrain now (else the error comes
    /// at once: one retraining at a time, the training data must exist).
    pub async fn start_retrain(
        &self,
        params: RetrainParams,
        by: &str,
    ) -> Result<JobInfo, JobsError> {
        let permit = self.registry.begin_retrain()?;
        let job = Job {
            id: uuid::Uuid::now_v7().to_string(),
            kind: JobKind::Retrain,
            status: JobStatus::Running,
            params: serde_json::to_value(params).expect("parameters serialise. This is a bug."),
            progress: None,
            result: None,
            error: None,
            cancel_requested: false,
            created_by: by.to_string(),
            created_at: Utc::now(),
            finished_at: None,
        };
        self.store.insert_job(&job).await?;
        let sink = Arc::new(Sink::default());
        self.lock_running()
            .insert(job.id.clone(), Arc::clone(&sink));
        let (jobs, id) = (self.clone(), job.id.clone());
        tokio::spawn(async move {
            let registry = jobs.registry.clone();
            let progress: crate::registry::SharedProgress = sink.clone();
            let work = tokio::spawn(async move {
                registry
                    .retrain_with(permit, params.fine_tune, params.after_gate(), progress)
                    .await
            });
            jobs.run(&id, &sink, work).await;
        });
        JobInfo::try_from(job)
    }

    /// Follows a job until its work ends, writing progress and reading cancel requests, then
    /// records how it ended.
    async fn run(
        &self,
        id: &str,
        sink: &Sink,
        mut work: tokio::task::JoinHandle<Result<Retrained, RegistryError>>,
    ) {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let ended = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => match self.store.job_progress(id, &sink.snapshot()).await {
                    Ok(true) => sink.cancel.store(true, Ordering::Relaxed),
                    Ok(false) => {}
                    Err(e) => tracing::error!(job = id, "recording progress: {e}"),
                },
            }
        };
        let _ = self.store.job_progress(id, &sink.snapshot()).await;
        let finished = match ended {
            Ok(Ok(r)) => {
                tracing::info!(
                    job = id,
                    model = r.record.id,
                    outcome = r.outcome.name(),
                    "job done"
                );
                let result = serde_json::to_value(RetrainResult::from(r))
                    .expect("a result serialises. This is a bug.");
                self.store
                    .finish_job(id, JobStatus::Succeeded, Some(&result), None)
                    .await
            }
            Ok(Err(e)) if e.is_cancelled() => {
                tracing::info!(job = id, "job cancelled");
                self.store
                    .finish_job(id, JobStatus::Cancelled, None, None)
                    .await
            }
            Ok(Err(e)) => {
                tracing::error!(job = id, "job failed: {e}");
                let error = (self.describe)(e);
                self.store
                    .finish_job(id, JobStatus::Failed, None, Some(&error))
                    .await
            }
            Err(panic) => {
                tracing::error!(job = id, "job panicked: {panic}");
                let error = JobError {
                    code: "internal".into(),
                    message: "the job stopped unexpectedly; the server log has the cause".into(),
                };
                self.store
                    .finish_job(id, JobStatus::Failed, None, Some(&error))
                    .await
            }
        };
        if let Err(e) = finished {
            tracing::error!(job = id, "recording the end of the job: {e}");
        }
        self.lock_running().remove(id);
    }

    /// One job.
    pub async fn get(&self, id: &str) -> Result<JobInfo, JobsError> {
        JobInfo::try_from(self.store.job(id).await?)
    }

    /// The newest jobs first.
    pub async fn list(&self, limit: i64) -> Result<Vec<JobInfo>, JobsError> {
        self.store
            .jobs(limit)
            .await?
            .into_iter()
            .map(JobInfo::try_from)
            .collect()
    }

    /// Asks a running job to stop at its next checkpoint; the job as it stands.
    pub async fn cancel(&self, id: &str) -> Result<JobInfo, JobsError> {
        let job = self.store.request_job_cancel(id).await?;
        if job.status != JobStatus::Running {
            return Err(JobsError::Finished {
                id: id.to_string(),
                status: job.status.name(),
            });
        }
        if let Some(sink) = self.lock_running().get(id) {
            sink.cancel.store(true, Ordering::Relaxed);
        }
        JobInfo::try_from(job)
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Sink>>> {
        self.running
            .lock()
            .expect("jobs lock poisoned. This is a bug.")
    }

    /// Starts retraining jobs by the schedule: after a number of new corrections, or
    /// periodically when there are new ones (checked every 30 seconds).
    pub fn spawn_schedule(&self, schedule: Schedule) {
        if schedule.retrain_after <= 0 && schedule.retrain_every.is_none() {
            return;
        }
        let jobs = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tick.tick().await;
                let due = jobs
                    .registry
                    .retrain_due(schedule.retrain_after, schedule.retrain_every)
                    .await;
                match due {
                    Ok(false) => {}
                    Ok(true) => match jobs
                        .start_retrain(RetrainParams::default(), "schedule")
                        .await
                    {
                        Ok(job) => tracing::info!(job = job.id, "scheduled retraining started"),
                        Err(JobsError::Registry(RegistryError::RetrainRunning)) => {}
                        Err(e) => tracing::error!("scheduled retraining: {e}"),
                    },
                    Err(e) => tracing::error!("reading the registry: {e}"),
                }
            }
        });
    }
}
