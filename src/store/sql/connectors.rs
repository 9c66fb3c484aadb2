//! The connectors' inbox and outbox, and the rate windows of write-backs. A claim pushes a
//! row's `next_at` forward by a lease in one statement; on PostgreSQL the rows are picked with
//! `FOR UPDATE SKIP LOCKED`, so replicas claiming at once take different rows.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{time, time_opt, Db, Row};
use crate::store::connectors::{
    Delivery, EventKind, HttpCall, InboxEvent, InboxOutcome, InboxState, NewInboxEvent,
    NewWriteBack, OutboxState, QueueCounts, WriteBack,
};
use crate::store::{now, Stamp, StoreError};

fn inbox_row(r: &Row) -> Result<InboxEvent, StoreError> {
    Ok(InboxEvent {
        id: r.get("id"),
        connector: r.get("connector"),
        delivery_id: r.get("delivery_id"),
        kind: EventKind::parse(r.get("kind"))?,
        event_type: r.get("event_type"),
        ticket_id: r.get("ticket_id"),
        ticket: r.get("ticket"),
        context: r.get("context"),
        state: InboxState::parse(r.get("state"))?,
        attempts: r.get("attempts"),
        next_at: time(r, "next_at")?,
        received_at: time(r, "received_at")?,
        done_at: time_opt(r, "done_at")?,
        decision_id: r.get("decision_id"),
        error: r.get("error"),
    })
}

fn outbox_row(r: &Row) -> Result<WriteBack, StoreError> {
    let requests: Vec<HttpCall> = super::json(r, "requests")?;
    Ok(WriteBack {
        id: r.get("id"),
        connector: r.get("connector"),
        ticket_id: r.get("ticket_id"),
        decision_id: r.get("decision_id"),
        requests,
        context: r.get("context"),
        step: r.get("step"),
        state: OutboxState::parse(r.get("state"))?,
        attempts: r.get("attempts"),
        next_at: time(r, "next_at")?,
        created_at: time(r, "created_at")?,
        finished_at: time_opt(r, "finished_at")?,
        last_status: r.get("last_status"),
        last_error: r.get("last_error"),
    })
}

/// The claim of due pending rows of `table`: `$1` the lease's end, `$2` now, `$3` how many.
/// A row waits while an earlier pending row of the same connector and ticket exists (ids are
/// UUID v7: they sort by arrival), so a ticket's events are processed in order, on whichever
/// replica (a close never overtakes the creation it closes).
fn claim_sql(table: &str) -> String {
    format!(
        "UPDATE {table} SET next_at = $1, attempts = attempts + 1 WHERE id IN \
         (SELECT c.id FROM {table} c WHERE c.state = 'pending' AND c.next_at <= $2 \
          AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.connector = c.connector \
            AND e.ticket_id = c.ticket_id AND e.state = 'pending' AND e.id < c.id) \
          ORDER BY c.next_at, c.id LIMIT $3 {}) \
         RETURNING *",
        super::super::SKIP_LOCKED
    )
}

impl Db {
    pub(in crate::store) async fn insert_inbox(
        &self,
        e: &NewInboxEvent,
    ) -> Result<(String, bool), StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO inbox (id, connector, delivery_id, kind, event_type, ticket_id, ticket, context, state, next_at, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9) ON CONFLICT (connector, delivery_id) DO NOTHING",
        )
        .bind(&id)
        .bind(&e.connector)
        .bind(&e.delivery_id)
        .bind(e.kind.name())
        .bind(&e.event_type)
        .bind(&e.ticket_id)
        .bind(&e.ticket)
        .bind(&e.context)
        .bind(Stamp(e.received_at))
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1;
        let id = if inserted {
            id
        } else {
            sqlx::query_scalar("SELECT id FROM inbox WHERE connector = $1 AND delivery_id = $2")
                .bind(&e.connector)
                .bind(&e.delivery_id)
                .fetch_one(tx.conn())
                .await?
        };
        tx.commit_at("inbox.commit").await?;
        Ok((id, inserted))
    }

    pub(in crate::store) async fn claim_inbox(
        &self,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        self.claim("inbox", lease_until, limit)
            .await?
            .iter()
            .map(inbox_row)
            .collect()
    }

    /// Claims due rows of `table` until `lease_until` (an attempt counted), in id order.
    async fn claim(
        &self,
        table: &str,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Row>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut rows = sqlx::query(&claim_sql(table))
            .bind(Stamp(lease_until))
            .bind(Stamp(now()))
            .bind(limit)
            .fetch_all(tx.conn())
            .await?;
        tx.commit().await?;
        rows.sort_by_key(|r| r.get::<String, _>("id"));
        Ok(rows)
    }

    pub(in crate::store) async fn finish_inbox(
        &self,
        id: &str,
        claimed: DateTime<Utc>,
        outcome: &InboxOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let at = Stamp(now());
        let changed = match outcome {
            InboxOutcome::Done {
                decision_id,
                note,
                write_back,
            } => {
                let n = sqlx::query(
                    "UPDATE inbox SET state = 'done', ticket = NULL, context = NULL, done_at = $2, decision_id = $3, error = $4 \
                     WHERE id = $1 AND state = 'pending' AND next_at = $5",
                )
                .bind(id)
                .bind(at)
                .bind(decision_id)
                .bind(note)
                .bind(Stamp(claimed))
                .execute(tx.conn())
                .await?
                .rows_affected();
                if let (1, Some(w)) = (n, write_back) {
                    insert_write_back(&mut tx, w).await?;
                }
                n
            }
            InboxOutcome::Retry { at: next, error } => sqlx::query(
                "UPDATE inbox SET next_at = $2, error = $3 WHERE id = $1 AND state = 'pending' AND next_at = $4",
            )
            .bind(id)
            .bind(Stamp(*next))
            .bind(error)
            .bind(Stamp(claimed))
            .execute(tx.conn())
            .await?
            .rows_affected(),
            InboxOutcome::Failed { error } => sqlx::query(
                "UPDATE inbox SET state = 'failed', done_at = $2, error = $3 WHERE id = $1 AND state = 'pending' AND next_at = $4",
            )
            .bind(id)
            .bind(at)
            .bind(error)
            .bind(Stamp(claimed))
            .execute(tx.conn())
            .await?
            .rows_affected(),
        };
        if changed == 1 {
            tx.commit_at("inbox.finish").await
        } else {
            tx.commit().await
        }
    }

    pub(in crate::store) async fn claim_outbox(
        &self,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<WriteBack>, StoreError> {
        self.claim("outbox", lease_until, limit)
            .await?
            .iter()
            .map(outbox_row)
            .collect()
    }

    pub(in crate::store) async fn finish_write_back(
        &self,
        id: &str,
        claimed: DateTime<Utc>,
        d: &Delivery,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let finished = Some(Stamp(now()));
        // (state, step, next attempt, finished, status, error); `None` keeps the column.
        let (state, step, next, finished, status, error) = match d {
            Delivery::Postponed { at } => {
                // Not an attempt: the claim's count is taken back.
                sqlx::query(
                    "UPDATE outbox SET next_at = $2, attempts = attempts - 1 WHERE id = $1 AND state = 'pending' AND next_at = $3",
                )
                .bind(id)
                .bind(Stamp(*at))
                .bind(Stamp(claimed))
                .execute(tx.conn())
                .await?;
                return tx.commit().await;
            }
            Delivery::Delivered { step, status } => (
                OutboxState::Delivered,
                Some(*step),
                None,
                finished,
                Some(*status),
                None,
            ),
            Delivery::Retry {
                step,
                at,
                status,
                error,
            } => (
                OutboxState::Pending,
                Some(*step),
                Some(Stamp(*at)),
                None,
                *status,
                Some(error),
            ),
            Delivery::Superseded { status, error } => (
                OutboxState::Superseded,
                None,
                None,
                finished,
                Some(*status),
                Some(error),
            ),
            Delivery::Dead {
                step,
                status,
                error,
            } => (
                OutboxState::Dead,
                Some(*step),
                None,
                finished,
                *status,
                Some(error),
            ),
        };
        sqlx::query(
            "UPDATE outbox SET state = $2, step = COALESCE($3, step), next_at = COALESCE($4, next_at), \
             finished_at = $5, last_status = $6, last_error = $7 WHERE id = $1 AND state = 'pending' AND next_at = $8",
        )
        .bind(id)
        .bind(state.name())
        .bind(step)
        .bind(next)
        .bind(finished)
        .bind(status)
        .bind(error)
        .bind(Stamp(claimed))
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub(in crate::store) async fn retry_write_back(
        &self,
        connector: &str,
        id: &str,
        requests: Option<&[HttpCall]>,
    ) -> Result<Option<WriteBack>, StoreError> {
        let requests =
            requests.map(|r| serde_json::to_string(r).expect("requests serialise. This is a bug."));
        let mut tx = self.begin_write().await?;
        // New requests start from the first; the same ones go on where they stopped.
        let row = sqlx::query(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_at = $3, finished_at = NULL, \
             requests = COALESCE($4, requests), step = CASE WHEN $4 IS NULL THEN step ELSE 0 END \
             WHERE id = $1 AND connector = $2 AND state = 'dead' RETURNING *",
        )
        .bind(id)
        .bind(connector)
        .bind(Stamp(now()))
        .bind(requests)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        row.as_ref().map(outbox_row).transpose()
    }

    pub(in crate::store) async fn retry_inbox(
        &self,
        connector: &str,
        id: &str,
    ) -> Result<Option<InboxEvent>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE inbox SET state = 'pending', attempts = 0, next_at = $3, done_at = NULL \
             WHERE id = $1 AND connector = $2 AND state = 'failed' RETURNING *",
        )
        .bind(id)
        .bind(connector)
        .bind(Stamp(now()))
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        row.as_ref().map(inbox_row).transpose()
    }

    pub(in crate::store) async fn write_back(&self, id: &str) -> Result<WriteBack, StoreError> {
        let r = sqlx::query("SELECT * FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no write-back {id}")))?;
        outbox_row(&r)
    }

    pub(in crate::store) async fn inbox_event(&self, id: &str) -> Result<InboxEvent, StoreError> {
        let r = sqlx::query("SELECT * FROM inbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no event {id}")))?;
        inbox_row(&r)
    }

    pub(in crate::store) async fn write_backs(
        &self,
        connector: &str,
        state: Option<OutboxState>,
        limit: i64,
    ) -> Result<Vec<WriteBack>, StoreError> {
        sqlx::query(
            "SELECT * FROM outbox WHERE connector = $1 AND ($2 IS NULL OR state = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(connector)
        .bind(state.map(OutboxState::name))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(outbox_row)
        .collect()
    }

    pub(in crate::store) async fn inbox_events(
        &self,
        connector: &str,
        state: Option<InboxState>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        sqlx::query(
            "SELECT * FROM inbox WHERE connector = $1 AND ($2 IS NULL OR state = $2) \
             ORDER BY received_at DESC, id DESC LIMIT $3",
        )
        .bind(connector)
        .bind(state.map(InboxState::name))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(inbox_row)
        .collect()
    }

    pub(in crate::store) async fn queue_counts(
        &self,
        connector: &str,
    ) -> Result<QueueCounts, StoreError> {
        let r = sqlx::query(
            "SELECT \
             (SELECT COUNT(*) FROM inbox WHERE connector = $1 AND state = 'pending') AS inbox_pending, \
             (SELECT COUNT(*) FROM inbox WHERE connector = $1 AND state = 'failed') AS inbox_failed, \
             (SELECT COUNT(*) FROM outbox WHERE connector = $1 AND state = 'pending') AS outbox_pending, \
             (SELECT COUNT(*) FROM outbox WHERE connector = $1 AND state = 'dead') AS outbox_dead, \
             (SELECT COUNT(*) FROM outbox WHERE connector = $1 AND state = 'delivered') AS outbox_delivered, \
             (SELECT MAX(received_at) FROM inbox WHERE connector = $1) AS last_event_at",
        )
        .bind(connector)
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueCounts {
            inbox_pending: r.get("inbox_pending"),
            inbox_failed: r.get("inbox_failed"),
            outbox_pending: r.get("outbox_pending"),
            outbox_dead: r.get("outbox_dead"),
            outbox_delivered: r.get("outbox_delivered"),
            last_event_at: time_opt(&r, "last_event_at")?,
        })
    }

    pub(in crate::store) async fn take_rate(
        &self,
        key: &str,
        window_start: DateTime<Utc>,
        limit: i64,
        tokens: i64,
    ) -> Result<bool, StoreError> {
        let tokens = tokens.clamp(1, limit.max(1));
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO rate_windows (key, window_start, used) VALUES ($1, $2, $4) \
             ON CONFLICT (key) DO UPDATE SET \
             used = CASE WHEN rate_windows.window_start < excluded.window_start THEN excluded.used \
               ELSE rate_windows.used + excluded.used END, \
             window_start = CASE WHEN rate_windows.window_start < excluded.window_start \
               THEN excluded.window_start ELSE rate_windows.window_start END \
             WHERE rate_windows.window_start < excluded.window_start OR rate_windows.used + excluded.used <= $3 \
             RETURNING used",
        )
        .bind(key)
        .bind(Stamp(window_start))
        .bind(limit)
        .bind(tokens)
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row.is_some())
    }

    pub(in crate::store) async fn purge_connector_events(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.purge(
            &[
                "DELETE FROM outbox WHERE state <> 'pending' AND created_at < $1",
                "DELETE FROM inbox WHERE state <> 'pending' AND received_at < $1",
            ],
            cutoff,
        )
        .await
    }
}

/// Queues a write-back (once per connector and decision: a second is ignored).
async fn insert_write_back(tx: &mut super::WriteTx, w: &NewWriteBack) -> Result<(), StoreError> {
    let at = Stamp(now());
    let requests = serde_json::to_string(&w.requests).expect("requests serialise. This is a bug.");
    let state = if w.dead.is_some() {
        OutboxState::Dead
    } else {
        OutboxState::Pending
    };
    sqlx::query(
        "INSERT INTO outbox (id, connector, ticket_id, decision_id, requests, context, state, next_at, created_at, finished_at, last_error) \
         VALUES ($1, $2, $3, $4, $5, $10, $6, $7, $7, $8, $9) ON CONFLICT (connector, decision_id) DO NOTHING",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&w.connector)
    .bind(&w.ticket_id)
    .bind(&w.decision_id)
    .bind(requests)
    .bind(state.name())
    .bind(at)
    .bind(w.dead.as_ref().map(|_| at))
    .bind(&w.dead)
    .bind(&w.context)
    .execute(tx.conn())
    .await?;
    Ok(())
}
