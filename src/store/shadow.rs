//! Shadow results: a candidate model's intent beside the active one's, per decision.

/// One shadow comparison row: the active and shadow intents of a decision and, if an agent
/// corrected it, the right one.
#[derive(Debug, Clone)]
pub struct ShadowRow {
    /// Active model's intent.
    pub active: String,
    /// Shadow model's intent.
    pub shadow: String,
    /// The agent's intent, when corrected.
    pub correct: Option<String>,
}
