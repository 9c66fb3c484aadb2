//! Long operations (retraining over HTTP) as stored jobs: what was asked, by whom, how far it
//! got, and how it ended. Stored so that a job is visible after a restart (and, later, from
//! every replica); a job a restart cut off ends as failed with the reason `interrupted`.
//! Cancelling is a flag in the row that the process running the job reads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{parse_time, timestamp, Store, StoreError};

/// The table (migration 3).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    stage TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX jobs_by_time ON jobs (created_at);
"#;

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

fn job_row(r: &sqlx::sqlite::SqliteRow) -> Result<Job, StoreError> {
    let json = |col: &str, text: String| {
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("job {col}: {e}")))
    };
    let stage: Option<String> = r.get("stage");
    let result: Option<String> = r.get("result");
    let code: Option<String> = r.get("error_code");
    let finished: Option<String> = r.get("finished_at");
    Ok(Job {
        id: r.get("id"),
        kind: JobKind::parse(r.get("kind"))?,
        status: JobStatus::parse(r.get("status"))?,
        params: json("params", r.get("params"))?,
        progress: stage.map(|stage| JobProgress {
            stage,
            done: r.get::<i64, _>("done").max(0) as u64,
            total: r.get::<i64, _>("total").max(0) as u64,
        }),
        result: result.map(|t| json("result", t)).transpose()?,
        error: code.map(|code| JobError {
            code,
            message: r
                .get::<Option<String>, _>("error_message")
                .unwrap_or_default(),
        }),
        cancel_requested: r.get::<i64, _>("cancel_requested") != 0,
        created_by: r.get("created_by"),
        created_at: parse_time(r.get("created_at"))?,
        finished_at: finished.as_deref().map(parse_time).transpose()?,
    })
}

impl Store {
    /// Records a job that starts now.
    pub async fn insert_job(&self, job: &Job) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, params, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&job.id)
        .bind(job.kind.name())
        .bind(job.status.name())
        .bind(job.params.to_string())
        .bind(&job.created_by)
        .bind(timestamp(job.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how far a running job got; says whether someone asked to cancel it.
    pub async fn job_progress(&self, id: &str, p: &JobProgress) -> Result<bool, StoreError> {
        let _w = self.write.lock().await;
        let row = sqlx::query(
            "UPDATE jobs SET stage = ?, done = ?, total = ? WHERE id = ? AND status = 'running' RETURNING cancel_requested",
        )
        .bind(&p.stage)
        .bind(i64::try_from(p.done).unwrap_or(i64::MAX))
        .bind(i64::try_from(p.total).unwrap_or(i64::MAX))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some_and(|r| r.get::<i64, _>(0) != 0))
    }

    /// Ends a running job: succeeded with its result, failed with its error, or cancelled.
    pub async fn finish_job(
        &self,
        id: &str,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&JobError>,
    ) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query(
            "UPDATE jobs SET status = ?, result = ?, error_code = ?, error_message = ?, finished_at = ? WHERE id = ? AND status = 'running'",
        )
        .bind(status.name())
        .bind(result.map(ToString::to_string))
        .bind(error.map(|e| e.code.as_str()))
        .bind(error.map(|e| e.message.as_str()))
        .bind(timestamp(Utc::now()))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Asks a running job to stop; the job as it stands (a finished one is left as it is).
    pub async fn request_job_cancel(&self, id: &str) -> Result<Job, StoreError> {
        {
            let _w = self.write.lock().await;
            sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        self.job(id).await
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Job, StoreError> {
        let r = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
        job_row(&r)
    }

    /// The newest jobs first.
    pub async fn jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        sqlx::query("SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(job_row)
            .collect()
    }

    /// Deletes the jobs that ended before `cutoff`; returns how many.
    pub async fn purge_jobs(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let _w = self.write.lock().await;
        Ok(
            sqlx::query("DELETE FROM jobs WHERE status <> 'running' AND finished_at < ?")
                .bind(timestamp(cutoff))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Ends every job still marked running as failed (`interrupted`): at startup, when no job
    /// of this database can be running (one process per database until several replicas
    /// share one). Returns how many.
    pub async fn fail_interrupted_jobs(&self) -> Result<u64, StoreError> {
        let error = JobError::interrupted();
        let _w = self.write.lock().await;
        let done = sqlx::query(
            "UPDATE jobs SET status = 'failed', error_code = ?, error_message = ?, finished_at = ? WHERE status = 'running'",
        )
        .bind(&error.code)
        .bind(&error.message)
        .bind(timestamp(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            id: id.into(),
            kind: JobKind::Retrain,
            status: JobStatus::Running,
            params: serde_json::json!({"fine_tune": false}),
            progress: None,
            result: None,
            error: None,
            cancel_requested: false,
            created_by: "admin".into(),
            created_at: Utc::now(),
            finished_at: None,
        }
    }

    #[tokio::test]
    async fn a_job_runs_reports_progress_and_ends_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).await.unwrap();
        store.insert_job(&job("j1")).await.unwrap();
        let p = JobProgress {
            stage: "embedding".into(),
            done: 256,
            total: 1000,
        };
        assert!(!store.job_progress("j1", &p).await.unwrap());
        assert_eq!(store.job("j1").await.unwrap().progress, Some(p.clone()));
        let asked = store.request_job_cancel("j1").await.unwrap();
        assert!(asked.cancel_requested);
        assert!(store.job_progress("j1", &p).await.unwrap());
        store
            .finish_job("j1", JobStatus::Cancelled, None, None)
            .await
            .unwrap();
        // A finished job stays as it ended.
        let ok = serde_json::json!({"outcome": "activated"});
        store
            .finish_job("j1", JobStatus::Succeeded, Some(&ok), None)
            .await
            .unwrap();
        let j = store.job("j1").await.unwrap();
        assert_eq!((j.status, j.result), (JobStatus::Cancelled, None));
        assert!(j.finished_at.is_some());
        assert!(matches!(
            store.job("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_restart_fails_the_jobs_it_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let store = Store::open(&path).await.unwrap();
            store.insert_job(&job("a")).await.unwrap();
            store.insert_job(&job("b")).await.unwrap();
            store
                .finish_job(
                    "b",
                    JobStatus::Succeeded,
                    Some(&serde_json::json!({})),
                    None,
                )
                .await
                .unwrap();
            store.close().await;
        }
        let store = Store::open(&path).await.unwrap();
        assert_eq!(store.fail_interrupted_jobs().await.unwrap(), 1);
        let a = store.job("a").await.unwrap();
        assert_eq!(a.status, JobStatus::Failed);
        assert_eq!(a.error.unwrap().code, INTERRUPTED);
        assert_eq!(store.job("b").await.unwrap().status, JobStatus::Succeeded);
        let list = store.jobs(10).await.unwrap();
        assert_eq!(list.len(), 2);
        // Purging keeps what ended after the cutoff.
        assert_eq!(
            store
                .purge_jobs(Utc::now() - chrono::Duration::days(1))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .purge_jobs(Utc::now() + chrono::Duration::days(1))
                .await
                .unwrap(),
            2
        );
    }
}
