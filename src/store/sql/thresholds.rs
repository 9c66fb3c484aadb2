//! Threshold versions, numbered per model; a new number is taken with a conflict check, so two
//! writers (two replicas) never both save version n of one model.

use sqlx::Row as _;

use super::{time, Db, Row};
use crate::store::{Stamp, StoreError, ThresholdsVersion, Topic};

fn thresholds_row(r: &Row) -> Result<ThresholdsVersion, StoreError> {
    let overrides: String = r.get("overrides");
    Ok(ThresholdsVersion {
        model: r.get("model_id"),
        version: r.get("version"),
        overrides: serde_json::from_str(&overrides)
            .map_err(|e| StoreError::Corrupt(format!("threshold overrides: {e}")))?,
        author: r.get("author"),
        note: r.get("note"),
        created_at: Some(time(r, "created_at")?),
    })
}

impl Db {
    pub(in crate::store) async fn current_thresholds(
        &self,
        model: &str,
    ) -> Result<ThresholdsVersion, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM threshold_versions WHERE model_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(model)
        .fetch_optional(&self.pool)
        .await?;
        row.map_or_else(
            || Ok(ThresholdsVersion::as_trained(model)),
            |r| thresholds_row(&r),
        )
    }

    pub(in crate::store) async fn thresholds_history(
        &self,
        model: &str,
    ) -> Result<Vec<ThresholdsVersion>, StoreError> {
        sqlx::query("SELECT * FROM threshold_versions WHERE model_id = $1 ORDER BY version DESC")
            .bind(model)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(thresholds_row)
            .collect()
    }

    pub(in crate::store) async fn save_thresholds(
        &self,
        model: &str,
        overrides: &crate::intent::Thresholds,
        author: &str,
        note: &str,
        expected: Option<i64>,
    ) -> Result<ThresholdsVersion, StoreError> {
        let json = serde_json::to_string(overrides).expect("thresholds serialise. This is a bug.");
        loop {
            let mut tx = self.begin_write().await?;
            let current: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(version), 0) FROM threshold_versions WHERE model_id = $1",
            )
            .bind(model)
            .fetch_one(tx.conn())
            .await?;
            if let Some(expected) = expected.filter(|e| *e != current) {
                return Err(StoreError::ThresholdsConflict {
                    model: model.to_string(),
                    expected,
                    current,
                });
            }
            let saved = ThresholdsVersion {
                model: model.to_string(),
                version: current + 1,
                overrides: overrides.clone(),
                author: author.to_string(),
                note: note.to_string(),
                created_at: Some(crate::store::now()),
            };
            let taken = sqlx::query(
                "INSERT INTO threshold_versions (model_id, version, overrides, author, note, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (model_id, version) DO NOTHING RETURNING version",
            )
            .bind(model)
            .bind(saved.version)
            .bind(&json)
            .bind(author)
            .bind(note)
            .bind(Stamp(saved.created_at.expect("set above")))
            .fetch_optional(tx.conn())
            .await?;
            if taken.is_none() {
                // Another writer saved this number first: a conflict for a checked save, the
                // next number for an unchecked one.
                drop(tx);
                continue;
            }
            tx.announce(Topic::Thresholds).await?;
            tx.commit_at("thresholds.save.before_commit").await?;
            return Ok(saved);
        }
    }
}
