//! Console sessions, by the hash of the cookie's value.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{time, Db};
use crate::store::{ConsoleSession, Stamp, StoreError};

impl Db {
    pub(in crate::store) async fn insert_session(
        &self,
        id_hash: &str,
        s: &ConsoleSession,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, name, csrf, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash)
        .bind(&s.name)
        .bind(&s.csrf)
        .bind(Stamp(s.expires_at))
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub(in crate::store) async fn console_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM console_sessions WHERE id_hash = $1 AND expires_at > $2")
                .bind(id_hash)
                .bind(Stamp(now))
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(ConsoleSession {
                name: r.get("name"),
                csrf: r.get("csrf"),
                expires_at: time(&r, "expires_at")?,
            })
        })
        .transpose()
    }

    pub(in crate::store) async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(tx.conn())
            .await?;
        tx.commit().await
    }

    pub(in crate::store) async fn purge_sessions(
        &self,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.purge(
            &["DELETE FROM console_sessions WHERE expires_at <= $1"],
            now,
        )
        .await
    }
}
