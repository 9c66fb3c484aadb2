//! Agents' corrections: one row per distinct correction (the dedupe key is the decision, the
//! agent and what they said), claimed with `ON CONFLICT DO NOTHING`, so a correction sent twice
//! (to two replicas) is stored once; the training labels they give.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{json, time, Db, Row};
use crate::store::{Correction, Feedback, NewFeedback, Stamp, StoreError};

fn feedback_row(r: &Row) -> Result<Feedback, StoreError> {
    Ok(Feedback {
        feedback_id: r.get("feedback_id"),
        decision_id: r.get("decision_id"),
        ticket_id: r.get("ticket_id"),
        agent: r.get("agent"),
        correct_intent: r.get("correct_intent"),
        correct_team: r.get("correct_team"),
        correct_assignee: r.get("correct_assignee"),
        predicted_intent: r.get("predicted_intent"),
        predicted_team: r.get("predicted_team"),
        rule_ids: json(r, "rule_ids")?,
        language: r.get("language"),
        has_text: r.get::<Option<String>, _>("body").is_some(),
        created_at: time(r, "created_at")?,
    })
}

impl Db {
    pub(in crate::store) async fn insert_feedback(
        &self,
        f: &NewFeedback,
    ) -> Result<(Feedback, bool), StoreError> {
        let key = serde_json::json!([
            f.decision_id,
            f.agent,
            f.correct_intent,
            f.correct_team,
            f.correct_assignee
        ])
        .to_string();
        let (subject, body) = f.text.clone().unzip();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO feedback (feedback_id, dedupe_key, decision_id, ticket_id, agent, author, \
             correct_intent, correct_team, correct_assignee, predicted_intent, predicted_team, rule_ids, \
             language, subject, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING *",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&key)
        .bind(&f.decision_id)
        .bind(&f.ticket_id)
        .bind(&f.agent)
        .bind(&f.author)
        .bind(&f.correct_intent)
        .bind(&f.correct_team)
        .bind(&f.correct_assignee)
        .bind(&f.predicted_intent)
        .bind(&f.predicted_team)
        .bind(serde_json::to_string(&f.rule_ids).expect("rule ids serialise. This is a bug."))
        .bind(&f.language)
        .bind(subject.flatten())
        .bind(body)
        .bind(Stamp(crate::store::now()))
        .fetch_optional(tx.conn())
        .await?;
        let (row, new) = match inserted {
            Some(r) => (r, true),
            None => {
                let first = sqlx::query("SELECT * FROM feedback WHERE dedupe_key = $1")
                    .bind(&key)
                    .fetch_one(tx.conn())
                    .await?;
                (first, false)
            }
        };
        tx.commit().await?;
        Ok((feedback_row(&row)?, new))
    }

    pub(in crate::store) async fn feedback(&self) -> Result<Vec<Feedback>, StoreError> {
        sqlx::query("SELECT * FROM feedback ORDER BY created_at, feedback_id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(feedback_row)
            .collect()
    }

    pub(in crate::store) async fn corrections(&self) -> Result<Vec<Correction>, StoreError> {
        let rows = sqlx::query(
            "SELECT ticket_id, subject, body, correct_intent, language FROM feedback f \
             WHERE correct_intent IS NOT NULL AND body IS NOT NULL AND feedback_id = \
               (SELECT g.feedback_id FROM feedback g WHERE g.ticket_id = f.ticket_id AND g.correct_intent IS NOT NULL \
                ORDER BY g.created_at DESC, g.feedback_id DESC LIMIT 1) \
             ORDER BY ticket_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Correction {
                ticket_id: r.get(0),
                subject: r.get(1),
                body: r.get(2),
                intent: r.get(3),
                language: r.get(4),
            })
            .collect())
    }

    pub(in crate::store) async fn corrections_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) FROM feedback WHERE correct_intent IS NOT NULL AND created_at > $1",
        )
        .bind(Stamp(since))
        .fetch_one(&self.pool)
        .await?
        .get(0))
    }
}
