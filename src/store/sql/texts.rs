//! What is kept of a ticket for the retention period: its text, customer facts and helpdesk
//! fields, one row per ticket apart from the decision log; purged together, with the texts kept
//! with corrections. Erasure removes everything about a ticket and records that it was erased.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{Db, Row, WriteTx};
use crate::store::{KeptTicket, Stamp, StoreError, Topic};
use crate::ticket::Customer;

/// The columns [`kept`] reads, for a join on `ticket_texts t`.
pub(super) const KEPT_COLUMNS: &str = "t.subject, t.body, t.customer_tier, t.fields";

/// What is kept of a ticket, from the [`KEPT_COLUMNS`] starting at column `at` (`None` when the
/// join found no row).
pub(super) fn kept(row: &Row, at: usize) -> Result<Option<KeptTicket>, StoreError> {
    let Some(body) = row.get::<Option<String>, _>(at + 1) else {
        return Ok(None);
    };
    let fields = row
        .get::<Option<String>, _>(at + 3)
        .map(|f| serde_json::from_str(&f))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("kept ticket fields: {e}")))?;
    Ok(Some(KeptTicket {
        subject: row.get(at),
        body,
        customer: Customer {
            tier: row.get(at + 2),
        },
        fields,
    }))
}

/// Keeps what is kept of a ticket (the newest, when a ticket is routed again).
pub(super) async fn keep(
    tx: &mut WriteTx,
    ticket_id: &str,
    k: &KeptTicket,
    at: Stamp,
) -> Result<(), StoreError> {
    let fields = k
        .fields
        .as_ref()
        .map(|f| serde_json::to_string(f).expect("JSON values serialise. This is a bug."));
    sqlx::query(
        "INSERT INTO ticket_texts (ticket_id, subject, body, customer_tier, fields, stored_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (ticket_id) DO UPDATE SET subject = excluded.subject, body = excluded.body, \
         customer_tier = excluded.customer_tier, fields = excluded.fields, stored_at = excluded.stored_at",
    )
    .bind(ticket_id)
    .bind(&k.subject)
    .bind(&k.body)
    .bind(&k.customer.tier)
    .bind(fields)
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
        // Embeddings are kept as long as texts (they are the text's meaning); the incidents
        // whose tickets' embeddings go compute their centroids again from the ones left.
        sqlx::query(
            "UPDATE incidents SET remodel = remodel + 1 WHERE id IN (SELECT l.incident_id FROM incident_links l \
             JOIN ticket_vectors v ON v.decision_id = l.decision_id WHERE v.stored_at < $1)",
        )
        .bind(Stamp(cutoff))
        .execute(tx.conn())
        .await?;
        sqlx::query("DELETE FROM ticket_vectors WHERE stored_at < $1")
            .bind(Stamp(cutoff))
            .execute(tx.conn())
            .await?;
        sqlx::query(
            "UPDATE feedback SET subject = NULL, body = NULL WHERE body IS NOT NULL AND created_at < $1",
        )
        .bind(Stamp(cutoff))
        .execute(tx.conn())
        .await?;
        // A connector's event keeps its ticket only until processed; one given up keeps it for
        // a retry, as long as texts are kept.
        sqlx::query(
            "UPDATE inbox SET ticket = NULL, context = NULL WHERE ticket IS NOT NULL AND state <> 'pending' AND received_at < $1",
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
        // Rows keyed by the ticket's decisions first (an idempotency key loses only this
        // ticket's decisions, and goes when it has none left), then the ticket's own rows.
        let steps = [
            // The keys this ticket's decisions answered, locked first: of two erasures of a
            // batch's tickets at once, the second then sees the first's and drops the key.
            (None, "UPDATE idempotency_keys SET batch = batch WHERE key IN (SELECT m.key FROM idempotency_decisions m \
              JOIN decisions d ON d.decision_id = m.decision_id WHERE d.ticket_id = $1)"),
            (None, "DELETE FROM idempotency_keys WHERE EXISTS (SELECT 1 FROM idempotency_decisions m \
              JOIN decisions d ON d.decision_id = m.decision_id WHERE m.key = idempotency_keys.key AND d.ticket_id = $1) \
              AND NOT EXISTS (SELECT 1 FROM idempotency_decisions m JOIN decisions d ON d.decision_id = m.decision_id \
              WHERE m.key = idempotency_keys.key AND d.ticket_id <> $1)"),
            (Some("idempotency_keys"), "DELETE FROM idempotency_decisions WHERE decision_id IN (SELECT decision_id FROM decisions WHERE ticket_id = $1)"),
            (Some("assignments"), "DELETE FROM assignments WHERE decision_id IN (SELECT decision_id FROM decisions WHERE ticket_id = $1)"),
            (Some("shadow_results"), "DELETE FROM shadow_results WHERE decision_id IN (SELECT decision_id FROM decisions WHERE ticket_id = $1)"),
            // The incidents this ticket was part of compute their centroids again without it.
            (None, "UPDATE incidents SET remodel = remodel + 1 WHERE id IN (SELECT l.incident_id FROM incident_links l \
              JOIN decisions d ON d.decision_id = l.decision_id WHERE d.ticket_id = $1)"),
            (Some("ticket_vectors"), "DELETE FROM ticket_vectors WHERE decision_id IN (SELECT decision_id FROM decisions WHERE ticket_id = $1)"),
            (Some("incident_links"), "DELETE FROM incident_links WHERE decision_id IN (SELECT decision_id FROM decisions WHERE ticket_id = $1)"),
            (Some("incident_unlinks"), "DELETE FROM incident_unlinks WHERE decision_id IN (SELECT decision_id FROM decisions WHERE ticket_id = $1)"),
            (Some("decisions"), "DELETE FROM decisions WHERE ticket_id = $1"),
            (Some("ticket_texts"), "DELETE FROM ticket_texts WHERE ticket_id = $1"),
            (Some("feedback"), "DELETE FROM feedback WHERE ticket_id = $1"),
            (Some("connector_events"), "DELETE FROM inbox WHERE ticket_id = $1"),
            (Some("write_backs"), "DELETE FROM outbox WHERE ticket_id = $1"),
        ];
        for (kind, sql) in steps {
            let n = sqlx::query(sql)
                .bind(ticket_id)
                .execute(tx.conn())
                .await?
                .rows_affected();
            if let Some(kind) = kind {
                removed.insert(kind, n);
            }
        }
        if removed.values().any(|n| *n > 0) {
            sqlx::query(
                "INSERT INTO erasures (ticket_id, erased_at) VALUES ($1, $2) \
                 ON CONFLICT (ticket_id) DO UPDATE SET erased_at = excluded.erased_at",
            )
            .bind(ticket_id)
            .bind(Stamp(crate::store::now()))
            .execute(tx.conn())
            .await?;
            tx.announce(Topic::Erasures).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    pub(in crate::store) async fn erased_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT ticket_id, erased_at FROM erasures WHERE erased_at >= $1 ORDER BY erased_at",
        )
        .bind(Stamp(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.get(0), super::time(r, "erased_at")?)))
            .collect()
    }

    pub(in crate::store) async fn purge_erasures(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.purge(&["DELETE FROM erasures WHERE erased_at < $1"], cutoff)
            .await
    }
}
