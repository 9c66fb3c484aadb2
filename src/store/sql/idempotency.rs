//! Idempotency keys: the first response to a request, stored under the client's key with the
//! request's hash. The key is claimed with `ON CONFLICT DO NOTHING` when the decisions commit,
//! so of two requests with one key (on two replicas) exactly one is logged.

use sqlx::Row as _;

use super::{Db, Engine, WriteTx};
use crate::store::{Stamp, StoreError};

impl Db {
    pub(in crate::store) async fn idempotent_response(
        &self,
        key: &str,
        request_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        lookup(&self.pool, key, request_hash).await
    }

    pub(in crate::store) async fn purge_idempotency(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        self.purge("DELETE FROM idempotency_keys WHERE created_at < $1", cutoff)
            .await
    }
}

/// Stores `response` under `key` in `tx`; `false` when the key was taken first (by a request
/// that committed while this one was deciding).
pub(super) async fn claim(
    tx: &mut WriteTx,
    key: &str,
    hash: &str,
    response: &str,
    at: Stamp,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, response, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key) DO NOTHING RETURNING key",
    )
    .bind(key)
    .bind(hash)
    .bind(response)
    .bind(at)
    .fetch_optional(tx.conn())
    .await?
    .is_some())
}

/// The response stored under `key`, if the request (by its hash) is the same.
pub(super) async fn lookup(
    pool: &sqlx::Pool<Engine>,
    key: &str,
    hash: &str,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT request_hash, response FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    match row {
        None => Ok(None),
        Some(r) if r.get::<String, _>(0) == hash => Ok(Some(r.get(1))),
        Some(_) => Err(StoreError::IdempotencyMismatch(key.to_string())),
    }
}
