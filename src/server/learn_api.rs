//! Learning endpoints: agents' feedback, taxonomy additions, the review queue, retraining
//! behind the evaluation gate, the model registry (list, activate, roll back), shadow mode and
//! its report; plus the background jobs (retraining by count or period, following registry
//! changes made by the CLI).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{in_range, parse_json, ApiJson, ApiPath, ApiQuery, RawBody};
use super::AppState;
use crate::config::Scope;
use crate::learn::report::{self, FeedbackReport, Review, ShadowReport};
use crate::service::feedback::{Correction, Recorded};
use crate::service::jobs::{JobInfo, RetrainParams};
use crate::store::{AddedIntent, ModelRecord};

/// Body of `POST /v1/feedback`: name the decision (`decision_id`, or `ticket_id` for its latest
/// decision) and at least one correction.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The decision corrected.
    #[schema(nullable = false)]
    decision_id: Option<String>,
    /// Or the ticket: its latest decision is corrected.
    #[schema(nullable = false)]
    ticket_id: Option<String>,
    /// A leaf of the taxonomy (added intents included): a training label.
    #[schema(nullable = false)]
    correct_intent: Option<String>,
    /// A rules signal; also a label when the team stands for exactly one intent in the rules.
    #[schema(nullable = false)]
    correct_team: Option<String>,
    /// The agent who should have had it.
    #[schema(nullable = false)]
    correct_assignee: Option<String>,
    /// Who corrected the decision.
    #[schema(pattern = r"\S")]
    agent: String,
}

/// Answer of `POST /v1/feedback`.
#[derive(Serialize, ToSchema)]
pub struct FeedbackStored {
    /// The correction's id.
    feedback_id: String,
    /// The decision corrected.
    decision_id: String,
    /// Its ticket.
    ticket_id: String,
    /// False when the same correction was stored before (then the status is 200).
    created: bool,
    /// Whether the next retraining learns from it.
    training_label: bool,
    /// The intent a team correction stands for, when the rules give the team one intent.
    label_from_team: Option<String>,
    /// Whether it corrects the team or assignee (the feedback report shows those per rule).
    rules_signal: bool,
    /// Why an intent correction cannot train the model, if it cannot.
    note: Option<String>,
}

/// An agent's correction of a logged decision (by decision_id, or the newest decision of
/// ticket_id). Idempotent: the same correction again returns the first with 200.
#[utoipa::path(post, path = "/v1/feedback", operation_id = "feedback",
    security(("bearer" = ["feedback"])), request_body = FeedbackRequest,
    responses((status = 201, description = "Stored.", body = FeedbackStored),
              (status = 200, description = "Stored before; the first answer.", body = FeedbackStored),
              (status = 404, description = "No such decision or ticket.")))]
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<FeedbackRequest>,
) -> Result<Response, ApiError> {
    let caller = state.auth.permit(caller, Scope::Feedback)?;
    let correction = Correction {
        decision_id: req.decision_id,
        ticket_id: req.ticket_id,
        intent: req.correct_intent,
        team: req.correct_team,
        assignee: req.correct_assignee,
        agent: req.agent,
    };
    let Recorded {
        stored,
        created,
        label_from_team,
    } = state.feedback.correct(correction, caller.name).await?;
    let training_label = stored.correct_intent.is_some() && stored.has_text;
    let body = FeedbackStored {
        rules_signal: stored.correct_team.is_some() || stored.correct_assignee.is_some(),
        note: (stored.correct_intent.is_some() && !stored.has_text).then(|| {
            "the ticket's text is past retention, so this correction cannot train the model"
                .to_string()
        }),
        feedback_id: stored.feedback_id,
        decision_id: stored.decision_id,
        ticket_id: stored.ticket_id,
        created,
        training_label,
        label_from_team,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

/// Corrections summarised: team and assignee corrections per rule with suggested changes;
/// intent confusions.
#[utoipa::path(get, path = "/v1/feedback/report", operation_id = "feedbackReport",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The report.", body = FeedbackReport)))]
pub async fn feedback_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<FeedbackReport>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let all = state.store.feedback().await?;
    Ok(Json(report::feedback_report(
        &all,
        &state.rules.current().ruleset,
    )))
}

/// Body of `POST /v1/intents`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIntent {
    /// Dotted id; its parent must exist and must not be a leaf that tickets are labelled with.
    #[schema(pattern = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")]
    id: String,
    /// English description.
    #[schema(pattern = r"\S")]
    en: String,
    /// Russian description.
    #[schema(pattern = r"\S")]
    ru: String,
}

/// Answer of `POST /v1/intents`.
#[derive(Serialize, ToSchema)]
pub struct IntentAdded {
    /// The new node.
    intent: AddedIntent,
    /// Always false: the next retraining learns it.
    in_model: bool,
    /// What happens next.
    note: String,
}

/// Add a node to the taxonomy; corrections to it are accepted at once, the next retraining
/// learns it.
#[utoipa::path(post, path = "/v1/intents", operation_id = "addIntent",
    security(("bearer" = ["admin"])), request_body = NewIntent,
    responses((status = 201, description = "Added.", body = IntentAdded),
              (status = 409, description = "The intent is in the taxonomy already.")))]
pub async fn add_intent(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<NewIntent>,
) -> Result<Response, ApiError> {
    let caller = state.auth.permit(caller, Scope::Admin)?;
    let added = state
        .feedback
        .add_intent(&req.id, &req.en, &req.ru, caller.name)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IntentAdded {
            intent: added,
            in_model: false,
            note: "agents can label tickets with it now; the next retraining learns it".into(),
        }),
    )
        .into_response())
}

/// Query of `GET /v1/review`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// 1 to 500; other values are refused with 400.
    #[serde(default = "twenty")]
    #[param(default = 20, minimum = 1, maximum = 500)]
    limit: usize,
}

fn twenty() -> usize {
    20
}

/// Logged tickets most worth an agent's label, not yet corrected: unknown resolutions,
/// disagreements with the shadow model, smallest margins.
#[utoipa::path(get, path = "/v1/review", operation_id = "review",
    security(("bearer" = ["feedback"])), params(ReviewQuery),
    responses((status = 200, description = "The review queue.", body = Review)))]
pub async fn review(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> Result<Json<Review>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    let limit = in_range("limit", q.limit, 1, 500)?;
    let recent = state.store.review_candidates(2000).await?;
    let shadow = match state.models.shadow() {
        Some(s) => Some(state.store.shadow_intents(&s.id).await?),
        None => None,
    };
    Ok(Json(report::review_queue(recent, shadow.as_ref(), limit)))
}

/// Answer of `GET /v1/models`.
#[derive(Serialize, ToSchema)]
pub struct Models {
    /// The active model.
    serving: String,
    /// The model in shadow, if any.
    shadow: Option<String>,
    /// Every version, newest first.
    models: Vec<ModelRecord>,
}

/// Every model version, newest first, and which one serves and which runs in shadow.
#[utoipa::path(get, path = "/v1/models", operation_id = "models",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The registry.", body = Models)))]
pub async fn list_models(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Models>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    Ok(Json(Models {
        serving: state.models.active().id.clone(),
        shadow: state.models.shadow().map(|s| s.id.clone()),
        models: state.store.models().await?,
    }))
}

/// Answer of the model changes: the model as it stands now.
#[derive(Serialize, ToSchema)]
pub struct ModelChanged {
    /// The model changed.
    model: ModelRecord,
}

/// Make a version active, live: requests in flight finish on the model they started with; the
/// active rules must compile against its taxonomy (409 rules_incompatible otherwise).
#[utoipa::path(post, path = "/v1/models/{id}/activate", operation_id = "activateModel",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "The model version.")),
    responses((status = 200, description = "Active.", body = ModelChanged),
              (status = 404, description = "No such model."),
              (status = 409, description = "The rules do not compile against it, or it does not load.")))]
pub async fn activate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ModelChanged>, ApiError> {
    let caller = state.auth.permit(caller, Scope::Admin)?;
    let note = format!("activated by {}", caller.name);
    let model = state.registry.activate(&id, Some(&note)).await?;
    Ok(Json(ModelChanged { model }))
}

/// Re-activate the model that was active before the current one.
#[utoipa::path(post, path = "/v1/models/rollback", operation_id = "rollbackModel",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Active again.", body = ModelChanged),
              (status = 404, description = "No model was active before."),
              (status = 409, description = "The rules do not compile against it, or it does not load.")))]
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<ModelChanged>, ApiError> {
    let caller = state.auth.permit(caller, Scope::Admin)?;
    let note = format!("rolled back to by {}", caller.name);
    let model = state.registry.rollback(&note).await?;
    Ok(Json(ModelChanged { model }))
}

/// Body of `POST /v1/models/{id}/shadow`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    /// Start (true) or stop (false) scoring it in shadow.
    enabled: bool,
}

/// Start or stop scoring a candidate beside the active model on live traffic (logged, never
/// returned).
#[utoipa::path(post, path = "/v1/models/{id}/shadow", operation_id = "shadowModel",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "The model version.")),
    request_body = ShadowRequest,
    responses((status = 200, description = "Changed.", body = ModelChanged),
              (status = 404, description = "No such model."),
              (status = 409, description = "Only candidates run in shadow, and they must load.")))]
pub async fn set_shadow(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ShadowRequest>,
) -> Result<Json<ModelChanged>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let model = state.registry.set_shadow(&id, req.enabled).await?;
    Ok(Json(ModelChanged { model }))
}

/// Agreement of a shadow model with the active one on live traffic, and the accuracy of both
/// on the tickets agents corrected.
#[utoipa::path(get, path = "/v1/models/{id}/shadow-report", operation_id = "shadowReport",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "The model version.")),
    responses((status = 200, description = "The report.", body = ShadowReport),
              (status = 404, description = "No such model.")))]
pub async fn shadow_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ShadowReport>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    state.store.model(&id).await?;
    let rows = state.store.shadow_rows(&id).await?;
    Ok(Json(report::shadow_report(&id, &rows)))
}

/// Start a retraining job: train a candidate on the base data plus agents' corrections (new
/// intents included, cached embeddings), evaluate it and the active model on the curated dev
/// split (the gate) and on held-out corrections, and activate it (or run it in shadow) if it
/// passes. Answers at once with the job; `GET /v1/jobs/{id}` follows it.
#[utoipa::path(post, path = "/v1/models/retrain", operation_id = "retrain",
    security(("bearer" = ["admin"])),
    request_body(content = Option<RetrainParams>, description = "Optional: an empty body takes the defaults."),
    responses((status = 202, description = "Started.", body = JobInfo,
               headers(("Location" = String, description = "The job: /v1/jobs/{id}."))),
              (status = 409, description = "A retraining is running, or there is no training data."),
              (status = 422, description = "`fine_tune` asked for: retraining inside serve trains the head only.")))]
pub async fn retrain(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let caller = state.auth.permit(caller, Scope::Admin)?;
    let params: RetrainParams = if body.iter().all(u8::is_ascii_whitespace) {
        RetrainParams::default()
    } else {
        parse_json(&body)?
    };
    let job = state.jobs.start_retrain(params, &caller.name).await?;
    Ok(super::jobs_api::accepted(job))
}
