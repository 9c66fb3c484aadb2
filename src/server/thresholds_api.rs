//! Threshold endpoints: a model's chain thresholds (as trained, edited, effective per node),
//! their edits (If-Match, checked against the model's taxonomy, stored as the model's next
//! version and live at once) and their history. All need the `admin` scope.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::rules_api::{etag, if_match, if_match_required, IfMatchHeader};
use super::AppState;
use crate::config::Scope;
use crate::intent::Thresholds;
use crate::registry::{ThresholdsChange, ThresholdsView};
use crate::store::ThresholdsVersion;

fn with_etag(view: ThresholdsView) -> Response {
    let version = view.edits.version;
    let mut resp = Json(view).into_response();
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

/// A model's chain thresholds: as trained (per depth and nodes' own, tuned by `train`), the
/// edits stored for it (version 0: none) and, node by node, the threshold that enters it now.
#[utoipa::path(get, path = "/v1/models/{id}/thresholds", operation_id = "getThresholds",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "The model version.")),
    responses((status = 200, description = "The thresholds.", body = ThresholdsView,
               headers(("ETag" = String, description = "The edits' version, quoted."))),
              (status = 404, description = "No such model.")))]
pub async fn get_thresholds(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    Ok(with_etag(state.registry.thresholds(&id).await?))
}

/// Body of `PUT /v1/models/{id}/thresholds`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutThresholds {
    /// The edits over the model's own thresholds, replacing the last ones: `depth` (when
    /// given) replaces the model's per-depth values, `nodes` set nodes' own. `{}` goes back
    /// to the thresholds as trained.
    overrides: Thresholds,
    /// Why (kept in the history).
    #[serde(default)]
    note: String,
}

/// Edit a model's chain thresholds: checked against its taxonomy, stored as its next version
/// and, where it serves, resolving from the next request on (its identity, the model version,
/// is unchanged; decisions name the thresholds version they were resolved with).
#[utoipa::path(put, path = "/v1/models/{id}/thresholds", operation_id = "putThresholds",
    security(("bearer" = ["admin"])),
    params(("id" = String, Path, description = "The model version."), IfMatchHeader),
    request_body = PutThresholds,
    responses((status = 200, description = "Stored and live.", body = ThresholdsView,
               headers(("ETag" = String, description = "The new version, quoted."))),
              (status = 404, description = "No such model."),
              (status = 412, description = "The thresholds changed since the version in If-Match."),
              (status = 422, description = "A node the taxonomy lacks, or a value outside 0..1."),
              (status = 428, description = "No If-Match.")))]
pub async fn put_thresholds(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PutThresholds>,
) -> Result<Response, ApiError> {
    let caller = state.auth.permit(caller, Scope::Admin)?;
    let read = format!("GET /v1/models/{id}/thresholds");
    let Some(expected) = if_match(&headers, &read)? else {
        let current = state.registry.thresholds(&id).await?.edits.version;
        return Err(if_match_required(&read, current));
    };
    let change = ThresholdsChange {
        overrides: body.overrides,
        author: &caller.name,
        note: &body.note,
        expected: expected.expected(),
    };
    Ok(with_etag(state.registry.set_thresholds(&id, change).await?))
}

/// Answer of `GET /v1/models/{id}/thresholds/history`.
#[derive(Serialize, ToSchema)]
pub struct ThresholdsHistory {
    /// Every stored version of the model's edits, newest first (version 0, as trained, is
    /// not stored).
    versions: Vec<ThresholdsVersion>,
}

/// Every version of a model's threshold edits, newest first, with author, note and time.
#[utoipa::path(get, path = "/v1/models/{id}/thresholds/history", operation_id = "thresholdsHistory",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "The model version.")),
    responses((status = 200, description = "The history.", body = ThresholdsHistory),
              (status = 404, description = "No such model.")))]
pub async fn thresholds_history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ThresholdsHistory>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let versions = state.registry.thresholds_history(&id).await?;
    Ok(Json(ThresholdsHistory { versions }))
}
