//! Connector endpoints: the helpdesks' webhooks (`POST /v1/connectors/{name}/events`,
//! authenticated by the connector's own signature or secret instead of our tokens, refused
//! before the body is read when the header is missing) and, for admins, the connectors'
//! status, their inbox (events) and outbox (write-backs), and the retry of dead letters.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{in_range, ApiPath, ApiQuery};
use super::AppState;
use crate::config::Scope;
use crate::connector::InboundError;
use crate::nats::{NatsChannel, NatsStatus};
use crate::service::connectors::{ConnectorStatus, Received};
use crate::store::connectors::{InboxEvent, InboxState, OutboxState, WriteBack};

/// A helpdesk's webhook: authenticated by the connector's signature (or token), stored, then
/// acknowledged with 202; the ticket is routed and the decision written back afterwards.
/// The same delivery sent again is acknowledged and not processed twice.
#[utoipa::path(post, path = "/v1/connectors/{name}/events", operation_id = "connectorEvent",
    security(()),
    params(("name" = String, Path, description = "The connector's name.")),
    request_body(content = Object, description = "The helpdesk's own payload.", content_type = "application/json"),
    responses((status = 202, description = "Stored; processed asynchronously.", body = Received),
              (status = 401, description = "Missing or wrong signature or token (nothing stored)."),
              (status = 404, description = "No connector of that name."),
              (status = 413, description = "Over the connector's `inbound.max_body_bytes`."),
              (status = 422, description = "The payload lacks what the mapping needs.")))]
pub async fn receive(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let c = state.connectors.admit(&name, &headers)?;
    let limit = c.inbound.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(InboundError::TooLarge { limit }.into());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // Over the limit (a body without Content-Length), or the client went away.
        if e.to_string().contains("length limit") {
            ApiError::from(InboundError::TooLarge { limit })
        } else {
            ApiError::bad_request(format!("the body could not be read: {e}"))
        }
    })?;
    let received = state.connectors.receive(&c, &headers, &bytes).await?;
    Ok((StatusCode::ACCEPTED, Json(received)).into_response())
}

/// Answer of `GET /v1/connectors`.
#[derive(Serialize, ToSchema)]
pub struct ConnectorList {
    /// By name.
    connectors: Vec<ConnectorStatus>,
    /// The NATS queue channel as this replica sees it (`null` when not configured).
    nats: Option<NatsStatus>,
}

/// The configured connectors, each with its queues (pending and failed events, pending and
/// dead write-backs) and its newest event's time; and the NATS queue channel.
#[utoipa::path(get, path = "/v1/connectors", operation_id = "connectors",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The connectors.", body = ConnectorList)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<ConnectorList>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    Ok(Json(ConnectorList {
        connectors: state.connectors.status().await?,
        nats: state.nats.as_ref().map(NatsChannel::status),
    }))
}

/// Query of `GET /v1/connectors/{name}/inbox`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxQuery {
    /// Only the events in this state.
    state: Option<InboxState>,
    /// 1 to 200; other values are refused with 400.
    #[serde(default = "fifty")]
    #[param(default = 50, minimum = 1, maximum = 200)]
    limit: i64,
}

/// Query of `GET /v1/connectors/{name}/outbox`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only the write-backs in this state.
    state: Option<OutboxState>,
    /// 1 to 200; other values are refused with 400.
    #[serde(default = "fifty")]
    #[param(default = 50, minimum = 1, maximum = 200)]
    limit: i64,
}

fn fifty() -> i64 {
    50
}

/// Answer of `GET /v1/connectors/{name}/inbox`.
#[derive(Serialize, ToSchema)]
pub struct EventList {
    /// Newest first.
    events: Vec<InboxEvent>,
}

/// A connector's newest events: what each asked, where it stands, the decision it led to and
/// why it failed (the payload itself is not shown).
#[utoipa::path(get, path = "/v1/connectors/{name}/inbox", operation_id = "connectorInbox",
    security(("bearer" = ["admin"])), params(("name" = String, Path, description = "The connector's name."), InboxQuery),
    responses((status = 200, description = "The events.", body = EventList),
              (status = 404, description = "No connector of that name.")))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> Result<Json<EventList>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let limit = in_range("limit", q.limit, 1, 200)?;
    Ok(Json(EventList {
        events: state.connectors.events(&name, q.state, limit).await?,
    }))
}

/// Answer of `GET /v1/connectors/{name}/outbox`.
#[derive(Serialize, ToSchema)]
pub struct WriteBackList {
    /// Newest first.
    write_backs: Vec<WriteBack>,
}

/// A connector's newest write-backs: the requests, attempts, the helpdesk's last answer, and
/// the dead letters with the reason.
#[utoipa::path(get, path = "/v1/connectors/{name}/outbox", operation_id = "connectorWriteBacks",
    security(("bearer" = ["admin"])), params(("name" = String, Path, description = "The connector's name."), OutboxQuery),
    responses((status = 200, description = "The write-backs.", body = WriteBackList),
              (status = 404, description = "No connector of that name.")))]
pub async fn write_backs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<OutboxQuery>,
) -> Result<Json<WriteBackList>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let limit = in_range("limit", q.limit, 1, 200)?;
    Ok(Json(WriteBackList {
        write_backs: state.connectors.write_backs(&name, q.state, limit).await?,
    }))
}

/// Sends a dead write-back again (its attempts start over).
#[utoipa::path(post, path = "/v1/connectors/{name}/outbox/{id}/retry", operation_id = "retryWriteBack",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The connector's name."), ("id" = String, Path, description = "The write-back's id.")),
    responses((status = 202, description = "Queued again.", body = WriteBack),
              (status = 404, description = "No such connector or write-back."),
              (status = 409, description = "The write-back is not dead.")))]
pub async fn retry_write_back(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let w = state.connectors.retry_write_back(&name, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(w)).into_response())
}

/// Processes a failed event again (its attempts start over).
#[utoipa::path(post, path = "/v1/connectors/{name}/inbox/{id}/retry", operation_id = "retryConnectorEvent",
    security(("bearer" = ["admin"])),
    params(("name" = String, Path, description = "The connector's name."), ("id" = String, Path, description = "The event's id.")),
    responses((status = 202, description = "Queued again.", body = InboxEvent),
              (status = 404, description = "No such connector or event."),
              (status = 409, description = "The event has not failed.")))]
pub async fn retry_event(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let e = state.connectors.retry_event(&name, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(e)).into_response())
}
