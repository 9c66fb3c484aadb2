//! The routing decision for one ticket: as the rules make it ([`Decision`]: team, assignee or
//! the strategy to pick one, status, priority, tags, the rules that fired and the trace of every
//! rule), and as it is routed ([`Routed`]: with the classification, the agent picked, the
//! versions and timings), the one record that the API returns and the decision log keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::Classification;
use crate::rules::{Assignee, Priority, Status};
use crate::ticket::Ticket;

/// One evaluated rule in a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentInfo {
    /// `fixed`, `round-robin`, `least-loaded` or `none`.
    pub strategy: String,
    /// Why nobody was picked, when the strategy could not pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Milliseconds spent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Admission, idempotency check and classification.
    pub inference_ms: f64,
    /// Everything up to the decision log.
    pub total_ms: f64,
}

/// One routed ticket: the decision as the API returns it and the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routed {
    /// Decision id (for feedback and the log).
    pub decision_id: String,
    /// The ticket's id (given, or a new one).
    pub ticket_id: String,
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
    /// When the ticket was received.
    pub received_at: DateTime<Utc>,
    /// Whether the text was cut to the limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Time spent.
    pub timings: Timings,
}

/// The rule inputs the log keeps for simulation: the ticket without its text (kept apart,
/// under retention), its classification and when it was received.
#[derive(Serialize, Deserialize)]
pub struct RuleInputs {
    /// Ticket facts (subject and body emptied).
    pub ticket: Ticket,
    /// Classification.
    pub classification: Classification,
    /// Time the rules saw.
    pub received_at: DateTime<Utc>,
}
