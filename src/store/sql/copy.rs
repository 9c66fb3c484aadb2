//! Rows of any table as cells of their kinds, read in key order and written as they are (the
//! copy from one database to another, `store/copy.rs`).

use sqlx::Row as _;

use super::{Db, Engine, Row, WriteTx};
use crate::store::copy::{Cell, Kind, Table};
use crate::store::{Stamp, StoreError};

fn cell(r: &Row, i: usize, kind: Kind, col: &str) -> Result<Cell, StoreError> {
    let bad = |e: sqlx::Error| StoreError::Corrupt(format!("{col}: {e}"));
    Ok(match kind {
        Kind::Text => Cell::Text(r.try_get(i).map_err(bad)?),
        Kind::Int => Cell::Int(r.try_get(i).map_err(bad)?),
        Kind::Real => Cell::Real(r.try_get(i).map_err(bad)?),
        Kind::Bool => Cell::Bool(r.try_get(i).map_err(bad)?),
        Kind::Time => Cell::Time(r.try_get::<Option<Stamp>, _>(i).map_err(bad)?.map(|s| s.0)),
        Kind::Bytes => Cell::Bytes(r.try_get(i).map_err(bad)?),
    })
}

fn names(t: &Table) -> String {
    t.columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {
    pub(in crate::store) async fn count_rows(&self, t: &Table) -> Result<i64, StoreError> {
        Ok(sqlx::query(&format!("SELECT COUNT(*) FROM {}", t.name))
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    /// A read transaction that sees one snapshot of the whole database.
    pub(in crate::store) async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            tx: self.pool.begin_with(super::super::SNAPSHOT).await?,
        })
    }
}

/// The copy's source: every read sees the database as it was at the first one.
pub(in crate::store) struct Snapshot {
    tx: sqlx::Transaction<'static, Engine>,
}

impl Snapshot {
    /// Up to `limit` rows of `t` in key order, after the row whose key is `after` (from the
    /// first row when `None`).
    pub(in crate::store) async fn rows(
        &mut self,
        t: &Table,
        after: Option<&[Cell]>,
        limit: i64,
    ) -> Result<Vec<Vec<Cell>>, StoreError> {
        let key = t.key.join(", ");
        let (filter, limit_mark) = match after {
            None => (String::new(), 1),
            Some(k) => {
                let marks: Vec<String> = (1..=k.len()).map(|i| format!("${i}")).collect();
                (
                    format!("WHERE ({key}) > ({})", marks.join(", ")),
                    k.len() + 1,
                )
            }
        };
        let sql = format!(
            "SELECT {} FROM {} {filter} ORDER BY {key} LIMIT ${limit_mark}",
            names(t),
            t.name,
        );
        let mut q = sqlx::query(&sql);
        for c in after.unwrap_or_default() {
            q = bind(q, c);
        }
        let rows = q.bind(limit).fetch_all(&mut *self.tx).await?;
        rows.iter()
            .map(|r| {
                t.columns
                    .iter()
                    .enumerate()
                    .map(|(i, (col, kind))| cell(r, i, *kind, col))
                    .collect()
            })
            .collect()
    }
}

/// Binds one cell as its kind.
fn bind<'q>(
    q: sqlx::query::Query<'q, Engine, <Engine as sqlx::Database>::Arguments<'q>>,
    c: &Cell,
) -> sqlx::query::Query<'q, Engine, <Engine as sqlx::Database>::Arguments<'q>> {
    match c {
        Cell::Text(v) => q.bind(v.clone()),
        Cell::Int(v) => q.bind(*v),
        Cell::Real(v) => q.bind(*v),
        Cell::Bool(v) => q.bind(*v),
        Cell::Time(v) => q.bind(v.map(Stamp)),
        Cell::Bytes(v) => q.bind(v.clone()),
    }
}

impl WriteTx {
    /// Inserts rows of `t` as they were read.
    pub(in crate::store) async fn insert_rows(
        &mut self,
        t: &Table,
        rows: &[Vec<Cell>],
    ) -> Result<(), StoreError> {
        let marks: Vec<String> = (1..=t.columns.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            t.name,
            names(t),
            marks.join(", ")
        );
        for row in rows {
            let mut q = sqlx::query(&sql);
            for c in row {
                q = bind(q, c);
            }
            q.execute(self.conn()).await?;
        }
        Ok(())
    }
}
