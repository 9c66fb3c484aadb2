//! Incidents: the ones the detector opened (their state for linking as JSON), the decisions
//! linked to them, and the routed tickets with their embeddings as the detector reads them.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{json, time, Db, Row, WriteTx};
use crate::incident::track::LinkedBy;
use crate::incident::TrackedIncident;
use crate::store::{
    DetectorRow, IncidentLink, IncidentStatus, Stamp, StoreError, StoredIncident, Topic,
};

const INCIDENT: &str = "SELECT status, updated_at, detection, tracked FROM incidents";

fn incident_row(r: &Row) -> Result<StoredIncident, StoreError> {
    Ok(StoredIncident {
        tracked: json(r, "tracked")?,
        status: IncidentStatus::parse(r.get("status"))?,
        detection: json(r, "detection")?,
        updated_at: time(r, "updated_at")?,
    })
}

fn link_row(r: &Row) -> Result<IncidentLink, StoreError> {
    let by: String = r.get("linked_by");
    Ok(IncidentLink {
        decision_id: r.get("decision_id"),
        incident_id: r.get("incident_id"),
        linked_at: time(r, "linked_at")?,
        probability: r.get("probability"),
        similarity: r.get::<f64, _>("similarity") as f32,
        linked_by: serde_json::from_value(serde_json::Value::String(by.clone()))
            .map_err(|_| StoreError::Corrupt(format!("incident link by {by:?}")))?,
        reason: r.get("reason"),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("an incident serialises. This is a bug.")
}

/// The stored name of how a ticket was linked.
fn by_name(by: LinkedBy) -> &'static str {
    match by {
        LinkedBy::Routing => "routing",
        LinkedBy::Detection => "detection",
        LinkedBy::Person => "person",
    }
}

/// Links a decision to an incident, unless it is linked already (the first link stays) or
/// gone (erased since it was read).
pub(super) async fn link(tx: &mut WriteTx, l: &IncidentLink) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incident_links (decision_id, incident_id, linked_at, probability, similarity, linked_by, reason) \
         SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM decisions WHERE decision_id = $1) \
         ON CONFLICT (decision_id) DO NOTHING",
    )
    .bind(&l.decision_id)
    .bind(&l.incident_id)
    .bind(Stamp(l.linked_at))
    .bind(l.probability)
    .bind(f64::from(l.similarity))
    .bind(by_name(l.linked_by))
    .bind(&l.reason)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Keeps a decision's embedding.
pub(super) async fn keep_vector(
    tx: &mut WriteTx,
    decision_id: &str,
    vector: &[u8],
    at: Stamp,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO ticket_vectors (decision_id, vector, stored_at) VALUES ($1, $2, $3)")
        .bind(decision_id)
        .bind(vector)
        .bind(at)
        .execute(tx.conn())
        .await?;
    Ok(())
}

impl Db {
    pub(in crate::store) async fn detector_rows(
        &self,
        after: DateTime<Utc>,
        after_id: &str,
        limit: i64,
    ) -> Result<Vec<DetectorRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.decision_id, d.decided_at, d.intent, d.language, d.model_version, v.vector, l.incident_id \
             FROM decisions d LEFT JOIN ticket_vectors v ON v.decision_id = d.decision_id \
             LEFT JOIN incident_links l ON l.decision_id = d.decision_id \
             WHERE d.decided_at >= $1 AND (d.decided_at, d.decision_id) > ($1, $2) \
             ORDER BY d.decided_at, d.decision_id LIMIT $3",
        )
        .bind(Stamp(after))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DetectorRow {
                    decision_id: r.get("decision_id"),
                    decided_at: time(r, "decided_at")?,
                    intent: r.get("intent"),
                    language: r.get("language"),
                    model_version: r.get("model_version"),
                    vector: r.get("vector"),
                    incident_id: r.get("incident_id"),
                })
            })
            .collect()
    }

    pub(in crate::store) async fn open_incident(
        &self,
        i: &StoredIncident,
        links: &[IncidentLink],
    ) -> Result<(), StoreError> {
        let t = &i.tracked;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO incidents (id, intent, language, status, opened_at, last_at, updated_at, detection, tracked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&t.id)
        .bind(&t.intent)
        .bind(&t.language)
        .bind(i.status.name())
        .bind(Stamp(t.opened_at))
        .bind(Stamp(t.last_at))
        .bind(Stamp(i.updated_at))
        .bind(to_json(&i.detection))
        .bind(to_json(t))
        .execute(tx.conn())
        .await?;
        for l in links {
            link(&mut tx, l).await?;
        }
        tx.announce(Topic::Incidents).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn update_incident(
        &self,
        t: &TrackedIncident,
        links: &[IncidentLink],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE incidents SET last_at = $2, updated_at = $3, tracked = $4 WHERE id = $1",
        )
        .bind(&t.id)
        .bind(Stamp(t.last_at))
        .bind(Stamp(crate::store::now()))
        .bind(to_json(t))
        .execute(tx.conn())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("no incident {}", t.id)));
        }
        for l in links {
            link(&mut tx, l).await?;
        }
        tx.announce(Topic::Incidents).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn live_incidents(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<StoredIncident>, StoreError> {
        let rows = sqlx::query(&format!(
            "{INCIDENT} WHERE status IN ('open', 'acknowledged') AND last_at >= $1 ORDER BY opened_at, id"
        ))
        .bind(Stamp(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(incident_row).collect()
    }

    pub(in crate::store) async fn incidents(
        &self,
        status: Option<IncidentStatus>,
        limit: i64,
    ) -> Result<Vec<(StoredIncident, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.status, i.updated_at, i.detection, i.tracked, \
             (SELECT COUNT(*) FROM incident_links l WHERE l.incident_id = i.id) AS tickets \
             FROM incidents i WHERE $1 IS NULL OR i.status = $1 \
             ORDER BY i.opened_at DESC, i.id DESC LIMIT $2",
        )
        .bind(status.map(IncidentStatus::name))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((incident_row(r)?, r.get::<i64, _>("tickets"))))
            .collect()
    }

    pub(in crate::store) async fn set_incident_status(
        &self,
        id: &str,
        status: IncidentStatus,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE incidents SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(status.name())
            .bind(Stamp(crate::store::now()))
            .execute(tx.conn())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("no incident {id}")));
        }
        tx.announce(Topic::Incidents).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn incident(&self, id: &str) -> Result<StoredIncident, StoreError> {
        let row = sqlx::query(&format!("{INCIDENT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no incident {id}")))?;
        incident_row(&row)
    }

    pub(in crate::store) async fn incident_links(
        &self,
        incident_id: &str,
    ) -> Result<Vec<IncidentLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT decision_id, incident_id, linked_at, probability, similarity, linked_by, reason \
             FROM incident_links WHERE incident_id = $1 ORDER BY linked_at, decision_id",
        )
        .bind(incident_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_row).collect()
    }
}
