//! Shadow results: the shadow model's intent for a decision, once per decision and model.

use std::collections::HashMap;

use sqlx::Row as _;

use super::Db;
use crate::store::{ShadowRow, StoreError};

impl Db {
    pub(in crate::store) async fn insert_shadow(
        &self,
        decision_id: &str,
        model_id: &str,
        intent: &str,
        confidence: f32,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO shadow_results (decision_id, model_id, intent, confidence) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (decision_id, model_id) DO NOTHING",
        )
        .bind(decision_id)
        .bind(model_id)
        .bind(intent)
        .bind(f64::from(confidence))
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub(in crate::store) async fn shadow_rows(
        &self,
        model_id: &str,
    ) -> Result<Vec<ShadowRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.intent, s.intent, \
               (SELECT f.correct_intent FROM feedback f WHERE f.decision_id = d.decision_id \
                AND f.correct_intent IS NOT NULL ORDER BY f.created_at DESC, f.feedback_id DESC LIMIT 1) \
             FROM shadow_results s JOIN decisions d ON d.decision_id = s.decision_id WHERE s.model_id = $1",
        )
        .bind(model_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ShadowRow {
                active: r.get(0),
                shadow: r.get(1),
                correct: r.get(2),
            })
            .collect())
    }

    pub(in crate::store) async fn shadow_intents(
        &self,
        model_id: &str,
    ) -> Result<HashMap<String, String>, StoreError> {
        let rows =
            sqlx::query("SELECT decision_id, intent FROM shadow_results WHERE model_id = $1")
                .bind(model_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
