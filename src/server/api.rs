//! Ticket endpoints: route (one and batch), classify, intents, the decision log, assignments,
//! and the service endpoints (health, readiness, metrics, OpenAPI).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::Scope;
use super::error::{parse_json, ApiError, ApiJson, RawBody};
use super::models::ServingModel;
use super::{ActiveRules, AppState};
use crate::batch::BatchError;
use crate::decision::{Decision, TraceStep};
use crate::engine::{decide_for, Classification};
use crate::rules::{Assignee, Priority, Status};
use crate::store::NewDecision;
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
        "model_version": state.model().id,
        "shadow_model": state.shadow().map(|m| m.id.clone()),
        "rules_version": state.active_rules().stored.version.to_string(),
        "database": if db { "ok" } else { "unreachable" },
        "queue_depth": state.model().batcher.queue_depth(),
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
    let text = state.metrics.render(state.model().batcher.queue_depth());
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
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; GET /openapi.json lists them",
    )
}

/// Checks a ticket: it must have text; text beyond `max_chars` characters is cut (returns
/// whether it was).
fn admit(ticket: &mut Ticket, max_chars: usize, at: &str) -> Result<bool, ApiError> {
    let subject_len = ticket.subject.as_deref().map_or(0, |s| s.chars().count());
    if ticket.body.trim().is_empty()
        && ticket
            .subject
            .as_deref()
            .is_none_or(|s| s.trim().is_empty())
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_ticket",
            format!("{at}: the ticket has no text; send `body` (or `text`) and/or `subject`"),
        ));
    }
    if let Some(id) = &ticket.id {
        if id.trim().is_empty() || id.len() > 256 {
            return Err(ApiError::invalid(format!(
                "{at}.id: must be 1 to 256 characters"
            )));
        }
    }
    let body_len = ticket.body.chars().count();
    if subject_len + body_len <= max_chars {
        return Ok(false);
    }
    if subject_len >= max_chars {
        let s: String = ticket
            .subject
            .as_deref()
            .unwrap_or_default()
            .chars()
            .take(max_chars)
            .collect();
        ticket.subject = Some(s);
        ticket.body.clear();
    } else {
        ticket.body = ticket.body.chars().take(max_chars - subject_len).collect();
    }
    Ok(true)
}

/// What classifying through the active model gives: the model used (it may be swapped right
/// after), each ticket's classification, and the embeddings (for a shadow model on the same
/// encoder).
pub struct Classified {
    /// The model that classified.
    pub model: Arc<ServingModel>,
    /// Per ticket, in order.
    pub classifications: Vec<Classification>,
    /// Per ticket, in order.
    pub embeddings: Vec<Vec<f32>>,
}

/// Classifies tickets through the active model's batching worker; all are queued before any is
/// awaited, so they can share batches. A full queue fails the whole call with 429.
pub async fn classify_tickets(
    state: &AppState,
    tickets: &[Ticket],
) -> Result<Classified, ApiError> {
    let model = state.model();
    let engine = &model.engine;
    let text = engine.classifier().encoder.text();
    let mut pending = Vec::with_capacity(tickets.len());
    for t in tickets {
        let prepared = engine.prepare(t);
        let tokens = text.encode(&prepared.text).map_err(ApiError::internal)?;
        pending.push((prepared, model.batcher.submit(tokens)?));
    }
    let mut prepared = Vec::with_capacity(tickets.len());
    let mut embeddings = Vec::with_capacity(tickets.len());
    for (p, rx) in pending {
        embeddings.push(rx.await.map_err(|_| BatchError::Stopped)??);
        prepared.push(p);
    }
    let probs = model.probabilities(&embeddings)?;
    let classifications = tickets
        .iter()
        .zip(prepared.into_iter().zip(probs))
        .map(|(t, (p, probs))| engine.finish(t, p, &probs))
        .collect();
    Ok(Classified {
        model,
        classifications,
        embeddings,
    })
}

/// Scores routed tickets with the shadow model, if one runs, and logs its intents; off the
/// request's path. A shadow on the active encoder reuses the embeddings; another encoder gets
/// its texts queued best-effort (skipped when its queue is full).
fn shadow_score(
    state: &Arc<AppState>,
    active: &ServingModel,
    tickets: Vec<Ticket>,
    embeddings: Vec<Vec<f32>>,
    decision_ids: Vec<String>,
) {
    let Some(shadow) = state.shadow() else {
        return;
    };
    let same = shadow.shares_encoder(active);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let prepared: Vec<_> = tickets.iter().map(|t| shadow.engine.prepare(t)).collect();
        let embeddings = if same {
            embeddings
        } else {
            let text = shadow.engine.classifier().encoder.text();
            let mut out = Vec::new();
            for p in &prepared {
                let Ok(tokens) = text.encode(&p.text) else {
                    return;
                };
                let Ok(rx) = shadow.batcher.submit(tokens) else {
                    return;
                };
                let Ok(Ok(e)) = rx.await else { return };
                out.push(e);
            }
            out
        };
        let Ok(probs) = shadow.probabilities(&embeddings) else {
            return;
        };
        for (((t, prepared), p), id) in tickets.iter().zip(prepared).zip(probs).zip(decision_ids) {
            let c = shadow.engine.finish(t, prepared, &p);
            let conf = c.resolution.top_k.first().map_or(0.0, |s| s.p);
            if let Err(e) = state
                .store
                .insert_shadow(&id, &shadow.id, &c.resolution.intent, conf)
                .await
            {
                tracing::warn!("logging a shadow result: {e}");
            }
        }
    });
}

/// Hash of the endpoint and body, to tell a retry from a different request with the same key.
fn request_hash(endpoint: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(endpoint.as_bytes());
    h.update([0]);
    h.update(body);
    crate::import::hex(&h.finalize())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= 255 => Ok(Some(s.trim().to_string())),
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// The assignment part of a decision, when the rules asked for one.
#[derive(Serialize)]
struct AssignmentBody<'a> {
    strategy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

#[derive(Serialize)]
struct Timings {
    inference_ms: f64,
    total_ms: f64,
}

/// One decision as the API returns and the log keeps it.
#[derive(Serialize)]
struct DecisionBody<'a> {
    decision_id: &'a str,
    ticket_id: &'a str,
    team: Option<&'a str>,
    assignee: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assignment: Option<AssignmentBody<'a>>,
    status: Status,
    priority: Priority,
    tags: &'a [String],
    rule_ids: &'a [String],
    intent: &'a Classification,
    language: &'a str,
    trace: &'a [TraceStep],
    model_version: &'a str,
    rules_version: String,
    received_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    timings: Timings,
}

/// The rule inputs the log keeps for simulation: the ticket without its text (kept apart,
/// under retention), its classification and when it was received.
#[derive(Serialize, Deserialize)]
pub struct RuleInputs {
    /// Ticket facts (subject and body emptied).
    pub ticket: Ticket,
    /// Classification.
    pub classification: Classification,
    /// Time the rules saw.
    pub received_at: DateTime<Utc>,
}

fn strategy_name(a: &Assignee) -> &'static str {
    match a {
        Assignee::Agent(_) => "fixed",
        Assignee::RoundRobin => "round-robin",
        Assignee::LeastLoaded => "least-loaded",
        Assignee::Nobody => "none",
    }
}

struct Routed {
    ticket: Ticket,
    classification: Classification,
    decision: Decision,
    truncated: bool,
}

/// Classifies, decides, assigns and logs; returns the JSON of every decision, in order.
async fn route_tickets(
    state: &Arc<AppState>,
    mut tickets: Vec<Ticket>,
    idempotency: Option<(String, String)>,
    single: bool,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let received = Utc::now();
    let limits = state.settings.limits;
    let mut truncated = Vec::with_capacity(tickets.len());
    for (i, t) in tickets.iter_mut().enumerate() {
        let at = if single {
            "ticket".to_string()
        } else {
            format!("tickets[{i}]")
        };
        truncated.push(admit(t, limits.max_ticket_chars, &at)?);
        if t.id.is_none() {
            t.id = Some(uuid::Uuid::now_v7().to_string());
        }
    }
    if let Some((key, hash)) = &idempotency {
        if let Some(first) = state.store.idempotent_response(key, hash).await? {
            return Ok(json_response(first, true));
        }
    }
    let Classified {
        model,
        classifications,
        embeddings,
    } = classify_tickets(state, &tickets).await?;
    let inference_ms = start.elapsed().as_secs_f64() * 1e3;
    let rules: Arc<ActiveRules> = state.active_rules();
    let routed: Vec<Routed> = tickets
        .into_iter()
        .zip(classifications)
        .zip(truncated)
        .map(|((ticket, classification), truncated)| {
            let decision = decide_for(&rules.ruleset, &ticket, &classification, received);
            Routed {
                ticket,
                classification,
                decision,
                truncated,
            }
        })
        .collect();
    let keep_text = !state.settings.text_retention.is_zero();
    let mut records: Vec<NewDecision> = routed
        .iter()
        .map(|r| {
            let received_at = r.ticket.received_at.unwrap_or(received);
            let inputs = RuleInputs {
                ticket: Ticket {
                    subject: None,
                    body: String::new(),
                    ..r.ticket.clone()
                },
                classification: r.classification.clone(),
                received_at,
            };
            let fixed_without_team = match (&r.decision.team, &r.decision.assignee) {
                (None, Some(Assignee::Agent(a))) => Some(a.clone()),
                _ => None,
            };
            NewDecision {
                decision_id: uuid::Uuid::now_v7().to_string(),
                ticket_id: r.ticket.id.clone().unwrap_or_default(),
                received_at,
                intent: r.classification.resolution.intent.clone(),
                confidence: r
                    .classification
                    .resolution
                    .top_k
                    .first()
                    .map_or(0.0, |s| s.p),
                language: r.classification.language.clone(),
                team: r.decision.team.clone(),
                strategy: r.decision.assignee.clone(),
                assignee: fixed_without_team,
                assignment_note: None,
                status: r.decision.status.name().to_string(),
                priority: r.decision.priority.name().to_string(),
                model_version: model.id.clone(),
                rules_version: rules.stored.version,
                inputs: serde_json::to_string(&inputs).unwrap_or_default(),
                text: keep_text.then(|| stored_text(state, &r.ticket)),
            }
        })
        .collect();
    let (key, hash) = idempotency.unzip();
    let idem = key.as_deref().zip(hash.as_deref());
    let model_version = model.id.as_str();
    let response = state
        .store
        .record_decisions(&mut records, idem, &state.settings.assignment, |items| {
            let total_ms = start.elapsed().as_secs_f64() * 1e3;
            let each: Vec<String> = items
                .iter()
                .zip(&routed)
                .map(|(rec, r)| {
                    let body = DecisionBody {
                        decision_id: &rec.decision_id,
                        ticket_id: &rec.ticket_id,
                        team: rec.team.as_deref(),
                        assignee: rec.assignee.as_deref(),
                        assignment: r.decision.assignee.as_ref().map(|a| AssignmentBody {
                            strategy: strategy_name(a),
                            note: rec.assignment_note.as_deref(),
                        }),
                        status: r.decision.status,
                        priority: r.decision.priority,
                        tags: &r.decision.tags,
                        rule_ids: &r.decision.rule_ids,
                        intent: &r.classification,
                        language: &r.classification.language,
                        trace: &r.decision.trace,
                        model_version,
                        rules_version: rules.stored.version.to_string(),
                        received_at: rec.received_at,
                        truncated: r.truncated,
                        timings: Timings {
                            inference_ms,
                            total_ms,
                        },
                    };
                    serde_json::to_string(&body).expect("decision serialises")
                })
                .collect();
            let whole = if single {
                each[0].clone()
            } else {
                format!("{{\"decisions\":[{}]}}", each.join(","))
            };
            (each, whole)
        })
        .await?;
    for r in &routed {
        state.metrics.decision(
            r.decision.team.as_deref(),
            &r.classification.resolution.intent,
        );
    }
    shadow_score(
        state,
        &model,
        routed.into_iter().map(|r| r.ticket).collect(),
        embeddings,
        records.into_iter().map(|r| r.decision_id).collect(),
    );
    Ok(json_response(response, false))
}

/// The subject and body as stored: with personal data replaced when the setting says so.
fn stored_text(state: &AppState, t: &Ticket) -> (Option<String>, String) {
    if !state.settings.redact_stored_text {
        return (t.subject.clone(), t.body.clone());
    }
    let subject = t.subject.as_deref().map(|s| crate::privacy::redact(s).0);
    (subject, crate::privacy::redact(&t.body).0)
}

/// `DELETE /v1/tickets/{id}`: a data-subject request: erases the ticket's text, decisions,
/// assignments, shadow results, feedback and idempotency keys, and says what it removed
/// (scope `admin`).
pub async fn erase_ticket(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
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
    let idem = idempotency_key(&headers)?.map(|k| (k, request_hash("/v1/route", &body)));
    route_tickets(&state, vec![ticket], idem, true).await
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
    let max = state.settings.limits.max_batch_tickets;
    if req.tickets.is_empty() {
        return Err(ApiError::invalid("tickets: the list is empty"));
    }
    if req.tickets.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_tickets",
            format!(
                "tickets: {} tickets in one request; the limit is {max} (limits.max_batch_tickets)",
                req.tickets.len()
            ),
        ));
    }
    let idem = idempotency_key(&headers)?.map(|k| (k, request_hash("/v1/route/batch", &body)));
    route_tickets(&state, req.tickets, idem, false).await
}

/// Admits and classifies one ticket: (classification, the model used, whether text was cut).
async fn classify_one(
    state: &AppState,
    ticket: &mut Ticket,
) -> Result<(Classification, Arc<ServingModel>, bool), ApiError> {
    let truncated = admit(ticket, state.settings.limits.max_ticket_chars, "ticket")?;
    let mut out = classify_tickets(state, std::slice::from_ref(ticket)).await?;
    Ok((out.classifications.remove(0), out.model, truncated))
}

/// `POST /v1/route/dry-run`: one ticket -> the decision the active rules would make, with
/// its trace; nothing is logged or assigned (scope `route`).
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(mut ticket): ApiJson<Ticket>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    let (c, model, truncated) = classify_one(&state, &mut ticket).await?;
    let rules = state.active_rules();
    let d = decide_for(&rules.ruleset, &ticket, &c, Utc::now());
    Ok(Json(json!({
        "team": d.team,
        "assignee": d.assignee,
        "status": d.status,
        "priority": d.priority,
        "tags": d.tags,
        "rule_ids": d.rule_ids,
        "trace": d.trace,
        "intent": c,
        "language": c.language,
        "model_version": model.id,
        "rules_version": rules.stored.version.to_string(),
        "truncated": truncated,
    })))
}

/// `POST /v1/classify`: one ticket -> its classification only; nothing is logged or assigned
/// (scope `route`).
pub async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(mut ticket): ApiJson<Ticket>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    let (c, model, truncated) = classify_one(&state, &mut ticket).await?;
    let mut body = serde_json::to_value(&c).map_err(ApiError::internal)?;
    body["model_version"] = json!(model.id);
    if truncated {
        body["truncated"] = json!(true);
    }
    Ok(Json(body))
}

/// `GET /v1/intents`: the taxonomy: the active model's intents and those added since, which
/// the next retraining learns (scope `route`).
pub async fn intents(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    let model = state.model();
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
    Path(id): Path<String>,
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
    Query(q): Query<AssignmentsQuery>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
    let list = state
        .store
        .assignments(q.team.as_deref(), q.open, q.limit.clamp(1, 10_000))
        .await?;
    Ok(Json(json!({ "assignments": list })))
}

/// `POST /v1/assignments/{decision_id}/close`: the agent is done with the ticket (scope
/// `route`); closing twice is harmless.
pub async fn close_assignment(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Route)?;
    let a = state
        .store
        .close_assignment(&id, &format!("api:{}", caller.name))
        .await?;
    Ok(Json(json!(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_refuses_empty_tickets_and_cuts_long_ones() {
        let mut t = Ticket {
            subject: Some("  ".into()),
            ..Default::default()
        };
        let e = admit(&mut t, 10, "tickets[2]").unwrap_err();
        assert_eq!(e.code, "empty_ticket");
        assert!(e.message.starts_with("tickets[2]: the ticket has no text"));
        let mut t = Ticket {
            subject: Some("Тема".into()),
            body: "абвгдежзий".into(),
            ..Default::default()
        };
        assert!(admit(&mut t, 8, "ticket").unwrap());
        assert_eq!(t.body, "абвг");
        let mut t = Ticket::from_text("short");
        assert!(!admit(&mut t, 8, "ticket").unwrap());
    }
}
