//! The watch: one process at a time across replicas reads the decision log, feeds the
//! detector, and opens and grows incidents.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{link_record, tracker_of, IncidentService};
use crate::incident::detect::chain_of;
use crate::incident::track::LinkedBy;
use crate::incident::{Change, Detector, Embedding, Observation, TrackedIncident, Tracker};
use crate::store::{
    spawn_on_changes, Changes, Detection, DetectorRow, Exclusive, ExclusiveLock, IncidentLink,
    IncidentStatus, StoreError, StoredIncident, Topic,
};

/// How far back a rebuild's alarms still open incidents.
const CATCH_UP: chrono::Duration = chrono::Duration::minutes(15);

/// A process that does not hold the watch tries to take it every this many turns.
const TRY_EVERY: u32 = 6;

/// Rows read from the log at a time.
const PAGE: i64 = 2_000;

/// How long after an incident is stored a replica may still route a ticket without knowing
/// of it (it hears of the incident at once through PostgreSQL's notifications, and the watch's
/// own process reloads it at once).
const LATE: chrono::Duration = chrono::Duration::seconds(5);

/// How far back each read looks again: replicas commit decisions a little out of the order
/// of their log times, so a read starts this much before the newest time seen (the decisions
/// seen since are skipped).
const OVERLAP: chrono::Duration = chrono::Duration::minutes(5);

impl IncidentService {
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
        self.spawn_alerts();
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
                Some(lock) => {
                    self.remodel_marked().await?;
                    self.rebuild(lock, None).await?
                }
                None => return Ok(false),
            },
            Some(mut w) => {
                if !w.lock.still_held().await {
                    return Err(WatchError::LockLost);
                }
                self.remodel_marked().await?;
                let erased = self.store.erased_since(w.erasures.0).await?;
                let model = self.models.active().id.clone();
                if erased.iter().any(|(t, _)| !w.erasures.1.contains(t)) || model != w.model {
                    // An erased ticket's vector may sit in the detector's memory, and a new
                    // model brings its own intents: start again from the log. Alarms act
                    // again only on decisions not read before.
                    let act_from = w.cursor.0;
                    self.rebuild(w.lock, Some(act_from)).await?
                } else {
                    self.follow_people(&mut w).await?;
                    self.read_new(w).await?
                }
            }
        };
        *state = Some(w);
        Ok(true)
    }

    /// Takes people's changes into the watch: incidents resolved, dismissed or merged leave
    /// its tracker, reopened and split ones join it, corrected ones bring their new picture
    /// (the watch's own count of their tickets stays); tickets unlinked count again as the
    /// intent's usual ones.
    async fn follow_people(&self, w: &mut Watch) -> Result<(), StoreError> {
        let since = w.unlinks_from;
        w.unlinks_from = Utc::now() - chrono::Duration::minutes(1);
        let unlinked = self.store.unlinked_since(since).await?;
        w.detector.unlink(&unlinked);
        let tracker = &mut w.tracker;
        let live = self.live().await?;
        let mut mine: HashMap<String, TrackedIncident> = std::mem::take(&mut tracker.open)
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        tracker.open = live
            .into_iter()
            .map(|mut stored| match mine.remove(&stored.id) {
                // Counted again since (a correction): its count, and the tickets this watch
                // counted after it.
                Some(m) if m.revision < stored.revision => {
                    stored.extend_rate(&m);
                    stored
                }
                Some(mut m) => {
                    m.adopt_model(&stored);
                    m.absorb_rate(&stored);
                    m
                }
                None => stored,
            })
            .collect();
        Ok(())
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
            late: HashMap::new(),
            unlinks_from: erasures_from,
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
        w.late.retain(|_, until| *until >= next_from);
        w.tracker.refresh(&w.detector, Utc::now());
        w.erasures.0 = w.erasures.0.max(now - chrono::Duration::minutes(1));
        if !changed.links.is_empty() && !w.lock.still_held().await {
            return Err(WatchError::LockLost);
        }
        let mut reload = false;
        let alerts = self.policy.alerts.is_some();
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
                        merged_into: None,
                        split_from: None,
                        remodel_marks: 0,
                        alerted_tickets: 0,
                    };
                    self.store.open_incident(&stored, &links, alerts).await?;
                    self.metrics.incident_opened();
                    // Replicas know of it from now on (a moment for them to hear of it).
                    w.late.insert(id, Utc::now() + LATE);
                }
                None => {
                    // People's corrections since the turn began come back with it.
                    let stored = self.store.update_incident(tracked, &links, alerts).await?;
                    w.tracker.replace(stored);
                }
            }
            reload = true;
        }
        if reload {
            // This process links against the new state at once (other replicas when they
            // hear of it).
            self.reload().await?;
        }
        Ok(w)
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
    let mut obs = Observation {
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
    if obs.incident.is_none() {
        if let Some(link) = late_link(w, &obs, now) {
            w.tracker.note(&link.incident_id, obs.at);
            obs.incident = Some(link.incident_id.clone());
            changed
                .links
                .entry(link.incident_id.clone())
                .or_default()
                .push(link);
        }
    }
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
            // Being opened: tickets routed until it is stored did not know of it.
            w.late.insert(incident.clone(), DateTime::<Utc>::MAX_UTC);
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

/// A ticket routed while the incident it belongs to was opening (before the replicas knew
/// of it), linked now; its decision stays as it was.
fn late_link(w: &Watch, o: &Observation, now: DateTime<Utc>) -> Option<IncidentLink> {
    let (link, incident) = w.tracker.peek(&o.chain, &o.language, &o.embedding, o.at)?;
    let until = w.late.get(&incident.id)?;
    if o.at > *until || o.at < incident.opened_at {
        return None;
    }
    let reason = format!(
        "linked after it was routed (the incident was opening then): {}",
        link.explain(incident)
    );
    Some(link_record(
        o.id.clone(),
        &link,
        LinkedBy::Detection,
        reason,
        now,
    ))
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
    /// Unlinks from this time on are taken into the detector at the next turn.
    unlinks_from: DateTime<Utc>,
    /// Incidents this watch opened, and until when tickets were routed without knowing of
    /// them (those that belong to one are linked as they are read).
    late: HashMap<String, DateTime<Utc>>,
}
