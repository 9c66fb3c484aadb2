//! Threshold versions: each model's chain thresholds as edited on a running server, numbered
//! per model from 1 (0 is the model as trained; the number is the ETag).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::intent::Thresholds;

/// One stored version of a model's threshold edits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ThresholdsVersion {
    /// The model's registry id.
    pub model: String,
    /// Sequential per model (0: as trained, nothing edited).
    pub version: i64,
    /// The edits laid over the model's own thresholds (depth values, when given, replace the
    /// model's; node values replace the model's for that node).
    pub overrides: Thresholds,
    /// Who saved it (the token's name, `config`, ...).
    pub author: String,
    /// Why.
    pub note: String,
    /// When (absent for version 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

impl ThresholdsVersion {
    /// Version 0 of a model: as trained.
    pub fn as_trained(model: &str) -> Self {
        Self {
            model: model.to_string(),
            version: 0,
            overrides: Thresholds::default(),
            author: String::new(),
            note: "as trained".to_string(),
            created_at: None,
        }
    }
}
