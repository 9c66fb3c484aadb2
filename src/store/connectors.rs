//! Helpdesk connectors' shared state: the inbox (events received from a helpdesk, stored before
//! they are acknowledged and processed once per delivery id) and the outbox (write-backs to the
//! helpdesk, retried until delivered, superseded or dead-lettered). Both are claimed by any
//! replica with a lease, so a replica that dies mid-way leaves its work to another.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a received event asks of us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A ticket was created: route it and write the decision back.
    Created,
    /// The helpdesk solved or closed the ticket: close our assignment.
    Closed,
    /// An agent moved the ticket to another team: a correction for the learning loop.
    Reassigned,
    /// Anything else (updates, replies): recorded, nothing routed.
    Ignored,
}

/// Where an inbox event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InboxState {
    /// Waiting to be processed (or being processed under a lease).
    Pending,
    /// Processed.
    Done,
    /// Given up after too many attempts; `error` says why (retry from the API).
    Failed,
}

/// Where a write-back stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutboxState {
    /// Waiting for its next attempt (or being sent under a lease).
    Pending,
    /// The helpdesk accepted every request.
    Delivered,
    /// An agent changed the ticket first; not retried, nothing overwritten.
    Superseded,
    /// Given up (refused, unmapped, or too many attempts); `last_error` says why.
    Dead,
}

stored_names!(EventKind, "event kind", {
    Created = "created",
    Closed = "closed",
    Reassigned = "reassigned",
    Ignored = "ignored",
});
stored_names!(InboxState, "inbox state", {
    Pending = "pending",
    Done = "done",
    Failed = "failed",
});
stored_names!(OutboxState, "outbox state", {
    Pending = "pending",
    Delivered = "delivered",
    Superseded = "superseded",
    Dead = "dead",
});

/// An event to store in the inbox.
#[derive(Debug, Clone)]
pub struct NewInboxEvent {
    /// The connector's name.
    pub connector: String,
    /// The helpdesk's delivery id (a second delivery with it is a duplicate).
    pub delivery_id: String,
    /// What it asks.
    pub kind: EventKind,
    /// The helpdesk's own name of the event (`ticket.created`, a trigger's name...).
    pub event_type: String,
    /// The helpdesk's ticket id.
    pub ticket_id: String,
    /// The ticket to route (JSON of [`crate::ticket::Ticket`]), for created tickets; cleared
    /// once processed.
    pub ticket: Option<String>,
    /// What the connector's write-back needs of the event (JSON: the ticket's update stamp...).
    pub context: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// A stored inbox event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InboxEvent {
    /// Our id (UUID v7).
    pub id: String,
    /// The connector's name.
    pub connector: String,
    /// The helpdesk's delivery id.
    pub delivery_id: String,
    /// What it asks.
    pub kind: EventKind,
    /// The helpdesk's name of the event.
    pub event_type: String,
    /// The helpdesk's ticket id.
    pub ticket_id: String,
    /// The ticket to route, until processed (never returned by the API).
    #[serde(skip)]
    pub ticket: Option<String>,
    /// What the write-back needs of the event (never returned by the API).
    #[serde(skip)]
    pub context: Option<String>,
    /// Where it stands.
    pub state: InboxState,
    /// Processing attempts started.
    pub attempts: i64,
    /// Not processed before this time (the lease of a claim, or the next retry).
    pub next_at: DateTime<Utc>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// When it was processed or given up.
    pub done_at: Option<DateTime<Utc>>,
    /// The decision it led to (created tickets), or the one whose assignment it closed.
    pub decision_id: Option<String>,
    /// Why the last attempt failed, or a note on what was done.
    pub error: Option<String>,
}

/// One HTTP request of a write-back: built when the write-back is queued (so every retry
/// sends the same request), authenticated when sent (credentials stay in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpCall {
    /// `POST`, `PUT`...
    pub method: String,
    /// A path under the connector's API base URL, or a full URL.
    pub path: String,
    /// The JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Before sending, read the ticket here and add its `tags` to the body's (for an API that
    /// can only replace a ticket's tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_tags_from: Option<String>,
}

/// A write-back to queue.
#[derive(Debug, Clone)]
pub struct NewWriteBack {
    /// The connector's name.
    pub connector: String,
    /// The helpdesk's ticket id.
    pub ticket_id: String,
    /// The decision written back (one write-back per decision and connector).
    pub decision_id: String,
    /// The requests, sent in order.
    pub requests: Vec<HttpCall>,
    /// What the event kept for building them (rebuilt with it when retried).
    pub context: Option<String>,
    /// Dead at once with this reason (a team without a mapping): visible, retryable.
    pub dead: Option<String>,
}

/// A stored write-back.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WriteBack {
    /// Our id (UUID v7; sent as the delivery id).
    pub id: String,
    /// The connector's name.
    pub connector: String,
    /// The helpdesk's ticket id.
    pub ticket_id: String,
    /// The decision written back.
    pub decision_id: String,
    /// The requests, sent in order.
    pub requests: Vec<HttpCall>,
    /// What the event kept for building them (never returned by the API).
    #[serde(skip)]
    pub context: Option<String>,
    /// How many of them the helpdesk accepted.
    pub step: i64,
    /// Where it stands.
    pub state: OutboxState,
    /// Attempts started.
    pub attempts: i64,
    /// Not sent before this time (the lease of a claim, or the next retry).
    pub next_at: DateTime<Utc>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it was delivered, superseded or given up.
    pub finished_at: Option<DateTime<Utc>>,
    /// The helpdesk's last HTTP status.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// How processing an inbox event ended.
#[derive(Debug, Clone)]
pub enum InboxOutcome {
    /// Done: the decision it led to (or closed) and the write-back to queue, in one transaction.
    Done {
        /// The decision.
        decision_id: Option<String>,
        /// What was done, when worth saying (`no decision for this ticket`).
        note: Option<String>,
        /// The write-back.
        write_back: Option<NewWriteBack>,
    },
    /// Try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// Why this attempt failed.
        error: String,
    },
    /// Given up.
    Failed {
        /// Why.
        error: String,
    },
}

/// How an attempt to deliver a write-back ended.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Every request accepted.
    Delivered {
        /// How many requests (all of them).
        step: i64,
        /// The last status.
        status: i64,
    },
    /// The first `step` requests accepted; try the rest at `at`.
    Retry {
        /// Requests accepted so far.
        step: i64,
        /// When to try again.
        at: DateTime<Utc>,
        /// The helpdesk's status, if it answered.
        status: Option<i64>,
        /// Why.
        error: String,
    },
    /// Not tried: the helpdesk's rate limit is used up until `at` (the attempt is not counted).
    Postponed {
        /// When the limit allows the next request.
        at: DateTime<Utc>,
    },
    /// An agent acted first; not retried.
    Superseded {
        /// The status.
        status: i64,
        /// What the helpdesk said.
        error: String,
    },
    /// Given up.
    Dead {
        /// Requests accepted before.
        step: i64,
        /// The helpdesk's status, if it answered.
        status: Option<i64>,
        /// Why.
        error: String,
    },
}

/// One connector's queues, for its status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueCounts {
    /// Events waiting.
    pub inbox_pending: i64,
    /// Events given up.
    pub inbox_failed: i64,
    /// Write-backs waiting.
    pub outbox_pending: i64,
    /// Write-backs dead-lettered.
    pub outbox_dead: i64,
    /// Write-backs delivered (still on record).
    pub outbox_delivered: i64,
    /// The newest event's arrival.
    pub last_event_at: Option<DateTime<Utc>>,
}
