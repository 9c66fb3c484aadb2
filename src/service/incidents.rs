//! The incidents use case. On the request path, every replica links routed tickets to the live
//! incidents it holds (one centroid per incident: a bounded lookup). Off it, one process at a
//! time across replicas (the [`Exclusive::Incidents`] lock) watches the decision log: it
//! rebuilds the detector from the log when it takes the watch (and after an erasure), reads
//! new decisions in the log's order, opens and grows incidents from the alarms and stores them,
//! announced to every replica.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::Classification;
use crate::incident::detect::chain_of;
use crate::incident::track::LinkedBy;
use crate::incident::{
    Change, Detector, DetectorSettings, Embedding, Link, Observation, TrackedIncident, Tracker,
};
use crate::serving::LiveModels;
use crate::store::{
    spawn_on_changes, Changes, Detection, DetectorRow, Exclusive, ExclusiveLock, IncidentLink,
    IncidentStatus, Store, StoreError, StoredIncident, Topic,
};

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
    /// How often the watch reads new decisions.
    pub check_every: Duration,
    /// How far back the detector's history is rebuilt from the log.
    pub history: chrono::Duration,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            detector: DetectorSettings::default(),
            quiet_hours: 48,
            link_probability: 0.5,
            check_every: Duration::from_secs(10),
            history: chrono::Duration::days(28),
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
    /// The alarm that opened it.
    pub detection: Detection,
    /// Tickets linked to it.
    pub tickets: i64,
    /// The linked tickets, in the order they were linked (one incident only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<LinkInfo>>,
}

impl IncidentInfo {
    fn new(i: StoredIncident, tickets: i64, links: Option<Vec<LinkInfo>>) -> Self {
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
            tickets,
            links,
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
        }
    }
}

/// How far back a rebuild's alarms still open incidents.
const CATCH_UP: chrono::Duration = chrono::Duration::minutes(15);

/// A process that does not hold the watch tries to take it every this many turns.
const TRY_EVERY: u32 = 6;

/// Rows read from the log at a time.
const PAGE: i64 = 2_000;

/// How far back each read looks again: replicas commit decisions a little out of the order
/// of their log times, so a read starts this much before the newest time seen (the decisions
/// seen since are skipped).
const OVERLAP: chrono::Duration = chrono::Duration::minutes(5);

/// The incidents use case; cheap to clone.
#[derive(Clone)]
pub struct IncidentService {
    store: Arc<Store>,
    models: LiveModels,
    policy: Arc<IncidentPolicy>,
    /// The live incidents as this replica links against them.
    linking: Arc<Mutex<Tracker>>,
}

impl IncidentService {
    /// The use case over `store`; the detector knows the active model's intents.
    pub fn new(store: Arc<Store>, models: LiveModels, policy: IncidentPolicy) -> Self {
        let linking = tracker_of(&policy);
        Self {
            store,
            models,
            policy: Arc::new(policy),
            linking: Arc::new(Mutex::new(linking)),
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
            .map(|(i, n)| IncidentInfo::new(i, n, None))
            .collect())
    }

    /// One incident with its linked tickets.
    pub async fn get(&self, id: &str) -> Result<IncidentInfo, StoreError> {
        let i = self.store.incident(id).await?;
        let links: Vec<LinkInfo> = self
            .store
            .incident_links(id)
            .await?
            .into_iter()
            .map(LinkInfo::from)
            .collect();
        Ok(IncidentInfo::new(i, links.len() as i64, Some(links)))
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
                    let stored = t.recent.iter().max().copied();
                    t.recent
                        .extend(mine.recent.into_iter().filter(|at| Some(*at) > stored));
                    t.last_at = t.last_at.max(mine.last_at);
                }
                t
            })
            .collect();
        Ok(())
    }

    /// The live incidents in the database: open or acknowledged, with a ticket within the
    /// quiet hours.
    async fn live(&self) -> Result<Vec<TrackedIncident>, StoreError> {
        let since = Utc::now() - chrono::Duration::hours(self.policy.quiet_hours);
        let live = self.store.live_incidents(since).await?;
        Ok(live.into_iter().map(|i| i.tracked).collect())
    }

    /// Starts the background work: reloading the live incidents when one changes (announced
    /// by `changes`, and every `every`), and the watch, taken by one process at a time.
    pub fn spawn(&self, changes: Option<Changes>, every: Duration) {
        if !self.policy.enabled {
            return;
        }
        let service = self.clone();
        spawn_on_changes(changes, &[Topic::Incidents], every, move || {
            let service = service.clone();
            async move {
                if let Err(e) = service.reload().await {
                    tracing::error!("loading the live incidents: {e}");
                }
            }
        });
        let service = self.clone();
        let watcher: Arc<tokio::sync::Mutex<Watcher>> = Arc::default();
        spawn_on_changes(None, &[], self.policy.check_every, move || {
            let (service, watcher) = (service.clone(), Arc::clone(&watcher));
            async move { service.turn(&mut *watcher.lock().await).await }
        });
    }

    /// One turn of the watch, unless paused: a process that does not hold it tries again
    /// every [`TRY_EVERY`] turns; one that failed waits longer after each failure.
    async fn turn(&self, s: &mut Watcher) {
        if s.next_try.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let every = self.policy.check_every;
        match self.watch(&mut s.watch).await {
            Ok(true) => (s.failures, s.next_try) = (0, None),
            Ok(false) => s.next_try = Some(Instant::now() + every * TRY_EVERY),
            Err(e) => {
                // Given up (the lock goes with it): a later turn takes the watch again.
                tracing::error!("watching for incidents: {e}");
                s.watch = None;
                s.failures = (s.failures + 1).min(6);
                s.next_try = Some(Instant::now() + every * (1 << s.failures));
            }
        }
    }

    /// The watch: takes it if no other process holds it (rebuilding the detector from the
    /// log), rebuilds after an erasure or a new active model, then reads and detects the new
    /// decisions. `false`: another process holds it.
    async fn watch(&self, state: &mut Option<Watch>) -> Result<bool, WatchError> {
        // A rebuild reads the log up to now: the turn's read is part of it.
        let w = match state.take() {
            None => match self.store.try_exclusive(Exclusive::Incidents).await? {
                Some(lock) => self.rebuild(lock, None).await?,
                None => return Ok(false),
            },
            Some(mut w) => {
                if !w.lock.still_held().await {
                    return Err(WatchError::LockLost);
                }
                let erased = self.store.erased_since(w.erasures.0).await?;
                let model = self.models.active().id.clone();
                if erased.iter().any(|(t, _)| !w.erasures.1.contains(t)) || model != w.model {
                    // An erased ticket's vector may sit in the detector's memory, and a new
                    // model brings its own intents: start again from the log. Alarms act
                    // again only on decisions not read before.
                    let act_from = w.cursor.0;
                    self.rebuild(w.lock, Some(act_from)).await?
                } else {
                    self.read_new(w).await?
                }
            }
        };
        *state = Some(w);
        Ok(true)
    }

    /// A fresh detector fed with the log of the past [`IncidentPolicy::history`], and the
    /// live incidents (their rates rebuilt from the log's links too). The replay's alarms act
    /// only from `act_from` (by default the last [`CATCH_UP`], when no process may have
    /// watched); earlier ones were acted on then, and their tickets' links keep most of them
    /// from firing again.
    async fn rebuild(
        &self,
        lock: ExclusiveLock,
        act_from: Option<DateTime<Utc>>,
    ) -> Result<Watch, WatchError> {
        let now = Utc::now();
        let model = self.models.active();
        let leaves = model.engine.classifier().meta.labels.clone();
        // Erasures from a minute back are taken as seen; an earlier one that commits only now
        // is missed (a transaction does not take that long).
        let erasures_from = now - chrono::Duration::minutes(1);
        let erased = self.store.erased_since(erasures_from).await?;
        let mut tracker = tracker_of(&self.policy);
        tracker.open = self.live().await?;
        for t in &mut tracker.open {
            t.recent.clear();
        }
        let from = now - self.policy.history;
        let w = Watch {
            lock,
            model: model.id.clone(),
            detector: Detector::new(self.policy.detector.clone(), &leaves),
            tracker,
            cursor: (from, String::new()),
            seen: HashMap::new(),
            erasures: (erasures_from, erased.into_iter().map(|e| e.0).collect()),
            act_from: act_from.unwrap_or(now - CATCH_UP),
        };
        let mut w = self.read_new(w).await?;
        w.act_from = DateTime::<Utc>::MIN_UTC;
        tracing::info!(
            "watching for incidents: detector rebuilt from the decision log since {from}"
        );
        Ok(w)
    }

    /// Feeds the decisions logged since the last read to the detector, in the log's order
    /// (off the async workers), and stores what changed: incidents opened, grown, or with new
    /// tickets linked while routed (their rates) — after making sure the watch is still
    /// this process's.
    async fn read_new(&self, mut w: Watch) -> Result<Watch, WatchError> {
        let now = Utc::now();
        let mut from = match w.seen.is_empty() {
            true => w.cursor.clone(),
            // A replica whose clock runs ahead must not move the reads past the others.
            false => (w.cursor.0.min(now) - OVERLAP, String::new()),
        };
        let mut changed = Changed::default();
        loop {
            let rows = self.store.detector_rows(from.0, &from.1, PAGE).await?;
            let next = match rows.last() {
                Some(last) if rows.len() as i64 == PAGE => {
                    Some((last.decided_at, last.decision_id.clone()))
                }
                _ => None,
            };
            (w, changed) = tokio::task::spawn_blocking(move || {
                for row in &rows {
                    take_row(&mut w, row, &mut changed, now);
                }
                (w, changed)
            })
            .await
            .map_err(|e| WatchError::Panicked(e.to_string()))?;
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        if changed.ahead > 0 {
            tracing::warn!(
                "{} decisions were logged more than a minute ahead of this replica's clock: check the replicas' clocks (NTP)",
                changed.ahead
            );
        }
        // The next read starts where this one did (as the clock allows): keep what it will see.
        let next_from = w.cursor.0.min(Utc::now()) - OVERLAP;
        w.seen.retain(|_, at| *at >= next_from);
        w.tracker.refresh(&w.detector, Utc::now());
        w.erasures.0 = w.erasures.0.max(now - chrono::Duration::minutes(1));
        if !changed.links.is_empty() && !w.lock.still_held().await {
            return Err(WatchError::LockLost);
        }
        for (id, links) in changed.links {
            let Some(tracked) = w.tracker.get(&id) else {
                continue;
            };
            match changed.opened.remove(&id) {
                Some(detection) => {
                    let stored = StoredIncident {
                        tracked: tracked.clone(),
                        status: IncidentStatus::Open,
                        detection,
                        updated_at: crate::store::now(),
                    };
                    self.store.open_incident(&stored, &links).await?;
                }
                None => self.store.update_incident(tracked, &links).await?,
            }
        }
        Ok(w)
    }
}

/// A tracker with no incidents, as `policy` sets it.
fn tracker_of(policy: &IncidentPolicy) -> Tracker {
    Tracker::new(
        policy.quiet_hours,
        policy.link_probability,
        policy.detector.min_tickets as usize,
    )
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
    }
}

/// Why a turn of the watch gave up.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lock's connection stopped answering: another process may watch now.
    #[error("the database lock of the watch was lost (its connection stopped answering)")]
    LockLost,
    /// The detector panicked.
    #[error("the detector failed: {0}. This is a bug.")]
    Panicked(String),
}

/// The watch as one process's background task holds it.
#[derive(Default)]
struct Watcher {
    /// The watch, while this process holds it.
    watch: Option<Watch>,
    /// No turn before this (another process watches, or the last turn failed).
    next_try: Option<Instant>,
    /// Failed turns in a row (the pause doubles with each).
    failures: u32,
}

/// What one read changed: per incident, the tickets it took (an incident whose rate moved
/// takes none), and the detections of those it opened; and how many decisions were logged
/// ahead of this process's clock.
#[derive(Default)]
struct Changed {
    links: HashMap<String, Vec<IncidentLink>>,
    opened: HashMap<String, Detection>,
    ahead: usize,
}

/// One logged decision: counted, its routing link towards its incident's rate, and its
/// alarm (if any) opens or grows an incident.
fn take_row(w: &mut Watch, row: &DetectorRow, changed: &mut Changed, now: DateTime<Utc>) {
    if w.seen.contains_key(&row.decision_id) {
        return;
    }
    if row.decided_at > now + chrono::Duration::minutes(1) {
        changed.ahead += 1;
    }
    w.seen.insert(row.decision_id.clone(), row.decided_at);
    if (row.decided_at, &row.decision_id) > (w.cursor.0, &w.cursor.1) {
        w.cursor = (row.decided_at, row.decision_id.clone());
    }
    if let Some(id) = &row.incident_id {
        if w.tracker.note(id, row.decided_at) {
            changed.links.entry(id.clone()).or_default();
        }
    }
    let obs = Observation {
        id: row.decision_id.clone(),
        at: row.decided_at,
        chain: chain_of(&row.intent),
        language: row.language.clone(),
        embedding: row
            .vector
            .as_deref()
            .and_then(Embedding::from_bytes)
            .unwrap_or_else(|| Embedding::new(&[])),
        model_version: row.model_version.clone(),
        incident: row.incident_id.clone(),
    };
    let Some(alarm) = w.detector.observe(obs) else {
        return;
    };
    if alarm.at < w.act_from {
        return;
    }
    let new_id = || uuid::Uuid::now_v7().to_string();
    let (incident, linked) = match w.tracker.on_alarm(&alarm, &w.detector, new_id) {
        Change::Opened { incident, linked } => {
            tracing::warn!(
                incident,
                stream = ?alarm.stream,
                "incident opened: {} tickets in {} min where {:.1} were expected",
                alarm.count,
                alarm.window_minutes,
                alarm.expected
            );
            changed
                .opened
                .insert(incident.clone(), Detection::from(&alarm));
            (incident, linked)
        }
        Change::Grew { incident, linked } => (incident, linked),
        Change::Ignored => return,
    };
    let ids: Vec<String> = linked.iter().map(|(id, _)| id.clone()).collect();
    w.detector.link(&ids, &incident);
    let tracked = w
        .tracker
        .get(&incident)
        .expect("the incident the alarm changed is open. This is a bug.");
    let links = linked.into_iter().map(|(decision_id, link)| {
        let reason = link.explain(tracked);
        link_record(decision_id, &link, LinkedBy::Detection, reason, alarm.at)
    });
    changed.links.entry(incident).or_default().extend(links);
}

/// The watch's state, held by one process at a time (with the lock that says so).
struct Watch {
    lock: ExclusiveLock,
    /// The active model when the detector was built (its intents are the detector's).
    model: String,
    detector: Detector,
    /// The live incidents as the detector grows them.
    tracker: Tracker,
    /// The newest (log time, decision id) read.
    cursor: (DateTime<Utc>, String),
    /// Decisions read within [`OVERLAP`] of the newest.
    seen: HashMap<String, DateTime<Utc>>,
    /// Erasures from this time on rebuild the detector, but for these tickets' (seen).
    erasures: (DateTime<Utc>, HashSet<String>),
    /// Alarms before this time are not acted on (a rebuild's replay).
    act_from: DateTime<Utc>,
}
