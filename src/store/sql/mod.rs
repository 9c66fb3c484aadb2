//! The store's SQL, written once and compiled once per backend: `sqlite.rs` and `postgres.rs`
//! each include this module (`#[path]`) beside their own `Engine` (the `sqlx` database), `Db`
//! (its connections) and `Db::begin_write`. The SQL is the part both databases speak: `$n`
//! parameters, `ON CONFLICT … DO NOTHING / DO UPDATE … RETURNING`, `TRUE`/`FALSE`, no `rowid`
//! (ties are broken by the row's id). One file per aggregate.

mod assignments;
mod connectors;
mod copy;
mod decisions;
mod feedback;
mod idempotency;
mod incidents;
mod intents;
mod jobs;
mod models;
mod rules;
mod sessions;
mod shadow;
mod texts;
mod thresholds;

use chrono::{DateTime, Utc};
use sqlx::Row as _;

pub(in crate::store) use copy::Snapshot;
pub(in crate::store) use decisions::{DecisionLog, DecisionTx};

use super::{Db, Engine};
use crate::store::{Stamp, StoreError};

/// A result row of this backend.
type Row = <Engine as sqlx::Database>::Row;

/// A write transaction: on SQLite it holds the database's write lock from its first statement
/// (and this process's queue of writers), on PostgreSQL it is a plain transaction.
pub(in crate::store) struct WriteTx {
    pub(super) tx: sqlx::Transaction<'static, Engine>,
    pub(super) _queue: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// The connection to run statements on.
    fn conn(&mut self) -> &mut <Engine as sqlx::Database>::Connection {
        &mut self.tx
    }

    /// Commits, after the failpoint `point` (tests make it fail: nothing is then written).
    async fn commit_at(self, point: &str) -> Result<(), StoreError> {
        crate::failpoint::hit(point)
            .await
            .map_err(StoreError::Injected)?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Commits.
    pub(in crate::store) async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// The time in column `col`.
fn time(r: &Row, col: &str) -> Result<DateTime<Utc>, StoreError> {
    r.try_get::<Stamp, _>(col)
        .map(|s| s.0)
        .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// The time in column `col`, if any.
fn time_opt(r: &Row, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    r.try_get::<Option<Stamp>, _>(col)
        .map(|s| s.map(|s| s.0))
        .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// JSON stored as text in column `col`.
fn json<T: serde::de::DeserializeOwned>(r: &Row, col: &str) -> Result<T, StoreError> {
    serde_json::from_str(&r.get::<String, _>(col))
        .map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// A count or number that fits `i64` (larger ones are clamped, never wrapped).
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Db {
    /// Checks that the database answers.
    pub(in crate::store) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool (waits for connections to finish).
    pub(in crate::store) async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs `DELETE … $1` statements of rows past `cutoff` in one write transaction, in order
    /// (rows that refer to others first); returns how many rows the last one deleted.
    async fn purge(&self, sqls: &[&str], cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut n = 0;
        for sql in sqls {
            n = sqlx::query(sql)
                .bind(Stamp(cutoff))
                .execute(tx.conn())
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The newest migration applied.
    pub(in crate::store) async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?
                .get(0),
        )
    }
}
