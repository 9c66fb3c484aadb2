//! Assignments: which agent has which ticket, open until closed through the API or expired.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One assignment of a ticket to an agent.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Assignment {
    /// The decision that made it.
    pub decision_id: String,
    /// Team.
    pub team: String,
    /// Agent.
    pub agent: String,
    /// When.
    pub opened_at: DateTime<Utc>,
    /// When it was closed, if it was.
    pub closed_at: Option<DateTime<Utc>>,
    /// Who or what closed it (`api:<token>`, `expired`).
    pub closed_by: Option<String>,
}
