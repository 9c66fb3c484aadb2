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
use sqlx::postgres::{PgArgumentBuffer, PgConnectOptions, PgPoolOptions, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, PgPool, Postgres, Type};

use super::{Connect, Stamp, StoreError};

// The shared SQL, compiled for this backend (as for the other one: on purpose).
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

pub(super) use sql::{DecisionLog, DecisionTx};

/// The `sqlx` database the shared SQL runs on.
type Engine = Postgres;

/// This backend's migrations.
static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// A PostgreSQL database.
#[derive(Debug)]
pub(super) struct Db {
    pool: PgPool,
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
            .connect_with(opts)
            .await?;
        let db = Self { pool };
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
             success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)",
        )
        .execute(&db.pool)
        .await?;
        let found = db.schema_version().await?;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        MIGRATOR.run(&db.pool).await?;
        Ok(db)
    }

    /// Starts a write transaction.
    async fn begin_write(&self) -> Result<sql::WriteTx, StoreError> {
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
