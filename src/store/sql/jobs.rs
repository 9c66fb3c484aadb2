//! Jobs: one row per long operation, its progress and how it ended; a cancel request is a flag
//! in the row, read by whichever process runs the job.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{clamp, time, time_opt, Db, Row};
use crate::store::{Job, JobError, JobKind, JobProgress, JobStatus, Stamp, StoreError, Topic};

fn job_row(r: &Row) -> Result<Job, StoreError> {
    let json = |col: &str, text: String| {
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("job {col}: {e}")))
    };
    let stage: Option<String> = r.get("stage");
    let result: Option<String> = r.get("result");
    let code: Option<String> = r.get("error_code");
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
        cancel_requested: r.get("cancel_requested"),
        created_by: r.get("created_by"),
        created_at: time(r, "created_at")?,
        finished_at: time_opt(r, "finished_at")?,
    })
}

impl Db {
    pub(in crate::store) async fn insert_job(&self, job: &Job) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, params, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&job.id)
        .bind(job.kind.name())
        .bind(job.status.name())
        .bind(job.params.to_string())
        .bind(&job.created_by)
        .bind(Stamp(job.created_at))
        .execute(tx.conn())
        .await?;
        tx.announce(Topic::Jobs).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn job_progress(
        &self,
        id: &str,
        p: &JobProgress,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE jobs SET stage = $1, done = $2, total = $3 WHERE id = $4 AND status = 'running' \
             RETURNING cancel_requested",
        )
        .bind(&p.stage)
        .bind(clamp(p.done))
        .bind(clamp(p.total))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row.is_some_and(|r| r.get::<bool, _>(0)))
    }

    pub(in crate::store) async fn finish_job(
        &self,
        id: &str,
        status: JobStatus,
        result: Option<&serde_json::Value>,
        error: Option<&JobError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE jobs SET status = $1, result = $2, error_code = $3, error_message = $4, finished_at = $5 \
             WHERE id = $6 AND status = 'running'",
        )
        .bind(status.name())
        .bind(result.map(ToString::to_string))
        .bind(error.map(|e| e.code.as_str()))
        .bind(error.map(|e| e.message.as_str()))
        .bind(Stamp(crate::store::now()))
        .bind(id)
        .execute(tx.conn())
        .await?;
        tx.announce(Topic::Jobs).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn request_job_cancel(&self, id: &str) -> Result<Job, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE jobs SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'")
            .bind(id)
            .execute(tx.conn())
            .await?;
        tx.announce(Topic::Jobs).await?;
        tx.commit().await?;
        self.job(id).await
    }

    pub(in crate::store) async fn job(&self, id: &str) -> Result<Job, StoreError> {
        let r = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
        job_row(&r)
    }

    pub(in crate::store) async fn jobs(&self, limit: i64) -> Result<Vec<Job>, StoreError> {
        sqlx::query("SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(job_row)
            .collect()
    }

    pub(in crate::store) async fn purge_jobs(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.purge(
            &["DELETE FROM jobs WHERE status <> 'running' AND finished_at < $1"],
            cutoff,
        )
        .await
    }

    pub(in crate::store) async fn running_jobs(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'running'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub(in crate::store) async fn fail_interrupted_jobs(&self) -> Result<u64, StoreError> {
        let error = JobError::interrupted();
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE jobs SET status = 'failed', error_code = $1, error_message = $2, finished_at = $3 \
             WHERE status = 'running'",
        )
        .bind(&error.code)
        .bind(&error.message)
        .bind(Stamp(crate::store::now()))
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
