//! The routing decision for one ticket, as the rules make it: team, assignee (or the strategy
//! to pick one), status, priority, tags, the rules that fired and the trace of every rule.

use serde::{Deserialize, Serialize};

use crate::rules::{Assignee, Priority, Status};

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
