//! The incidents use case. On the request path, every replica links routed tickets to the live
//! incidents it holds (one centroid per incident: a bounded lookup). Off it, one process at a
//! time across replicas (the [`Exclusive::Incidents`] lock) watches the decision log: it
//! rebuilds the detector from the log when it takes the watch (and after an erasure), reads
//! new decisions in the log's order, opens and grows incidents from the alarms and stores them,
//! announced to every replica.

mod alerts;
mod corrections;
mod summary;
mod watch;

pub use alerts::AlertTarget;
pub use corrections::IncidentError;
pub use summary::{IncidentSeries, IncidentSummary, Representative, SeriesPoint};

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::Classification;
use crate::incident::detect::chain_of;
use crate::incident::track::LinkedBy;
use crate::incident::{DetectorSettings, Embedding, Link, TrackedIncident, Tracker};
use crate::metrics::Metrics;
use crate::serving::LiveModels;
use crate::store::{Detection, IncidentLink, IncidentStatus, Store, StoreError, StoredIncident};
use summary::SUMMARY_TEXTS;

/// How incidents are detected and linked.
#[derive(Debug, Clone)]
pub struct IncidentPolicy {
    /// Watch the stream and link tickets (`false`: neither, and no embeddings are stored).
    pub enabled: bool,
    /// The detector's sensitivity and history.
    pub detector: DetectorSettings,
    /// Hours without a new ticket after which an incident stops taking tickets.
    pub quiet_hours: i64,
    /// Probability from which a ticket is linked.
    pub link_probability: f64,
    /// Cosine to an incident's centroid from which a ticket is linked (0: any).
    pub min_similarity: f32,
    /// How often the watch reads new decisions.
    pub check_every: Duration,
    /// How far back the detector's history is rebuilt from the log.
    pub history: chrono::Duration,
    /// Where alerts go (none: no alerts).
    pub alerts: Option<AlertTarget>,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            detector: DetectorSettings::default(),
            quiet_hours: 48,
            link_probability: 0.5,
            min_similarity: 0.0,
            check_every: Duration::from_secs(10),
            history: chrono::Duration::days(28),
            alerts: None,
        }
    }
}

/// A ticket's link to a live incident, with the reason in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Linked {
    /// The link's numbers.
    pub link: Link,
    /// The reason, for the decision's trace.
    pub reason: String,
}

impl Linked {
    /// The link as logged with decision `decision_id`, made at `at` while routing.
    pub fn record(&self, decision_id: &str, at: DateTime<Utc>) -> IncidentLink {
        let reason = self.reason.clone();
        link_record(
            decision_id.into(),
            &self.link,
            LinkedBy::Routing,
            reason,
            at,
        )
    }
}

/// An incident as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentInfo {
    /// Id.
    pub id: String,
    /// The intent (leaf or parent) whose tickets it takes.
    pub intent: String,
    /// The language it is limited to, when the wave was in one language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Where it stands: `open` and `acknowledged` take new tickets, `resolved` and `dismissed`
    /// do not.
    pub status: IncidentStatus,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When its latest ticket came.
    pub last_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The alarm that opened it (for a split, the one that opened the incident it came from).
    pub detection: Detection,
    /// The incident it was merged into: it takes no tickets, its own are there (an unmerge
    /// brings them back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// The incident a person split it from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_from: Option<String>,
    /// Tickets linked to it.
    pub tickets: i64,
    /// The linked tickets, in the order they were linked (one incident only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<LinkInfo>>,
    /// What its tickets say (one incident only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<IncidentSummary>,
}

impl IncidentInfo {
    fn new(
        i: StoredIncident,
        tickets: i64,
        links: Option<Vec<LinkInfo>>,
        summary: Option<IncidentSummary>,
    ) -> Self {
        let t = i.tracked;
        Self {
            id: t.id,
            intent: t.intent,
            language: t.language,
            status: i.status,
            opened_at: t.opened_at,
            last_at: t.last_at,
            updated_at: i.updated_at,
            detection: i.detection,
            merged_into: i.merged_into,
            split_from: i.split_from,
            tickets,
            links,
            summary,
        }
    }
}

/// A ticket's link to an incident, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkInfo {
    /// The decision linked.
    pub decision_id: String,
    /// When.
    pub linked_at: DateTime<Utc>,
    /// How: while routed, by the detector when the incident opened or grew, or by a person.
    pub linked_by: LinkedBy,
    /// Probability that the ticket is the incident's.
    pub probability: f64,
    /// Cosine to the incident's centroid.
    pub similarity: f32,
    /// The reason in words.
    pub reason: String,
    /// The incident it belonged to before a merge brought it here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
}

impl From<IncidentLink> for LinkInfo {
    fn from(l: IncidentLink) -> Self {
        Self {
            decision_id: l.decision_id,
            linked_at: l.linked_at,
            linked_by: l.linked_by,
            probability: l.probability,
            similarity: l.similarity,
            reason: l.reason,
            merged_from: l.merged_from,
        }
    }
}

/// The incidents use case; cheap to clone.
#[derive(Clone)]
pub struct IncidentService {
    store: Arc<Store>,
    models: LiveModels,
    policy: Arc<IncidentPolicy>,
    /// The live incidents as this replica links against them.
    linking: Arc<Mutex<Tracker>>,
    metrics: Arc<Metrics>,
    /// The client alerts are sent with.
    http: ureq::Agent,
}

impl IncidentService {
    /// The use case over `store`; the detector knows the active model's intents.
    pub fn new(
        store: Arc<Store>,
        models: LiveModels,
        policy: IncidentPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        let linking = tracker_of(&policy);
        Self {
            store,
            models,
            policy: Arc::new(policy),
            linking: Arc::new(Mutex::new(linking)),
            metrics,
            // A redirect is not followed: a POST turned into a GET would count as delivered.
            http: ureq::AgentBuilder::new()
                .user_agent(concat!("intent-router/", env!("CARGO_PKG_VERSION")))
                .redirects(0)
                .build(),
        }
    }

    /// Whether incidents are watched and linked (and embeddings stored).
    pub fn enabled(&self) -> bool {
        self.policy.enabled
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        // A panic while linking leaves the tracker as it was between links: keep serving.
        self.linking.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Links a routed ticket to the live incident it most likely belongs to (it then counts
    /// towards that incident's rate); `None` when it belongs to none.
    pub fn link(&self, c: &Classification, e: &Embedding, now: DateTime<Utc>) -> Option<Linked> {
        self.weigh(c, e, now, true)
    }

    /// The link [`IncidentService::link`] would make, changing nothing (a dry run).
    pub fn peek(&self, c: &Classification, e: &Embedding, now: DateTime<Utc>) -> Option<Linked> {
        self.weigh(c, e, now, false)
    }

    fn weigh(
        &self,
        c: &Classification,
        embedding: &Embedding,
        now: DateTime<Utc>,
        count: bool,
    ) -> Option<Linked> {
        if !self.policy.enabled {
            return None;
        }
        let chain = chain_of(&c.resolution.intent);
        let mut tracker = self.tracker();
        let (link, incident) = tracker.peek(&chain, &c.language, embedding, now)?;
        let reason = link.explain(incident);
        if count {
            tracker.note(&link.incident, now);
            self.metrics.incident_link("routing");
        }
        Some(Linked { link, reason })
    }

    /// Incidents, newest first, optionally in one status.
    pub async fn list(
        &self,
        status: Option<IncidentStatus>,
        limit: i64,
    ) -> Result<Vec<IncidentInfo>, StoreError> {
        let found = self.store.incidents(status, limit).await?;
        Ok(found
            .into_iter()
            .map(|(i, n)| IncidentInfo::new(i, n, None, None))
            .collect())
    }

    /// One incident with its linked tickets and what they say.
    pub async fn get(&self, id: &str) -> Result<IncidentInfo, StoreError> {
        let i = self.store.incident(id).await?;
        let links: Vec<LinkInfo> = self
            .store
            .incident_links(id)
            .await?
            .into_iter()
            .map(LinkInfo::from)
            .collect();
        let t = &i.tracked;
        let texts = self.store.incident_texts(id, SUMMARY_TEXTS).await?;
        let since = Utc::now() - self.policy.history;
        let usual = self
            .store
            .usual_texts(&t.intent, t.language.as_deref(), since, SUMMARY_TEXTS)
            .await?;
        let summary = IncidentSummary::of(t, &texts, &usual);
        Ok(IncidentInfo::new(
            i,
            links.len() as i64,
            Some(links),
            Some(summary),
        ))
    }

    /// The chart of an incident in `steps` steps of `step_minutes`: its intent's tickets per
    /// step against the intent's usual share of the volume (over the 14 days before its
    /// detection window), its own tickets, its detection. The chart ends 6 hours after its
    /// last ticket (or now, if sooner), unless that leaves out the detection window's start:
    /// then it starts there.
    pub async fn series(
        &self,
        id: &str,
        steps: i64,
        step_minutes: i64,
    ) -> Result<IncidentSeries, StoreError> {
        let i = self.store.incident(id).await?;
        let step = chrono::Duration::minutes(step_minutes);
        let end = (i.tracked.last_at + chrono::Duration::hours(6))
            .min(Utc::now())
            .max(i.detection.at + step);
        let end = summary::step_of(end, step_minutes) + step;
        let span = step * i32::try_from(steps).expect("points are checked at the edge");
        // From the detection window's start at the latest: the mark is always on the chart.
        let window = i.detection.at - chrono::Duration::minutes(i.detection.window_minutes);
        let from = (end - span).min(summary::step_of(window, step_minutes));
        let end = from + span;
        let rows = self.store.series_rows(from, end).await?;
        let (n, total) = self
            .store
            .intent_share(
                &i.tracked.intent,
                i.tracked.language.as_deref(),
                window - chrono::Duration::days(14),
                window,
            )
            .await?;
        let share = if total > 0 {
            n as f64 / total as f64
        } else {
            0.0
        };
        let steps = usize::try_from(steps).expect("points are checked at the edge");
        Ok(IncidentSeries::of(
            &i,
            &rows,
            share,
            from,
            (steps, step_minutes),
        ))
    }

    /// Sets an incident's status: a resolved or dismissed one takes no more tickets, here at
    /// once and on the other replicas when they hear of it.
    pub async fn set_status(
        &self,
        id: &str,
        status: IncidentStatus,
    ) -> Result<IncidentInfo, StoreError> {
        self.store.set_incident_status(id, status).await?;
        self.reload().await?;
        self.get(id).await
    }

    /// Loads the live incidents (open or acknowledged, with a ticket within the quiet hours)
    /// for linking (nothing while incidents are off). Tickets this replica linked after the
    /// stored state's newest keep counting.
    pub async fn reload(&self) -> Result<(), StoreError> {
        if !self.policy.enabled {
            return Ok(());
        }
        let live = self.live().await?;
        let mut tracker = self.tracker();
        let mut local: HashMap<String, TrackedIncident> = std::mem::take(&mut tracker.open)
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        tracker.open = live
            .into_iter()
            .map(|mut t| {
                if let Some(mine) = local.remove(&t.id) {
                    // The tickets this replica linked since the stored picture was written
                    // (it counts them at their arrival, the watch at their log time).
                    t.extend_rate(&mine);
                }
                t
            })
            .collect();
        self.metrics.set_live_incidents(tracker.open.len());
        Ok(())
    }

    /// The live incidents in the database: open or acknowledged, with a ticket within the
    /// quiet hours.
    async fn live(&self) -> Result<Vec<TrackedIncident>, StoreError> {
        let since = Utc::now() - chrono::Duration::hours(self.policy.quiet_hours);
        let live = self.store.live_incidents(since).await?;
        Ok(live.into_iter().map(|i| i.tracked).collect())
    }
}

/// A tracker with no incidents, as `policy` sets it.
fn tracker_of(policy: &IncidentPolicy) -> Tracker {
    Tracker {
        min_similarity: policy.min_similarity,
        ..Tracker::new(
            policy.quiet_hours,
            policy.link_probability,
            policy.detector.min_tickets as usize,
        )
    }
}

/// A ticket's link to `link`'s incident, as logged with decision `decision_id`.
fn link_record(
    decision_id: String,
    link: &Link,
    linked_by: LinkedBy,
    reason: String,
    at: DateTime<Utc>,
) -> IncidentLink {
    IncidentLink {
        decision_id,
        incident_id: link.incident.clone(),
        linked_at: at,
        probability: link.probability,
        similarity: link.similarity,
        linked_by,
        reason,
        merged_from: None,
    }
}
