//! The admin console: a small single-page app (HTML, CSS and JavaScript embedded in the
//! binary, no CDN) served at `/`, its login (an `admin` token becomes an HttpOnly session
//! cookie with an anti-CSRF token), and the read-only views the page needs beyond the API:
//! the decision log with filters, traffic statistics and a model's evaluation report.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::auth::{SESSION_COOKIE, SESSION_TTL};
use super::error::{ApiError, Code};
use super::extract::{in_range, ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::config::Scope;
use crate::decision::Routed;
use crate::stats::Stats;
use crate::store::{DecisionFilter, ModelRecord};
use crate::train::eval::Report;

const INDEX: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// The admin console (HTML; its assets under /assets/).
#[utoipa::path(get, path = "/", operation_id = "console",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)))]
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
            ),
        ],
        INDEX,
    )
        .into_response()
}

/// The console's script and style (app.js, app.css).
#[utoipa::path(get, path = "/assets/{file}", operation_id = "consoleAsset",
    params(("file" = String, Path, description = "`app.js` or `app.css`.")),
    responses((status = 200, description = "The file.", body = String,
               content(("text/javascript"), ("text/css"))),
              (status = 404, description = "No such asset.")))]
pub async fn asset(ApiPath(file): ApiPath<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::not_found(format!("no asset {file}")).into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Body of `POST /console/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// An API token with the `admin` scope.
    token: String,
}

/// A console session.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    /// The token's name.
    name: String,
    /// The token every change made with the session cookie sends as X-CSRF-Token.
    csrf: String,
}

/// Exchange an admin token for an HttpOnly, SameSite=Strict session cookie; returns the CSRF
/// token that every change made with the cookie must send as X-CSRF-Token.
#[utoipa::path(post, path = "/console/login", operation_id = "consoleLogin", request_body = Login,
    responses((status = 200, description = "Logged in (Set-Cookie carries the session).", body = SessionInfo),
              (status = 401, description = "Unknown token."),
              (status = 403, description = "The token lacks the admin scope.")))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let (id, session) = state.auth.login(&body.token).await?;
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut resp = Json(SessionInfo {
        name: session.name,
        csrf: session.csrf,
    })
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

/// Who is logged in, and the CSRF token (401 without a session).
#[utoipa::path(get, path = "/console/session", operation_id = "consoleSession",
    responses((status = 200, description = "The session.", body = SessionInfo),
              (status = 401, description = "Not logged in.")))]
pub async fn session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<SessionInfo>, ApiError> {
    let s = state
        .auth
        .session(&headers)
        .await?
        .ok_or_else(|| ApiError::new(Code::Unauthorized, "not logged in to the console"))?;
    Ok(Json(SessionInfo {
        name: s.name,
        csrf: s.csrf,
    }))
}

/// Answer of `POST /console/logout`.
#[derive(Serialize, ToSchema)]
pub struct LoggedOut {
    /// Always true.
    logged_out: bool,
}

/// End the console session.
#[utoipa::path(post, path = "/console/logout", operation_id = "consoleLogout",
    responses((status = 200, description = "Logged out; the cookie is cleared.", body = LoggedOut),
              (status = 403, description = "The session cookie came without its X-CSRF-Token.")))]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.auth.logout(&headers).await?;
    let mut resp = Json(LoggedOut { logged_out: true }).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("ir_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(resp)
}

/// A change (not GET/HEAD/OPTIONS) authenticated by the console's cookie must carry the
/// session's CSRF token (`csrf`) in `X-CSRF-Token`; `None` when the request may go on.
pub fn csrf_violation(
    csrf: &str,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || path == "/console/login" {
        return None;
    }
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    let ok =
        sent.is_some_and(|t| subtle::ConstantTimeEq::ct_eq(t.as_bytes(), csrf.as_bytes()).into());
    (!ok).then(|| {
        ApiError::new(
            Code::Csrf,
            "this change comes with the console's session cookie but without its X-CSRF-Token; reload the console",
        )
    })
}

/// Query of `GET /v1/decisions`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DecisionsQuery {
    /// An intent node: matches it and its descendants.
    intent: Option<String>,
    /// A team.
    team: Option<String>,
    /// A language code.
    language: Option<String>,
    /// Lowest top-1 probability, 0 to 1.
    #[param(minimum = 0, maximum = 1)]
    min_confidence: Option<f64>,
    /// Highest top-1 probability, 0 to 1.
    #[param(minimum = 0, maximum = 1)]
    max_confidence: Option<f64>,
    /// Received at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Received before (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// 1 to 1000; other values are refused with 400.
    #[serde(default = "fifty")]
    #[param(default = 50, minimum = 1, maximum = 1000)]
    limit: i64,
}

fn fifty() -> i64 {
    50
}

/// A confidence bound of the query, when given: 0 to 1.
fn confidence(name: &str, value: Option<f64>) -> Result<Option<f64>, ApiError> {
    value.map(|v| in_range(name, v, 0.0, 1.0)).transpose()
}

/// Body of `GET /v1/decisions`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DecisionList {
    /// Newest first.
    decisions: Vec<Routed>,
}

/// The decision log, newest first, filtered; intent matches the node and its descendants.
#[utoipa::path(get, path = "/v1/decisions", operation_id = "decisions",
    security(("bearer" = ["route"])), params(DecisionsQuery),
    responses((status = 200, description = "The decisions.", body = DecisionList)))]
pub async fn decisions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<DecisionsQuery>,
) -> Result<Json<DecisionList>, ApiError> {
    state.auth.permit(caller, Scope::Route)?;
    let filter = DecisionFilter {
        intent: q.intent.filter(|s| !s.is_empty()),
        team: q.team.filter(|s| !s.is_empty()),
        language: q.language.filter(|s| !s.is_empty()),
        min_confidence: confidence("min_confidence", q.min_confidence)?,
        max_confidence: confidence("max_confidence", q.max_confidence)?,
        since: q.since,
        until: q.until,
        limit: in_range("limit", q.limit, 1, 1000)?,
    };
    Ok(Json(DecisionList {
        decisions: state.store.decisions(&filter).await?,
    }))
}

/// Query of `GET /v1/stats`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// 1 to 366; other values are refused with 400.
    #[serde(default = "fourteen")]
    #[param(default = 14, minimum = 1, maximum = 366)]
    days: i64,
}

fn fourteen() -> i64 {
    14
}

/// Tickets per day by intent domain and by team, share of unknown, confidence histogram (10
/// bins).
#[utoipa::path(get, path = "/v1/stats", operation_id = "stats",
    security(("bearer" = ["admin"])), params(StatsQuery),
    responses((status = 200, description = "The statistics.", body = Stats)))]
pub async fn stats(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<Stats>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let days = in_range("days", q.days, 1, 366)?;
    let since = Utc::now() - chrono::Duration::days(days);
    let rows = state.store.decision_facts(since).await?;
    Ok(Json(Stats::of(days, &rows)))
}

/// Answer of `GET /v1/models/{id}/report`.
#[derive(Serialize, ToSchema)]
pub struct ModelReport {
    /// The model.
    model: ModelRecord,
    /// Its evaluation on its dev split.
    report: Report,
}

/// A version's evaluation report: per-intent precision, recall, F1, the confusion matrix,
/// calibration bins.
#[utoipa::path(get, path = "/v1/models/{id}/report", operation_id = "modelReport",
    security(("bearer" = ["admin"])), params(("id" = String, Path, description = "The model version.")),
    responses((status = 200, description = "The report.", body = ModelReport),
              (status = 404, description = "No such model, or it has no report.")))]
pub async fn model_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ModelReport>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let record = state.store.model(&id).await?;
    let report = match record.metrics.report() {
        Some(r) => r.clone(),
        None => {
            let path = std::path::Path::new(&record.path).join("eval.json");
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ApiError::not_found(format!(
                    "model {id} has no evaluation report ({}: {e})",
                    path.display()
                ))
            })?;
            serde_json::from_str(&text).map_err(ApiError::internal)?
        }
    };
    Ok(Json(ModelReport {
        model: record,
        report,
    }))
}
