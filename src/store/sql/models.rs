//! The model registry: model versions, their status and the shadow flag. One model is active
//! and at most one is the shadow, each held by a unique index: of two changes at once (two
//! replicas) the one that collides retries, and undoes the other's.

use sqlx::Row as _;

use super::{json, time, time_opt, Db, Row};
use crate::store::{ModelRecord, ModelStatus, Stamp, StoreError, Topic};

fn model_row(r: &Row) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        id: r.get("id"),
        parent: r.get("parent"),
        path: r.get("path"),
        data_hash: r.get("data_hash"),
        metrics: crate::learn::ModelMetrics::read(json(r, "metrics")?),
        status: ModelStatus::parse(r.get("status"))?,
        shadow: r.get("shadow"),
        note: r.get("note"),
        created_at: time(r, "created_at")?,
        activated_at: time_opt(r, "activated_at")?,
    })
}

/// Whether the error is a unique index refusing a row.
fn unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation())
}

/// Runs `attempt`, again (three times at most) while it fails on a unique index: a change of
/// another replica collided with it and committed first.
async fn on_collision_retry<T, F>(mut attempt: impl FnMut() -> F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if unique_violation(&e) && tries < 3 => tries += 1,
            done => return done,
        }
    }
}

impl Db {
    pub(in crate::store) async fn insert_model(&self, m: &ModelRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO models (id, parent, path, data_hash, metrics, status, shadow, note, created_at, activated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&m.id)
        .bind(&m.parent)
        .bind(&m.path)
        .bind(&m.data_hash)
        .bind(serde_json::to_string(&m.metrics).expect("metrics serialise. This is a bug."))
        .bind(m.status.name())
        .bind(m.shadow)
        .bind(&m.note)
        .bind(Stamp(m.created_at))
        .bind(m.activated_at.map(Stamp))
        .execute(tx.conn())
        .await?;
        tx.announce(Topic::Models).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        sqlx::query("SELECT * FROM models ORDER BY created_at DESC, id DESC")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(model_row)
            .collect()
    }

    pub(in crate::store) async fn model(&self, id: &str) -> Result<ModelRecord, StoreError> {
        let r = sqlx::query("SELECT * FROM models WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no model {id}")))?;
        model_row(&r)
    }

    pub(in crate::store) async fn activate_model(
        &self,
        id: &str,
        note: Option<&str>,
        rules: Option<i64>,
    ) -> Result<ModelRecord, StoreError> {
        on_collision_retry(|| self.try_activate(id, note, rules)).await
    }

    async fn try_activate(
        &self,
        id: &str,
        note: Option<&str>,
        rules: Option<i64>,
    ) -> Result<ModelRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        tx.serialize_serving_changes().await?;
        if let Some(checked) = rules {
            let current = super::rules::newest_version(&mut tx).await?;
            if current != checked {
                return Err(StoreError::RulesChanged {
                    id: id.to_string(),
                    checked,
                    current,
                });
            }
        }
        let found = sqlx::query("SELECT id FROM models WHERE id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!("no model {id}")));
        }
        sqlx::query("UPDATE models SET status = 'retired' WHERE status = 'active' AND id <> $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        let row = sqlx::query(
            "UPDATE models SET status = 'active', shadow = FALSE, activated_at = $1, note = COALESCE($2, note) \
             WHERE id = $3 RETURNING *",
        )
        .bind(Stamp(crate::store::now()))
        .bind(note)
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
        let active = model_row(&row)?;
        tx.announce(Topic::Models).await?;
        tx.commit_at("model.activate.before_commit").await?;
        crate::failpoint::hit("model.activate.after_commit")
            .await
            .map_err(StoreError::Injected)?;
        Ok(active)
    }

    pub(in crate::store) async fn update_candidate(
        &self,
        id: &str,
        shadow: bool,
        note: &str,
    ) -> Result<(), StoreError> {
        on_collision_retry(|| self.try_update_candidate(id, shadow, note)).await
    }

    async fn try_update_candidate(
        &self,
        id: &str,
        shadow: bool,
        note: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if shadow {
            sqlx::query("UPDATE models SET shadow = FALSE WHERE shadow")
                .execute(tx.conn())
                .await?;
        }
        sqlx::query("UPDATE models SET shadow = $1, note = $2 WHERE id = $3")
            .bind(shadow)
            .bind(note)
            .bind(id)
            .execute(tx.conn())
            .await?;
        tx.announce(Topic::Models).await?;
        tx.commit().await
    }
}
