//! Ticket endpoints: route (one and batch), classify, intents, the decision log, assignments,
//! and the service endpoints (health, readiness, metrics, OpenAPI).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code};
use super::extract::{in_range, parse_json, ApiJson, ApiPath, ApiQuery, RawBody};
use super::AppState;
use crate::config::Scope;
use crate::decision::Routed;
use crate::service::route::{ClassifyReply, Idempotency, RouteRequest, Shape};
use crate::ticket::Ticket;

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the model is loaded and warmed, the rules active and the database reachable.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.ready.load(Ordering::Acquire);
    let db = state.store.ping().await.is_ok();
    let body = json!({
        "ready": ready && db,
        "model_version": state.models.active().id,
        "shadow_model": state.models.shadow().map(|m| m.id.clone()),
        "rules_version": state.rules.current().stored.version.to_string(),
        "database": if db { "ok" } else { "unreachable" },
        "queue_depth": state.models.active().batcher.queue_depth(),
    });
    let status = if ready && db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text (scope `metrics`).
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = state.auth.check(&headers, Scope::Metrics) {
        return e.into_response();
    }
    let text = state
        .metrics
        .render(state.models.active().batcher.queue_depth());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; GET /openapi.json lists them")
}

/// Known paths with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        "this endpoint does not take that method; GET /openapi.json lists them",
    )
}

/// Hash of the endpoint and body, to tell a retry from a different request with the same key.
fn request_hash(endpoint: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(endpoint.as_bytes());
    h.update([0]);
    h.update(body);
    crate::import::hex(&h.finalize())
}

/// The request's `Idempotency-Key`, if any, with the hash of the endpoint and body.
fn idempotency(
    headers: &HeaderMap,
    endpoint: &str,
    body: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= 255 => Ok(Some(Idempotency {
            key: s.trim().to_string(),
            request_hash: request_hash(endpoint, body),
        })),
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// `DELETE /v1/tickets/{id}`: a data-subject request: erases the ticket's text, decisions,
/// assignments, shadow results, feedback and idempotency keys, and says what it removed
/// (scope `admin`).
pub async fn erase_ticket(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let removed = state.store.erase_ticket(&id).await?;
    tracing::info!(by = caller.name, "erased a ticket's data");
    Ok(Json(json!({ "ticket_id": id, "removed": removed })))
}

fn json_response(body: String, replayed: bool) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// `POST /v1/route`: one ticket -> its decision (scope `route`).
pub async fn route(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    let ticket: Ticket = parse_json(&body)?;
    let reply = state
        .route
        .route(RouteRequest {
            tickets: vec![ticket],
            shape: Shape::One,
            idempotency: idempotency(&headers, "/v1/route", &body)?,
        })
        .await?;
    Ok(json_response(reply.body, reply.replayed))
}

/// Body of `POST /v1/route/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    tickets: Vec<Ticket>,
}

/// `POST /v1/route/batch`: many tickets -> every decision, in order (scope `route`).
pub async fn route_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    let req: BatchRequest = parse_json(&body)?;
    let reply = state
        .route
        .route(RouteRequest {
            tickets: req.tickets,
            shape: Shape::Batch,
            idempotency: idempotency(&headers, "/v1/route/batch", &body)?,
        })
        .await?;
    Ok(json_response(reply.body, reply.replayed))
}

/// `POST /v1/route/dry-run`: one ticket -> the decision the active rules would make, with
/// its trace; nothing is logged or assigned (scope `route`).
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(ticket): ApiJson<Ticket>,
) -> Result<Json<Routed>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    Ok(Json(state.route.dry_run(ticket).await?))
}

/// `POST /v1/classify`: one ticket -> its classification only; nothing is logged or assigned
/// (scope `route`).
pub async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(ticket): ApiJson<Ticket>,
) -> Result<Json<ClassifyReply>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    Ok(Json(state.route.classify(ticket).await?))
}

/// `GET /v1/intents`: the taxonomy: the active model's intents and those added since, which
/// the next retraining learns (scope `route`).
pub async fn intents(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    let model = state.models.active();
    let c = model.engine.classifier();
    let tree = super::learn_api::taxonomy(&state).await?;
    let nodes: Vec<Value> = tree
        .nodes()
        .iter()
        .map(|n| {
            let parent = n.id.rsplit_once('.').map(|(p, _)| p);
            let leaf = !tree
                .nodes()
                .iter()
                .any(|m| m.id.starts_with(&format!("{}.", n.id)));
            json!({"id": n.id, "parent": parent, "en": n.en, "ru": n.ru, "leaf": leaf,
                   "in_model": c.tree.contains(&n.id)})
        })
        .collect();
    Ok(Json(json!({
        "model_version": model.id,
        "labels": c.meta.labels,
        "intents": nodes,
    })))
}

/// `GET /v1/decisions/{id}`: a logged decision (scope `route`).
pub async fn decision(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    Ok(json_response(state.store.decision(&id).await?, false))
}

/// Query of `GET /v1/assignments`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentsQuery {
    team: Option<String>,
    #[serde(default = "yes")]
    open: bool,
    #[serde(default = "hundred")]
    limit: i64,
}

fn yes() -> bool {
    true
}

fn hundred() -> i64 {
    100
}

/// `GET /v1/assignments?team=&open=true&limit=100`: assignments, newest first (scope `route`).
pub async fn assignments(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AssignmentsQuery>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    let list = state
        .store
        .assignments(
            q.team.as_deref(),
            q.open,
            in_range("limit", q.limit, 1, 10_000)?,
        )
        .await?;
    Ok(Json(json!({ "assignments": list })))
}

/// `POST /v1/assignments/{decision_id}/close`: the agent is done with the ticket (scope
/// `route`); closing twice is harmless.
pub async fn close_assignment(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Route)?;
    let a = state
        .store
        .close_assignment(&id, &format!("api:{}", caller.name))
        .await?;
    Ok(Json(json!(a)))
}
