//! Ticket texts: kept apart from the decision log, one row per ticket, for the retention
//! period; the texts kept with corrections are purged with them.

use chrono::{DateTime, Utc};

use super::{Db, WriteTx};
use crate::store::{Stamp, StoreError};

/// Keeps a ticket's text (the newest one, when a ticket is routed again).
pub(super) async fn keep(
    tx: &mut WriteTx,
    ticket_id: &str,
    (subject, body): (&Option<String>, &str),
    at: Stamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ticket_texts (ticket_id, subject, body, stored_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (ticket_id) DO UPDATE SET subject = excluded.subject, body = excluded.body, \
         stored_at = excluded.stored_at",
    )
    .bind(ticket_id)
    .bind(subject)
    .bind(body)
    .bind(at)
    .execute(tx.conn())
    .await?;
    Ok(())
}

impl Db {
    pub(in crate::store) async fn purge_texts(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM ticket_texts WHERE stored_at < $1")
            .bind(Stamp(cutoff))
            .execute(tx.conn())
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE feedback SET subject = NULL, body = NULL WHERE body IS NOT NULL AND created_at < $1",
        )
        .bind(Stamp(cutoff))
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    pub(in crate::store) async fn erase_ticket(
        &self,
        ticket_id: &str,
    ) -> Result<std::collections::BTreeMap<&'static str, u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut removed = std::collections::BTreeMap::new();
        // Rows keyed by the ticket's decisions first, then the ticket's own rows.
        let by_decision = [
            ("assignments", "DELETE FROM assignments WHERE decision_id IN (SELECT decision_id FROM decisions WHERE ticket_id = $1)"),
            ("shadow_results", "DELETE FROM shadow_results WHERE decision_id IN (SELECT decision_id FROM decisions WHERE ticket_id = $1)"),
            ("idempotency_keys", "DELETE FROM idempotency_keys WHERE EXISTS (SELECT 1 FROM decisions d WHERE d.ticket_id = $1 \
              AND idempotency_keys.response LIKE '%\"decision_id\":\"' || d.decision_id || '\"%')"),
            ("decisions", "DELETE FROM decisions WHERE ticket_id = $1"),
            ("ticket_texts", "DELETE FROM ticket_texts WHERE ticket_id = $1"),
            ("feedback", "DELETE FROM feedback WHERE ticket_id = $1"),
        ];
        for (kind, sql) in by_decision {
            let n = sqlx::query(sql)
                .bind(ticket_id)
                .execute(tx.conn())
                .await?
                .rows_affected();
            removed.insert(kind, n);
        }
        tx.commit().await?;
        Ok(removed)
    }
}
