//! Ticket endpoints: route (one and batch), classify, intents, the decision log, assignments,
//! and the service endpoints (health, readiness, metrics, OpenAPI).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, Code};
use super::extract::{in_range, parse_json, ApiJson, ApiPath, ApiQuery, RawBody};
use super::AppState;
use crate::config::Scope;
use crate::decision::Routed;
use crate::service::route::{ClassifyReply, Idempotency, RouteReply, RouteRequest, Shape};
use crate::store::Assignment;
use crate::ticket::Ticket;

/// Answer of `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz",
    responses((status = 200, description = "Up.", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Answer of `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// Model warmed, rules active and database reachable.
    ready: bool,
    /// The active model.
    model_version: String,
    /// The model scored in shadow, if any.
    shadow_model: Option<String>,
    /// The active rules version.
    rules_version: String,
    /// `ok` or `unreachable`.
    database: String,
    /// Tickets waiting for the inference worker.
    queue_depth: usize,
}

/// The model is loaded and warmed, the rules active, the database reachable.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz",
    responses((status = 200, description = "Ready.", body = Readiness),
              (status = 503, description = "Not ready (same body).", body = Readiness)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.ready.load(Ordering::Acquire);
    let db = state.store.ping().await.is_ok();
    let body = Readiness {
        ready: ready && db,
        model_version: state.models.active().id.clone(),
        shadow_model: state.models.shadow().map(|m| m.id.clone()),
        rules_version: state.rules.current().stored.version.to_string(),
        database: if db { "ok" } else { "unreachable" }.to_string(),
        queue_depth: state.models.active().batcher.queue_depth(),
    };
    let status = if ready && db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", security(("bearer" = ["metrics"])),
    responses((status = 200, description = "Metrics.", body = String,
               content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Err(e) = state.auth.permit(caller, Scope::Metrics) {
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

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
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

/// Answer of `DELETE /v1/tickets/{id}`.
#[derive(Serialize, ToSchema)]
pub struct Erased {
    /// The ticket.
    ticket_id: String,
    /// Rows removed, per kind of data.
    removed: std::collections::BTreeMap<&'static str, u64>,
}

/// Data-subject erasure: the ticket's stored text and facts, decisions, assignments, shadow
/// results, feedback, its decisions in idempotency keys and its embedding-cache entries (on
/// every replica); says what it removed.
#[utoipa::path(delete, path = "/v1/tickets/{id}", operation_id = "eraseTicket",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "The ticket's id.")),
    responses((status = 200, description = "Erased.", body = Erased),
              (status = 404, description = "No data about that ticket.")))]
pub async fn erase_ticket(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Erased>, ApiError> {
    let caller = state.auth.permit(caller, Scope::Admin)?;
    let removed = state.erasure.erase(&id).await?;
    tracing::info!(by = caller.name, "erased a ticket's data");
    Ok(Json(Erased {
        ticket_id: id,
        removed,
    }))
}

fn json_response(body: String, replayed: bool) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// A routing answer: the body, `Idempotent-Replayed` on a replay, and the stages' times in a
/// standard `Server-Timing` header (milliseconds).
fn route_response(reply: RouteReply) -> Response {
    let mut resp = json_response(reply.body, reply.replayed);
    if let Some(stages) = reply.stages {
        let timing = stages
            .named()
            .iter()
            .map(|(name, took)| format!("{name};dur={:.3}", took.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&timing) {
            resp.headers_mut().insert("server-timing", v);
        }
    }
    resp
}

/// Route one ticket: classify, apply the rules, assign, log.
#[utoipa::path(post, path = "/v1/route", operation_id = "route", security(("bearer" = ["route"])),
    params(IdempotencyKey), request_body = Ticket,
    responses((status = 200, description = "The decision.", body = Routed,
               headers(("Idempotent-Replayed" = String, description = "`true` on a replayed answer."),
                       ("Server-Timing" = String, description = "Milliseconds by stage: tokenize, queue, encoder, rules, store, total (not on a replay).")))))]
pub async fn route(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    state.auth.permit(caller, Scope::Route)?;
    let ticket: Ticket = parse_json(&body)?;
    let reply = state
        .route
        .route(RouteRequest {
            tickets: vec![ticket],
            shape: Shape::One,
            idempotency: idempotency(&headers, "/v1/route", &body)?,
        })
        .await?;
    Ok(route_response(reply))
}

/// Body of `POST /v1/route/batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to limits.max_batch_tickets (default 256; more is 413 too_many_tickets).
    #[schema(min_items = 1)]
    #[serde(deserialize_with = "crate::ticket::objects")]
    tickets: Vec<Ticket>,
}

/// Answer of `POST /v1/route/batch` (the route service writes it).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchDecisions {
    /// In input order.
    decisions: Vec<Routed>,
}

/// The `Idempotency-Key` header of the route endpoints.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// A retried request with the same key and body returns the first response (header
    /// Idempotent-Replayed: true) and assigns nobody again; the same key with another body is
    /// 422.
    #[serde(rename = "Idempotency-Key")]
    #[param(
        nullable = false,
        max_length = 255,
        pattern = r"^[\t -~]*[!-~][\t -~]*$"
    )]
    key: Option<String>,
}

/// Route many tickets; decisions in input order.
#[utoipa::path(post, path = "/v1/route/batch", operation_id = "routeBatch",
    security(("bearer" = ["route"])), params(IdempotencyKey), request_body = BatchRequest,
    responses((status = 200, description = "The decisions.", body = BatchDecisions,
               headers(("Idempotent-Replayed" = String, description = "`true` on a replayed answer."),
                       ("Server-Timing" = String, description = "Milliseconds by stage: tokenize, queue, encoder, rules, store, total (not on a replay).")))))]
pub async fn route_batch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    state.auth.permit(caller, Scope::Route)?;
    let req: BatchRequest = parse_json(&body)?;
    let reply = state
        .route
        .route(RouteRequest {
            tickets: req.tickets,
            shape: Shape::Batch,
            idempotency: idempotency(&headers, "/v1/route/batch", &body)?,
        })
        .await?;
    Ok(route_response(reply))
}

/// The decision the active rules would make for a ticket, with its trace (the decision object
/// without decision_id, timings or an agent picked by a strategy); nothing is logged or
/// assigned.
#[utoipa::path(post, path = "/v1/route/dry-run", operation_id = "dryRun",
    security(("bearer" = ["route"])), request_body = Ticket,
    responses((status = 200, description = "The decision it would be.", body = Routed)))]
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(ticket): ApiJson<Ticket>,
) -> Result<Json<Routed>, ApiError> {
    state.auth.permit(caller, Scope::Route)?;
    Ok(Json(state.route.dry_run(ticket).await?))
}

/// The intent of one ticket only; nothing is logged or assigned.
#[utoipa::path(post, path = "/v1/classify", operation_id = "classify",
    security(("bearer" = ["route"])), request_body = Ticket,
    responses((status = 200, description = "The classification.", body = ClassifyReply)))]
pub async fn classify(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(ticket): ApiJson<Ticket>,
) -> Result<Json<ClassifyReply>, ApiError> {
    state.auth.permit(caller, Scope::Route)?;
    Ok(Json(state.route.classify(ticket).await?))
}

/// One node of the taxonomy.
#[derive(Serialize, ToSchema)]
pub struct IntentEntry {
    /// Dotted id.
    id: String,
    /// The parent node, if any.
    parent: Option<String>,
    /// English description.
    en: String,
    /// Russian description.
    ru: String,
    /// Whether tickets are labelled with it (it has no children).
    leaf: bool,
    /// Whether the active model knows it (added intents wait for a retraining).
    in_model: bool,
}

/// Answer of `GET /v1/intents`.
#[derive(Serialize, ToSchema)]
pub struct Intents {
    /// The active model.
    model_version: String,
    /// The model's labels, in its output order.
    labels: Vec<String>,
    /// Every node, the model's and those added since.
    intents: Vec<IntentEntry>,
}

/// The model's intent taxonomy, with the intents added since, which the next retraining
/// learns.
#[utoipa::path(get, path = "/v1/intents", operation_id = "intents",
    security(("bearer" = ["route"])),
    responses((status = 200, description = "The taxonomy.", body = Intents)))]
pub async fn intents(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Intents>, ApiError> {
    state.auth.permit(caller, Scope::Route)?;
    let model = state.models.active();
    let c = model.engine.classifier();
    let tree = state.feedback.taxonomy().await?;
    let intents = tree
        .nodes()
        .iter()
        .map(|n| IntentEntry {
            id: n.id.clone(),
            parent: n.id.rsplit_once('.').map(|(p, _)| p.to_string()),
            en: n.en.clone(),
            ru: n.ru.clone(),
            leaf: !tree
                .nodes()
                .iter()
                .any(|m| m.id.starts_with(&format!("{}.", n.id))),
            in_model: c.tree.contains(&n.id),
        })
        .collect();
    Ok(Json(Intents {
        model_version: model.id.clone(),
        labels: c.meta.labels.clone(),
        intents,
    }))
}

/// A logged decision, as it was returned.
#[utoipa::path(get, path = "/v1/decisions/{decision_id}", operation_id = "decision",
    security(("bearer" = ["route"])), params(("decision_id" = String, Path, description = "The decision's id.")),
    responses((status = 200, description = "The decision.", body = Routed),
              (status = 404, description = "No such decision.")))]
pub async fn decision(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.auth.permit(caller, Scope::Route)?;
    Ok(json_response(state.store.decision(&id).await?, false))
}

/// Query of `GET /v1/assignments`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AssignmentsQuery {
    /// Only this team's.
    team: Option<String>,
    /// Only the open ones (the default), or all.
    #[serde(default = "yes")]
    #[param(default = true)]
    open: bool,
    /// 1 to 10000; other values are refused with 400.
    #[serde(default = "hundred")]
    #[param(default = 100, minimum = 1, maximum = 10000)]
    limit: i64,
}

fn yes() -> bool {
    true
}

fn hundred() -> i64 {
    100
}

/// Answer of `GET /v1/assignments`.
#[derive(Serialize, ToSchema)]
pub struct Assignments {
    /// Newest first.
    assignments: Vec<Assignment>,
}

/// Assignments the engine made, newest first.
#[utoipa::path(get, path = "/v1/assignments", operation_id = "assignments",
    security(("bearer" = ["route"])), params(AssignmentsQuery),
    responses((status = 200, description = "The assignments.", body = Assignments)))]
pub async fn assignments(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AssignmentsQuery>,
) -> Result<Json<Assignments>, ApiError> {
    state.auth.permit(caller, Scope::Route)?;
    let list = state
        .store
        .assignments(
            q.team.as_deref(),
            q.open,
            in_range("limit", q.limit, 1, 10_000)?,
        )
        .await?;
    Ok(Json(Assignments { assignments: list }))
}

/// The agent is done: the assignment no longer counts for least-loaded. Closing twice is
/// harmless.
#[utoipa::path(post, path = "/v1/assignments/{decision_id}/close", operation_id = "closeAssignment",
    security(("bearer" = ["route"])), params(("decision_id" = String, Path, description = "The decision that made the assignment.")),
    responses((status = 200, description = "The assignment, closed.", body = Assignment),
              (status = 404, description = "No assignment for that decision.")))]
pub async fn close_assignment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Assignment>, ApiError> {
    let caller = state.auth.permit(caller, Scope::Route)?;
    let a = state
        .store
        .close_assignment(&id, &format!("api:{}", caller.name))
        .await?;
    Ok(Json(a))
}
