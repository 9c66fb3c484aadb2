//! Long operations (retraining over HTTP) as stored jobs: what was asked, by whom, how far it
//! got, and how it ended. Stored so that a job is visible after a restart and from every
//! replica; a job a restart cut off ends as failed with the reason `interrupted`. Cancelling is
//! a flag in the row that the process running the job reads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Train a candidate, gate it and apply the policy (`POST /v1/models/retrain`).
    Retrain,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Working.
    Running,
    /// Done; `result` says what came of it (a candidate refused by the gate included).
    Succeeded,
    /// Stopped by an error (`error` says which); `interrupted` when a restart cut it off.
    Failed,
    /// Stopped on request.
    Cancelled,
}

stored_names!(JobKind, "job kind", { Retrain = "retrain" });
stored_names!(JobStatus, "job status", {
    Running = "running",
    Succeeded = "succeeded",
    Failed = "failed",
    Cancelled = "cancelled",
});

/// How far a running job got.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobProgress {
    /// The current stage (`embedding`, `training head`, `fine-tuning`, `gating`...).
    pub stage: String,
    /// Steps done in the stage.
    pub done: u64,
    /// Steps in the stage (0: unknown).
    pub total: u64,
}

/// Why a job failed: an error code of the API's table and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    /// The code (`retrain_failed`, `rules_incompatible`, `interrupted`...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// One stored job; `params` and `result` are the kind's own JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Id (UUID v7: sorts by creation).
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// Where it stands.
    pub status: JobStatus,
    /// What was asked.
    pub params: serde_json::Value,
    /// How far it got (the last stage reported).
    pub progress: Option<JobProgress>,
    /// What came of it, once succeeded.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// Whether someone asked to cancel it.
    pub cancel_requested: bool,
    /// Who started it (a token's name, `schedule`).
    pub created_by: String,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// The reason a job cut off by a restart fails with.
pub const INTERRUPTED: &str = "interrupted";

impl JobError {
    /// The error of a job that a restart or a shutdown cut off.
    pub fn interrupted() -> Self {
        Self {
            code: INTERRUPTED.into(),
            message: "the service stopped while the job ran; start it again".into(),
        }
    }
}
