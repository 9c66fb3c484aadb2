//! Incident endpoints: the incidents the detector opened, listed and read with their linked
//! tickets; their status set by agents (acknowledge, resolve, dismiss); their tickets
//! corrected (unlink, merge, unmerge, split); the linking report. They need the `feedback`
//! scope (agents') or `admin`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{in_range, ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::config::Scope;
use crate::incident::report::LinkReport;
use crate::service::incidents::{IncidentInfo, IncidentSeries};
use crate::store::{Alert, AlertState, IncidentStatus};

/// Query of `GET /v1/incidents`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentsQuery {
    /// Only incidents in this status.
    status: Option<IncidentStatus>,
    /// 1 to 500; other values are refused with 400.
    #[serde(default = "fifty")]
    #[param(default = 50, minimum = 1, maximum = 500)]
    limit: i64,
}

fn fifty() -> i64 {
    50
}

/// Answer of `GET /v1/incidents`.
#[derive(Serialize, ToSchema)]
pub struct IncidentList {
    /// Newest first.
    incidents: Vec<IncidentInfo>,
}

/// The incidents, newest first, with how each was detected and how many tickets it holds.
#[utoipa::path(get, path = "/v1/incidents", operation_id = "incidents",
    security(("bearer" = ["feedback"])), params(IncidentsQuery),
    responses((status = 200, description = "The incidents.", body = IncidentList)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<IncidentsQuery>,
) -> Result<Json<IncidentList>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    let limit = in_range("limit", q.limit, 1, 500)?;
    Ok(Json(IncidentList {
        incidents: state.incidents.list(q.status, limit).await?,
    }))
}

/// One incident with its linked tickets, each with how and why it was linked.
#[utoipa::path(get, path = "/v1/incidents/{id}", operation_id = "incident",
    security(("bearer" = ["feedback"])),
    params(("id" = String, Path, description = "The incident's id.")),
    responses((status = 200, description = "The incident.", body = IncidentInfo),
              (status = 404, description = "No such incident.")))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IncidentInfo>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    Ok(Json(state.incidents.get(&id).await?))
}

/// A change of an incident.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentChange {
    /// The new status: `acknowledged` (someone is on it), `resolved` or `dismissed` (a false
    /// alarm; both stop taking tickets), or `open` again.
    status: IncidentStatus,
}

/// Sets an incident's status.
#[utoipa::path(patch, path = "/v1/incidents/{id}", operation_id = "updateIncident",
    security(("bearer" = ["feedback"])), request_body = IncidentChange,
    params(("id" = String, Path, description = "The incident's id.")),
    responses((status = 200, description = "The incident as it is now.", body = IncidentInfo),
              (status = 404, description = "No such incident.")))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<IncidentChange>,
) -> Result<Json<IncidentInfo>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    Ok(Json(state.incidents.set_status(&id, change.status).await?))
}

/// Tickets of an incident.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketsChange {
    /// Decision ids of tickets linked to the incident.
    #[schema(min_items = 1)]
    decisions: Vec<String>,
}

/// Unlinks tickets that are not the incident's: their decisions stay as they were, the
/// unlinks feed the linking report, and they never join this incident again; its centroid is
/// computed again from the tickets left.
#[utoipa::path(post, path = "/v1/incidents/{id}/unlink", operation_id = "unlinkIncidentTickets",
    security(("bearer" = ["feedback"])), request_body = TicketsChange,
    params(("id" = String, Path, description = "The incident's id.")),
    responses((status = 200, description = "The incident as it is now.", body = IncidentInfo),
              (status = 404, description = "No such incident."),
              (status = 409, description = "A decision not linked to the incident."),
              (status = 422, description = "No decision given.")))]
pub async fn unlink(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<TicketsChange>,
) -> Result<Json<IncidentInfo>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    Ok(Json(state.incidents.unlink(&id, &change.decisions).await?))
}

/// Moves some of an incident's tickets to a new incident (open; the same intent, language
/// and detection; `split_from` names this one). Both centroids are computed again.
#[utoipa::path(post, path = "/v1/incidents/{id}/split", operation_id = "splitIncident",
    security(("bearer" = ["feedback"])), request_body = TicketsChange,
    params(("id" = String, Path, description = "The incident's id.")),
    responses((status = 201, description = "The new incident.", body = IncidentInfo),
              (status = 404, description = "No such incident."),
              (status = 409, description = "A decision not linked to the incident, all of them, or the incident is merged into another."),
              (status = 422, description = "No decision given.")))]
pub async fn split(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<TicketsChange>,
) -> Result<(StatusCode, Json<IncidentInfo>), ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    let new = state.incidents.split(&id, &change.decisions).await?;
    Ok((StatusCode::CREATED, Json(new)))
}

/// Incidents to merge into another.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeChange {
    /// Ids of the incidents to merge into this one.
    #[schema(min_items = 1)]
    incidents: Vec<String>,
}

/// Merges incidents into this one: their tickets move here (each remembering where it came
/// from), they take no more tickets (`merged_into` names this one), and this one takes the
/// intent they share. An unmerge undoes it.
#[utoipa::path(post, path = "/v1/incidents/{id}/merge", operation_id = "mergeIncidents",
    security(("bearer" = ["feedback"])), request_body = MergeChange,
    params(("id" = String, Path, description = "The id of the incident that stays.")),
    responses((status = 200, description = "The incident as it is now.", body = IncidentInfo),
              (status = 404, description = "No such incident."),
              (status = 409, description = "Itself, one merged already, a target resolved or dismissed, or intents that share nothing."),
              (status = 422, description = "No incident given.")))]
pub async fn merge(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<MergeChange>,
) -> Result<Json<IncidentInfo>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    Ok(Json(state.incidents.merge(&id, &change.incidents).await?))
}

/// Undoes a merge: the tickets that came from this incident go back to it, and it takes
/// tickets again as its status allows (those linked to the other one since stay there).
#[utoipa::path(post, path = "/v1/incidents/{id}/unmerge", operation_id = "unmergeIncident",
    security(("bearer" = ["feedback"])),
    params(("id" = String, Path, description = "The id of the incident that was merged.")),
    responses((status = 200, description = "The incident as it is now.", body = IncidentInfo),
              (status = 404, description = "No such incident."),
              (status = 409, description = "The incident is not merged into another.")))]
pub async fn unmerge(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<IncidentInfo>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    Ok(Json(state.incidents.unmerge(&id).await?))
}

/// Query of `GET /v1/incidents/link-report`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// The links of the past this many days (1 to 365).
    #[serde(default = "thirty")]
    #[param(default = 30, minimum = 1, maximum = 365)]
    days: i64,
}

fn thirty() -> i64 {
    30
}

/// How often agents unlinked the tickets linked automatically, by the link's probability and
/// cosine, with the `link_probability` and `min_similarity` that would have left them little
/// to unlink.
#[utoipa::path(get, path = "/v1/incidents/link-report", operation_id = "incidentLinkReport",
    security(("bearer" = ["feedback"])), params(ReportQuery),
    responses((status = 200, description = "The report.", body = LinkReport)))]
pub async fn link_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<LinkReport>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    let days = in_range("days", q.days, 1, 365)?;
    Ok(Json(state.incidents.link_report(days).await?))
}

/// Query of `GET /v1/incidents/alerts`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// Only alerts in this state.
    state: Option<AlertState>,
    /// 1 to 500; other values are refused with 400.
    #[serde(default = "fifty")]
    #[param(default = 50, minimum = 1, maximum = 500)]
    limit: i64,
}

/// Answer of `GET /v1/incidents/alerts`.
#[derive(Serialize, ToSchema)]
pub struct AlertList {
    /// Newest first.
    alerts: Vec<Alert>,
}

/// The incident alerts sent or to send (`[incidents.alerts]`), newest first, with how each
/// delivery went.
#[utoipa::path(get, path = "/v1/incidents/alerts", operation_id = "incidentAlerts",
    security(("bearer" = ["admin"])), params(AlertsQuery),
    responses((status = 200, description = "The alerts.", body = AlertList)))]
pub async fn alerts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> Result<Json<AlertList>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let limit = in_range("limit", q.limit, 1, 500)?;
    Ok(Json(AlertList {
        alerts: state.incidents.alerts(q.state, limit).await?,
    }))
}

/// Sends a dead alert again (its attempts start over).
#[utoipa::path(post, path = "/v1/incidents/alerts/{id}/retry", operation_id = "retryIncidentAlert",
    security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "The alert's id.")),
    responses((status = 202, description = "Queued again.", body = Alert),
              (status = 404, description = "No dead alert of that id.")))]
pub async fn retry_alert(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Alert>), ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let alert = state.incidents.retry_alert(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(alert)))
}

/// Query of `GET /v1/incidents/{id}/series`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Points shown, 6 to 500 (fewer when they would span more than 14 days).
    #[serde(default = "forty_eight")]
    #[param(default = 48, minimum = 6, maximum = 500)]
    points: i64,
    /// Minutes per point, 1 to 1440 (a day).
    #[serde(default = "sixty")]
    #[param(default = 60, minimum = 1, maximum = 1440)]
    step_minutes: i64,
}

/// The longest chart: 14 days.
const MAX_SERIES_MINUTES: i64 = 14 * 24 * 60;

fn forty_eight() -> i64 {
    48
}

fn sixty() -> i64 {
    60
}

/// An incident's chart: its intent's tickets per step against what the intent's usual share
/// of the volume expects, the incident's own tickets, and when it was detected.
#[utoipa::path(get, path = "/v1/incidents/{id}/series", operation_id = "incidentSeries",
    security(("bearer" = ["feedback"])), params(("id" = String, Path, description = "The incident's id."), SeriesQuery),
    responses((status = 200, description = "The chart's points.", body = IncidentSeries),
              (status = 404, description = "No such incident.")))]
pub async fn series(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Json<IncidentSeries>, ApiError> {
    state.auth.permit(caller, Scope::Feedback)?;
    let points = in_range("points", q.points, 6, 500)?;
    let step = in_range("step_minutes", q.step_minutes, 1, 1440)?;
    // At most 14 days: fewer points when the steps are long.
    let points = points.min(MAX_SERIES_MINUTES / step).max(1);
    Ok(Json(state.incidents.series(&id, points, step).await?))
}
