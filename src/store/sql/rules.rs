//! Rules versions: numbered 1, 2, …; a new number is taken with a conflict check, so two
//! writers (two replicas) never both save version n: the second gets a conflict, or retries
//! when it asked for no check.

use sqlx::Row as _;

use super::{time, Db, Row, WriteTx};
use crate::store::{RulesVersion, Stamp, StoreError, Topic};

fn rules_row(r: &Row) -> Result<RulesVersion, StoreError> {
    Ok(RulesVersion {
        version: r.get("version"),
        content_hash: r.get("content_hash"),
        text: r.get("text"),
        author: r.get("author"),
        note: r.get("note"),
        created_at: time(r, "created_at")?,
    })
}

impl Db {
    pub(in crate::store) async fn current_rules(&self) -> Result<Option<RulesVersion>, StoreError> {
        let row = sqlx::query("SELECT * FROM rules_versions ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rules_row(&r)).transpose()
    }

    pub(in crate::store) async fn rules_version(
        &self,
        version: i64,
    ) -> Result<RulesVersion, StoreError> {
        let row = sqlx::query("SELECT * FROM rules_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no rules version {version}")))?;
        rules_row(&row)
    }

    pub(in crate::store) async fn rules_history(&self) -> Result<Vec<RulesVersion>, StoreError> {
        sqlx::query("SELECT * FROM rules_versions ORDER BY version DESC")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rules_row)
            .collect()
    }

    pub(in crate::store) async fn save_rules(
        &self,
        text: &str,
        content_hash: &str,
        author: &str,
        note: &str,
        expected: Option<i64>,
        model: Option<&str>,
    ) -> Result<RulesVersion, StoreError> {
        loop {
            let mut tx = self.begin_write().await?;
            tx.serialize_serving_changes().await?;
            if let Some(checked) = model {
                let active: Option<String> =
                    sqlx::query_scalar("SELECT id FROM models WHERE status = 'active'")
                        .fetch_optional(tx.conn())
                        .await?;
                if let Some(active) = active.filter(|a| a != checked) {
                    return Err(StoreError::ModelChanged {
                        checked: checked.to_string(),
                        active,
                    });
                }
            }
            let current = newest_version(&mut tx).await?;
            if let Some(expected) = expected.filter(|e| *e != current) {
                return Err(StoreError::Conflict { expected, current });
            }
            let saved = RulesVersion {
                version: current + 1,
                content_hash: content_hash.to_string(),
                text: text.to_string(),
                author: author.to_string(),
                note: note.to_string(),
                created_at: crate::store::now(),
            };
            let taken = sqlx::query(
                "INSERT INTO rules_versions (version, content_hash, text, author, note, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (version) DO NOTHING RETURNING version",
            )
            .bind(saved.version)
            .bind(&saved.content_hash)
            .bind(&saved.text)
            .bind(&saved.author)
            .bind(&saved.note)
            .bind(Stamp(saved.created_at))
            .fetch_optional(tx.conn())
            .await?;
            if taken.is_none() {
                // Another writer saved this number first: it is a conflict for a checked save,
                // and the next number for an unchecked one.
                drop(tx);
                continue;
            }
            tx.announce(Topic::Rules).await?;
            tx.commit_at("rules.save.before_commit").await?;
            crate::failpoint::hit("rules.save.after_commit")
                .await
                .map_err(StoreError::Injected)?;
            return Ok(saved);
        }
    }
}

/// The newest rules version number in `tx` (0 before the first).
pub(super) async fn newest_version(tx: &mut WriteTx) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM rules_versions")
            .fetch_one(tx.conn())
            .await?,
    )
}
