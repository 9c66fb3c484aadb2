//! Intents added to the taxonomy through the API.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// An intent added to the taxonomy through the API.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AddedIntent {
    /// Dotted id.
    pub id: String,
    /// English description.
    pub en: String,
    /// Russian description.
    pub ru: String,
    /// Who added it.
    pub author: String,
    /// When.
    pub created_at: DateTime<Utc>,
}
