//! The routing decision for one ticket: as the rules make it ([`Decision`]: team, assignee or
//! the strategy to pick one, status, priority, tags, the rules that fired and the trace of every
//! rule), and as it is routed ([`Routed`]: with the classification, the agent picked, the
//! versions and timings), the one record that the API returns and the decision log keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::Classification;
use crate::rules::{Assignee, Priority, Status};

/// One evaluated rule in a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TraceStep {
    /// Rule id.
    pub rule: String,
    /// Whether all its conditions held.
    pub matched: bool,
    /// The first condition that failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// A routing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Team.
    pub team: Option<String>,
    /// Agent or assignment strategy.
    pub assignee: Option<Assignee>,
    /// Status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// Tags, in the order added, without duplicates.
    pub tags: Vec<String>,
    /// Ids of the rules that matched, in order.
    pub rule_ids: Vec<String>,
    /// Every evaluated rule.
    pub trace: Vec<TraceStep>,
}

/// How the assignee was chosen, when the rules asked for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssignmentInfo {
    /// `fixed`, `round-robin`, `least-loaded` or `none`.
    pub strategy: String,
    /// Why nobody was picked, when the strategy could not pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Milliseconds spent (the stages are also in the `Server-Timing` header and the
/// `intent_router_stage_duration_seconds` histograms; decisions logged before 2026-12-06 have
/// only `inference_ms` and `total_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    /// Admission, idempotency check and classification.
    pub inference_ms: f64,
    /// Everything up to the decision log.
    pub total_ms: f64,
    /// Cleaning and tokenising the request's tickets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenize_ms: Option<f64>,
    /// Waiting in the batching queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_ms: Option<f64>,
    /// The encoder batch the ticket ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_ms: Option<f64>,
    /// Applying the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_ms: Option<f64>,
}

/// One routed ticket: the decision as `POST /v1/route` returns it, the decision log keeps it,
/// `POST /v1/route/dry-run` previews it and `classify --rules` prints it. Only a logged decision
/// has an id, an agent picked by a strategy, and timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Decision)]
pub struct Routed {
    /// Decision id (for feedback and the log); only logged decisions have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The ticket's id (given, or one the service made when routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_id: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// The agent who has the ticket, if any.
    pub assignee: Option<String>,
    /// How the agent was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<AssignmentInfo>,
    /// Status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// Tags.
    pub tags: Vec<String>,
    /// The rules that fired, in order.
    pub rule_ids: Vec<String>,
    /// The classification.
    pub intent: Classification,
    /// The ticket's language.
    pub language: String,
    /// Every evaluated rule.
    pub trace: Vec<TraceStep>,
    /// The model that classified.
    pub model_version: String,
    /// The rules that decided.
    pub rules_version: String,
    /// The version of the model's threshold edits its chain was resolved with (0: as trained;
    /// see `GET /v1/models/{id}/thresholds`); absent from decisions logged before edits existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds_version: Option<i64>,
    /// When the ticket was received.
    pub received_at: DateTime<Utc>,
    /// Whether the text was cut to the limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The open incident the ticket was linked to while routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// Why it was linked: its cosine to the incident's centroid against the incident's and the
    /// intent's usual tickets, and the rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_link: Option<String>,
    /// Time spent (routing only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// The versions a decision was made with.
#[derive(Debug, Clone)]
pub struct Versions {
    /// The model's registry id (the content hash of its directory).
    pub model: String,
    /// The rules' stored version number, or their content hash where nothing is stored.
    pub rules: String,
    /// The version of the model's threshold edits (0: as trained).
    pub thresholds: i64,
}

impl Routed {
    /// The routed form of a classified ticket and the rules' decision for it: an agent named by
    /// the rules is the assignee; a strategy's pick, the decision id and timings come when the
    /// decision is logged.
    pub fn new(
        classification: Classification,
        decision: Decision,
        versions: Versions,
        received_at: DateTime<Utc>,
        truncated: bool,
    ) -> Self {
        let assignee = match &decision.assignee {
            Some(Assignee::Agent(a)) => Some(a.clone()),
            _ => None,
        };
        Self {
            decision_id: None,
            ticket_id: classification.id.clone(),
            team: decision.team,
            assignee,
            assignment: decision.assignee.as_ref().map(|a| AssignmentInfo {
                strategy: strategy_name(a).to_string(),
                note: None,
            }),
            status: decision.status,
            priority: decision.priority,
            tags: decision.tags,
            rule_ids: decision.rule_ids,
            language: classification.language.clone(),
            intent: classification,
            trace: decision.trace,
            model_version: versions.model,
            rules_version: versions.rules,
            thresholds_version: Some(versions.thresholds),
            received_at,
            truncated,
            incident_id: None,
            incident_link: None,
            timings: None,
        }
    }

    /// Notes the live incident the ticket was linked to, with the reason.
    pub fn link_incident(&mut self, id: &str, reason: &str) {
        self.incident_id = Some(id.to_string());
        self.incident_link = Some(reason.to_string());
    }
}

/// The name of an assignee strategy in a decision.
fn strategy_name(a: &Assignee) -> &'static str {
    match a {
        Assignee::Agent(_) => "fixed",
        Assignee::RoundRobin => "round-robin",
        Assignee::LeastLoaded => "least-loaded",
        Assignee::Nobody => "none",
    }
}
