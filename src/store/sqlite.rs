//! The SQLite backend: one file, WAL, `synchronous = FULL` (an acknowledged write survives a
//! crash). Write transactions start with `BEGIN IMMEDIATE`, which takes the database's write
//! lock at once, so every read-modify-write holds however many processes open the file; this
//! process's writers also queue on an async lock first, so that they wait in order instead of
//! polling SQLite's busy handler. Times are fixed-width RFC 3339 text. A database made before
//! the migrations moved to `sqlx::migrate!` (its own `schema_migrations` table) is adopted in
//! place, and that table is kept up to date so that an older release refuses a newer database.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteArgumentValue, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    SqliteSynchronous, SqliteTypeInfo, SqliteValueRef,
};
use sqlx::{Decode, Encode, Row, Sqlite, SqlitePool, Type};
use tokio::sync::Mutex;

use super::{Stamp, StoreError, Topic};

// The shared SQL, compiled for this backend (as for the other one: on purpose).
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

pub(super) use sql::{DecisionLog, DecisionTx, Snapshot, WriteTx};

/// How a read of one snapshot begins: in WAL mode a deferred transaction reads the database as
/// it was at its first read until it ends.
const SNAPSHOT: &str = "BEGIN DEFERRED";

/// How a claim skips rows another transaction holds: nothing to add, as SQLite's write
/// transactions take turns.
const SKIP_LOCKED: &str = "";

/// The `sqlx` database the shared SQL runs on.
type Engine = Sqlite;

/// This backend's migrations.
static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// An SQLite database.
#[derive(Debug)]
pub(super) struct Db {
    pool: SqlitePool,
    queue: Arc<Mutex<()>>,
}

impl Db {
    /// Opens (creating) the file and migrates it.
    pub(super) async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Deleted rows (purged texts, erased tickets) are overwritten, not left in free
            // pages of the file.
            .pragma("secure_delete", "ON")
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let db = Self {
            pool,
            queue: Arc::new(Mutex::new(())),
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Starts a write transaction (after this process's earlier writers).
    pub(super) async fn begin_write(&self) -> Result<sql::WriteTx, StoreError> {
        let queue = self.queue.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(sql::WriteTx {
            tx,
            _queue: Some(queue),
        })
    }

    /// SQLite's integrity check: `ok` when the file is consistent.
    pub(super) async fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let _queue = self.queue.lock().await;
        self.adopt_legacy().await?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let found = self.schema_version().await?;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        MIGRATOR.run(&self.pool).await?;
        // Older releases read `schema_migrations`: they must see this schema and refuse it.
        sqlx::raw_sql(
            "INSERT INTO schema_migrations (version, applied_at) \
             SELECT version, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM _sqlx_migrations WHERE success \
             ON CONFLICT (version) DO NOTHING",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks the migrations a database of an earlier release applied through its own table as
    /// applied in `sqlx`'s (same SQL, so the same schema); creates both tables when missing.
    async fn adopt_legacy(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let has_sqlx: bool = sqlx::query(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL); \
             CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
             checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        if !has_sqlx {
            let legacy: i64 =
                sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                    .fetch_one(&mut *tx)
                    .await?
                    .get(0);
            for m in MIGRATOR.iter().filter(|m| m.version <= legacy) {
                sqlx::query(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES ($1, $2, TRUE, $3, 0)",
                )
                .bind(m.version)
                .bind(&*m.description)
                .bind(&*m.checksum)
                .execute(&mut *tx)
                .await?;
            }
            if legacy > 0 {
                tracing::info!(version = legacy, "adopted the database's schema history");
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

impl sql::WriteTx {
    /// One process per SQLite database: there is nobody to tell.
    pub(in crate::store) async fn announce(&mut self, _topic: Topic) -> Result<(), StoreError> {
        Ok(())
    }

    /// SQLite's write transactions take the database's one write lock from their start: they
    /// are serialised already.
    pub(in crate::store) async fn serialize_serving_changes(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Type<Sqlite> for Stamp {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Stamp {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Stamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Stamp::parse(<&str as Decode<Sqlite>>::decode(value)?)?)
    }
}
