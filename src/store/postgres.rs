//! The PostgreSQL backend, for several replicas on one database: a connection pool, plain
//! transactions (the shared SQL's conflicts, atomic updates and row locks hold the invariants
//! across processes), TIMESTAMPTZ times, and migrations that `sqlx` runs under an advisory
//! lock, so replicas starting together migrate once.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgListener, PgPoolOptions, PgTypeInfo, PgValueRef,
};
use sqlx::{Connection, Decode, Encode, PgConnection, PgPool, Postgres, Type};

use tokio::sync::mpsc::Receiver;

use super::{Connect, Stamp, StoreError, Topic, CHANGES};

// The shared SQL, compiled for this backend (as for the other one: on purpose).
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

pub(super) use sql::{DecisionLog, DecisionTx, Snapshot, WriteTx};

/// How a read of one snapshot begins: every statement of a repeatable-read transaction sees the
/// database as it was at its first.
const SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// How a claim skips rows another replica's claim holds (instead of waiting for them).
const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";

/// The `sqlx` database the shared SQL runs on.
type Engine = Postgres;

/// This backend's migrations.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// A PostgreSQL database.
pub(super) struct Db {
    pool: PgPool,
    opts: PgConnectOptions,
}

impl std::fmt::Debug for Db {
    /// Without the connection options: they hold the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// A session advisory lock and the connection that holds it (closing it releases the lock).
#[derive(Debug)]
pub(super) struct Held(PgConnection);

impl Held {
    /// Whether its connection still answers within 5 s (the lock lives as long as it does).
    pub(super) async fn alive(&mut self) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&mut self.0);
        matches!(
            tokio::time::timeout(Duration::from_secs(5), ping).await,
            Ok(Ok(_))
        )
    }
}

impl Db {
    /// Connects and migrates.
    pub(super) async fn open(url: &str, how: &Connect) -> Result<Self, StoreError> {
        let mut opts = PgConnectOptions::from_str(url)?.application_name("intent-router");
        if let Some(password) = &how.password {
            opts = opts.password(password);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await?;
        let db = Self { pool, opts };
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        // The table is sqlx's, made under its advisory lock by `run`; before that, version 0.
        let made: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&db.pool)
            .await?;
        let found = if made { db.schema_version().await? } else { 0 };
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        MIGRATOR.run(&db.pool).await?;
        Ok(db)
    }

    /// Starts a write transaction.
    pub(super) async fn begin_write(&self) -> Result<sql::WriteTx, StoreError> {
        Ok(sql::WriteTx {
            tx: self.pool.begin().await?,
            _queue: None,
        })
    }

    /// PostgreSQL checks its own pages; this answers whether the server does.
    pub(super) async fn integrity_check(&self) -> Result<String, StoreError> {
        self.ping().await?;
        Ok("ok".into())
    }
}

impl sql::WriteTx {
    /// Announces a change to every replica when this transaction commits.
    pub(in crate::store) async fn announce(&mut self, topic: Topic) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES)
            .bind(topic.name())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Waits until no other transaction changes what serves (the rules or the active model),
    /// and holds that until this one ends; what it reads afterwards includes their changes.
    pub(in crate::store) async fn serialize_serving_changes(&mut self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            // "intent-router serving", as a number.
            .bind(0x6972_7365_7276_i64)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Db {
    /// Takes the advisory lock `key` on a new connection, if no session holds it.
    pub(super) async fn try_lock(&self, key: i64) -> Result<Option<Held>, StoreError> {
        let mut conn = PgConnection::connect_with(&self.opts).await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        Ok(taken.then_some(Held(conn)))
    }

    /// Listens for changes on a connection of its own, forwarding them until the receiver or
    /// the pool goes; a lost connection is re-established (with a growing pause, up to 30 s)
    /// and reported as `None` (changes may have been missed meanwhile).
    pub(super) async fn changes(&self) -> Result<Receiver<Option<Topic>>, StoreError> {
        let mut listener = listen(&self.pool).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_secs(1);
            loop {
                let heard = match listener.try_recv().await {
                    Ok(Some(n)) => match Topic::parse(n.payload()) {
                        Ok(topic) => Some(topic),
                        Err(_) => continue,
                    },
                    // The connection dropped and came back: changes may have been missed.
                    Ok(None) => None,
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => {
                        tracing::warn!(
                            "change notifications lost ({e}); reconnecting in {pause:?}"
                        );
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(30));
                        match listen(&pool).await {
                            Ok(again) => listener = again,
                            Err(_) => continue,
                        }
                        None
                    }
                };
                pause = Duration::from_secs(1);
                if tx.send(heard).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// A listener on the changes channel.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANGES).await?;
    Ok(listener)
}

impl Type<Postgres> for Stamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Stamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Stamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Stamp(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}
