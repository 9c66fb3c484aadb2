//! The route use case: admission and truncation of tickets, idempotent replay, classification
//! through the active model's batching worker, the rules, the assignment step and the decision
//! log (one transaction), then shadow scoring off the request's path. Also the read-only
//! variants (classify, dry run) that stop earlier. Owns no state: it holds the live handles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::assign::{self, AssignmentPolicy, Pick};
use crate::decision::{Routed, Timings, Versions};
use crate::engine::{decide_for, Classification};
use crate::incident::Embedding;
use crate::metrics::Metrics;
use crate::rules::live::{ActiveRules, LiveRules};
use crate::rules::Assignee;
use crate::service::incidents::{IncidentService, Linked};
use crate::serving::{Classified, ClassifyError, LiveModels, ServingModel, Stages};
use crate::store::{
    DecisionLog, DecisionTx, KeptTicket, NewDecision, Store, StoreError, StoredReply,
};
use crate::ticket::{Customer, Ticket};

/// Why tickets were not routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A ticket has neither subject nor body.
    #[error("{at}: the ticket has no text; send `body` (or `text`) and/or `subject`")]
    EmptyTicket {
        /// Where in the request (`ticket`, `tickets[3]`).
        at: String,
    },
    /// A ticket id is blank or too long.
    #[error("{at}.id: must be 1 to 256 characters")]
    BadTicketId {
        /// Where in the request.
        at: String,
    },
    /// A batch without tickets.
    #[error("tickets: the list is empty")]
    NoTickets,
    /// A batch over the limit.
    #[error(
        "tickets: {count} tickets in one request; the limit is {max} (limits.max_batch_tickets)"
    )]
    TooManyTickets {
        /// Tickets sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Classification failed (queue full, worker stopped, model error).
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    /// The decision log failed (idempotency key reused, write failure).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RouteError {
    /// Whether the same tickets may route later (the queue was full, the database failed),
    /// unlike a ticket that will never pass or an idempotency key reused for another request.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Classify(_) => true,
            Self::Store(s) => !matches!(s, StoreError::IdempotencyMismatch(_)),
            _ => false,
        }
    }
}

/// The limits and storage choices of routing.
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// Text beyond this many characters (subject + body) is cut before classification.
    pub max_ticket_chars: usize,
    /// Tickets in one batch request.
    pub max_batch_tickets: usize,
    /// Keep ticket texts, customer facts and fields (under retention); `false`: never stored.
    pub keep_text: bool,
    /// Replace personal data in what is kept.
    pub redact_stored_text: bool,
    /// Rosters and assignment expiry.
    pub assignment: AssignmentPolicy,
}

/// How the answer is shaped: one ticket gives its decision, a batch `{"decisions": [...]}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One ticket in, one decision out.
    One,
    /// A list in, a list out.
    Batch,
}

/// An idempotency key and the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// Hash of the endpoint and body (a retry has the same).
    pub request_hash: String,
}

/// Tickets to route.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    /// The tickets, in order.
    pub tickets: Vec<Ticket>,
    /// One or a batch.
    pub shape: Shape,
    /// Retries with the same key get the first answer.
    pub idempotency: Option<Idempotency>,
}

/// The answer: the JSON body (stored with the idempotency key, so a retry gets the same bytes)
/// and the decisions it holds.
#[derive(Debug)]
pub struct RouteReply {
    /// The response body.
    pub body: String,
    /// Whether this is the stored answer to an earlier request with the same key.
    pub replayed: bool,
    /// The decisions made now (empty when replayed).
    pub decisions: Vec<Routed>,
    /// Where the time went (none when replayed).
    pub stages: Option<StageTimes>,
}

impl RouteReply {
    /// The one decision of a single-ticket request, made now or replayed from the stored
    /// answer.
    pub fn into_decision(self) -> Result<Routed, serde_json::Error> {
        match self.decisions.into_iter().next() {
            Some(d) => Ok(d),
            None => serde_json::from_str(&self.body),
        }
    }
}

/// Where one routing call's time went, by stage (for a batch: the slowest ticket's queue and
/// encoder time, the rules of all tickets). Named as in the `Server-Timing` header and the
/// `intent_router_stage_duration_seconds{stage}` histograms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Cleaning and tokenising.
    pub tokenize: Duration,
    /// Waiting in the batching queue.
    pub queue: Duration,
    /// Encoder batches.
    pub inference: Duration,
    /// Applying the rules.
    pub rules: Duration,
    /// The decision log: assignment, inserts, commit.
    pub store: Duration,
    /// The whole call.
    pub total: Duration,
}

impl StageTimes {
    /// Each stage by name, as the `Server-Timing` header and the metrics name them.
    pub fn named(&self) -> [(&'static str, Duration); 6] {
        [
            ("tokenize", self.tokenize),
            ("queue", self.queue),
            ("encoder", self.inference),
            ("rules", self.rules),
            ("store", self.store),
            ("total", self.total),
        ]
    }
}

/// One ticket's classification, as `POST /v1/classify` returns it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ClassificationWithModel)]
pub struct ClassifyReply {
    /// The classification.
    #[serde(flatten)]
    pub classification: Classification,
    /// The model that classified.
    pub model_version: String,
    /// The version of the model's threshold edits the chain was resolved with (0: as trained).
    pub thresholds_version: i64,
    /// Whether the text was cut to the limit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Admitted and classified tickets (the simulation's input).
pub struct Admitted {
    /// The tickets, with ids and text as classified.
    pub tickets: Vec<Ticket>,
    /// Their classification, in order.
    pub classifications: Vec<Classification>,
}

/// The route use case; cheap to clone (handles only).
#[derive(Clone)]
pub struct RouteService {
    models: LiveModels,
    rules: LiveRules,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    policy: Arc<RoutePolicy>,
    incidents: IncidentService,
}

impl RouteService {
    /// A service over the live models and rules, logging to `store` and linking tickets to
    /// `incidents`.
    pub fn new(
        models: LiveModels,
        rules: LiveRules,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        policy: RoutePolicy,
        incidents: IncidentService,
    ) -> Self {
        Self {
            models,
            rules,
            store,
            metrics,
            policy: Arc::new(policy),
            incidents,
        }
    }

    /// Routes tickets: classifies, decides, assigns and logs them in one transaction; a retry
    /// with the same idempotency key gets the first answer and changes nothing.
    pub async fn route(&self, req: RouteRequest) -> Result<RouteReply, RouteError> {
        let start = Instant::now();
        let received = Utc::now();
        if req.shape == Shape::Batch {
            self.check_batch(req.tickets.len())?;
        }
        let mut tickets = req.tickets;
        let truncated = self.admit_all(&mut tickets, req.shape)?;
        for t in &mut tickets {
            t.id.get_or_insert_with(|| uuid::Uuid::now_v7().to_string());
        }
        let idem = req
            .idempotency
            .as_ref()
            .map(|i| (i.key.as_str(), i.request_hash.as_str()));
        if let Some((key, hash)) = idem {
            if let Some(first) = self.store.idempotent_response(key, hash).await? {
                return Ok(replayed(first));
            }
        }
        let classified = self.models.active().classify(&tickets, None).await?;
        let round = Round {
            model: &classified.model,
            thresholds_version: classified.thresholds_version,
            rules: self.rules.current(),
            received,
            start,
            inference_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        let logging = Instant::now();
        let mut pending = Vec::with_capacity(tickets.len());
        let mut rules = Duration::ZERO;
        for (((ticket, c), embedding), cut) in tickets
            .iter()
            .zip(&classified.classifications)
            .zip(&classified.embeddings)
            .zip(truncated)
        {
            let embedding = self.incidents.enabled().then(|| Embedding::new(embedding));
            let linked = embedding
                .as_ref()
                .and_then(|e| self.incidents.link(c, e, round.received));
            let (mut decided, took) = self.decide_one(&round, ticket, c, cut, linked.as_ref());
            let record = &mut decided.record;
            if self.policy.keep_text {
                record.vector = embedding.map(|e| e.to_bytes());
            }
            record.incident = linked.map(|l| l.record(&record.decision_id, round.received));
            rules += took;
            pending.push((decided, took));
        }
        // The teams whose assignment step runs are locked first, in one order for all.
        let teams = pending
            .iter()
            .filter(|(d, _)| {
                d.record
                    .strategy
                    .as_ref()
                    .is_some_and(|s| *s != Assignee::Nobody)
            })
            .filter_map(|(d, _)| d.routed.team.clone())
            .collect();
        let mut tx = match self
            .store
            .begin_decisions(idem, &teams, self.policy.assignment.close_after)
            .await?
        {
            DecisionLog::Replay(first) => return Ok(replayed(first)),
            DecisionLog::Open(tx) => tx,
        };
        let mut decisions = Vec::with_capacity(tickets.len());
        let mut json = Vec::with_capacity(tickets.len());
        let mut stages = StageTimes {
            rules,
            ..StageTimes::default()
        };
        for ((decided, took), s) in pending.into_iter().zip(&classified.stages) {
            let (routed, body) = self.log_one(&mut tx, &round, decided, took, s).await?;
            json.push(body);
            decisions.push(routed);
            stages.tokenize = s.tokenize;
            stages.queue = stages.queue.max(s.queue);
            stages.inference = stages.inference.max(s.inference);
        }
        let batch = req.shape == Shape::Batch;
        if let Some(first) = tx.commit(batch).await? {
            return Ok(replayed(first));
        }
        let body = body(batch, &json);
        stages.store = logging.elapsed().saturating_sub(stages.rules);
        stages.total = start.elapsed();
        for (name, took) in stages.named() {
            self.metrics.stage(name, took.as_secs_f64());
        }
        for d in &decisions {
            self.metrics
                .decision(d.team.as_deref(), &d.intent.resolution.intent);
        }
        let ids = decisions
            .iter()
            .filter_map(|d| d.decision_id.clone())
            .collect();
        self.shadow_score(tickets, classified, ids);
        Ok(RouteReply {
            body,
            replayed: false,
            decisions,
            stages: Some(stages),
        })
    }

    /// Decides one classified ticket (the rules); returns the decision with its log row and the
    /// time the rules took.
    fn decide_one(
        &self,
        round: &Round<'_>,
        ticket: &Ticket,
        c: &Classification,
        truncated: bool,
        linked: Option<&Linked>,
    ) -> (Decided, Duration) {
        let deciding = Instant::now();
        let incident = linked.map(|l| l.link.incident.as_str());
        let decision = decide_for(&round.rules.ruleset, ticket, c, round.received, incident);
        let took = deciding.elapsed();
        let strategy = decision.assignee.clone();
        let received_at = ticket.received_at.unwrap_or(round.received);
        let mut routed = Routed::new(
            c.clone(),
            decision,
            round.versions(),
            received_at,
            truncated,
        );
        if let Some(l) = linked {
            routed.link_incident(&l.link.incident, &l.reason);
        }
        let record = self.new_decision(ticket, &routed, strategy, round);
        (Decided { routed, record }, took)
    }

    /// Runs the assignment step of a decided ticket and logs the decision in `tx`; returns the
    /// decision and its JSON as stored.
    async fn log_one(
        &self,
        tx: &mut DecisionTx,
        round: &Round<'_>,
        Decided {
            mut routed,
            mut record,
        }: Decided,
        rules: Duration,
        stages: &Stages,
    ) -> Result<(Routed, String), RouteError> {
        if let (Some(team), Some(strategy)) = (&routed.team, &record.strategy) {
            let policy = &self.policy.assignment;
            match assign::assign(tx, policy, &record.decision_id, team, strategy).await? {
                Some(Pick::Agent(a)) => record.assignee = Some(a),
                Some(Pick::Unassigned(why)) => record.assignment_note = Some(why),
                None => {}
            }
        }
        routed.decision_id = Some(record.decision_id.clone());
        routed.assignee = record.assignee.clone();
        if let Some(a) = &mut routed.assignment {
            a.note = record.assignment_note.clone();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        routed.timings = Some(Timings {
            inference_ms: round.inference_ms,
            total_ms: ms(round.start.elapsed()),
            tokenize_ms: Some(ms(stages.tokenize)),
            queue_ms: Some(ms(stages.queue)),
            encoder_ms: Some(ms(stages.inference)),
            rules_ms: Some(ms(rules)),
        });
        let body = serde_json::to_string(&routed).expect("a decision serialises. This is a bug.");
        tx.insert_decision(&record, &body).await?;
        Ok((routed, body))
    }

    /// Classifies one ticket; nothing is logged or assigned.
    pub async fn classify(&self, mut ticket: Ticket) -> Result<ClassifyReply, RouteError> {
        let truncated = admit(&mut ticket, self.policy.max_ticket_chars, "ticket")?;
        let mut out = self.models.active().classify(&[ticket], None).await?;
        Ok(ClassifyReply {
            classification: out.classifications.remove(0),
            model_version: out.model.id.clone(),
            thresholds_version: out.thresholds_version,
            truncated,
        })
    }

    /// The decision the active rules would make for one ticket, with its trace; nothing is
    /// logged or assigned.
    pub async fn dry_run(&self, mut ticket: Ticket) -> Result<Routed, RouteError> {
        let truncated = admit(&mut ticket, self.policy.max_ticket_chars, "ticket")?;
        let mut out = self
            .models
            .active()
            .classify(std::slice::from_ref(&ticket), None)
            .await?;
        let c = out.classifications.remove(0);
        let rules = self.rules.current();
        let now = Utc::now();
        let linked = self
            .incidents
            .peek(&c, &Embedding::new(&out.embeddings[0]), now);
        let incident = linked.as_ref().map(|l| l.link.incident.as_str());
        let d = decide_for(&rules.ruleset, &ticket, &c, now, incident);
        let versions = Versions {
            model: out.model.id.clone(),
            rules: rules.stored.version.to_string(),
            thresholds: out.thresholds_version,
        };
        let received_at = ticket.received_at.unwrap_or(now);
        let mut routed = Routed::new(c, d, versions, received_at, truncated);
        if let Some(l) = &linked {
            routed.link_incident(&l.link.incident, &l.reason);
        }
        Ok(routed)
    }

    /// Admits and classifies a list of tickets (as a batch route would), logging nothing.
    pub async fn classify_all(&self, mut tickets: Vec<Ticket>) -> Result<Admitted, RouteError> {
        self.admit_all(&mut tickets, Shape::Batch)?;
        let classified = self.models.active().classify(&tickets, None).await?;
        Ok(Admitted {
            tickets,
            classifications: classified.classifications,
        })
    }

    fn check_batch(&self, count: usize) -> Result<(), RouteError> {
        let max = self.policy.max_batch_tickets;
        if count == 0 {
            return Err(RouteError::NoTickets);
        }
        if count > max {
            return Err(RouteError::TooManyTickets { count, max });
        }
        Ok(())
    }

    /// Admits every ticket (see [`admit`]); returns which were cut.
    fn admit_all(&self, tickets: &mut [Ticket], shape: Shape) -> Result<Vec<bool>, RouteError> {
        tickets
            .iter_mut()
            .enumerate()
            .map(|(i, t)| {
                let at = match shape {
                    Shape::One => "ticket".to_string(),
                    Shape::Batch => format!("tickets[{i}]"),
                };
                admit(t, self.policy.max_ticket_chars, &at)
            })
            .collect()
    }

    /// The log row of a decision, before the assignment step.
    fn new_decision(
        &self,
        ticket: &Ticket,
        routed: &Routed,
        strategy: Option<Assignee>,
        round: &Round<'_>,
    ) -> NewDecision {
        let c = &routed.intent;
        NewDecision {
            decision_id: uuid::Uuid::now_v7().to_string(),
            ticket_id: ticket.id.clone().unwrap_or_default(),
            received_at: routed.received_at,
            intent: c.resolution.intent.clone(),
            confidence: c.resolution.top_k.first().map_or(0.0, |s| s.p),
            language: c.language.clone(),
            team: routed.team.clone(),
            strategy,
            assignee: routed.assignee.clone(),
            assignment_note: None,
            status: routed.status.name().to_string(),
            priority: routed.priority.name().to_string(),
            model_version: round.model.id.clone(),
            rules_version: round.rules.stored.version,
            channel: ticket.channel.clone(),
            language_given: ticket.language.clone(),
            kept: self.policy.keep_text.then(|| self.kept(ticket)),
            vector: None,
            incident: None,
        }
    }

    /// What is kept of a ticket (text, customer, fields): with personal data replaced when the
    /// policy says so.
    fn kept(&self, t: &Ticket) -> KeptTicket {
        if !self.policy.redact_stored_text {
            return KeptTicket {
                subject: t.subject.clone(),
                body: t.body.clone(),
                customer: t.customer.clone(),
                fields: Some(t.fields.clone()),
            };
        }
        let text = |s: &str| crate::privacy::redact(s).0;
        KeptTicket {
            subject: t.subject.as_deref().map(text),
            body: text(&t.body),
            customer: Customer {
                tier: t.customer.tier.as_deref().map(text),
            },
            fields: Some(
                t.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), crate::privacy::redact_json(v)))
                    .collect(),
            ),
        }
    }

    /// Scores routed tickets with the shadow model, if one runs, and logs its intents; off the
    /// request's path. A shadow on the active encoder reuses the embeddings; another encoder
    /// gets its texts queued best-effort (skipped when its queue is full).
    fn shadow_score(&self, tickets: Vec<Ticket>, active: Classified, decision_ids: Vec<String>) {
        let Some(shadow) = self.models.shadow() else {
            return;
        };
        let embeddings = shadow
            .shares_encoder(&active.model)
            .then_some(active.embeddings);
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            let scored = match shadow.classify(&tickets, embeddings).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("shadow scoring skipped: {e}");
                    return;
                }
            };
            for (c, id) in scored.classifications.iter().zip(decision_ids) {
                let conf = c.resolution.top_k.first().map_or(0.0, |s| s.p);
                if let Err(e) = store
                    .insert_shadow(&id, &shadow.id, &c.resolution.intent, conf)
                    .await
                {
                    tracing::warn!("logging a shadow result: {e}");
                }
            }
        });
    }
}

/// A ticket the rules decided, with its log row, before the assignment step.
struct Decided {
    routed: Routed,
    record: NewDecision,
}

/// What one routing call decides with: the model and the rules it read once, and its clock.
struct Round<'a> {
    model: &'a ServingModel,
    thresholds_version: i64,
    rules: Arc<ActiveRules>,
    received: DateTime<Utc>,
    start: Instant,
    inference_ms: f64,
}

impl Round<'_> {
    fn versions(&self) -> Versions {
        Versions {
            model: self.model.id.clone(),
            rules: self.rules.stored.version.to_string(),
            thresholds: self.thresholds_version,
        }
    }
}

/// The answer's body: one decision, or a batch's `{"decisions": [...]}`.
fn body(batch: bool, decisions: &[String]) -> String {
    if batch {
        format!("{{\"decisions\":[{}]}}", decisions.join(","))
    } else {
        decisions.concat()
    }
}

/// The answer to a request that repeats an earlier one's idempotency key: the first answer's
/// decisions as they were returned (a ticket erased since is left out).
fn replayed(first: StoredReply) -> RouteReply {
    RouteReply {
        body: body(first.batch, &first.decisions),
        replayed: true,
        decisions: Vec::new(),
        stages: None,
    }
}

/// Checks a ticket: it must have text; text beyond `max_chars` characters is cut (returns
/// whether it was). `at` says where the ticket is in the request.
pub fn admit(ticket: &mut Ticket, max_chars: usize, at: &str) -> Result<bool, RouteError> {
    let subject_len = ticket.subject.as_deref().map_or(0, |s| s.chars().count());
    if ticket.body.trim().is_empty()
        && ticket
            .subject
            .as_deref()
            .is_none_or(|s| s.trim().is_empty())
    {
        return Err(RouteError::EmptyTicket { at: at.to_string() });
    }
    if let Some(id) = &ticket.id {
        if id.trim().is_empty() || id.chars().count() > 256 {
            return Err(RouteError::BadTicketId { at: at.to_string() });
        }
    }
    let body_len = ticket.body.chars().count();
    if subject_len + body_len <= max_chars {
        return Ok(false);
    }
    if subject_len >= max_chars {
        let s: String = ticket
            .subject
            .as_deref()
            .unwrap_or_default()
            .chars()
            .take(max_chars)
            .collect();
        ticket.subject = Some(s);
        ticket.body.clear();
    } else {
        ticket.body = ticket.body.chars().take(max_chars - subject_len).collect();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_refuses_empty_tickets_and_cuts_long_ones() {
        let mut t = Ticket {
            subject: Some("  ".into()),
            ..Default::default()
        };
        let e = admit(&mut t, 10, "tickets[2]").unwrap_err();
        assert!(matches!(e, RouteError::EmptyTicket { .. }));
        assert!(e
            .to_string()
            .starts_with("tickets[2]: the ticket has no text"));
        let mut t = Ticket {
            subject: Some("Тема".into()),
            body: "абвгдежзий".into(),
            ..Default::default()
        };
        assert!(admit(&mut t, 8, "ticket").unwrap());
        assert_eq!(t.body, "абвг");
        let mut t = Ticket::from_text("short");
        assert!(!admit(&mut t, 8, "ticket").unwrap());
    }
}
