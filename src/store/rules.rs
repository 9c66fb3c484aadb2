//! Rules versions: every saved rules file, numbered (the number is the ETag).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One stored version of the rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RulesVersion {
    /// Sequential version number (the ETag).
    pub version: i64,
    /// Content hash of the text.
    pub content_hash: String,
    /// The rules file.
    pub text: String,
    /// Who saved it (the token's name, `seed`, ...).
    pub author: String,
    /// Why (`seeded from rules.toml`, `rollback to 3`, ...).
    pub note: String,
    /// When.
    pub created_at: DateTime<Utc>,
}
