//! Incidents: the ones the detector opened (their state for linking as JSON), the decisions
//! linked to them, and the routed tickets with their embeddings as the detector reads them.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{json, time, time_opt, Db, Row, WriteTx};
use crate::incident::report::LinkOutcome;
use crate::incident::track::LinkedBy;
use crate::incident::TrackedIncident;
use crate::store::incidents::{Alert, AlertBody, AlertOutcome, AlertState, SeriesRow};
use crate::store::{
    DetectorRow, IncidentLink, IncidentStatus, IncidentText, Stamp, StoreError, StoredIncident,
    Topic,
};

const INCIDENT: &str =
    "SELECT status, updated_at, detection, tracked, merged_into, split_from, remodel, alerted_tickets FROM incidents";

fn incident_row(r: &Row) -> Result<StoredIncident, StoreError> {
    Ok(StoredIncident {
        tracked: json(r, "tracked")?,
        status: IncidentStatus::parse(r.get("status"))?,
        detection: json(r, "detection")?,
        updated_at: time(r, "updated_at")?,
        merged_into: r.get("merged_into"),
        split_from: r.get("split_from"),
        remodel_marks: r.get("remodel"),
        alerted_tickets: r.get("alerted_tickets"),
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
        merged_from: r.get("merged_from"),
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

/// Links a decision to an incident, unless it is linked already (the first link stays), gone
/// (erased since it was read) or was unlinked from that incident by a person; to the one it
/// was merged into, if it was (remembering where from).
pub(super) async fn link(tx: &mut WriteTx, l: &IncidentLink) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO incident_links (decision_id, incident_id, linked_at, probability, similarity, linked_by, reason, merged_from) \
         SELECT $1, COALESCE(i.merged_into, $2), $3, $4, $5, $6, $7, CASE WHEN i.merged_into IS NULL THEN NULL ELSE $2 END \
         FROM incidents i WHERE i.id = $2 AND EXISTS (SELECT 1 FROM decisions WHERE decision_id = $1) \
         AND NOT EXISTS (SELECT 1 FROM incident_unlinks WHERE decision_id = $1 AND incident_id = $2) \
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

/// An intent's usual tickets: decisions `d` of intent `$1` (or under it), in language `$2`
/// (`NULL`: any), logged since `$3`, linked to no incident.
const USUAL: &str = "(d.intent = $1 OR substr(d.intent, 1, length($1) + 1) = $1 || '.') \
     AND ($2 IS NULL OR d.language = $2) AND d.decided_at >= $3 \
     AND NOT EXISTS (SELECT 1 FROM incident_links l WHERE l.decision_id = d.decision_id)";

/// The columns [`text_row`] reads, for decisions `d`, texts `t` and vectors `v`.
const TEXTS: &str = "SELECT d.decision_id, d.ticket_id, d.language, t.subject, t.body, v.vector";

fn text_row(r: &Row) -> IncidentText {
    IncidentText {
        decision_id: r.get("decision_id"),
        ticket_id: r.get("ticket_id"),
        language: r.get("language"),
        subject: r.get("subject"),
        body: r.get("body"),
        vector: r.get("vector"),
    }
}

fn alert_row(r: &Row) -> Result<Alert, StoreError> {
    Ok(Alert {
        id: r.get("id"),
        incident_id: r.get("incident_id"),
        event: r.get("event"),
        body: json(r, "body")?,
        state: AlertState::parse(r.get("state"))?,
        attempts: r.get("attempts"),
        next_at: time(r, "next_at")?,
        created_at: time(r, "created_at")?,
        finished_at: time_opt(r, "finished_at")?,
        last_status: r.get("last_status"),
        last_error: r.get("last_error"),
    })
}

/// Queues an alert about incident `i` (locked or new in this transaction), if it takes
/// tickets and they are at least twice those of its last alert (the first: any).
async fn alert(tx: &mut WriteTx, i: &StoredIncident, event: &str) -> Result<(), StoreError> {
    if !i.status.is_live() || i.merged_into.is_some() {
        return Ok(());
    }
    let t = &i.tracked;
    let tickets: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM incident_links WHERE incident_id = $1")
            .bind(&t.id)
            .fetch_one(tx.conn())
            .await?
            .get("n");
    if tickets == 0 || tickets < 2 * i.alerted_tickets {
        return Ok(());
    }
    let body = AlertBody {
        event: event.to_string(),
        incident_id: t.id.clone(),
        intent: t.intent.clone(),
        language: t.language.clone(),
        status: i.status,
        opened_at: t.opened_at,
        last_at: t.last_at,
        tickets,
        detection: i.detection.clone(),
    };
    let now = Stamp(crate::store::now());
    sqlx::query(
        "INSERT INTO incident_alerts (id, incident_id, event, body, state, next_at, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(&t.id)
    .bind(event)
    .bind(to_json(&body))
    .bind(now)
    .execute(tx.conn())
    .await?;
    sqlx::query("UPDATE incidents SET alerted_tickets = $2 WHERE id = $1")
        .bind(&t.id)
        .bind(tickets)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Stores a new incident.
async fn insert(tx: &mut WriteTx, i: &StoredIncident) -> Result<(), StoreError> {
    let t = &i.tracked;
    sqlx::query(
        "INSERT INTO incidents (id, intent, language, status, opened_at, last_at, updated_at, detection, tracked, merged_into, split_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
    .bind(&i.merged_into)
    .bind(&i.split_from)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// An incident, locked until the transaction ends (its row, on PostgreSQL; SQLite's writer
/// holds the whole database).
async fn locked(tx: &mut WriteTx, id: &str) -> Result<StoredIncident, StoreError> {
    let n = sqlx::query("UPDATE incidents SET id = id WHERE id = $1")
        .bind(id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound(format!("no incident {id}")));
    }
    let row = sqlx::query(&format!("{INCIDENT} WHERE id = $1"))
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    incident_row(&row)
}

/// Writes a locked incident's state for linking.
async fn rewrite(tx: &mut WriteTx, t: &TrackedIncident) -> Result<(), StoreError> {
    sqlx::query("UPDATE incidents SET last_at = $2, updated_at = $3, tracked = $4 WHERE id = $1")
        .bind(&t.id)
        .bind(Stamp(t.last_at))
        .bind(Stamp(crate::store::now()))
        .bind(to_json(t))
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Marks incidents whose tickets changed, for their centroids to be computed again.
async fn mark_for_remodel(tx: &mut WriteTx, ids: &[&str]) -> Result<(), StoreError> {
    for id in ids {
        sqlx::query("UPDATE incidents SET remodel = remodel + 1, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(Stamp(crate::store::now()))
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

fn not_linked(decision: &str, incident: &str) -> StoreError {
    StoreError::NotFound(format!(
        "decision {decision} is not linked to incident {incident}"
    ))
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
        alerts: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, i).await?;
        for l in links {
            link(&mut tx, l).await?;
        }
        if alerts {
            alert(&mut tx, i, "incident.opened").await?;
        }
        tx.announce(Topic::Incidents).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn update_incident(
        &self,
        t: &TrackedIncident,
        links: &[IncidentLink],
        alerts: bool,
    ) -> Result<TrackedIncident, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut stored = locked(&mut tx, &t.id).await?;
        stored.tracked.absorb_rate(t);
        stored.tracked.usual_rate = t.usual_rate;
        rewrite(&mut tx, &stored.tracked).await?;
        for l in links {
            link(&mut tx, l).await?;
        }
        if alerts {
            // Tickets linked while routed count too (the watch sends them with no links).
            alert(&mut tx, &stored, "incident.grew").await?;
        }
        tx.announce(Topic::Incidents).await?;
        tx.commit().await?;
        Ok(stored.tracked)
    }

    pub(in crate::store) async fn claim_alerts(
        &self,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "UPDATE incident_alerts SET next_at = $1, attempts = attempts + 1 WHERE id IN \
             (SELECT a.id FROM incident_alerts a WHERE a.state = 'pending' AND a.next_at <= $2 \
              AND NOT EXISTS (SELECT 1 FROM incident_alerts e WHERE e.incident_id = a.incident_id \
                AND e.state = 'pending' AND e.id < a.id) \
              ORDER BY a.next_at, a.id LIMIT $3 {}) RETURNING *",
            super::super::SKIP_LOCKED
        ))
        .bind(Stamp(lease_until))
        .bind(Stamp(crate::store::now()))
        .bind(limit)
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        rows.iter().map(alert_row).collect()
    }

    pub(in crate::store) async fn finish_alert(
        &self,
        id: &str,
        claimed_until: DateTime<Utc>,
        outcome: &AlertOutcome,
    ) -> Result<(), StoreError> {
        let now = Stamp(crate::store::now());
        let (state, next_at, finished, status, error) = match outcome {
            AlertOutcome::Delivered(status) => {
                (AlertState::Delivered, now, Some(now), Some(*status), None)
            }
            AlertOutcome::Retry { at, status, error } => (
                AlertState::Pending,
                Stamp(*at),
                None,
                *status,
                Some(error.as_str()),
            ),
            AlertOutcome::Dead { status, error } => (
                AlertState::Dead,
                now,
                Some(now),
                *status,
                Some(error.as_str()),
            ),
        };
        let mut tx = self.begin_write().await?;
        // Only while the claim is still this one's (a lease that ran out was claimed again).
        sqlx::query(
            "UPDATE incident_alerts SET state = $3, next_at = $4, finished_at = $5, last_status = $6, last_error = $7 \
             WHERE id = $1 AND next_at = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(Stamp(claimed_until))
        .bind(state.name())
        .bind(next_at)
        .bind(finished)
        .bind(status)
        .bind(error)
        .execute(tx.conn())
        .await?;
        tx.commit().await
    }

    pub(in crate::store) async fn alerts(
        &self,
        state: Option<AlertState>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM incident_alerts WHERE $1 IS NULL OR state = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(state.map(AlertState::name))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_row).collect()
    }

    pub(in crate::store) async fn purge_alerts(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.purge(
            &["DELETE FROM incident_alerts WHERE state IN ('delivered', 'dead') AND finished_at < $1"],
            cutoff,
        )
        .await
    }

    pub(in crate::store) async fn retry_alert(&self, id: &str) -> Result<Alert, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE incident_alerts SET state = 'pending', attempts = 0, next_at = $2, finished_at = NULL \
             WHERE id = $1 AND state = 'dead' RETURNING *",
        )
        .bind(id)
        .bind(Stamp(crate::store::now()))
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        match row {
            Some(r) => alert_row(&r),
            None => Err(StoreError::NotFound(format!("no dead alert {id}"))),
        }
    }

    pub(in crate::store) async fn save_incident_model(
        &self,
        t: &TrackedIncident,
        marks: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let stored = locked(&mut tx, &t.id).await?;
        if stored.remodel_marks != marks {
            return Ok(false);
        }
        rewrite(&mut tx, t).await?;
        sqlx::query("UPDATE incidents SET remodel = 0 WHERE id = $1")
            .bind(&t.id)
            .execute(tx.conn())
            .await?;
        tx.announce(Topic::Incidents).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(in crate::store) async fn incidents_to_remodel(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM incidents WHERE remodel > 0 ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get("id")).collect())
    }

    pub(in crate::store) async fn incident_origins(
        &self,
        id: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT intent, language FROM incidents WHERE id = $1 OR merged_into = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!("no incident {id}")));
        }
        Ok(rows
            .iter()
            .map(|r| (r.get("intent"), r.get("language")))
            .collect())
    }

    pub(in crate::store) async fn incident_members(
        &self,
        id: &str,
    ) -> Result<Vec<(DateTime<Utc>, Option<Vec<u8>>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.decided_at, v.vector FROM incident_links l JOIN decisions d ON d.decision_id = l.decision_id \
             LEFT JOIN ticket_vectors v ON v.decision_id = l.decision_id \
             WHERE l.incident_id = $1 ORDER BY d.decided_at, d.decision_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((time(r, "decided_at")?, r.get("vector"))))
            .collect()
    }

    pub(in crate::store) async fn incident_texts(
        &self,
        id: &str,
        limit: i64,
    ) -> Result<Vec<IncidentText>, StoreError> {
        let rows = sqlx::query(&format!(
            "{TEXTS} FROM incident_links l JOIN decisions d ON d.decision_id = l.decision_id \
             JOIN ticket_texts t ON t.ticket_id = d.ticket_id \
             LEFT JOIN ticket_vectors v ON v.decision_id = d.decision_id \
             WHERE l.incident_id = $1 ORDER BY l.linked_at, l.decision_id LIMIT $2"
        ))
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(text_row).collect())
    }

    pub(in crate::store) async fn usual_texts(
        &self,
        intent: &str,
        language: Option<&str>,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<IncidentText>, StoreError> {
        let rows = sqlx::query(&format!(
            "{TEXTS} FROM decisions d JOIN ticket_texts t ON t.ticket_id = d.ticket_id \
             LEFT JOIN ticket_vectors v ON v.decision_id = d.decision_id WHERE {USUAL} \
             ORDER BY d.decided_at DESC, d.decision_id DESC LIMIT $4"
        ))
        .bind(intent)
        .bind(language)
        .bind(Stamp(since))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(text_row).collect())
    }

    pub(in crate::store) async fn series_rows(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<SeriesRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.decided_at, d.intent, d.language, l.incident_id FROM decisions d \
             LEFT JOIN incident_links l ON l.decision_id = d.decision_id \
             WHERE d.decided_at >= $1 AND d.decided_at < $2 ORDER BY d.decided_at, d.decision_id",
        )
        .bind(Stamp(from))
        .bind(Stamp(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SeriesRow {
                    at: time(r, "decided_at")?,
                    intent: r.get("intent"),
                    language: r.get("language"),
                    incident_id: r.get("incident_id"),
                })
            })
            .collect()
    }

    pub(in crate::store) async fn intent_share(
        &self,
        intent: &str,
        language: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN d.intent = $1 OR substr(d.intent, 1, length($1) + 1) = $1 || '.' \
             THEN 1 ELSE 0 END), 0) AS n, COUNT(*) AS total FROM decisions d \
             WHERE ($2 IS NULL OR d.language = $2) AND d.decided_at >= $3 AND d.decided_at < $4 \
             AND NOT EXISTS (SELECT 1 FROM incident_links l WHERE l.decision_id = d.decision_id)",
        )
        .bind(intent)
        .bind(language)
        .bind(Stamp(from))
        .bind(Stamp(to))
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get("n"), row.get("total")))
    }

    pub(in crate::store) async fn usual_vectors(
        &self,
        intent: &str,
        language: Option<&str>,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT v.vector FROM decisions d JOIN ticket_vectors v ON v.decision_id = d.decision_id \
             WHERE {USUAL} ORDER BY d.decided_at DESC, d.decision_id DESC LIMIT $4"
        ))
        .bind(intent)
        .bind(language)
        .bind(Stamp(since))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("vector")).collect())
    }

    pub(in crate::store) async fn unlink_tickets(
        &self,
        id: &str,
        decisions: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        locked(&mut tx, id).await?;
        let now = Stamp(crate::store::now());
        for d in decisions {
            let n = sqlx::query(
                "INSERT INTO incident_unlinks (decision_id, incident_id, unlinked_at, linked_by, probability, similarity) \
                 SELECT decision_id, incident_id, $3, linked_by, probability, similarity FROM incident_links \
                 WHERE decision_id = $1 AND incident_id = $2 \
                 ON CONFLICT (decision_id, incident_id) DO UPDATE SET unlinked_at = excluded.unlinked_at",
            )
            .bind(d)
            .bind(id)
            .bind(now)
            .execute(tx.conn())
            .await?
            .rows_affected();
            if n == 0 {
                return Err(not_linked(d, id));
            }
            sqlx::query("DELETE FROM incident_links WHERE decision_id = $1")
                .bind(d)
                .execute(tx.conn())
                .await?;
        }
        mark_for_remodel(&mut tx, &[id]).await?;
        tx.announce(Topic::Incidents).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn merge_incidents(
        &self,
        target: &str,
        sources: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // Every row the merge changes (those merged into the sources before too) is locked in
        // one order, as an unmerge locks its two: corrections at once cannot wait on each other.
        let mut ids: Vec<String> = sources.to_vec();
        for src in sources {
            let rows = sqlx::query("SELECT id FROM incidents WHERE merged_into = $1")
                .bind(src)
                .fetch_all(tx.conn())
                .await?;
            ids.extend(rows.iter().map(|r| r.get::<String, _>("id")));
        }
        ids.push(target.to_string());
        ids.sort_unstable();
        ids.dedup();
        let mut found = std::collections::HashMap::new();
        for id in &ids {
            found.insert(id.clone(), locked(&mut tx, id).await?);
        }
        for id in sources.iter().map(String::as_str).chain([target]) {
            if let Some(other) = &found[id].merged_into {
                return Err(StoreError::NotFound(format!(
                    "incident {id} was merged into {other} already"
                )));
            }
        }
        let mut into = found[target].tracked.clone();
        for src in sources {
            into.add_rate(&found[src].tracked);
            sqlx::query(
                "UPDATE incident_links SET merged_from = COALESCE(merged_from, incident_id), incident_id = $2 \
                 WHERE incident_id = $1",
            )
            .bind(src)
            .bind(target)
            .execute(tx.conn())
            .await?;
            sqlx::query(
                "UPDATE incidents SET merged_into = $2, updated_at = $3 WHERE id = $1 OR merged_into = $1",
            )
            .bind(src)
            .bind(target)
            .bind(Stamp(crate::store::now()))
            .execute(tx.conn())
            .await?;
        }
        rewrite(&mut tx, &into).await?;
        mark_for_remodel(&mut tx, &[target]).await?;
        tx.announce(Topic::Incidents).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn unmerge_incident(&self, id: &str) -> Result<String, StoreError> {
        let mut tx = self.begin_write().await?;
        let not_merged =
            || StoreError::NotFound(format!("incident {id} is not merged into another"));
        let row = sqlx::query("SELECT merged_into FROM incidents WHERE id = $1")
            .bind(id)
            .fetch_optional(tx.conn())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no incident {id}")))?;
        let target: String = row
            .get::<Option<String>, _>("merged_into")
            .ok_or_else(not_merged)?;
        // Locked in one order (a merge locks its rows in it too), then checked again.
        let mut pair = [id, target.as_str()];
        pair.sort_unstable();
        let mut merged_into = None;
        for i in pair {
            let row = locked(&mut tx, i).await?;
            if i == id {
                merged_into = row.merged_into;
            }
        }
        if merged_into.as_deref() != Some(target.as_str()) {
            return Err(not_merged());
        }
        sqlx::query(
            "UPDATE incident_links SET incident_id = $1, merged_from = NULL \
             WHERE merged_from = $1 AND incident_id = $2",
        )
        .bind(id)
        .bind(&target)
        .execute(tx.conn())
        .await?;
        sqlx::query("UPDATE incidents SET merged_into = NULL WHERE id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
        mark_for_remodel(&mut tx, &[id, &target]).await?;
        tx.announce(Topic::Incidents).await?;
        tx.commit().await?;
        Ok(target)
    }

    pub(in crate::store) async fn split_incident(
        &self,
        source: &str,
        decisions: &[String],
        new: &StoredIncident,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(into) = locked(&mut tx, source).await?.merged_into {
            return Err(StoreError::NotFound(format!(
                "incident {source} was merged into {into}: split that one"
            )));
        }
        insert(&mut tx, new).await?;
        let reason = format!("split from incident {source} by a person");
        for d in decisions {
            let n = sqlx::query(
                "UPDATE incident_links SET incident_id = $3, merged_from = NULL, linked_by = $4, \
                 reason = $5 || '; before: ' || reason WHERE decision_id = $1 AND incident_id = $2",
            )
            .bind(d)
            .bind(source)
            .bind(&new.tracked.id)
            .bind(by_name(LinkedBy::Person))
            .bind(&reason)
            .execute(tx.conn())
            .await?
            .rows_affected();
            if n == 0 {
                return Err(not_linked(d, source));
            }
        }
        mark_for_remodel(&mut tx, &[source, &new.tracked.id]).await?;
        tx.announce(Topic::Incidents).await?;
        tx.commit().await
    }

    pub(in crate::store) async fn unlinked_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT decision_id FROM incident_unlinks WHERE unlinked_at >= $1 ORDER BY unlinked_at",
        )
        .bind(Stamp(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get("decision_id")).collect())
    }

    pub(in crate::store) async fn link_outcomes(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<LinkOutcome>, StoreError> {
        let rows = sqlx::query(
            "SELECT probability, similarity, FALSE AS unlinked FROM incident_links \
             WHERE linked_by <> 'person' AND linked_at >= $1 \
             UNION ALL SELECT probability, similarity, TRUE AS unlinked FROM incident_unlinks \
             WHERE linked_by <> 'person' AND unlinked_at >= $1",
        )
        .bind(Stamp(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| LinkOutcome {
                probability: r.get("probability"),
                similarity: r.get::<f64, _>("similarity") as f32,
                unlinked: r.get("unlinked"),
            })
            .collect())
    }

    pub(in crate::store) async fn live_incidents(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<StoredIncident>, StoreError> {
        let rows = sqlx::query(&format!(
            "{INCIDENT} WHERE status IN ('open', 'acknowledged') AND merged_into IS NULL AND last_at >= $1 \
             ORDER BY opened_at, id"
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
            "SELECT i.status, i.updated_at, i.detection, i.tracked, i.merged_into, i.split_from, i.remodel, i.alerted_tickets, \
             (SELECT COUNT(*) FROM incident_links l WHERE l.incident_id = i.id) AS tickets \
             FROM incidents i WHERE $1 IS NULL OR (i.status = $1 AND i.merged_into IS NULL) \
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
            "SELECT decision_id, incident_id, linked_at, probability, similarity, linked_by, reason, merged_from \
             FROM incident_links WHERE incident_id = $1 ORDER BY linked_at, decision_id",
        )
        .bind(incident_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_row).collect()
    }
}
