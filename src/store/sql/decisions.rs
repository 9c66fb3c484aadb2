//! The decision log: one row per decision (its facts as columns, with the channel and language
//! the helpdesk gave, and the decision as returned, the API's record, as JSON), written in one
//! transaction per routing call together with the assignments it makes, what is kept of the
//! tickets and the idempotency key's decisions.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::texts::KEPT_COLUMNS;
use super::{assignments, idempotency, incidents, texts, time, Db, Engine, WriteTx};
use crate::decision::Routed;
use crate::store::{
    DecisionFilter, LoggedDecision, NewDecision, NewFeedback, Stamp, StoreError, StoredReply,
};

/// A logged decision as the API returned it (rows of every release read the same).
pub(super) fn decision_json(json: &str) -> Result<Routed, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("logged decision: {e}")))
}

/// What [`Db::begin_decisions`] found.
pub(in crate::store) enum DecisionLog {
    /// The answer to the first request with this idempotency key.
    Replay(StoredReply),
    /// The transaction to log in.
    Open(DecisionTx),
}

/// Decisions being logged, in one write transaction.
pub(in crate::store) struct DecisionTx {
    tx: WriteTx,
    pool: sqlx::Pool<Engine>,
    now: DateTime<Utc>,
    idempotency: Option<(String, String)>,
    /// The decisions logged so far, in order.
    logged: Vec<String>,
}

impl Db {
    pub(in crate::store) async fn begin_decisions(
        &self,
        idempotency: Option<(&str, &str)>,
        teams: &BTreeSet<String>,
        close_after: Option<Duration>,
    ) -> Result<DecisionLog, StoreError> {
        if let Some((key, hash)) = idempotency {
            if let Some(first) = self.idempotent_response(key, hash).await? {
                return Ok(DecisionLog::Replay(first));
            }
        }
        let now = crate::store::now();
        let mut tx = self.begin_write().await?;
        // Name order, so that two transactions never wait on each other's teams.
        for team in teams {
            assignments::lock_team(&mut tx, team).await?;
        }
        if let Some(after) = close_after {
            let cutoff = now - chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
            assignments::expire(&mut tx, teams, now, cutoff).await?;
        }
        Ok(DecisionLog::Open(DecisionTx {
            tx,
            pool: self.pool.clone(),
            now,
            idempotency: idempotency.map(|(k, h)| (k.to_string(), h.to_string())),
            logged: Vec::new(),
        }))
    }

    pub(in crate::store) async fn recent_decisions(
        &self,
        n: i64,
    ) -> Result<Vec<LoggedDecision>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT d.decision_id, d.ticket_id, d.channel, d.language_given, d.decision, {KEPT_COLUMNS} \
             FROM decisions d LEFT JOIN ticket_texts t ON t.ticket_id = d.ticket_id \
             ORDER BY d.decided_at DESC, d.decision_id DESC LIMIT $1"
        ))
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LoggedDecision {
                    decision_id: r.get(0),
                    ticket_id: r.get(1),
                    channel: r.get(2),
                    language_given: r.get(3),
                    decision: r.get(4),
                    kept: texts::kept(r, 5)?,
                })
            })
            .collect()
    }

    pub(in crate::store) async fn decisions(
        &self,
        f: &DecisionFilter,
    ) -> Result<Vec<Routed>, StoreError> {
        let rows = sqlx::query(
            "SELECT decision FROM decisions WHERE \
             ($1 IS NULL OR intent = $1 OR substr(intent, 1, length($1) + 1) = $1 || '.') AND ($2 IS NULL OR team = $2) \
             AND ($3 IS NULL OR language = $3) AND ($4 IS NULL OR confidence >= $4) \
             AND ($5 IS NULL OR confidence <= $5) AND ($6 IS NULL OR decided_at >= $6) \
             AND ($7 IS NULL OR decided_at < $7) \
             ORDER BY decided_at DESC, decision_id DESC LIMIT $8",
        )
        .bind(&f.intent)
        .bind(&f.team)
        .bind(&f.language)
        .bind(f.min_confidence)
        .bind(f.max_confidence)
        .bind(f.since.map(Stamp))
        .bind(f.until.map(Stamp))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decision_json(r.get(0))).collect()
    }

    pub(in crate::store) async fn decision_facts(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, String, Option<String>, f64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT decided_at, intent, team, confidence FROM decisions WHERE decided_at >= $1 ORDER BY decided_at",
        )
        .bind(Stamp(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((time(r, "decided_at")?, r.get(1), r.get(2), r.get(3))))
            .collect()
    }

    pub(in crate::store) async fn decision(&self, decision_id: &str) -> Result<String, StoreError> {
        sqlx::query("SELECT decision FROM decisions WHERE decision_id = $1")
            .bind(decision_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound(format!("no decision {decision_id}")))
    }

    pub(in crate::store) async fn decision_for_feedback(
        &self,
        decision_id: Option<&str>,
        ticket_id: Option<&str>,
    ) -> Result<(String, NewFeedback), StoreError> {
        const SELECT: &str = "SELECT d.decision_id, d.ticket_id, d.intent, d.team, d.decision, \
             d.language, t.subject, t.body FROM decisions d \
             LEFT JOIN ticket_texts t ON t.ticket_id = d.ticket_id";
        let (sql, key, missing) = match (decision_id, ticket_id) {
            (Some(d), _) => (format!("{SELECT} WHERE d.decision_id = $1"), d, format!("no decision {d}")),
            (None, Some(t)) => (
                format!("{SELECT} WHERE d.ticket_id = $1 ORDER BY d.decided_at DESC, d.decision_id DESC LIMIT 1"),
                t,
                format!("no decision for ticket {t}"),
            ),
            (None, None) => return Err(StoreError::NotFound("give decision_id or ticket_id".into())),
        };
        let row = sqlx::query(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(missing))?;
        let rule_ids = decision_json(row.get(4))?.rule_ids;
        let decision_id: String = row.get(0);
        Ok((
            decision_id.clone(),
            NewFeedback {
                decision_id,
                ticket_id: row.get(1),
                agent: String::new(),
                author: String::new(),
                correct_intent: None,
                correct_team: None,
                correct_assignee: None,
                predicted_intent: row.get(2),
                predicted_team: row.get(3),
                rule_ids,
                language: row.get(5),
                text: row
                    .get::<Option<String>, _>(7)
                    .map(|b| (row.get::<Option<String>, _>(6), b)),
            },
        ))
    }

    pub(in crate::store) async fn review_candidates(
        &self,
        limit: i64,
    ) -> Result<Vec<Routed>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.decision FROM decisions d \
             WHERE NOT EXISTS (SELECT 1 FROM feedback f WHERE f.decision_id = d.decision_id) \
             ORDER BY d.decided_at DESC, d.decision_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decision_json(r.get(0))).collect()
    }
}

impl DecisionTx {
    pub(in crate::store) async fn insert_decision(
        &mut self,
        d: &NewDecision,
        json: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO decisions (decision_id, ticket_id, received_at, decided_at, intent, confidence, \
             language, team, assignee, status, priority, model_version, rules_version, channel, \
             language_given, decision) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&d.decision_id)
        .bind(&d.ticket_id)
        .bind(Stamp(d.received_at))
        .bind(Stamp(self.now))
        .bind(&d.intent)
        .bind(f64::from(d.confidence))
        .bind(&d.language)
        .bind(&d.team)
        .bind(&d.assignee)
        .bind(&d.status)
        .bind(&d.priority)
        .bind(&d.model_version)
        .bind(d.rules_version)
        .bind(&d.channel)
        .bind(&d.language_given)
        .bind(json)
        .execute(self.tx.conn())
        .await?;
        if let Some(kept) = &d.kept {
            texts::keep(&mut self.tx, &d.ticket_id, kept, Stamp(self.now)).await?;
        }
        if let Some(v) = &d.vector {
            incidents::keep_vector(&mut self.tx, &d.decision_id, v, Stamp(self.now)).await?;
        }
        if let Some(l) = &d.incident {
            incidents::link(&mut self.tx, l).await?;
        }
        self.logged.push(d.decision_id.clone());
        Ok(())
    }

    /// Commits (`None`), or finds the idempotency key taken by a request that committed first
    /// and returns its answer (`Some`), keeping nothing of this one.
    pub(in crate::store) async fn commit(
        mut self,
        batch: bool,
    ) -> Result<Option<StoredReply>, StoreError> {
        if let Some((key, hash)) = &self.idempotency {
            let at = Stamp(self.now);
            let claimed = idempotency::claim(&mut self.tx, key, hash, batch, &self.logged, at)
                .await?
                // A key whose every decision was erased is stale: this request takes it.
                || (idempotency::drop_stale(&mut self.tx, key).await?
                    && idempotency::claim(&mut self.tx, key, hash, batch, &self.logged, at).await?);
            if !claimed {
                drop(self.tx);
                return idempotency::lookup(&self.pool, key, hash)
                    .await?
                    .map(Some)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "Idempotency-Key \"{key}\" taken but not stored"
                        ))
                    });
            }
        }
        self.tx.commit_at("decisions.before_commit").await?;
        Ok(None)
    }
}

impl crate::assign::AssignmentState for DecisionTx {
    type Error = StoreError;

    async fn take_round_robin(&mut self, team: &str) -> Result<usize, StoreError> {
        assignments::take_turn(&mut self.tx, team).await
    }

    async fn open_loads(&mut self, team: &str) -> Result<Vec<(String, i64)>, StoreError> {
        assignments::open_loads(&mut self.tx, team).await
    }

    async fn open_assignment(
        &mut self,
        decision_id: &str,
        team: &str,
        agent: &str,
    ) -> Result<(), StoreError> {
        assignments::open(&mut self.tx, decision_id, team, agent, Stamp(self.now)).await
    }
}
