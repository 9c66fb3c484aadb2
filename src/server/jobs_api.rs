//! Job endpoints: the long operations started over HTTP (retraining), listed, followed and
//! cancelled. All need the `admin` scope.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{in_range, ApiPath, ApiQuery};
use super::AppState;
use crate::config::Scope;
use crate::service::jobs::JobInfo;

/// `202 Accepted` with the job and its address in `Location`.
pub fn accepted(job: JobInfo) -> Response {
    let location = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id))
        .expect("a job id is a valid header. This is a bug.");
    let mut resp = (StatusCode::ACCEPTED, Json(job)).into_response();
    resp.headers_mut().insert(header::LOCATION, location);
    resp
}

/// Query of `GET /v1/jobs`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// 1 to 100; other values are refused with 400.
    #[serde(default = "twenty")]
    #[param(default = 20, minimum = 1, maximum = 100)]
    limit: i64,
}

fn twenty() -> i64 {
    20
}

/// Answer of `GET /v1/jobs`.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    jobs: Vec<JobInfo>,
}

/// The jobs, newest first: running, and how the others ended.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "jobs", security(("bearer" = ["admin"])),
    params(JobsQuery), responses((status = 200, description = "The jobs.", body = JobList)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let limit = in_range("limit", q.limit, 1, 100)?;
    Ok(Json(JobList {
        jobs: state.jobs.list(limit).await?,
    }))
}

/// One job: status, progress, and the result (the gate's included) or the error.
#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "job", security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "The job's id.")),
    responses((status = 200, description = "The job.", body = JobInfo),
              (status = 404, description = "No such job.")))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobInfo>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    Ok(Json(state.jobs.get(&id).await?))
}

/// Ask a running job to stop: it ends as `cancelled` at its next checkpoint (every chunk of
/// embeddings, every stage), and nothing it made is registered.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", operation_id = "cancelJob",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "The job's id.")),
    responses((status = 202, description = "Asked to stop.", body = JobInfo),
              (status = 404, description = "No such job."),
              (status = 409, description = "The job has ended.")))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let job = state.jobs.cancel(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}
