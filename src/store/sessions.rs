//! Console sessions: kept in the database, so that a login on one replica works on every
//! other one behind a load balancer without sticky sessions. Stored under the hash of the
//! cookie's value, never the value itself.

use chrono::{DateTime, Utc};

/// A console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The admin token's name it stands for.
    pub name: String,
    /// The anti-CSRF token every change must echo in `X-CSRF-Token`.
    pub csrf: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}
