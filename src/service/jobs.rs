//! Long operations as jobs: a retraining asked over HTTP or by the schedule runs in the
//! background as a stored job (status, progress, result or error), which callers poll and may
//! cancel. The registry does the work; this service records it. The CLI's `retrain` stays
//! synchronous and calls the registry directly.

use std::collections::HashMap;
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
    /// The job is registering what it made; it can no longer be cancelled.
    #[error("job {id} is past its last checkpoint (registering its candidate); it can no longer be cancelled")]
    Committing {
        /// The job.
        id: String,
    },
    /// `fine_tune` was asked of a retraining inside `serve`, which stays head-only.
    #[error(
        "fine_tune: retraining inside serve trains the head only (fine-tuning the encoder takes \
         both cores for half an hour or more beside routing); fine-tune offline with `intent-router \
         retrain --fine-tune` or `intent-router train --fine-tune` and activate the result"
    )]
    FineTuneInServe,
    /// A stored job does not read as its kind.
    #[error("job {id}: stored parameters or result unreadable")]
    Corrupt {
        /// The job.
        id: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// What a retraining job was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrainParams {
    /// Refused when true: retraining inside `serve` trains the head only (fine-tuning runs
    /// offline); kept so that stored jobs and `false` still read.
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
        let corrupt = |source| JobsError::Corrupt {
            id: j.id.clone(),
            source,
        };
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

/// Why a job's work failed.
#[derive(Debug)]
pub enum JobFailure {
    /// The registry refused or failed.
    Registry(RegistryError),
    /// The work stopped unexpectedly (a bug); the message is for the log.
    Panicked(String),
}

/// How a job's failure is told: the API's error code and message for it.
pub type DescribeError = fn(JobFailure) -> JobError;

/// When to retrain by itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    /// Retrain after this many new corrections (0: never by count).
    pub retrain_after: i64,
    /// Retrain this often when there are new corrections (`None`: never by time).
    pub retrain_every: Option<Duration>,
}

/// Where a running job's work stands with respect to cancelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Working; a cancel request is taken.
    #[default]
    Working,
    /// Asked to stop at the next checkpoint.
    Cancelling,
    /// Past the last checkpoint: registering what it made; too late to cancel.
    Committed,
}

/// The progress of one running job, shared with its training thread.
#[derive(Default)]
struct Sink {
    progress: Mutex<Option<JobProgress>>,
    phase: Mutex<Phase>,
}

impl Sink {
    fn snapshot(&self) -> Option<JobProgress> {
        self.progress
            .lock()
            .expect("progress lock poisoned. This is a bug.")
            .clone()
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .expect("phase lock poisoned. This is a bug.")
    }

    /// Asks the work to stop; false when it is past its last checkpoint.
    fn request_cancel(&self) -> bool {
        let mut phase = self.phase();
        if *phase == Phase::Committed {
            return false;
        }
        *phase = Phase::Cancelling;
        true
    }
}

impl Progress for Sink {
    fn stage(&self, name: &str, steps: usize) {
        *self
            .progress
            .lock()
            .expect("progress lock poisoned. This is a bug.") = Some(JobProgress {
            stage: name.to_string(),
            done: 0,
            total: steps as u64,
        });
    }

    fn step(&self, done: usize) {
        if let Some(p) = self
            .progress
            .lock()
            .expect("progress lock poisoned. This is a bug.")
            .as_mut()
        {
            p.done = done as u64;
        }
    }

    fn cancelled(&self) -> bool {
        *self.phase() == Phase::Cancelling
    }

    fn commit(&self) -> bool {
        let mut phase = self.phase();
        if *phase == Phase::Cancelling {
            return false;
        }
        *phase = Phase::Committed;
        true
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

    /// Marks the jobs a stopped process left running as failed (`interrupted`): those still
    /// marked running while no process on the database retrains (a running job, here or on
    /// another replica, holds the right to retrain, and is left alone).
    pub async fn fail_interrupted(&self) -> Result<u64, JobsError> {
        // A cheap read first: the right to retrain takes a connection of its own.
        if self.store.running_jobs().await? == 0 {
            return Ok(0);
        }
        let Some(_nobody_else) = self.registry.retrain_right().await? else {
            return Ok(0);
        };
        let n = self.store.fail_interrupted_jobs().await?;
        if n > 0 {
            tracing::warn!(n, "jobs cut off by a restart marked failed (interrupted)");
        }
        Ok(n)
    }

    /// Starts a retraining job, once the registry agrees to retrain now (else the error comes
    /// at once: one retraining at a time, the training data must exist). The job is recorded
    /// and run by its own task, so a caller that goes away stops nothing half way.
    pub async fn start_retrain(
        &self,
        params: RetrainParams,
        by: &str,
    ) -> Result<JobInfo, JobsError> {
        if params.fine_tune {
            return Err(JobsError::FineTuneInServe);
        }
        let permit = self.registry.begin_retrain().await?;
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
        let info = JobInfo::try_from(job.clone())?;
        let (recorded, is_recorded) = tokio::sync::oneshot::channel();
        let jobs = self.clone();
        tokio::spawn(async move {
            if let Err(e) = jobs.store.insert_job(&job).await {
                let _ = recorded.send(Err(e));
                return;
            }
            let sink = Arc::new(Sink::default());
            jobs.lock_running()
                .insert(job.id.clone(), Arc::clone(&sink));
            let _ = recorded.send(Ok(()));
            let registry = jobs.registry.clone();
            let progress: crate::registry::SharedProgress = sink.clone();
            // Held until the job's end is recorded: a replica starting meanwhile must not take
            // the finished-but-unrecorded job for one a crash cut off.
            let permit = Arc::new(permit);
            let held = Arc::clone(&permit);
            let work = tokio::spawn(async move {
                registry
                    .retrain_with(&held, params.fine_tune, params.after_gate(), progress)
                    .await
            });
            jobs.run(&job.id, &sink, work).await;
            drop(permit);
        });
        is_recorded.await.map_err(|_| {
            StoreError::Corrupt("the job's task ended before recording it".into())
        })??;
        Ok(info)
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
                _ = tick.tick() => self.write_progress(id, sink).await,
            }
        };
        self.write_progress(id, sink).await;
        let (status, result, error) = match ended {
            Ok(Ok(r)) => {
                tracing::info!(
                    job = id,
                    model = r.record.id,
                    outcome = r.outcome.name(),
                    "job done"
                );
                let result = serde_json::to_value(RetrainResult::from(r))
                    .expect("a result serialises. This is a bug.");
                (JobStatus::Succeeded, Some(result), None)
            }
            Ok(Err(e)) if e.is_cancelled() => {
                tracing::info!(job = id, "job cancelled");
                (JobStatus::Cancelled, None, None)
            }
            Ok(Err(e)) => {
                tracing::error!(job = id, "job failed: {e}");
                (
                    JobStatus::Failed,
                    None,
                    Some((self.describe)(JobFailure::Registry(e))),
                )
            }
            Err(panic) => {
                tracing::error!(job = id, "job panicked: {panic}");
                let failure = JobFailure::Panicked(panic.to_string());
                (JobStatus::Failed, None, Some((self.describe)(failure)))
            }
        };
        self.finish(id, status, result.as_ref(), error.as_ref())
            .await;
        self.lock_running().remove(id);
    }

    /// Writes a running job's progress, once it has some, and takes a cancel request made
    /// through the database.
    async fn write_progress(&self, id: &str, sink: &Sink) {
        let Some(p) = sink.snapshot() else {
            return;
        };
        match self.store.job_progress(id, &p).await {
            Ok(true) => {
                sink.request_cancel();
            }
            Ok(false) => {}
            Err(e) => tracing::error!(job = id, "recording progress: {e}"),
        }
    }

    /// Records how a job ended, retrying a failed write (a job left `running` would look
    /// alive until the next restart).
    async fn finish(
        &self,
        id: &str,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&JobError>,
    ) {
        for attempt in 1..=5 {
            match self.store.finish_job(id, status, result, error).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(job = id, attempt, "recording the end of the job: {e}");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
    }

    /// One job.
    pub async fn get(&self, id: &str) -> Result<JobInfo, JobsError> {
        JobInfo::try_from(self.store.job(id).await?)
    }

    /// The newest jobs first (a stored job that does not read is left out, with a log line).
    pub async fn list(&self, limit: i64) -> Result<Vec<JobInfo>, JobsError> {
        Ok(self
            .store
            .jobs(limit)
            .await?
            .into_iter()
            .filter_map(|j| {
                JobInfo::try_from(j)
                    .map_err(|e| {
                        tracing::warn!("listing jobs: {e}: {:?}", std::error::Error::source(&e))
                    })
                    .ok()
            })
            .collect())
    }

    /// Asks a running job to stop at its next checkpoint; the job as it stands. Refused once
    /// the job has ended or is registering what it made.
    pub async fn cancel(&self, id: &str) -> Result<JobInfo, JobsError> {
        let sink = self.lock_running().get(id).cloned();
        if sink.is_some_and(|s| !s.request_cancel()) {
            return Err(JobsError::Committing { id: id.to_string() });
        }
        let job = self.store.request_job_cancel(id).await?;
        if job.status != JobStatus::Running {
            return Err(JobsError::Finished {
                id: id.to_string(),
                status: job.status.name(),
            });
        }
        JobInfo::try_from(job)
    }

    /// At shutdown: the jobs this process runs are asked to stop and recorded as failed
    /// (`interrupted`), so that none looks alive after the process has gone.
    pub async fn shutdown(&self) {
        let running: Vec<(String, Arc<Sink>)> = self
            .lock_running()
            .iter()
            .map(|(id, s)| (id.clone(), Arc::clone(s)))
            .collect();
        for (id, sink) in running {
            sink.request_cancel();
            let error = JobError::interrupted();
            self.finish(&id, JobStatus::Failed, None, Some(&error))
                .await;
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Sink>>> {
        self.running
            .lock()
            .expect("jobs lock poisoned. This is a bug.")
    }

    /// Marks the jobs of replicas that died mid-retraining as failed (`interrupted`), checking
    /// every `every` as long as the process runs (the periodic check of `[replicas]`).
    pub fn spawn_sweep(&self, every: Duration) {
        let jobs = self.clone();
        crate::store::spawn_on_changes(None, &[], every, move || {
            let jobs = jobs.clone();
            async move {
                if let Err(e) = jobs.fail_interrupted().await {
                    tracing::error!("looking for interrupted jobs: {e}");
                }
            }
        });
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
                match jobs.retrain_due(schedule).await {
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

    /// Whether the schedule asks for a retraining now: it counts the corrections made since
    /// the newest model or job, whichever is newer, so a retraining that failed or was
    /// cancelled is not started again until new corrections come (or the period passes).
    async fn retrain_due(&self, schedule: Schedule) -> Result<bool, JobsError> {
        let newest_model = self.store.models().await?.first().map(|m| m.created_at);
        let newest_job = self.store.jobs(1).await?.first().map(|j| j.created_at);
        let since = newest_model.max(newest_job).unwrap_or_default();
        let new = self.store.corrections_since(since).await?;
        let by_count = schedule.retrain_after > 0 && new >= schedule.retrain_after;
        let by_time = schedule
            .retrain_every
            .is_some_and(|p| new > 0 && (Utc::now() - since).to_std().is_ok_and(|age| age >= p));
        Ok(by_count || by_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_is_taken_until_the_work_commits_and_not_after() {
        let sink = Sink::default();
        assert_eq!(sink.snapshot(), None, "no progress before the first stage");
        sink.stage("embedding", 10);
        sink.step(4);
        assert_eq!(
            sink.snapshot(),
            Some(JobProgress {
                stage: "embedding".into(),
                done: 4,
                total: 10
            })
        );
        assert!(!sink.cancelled());
        assert!(sink.request_cancel());
        assert!(sink.cancelled());
        assert!(
            !sink.commit(),
            "a cancelled job does not register its candidate"
        );

        let late = Sink::default();
        assert!(late.commit());
        assert!(!late.request_cancel(), "too late once committed");
        assert!(!late.cancelled());
    }
}
