//! The decision log's records: a decision about to be logged, one read back, and the log's
//! filters.

use chrono::{DateTime, Utc};

use crate::rules::Assignee;

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
    /// The rule inputs as JSON (ticket facts without text, classification, time).
    pub inputs: String,
    /// Ticket subject and body, kept under the retention period.
    pub text: Option<(Option<String>, String)>,
}

/// A logged decision, as read back.
#[derive(Debug, Clone)]
pub struct LoggedDecision {
    /// Decision id.
    pub decision_id: String,
    /// Ticket id.
    pub ticket_id: String,
    /// Rule inputs (JSON).
    pub inputs: String,
    /// The decision as returned (JSON).
    pub decision: String,
    /// Subject and body, unless purged.
    pub text: Option<(Option<String>, String)>,
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
