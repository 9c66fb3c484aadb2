//! Rows of any table as cells of their kinds, read in key order and written as they are (the
//! copy from one database to another, `store/copy.rs`).

use sqlx::Row as _;

use super::{Db, Row, WriteTx};
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

    pub(in crate::store) async fn export_rows(
        &self,
        t: &Table,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Vec<Cell>>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {} LIMIT $1 OFFSET $2",
            names(t),
            t.name,
            t.key
        );
        let rows = sqlx::query(&sql)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
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
                q = match c {
                    Cell::Text(v) => q.bind(v.clone()),
                    Cell::Int(v) => q.bind(*v),
                    Cell::Real(v) => q.bind(*v),
                    Cell::Bool(v) => q.bind(*v),
                    Cell::Time(v) => q.bind(v.map(Stamp)),
                };
            }
            q.execute(self.conn()).await?;
        }
        Ok(())
    }
}
