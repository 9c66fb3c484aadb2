//! The connectors' use cases: an authenticated webhook is stored in the inbox before it is
//! acknowledged; the inbox worker routes created tickets through the route service (the same
//! path as `POST /v1/route`, idempotent per delivery, so a retry after a crash replays the
//! decision instead of making a second) and queues the write-back in the same transaction
//! that marks the event done; the outbox worker sends write-backs with retries, backoff and
//! jitter, the helpdesk's `Retry-After`, and a per-connector rate limit held in the database
//! (so it holds across replicas), and dead-letters what cannot be delivered. Any replica may
//! claim any row; a claim is a lease, so a replica that dies leaves its rows to another.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::feedback::Correction;
use super::route::{Idempotency, RouteRequest, Shape};
use super::{FeedbackError, FeedbackService, RouteError, RouteService};
use crate::connector::{Answer, Connector, Connectors, InboundError, WriteBackTarget};
use crate::decision::Routed;
use crate::metrics::Metrics;
use crate::store::connectors::{
    Delivery, EventKind, HttpCall, InboxEvent, InboxOutcome, InboxState, OutboxState, QueueCounts,
    WriteBack,
};
use crate::store::{Store, StoreError};
use crate::ticket::Ticket;

/// Why a connector operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The request was refused (unknown connector, authenticity, size, payload).
    #[error(transparent)]
    Inbound(#[from] InboundError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A retry of something that did not fail.
    #[error("{0}")]
    NotRetryable(String),
}

/// What became of a received webhook.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Received {
    /// The stored event's id.
    pub event_id: String,
    /// Whether the same delivery was received before (then nothing new happens).
    pub duplicate: bool,
    /// What it asks.
    pub kind: EventKind,
}

/// A connector as the API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ConnectorStatus {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Where webhooks go.
    pub events_url: String,
    /// Whether decisions are written back.
    pub write_back: bool,
    /// Its queues.
    #[serde(flatten)]
    pub queues: QueueCounts,
}

/// Processing events claimed at once.
const CLAIM: i64 = 64;
/// Attempts at processing an event before it fails (the model overloaded or the database
/// down all that time).
const INBOX_ATTEMPTS: i64 = 20;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The connectors' handle (cheap to clone): configuration, inbox and outbox workers.
#[derive(Clone)]
pub struct ConnectorService {
    connectors: Arc<RwLock<Arc<Connectors>>>,
    store: Arc<Store>,
    route: RouteService,
    feedback: FeedbackService,
    metrics: Arc<Metrics>,
    inbox_ready: Arc<Notify>,
    outbox_ready: Arc<Notify>,
    agent: ureq::Agent,
    lease: Duration,
}

impl ConnectorService {
    /// The service over the configured connectors; a claim on an event holds for `lease` (a
    /// write-back's, for `lease` and its requests' time limits).
    pub fn new(
        connectors: Connectors,
        store: Arc<Store>,
        route: RouteService,
        feedback: FeedbackService,
        metrics: Arc<Metrics>,
        lease: Duration,
    ) -> Self {
        Self {
            connectors: Arc::new(RwLock::new(Arc::new(connectors))),
            store,
            route,
            feedback,
            metrics,
            inbox_ready: Arc::new(Notify::new()),
            outbox_ready: Arc::new(Notify::new()),
            agent: ureq::AgentBuilder::new()
                .user_agent(concat!("intent-router/", env!("CARGO_PKG_VERSION")))
                .build(),
            lease,
        }
    }

    /// The connectors now (the set is replaced whole on reload).
    pub fn connectors(&self) -> Arc<Connectors> {
        self.connectors.read().expect("connectors lock").clone()
    }

    /// Replaces the connectors (SIGHUP: rotated secrets, new mappings).
    pub fn reload(&self, connectors: Connectors) {
        *self.connectors.write().expect("connectors lock") = Arc::new(connectors);
    }

    /// The connector of a name.
    pub fn connector(&self, name: &str) -> Result<Arc<Connector>, ConnectorError> {
        Ok(self.connectors().get(name)?)
    }

    /// The connector a webhook is for, if its headers carry the connector's authentication
    /// (checked before the body is read).
    pub fn admit(
        &self,
        name: &str,
        headers: &http::HeaderMap,
    ) -> Result<Arc<Connector>, ConnectorError> {
        let c = self.connector(name)?;
        if let Err(e) = c.check_headers(headers) {
            self.metrics.connector_event(&c.name, "refused");
            return Err(e.into());
        }
        Ok(c)
    }

    /// Stores an authenticated webhook (refused: nothing is stored) and wakes the inbox worker;
    /// once this returns, the event survives a crash.
    pub async fn receive(
        &self,
        c: &Connector,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Received, ConnectorError> {
        let now = crate::store::now();
        let refused = |e: InboundError| {
            self.metrics.connector_event(&c.name, "refused");
            e
        };
        c.verify(headers, body, now).map_err(refused)?;
        let event = c.parse(headers, body, now).map_err(refused)?;
        let (event_id, new) = self.store.insert_inbox(&event).await?;
        self.metrics
            .connector_event(&c.name, if new { "accepted" } else { "duplicate" });
        if new {
            self.inbox_ready.notify_one();
        }
        Ok(Received {
            event_id,
            duplicate: !new,
            kind: event.kind,
        })
    }

    /// Every connector with its queues.
    pub async fn status(&self) -> Result<Vec<ConnectorStatus>, ConnectorError> {
        let mut out = Vec::new();
        for c in self.connectors().all() {
            out.push(ConnectorStatus {
                name: c.name.clone(),
                kind: c.kind.name().to_string(),
                events_url: format!("/v1/connectors/{}/events", c.name),
                write_back: c.write_back.is_some(),
                queues: self.store.queue_counts(&c.name).await?,
            });
        }
        Ok(out)
    }

    /// A connector's newest events.
    pub async fn events(
        &self,
        name: &str,
        state: Option<InboxState>,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, ConnectorError> {
        self.connector(name)?;
        Ok(self.store.inbox_events(name, state, limit).await?)
    }

    /// A connector's newest write-backs.
    pub async fn write_backs(
        &self,
        name: &str,
        state: Option<OutboxState>,
        limit: i64,
    ) -> Result<Vec<WriteBack>, ConnectorError> {
        self.connector(name)?;
        Ok(self.store.write_backs(name, state, limit).await?)
    }

    /// Queues a dead write-back again, at once, its requests rebuilt from the logged decision
    /// with the connector's mapping as it is now (fixed since, perhaps); if they are the same,
    /// it goes on where it stopped.
    pub async fn retry_write_back(
        &self,
        name: &str,
        id: &str,
    ) -> Result<WriteBack, ConnectorError> {
        let c = self.connector(name)?;
        let w = self.store.write_back(id).await?;
        if w.connector != name {
            return Err(
                StoreError::NotFound(format!("no write-back {id} of connector {name}")).into(),
            );
        }
        let not_dead = |w: &WriteBack| {
            ConnectorError::NotRetryable(format!(
                "write-back {id} is {}, not dead: only dead write-backs are retried",
                w.state.name()
            ))
        };
        if w.state != OutboxState::Dead {
            return Err(not_dead(&w));
        }
        let decision: Routed = serde_json::from_str(&self.store.decision(&w.decision_id).await?)
            .map_err(|e| StoreError::Corrupt(format!("decision {}: {e}", w.decision_id)))?;
        let rebuilt = c.write_back(&w.ticket_id, &decision, w.context.as_deref());
        let requests = match rebuilt {
            Some(b) if b.dead.is_none() => b.requests,
            Some(b) => {
                let why = b.dead.unwrap_or_default();
                return Err(ConnectorError::NotRetryable(format!(
                    "write-back {id} still cannot be built: {why}"
                )));
            }
            None => {
                return Err(ConnectorError::NotRetryable(format!(
                    "connector {name} no longer writes back"
                )))
            }
        };
        let changed = (requests != w.requests).then_some(requests.as_slice());
        match self.store.retry_write_back(name, id, changed).await? {
            Some(w) => {
                self.outbox_ready.notify_one();
                Ok(w)
            }
            None => Err(not_dead(&self.store.write_back(id).await?)),
        }
    }

    /// Queues a failed event again, at once.
    pub async fn retry_event(&self, name: &str, id: &str) -> Result<InboxEvent, ConnectorError> {
        self.connector(name)?;
        match self.store.retry_inbox(name, id).await? {
            Some(e) => {
                self.inbox_ready.notify_one();
                Ok(e)
            }
            None => {
                let e = self.store.inbox_event(id).await?;
                if e.connector != name {
                    return Err(
                        StoreError::NotFound(format!("no event {id} of connector {name}")).into(),
                    );
                }
                Err(ConnectorError::NotRetryable(format!(
                    "event {id} is {}, not failed: only failed events are retried",
                    e.state.name()
                )))
            }
        }
    }

    /// Starts the inbox and outbox workers: each works while there is work, then waits for a
    /// wake-up or `every` (retries that come due, rows left by a replica that died).
    pub fn spawn_workers(&self, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if me.inbox_round().await == 0 {
                    me.wait(&me.inbox_ready, every).await;
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if me.outbox_round().await == 0 {
                    me.wait(&me.outbox_ready, every).await;
                }
            }
        });
    }

    async fn wait(&self, ready: &Notify, every: Duration) {
        tokio::select! {
            _ = ready.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }

    /// Claims due events and processes them side by side (so the batcher batches them);
    /// returns how many were claimed.
    pub async fn inbox_round(&self) -> usize {
        let lease = crate::store::now() + span(self.lease);
        let events = match self.store.claim_inbox(lease, CLAIM).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("claiming connector events: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return 0;
            }
        };
        let n = events.len();
        let mut work = JoinSet::new();
        for e in events {
            let me = self.clone();
            work.spawn(async move {
                let outcome = me.process(&e).await;
                let queued = matches!(
                    &outcome,
                    InboxOutcome::Done {
                        write_back: Some(_),
                        ..
                    }
                );
                if let Err(err) = me.store.finish_inbox(&e.id, e.next_at, &outcome).await {
                    // The lease ends and the event is processed again (idempotently).
                    tracing::error!(event = %e.id, "recording a processed event: {err}");
                } else if queued {
                    me.outbox_ready.notify_one();
                }
            });
        }
        while work.join_next().await.is_some() {}
        n
    }

    /// What to do with one event.
    async fn process(&self, e: &InboxEvent) -> InboxOutcome {
        let c = match self.connector(&e.connector) {
            Ok(c) => c,
            Err(err) => {
                return InboxOutcome::Failed {
                    error: err.to_string(),
                }
            }
        };
        match e.kind {
            EventKind::Created => self.route_event(&c, e).await,
            EventKind::Closed => self.close_event(e).await,
            EventKind::Reassigned => self.reassigned_event(e).await,
            EventKind::Ignored => InboxOutcome::Done {
                decision_id: None,
                note: None,
                write_back: None,
            },
        }
    }

    /// Routes a created ticket (idempotent per delivery) and builds its write-back.
    async fn route_event(&self, c: &Connector, e: &InboxEvent) -> InboxOutcome {
        let Some(stored) = e.ticket.as_deref() else {
            return InboxOutcome::Failed {
                error: "the event's ticket is no longer stored (retention or erasure)".into(),
            };
        };
        let mut ticket: Ticket = match serde_json::from_str(stored) {
            Ok(t) => t,
            Err(err) => {
                return InboxOutcome::Failed {
                    error: format!("the stored ticket is unreadable: {err}"),
                }
            }
        };
        ticket.received_at.get_or_insert(e.received_at);
        let request = RouteRequest {
            tickets: vec![ticket],
            shape: Shape::One,
            idempotency: Some(Idempotency {
                key: format!("connector:{}:{}", e.connector, e.delivery_id),
                request_hash: crate::connector::sign::hex(&Sha256::digest(stored.as_bytes())),
            }),
        };
        let reply = match self.route.route(request).await {
            Ok(r) => r,
            Err(err) => return self.after_error(e, err),
        };
        let decision = match reply.into_decision() {
            Ok(d) => d,
            Err(err) => {
                return InboxOutcome::Failed {
                    error: format!("the replayed decision is unreadable: {err}"),
                }
            }
        };
        InboxOutcome::Done {
            write_back: c.write_back(&e.ticket_id, &decision, e.context.as_deref()),
            decision_id: decision.decision_id,
            note: None,
        }
    }

    /// A failed routing attempt: again later if it may pass then, else failed.
    fn after_error(&self, e: &InboxEvent, err: RouteError) -> InboxOutcome {
        if err.is_transient() && e.attempts < INBOX_ATTEMPTS {
            InboxOutcome::Retry {
                at: crate::store::now() + backoff(e.attempts),
                error: err.to_string(),
            }
        } else {
            InboxOutcome::Failed {
                error: err.to_string(),
            }
        }
    }

    /// Closes the assignment of the ticket's newest decision.
    async fn close_event(&self, e: &InboxEvent) -> InboxOutcome {
        let done = |decision_id: Option<String>, note: &str| InboxOutcome::Done {
            decision_id,
            note: Some(note.to_string()),
            write_back: None,
        };
        let decision_id = match self
            .store
            .decision_for_feedback(None, Some(&e.ticket_id))
            .await
        {
            Ok((id, _)) => id,
            Err(StoreError::NotFound(_)) => return done(None, "no decision for this ticket"),
            Err(err) => return self.after_error(e, err.into()),
        };
        let by = format!("connector:{}", e.connector);
        match self.store.close_assignment(&decision_id, &by).await {
            Ok(_) => done(Some(decision_id), "assignment closed"),
            Err(StoreError::NotFound(_)) => {
                done(Some(decision_id), "the decision assigned no agent")
            }
            Err(err) => self.after_error(e, err.into()),
        }
    }

    /// An agent moved the ticket to another team: unless it is the team we chose, a correction
    /// of the ticket's newest decision, by the helpdesk (author `connector:NAME`), and the
    /// decision's assignment closed if it was open (the agent we picked no longer has the
    /// ticket, so least-loaded counts stay true).
    async fn reassigned_event(&self, e: &InboxEvent) -> InboxOutcome {
        let context: serde_json::Value = e
            .context
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default();
        let (Some(team), Some(agent)) = (context["team"].as_str(), context["agent"].as_str())
        else {
            return InboxOutcome::Failed {
                error: "the event's team is no longer stored".into(),
            };
        };
        let done = |decision_id: Option<String>, note: String| InboxOutcome::Done {
            decision_id,
            note: Some(note),
            write_back: None,
        };
        let (decision_id, before) = match self
            .store
            .decision_for_feedback(None, Some(&e.ticket_id))
            .await
        {
            Ok(found) => found,
            Err(StoreError::NotFound(_)) => {
                return done(None, "no decision for this ticket".into())
            }
            Err(err) => return self.after_error(e, err.into()),
        };
        if before.predicted_team.as_deref() == Some(team) {
            return done(Some(decision_id), format!("team {team}: the one we chose"));
        }
        let correction = Correction {
            decision_id: Some(decision_id.clone()),
            ticket_id: Some(e.ticket_id.clone()),
            intent: None,
            team: Some(team.to_string()),
            assignee: None,
            agent: agent.to_string(),
        };
        let by = format!("connector:{}", e.connector);
        match self.feedback.correct(correction, by.clone()).await {
            Ok(_) => {}
            Err(FeedbackError::Store(err)) => return self.after_error(e, err.into()),
            Err(err) => {
                return InboxOutcome::Failed {
                    error: err.to_string(),
                }
            }
        }
        let note = format!(
            "correction by {agent}: team {team}, not {}",
            before.predicted_team.as_deref().unwrap_or("none")
        );
        match self.store.close_assignment(&decision_id, &by).await {
            Ok(_) => done(
                Some(decision_id),
                format!("{note}; its assignment is closed"),
            ),
            Err(StoreError::NotFound(_)) => done(Some(decision_id), note),
            Err(err) => self.after_error(e, err.into()),
        }
    }

    /// Claims due write-backs and sends them side by side; returns how many were claimed.
    pub async fn outbox_round(&self) -> usize {
        // Long enough for the slowest connector's requests (a write-back has at most a few).
        let slowest = self
            .connectors()
            .all()
            .filter_map(|c| c.write_back.as_ref().map(|t| t.timeout))
            .max()
            .unwrap_or_default();
        let lease = crate::store::now() + span(self.lease + slowest * 4);
        let items = match self.store.claim_outbox(lease, CLAIM).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("claiming write-backs: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return 0;
            }
        };
        let n = items.len();
        let mut work = JoinSet::new();
        for w in items {
            let me = self.clone();
            work.spawn(async move {
                let d = me.deliver(&w).await;
                let outcome = match &d {
                    Delivery::Delivered { .. } => "delivered",
                    Delivery::Retry { .. } => "retry",
                    Delivery::Postponed { .. } => "postponed",
                    Delivery::Superseded { .. } => "superseded",
                    Delivery::Dead { .. } => "dead",
                };
                me.metrics.write_back(&w.connector, outcome);
                if let Err(err) = me.store.finish_write_back(&w.id, w.next_at, &d).await {
                    tracing::error!(write_back = %w.id, "recording a delivery: {err}");
                }
            });
        }
        while work.join_next().await.is_some() {}
        n
    }

    /// One attempt at a write-back: its remaining requests in order.
    async fn deliver(&self, w: &WriteBack) -> Delivery {
        let dead = |error: String| Delivery::Dead {
            step: w.step,
            status: None,
            error,
        };
        let c = match self.connector(&w.connector) {
            Ok(c) => c,
            Err(e) => return dead(e.to_string()),
        };
        let Some(target) = &c.write_back else {
            return dead(format!("connector {} no longer writes back", c.name));
        };
        if w.requests.is_empty() {
            return dead("nothing to send: the write-back could not be built (retry it once the mapping is fixed)".into());
        }
        if let Some(wait) = self.rate_limited(&c, target, w).await {
            return wait;
        }
        let mut last = 0;
        let remaining = w.requests.iter().skip(usize::try_from(w.step).unwrap_or(0));
        for (step, call) in (w.step..).zip(remaining) {
            let sent = self.send(&c, target.timeout, &w.id, call).await;
            match sent {
                Sent::Status {
                    status,
                    retry_after,
                    excerpt,
                } => {
                    let what =
                        format!("{} {} answered {status}{excerpt}", call.method, c.url(call));
                    match c.answer(status) {
                        Answer::Accepted => last = i64::from(status),
                        Answer::Retry => {
                            return self.retry(w, step, Some(status.into()), what, retry_after)
                        }
                        Answer::Superseded => {
                            return Delivery::Superseded {
                                status: status.into(),
                                error: what,
                            }
                        }
                        Answer::Refused => {
                            return Delivery::Dead {
                                step,
                                status: Some(status.into()),
                                error: what,
                            }
                        }
                    }
                }
                Sent::Failed(why) => {
                    return self.retry(
                        w,
                        step,
                        None,
                        format!("{} {}: {why}", call.method, c.url(call)),
                        None,
                    )
                }
            }
        }
        Delivery::Delivered {
            step: i64::try_from(w.requests.len()).unwrap_or(i64::MAX),
            status: last,
        }
    }

    /// Takes a use of the connector's limits (per minute, and per ticket in ten minutes; held
    /// in the database, so shared by the replicas): `None` when both had one free (or there
    /// are none), else the delivery postponed to the start of the next window.
    async fn rate_limited(
        &self,
        c: &Connector,
        target: &WriteBackTarget,
        w: &WriteBack,
    ) -> Option<Delivery> {
        // The ticket's limit first, so that a minute's requests are not used up for nothing.
        let limits = [
            (
                target.per_ticket,
                600,
                format!("write-back:{}:ticket:{}", c.name, w.ticket_id),
            ),
            (target.per_minute, 60, format!("write-back:{}", c.name)),
        ];
        // A use per request still to send.
        let tokens = i64::try_from(w.requests.len()).unwrap_or(i64::MAX) - w.step;
        for (limit, seconds, key) in limits {
            let Some(limit) = limit else { continue };
            let now = crate::store::now();
            let span_us = seconds * 1_000_000;
            let window =
                now - chrono::Duration::microseconds(now.timestamp_micros().rem_euclid(span_us));
            match self
                .store
                .take_rate(&key, window, limit.into(), tokens)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    let jitter = rand::rng().random_range(0..1000);
                    let at = window
                        + chrono::Duration::microseconds(span_us)
                        + chrono::Duration::milliseconds(jitter);
                    return Some(Delivery::Postponed { at });
                }
                Err(e) => {
                    let why = format!("the rate limit could not be read: {e}");
                    return Some(self.retry(w, w.step, None, why, None));
                }
            }
        }
        None
    }

    /// A failed attempt: again after the backoff (or the helpdesk's `Retry-After`), or dead
    /// once the attempts are used up.
    fn retry(
        &self,
        w: &WriteBack,
        step: i64,
        status: Option<i64>,
        error: String,
        retry_after: Option<Duration>,
    ) -> Delivery {
        let max = self
            .connector(&w.connector)
            .ok()
            .and_then(|c| c.write_back.as_ref().map(|t| t.max_attempts))
            .unwrap_or(1);
        if w.attempts >= i64::from(max) {
            return Delivery::Dead {
                step,
                status,
                error: format!("gave up after {} attempts; the last: {error}", w.attempts),
            };
        }
        // The helpdesk's `Retry-After` when it asks for longer than the backoff (never a zero
        // wait: a `Retry-After: 0` must not spin through the attempts).
        let backoff = backoff(w.attempts);
        let wait = retry_after.map_or(backoff, |d| span(d.min(MAX_RETRY_AFTER)).max(backoff));
        Delivery::Retry {
            step,
            at: crate::store::now() + wait,
            status,
            error,
        }
    }

    /// Sends one request (on the blocking pool: the HTTP client blocks); for an API that only
    /// replaces tags, the ticket's tags are read first and ours added to them.
    async fn send(
        &self,
        c: &Connector,
        timeout: Duration,
        delivery: &str,
        call: &HttpCall,
    ) -> Sent {
        let mut body = call.body.clone();
        if let (Some(path), Some(b)) = (&call.merge_tags_from, body.as_mut()) {
            let read = HttpCall {
                method: "GET".into(),
                path: path.clone(),
                body: None,
                merge_tags_from: None,
            };
            let theirs = match self.exchange(c, timeout, delivery, &read, None).await {
                Ok((_, text)) => serde_json::from_str::<serde_json::Value>(&text).ok(),
                Err(failed) => return failed,
            };
            let mut tags: Vec<serde_json::Value> = theirs
                .and_then(|t| t.get("tags").and_then(|t| t.as_array()).cloned())
                .unwrap_or_default();
            for ours in b["tags"].as_array().cloned().unwrap_or_default() {
                if !tags.contains(&ours) {
                    tags.push(ours);
                }
            }
            b["tags"] = serde_json::Value::Array(tags);
        }
        let body = body.map(|b| serde_json::to_vec(&b).expect("JSON serialises"));
        match self.exchange(c, timeout, delivery, call, body).await {
            Ok((status, _)) => Sent::Status {
                status,
                retry_after: None,
                excerpt: String::new(),
            },
            Err(failed) => failed,
        }
    }

    /// One HTTP exchange: the status and body of a 2xx, else what came of it.
    async fn exchange(
        &self,
        c: &Connector,
        timeout: Duration,
        delivery: &str,
        call: &HttpCall,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, String), Sent> {
        let body = body.unwrap_or_default();
        let mut req = self
            .agent
            .request(&call.method, &c.url(call))
            .timeout(timeout)
            .set("X-Intent-Router-Delivery", delivery);
        if call.method != "GET" {
            req = req.set("Content-Type", "application/json");
        }
        for (k, v) in c.outbound_headers(&body, Utc::now()) {
            req = req.set(&k, &v);
        }
        let get = call.method == "GET";
        let done = tokio::task::spawn_blocking(move || {
            let sent = if get {
                req.call()
            } else {
                req.send_bytes(&body)
            };
            match sent {
                Ok(r) => {
                    let status = r.status();
                    Ok((status, r.into_string().unwrap_or_default()))
                }
                Err(ureq::Error::Status(status, r)) => {
                    let retry_after = r.header("Retry-After").and_then(parse_retry_after);
                    let text = r.into_string().unwrap_or_default();
                    let excerpt: String = text.chars().take(300).collect();
                    let excerpt = if excerpt.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", excerpt.trim())
                    };
                    Err(Sent::Status {
                        status,
                        retry_after,
                        excerpt,
                    })
                }
                Err(ureq::Error::Transport(t)) => Err(Sent::Failed(t.to_string())),
            }
        })
        .await;
        done.unwrap_or_else(|e| Err(Sent::Failed(format!("the request's task failed: {e}"))))
    }
}

/// What came of one request.
enum Sent {
    /// The helpdesk answered.
    Status {
        status: u16,
        retry_after: Option<Duration>,
        excerpt: String,
    },
    /// No answer (refused connection, timeout, TLS).
    Failed(String),
}

/// A duration as chrono's (capped at a day: leases and waits are short).
fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d.min(Duration::from_secs(86_400))).expect("a day fits")
}

/// [`jittered_backoff`] as chrono's duration.
fn backoff(attempts: i64) -> chrono::Duration {
    span(jittered_backoff(attempts))
}

/// The wait before attempt `attempts + 1`: 2^attempts seconds up to ten minutes, half of it
/// random (so many retries do not come back at once).
pub(crate) fn jittered_backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(0, 20) as u32;
    let full = Duration::from_secs(1u64 << exp).min(MAX_BACKOFF);
    let half = full / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// A `Retry-After` value: seconds, or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at: DateTime<Utc> = DateTime::parse_from_rfc2822(v).ok()?.to_utc();
    (at - Utc::now()).to_std().ok().or(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_ten_minutes() {
        for (attempts, full) in [(0, 1), (1, 2), (3, 8), (12, 600), (40, 600)] {
            let b = backoff(attempts).num_milliseconds();
            assert!((full * 500..=full * 1000).contains(&b), "{attempts}: {b}");
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!((85..=90).contains(&d.as_secs()), "{d:?}");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
