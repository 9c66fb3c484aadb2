//! Moving up from SQLite: every table of one database copied into another (SQLite into
//! PostgreSQL, or back), row for row, in one transaction of the target. The tables and their
//! column kinds are listed here once; each backend reads and writes the kinds with its own
//! types (text times and integer flags in SQLite, TIMESTAMPTZ and BOOLEAN in PostgreSQL).
//! Console sessions are not copied (they are short-lived; log in again).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{postgres, sqlite, Backend, Store, StoreError};

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Text.
    Text,
    /// A 64-bit integer.
    Int,
    /// A double.
    Real,
    /// A flag.
    Bool,
    /// A time.
    Time,
    /// Bytes.
    Bytes,
}

/// One value of a row (`None`: NULL).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// Text.
    Text(Option<String>),
    /// A 64-bit integer.
    Int(Option<i64>),
    /// A double.
    Real(Option<f64>),
    /// A flag.
    Bool(Option<bool>),
    /// A time.
    Time(Option<DateTime<Utc>>),
    /// Bytes.
    Bytes(Option<Vec<u8>>),
}

/// A table: its name, its key columns (the copy's order) and every column with its kind.
pub(crate) struct Table {
    /// Name.
    pub name: &'static str,
    /// The primary key's columns (the copy's order).
    pub key: &'static [&'static str],
    /// Every column.
    pub columns: &'static [(&'static str, Kind)],
}

use Kind::{Bool, Bytes, Int, Real, Text, Time};

/// Every table that holds the service's state, in an order that a later table's rows may
/// refer to an earlier one's.
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "rules_versions",
        key: &["version"],
        columns: &[
            ("version", Int),
            ("content_hash", Text),
            ("text", Text),
            ("author", Text),
            ("note", Text),
            ("created_at", Time),
        ],
    },
    Table {
        name: "threshold_versions",
        key: &["model_id", "version"],
        columns: &[
            ("model_id", Text),
            ("version", Int),
            ("overrides", Text),
            ("author", Text),
            ("note", Text),
            ("created_at", Time),
        ],
    },
    Table {
        name: "decisions",
        key: &["decision_id"],
        columns: &[
            ("decision_id", Text),
            ("ticket_id", Text),
            ("received_at", Time),
            ("decided_at", Time),
            ("intent", Text),
            ("confidence", Real),
            ("language", Text),
            ("team", Text),
            ("assignee", Text),
            ("status", Text),
            ("priority", Text),
            ("model_version", Text),
            ("rules_version", Int),
            ("channel", Text),
            ("language_given", Text),
            ("decision", Text),
        ],
    },
    Table {
        name: "ticket_texts",
        key: &["ticket_id"],
        columns: &[
            ("ticket_id", Text),
            ("subject", Text),
            ("body", Text),
            ("customer_tier", Text),
            ("fields", Text),
            ("stored_at", Time),
        ],
    },
    Table {
        name: "idempotency_keys",
        key: &["key"],
        columns: &[
            ("key", Text),
            ("request_hash", Text),
            ("batch", Bool),
            ("created_at", Time),
        ],
    },
    Table {
        name: "idempotency_decisions",
        key: &["key", "position"],
        columns: &[("key", Text), ("position", Int), ("decision_id", Text)],
    },
    Table {
        name: "erasures",
        key: &["ticket_id"],
        columns: &[("ticket_id", Text), ("erased_at", Time)],
    },
    Table {
        name: "assignments",
        key: &["decision_id"],
        columns: &[
            ("decision_id", Text),
            ("team", Text),
            ("agent", Text),
            ("opened_at", Time),
            ("closed_at", Time),
            ("closed_by", Text),
        ],
    },
    Table {
        name: "round_robin",
        key: &["team"],
        columns: &[("team", Text), ("next_index", Int)],
    },
    Table {
        name: "feedback",
        key: &["feedback_id"],
        columns: &[
            ("feedback_id", Text),
            ("dedupe_key", Text),
            ("decision_id", Text),
            ("ticket_id", Text),
            ("agent", Text),
            ("author", Text),
            ("correct_intent", Text),
            ("correct_team", Text),
            ("correct_assignee", Text),
            ("predicted_intent", Text),
            ("predicted_team", Text),
            ("rule_ids", Text),
            ("language", Text),
            ("subject", Text),
            ("body", Text),
            ("created_at", Time),
        ],
    },
    Table {
        name: "intents_added",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("en", Text),
            ("ru", Text),
            ("author", Text),
            ("created_at", Time),
        ],
    },
    Table {
        name: "models",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("parent", Text),
            ("path", Text),
            ("data_hash", Text),
            ("metrics", Text),
            ("status", Text),
            ("shadow", Bool),
            ("note", Text),
            ("created_at", Time),
            ("activated_at", Time),
        ],
    },
    Table {
        name: "shadow_results",
        key: &["decision_id", "model_id"],
        columns: &[
            ("decision_id", Text),
            ("model_id", Text),
            ("intent", Text),
            ("confidence", Real),
        ],
    },
    Table {
        name: "jobs",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("kind", Text),
            ("status", Text),
            ("params", Text),
            ("stage", Text),
            ("done", Int),
            ("total", Int),
            ("result", Text),
            ("error_code", Text),
            ("error_message", Text),
            ("cancel_requested", Bool),
            ("created_by", Text),
            ("created_at", Time),
            ("finished_at", Time),
        ],
    },
    Table {
        name: "inbox",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("connector", Text),
            ("delivery_id", Text),
            ("kind", Text),
            ("event_type", Text),
            ("ticket_id", Text),
            ("ticket", Text),
            ("context", Text),
            ("state", Text),
            ("attempts", Int),
            ("next_at", Time),
            ("received_at", Time),
            ("done_at", Time),
            ("decision_id", Text),
            ("error", Text),
        ],
    },
    Table {
        name: "outbox",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("connector", Text),
            ("ticket_id", Text),
            ("decision_id", Text),
            ("requests", Text),
            ("context", Text),
            ("step", Int),
            ("state", Text),
            ("attempts", Int),
            ("next_at", Time),
            ("created_at", Time),
            ("finished_at", Time),
            ("last_status", Int),
            ("last_error", Text),
        ],
    },
    Table {
        name: "rate_windows",
        key: &["key"],
        columns: &[("key", Text), ("window_start", Time), ("used", Int)],
    },
    Table {
        name: "ticket_vectors",
        key: &["decision_id"],
        columns: &[
            ("decision_id", Text),
            ("vector", Bytes),
            ("stored_at", Time),
        ],
    },
    Table {
        name: "incidents",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("intent", Text),
            ("language", Text),
            ("status", Text),
            ("opened_at", Time),
            ("last_at", Time),
            ("updated_at", Time),
            ("detection", Text),
            ("tracked", Text),
            ("merged_into", Text),
            ("split_from", Text),
            ("remodel", Int),
            ("alerted_tickets", Int),
        ],
    },
    Table {
        name: "incident_links",
        key: &["decision_id"],
        columns: &[
            ("decision_id", Text),
            ("incident_id", Text),
            ("linked_at", Time),
            ("probability", Real),
            ("similarity", Real),
            ("linked_by", Text),
            ("reason", Text),
            ("merged_from", Text),
        ],
    },
    Table {
        name: "incident_unlinks",
        key: &["decision_id", "incident_id"],
        columns: &[
            ("decision_id", Text),
            ("incident_id", Text),
            ("unlinked_at", Time),
            ("linked_by", Text),
            ("probability", Real),
            ("similarity", Real),
        ],
    },
    Table {
        name: "incident_alerts",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("incident_id", Text),
            ("event", Text),
            ("body", Text),
            ("state", Text),
            ("attempts", Int),
            ("next_at", Time),
            ("created_at", Time),
            ("finished_at", Time),
            ("last_status", Int),
            ("last_error", Text),
        ],
    },
];

/// Rows read and written at a time.
const CHUNK: i64 = 500;

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target holds data already.
    #[error("the target database is not empty ({table} has {rows} rows); copy into a new, empty database")]
    NotEmpty {
        /// The first table with rows.
        table: &'static str,
        /// How many.
        rows: i64,
    },
    /// Reading or writing failed; nothing was written to the target.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies every table of `from` into `to`, which must be empty (migrated, with no rows); all
/// or nothing. The source is read from one snapshot (replicas may keep serving on it; what
/// they write after the copy starts is not in it). Returns the rows copied per table.
pub async fn copy(from: &Store, to: &Store) -> Result<BTreeMap<&'static str, u64>, CopyError> {
    for t in TABLES {
        let rows = to.count_rows(t).await?;
        if rows > 0 {
            return Err(CopyError::NotEmpty {
                table: t.name,
                rows,
            });
        }
    }
    let mut source = from.snapshot().await?;
    let mut target = to.begin_import().await?;
    let mut copied = BTreeMap::new();
    for t in TABLES {
        let mut after: Option<Vec<Cell>> = None;
        loop {
            let rows = source.rows(t, after.as_deref(), CHUNK).await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = Some(t.key_of(last));
            target.insert_rows(t, &rows).await?;
            *copied.entry(t.name).or_insert(0) += rows.len() as u64;
        }
        copied.entry(t.name).or_insert(0);
    }
    target.commit().await?;
    Ok(copied)
}

impl Table {
    /// The key columns' cells of a row read from this table.
    fn key_of(&self, row: &[Cell]) -> Vec<Cell> {
        self.key
            .iter()
            .map(|k| {
                let i = self
                    .columns
                    .iter()
                    .position(|(c, _)| c == k)
                    .expect("a key column is a column. This is a bug.");
                row[i].clone()
            })
            .collect()
    }
}

/// The source's snapshot.
pub(super) enum Snapshot {
    Sqlite(sqlite::Snapshot),
    Postgres(postgres::Snapshot),
}

impl Snapshot {
    /// Up to `limit` rows of `t` in key order, after the row whose key is `after`.
    pub(super) async fn rows(
        &mut self,
        t: &Table,
        after: Option<&[Cell]>,
        limit: i64,
    ) -> Result<Vec<Vec<Cell>>, StoreError> {
        match self {
            Self::Sqlite(s) => s.rows(t, after, limit).await,
            Self::Postgres(s) => s.rows(t, after, limit).await,
        }
    }
}

/// The target's transaction.
enum Import {
    Sqlite(sqlite::WriteTx),
    Postgres(postgres::WriteTx),
}

impl Import {
    async fn insert_rows(&mut self, t: &Table, rows: &[Vec<Cell>]) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(tx) => tx.insert_rows(t, rows).await,
            Self::Postgres(tx) => tx.insert_rows(t, rows).await,
        }
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }
}

impl Store {
    /// Rows in a table.
    pub(super) async fn count_rows(&self, t: &Table) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.count_rows(t).await,
            Backend::Postgres(b) => b.count_rows(t).await,
        }
    }

    /// A read of the whole database from one snapshot.
    pub(super) async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(b) => Snapshot::Sqlite(b.snapshot().await?),
            Backend::Postgres(b) => Snapshot::Postgres(b.snapshot().await?),
        })
    }

    /// A write transaction to import rows in.
    async fn begin_import(&self) -> Result<Import, StoreError> {
        Ok(match &self.backend {
            Backend::Sqlite(b) => Import::Sqlite(b.begin_write().await?),
            Backend::Postgres(b) => Import::Postgres(b.begin_write().await?),
        })
    }
}
