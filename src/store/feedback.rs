//! Agents' corrections, and the training labels they give.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// An agent's correction about to be stored.
#[derive(Debug, Clone)]
pub struct NewFeedback {
    /// The decision corrected.
    pub decision_id: String,
    /// Its ticket.
    pub ticket_id: String,
    /// The agent who corrected it.
    pub agent: String,
    /// The token that sent it.
    pub author: String,
    /// The right intent, if the intent was wrong.
    pub correct_intent: Option<String>,
    /// The right team, if the team was wrong.
    pub correct_team: Option<String>,
    /// The right assignee, if the assignee was wrong.
    pub correct_assignee: Option<String>,
    /// What the engine said: intent.
    pub predicted_intent: String,
    /// What the engine said: team.
    pub predicted_team: Option<String>,
    /// The rules that fired.
    pub rule_ids: Vec<String>,
    /// Ticket language.
    pub language: String,
    /// Ticket subject and body (for training), when still kept.
    pub text: Option<(Option<String>, String)>,
}

/// A stored correction.
#[derive(Debug, Clone, Serialize)]
pub struct Feedback {
    /// Id.
    pub feedback_id: String,
    /// The decision corrected.
    pub decision_id: String,
    /// Its ticket.
    pub ticket_id: String,
    /// The agent.
    pub agent: String,
    /// Right intent.
    pub correct_intent: Option<String>,
    /// Right team.
    pub correct_team: Option<String>,
    /// Right assignee.
    pub correct_assignee: Option<String>,
    /// The engine's intent.
    pub predicted_intent: String,
    /// The engine's team.
    pub predicted_team: Option<String>,
    /// The rules that fired.
    pub rule_ids: Vec<String>,
    /// Ticket language.
    pub language: String,
    /// Whether the ticket text is kept (an intent correction then is a training label).
    pub has_text: bool,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A training label from agents: the latest intent correction of a ticket whose text is kept.
#[derive(Debug, Clone)]
pub struct Correction {
    /// Ticket id (fixes its train / held-out split forever).
    pub ticket_id: String,
    /// Subject.
    pub subject: Option<String>,
    /// Body.
    pub body: String,
    /// The right intent.
    pub intent: String,
    /// Language.
    pub language: String,
}
