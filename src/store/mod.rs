//! All persistent state of the service behind one port, [`Store`]: rules versions, the
//! decision log, ticket texts (kept apart, with a retention period), idempotency keys, agent
//! assignments, feedback, added intents, the model registry, shadow results, jobs and console
//! sessions; and the change notifications and cross-process locks several replicas need.
//!
//! Two backends implement it with the same SQL (`sql/`, compiled once per backend): SQLite,
//! the embedded default (WAL, `synchronous = FULL`: an acknowledged write survives a crash),
//! and PostgreSQL, which several replicas share. The invariants (one rules version per number,
//! one answer per idempotency key, one correction per dedupe key, one round-robin turn per
//! pick, one active and one shadow model) are held by the database: conflicts, atomic updates and row locks,
//! never a lock inside one process. Each backend has its own migrations (`migrations/`,
//! embedded with `sqlx::migrate!`) and its own column types (PostgreSQL: TIMESTAMPTZ, BIGINT,
//! BOOLEAN); records (`rules.rs`, `decisions.rs`, ...) are the same for both.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

use crate::assign::AssignmentState;
use crate::decision::Routed;

/// `name()` (as stored) and `parse()` (a stored name back, or `Corrupt` naming `what`) for a
/// fieldless enum kept in a TEXT column.
macro_rules! stored_names {
    ($t:ident, $what:literal, { $($v:ident = $n:literal),* $(,)? }) => {
        impl $t {
            /// The stored name.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $n,)* }
            }

            /// The value of a stored name.
            pub(crate) fn parse(s: &str) -> Result<Self, crate::store::StoreError> {
                match s {
                    $($n => Ok(Self::$v),)*
                    _ => Err(crate::store::StoreError::Corrupt(format!(concat!($what, " {:?}"), s))),
                }
            }
        }
    };
}

mod assignments;
pub mod connectors;
pub mod copy;
mod decisions;
mod feedback;
mod incidents;
mod intents;
mod jobs;
mod models;
#[cfg(test)]
pub(crate) mod pg_cluster;
mod postgres;
mod rules;
mod sessions;
mod shadow;
mod sqlite;
#[cfg(test)]
mod tests;
mod thresholds;
mod url;

pub use assignments::Assignment;
use connectors::{
    Delivery, HttpCall, InboxEvent, InboxOutcome, InboxState, NewInboxEvent, OutboxState,
    QueueCounts, WriteBack,
};
pub use decisions::{DecisionFilter, KeptTicket, LoggedDecision, NewDecision, StoredReply};
pub use feedback::{Correction, Feedback, NewFeedback};
pub use incidents::{
    Alert, AlertBody, AlertOutcome, AlertState, Detection, DetectorRow, IncidentLink,
    IncidentStatus, IncidentText, SeriesRow, StoredIncident,
};
pub use intents::AddedIntent;
pub use jobs::{Job, JobError, JobKind, JobProgress, JobStatus, INTERRUPTED};
pub use models::{ModelRecord, ModelStatus};
pub use rules::RulesVersion;
pub use sessions::ConsoleSession;
pub use shadow::ShadowRow;
pub use thresholds::ThresholdsVersion;
pub use url::{redact, DatabaseUrl, UrlError};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The database could not be brought to this release's schema.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
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
    /// Someone else changed a model's thresholds first.
    #[error("the thresholds of model {model} are at version {current}, not {expected}")]
    ThresholdsConflict {
        /// The model.
        model: String,
        /// The version the caller based its change on.
        expected: i64,
        /// The current version.
        current: i64,
    },
    /// Another replica activated a model while rules were checked against the one before.
    #[error("the active model changed to {active} (on another replica) while the rules were checked against {checked}; send the change again")]
    ModelChanged {
        /// The model the rules were compiled against.
        checked: String,
        /// The model active now.
        active: String,
    },
    /// Another replica saved rules while a model was checked against the ones before.
    #[error("the rules changed to version {current} (on another replica) while model {id} was checked against version {checked}; activate it again")]
    RulesChanged {
        /// The model being activated.
        id: String,
        /// The rules version it was checked against.
        checked: i64,
        /// The newest rules version now.
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

impl StoreError {
    /// Whether the database gave the transaction up for a reason that a retry clears (a
    /// deadlock or serialization failure between replicas, a lock not available, SQLite
    /// busy, no connection free in time): nothing of it was written.
    pub fn is_busy(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::PoolTimedOut) => true,
            // PostgreSQL's SQLSTATEs; SQLite's numeric codes (BUSY and LOCKED, extended ones).
            Self::Db(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                Some("40P01" | "40001" | "55P03" | "5" | "6" | "261" | "262" | "517" | "773")
            ),
            _ => false,
        }
    }
}

/// A time as a column: RFC 3339 UTC text of fixed width in SQLite (so it sorts as text),
/// TIMESTAMPTZ in PostgreSQL; microseconds in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(pub DateTime<Utc>);

impl Stamp {
    /// The text SQLite stores.
    fn text(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// A time read back from SQLite's text.
    fn parse(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self(t.to_utc()))
            .map_err(|e| format!("time {s:?}: {e}"))
    }
}

/// Now, to the microsecond that both databases keep (so a time returned equals it read back).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// What a change notification is about (PostgreSQL `NOTIFY` on [`CHANGES`], sent in the
/// changing transaction, so it arrives once the change is visible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// A rules version was saved.
    Rules,
    /// A model was registered, activated, or its shadow flag changed.
    Models,
    /// A job started, ended or was asked to stop.
    Jobs,
    /// A ticket was erased (every replica drops it from its embedding cache).
    Erasures,
    /// An incident opened, grew or changed status (every replica links against it).
    Incidents,
    /// A model's thresholds were edited.
    Thresholds,
}

stored_names!(Topic, "change topic", {
    Rules = "rules",
    Models = "models",
    Jobs = "jobs",
    Erasures = "erasures",
    Incidents = "incidents",
    Thresholds = "thresholds",
});

/// The changes heard by [`Store::changes`]: each notification's topic, or `None` where some
/// may have been missed.
pub type Changes = tokio::sync::mpsc::Receiver<Option<Topic>>;

/// Runs `work` as long as the process runs: when a change of one of `topics` is heard in
/// `changes` (or some may have been missed), and every `every` (the fallback, and the only way
/// on SQLite, which has no notifications; with no `changes`, a periodic task).
pub fn spawn_on_changes<F, W>(
    mut changes: Option<Changes>,
    topics: &'static [Topic],
    every: Duration,
    mut work: W,
) where
    W: FnMut() -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let heard = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                topic = heard => match topic {
                    Some(Some(t)) if !topics.contains(&t) => continue,
                    Some(_) => {}
                    // The listener stopped (the pool closed): the periodic check remains.
                    None => changes = None,
                },
                _ = tick.tick() => {}
            }
            work().await;
        }
    });
}

/// Work that one process at a time may do on a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusive {
    /// Retraining (the schedule's and the API's).
    Retrain,
    /// Watching the decision log for incidents.
    Incidents,
}

impl Exclusive {
    /// The PostgreSQL advisory lock's key.
    fn key(self) -> i64 {
        match self {
            // "intent-router retrain", as a number.
            Self::Retrain => 0x6972_7274_726e,
            // "intent-router incidents", as a number.
            Self::Incidents => 0x6972_696e_6364,
        }
    }
}

/// An [`Exclusive`] right, held until dropped. On PostgreSQL it is a session advisory lock on
/// a connection of its own (not a pooled one), so it ends with the process that holds it, even
/// when that process is killed; SQLite serves one process, whose own locks suffice.
#[derive(Debug)]
pub struct ExclusiveLock {
    held: Option<postgres::Held>,
}

impl ExclusiveLock {
    /// Whether the right is still held: on PostgreSQL, whether its connection still answers
    /// (a lost connection ends the lock, and another process may take it since).
    pub async fn still_held(&mut self) -> bool {
        match &mut self.held {
            None => true,
            Some(h) => h.alive().await,
        }
    }
}

/// The PostgreSQL notification channel of changes.
pub const CHANGES: &str = "intent_router_changes";

/// Which backend, with its connections.
#[derive(Debug)]
enum Backend {
    Sqlite(sqlite::Db),
    Postgres(Box<postgres::Db>),
}

/// The database: SQLite or PostgreSQL, chosen by the URL.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    url: DatabaseUrl,
}

/// How to reach PostgreSQL beyond the URL.
#[derive(Clone, Default)]
pub struct Connect {
    /// The password, when it is not in the URL (from an environment variable or a file).
    pub password: Option<String>,
}

impl std::fmt::Debug for Connect {
    /// Never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let password = self.password.as_ref().map(|_| "***");
        f.debug_struct("Connect")
            .field("password", &password)
            .finish()
    }
}

impl Store {
    /// Opens (creating an SQLite file if needed) the database and brings its schema up to
    /// date; an SQLite database of an earlier release is upgraded in place.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, StoreError> {
        Self::connect(url, &Connect::default()).await
    }

    /// [`Store::open`] with connection settings.
    pub async fn connect(url: &DatabaseUrl, how: &Connect) -> Result<Self, StoreError> {
        let backend = match url {
            DatabaseUrl::Sqlite(path) => Backend::Sqlite(sqlite::Db::open(path).await?),
            DatabaseUrl::Postgres(u) => {
                Backend::Postgres(Box::new(postgres::Db::open(u, how).await?))
            }
        };
        Ok(Self {
            backend,
            url: url.clone(),
        })
    }

    /// Closes the connections (waits for them to finish).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(b) => b.close().await,
            Backend::Postgres(b) => b.close().await,
        }
    }

    /// The changes other processes announce, as they commit (`None` in the stream: some may
    /// have been missed while the connection was down). `None`: this backend announces nothing
    /// (SQLite: one process), so callers check periodically.
    pub async fn changes(&self) -> Result<Option<Changes>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(b) => b.changes().await.map(Some),
        }
    }

    /// Takes `what` for this process if no other process on the database holds it (`None`:
    /// another does).
    pub async fn try_exclusive(
        &self,
        what: Exclusive,
    ) -> Result<Option<ExclusiveLock>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Some(ExclusiveLock { held: None })),
            Backend::Postgres(b) => Ok(b
                .try_lock(what.key())
                .await?
                .map(|held| ExclusiveLock { held: Some(held) })),
        }
    }

    /// Where the database is (shown redacted).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
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

    /// Starts logging decisions: one transaction with `teams` (those whose assignment step
    /// runs) locked in name order and their assignments past `close_after` closed. If the
    /// idempotency key was already stored for the same request, returns that first response.
    pub async fn begin_decisions(
        &self,
        idempotency: Option<(&str, &str)>,
        teams: &BTreeSet<String>,
        close_after: Option<Duration>,
    ) -> Result<DecisionLog, StoreError> {
        let open = |tx| DecisionLog::Open(DecisionTx(tx));
        Ok(match &self.backend {
            Backend::Sqlite(b) => match b.begin_decisions(idempotency, teams, close_after).await? {
                sqlite::DecisionLog::Replay(first) => DecisionLog::Replay(first),
                sqlite::DecisionLog::Open(tx) => open(Tx::Sqlite(tx)),
            },
            Backend::Postgres(b) => match b.begin_decisions(idempotency, teams, close_after).await?
            {
                postgres::DecisionLog::Replay(first) => DecisionLog::Replay(first),
                postgres::DecisionLog::Open(tx) => open(Tx::Postgres(tx)),
            },
        })
    }
}

/// The port's operations, each answered by the backend in use.
macro_rules! port {
    ($($(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match &self.backend {
                        Backend::Sqlite(b) => b.$name($($arg),*).await,
                        Backend::Postgres(b) => b.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

port! {
    // ---- rules versions ----
    /// The newest rules version, if any.
    fn current_rules(&self) -> Option<RulesVersion>;
    /// One rules version.
    fn rules_version(&self, version: i64) -> RulesVersion;
    /// Every rules version, newest first.
    fn rules_history(&self) -> Vec<RulesVersion>;
    /// Appends a rules version if the current one is still `expected` and the active model is
    /// still `model`, the one the rules were compiled against (`None`: no check).
    fn save_rules(&self, text: &str, content_hash: &str, author: &str, note: &str, expected: Option<i64>, model: Option<&str>) -> RulesVersion;

    // ---- threshold versions ----
    /// A model's newest threshold edits (version 0, nothing edited, when none are stored).
    fn current_thresholds(&self, model: &str) -> ThresholdsVersion;
    /// Every stored version of a model's threshold edits, newest first.
    fn thresholds_history(&self, model: &str) -> Vec<ThresholdsVersion>;
    /// Appends a version of a model's threshold edits if its current one is still `expected`
    /// (`None`: no check); announced.
    fn save_thresholds(&self, model: &str, overrides: &crate::intent::Thresholds, author: &str, note: &str, expected: Option<i64>) -> ThresholdsVersion;

    // ---- idempotency ----
    /// The first answer under an idempotency key, if the same request was seen before (and a
    /// decision of it is still logged).
    fn idempotent_response(&self, key: &str, request_hash: &str) -> Option<StoredReply>;
    /// Deletes idempotency keys older than `cutoff`; returns how many.
    fn purge_idempotency(&self, cutoff: DateTime<Utc>) -> u64;

    // ---- decisions ----
    /// The last `n` decisions, newest first, with their ticket text when still kept.
    fn recent_decisions(&self, n: i64) -> Vec<LoggedDecision>;
    /// Logged decisions, newest first, filtered.
    fn decisions(&self, f: &DecisionFilter) -> Vec<Routed>;
    /// (decided at, intent, team, confidence) of every decision since `since`, for statistics.
    fn decision_facts(&self, since: DateTime<Utc>) -> Vec<(DateTime<Utc>, String, Option<String>, f64)>;
    /// One logged decision's JSON.
    fn decision(&self, decision_id: &str) -> String;
    /// A logged decision's facts for a correction (`decision_id` wins; else the newest decision
    /// of `ticket_id`): its id and the correction to fill in.
    fn decision_for_feedback(&self, decision_id: Option<&str>, ticket_id: Option<&str>) -> (String, NewFeedback);
    /// Decisions no agent corrected yet, newest first (the review queue's candidates).
    fn review_candidates(&self, limit: i64) -> Vec<Routed>;

    // ---- incidents ----
    /// Routed tickets logged after (`after`, `after_id`) in the log's order (decided at, id),
    /// with their embeddings and incident links, at most `limit`.
    fn detector_rows(&self, after: DateTime<Utc>, after_id: &str, limit: i64) -> Vec<DetectorRow>;
    /// Stores an incident the detector opened, with the decisions linked to it (a decision
    /// linked already keeps its first link), and its alert if `alerts`; announced.
    fn open_incident(&self, i: &StoredIncident, links: &[IncidentLink], alerts: bool) -> ();
    /// Stores an incident's new rate and last ticket as the watch sees them (its picture as
    /// people corrected it and its status stay) and links more decisions to it; announced.
    /// Returns the incident as stored (people's corrections included). With `alerts`, an
    /// alert is queued once its tickets have doubled since the last one.
    fn update_incident(&self, tracked: &crate::incident::TrackedIncident, links: &[IncidentLink], alerts: bool) -> crate::incident::TrackedIncident;
    /// Claims due pending alerts (at most `limit`) until `lease_until`, counting an attempt;
    /// an incident's alerts one at a time, in the order they were queued.
    fn claim_alerts(&self, lease_until: DateTime<Utc>, limit: i64) -> Vec<Alert>;
    /// Records how an attempt at a claimed alert ended (nothing if the claim ran out).
    fn finish_alert(&self, id: &str, claimed_until: DateTime<Utc>, outcome: &AlertOutcome) -> ();
    /// Alerts, newest first, optionally in one state.
    fn alerts(&self, state: Option<AlertState>, limit: i64) -> Vec<Alert>;
    /// Deletes the alerts delivered or given up before `cutoff`; returns how many.
    fn purge_alerts(&self, cutoff: DateTime<Utc>) -> u64;
    /// Sends a dead alert again (its attempts start over).
    fn retry_alert(&self, id: &str) -> Alert;
    /// Stores an incident's new picture (intent, language, centroid, spreads, and its tickets
    /// counted again) and clears its marks for remodelling, if they are still `marks` (else
    /// `false`: its tickets changed again since they were read); announced.
    fn save_incident_model(&self, tracked: &crate::incident::TrackedIncident, marks: i64) -> bool;
    /// The incidents marked for remodelling (their tickets changed).
    fn incidents_to_remodel(&self) -> Vec<String>;
    /// The (intent, language) an incident was opened for, and those of the incidents merged
    /// into it.
    fn incident_origins(&self, id: &str) -> Vec<(String, Option<String>)>;
    /// An incident's tickets: when each was logged, and its embedding if kept.
    fn incident_members(&self, id: &str) -> Vec<(DateTime<Utc>, Option<Vec<u8>>)>;
    /// The kept embeddings of the newest tickets of an intent (or under it), in a language if
    /// given, routed since `since` and linked to no incident: at most `limit`.
    fn usual_vectors(&self, intent: &str, language: Option<&str>, since: DateTime<Utc>, limit: i64) -> Vec<Vec<u8>>;
    /// Unlinks tickets from an incident (each must be linked to it), recording the unlinks
    /// (the linking report; never linked to it again); marked for remodelling, announced.
    fn unlink_tickets(&self, id: &str, decisions: &[String]) -> ();
    /// Merges incidents into `target` (none merged already): their tickets move to it (each
    /// remembering where it came from), their rates add up, those merged into them before are
    /// merged into it; marked for remodelling, announced.
    fn merge_incidents(&self, target: &str, sources: &[String]) -> ();
    /// Undoes a merge: the tickets that came from `id` go back to it; returns the incident it
    /// had been merged into (both marked for remodelling, announced).
    fn unmerge_incident(&self, id: &str) -> String;
    /// Moves tickets (each linked to `source`) to a new incident `new`, stored as given;
    /// both marked for remodelling, announced.
    fn split_incident(&self, source: &str, decisions: &[String], new: &StoredIncident) -> ();
    /// The kept texts of an incident's tickets (those still kept), in link order, at most
    /// `limit`.
    fn incident_texts(&self, id: &str, limit: i64) -> Vec<IncidentText>;
    /// The kept texts of the newest tickets of an intent (or under it), in a language if
    /// given, routed since `since` and linked to no incident: at most `limit`.
    fn usual_texts(&self, intent: &str, language: Option<&str>, since: DateTime<Utc>, limit: i64) -> Vec<IncidentText>;
    /// The decisions logged from `from` to `to` (excluded), with their incident links.
    fn series_rows(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<SeriesRow>;
    /// Of the decisions logged from `from` to `to` (in a language, if given) and linked to no
    /// incident, how many are of an intent (or under it), and how many there are in all.
    fn intent_share(&self, intent: &str, language: Option<&str>, from: DateTime<Utc>, to: DateTime<Utc>) -> (i64, i64);
    /// The decisions unlinked from an incident by a person since `since`.
    fn unlinked_since(&self, since: DateTime<Utc>) -> Vec<String>;
    /// Links made automatically since `since`, each with whether a person unlinked it.
    fn link_outcomes(&self, since: DateTime<Utc>) -> Vec<crate::incident::report::LinkOutcome>;
    /// The incidents new tickets link to (open or acknowledged, not merged) with a ticket
    /// since `since`, oldest first.
    fn live_incidents(&self, since: DateTime<Utc>) -> Vec<StoredIncident>;
    /// One incident.
    fn incident(&self, id: &str) -> StoredIncident;
    /// Incidents, newest first, each with its linked tickets' count; in one status (merged ones
    /// left out), if given.
    fn incidents(&self, status: Option<IncidentStatus>, limit: i64) -> Vec<(StoredIncident, i64)>;
    /// Sets an incident's status (announced: a resolved or dismissed one takes no more tickets).
    fn set_incident_status(&self, id: &str, status: IncidentStatus) -> ();
    /// The decisions linked to an incident, in the order they were linked.
    fn incident_links(&self, incident_id: &str) -> Vec<IncidentLink>;

    // ---- assignments ----
    /// Open assignments (or all, newest first, at most `limit`), optionally for one team.
    fn assignments(&self, team: Option<&str>, open_only: bool, limit: i64) -> Vec<Assignment>;
    /// Closes the assignment a decision made; closing twice is not an error.
    fn close_assignment(&self, decision_id: &str, by: &str) -> Assignment;

    // ---- ticket texts and erasure ----
    /// Deletes ticket texts stored before `cutoff` (and the texts kept with corrections made
    /// before it); returns how many tickets' texts.
    fn purge_texts(&self, cutoff: DateTime<Utc>) -> u64;
    /// Erases everything stored about a ticket, in one transaction, and records the erasure
    /// (announced to every replica); the rows removed per kind.
    fn erase_ticket(&self, ticket_id: &str) -> BTreeMap<&'static str, u64>;
    /// The tickets erased at or after `since`, oldest first, with the time of their erasure.
    fn erased_since(&self, since: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)>;
    /// Forgets the erasures recorded before `cutoff`; returns how many.
    fn purge_erasures(&self, cutoff: DateTime<Utc>) -> u64;

    // ---- connectors' inbox and outbox ----
    /// Stores an event received from a helpdesk: its id, and `false` when the same delivery
    /// was stored before (then nothing changes and that first event's id is returned).
    fn insert_inbox(&self, e: &NewInboxEvent) -> (String, bool);
    /// Claims up to `limit` due pending events for processing until `lease_until`.
    fn claim_inbox(&self, lease_until: DateTime<Utc>, limit: i64) -> Vec<InboxEvent>;
    /// Records how processing an event claimed until `claimed` ended (with its write-back
    /// queued in the same transaction); nothing changes if it is no longer pending under that
    /// claim (the lease ran out and another replica took it).
    fn finish_inbox(&self, id: &str, claimed: DateTime<Utc>, outcome: &InboxOutcome) -> ();
    /// Puts a failed event back in the queue (`None`: no failed event of that id).
    fn retry_inbox(&self, connector: &str, id: &str) -> Option<InboxEvent>;
    /// One inbox event.
    fn inbox_event(&self, id: &str) -> InboxEvent;
    /// A connector's newest events, optionally in one state.
    fn inbox_events(&self, connector: &str, state: Option<InboxState>, limit: i64) -> Vec<InboxEvent>;
    /// Claims up to `limit` due pending write-backs for sending until `lease_until`.
    fn claim_outbox(&self, lease_until: DateTime<Utc>, limit: i64) -> Vec<WriteBack>;
    /// Records how an attempt to deliver a write-back claimed until `claimed` ended (nothing
    /// changes if it is no longer held under that claim).
    fn finish_write_back(&self, id: &str, claimed: DateTime<Utc>, d: &Delivery) -> ();
    /// Puts a dead write-back back in the queue, with new `requests` if given (`None`: no dead
    /// write-back of that id).
    fn retry_write_back(&self, connector: &str, id: &str, requests: Option<&[HttpCall]>) -> Option<WriteBack>;
    /// One write-back.
    fn write_back(&self, id: &str) -> WriteBack;
    /// A connector's newest write-backs, optionally in one state.
    fn write_backs(&self, connector: &str, state: Option<OutboxState>, limit: i64) -> Vec<WriteBack>;
    /// A connector's queue sizes.
    fn queue_counts(&self, connector: &str) -> QueueCounts;
    /// Takes `tokens` uses (at least 1, at most `limit`) of `key`'s limit in the window
    /// starting at `window_start` (shared by every replica); `false`: they are not left.
    fn take_rate(&self, key: &str, window_start: DateTime<Utc>, limit: i64, tokens: i64) -> bool;
    /// Deletes finished events and write-backs older than `cutoff`; returns how many events.
    fn purge_connector_events(&self, cutoff: DateTime<Utc>) -> u64;

    // ---- feedback and intents ----
    /// Stores a correction; the same correction sent again returns the first (`false`).
    fn insert_feedback(&self, f: &NewFeedback) -> (Feedback, bool);
    /// Every stored correction, oldest first.
    fn feedback(&self) -> Vec<Feedback>;
    /// Training labels: per ticket, its newest intent correction, when the text is kept.
    fn corrections(&self) -> Vec<Correction>;
    /// Intent corrections stored after `since`.
    fn corrections_since(&self, since: DateTime<Utc>) -> i64;
    /// Adds an intent to the taxonomy; `false` when one with its id was added first.
    fn add_intent(&self, i: &AddedIntent) -> bool;
    /// Intents added through the API, in order.
    fn added_intents(&self) -> Vec<AddedIntent>;

    // ---- model registry and shadow results ----
    /// Registers a model version.
    fn insert_model(&self, m: &ModelRecord) -> ();
    /// Every model version, newest first.
    fn models(&self) -> Vec<ModelRecord>;
    /// One model version.
    fn model(&self, id: &str) -> ModelRecord;
    /// Makes `id` the active model (the previous one retires) in one transaction, if the
    /// newest rules version is still `rules`, the one checked against it (`None`: no check).
    fn activate_model(&self, id: &str, note: Option<&str>, rules: Option<i64>) -> ModelRecord;
    /// Sets a candidate's note and shadow flag (at most one model is the shadow).
    fn update_candidate(&self, id: &str, shadow: bool, note: &str) -> ();
    /// Logs a shadow model's intent for a decision (once per decision and model).
    fn insert_shadow(&self, decision_id: &str, model_id: &str, intent: &str, confidence: f32) -> ();
    /// The shadow model's intents beside the active ones (and agents' corrections).
    fn shadow_rows(&self, model_id: &str) -> Vec<ShadowRow>;
    /// Shadow intents of decisions, for review: decision id -> shadow intent.
    fn shadow_intents(&self, model_id: &str) -> HashMap<String, String>;

    // ---- jobs ----
    /// Records a job that starts now.
    fn insert_job(&self, job: &Job) -> ();
    /// Records how far a running job got; says whether someone asked to cancel it.
    fn job_progress(&self, id: &str, p: &JobProgress) -> bool;
    /// Ends a running job: succeeded with its result, failed with its error, or cancelled.
    fn finish_job(&self, id: &str, status: JobStatus, result: Option<&serde_json::Value>, error: Option<&JobError>) -> ();
    /// Asks a running job to stop; the job as it stands (a finished one is left as it is).
    fn request_job_cancel(&self, id: &str) -> Job;
    /// One job.
    fn job(&self, id: &str) -> Job;
    /// The newest jobs first.
    fn jobs(&self, limit: i64) -> Vec<Job>;
    /// Deletes the jobs that ended before `cutoff`; returns how many.
    fn purge_jobs(&self, cutoff: DateTime<Utc>) -> u64;
    /// How many jobs are marked running.
    fn running_jobs(&self) -> i64;
    /// Ends every job still marked running as failed (`interrupted`): when no job of this
    /// database can be running (the caller holds [`Exclusive::Retrain`]).
    fn fail_interrupted_jobs(&self) -> u64;

    // ---- console sessions ----
    /// Records a console session under the hash of its cookie value.
    fn insert_session(&self, id_hash: &str, s: &ConsoleSession) -> ();
    /// The session of a cookie value's hash, unless it ended before `now`.
    fn console_session(&self, id_hash: &str, now: DateTime<Utc>) -> Option<ConsoleSession>;
    /// Ends a session (logout).
    fn end_session(&self, id_hash: &str) -> ();
    /// Deletes the sessions that ended by `now`; returns how many.
    fn purge_sessions(&self, now: DateTime<Utc>) -> u64;

    // ---- the database itself ----
    /// A consistency check: `ok` when the database is consistent (SQLite's integrity check;
    /// PostgreSQL checks its own pages, so there it answers whether the server does).
    fn integrity_check(&self) -> String;
    /// Checks that the database answers.
    fn ping(&self) -> ();
    /// The schema version the database is at (the newest migration applied).
    fn schema_version(&self) -> i64;
}

/// What [`Store::begin_decisions`] found: the first answer to the same request, or an open
/// transaction to log new decisions in.
pub enum DecisionLog {
    /// The answer to the first request with this idempotency key.
    Replay(StoredReply),
    /// Log the decisions here, then [`DecisionTx::commit`].
    Open(DecisionTx),
}

/// Decisions being logged: one transaction that the assignment step reads and advances
/// ([`AssignmentState`]). Dropping it without a commit writes nothing.
pub struct DecisionTx(Tx);

enum Tx {
    Sqlite(sqlite::DecisionTx),
    Postgres(postgres::DecisionTx),
}

/// `$tx.$call` on whichever backend's transaction it is.
macro_rules! on_tx {
    ($tx:expr, $t:ident => $call:expr) => {
        match $tx {
            Tx::Sqlite($t) => $call,
            Tx::Postgres($t) => $call,
        }
    };
}

impl DecisionTx {
    /// Logs one decision (`json`: the decision as returned) and what is kept of its ticket.
    pub async fn insert_decision(&mut self, d: &NewDecision, json: &str) -> Result<(), StoreError> {
        on_tx!(&mut self.0, t => t.insert_decision(d, json).await)
    }

    /// Commits everything logged, with the answer (the decisions in order, one or a `batch`)
    /// stored under the idempotency key, if any. When another request with the same key
    /// committed first (another replica, say), nothing of this one is kept and that first
    /// answer is returned instead.
    pub async fn commit(self, batch: bool) -> Result<Option<StoredReply>, StoreError> {
        on_tx!(self.0, t => t.commit(batch).await)
    }
}

impl AssignmentState for DecisionTx {
    type Error = StoreError;

    async fn take_round_robin(&mut self, team: &str) -> Result<usize, StoreError> {
        on_tx!(&mut self.0, t => t.take_round_robin(team).await)
    }

    async fn open_loads(&mut self, team: &str) -> Result<Vec<(String, i64)>, StoreError> {
        on_tx!(&mut self.0, t => t.open_loads(team).await)
    }

    async fn open_assignment(
        &mut self,
        decision_id: &str,
        team: &str,
        agent: &str,
    ) -> Result<(), StoreError> {
        on_tx!(&mut self.0, t => t.open_assignment(decision_id, team, agent).await)
    }
}
