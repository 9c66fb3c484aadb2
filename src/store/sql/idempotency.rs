//! Idempotency keys: the first answer to a request, kept as the decisions it logged (in order)
//! under the client's key with the request's hash. The key is claimed with `ON CONFLICT DO
//! NOTHING` when the decisions commit, so of two requests with one key (on two replicas)
//! exactly one is logged; a replay rebuilds the answer from the logged decisions.

use sqlx::Row as _;

use super::{Db, Engine, WriteTx};
use crate::store::{Stamp, StoreError, StoredReply};

impl Db {
    pub(in crate::store) async fn idempotent_response(
        &self,
        key: &str,
        request_hash: &str,
    ) -> Result<Option<StoredReply>, StoreError> {
        lookup(&self.pool, key, request_hash).await
    }

    pub(in crate::store) async fn purge_idempotency(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        self.purge(
            &[
                "DELETE FROM idempotency_decisions WHERE key IN \
                 (SELECT key FROM idempotency_keys WHERE created_at < $1)",
                "DELETE FROM idempotency_keys WHERE created_at < $1",
            ],
            cutoff,
        )
        .await
    }
}

/// Stores the answer of `decisions` (their ids, in order) under `key` in `tx`; `false` when the
/// key was taken first (by a request that committed while this one was deciding).
pub(super) async fn claim(
    tx: &mut WriteTx,
    key: &str,
    hash: &str,
    batch: bool,
    decisions: &[String],
    at: Stamp,
) -> Result<bool, StoreError> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, batch, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key) DO NOTHING RETURNING key",
    )
    .bind(key)
    .bind(hash)
    .bind(batch)
    .bind(at)
    .fetch_optional(tx.conn())
    .await?
    .is_some();
    if claimed {
        for (position, id) in decisions.iter().enumerate() {
            sqlx::query(
                "INSERT INTO idempotency_decisions (key, position, decision_id) VALUES ($1, $2, $3)",
            )
            .bind(key)
            .bind(position as i64)
            .bind(id)
            .execute(tx.conn())
            .await?;
        }
    }
    Ok(claimed)
}

/// Removes `key` if none of its decisions is logged any more (they were erased); says whether
/// it did.
pub(super) async fn drop_stale(tx: &mut WriteTx, key: &str) -> Result<bool, StoreError> {
    let live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM idempotency_decisions m JOIN decisions d ON d.decision_id = m.decision_id \
         WHERE m.key = $1",
    )
    .bind(key)
    .fetch_one(tx.conn())
    .await?;
    if live > 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM idempotency_decisions WHERE key = $1")
        .bind(key)
        .execute(tx.conn())
        .await?;
    Ok(sqlx::query("DELETE FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .execute(tx.conn())
        .await?
        .rows_affected()
        > 0)
}

/// The answer stored under `key`, if the request (by its hash) is the same and a decision of
/// it is still logged.
pub(super) async fn lookup(
    pool: &sqlx::Pool<Engine>,
    key: &str,
    hash: &str,
) -> Result<Option<StoredReply>, StoreError> {
    let row = sqlx::query("SELECT request_hash, batch FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    let batch = match row {
        None => return Ok(None),
        Some(r) if r.get::<String, _>(0) == hash => r.get::<bool, _>(1),
        Some(_) => return Err(StoreError::IdempotencyMismatch(key.to_string())),
    };
    let decisions = sqlx::query(
        "SELECT d.decision FROM idempotency_decisions m \
         JOIN decisions d ON d.decision_id = m.decision_id WHERE m.key = $1 ORDER BY m.position",
    )
    .bind(key)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect::<Vec<String>>();
    // Every ticket of the answer erased since (between the two reads): nothing to replay.
    Ok((!decisions.is_empty()).then_some(StoredReply { batch, decisions }))
}
