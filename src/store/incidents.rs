//! Incidents' records: an incident as stored (its state for linking included), a ticket's
//! link to one, and a routed ticket as the detector reads it back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::track::LinkedBy;
use crate::incident::{Alarm, Stream, TrackedIncident};

/// Where an incident stands, as people handle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Detected; nobody has looked at it yet. New tickets link to it.
    Open,
    /// Someone is on it. New tickets still link to it.
    Acknowledged,
    /// Over. No more tickets link to it.
    Resolved,
    /// Not an incident (a false alarm). No more tickets link to it.
    Dismissed,
}

stored_names!(IncidentStatus, "incident status", {
    Open = "open",
    Acknowledged = "acknowledged",
    Resolved = "resolved",
    Dismissed = "dismissed",
});

impl IncidentStatus {
    /// Whether new tickets link to an incident in this state.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Open | Self::Acknowledged)
    }
}

/// The alarm that opened an incident, as shown to people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Detection {
    /// The stream that alarmed.
    pub stream: Stream,
    /// When (the arrival of the ticket that raised it).
    pub at: DateTime<Utc>,
    /// Scan window, minutes.
    pub window_minutes: i64,
    /// The stream's tickets in the window.
    pub count: u64,
    /// All tickets in the window.
    pub volume: u64,
    /// The count the history expected for that volume.
    pub expected: f64,
    /// Chance of a count this high or higher by the history alone.
    pub p_value: f64,
}

impl From<&Alarm> for Detection {
    fn from(a: &Alarm) -> Self {
        Self {
            stream: a.stream.clone(),
            at: a.at,
            window_minutes: a.window_minutes,
            count: a.count,
            volume: a.volume,
            expected: a.expected,
            p_value: a.p_value,
        }
    }
}

/// An incident as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredIncident {
    /// Its state for linking: id, intent, language, centroid, spreads, recent rate.
    pub tracked: TrackedIncident,
    /// Where it stands.
    pub status: IncidentStatus,
    /// The alarm that opened it.
    pub detection: Detection,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The incident it was merged into (it then takes no tickets; its own went there).
    pub merged_into: Option<String>,
    /// The incident it was split from by a person.
    pub split_from: Option<String>,
    /// Changes to its tickets (corrections, erasures, purges) its picture does not reflect yet.
    pub remodel_marks: i64,
    /// Its tickets when it was last alerted about (it is again when they double).
    pub alerted_tickets: i64,
}

/// A decision's link to an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentLink {
    /// The decision.
    pub decision_id: String,
    /// The incident.
    pub incident_id: String,
    /// When it was linked.
    pub linked_at: DateTime<Utc>,
    /// Probability that the ticket is the incident's.
    pub probability: f64,
    /// Cosine to the incident's centroid.
    pub similarity: f32,
    /// How.
    pub linked_by: LinkedBy,
    /// The reason in words.
    pub reason: String,
    /// The incident it was linked to before a merge moved it (an unmerge moves it back).
    pub merged_from: Option<String>,
}

/// A routed ticket as the detector reads it back from the decision log.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorRow {
    /// Decision id.
    pub decision_id: String,
    /// When it was logged (the log's order; replicas commit a little out of it).
    pub decided_at: DateTime<Utc>,
    /// Resolved intent.
    pub intent: String,
    /// Language code.
    pub language: String,
    /// The model that classified it.
    pub model_version: String,
    /// Its 8-bit embedding, unless not kept or purged.
    pub vector: Option<Vec<u8>>,
    /// The incident it is linked to.
    pub incident_id: Option<String>,
}

/// A ticket's kept text, as an incident's summary reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentText {
    /// The decision.
    pub decision_id: String,
    /// The helpdesk's ticket id.
    pub ticket_id: String,
    /// Language code.
    pub language: String,
    /// Subject, if any.
    pub subject: Option<String>,
    /// Body (redacted when it was kept, if the config says so).
    pub body: String,
    /// Its embedding, unless not kept.
    pub vector: Option<Vec<u8>>,
}

/// Where an incident alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Waiting for its next attempt (or being sent under a lease).
    Pending,
    /// The receiver accepted it.
    Delivered,
    /// Given up (refused, or too many attempts); `last_error` says why; retryable.
    Dead,
}

stored_names!(AlertState, "alert state", {
    Pending = "pending",
    Delivered = "delivered",
    Dead = "dead",
});

/// An incident alert, as queued and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// Our id (UUID v7; sent as the delivery id).
    pub id: String,
    /// The incident.
    pub incident_id: String,
    /// `incident.opened` or `incident.grew`.
    pub event: String,
    /// The JSON sent (built when queued: every attempt sends the same).
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    /// Where it stands.
    pub state: AlertState,
    /// Attempts started.
    pub attempts: i64,
    /// Not sent before this time (the lease of a claim, or the next retry).
    pub next_at: DateTime<Utc>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// How an attempt to deliver an alert ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertOutcome {
    /// Accepted, with this status.
    Delivered(i64),
    /// Try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// The receiver's status, if it answered.
        status: Option<i64>,
        /// Why.
        error: String,
    },
    /// Given up.
    Dead {
        /// The receiver's status, if it answered.
        status: Option<i64>,
        /// Why.
        error: String,
    },
}

/// What an alert says of its incident (no ticket text: alerts leave the system).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AlertBody {
    /// `incident.opened` or `incident.grew`.
    pub event: String,
    /// The incident's id.
    pub incident_id: String,
    /// Its intent.
    pub intent: String,
    /// The language it is limited to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Its status.
    pub status: IncidentStatus,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When its latest ticket came.
    pub last_at: DateTime<Utc>,
    /// Tickets linked to it now.
    pub tickets: i64,
    /// The alarm that opened it.
    pub detection: Detection,
}

/// A logged decision as an incident's chart counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRow {
    /// When it was logged.
    pub at: DateTime<Utc>,
    /// Resolved intent.
    pub intent: String,
    /// Language code.
    pub language: String,
    /// The incident it is linked to.
    pub incident_id: Option<String>,
}
