//! The decision log's records: a decision about to be logged, one read back, and the log's
//! filters.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::IncidentLink;
use crate::rules::Assignee;
use crate::ticket::Customer;

/// What is kept of a ticket for the retention period (`ticket_text_days`), apart from the
/// decision log: its text and the facts about its customer, redacted when the policy says so.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeptTicket {
    /// Subject.
    pub subject: Option<String>,
    /// Body.
    pub body: String,
    /// Customer facts.
    pub customer: Customer,
    /// Other helpdesk fields; `None` where they were not kept (decisions logged before
    /// schema 7, whose facts were dropped unredacted).
    pub fields: Option<BTreeMap<String, serde_json::Value>>,
}

/// The first answer under an idempotency key, as the decisions it logged (each the JSON
/// returned); a ticket erased since is left out.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply {
    /// Whether the request was a batch (`{"decisions": [...]}`) or one ticket.
    pub batch: bool,
    /// The decisions' JSON, in the request's order.
    pub decisions: Vec<String>,
}

/// A decision about to be logged; the assignment step fills `assignee` for strategies.
#[derive(Debug, Clone)]
pub struct NewDecision {
    /// Decision id.
    pub decision_id: String,
    /// Ticket id.
    pub ticket_id: String,
    /// When the ticket was received.
    pub received_at: DateTime<Utc>,
    /// Resolved intent.
    pub intent: String,
    /// Top-1 probability.
    pub confidence: f32,
    /// Language code.
    pub language: String,
    /// Team.
    pub team: Option<String>,
    /// What the rules said about the assignee.
    pub strategy: Option<Assignee>,
    /// The agent picked (by the assignment step, or fixed by the rules).
    pub assignee: Option<String>,
    /// Why no agent was picked, when a strategy could not pick one.
    pub assignment_note: Option<String>,
    /// Status name.
    pub status: String,
    /// Priority name.
    pub priority: String,
    /// Model version.
    pub model_version: String,
    /// Rules version.
    pub rules_version: i64,
    /// The channel the helpdesk gave.
    pub channel: Option<String>,
    /// The language the helpdesk gave (the detected one is `language`).
    pub language_given: Option<String>,
    /// What is kept of the ticket under the retention period (`None`: nothing).
    pub kept: Option<KeptTicket>,
    /// Its 8-bit embedding (`incident::Embedding::to_bytes`), kept as long as texts.
    pub vector: Option<Vec<u8>>,
    /// The open incident it was linked to while routed.
    pub incident: Option<IncidentLink>,
}

/// A logged decision, as read back.
#[derive(Debug, Clone)]
pub struct LoggedDecision {
    /// Decision id.
    pub decision_id: String,
    /// Ticket id.
    pub ticket_id: String,
    /// The channel the helpdesk gave.
    pub channel: Option<String>,
    /// The language the helpdesk gave.
    pub language_given: Option<String>,
    /// The decision as returned (JSON).
    pub decision: String,
    /// What is kept of the ticket, unless purged.
    pub kept: Option<KeptTicket>,
}

/// Filters of the decision log.
#[derive(Debug, Clone, Default)]
pub struct DecisionFilter {
    /// Intent node (matches itself and its descendants).
    pub intent: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Language code.
    pub language: Option<String>,
    /// Lowest top-1 probability.
    pub min_confidence: Option<f64>,
    /// Highest top-1 probability.
    pub max_confidence: Option<f64>,
    /// Decided at or after.
    pub since: Option<DateTime<Utc>>,
    /// Decided before.
    pub until: Option<DateTime<Utc>>,
    /// Most rows.
    pub limit: i64,
}
