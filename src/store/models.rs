//! The model registry's records: each model version and where it stands.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a model version stands in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    /// Trained (and gated); not serving.
    Candidate,
    /// Serving (exactly one model at a time).
    Active,
    /// Served before; a rollback target.
    Retired,
}

stored_names!(ModelStatus, "model status", {
    Candidate = "candidate",
    Active = "active",
    Retired = "retired",
});

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A model version in the registry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ModelRecord {
    /// Id (the version every response names).
    pub id: String,
    /// The model it was retrained from.
    pub parent: Option<String>,
    /// Classifier directory.
    pub path: String,
    /// Hash of the training data.
    pub data_hash: String,
    /// Evaluation (the gate report for candidates).
    #[schema(schema_with = crate::learn::ModelMetrics::schema)]
    pub metrics: crate::learn::ModelMetrics,
    /// Candidate, active or retired.
    pub status: ModelStatus,
    /// Scored beside the active model on live traffic.
    pub shadow: bool,
    /// Why it exists or what happened to it.
    pub note: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last became active.
    pub activated_at: Option<DateTime<Utc>>,
}
