//! All persistent state of the service, behind one type: rules versions, the decision log,
//! ticket texts (kept apart, with a retention period), idempotency keys and agent assignments.
//! SQLite (WAL, synchronous FULL: an acknowledged write survives a crash) through `sqlx`, with
//! versioned migrations, in portable SQL so that PostgreSQL can serve several replicas later.
//! Writes take one lock and one transaction each, so concurrent requests never interleave.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::Mutex;

use crate::assign::AssignmentState;
use crate::decision::Routed;
use crate::rules::Assignee;

/// `name()` (as stored) and `parse()` (a stored name back, or `Corrupt` naming `what`) for a
/// fieldless enum kept in a TEXT column.
macro_rules! stored_names {
    ($t:ident, $what:literal, { $($v:ident = $n:literal),* $(,)? }) => {
        impl $t {
            /// The stored name.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $n,)* }
            }

            fn parse(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($n => Ok(Self::$v),)*
                    _ => Err(StoreError::Corrupt(format!(concat!($what, " {:?}"), s))),
                }
            }
        }
    };
}

mod jobs;

pub use jobs::{Job, JobError, JobKind, JobProgress, JobStatus, INTERRUPTED};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The database was written by a newer version.
    #[error("the database has schema version {found}, newer than this binary knows ({known}); upgrade intent-router")]
    TooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this binary knows.
        known: i64,
    },
    /// Someone else changed the rules first.
    #[error("the rules are at version {current}, not {expected}")]
    Conflict {
        /// The version the caller based its change on.
        expected: i64,
        /// The current version.
        current: i64,
    },
    /// An idempotency key was reused for a different request.
    #[error("Idempotency-Key \"{0}\" was already used for a different request")]
    IdempotencyMismatch(String),
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// A write failed by injection (failpoint); nothing was changed.
    #[error("the database refused the write (injected failure at {0}); nothing was changed")]
    Injected(String),
    /// A stored value is unreadable.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// Versioned migrations, applied in order, each in its own transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE rules_versions (
    version INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    author TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE decisions (
    decision_id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    intent TEXT NOT NULL,
    confidence REAL NOT NULL,
    language TEXT NOT NULL,
    team TEXT,
    assignee TEXT,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    model_version TEXT NOT NULL,
    rules_version INTEGER NOT NULL,
    inputs TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (decided_at);
CREATE INDEX decisions_by_ticket ON decisions (ticket_id);
CREATE TABLE ticket_texts (
    ticket_id TEXT PRIMARY KEY,
    subject TEXT,
    body TEXT NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE assignments (
    decision_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    agent TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    closed_at TEXT,
    closed_by TEXT
);
CREATE INDEX assignments_open ON assignments (team, agent, closed_at);
CREATE TABLE round_robin (
    team TEXT PRIMARY KEY,
    next_index INTEGER NOT NULL
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE feedback (
    feedback_id TEXT PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    decision_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    author TEXT NOT NULL,
    correct_intent TEXT,
    correct_team TEXT,
    correct_assignee TEXT,
    predicted_intent TEXT NOT NULL,
    predicted_team TEXT,
    rule_ids TEXT NOT NULL,
    language TEXT NOT NULL,
    subject TEXT,
    body TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX feedback_by_time ON feedback (created_at);
CREATE INDEX feedback_by_ticket ON feedback (ticket_id);
CREATE TABLE intents_added (
    id TEXT PRIMARY KEY,
    en TEXT NOT NULL,
    ru TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE models (
    id TEXT PRIMARY KEY,
    parent TEXT,
    path TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    metrics TEXT NOT NULL,
    status TEXT NOT NULL,
    shadow INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL,
    activated_at TEXT
);
CREATE TABLE shadow_results (
    decision_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    intent TEXT NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (decision_id, model_id)
);
"#,
    ),
    (3, jobs::MIGRATION),
];

/// Times are stored as RFC 3339 UTC text with fixed width, so they sort as text.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| StoreError::Corrupt(format!("time {s:?}: {e}")))
}

/// One stored version of the rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RulesVersion {
    /// Sequential version number (the ETag).
    pub version: i64,
    /// Content hash of the text.
    pub content_hash: String,
    /// The rules file.
    pub text: String,
    /// Who saved it (the token's name, `seed`, ...).
    pub author: String,
    /// Why (`seeded from rules.toml`, `rollback to 3`, ...).
    pub note: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A decision about to be logged; the assignment step fills `assignee` for strategies.
#[derive(Debug, Clone)]
pub struct NewDecision {
    /// Decision id.
    pub decision_id: String,
    /// Ticket id.
    pub ticket_id: String,
    /// When the ticket was received.
    pub received_at: DateTime<Utc>,
    /// Resolved intent.
    pub intent: String,
    /// Top-1 probability.
    pub confidence: f32,
    /// Language code.
    pub language: String,
    /// Team.
    pub team: Option<String>,
    /// What the rules said about the assignee.
    pub strategy: Option<Assignee>,
    /// The agent picked (by the assignment step, or fixed by the rules).
    pub assignee: Option<String>,
    /// Why no agent was picked, when a strategy could not pick one.
    pub assignment_note: Option<String>,
    /// Status name.
    pub status: String,
    /// Priority name.
    pub priority: String,
    /// Model version.
    pub model_version: String,
    /// Rules version.
    pub rules_version: i64,
    /// The rule inputs as JSON (ticket facts without text, classification, time).
    pub inputs: String,
    /// Ticket subject and body, kept under the retention period.
    pub text: Option<(Option<String>, String)>,
}

/// A logged decision, as read back.
#[derive(Debug, Clone)]
pub struct LoggedDecision {
    /// Decision id.
    pub decision_id: String,
    /// Ticket id.
    pub ticket_id: String,
    /// Rule inputs (JSON).
    pub inputs: String,
    /// The decision as returned (JSON).
    pub decision: String,
    /// Subject and body, unless purged.
    pub text: Option<(Option<String>, String)>,
}

/// One assignment of a ticket to an agent.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Assignment {
    /// The decision that made it.
    pub decision_id: String,
    /// Team.
    pub team: String,
    /// Agent.
    pub agent: String,
    /// When.
    pub opened_at: DateTime<Utc>,
    /// When it was closed, if it was.
    pub closed_at: Option<DateTime<Utc>>,
    /// Who or what closed it (`api:<token>`, `expired`).
    pub closed_by: Option<String>,
}

/// The database.
#[derive(Debug)]
pub struct Store {
    pool: SqlitePool,
    write: Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let store = Self {
            pool,
            write: Mutex::new(()),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The newest schema version this binary knows.
    pub fn schema_version() -> i64 {
        MIGRATIONS.last().map_or(0, |m| m.0)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        if current > Self::schema_version() {
            return Err(StoreError::TooNew {
                found: current,
                known: Self::schema_version(),
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(timestamp(Utc::now()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "applied database migration");
        }
        Ok(())
    }

    // ---- rules ----

    /// The newest rules version, if any.
    pub async fn current_rules(&self) -> Result<Option<RulesVersion>, StoreError> {
        let row = sqlx::query("SELECT * FROM rules_versions ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| rules_row(&r)).transpose()
    }

    /// One rules version.
    pub async fn rules_version(&self, version: i64) -> Result<RulesVersion, StoreError> {
        let row = sqlx::query("SELECT * FROM rules_versions WHERE version = ?")
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no rules version {version}")))?;
        rules_row(&row)
    }

    /// Every rules version, newest first.
    pub async fn rules_history(&self) -> Result<Vec<RulesVersion>, StoreError> {
        sqlx::query("SELECT * FROM rules_versions ORDER BY version DESC")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rules_row)
            .collect()
    }

    /// Appends a rules version if the current one is still `expected` (`None`: no check).
    pub async fn save_rules(
        &self,
        text: &str,
        content_hash: &str,
        author: &str,
        note: &str,
        expected: Option<i64>,
    ) -> Result<RulesVersion, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM rules_versions")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if let Some(expected) = expected.filter(|e| *e != current) {
            return Err(StoreError::Conflict { expected, current });
        }
        let saved = RulesVersion {
            version: current + 1,
            content_hash: content_hash.to_string(),
            text: text.to_string(),
            author: author.to_string(),
            note: note.to_string(),
            created_at: Utc::now(),
        };
        sqlx::query("INSERT INTO rules_versions (version, content_hash, text, author, note, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(saved.version)
            .bind(&saved.content_hash)
            .bind(&saved.text)
            .bind(&saved.author)
            .bind(&saved.note)
            .bind(timestamp(saved.created_at))
            .execute(&mut *tx)
            .await?;
        crate::failpoint::hit("rules.save.before_commit")
            .await
            .map_err(StoreError::Injected)?;
        tx.commit().await?;
        crate::failpoint::hit("rules.save.after_commit")
            .await
            .map_err(StoreError::Injected)?;
        Ok(saved)
    }

    // ---- decisions, idempotency, assignment ----

    /// The stored response for an idempotency key, if the same request was seen before.
    pub async fn idempotent_response(
        &self,
        key: &str,
        request_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT request_hash, response FROM idempotency_keys WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(r) if r.get::<String, _>(0) == request_hash => Ok(Some(r.get(1))),
            Some(_) => Err(StoreError::IdempotencyMismatch(key.to_string())),
        }
    }

    /// Starts logging decisions: one transaction under the write lock, with the assignments
    /// past `close_after` closed first. If the idempotency key was already stored for the same
    /// request (by a concurrent retry, say), returns that first response instead.
    pub async fn begin_decisions(
        &self,
        idempotency: Option<(&str, &str)>,
        close_after: Option<Duration>,
    ) -> Result<DecisionLog<'_>, StoreError> {
        let write = self.write.lock().await;
        if let Some((key, hash)) = idempotency {
            if let Some(first) = self.idempotent_response(key, hash).await? {
                return Ok(DecisionLog::Replay(first));
            }
        }
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        if let Some(after) = close_after {
            let cutoff = now - chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
            sqlx::query("UPDATE assignments SET closed_at = ?, closed_by = 'expired' WHERE closed_at IS NULL AND opened_at < ?")
                .bind(timestamp(now))
                .bind(timestamp(cutoff))
                .execute(&mut *tx)
                .await?;
        }
        Ok(DecisionLog::Open(DecisionTx {
            tx,
            _write: write,
            now,
            idempotency: idempotency.map(|(k, h)| (k.to_string(), h.to_string())),
        }))
    }

    /// The last `n` decisions, newest first, with their ticket text when still kept.
    pub async fn recent_decisions(&self, n: i64) -> Result<Vec<LoggedDecision>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.decision_id, d.ticket_id, d.inputs, d.decision, t.subject, t.body \
             FROM decisions d LEFT JOIN ticket_texts t ON t.ticket_id = d.ticket_id \
             ORDER BY d.decided_at DESC, d.rowid DESC LIMIT ?",
        )
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| LoggedDecision {
                decision_id: r.get(0),
                ticket_id: r.get(1),
                inputs: r.get(2),
                decision: r.get(3),
                text: r
                    .get::<Option<String>, _>(5)
                    .map(|body| (r.get::<Option<String>, _>(4), body)),
            })
            .collect())
    }

    /// Logged decisions' JSON, newest first, filtered.
    pub async fn decisions(&self, f: &DecisionFilter) -> Result<Vec<Routed>, StoreError> {
        let rows = sqlx::query(
            "SELECT decision FROM decisions WHERE \
             (?1 IS NULL OR intent = ?1 OR intent LIKE ?1 || '.%') AND (?2 IS NULL OR team = ?2) \
             AND (?3 IS NULL OR language = ?3) AND (?4 IS NULL OR confidence >= ?4) \
             AND (?5 IS NULL OR confidence <= ?5) AND (?6 IS NULL OR decided_at >= ?6) \
             AND (?7 IS NULL OR decided_at < ?7) \
             ORDER BY decided_at DESC, rowid DESC LIMIT ?8",
        )
        .bind(&f.intent)
        .bind(&f.team)
        .bind(&f.language)
        .bind(f.min_confidence)
        .bind(f.max_confidence)
        .bind(f.since.map(timestamp))
        .bind(f.until.map(timestamp))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decision_row(r.get(0))).collect()
    }

    /// (decided at, intent, team, confidence) of every decision since `since`, for statistics.
    pub async fn decision_facts(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, String, Option<String>, f64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT decided_at, intent, team, confidence FROM decisions WHERE decided_at >= ? ORDER BY decided_at",
        )
        .bind(timestamp(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// One logged decision's JSON.
    pub async fn decision(&self, decision_id: &str) -> Result<String, StoreError> {
        sqlx::query("SELECT decision FROM decisions WHERE decision_id = ?")
            .bind(decision_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound(format!("no decision {decision_id}")))
    }

    /// Open assignments (or all, newest first, at most `limit`), optionally for one team.
    pub async fn assignments(
        &self,
        team: Option<&str>,
        open_only: bool,
        limit: i64,
    ) -> Result<Vec<Assignment>, StoreError> {
        let rows = sqlx::query(
            "SELECT decision_id, team, agent, opened_at, closed_at, closed_by FROM assignments \
             WHERE (? IS NULL OR team = ?) AND (? = 0 OR closed_at IS NULL) \
             ORDER BY opened_at DESC LIMIT ?",
        )
        .bind(team)
        .bind(team)
        .bind(open_only as i64)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_row).collect()
    }

    /// Closes the assignment a decision made; closing twice is not an error.
    pub async fn close_assignment(
        &self,
        decision_id: &str,
        by: &str,
    ) -> Result<Assignment, StoreError> {
        let _w = self.write.lock().await;
        sqlx::query("UPDATE assignments SET closed_at = ?, closed_by = ? WHERE decision_id = ? AND closed_at IS NULL")
            .bind(timestamp(Utc::now()))
            .bind(by)
            .bind(decision_id)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT decision_id, team, agent, opened_at, closed_at, closed_by FROM assignments WHERE decision_id = ?")
            .bind(decision_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("decision {decision_id} assigned no agent"))
            })?;
        assignment_row(&row)
    }

    /// Deletes ticket texts stored before `cutoff` (and the texts kept with corrections made
    /// before it); returns how many tickets' texts.
    pub async fn purge_texts(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM ticket_texts WHERE stored_at < ?")
            .bind(timestamp(cutoff))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE feedback SET subject = NULL, body = NULL WHERE body IS NOT NULL AND created_at < ?")
            .bind(timestamp(cutoff))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Deletes idempotency keys older than `cutoff`; returns how many.
    pub async fn purge_idempotency(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let _w = self.write.lock().await;
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
                .bind(timestamp(cutoff))
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Erases everything stored about a ticket, in one transaction; returns the rows removed
    /// per kind.
    pub async fn erase_ticket(
        &self,
        ticket_id: &str,
    ) -> Result<std::collections::BTreeMap<&'static str, u64>, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut removed = std::collections::BTreeMap::new();
        let ids: Vec<String> = sqlx::query("SELECT decision_id FROM decisions WHERE ticket_id = ?")
            .bind(ticket_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut by_decision = |n: u64, kind: &'static str| *removed.entry(kind).or_insert(0) += n;
        for id in &ids {
            for (table, kind) in [
                ("assignments", "assignments"),
                ("shadow_results", "shadow_results"),
            ] {
                let n = sqlx::query(&format!("DELETE FROM {table} WHERE decision_id = ?"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                by_decision(n, kind);
            }
            let n = sqlx::query("DELETE FROM idempotency_keys WHERE instr(response, ?) > 0")
                .bind(format!("\"decision_id\":\"{id}\""))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            by_decision(n, "idempotency_keys");
        }
        for (table, kind) in [
            ("decisions", "decisions"),
            ("ticket_texts", "ticket_texts"),
            ("feedback", "feedback"),
        ] {
            let n = sqlx::query(&format!("DELETE FROM {table} WHERE ticket_id = ?"))
                .bind(ticket_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            removed.insert(kind, n);
        }
        for kind in ["assignments", "shadow_results", "idempotency_keys"] {
            removed.entry(kind).or_insert(0);
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// SQLite's integrity check: `ok` when the file is consistent.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What [`Store::begin_decisions`] found: the first response to the same request, or an open
/// transaction to log new decisions in.
pub enum DecisionLog<'a> {
    /// The stored response of the first request with this idempotency key.
    Replay(String),
    /// Log the decisions here, then [`DecisionTx::commit`].
    Open(DecisionTx<'a>),
}

/// Decisions being logged: one transaction, under the store's write lock, that the assignment
/// step reads and advances ([`AssignmentState`]). Dropping it without a commit writes nothing.
pub struct DecisionTx<'a> {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _write: tokio::sync::MutexGuard<'a, ()>,
    now: DateTime<Utc>,
    idempotency: Option<(String, String)>,
}

impl DecisionTx<'_> {
    /// The time the decisions are logged at.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Logs one decision (`json`: the decision as returned) and its ticket's text, if kept.
    pub async fn insert_decision(&mut self, d: &NewDecision, json: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO decisions (decision_id, ticket_id, received_at, decided_at, intent, confidence, language, team, assignee, status, priority, model_version, rules_version, inputs, decision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&d.decision_id)
            .bind(&d.ticket_id)
            .bind(timestamp(d.received_at))
            .bind(timestamp(self.now))
            .bind(&d.intent)
            .bind(d.confidence)
            .bind(&d.language)
            .bind(&d.team)
            .bind(&d.assignee)
            .bind(&d.status)
            .bind(&d.priority)
            .bind(&d.model_version)
            .bind(d.rules_version)
            .bind(&d.inputs)
            .bind(json)
            .execute(&mut *self.tx)
            .await?;
        if let Some((subject, body)) = &d.text {
            sqlx::query("INSERT INTO ticket_texts (ticket_id, subject, body, stored_at) VALUES (?, ?, ?, ?) ON CONFLICT (ticket_id) DO UPDATE SET subject = excluded.subject, body = excluded.body, stored_at = excluded.stored_at")
                .bind(&d.ticket_id)
                .bind(subject)
                .bind(body)
                .bind(timestamp(self.now))
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Commits everything logged, with `response` stored under the idempotency key, if any.
    pub async fn commit(mut self, response: &str) -> Result<(), StoreError> {
        if let Some((key, hash)) = &self.idempotency {
            sqlx::query("INSERT INTO idempotency_keys (key, request_hash, response, created_at) VALUES (?, ?, ?, ?)")
                .bind(key)
                .bind(hash)
                .bind(response)
                .bind(timestamp(self.now))
                .execute(&mut *self.tx)
                .await?;
        }
        crate::failpoint::hit("decisions.before_commit")
            .await
            .map_err(StoreError::Injected)?;
        self.tx.commit().await?;
        Ok(())
    }
}

impl AssignmentState for DecisionTx<'_> {
    type Error = StoreError;

    async fn round_robin_cursor(&mut self, team: &str) -> Result<usize, StoreError> {
        let next: Option<i64> = sqlx::query("SELECT next_index FROM round_robin WHERE team = ?")
            .bind(team)
            .fetch_optional(&mut *self.tx)
            .await?
            .map(|r| r.get(0));
        Ok(next.unwrap_or(0).max(0) as usize)
    }

    async fn advance_round_robin(&mut self, team: &str, next: usize) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO round_robin (team, next_index) VALUES (?, ?) ON CONFLICT (team) DO UPDATE SET next_index = excluded.next_index")
            .bind(team)
            .bind(next as i64)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn open_loads(&mut self, team: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT agent, COUNT(*) FROM assignments WHERE team = ? AND closed_at IS NULL GROUP BY agent")
            .bind(team)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn open_assignment(
        &mut self,
        decision_id: &str,
        team: &str,
        agent: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO assignments (decision_id, team, agent, opened_at) VALUES (?, ?, ?, ?)",
        )
        .bind(decision_id)
        .bind(team)
        .bind(agent)
        .bind(timestamp(self.now))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

/// Filters of the decision log.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    /// Intent node (matches itself and its descendants).
    pub intent: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Language code.
    pub language: Option<String>,
    /// Lowest top-1 probability.
    pub min_confidence: Option<f64>,
    /// Highest top-1 probability.
    pub max_confidence: Option<f64>,
    /// Decided at or after.
    pub since: Option<DateTime<Utc>>,
    /// Decided before.
    pub until: Option<DateTime<Utc>>,
    /// Most rows.
    pub limit: i64,
}

/// An agent's correction about to be stored.
#[derive(Debug, Clone)]
pub struct NewFeedback {
    /// The decision corrected.
    pub decision_id: String,
    /// Its ticket.
    pub ticket_id: String,
    /// The agent who corrected it.
    pub agent: String,
    /// The token that sent it.
    pub author: String,
    /// The right intent, if the intent was wrong.
    pub correct_intent: Option<String>,
    /// The right team, if the team was wrong.
    pub correct_team: Option<String>,
    /// The right assignee, if the assignee was wrong.
    pub correct_assignee: Option<String>,
    /// What the engine said: intent.
    pub predicted_intent: String,
    /// What the engine said: team.
    pub predicted_team: Option<String>,
    /// The rules that fired.
    pub rule_ids: Vec<String>,
    /// Ticket language.
    pub language: String,
    /// Ticket subject and body (for training), when still kept.
    pub text: Option<(Option<String>, String)>,
}

/// A stored correction.
#[derive(Debug, Clone, Serialize)]
pub struct Feedback {
    /// Id.
    pub feedback_id: String,
    /// The decision corrected.
    pub decision_id: String,
    /// Its ticket.
    pub ticket_id: String,
    /// The agent.
    pub agent: String,
    /// Right intent.
    pub correct_intent: Option<String>,
    /// Right team.
    pub correct_team: Option<String>,
    /// Right assignee.
    pub correct_assignee: Option<String>,
    /// The engine's intent.
    pub predicted_intent: String,
    /// The engine's team.
    pub predicted_team: Option<String>,
    /// The rules that fired.
    pub rule_ids: Vec<String>,
    /// Ticket language.
    pub language: String,
    /// Whether the ticket text is kept (an intent correction then is a training label).
    pub has_text: bool,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A training label from agents: the latest intent correction of a ticket whose text is kept.
#[derive(Debug, Clone)]
pub struct Correction {
    /// Ticket id (fixes its train / held-out split forever).
    pub ticket_id: String,
    /// Subject.
    pub subject: Option<String>,
    /// Body.
    pub body: String,
    /// The right intent.
    pub intent: String,
    /// Language.
    pub language: String,
}

/// An intent added to the taxonomy through the API.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AddedIntent {
    /// Dotted id.
    pub id: String,
    /// English description.
    pub en: String,
    /// Russian description.
    pub ru: String,
    /// Who added it.
    pub author: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Where a model version stands in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    /// Trained (and gated); not serving.
    Candidate,
    /// Serving (exactly one model at a time).
    Active,
    /// Served before; a rollback target.
    Retired,
}

stored_names!(ModelStatus, "model status", {
    Candidate = "candidate",
    Active = "active",
    Retired = "retired",
});

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A model version in the registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ModelRecord {
    /// Id (the version every response names).
    pub id: String,
    /// The model it was retrained from.
    pub parent: Option<String>,
    /// Classifier directory.
    pub path: String,
    /// Hash of the training data.
    pub data_hash: String,
    /// Evaluation (the gate report for candidates).
    #[schema(schema_with = crate::learn::ModelMetrics::schema)]
    pub metrics: crate::learn::ModelMetrics,
    /// Candidate, active or retired.
    pub status: ModelStatus,
    /// Scored beside the active model on live traffic.
    pub shadow: bool,
    /// Why it exists or what happened to it.
    pub note: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last became active.
    pub activated_at: Option<DateTime<Utc>>,
}

/// One shadow comparison row: the active and shadow intents of a decision and, if an agent
/// corrected it, the right one.
#[derive(Debug, Clone)]
pub struct ShadowRow {
    /// Active model's intent.
    pub active: String,
    /// Shadow model's intent.
    pub shadow: String,
    /// The agent's intent, when corrected.
    pub correct: Option<String>,
}

impl Store {
    /// A logged decision's facts for feedback: (ticket id, intent, team, rule ids, language,
    /// text if kept). `decision_id` wins; else the newest decision of `ticket_id`.
    pub async fn decision_for_feedback(
        &self,
        decision_id: Option<&str>,
        ticket_id: Option<&str>,
    ) -> Result<(String, NewFeedback), StoreError> {
        let row = match (decision_id, ticket_id) {
            (Some(d), _) => sqlx::query("SELECT d.decision_id, d.ticket_id, d.intent, d.team, d.decision, d.language, t.subject, t.body FROM decisions d LEFT JOIN ticket_texts t ON t.ticket_id = d.ticket_id WHERE d.decision_id = ?")
                .bind(d)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no decision {d}")))?,
            (None, Some(t)) => sqlx::query("SELECT d.decision_id, d.ticket_id, d.intent, d.team, d.decision, d.language, t.subject, t.body FROM decisions d LEFT JOIN ticket_texts t ON t.ticket_id = d.ticket_id WHERE d.ticket_id = ? ORDER BY d.decided_at DESC, d.rowid DESC LIMIT 1")
                .bind(t)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no decision for ticket {t}")))?,
            (None, None) => return Err(StoreError::NotFound("give decision_id or ticket_id".into())),
        };
        let rule_ids = decision_row(row.get(4))?.rule_ids;
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

    /// Stores a correction; the same correction sent again returns the first (`false`).
    pub async fn insert_feedback(&self, f: &NewFeedback) -> Result<(Feedback, bool), StoreError> {
        let _w = self.write.lock().await;
        let key = serde_json::json!([
            f.decision_id,
            f.agent,
            f.correct_intent,
            f.correct_team,
            f.correct_assignee
        ])
        .to_string();
        let existing = sqlx::query("SELECT * FROM feedback WHERE dedupe_key = ?")
            .bind(&key)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(r) = existing {
            return Ok((feedback_row(&r)?, false));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let (subject, body) = f.text.clone().unzip();
        sqlx::query("INSERT INTO feedback (feedback_id, dedupe_key, decision_id, ticket_id, agent, author, correct_intent, correct_team, correct_assignee, predicted_intent, predicted_team, rule_ids, language, subject, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&id)
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
            .bind(serde_json::to_string(&f.rule_ids).unwrap_or_default())
            .bind(&f.language)
            .bind(subject.flatten())
            .bind(body)
            .bind(timestamp(Utc::now()))
            .execute(&self.pool)
            .await?;
        let r = sqlx::query("SELECT * FROM feedback WHERE feedback_id = ?")
            .bind(&id)
            .fetch_one(&self.pool)
            .await?;
        Ok((feedback_row(&r)?, true))
    }

    /// Every stored correction, oldest first.
    pub async fn feedback(&self) -> Result<Vec<Feedback>, StoreError> {
        sqlx::query("SELECT * FROM feedback ORDER BY created_at, rowid")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(feedback_row)
            .collect()
    }

    /// Training labels: per ticket, its newest intent correction, when the text is kept.
    pub async fn corrections(&self) -> Result<Vec<Correction>, StoreError> {
        let rows = sqlx::query(
            "SELECT ticket_id, subject, body, correct_intent, language FROM feedback f \
             WHERE correct_intent IS NOT NULL AND body IS NOT NULL AND rowid = \
               (SELECT g.rowid FROM feedback g WHERE g.ticket_id = f.ticket_id AND g.correct_intent IS NOT NULL \
                ORDER BY g.created_at DESC, g.rowid DESC LIMIT 1) \
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

    /// Intent corrections stored after `since`.
    pub async fn corrections_since(&self, since: DateTime<Utc>) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT COUNT(*) FROM feedback WHERE correct_intent IS NOT NULL AND created_at > ?",
        )
        .bind(timestamp(since))
        .fetch_one(&self.pool)
        .await?
        .get(0))
    }

    /// Adds an intent to the taxonomy.
    pub async fn add_intent(&self, i: &AddedIntent) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query(
            "INSERT INTO intents_added (id, en, ru, author, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&i.id)
        .bind(&i.en)
        .bind(&i.ru)
        .bind(&i.author)
        .bind(timestamp(i.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Intents added through the API, in order.
    pub async fn added_intents(&self) -> Result<Vec<AddedIntent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, en, ru, author, created_at FROM intents_added ORDER BY created_at, rowid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AddedIntent {
                    id: r.get(0),
                    en: r.get(1),
                    ru: r.get(2),
                    author: r.get(3),
                    created_at: parse_time(r.get(4))?,
                })
            })
            .collect()
    }

    /// Registers a model version.
    pub async fn insert_model(&self, m: &ModelRecord) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query("INSERT INTO models (id, parent, path, data_hash, metrics, status, shadow, note, created_at, activated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&m.id)
            .bind(&m.parent)
            .bind(&m.path)
            .bind(&m.data_hash)
            .bind(serde_json::to_string(&m.metrics).expect("metrics serialise. This is a bug."))
            .bind(m.status.name())
            .bind(m.shadow)
            .bind(&m.note)
            .bind(timestamp(m.created_at))
            .bind(m.activated_at.map(timestamp))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every model version, newest first.
    pub async fn models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        sqlx::query("SELECT * FROM models ORDER BY created_at DESC, rowid DESC")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(model_row)
            .collect()
    }

    /// The model that was active most recently before the current one (for rollback).
    pub async fn previous_active_model(&self) -> Result<Option<ModelRecord>, StoreError> {
        Ok(self
            .models()
            .await?
            .into_iter()
            .filter(|m| m.status == ModelStatus::Retired && m.activated_at.is_some())
            .max_by_key(|m| m.activated_at))
    }

    /// One model version.
    pub async fn model(&self, id: &str) -> Result<ModelRecord, StoreError> {
        let r = sqlx::query("SELECT * FROM models WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no model {id}")))?;
        model_row(&r)
    }

    /// Makes `id` the active model (the previous one retires) in one transaction.
    pub async fn activate_model(
        &self,
        id: &str,
        note: Option<&str>,
    ) -> Result<ModelRecord, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query("SELECT id FROM models WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!("no model {id}")));
        }
        sqlx::query("UPDATE models SET status = 'retired' WHERE status = 'active' AND id <> ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE models SET status = 'active', shadow = 0, activated_at = ?, note = COALESCE(?, note) WHERE id = ?")
            .bind(timestamp(Utc::now()))
            .bind(note)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        crate::failpoint::hit("model.activate.before_commit")
            .await
            .map_err(StoreError::Injected)?;
        tx.commit().await?;
        crate::failpoint::hit("model.activate.after_commit")
            .await
            .map_err(StoreError::Injected)?;
        let r = sqlx::query("SELECT * FROM models WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        model_row(&r)
    }

    /// Sets a candidate's note and shadow flag (at most one model is the shadow).
    pub async fn update_candidate(
        &self,
        id: &str,
        shadow: bool,
        note: &str,
    ) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        if shadow {
            sqlx::query("UPDATE models SET shadow = 0")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE models SET shadow = ?, note = ? WHERE id = ?")
            .bind(shadow)
            .bind(note)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Logs a shadow model's intent for a decision.
    pub async fn insert_shadow(
        &self,
        decision_id: &str,
        model_id: &str,
        intent: &str,
        confidence: f32,
    ) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        sqlx::query("INSERT OR IGNORE INTO shadow_results (decision_id, model_id, intent, confidence) VALUES (?, ?, ?, ?)")
            .bind(decision_id)
            .bind(model_id)
            .bind(intent)
            .bind(confidence)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The shadow model's intents beside the active ones (and agents' corrections).
    pub async fn shadow_rows(&self, model_id: &str) -> Result<Vec<ShadowRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.intent, s.intent, \
               (SELECT f.correct_intent FROM feedback f WHERE f.decision_id = d.decision_id AND f.correct_intent IS NOT NULL ORDER BY f.created_at DESC, f.rowid DESC LIMIT 1) \
             FROM shadow_results s JOIN decisions d ON d.decision_id = s.decision_id WHERE s.model_id = ?",
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

    /// Decisions most worth an agent's label, newest first within each kind: `unknown`
    /// resolutions, the smallest margins, and disagreements with the shadow model; none that an
    /// agent already corrected.
    pub async fn review_candidates(&self, limit: i64) -> Result<Vec<Routed>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.decision_id, d.decision FROM decisions d \
             WHERE NOT EXISTS (SELECT 1 FROM feedback f WHERE f.decision_id = d.decision_id) \
             ORDER BY d.decided_at DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| decision_row(r.get(1))).collect()
    }

    /// Shadow intents of decisions, for review: decision id -> shadow intent.
    pub async fn shadow_intents(
        &self,
        model_id: &str,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let rows = sqlx::query("SELECT decision_id, intent FROM shadow_results WHERE model_id = ?")
            .bind(model_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

fn feedback_row(r: &sqlx::sqlite::SqliteRow) -> Result<Feedback, StoreError> {
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
        rule_ids: serde_json::from_str(&r.get::<String, _>("rule_ids"))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        language: r.get("language"),
        has_text: r.get::<Option<String>, _>("body").is_some(),
        created_at: parse_time(r.get("created_at"))?,
    })
}

fn model_row(r: &sqlx::sqlite::SqliteRow) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        id: r.get("id"),
        parent: r.get("parent"),
        path: r.get("path"),
        data_hash: r.get("data_hash"),
        metrics: crate::learn::ModelMetrics::read(
            serde_json::from_str(&r.get::<String, _>("metrics"))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ),
        status: ModelStatus::parse(r.get("status"))?,
        shadow: r.get("shadow"),
        note: r.get("note"),
        created_at: parse_time(r.get("created_at"))?,
        activated_at: r
            .get::<Option<String>, _>("activated_at")
            .map(|s| parse_time(&s))
            .transpose()?,
    })
}

/// A logged decision as the API returned it (rows of every release read the same).
fn decision_row(json: &str) -> Result<Routed, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("logged decision: {e}")))
}

fn rules_row(r: &sqlx::sqlite::SqliteRow) -> Result<RulesVersion, StoreError> {
    Ok(RulesVersion {
        version: r.get("version"),
        content_hash: r.get("content_hash"),
        text: r.get("text"),
        author: r.get("author"),
        note: r.get("note"),
        created_at: parse_time(r.get("created_at"))?,
    })
}

fn assignment_row(r: &sqlx::sqlite::SqliteRow) -> Result<Assignment, StoreError> {
    Ok(Assignment {
        decision_id: r.get(0),
        team: r.get(1),
        agent: r.get(2),
        opened_at: parse_time(r.get(3))?,
        closed_at: r
            .get::<Option<String>, _>(4)
            .map(|s| parse_time(&s))
            .transpose()?,
        closed_by: r.get(5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::{self, AssignmentPolicy, Pick};

    fn decision(id: &str, team: &str, strategy: Assignee) -> NewDecision {
        NewDecision {
            decision_id: id.into(),
            ticket_id: format!("t-{id}"),
            received_at: Utc::now(),
            intent: "billing.refund".into(),
            confidence: 0.9,
            language: "en".into(),
            team: Some(team.into()),
            strategy: Some(strategy),
            assignee: None,
            assignment_note: None,
            status: "open".into(),
            priority: "normal".into(),
            model_version: "m1".into(),
            rules_version: 1,
            inputs: "{}".into(),
            text: Some((None, format!("body {id}"))),
        }
    }

    /// Logs decisions as the route service does: assignment step, one row each, commit; returns
    /// the response (a JSON list of ids and assignees) or the replayed first one.
    async fn record(
        store: &Store,
        items: &mut [NewDecision],
        idempotency: Option<(&str, &str)>,
        policy: &AssignmentPolicy,
    ) -> String {
        let mut tx = match store
            .begin_decisions(idempotency, policy.close_after)
            .await
            .unwrap()
        {
            DecisionLog::Replay(first) => return first,
            DecisionLog::Open(tx) => tx,
        };
        let mut each = Vec::new();
        for d in items.iter_mut() {
            let (team, strategy) = (d.team.clone().unwrap(), d.strategy.clone().unwrap());
            match assign::assign(&mut tx, policy, &d.decision_id, &team, &strategy)
                .await
                .unwrap()
            {
                Some(Pick::Agent(a)) => d.assignee = Some(a),
                Some(Pick::Unassigned(why)) => d.assignment_note = Some(why),
                None => {}
            }
            let json = serde_json::json!({"id": d.decision_id, "assignee": d.assignee}).to_string();
            tx.insert_decision(d, &json).await.unwrap();
            each.push(json);
        }
        let all = format!("[{}]", each.join(","));
        tx.commit(&all).await.unwrap();
        all
    }

    #[tokio::test]
    async fn migrates_once_and_keeps_rules_history_with_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db/router.db");
        let store = Store::open(&path).await.unwrap();
        assert!(store.current_rules().await.unwrap().is_none());
        let v1 = store
            .save_rules("a", "h1", "seed", "first", Some(0))
            .await
            .unwrap();
        assert_eq!(v1.version, 1);
        let err = store
            .save_rules("b", "h2", "ann", "", Some(0))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::Conflict {
                expected: 0,
                current: 1
            }
        ));
        assert_eq!(store.current_rules().await.unwrap().unwrap().version, 1);
        store
            .save_rules("b", "h2", "ann", "", Some(1))
            .await
            .unwrap();
        store.close().await;
        // Reopening applies no migration twice and keeps everything.
        let store = Store::open(&path).await.unwrap();
        let history = store.rules_history().await.unwrap();
        assert_eq!(
            history.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(store.rules_version(1).await.unwrap().text, "a");
        assert!(matches!(
            store.rules_version(9).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn assigns_round_robin_and_least_loaded_and_honours_idempotency() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        let policy = AssignmentPolicy {
            rosters: [("billing".to_string(), vec!["ann".into(), "bob".into()])]
                .into_iter()
                .collect(),
            close_after: None,
        };
        let mut batch = vec![
            decision("1", "billing", Assignee::RoundRobin),
            decision("2", "billing", Assignee::RoundRobin),
            decision("3", "billing", Assignee::RoundRobin),
            decision("4", "sales", Assignee::RoundRobin),
        ];
        record(&store, &mut batch, None, &policy).await;
        let picked: Vec<Option<&str>> = batch.iter().map(|d| d.assignee.as_deref()).collect();
        assert_eq!(picked, vec![Some("ann"), Some("bob"), Some("ann"), None]);
        assert_eq!(
            batch[3].assignment_note.as_deref(),
            Some("team \"sales\" has no roster")
        );
        // ann has 2 open, bob 1: least-loaded picks bob, then (after closing ann's) ann.
        let mut one = vec![decision("5", "billing", Assignee::LeastLoaded)];
        record(&store, &mut one, None, &policy).await;
        assert_eq!(one[0].assignee.as_deref(), Some("bob"));
        store.close_assignment("1", "api:test").await.unwrap();
        store.close_assignment("3", "api:test").await.unwrap();
        let mut one = vec![decision("6", "billing", Assignee::LeastLoaded)];
        let first = record(&store, &mut one, Some(("key-1", "h")), &policy).await;
        assert_eq!(one[0].assignee.as_deref(), Some("ann"));
        // The retry returns the first response and assigns nobody again.
        let mut retry = vec![decision("7", "billing", Assignee::LeastLoaded)];
        let again = record(&store, &mut retry, Some(("key-1", "h")), &policy).await;
        assert_eq!(again, first);
        assert_eq!(retry[0].assignee, None);
        assert!(matches!(
            store.idempotent_response("key-1", "other").await,
            Err(StoreError::IdempotencyMismatch(_))
        ));
        let open = store.assignments(Some("billing"), true, 100).await.unwrap();
        assert_eq!(open.len(), 3);
        let recent = store.recent_decisions(2).await.unwrap();
        assert_eq!(recent[0].decision_id, "6");
        assert_eq!(recent[0].text.as_ref().unwrap().1, "body 6");
        assert_eq!(
            store
                .purge_texts(Utc::now() + chrono::Duration::seconds(1))
                .await
                .unwrap(),
            6
        );
        assert!(store.recent_decisions(1).await.unwrap()[0].text.is_none());
    }

    #[tokio::test]
    async fn old_assignments_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db")).await.unwrap();
        let mut policy = AssignmentPolicy {
            rosters: [("t".to_string(), vec!["ann".into(), "bob".into()])]
                .into_iter()
                .collect(),
            close_after: None,
        };
        let mut a = vec![decision("1", "t", Assignee::LeastLoaded)];
        record(&store, &mut a, None, &policy).await;
        policy.close_after = Some(Duration::ZERO);
        let mut b = vec![decision("2", "t", Assignee::LeastLoaded)];
        record(&store, &mut b, None, &policy).await;
        assert_eq!(
            b[0].assignee.as_deref(),
            Some("ann"),
            "ann's first ticket expired"
        );
        let all = store.assignments(None, false, 10).await.unwrap();
        assert_eq!(
            all.iter()
                .filter(|a| a.closed_by.as_deref() == Some("expired"))
                .count(),
            1
        );
    }
}
