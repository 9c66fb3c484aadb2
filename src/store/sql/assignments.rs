//! Assignments and the per-team round-robin cursor. A routing transaction first locks the rows
//! of the teams it assigns in (`lock_team`, in name order), so least-loaded picks of two
//! replicas never read the same loads; round-robin takes its turn with one atomic update.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{time, time_opt, Db, Row, WriteTx};
use crate::store::{Assignment, Stamp, StoreError};

fn assignment_row(r: &Row) -> Result<Assignment, StoreError> {
    Ok(Assignment {
        decision_id: r.get("decision_id"),
        team: r.get("team"),
        agent: r.get("agent"),
        opened_at: time(r, "opened_at")?,
        closed_at: time_opt(r, "closed_at")?,
        closed_by: r.get("closed_by"),
    })
}

/// Locks the team's cursor row (creating it) until the transaction ends.
pub(super) async fn lock_team(tx: &mut WriteTx, team: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO round_robin (team, next_index) VALUES ($1, 0) \
         ON CONFLICT (team) DO UPDATE SET next_index = round_robin.next_index RETURNING next_index",
    )
    .bind(team)
    .fetch_one(tx.conn())
    .await?;
    Ok(())
}

/// Closes the teams' assignments opened before `cutoff`.
pub(super) async fn expire(
    tx: &mut WriteTx,
    teams: &BTreeSet<String>,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
) -> Result<(), StoreError> {
    for team in teams {
        sqlx::query(
            "UPDATE assignments SET closed_at = $1, closed_by = 'expired' \
             WHERE team = $2 AND closed_at IS NULL AND opened_at < $3",
        )
        .bind(Stamp(now))
        .bind(team)
        .bind(Stamp(cutoff))
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// The team's round-robin cursor, moved one on in the same statement.
pub(super) async fn take_turn(tx: &mut WriteTx, team: &str) -> Result<usize, StoreError> {
    let turn: i64 = sqlx::query(
        "INSERT INTO round_robin (team, next_index) VALUES ($1, 1) \
         ON CONFLICT (team) DO UPDATE SET next_index = round_robin.next_index + 1 \
         RETURNING next_index - 1",
    )
    .bind(team)
    .fetch_one(tx.conn())
    .await?
    .get(0);
    Ok(usize::try_from(turn).unwrap_or(0))
}

/// Open assignments per agent of the team.
pub(super) async fn open_loads(
    tx: &mut WriteTx,
    team: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT agent, COUNT(*) FROM assignments WHERE team = $1 AND closed_at IS NULL GROUP BY agent",
    )
    .bind(team)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Records that `agent` of `team` has the decision's ticket.
pub(super) async fn open(
    tx: &mut WriteTx,
    decision_id: &str,
    team: &str,
    agent: &str,
    at: Stamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO assignments (decision_id, team, agent, opened_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(decision_id)
    .bind(team)
    .bind(agent)
    .bind(at)
    .execute(tx.conn())
    .await?;
    Ok(())
}

impl Db {
    pub(in crate::store) async fn assignments(
        &self,
        team: Option<&str>,
        open_only: bool,
        limit: i64,
    ) -> Result<Vec<Assignment>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM assignments WHERE ($1 IS NULL OR team = $1) AND (NOT $2 OR closed_at IS NULL) \
             ORDER BY opened_at DESC, decision_id DESC LIMIT $3",
        )
        .bind(team)
        .bind(open_only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_row).collect()
    }

    pub(in crate::store) async fn close_assignment(
        &self,
        decision_id: &str,
        by: &str,
    ) -> Result<Assignment, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE assignments SET closed_at = $1, closed_by = $2 WHERE decision_id = $3 AND closed_at IS NULL",
        )
        .bind(Stamp(crate::store::now()))
        .bind(by)
        .bind(decision_id)
        .execute(tx.conn())
        .await?;
        let row = sqlx::query("SELECT * FROM assignments WHERE decision_id = $1")
            .bind(decision_id)
            .fetch_optional(tx.conn())
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("decision {decision_id} assigned no agent"))
            })?;
        let closed = assignment_row(&row)?;
        tx.commit().await?;
        Ok(closed)
    }
}
