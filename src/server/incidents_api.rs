//! Incident endpoints: the incidents the detector opened, listed and read with their linked
//! tickets, and their status set by agents (acknowledge, resolve, dismiss). They need the
//! `feedback` scope (agents') or `admin`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{in_range, ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::config::Scope;
use crate::service::incidents::IncidentInfo;
use crate::store::IncidentStatus;

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
