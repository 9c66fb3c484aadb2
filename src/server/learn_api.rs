//! Learning endpoints: agents' feedback, taxonomy additions, the review queue, retraining
//! behind the evaluation gate, the model registry (list, activate, roll back), shadow mode and
//! its report; plus the background jobs (retraining by count or period, following registry
//! changes made by the CLI).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Code};
use super::extract::{in_range, parse_json, ApiJson, ApiPath, ApiQuery, RawBody};
use super::AppState;
use crate::config::Scope;
use crate::intent::IntentTree;
use crate::learn::report::{FeedbackReport, Review, ShadowReport};
use crate::learn::{self, report};
use crate::registry::AfterGate;
use crate::store::AddedIntent;

/// The active model's taxonomy plus the intents added through the API.
pub async fn taxonomy(state: &AppState) -> Result<IntentTree, ApiError> {
    let added = state.store.added_intents().await?;
    learn::taxonomy(&state.models.active().engine.classifier().tree, &added)
        .map_err(ApiError::internal)
}

/// Body of `POST /v1/feedback`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    decision_id: Option<String>,
    ticket_id: Option<String>,
    correct_intent: Option<String>,
    correct_team: Option<String>,
    correct_assignee: Option<String>,
    agent: String,
}

/// `POST /v1/feedback`: an agent's correction of a logged decision (scope `feedback`).
/// Idempotent: the same correction again returns the first (200 instead of 201).
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<FeedbackRequest>,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, Scope::Feedback)?;
    if req.agent.trim().is_empty() {
        return Err(ApiError::invalid("agent: say who corrected the decision"));
    }
    if req.correct_intent.is_none() && req.correct_team.is_none() && req.correct_assignee.is_none()
    {
        return Err(ApiError::invalid(
            "give at least one of correct_intent, correct_team, correct_assignee",
        ));
    }
    let (_, mut f) = state
        .store
        .decision_for_feedback(req.decision_id.as_deref(), req.ticket_id.as_deref())
        .await?;
    if let (Some(d), Some(t)) = (&req.decision_id, &req.ticket_id) {
        if *t != f.ticket_id {
            return Err(ApiError::invalid(format!(
                "decision {d} is about ticket {}, not {t}",
                f.ticket_id
            )));
        }
    }
    let tree = taxonomy(&state).await?;
    let labels = crate::train::dataset::taxonomy_labels(&tree);
    if let Some(intent) = &req.correct_intent {
        if !labels.contains(intent) {
            let known = crate::intent::closest_known(&labels, intent);
            let hint = if tree.contains(intent) {
                format!("\"{intent}\" is a group; name one of its leaves")
            } else {
                format!("unknown intent \"{intent}\" (add it first with POST /v1/intents)")
            };
            return Err(ApiError::invalid(format!(
                "correct_intent: {hint}; known: {known}"
            )));
        }
    }
    // A team correction is a rules signal; it is also a label when the team stands for one
    // intent.
    let label_from_team = match (&req.correct_intent, &req.correct_team) {
        (None, Some(team)) => report::team_intent(&state.rules.current().ruleset, team, &labels),
        _ => None,
    };
    f.agent = req.agent.trim().to_string();
    f.author = caller.name;
    f.correct_intent = req.correct_intent.clone().or(label_from_team.clone());
    f.correct_team = req.correct_team;
    f.correct_assignee = req.correct_assignee;
    let (stored, created) = state.store.insert_feedback(&f).await?;
    let training_label = stored.correct_intent.is_some() && stored.has_text;
    let body = json!({
        "feedback_id": stored.feedback_id,
        "decision_id": stored.decision_id,
        "ticket_id": stored.ticket_id,
        "created": created,
        "training_label": training_label,
        "label_from_team": label_from_team,
        "rules_signal": stored.correct_team.is_some() || stored.correct_assignee.is_some(),
        "note": if stored.correct_intent.is_some() && !stored.has_text {
            Some("the ticket's text is past retention, so this correction cannot train the model")
        } else {
            None
        },
    });
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /v1/feedback/report`: corrections summarised for rule authors and model owners: team
/// and assignee corrections per rule with suggested changes, intent confusions (scope `admin`).
pub async fn feedback_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<FeedbackReport>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let all = state.store.feedback().await?;
    Ok(Json(report::feedback_report(
        &all,
        &state.rules.current().ruleset,
    )))
}

/// Body of `POST /v1/intents`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIntent {
    id: String,
    en: String,
    ru: String,
}

/// `POST /v1/intents`: adds a node to the taxonomy; corrections to it are accepted at once and
/// the next retraining learns it (scope `admin`).
pub async fn add_intent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewIntent>,
) -> Result<Response, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let tree = taxonomy(&state).await?;
    let labels = crate::train::dataset::taxonomy_labels(&tree);
    let id = req.id.trim().to_string();
    if tree.contains(&id) {
        return Err(ApiError::new(
            Code::IntentExists,
            format!("intent \"{id}\" is already in the taxonomy"),
        ));
    }
    if req.en.trim().is_empty() || req.ru.trim().is_empty() {
        return Err(ApiError::invalid(
            "en, ru: describe the intent in English and Russian",
        ));
    }
    if let Some((parent, _)) = id.rsplit_once('.') {
        if labels.iter().any(|l| l == parent) {
            return Err(ApiError::invalid(format!(
                "id: \"{parent}\" is a leaf that tickets are labelled with; add \"{id}\" as a sibling under its parent instead"
            )));
        }
    }
    let added = AddedIntent {
        id: id.clone(),
        en: req.en.trim().to_string(),
        ru: req.ru.trim().to_string(),
        author: caller.name,
        created_at: Utc::now(),
    };
    // Validates the id and the parent like a taxonomy file.
    learn::taxonomy(&tree, std::slice::from_ref(&added))
        .map_err(|e| ApiError::invalid(format!("id: {e}")))?;
    state.store.add_intent(&added).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"intent": added, "in_model": false,
                    "note": "agents can label tickets with it now; the next retraining learns it"})),
    )
        .into_response())
}

/// Query of `GET /v1/review`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    #[serde(default = "twenty")]
    limit: usize,
}

fn twenty() -> usize {
    20
}

/// `GET /v1/review?limit=20`: the logged tickets most worth an agent's label, not yet
/// corrected: `unknown` resolutions first, then disagreements with the shadow model, then the
/// smallest margins (scope `feedback`).
pub async fn review(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> Result<Json<Review>, ApiError> {
    state.auth.check(&headers, Scope::Feedback)?;
    let limit = in_range("limit", q.limit, 1, 500)?;
    let recent = state.store.review_candidates(2000).await?;
    let shadow = match state.models.shadow() {
        Some(s) => Some(state.store.shadow_intents(&s.id).await?),
        None => None,
    };
    Ok(Json(report::review_queue(recent, shadow.as_ref(), limit)))
}

/// `GET /v1/models`: every version, newest first (scope `admin`).
pub async fn list_models(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    Ok(Json(json!({
        "serving": state.models.active().id,
        "shadow": state.models.shadow().map(|s| s.id.clone()),
        "models": state.store.models().await?,
    })))
}

/// `POST /v1/models/{id}/activate`: makes a version active, live (scope `admin`).
pub async fn activate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let note = format!("activated by {}", caller.name);
    let record = state.registry.activate(&id, Some(&note)).await?;
    Ok(Json(json!({ "model": record })))
}

/// `POST /v1/models/rollback`: re-activates the model that was active before this one
/// (scope `admin`).
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = state.auth.check(&headers, Scope::Admin)?;
    let note = format!("rolled back to by {}", caller.name);
    let record = state.registry.rollback(&note).await?;
    Ok(Json(json!({ "model": record })))
}

/// Body of `POST /v1/models/{id}/shadow`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    enabled: bool,
}

/// `POST /v1/models/{id}/shadow`: starts or stops scoring a candidate beside the active model
/// on live traffic (scope `admin`).
pub async fn set_shadow(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ShadowRequest>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let record = state.registry.set_shadow(&id, req.enabled).await?;
    Ok(Json(json!({ "model": record })))
}

/// `GET /v1/models/{id}/shadow-report`: how often the shadow agreed with the active model on
/// live traffic, and the accuracy of both on the tickets agents corrected (scope `admin`).
pub async fn shadow_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ShadowReport>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    state.store.model(&id).await?;
    let rows = state.store.shadow_rows(&id).await?;
    Ok(Json(report::shadow_report(&id, &rows)))
}

/// Body of `POST /v1/models/retrain`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RetrainRequest {
    /// Also fine-tune the encoder's top layers (slow).
    #[serde(default)]
    fine_tune: bool,
    /// Run a passing candidate in shadow instead of activating it.
    #[serde(default)]
    shadow: Option<bool>,
}

/// `POST /v1/models/retrain`: trains a candidate on the base data plus corrections, gates it
/// against the active model, and activates it (or runs it in shadow) if it passes (scope
/// `admin`). Waits for the result.
pub async fn retrain(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let req: RetrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetrainRequest::default()
    } else {
        parse_json(&body)?
    };
    let after = req.shadow.map(|shadow| {
        if shadow {
            AfterGate::Shadow
        } else {
            AfterGate::Activate
        }
    });
    // In its own task: a client that goes away does not stop a retraining half way.
    let registry = state.registry.clone();
    let r = tokio::spawn(async move { registry.retrain(req.fine_tune, after).await })
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(json!({
        "outcome": r.outcome,
        "model": r.record,
        "gate": r.gate,
    })))
}
