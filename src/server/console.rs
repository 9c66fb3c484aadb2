//! The admin console: a small single-page app (HTML, CSS and JavaScript embedded in the
//! binary, no CDN) served at `/`, its login (an `admin` token becomes an HttpOnly session
//! cookie with an anti-CSRF token), and the read-only views the page needs beyond the API:
//! the decision log with filters, traffic statistics and a model's evaluation report.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::{SESSION_COOKIE, SESSION_TTL};
use super::error::{ApiError, Code};
use super::extract::{in_range, ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::config::Scope;
use crate::decision::Routed;
use crate::store::DecisionFilter;

const INDEX: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// `GET /`: the console page.
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

/// `GET /assets/{file}`: the console's script and style.
pub async fn asset(ApiPath(file): ApiPath<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::not_found(format!("no asset {file}")).into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Body of `POST /console/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    token: String,
}

/// `POST /console/login`: an `admin` token opens a session (HttpOnly, SameSite=Strict cookie);
/// the answer carries the CSRF token the page sends with every change.
pub async fn login(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let (id, session) = state.auth.login(&body.token)?;
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut resp = Json(json!({"name": session.name, "csrf": session.csrf})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

/// `GET /console/session`: who is logged in, and the CSRF token (401 without a session).
pub async fn session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let s = state
        .auth
        .session(&headers)
        .ok_or_else(|| ApiError::new(Code::Unauthorized, "not logged in to the console"))?;
    Ok(Json(json!({"name": s.name, "csrf": s.csrf})))
}

/// `POST /console/logout`: ends the session and clears the cookie.
pub async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    state.auth.logout(&headers);
    let mut resp = Json(json!({"logged_out": true})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("ir_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    resp
}

/// A change (not GET/HEAD/OPTIONS) authenticated by the console's cookie must carry the
/// session's CSRF token in `X-CSRF-Token`; `None` when the request may go on.
pub fn csrf_violation(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || headers.contains_key(header::AUTHORIZATION)
        || path == "/console/login"
    {
        return None;
    }
    let session = state.auth.session(headers)?;
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    let ok = sent.is_some_and(|t| {
        subtle::ConstantTimeEq::ct_eq(t.as_bytes(), session.csrf.as_bytes()).into()
    });
    (!ok).then(|| {
        ApiError::new(
            Code::Csrf,
            "this change comes with the console's session cookie but without its X-CSRF-Token; reload the console",
        )
    })
}

/// Query of `GET /v1/decisions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsQuery {
    intent: Option<String>,
    team: Option<String>,
    language: Option<String>,
    min_confidence: Option<f64>,
    max_confidence: Option<f64>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    #[serde(default = "fifty")]
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
#[derive(Serialize)]
pub struct DecisionList {
    /// Newest first.
    decisions: Vec<Routed>,
}

/// `GET /v1/decisions?intent=&team=&language=&min_confidence=&max_confidence=&since=&until=&limit=`:
/// the decision log, newest first; `intent` matches the node and its descendants (scope
/// `route`).
pub async fn decisions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<DecisionsQuery>,
) -> Result<Json<DecisionList>, ApiError> {
    state.auth.check(&headers, Scope::Route)?;
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    #[serde(default = "fourteen")]
    days: i64,
}

fn fourteen() -> i64 {
    14
}

/// `GET /v1/stats?days=14`: ticket volume per day by intent domain and by team, the share of
/// `unknown`, and the distribution of confidence (scope `admin`).
pub async fn stats(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let days = in_range("days", q.days, 1, 366)?;
    let since = Utc::now() - chrono::Duration::days(days);
    let rows = state.store.decision_facts(since).await?;
    let mut by_intent: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut by_team: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut unknown_by_day: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut confidence = [0u64; 10];
    for (at, intent, team, conf) in &rows {
        let day = at.get(..10).unwrap_or_default().to_string();
        let domain = intent.split('.').next().unwrap_or_default().to_string();
        *by_intent
            .entry(day.clone())
            .or_default()
            .entry(domain)
            .or_default() += 1;
        let team = team.clone().unwrap_or_else(|| "(none)".into());
        *by_team
            .entry(day.clone())
            .or_default()
            .entry(team)
            .or_default() += 1;
        let u = unknown_by_day.entry(day).or_default();
        u.0 += 1;
        u.1 += u64::from(intent == crate::intent::UNKNOWN);
        confidence[((conf * 10.0) as usize).min(9)] += 1;
    }
    let unknown: Vec<Value> = unknown_by_day
        .iter()
        .map(|(d, (n, u))| json!({"day": d, "tickets": n, "unknown": u, "share": *u as f64 / *n as f64}))
        .collect();
    Ok(Json(json!({
        "days": days,
        "tickets": rows.len(),
        "by_intent": by_intent,
        "by_team": by_team,
        "unknown": unknown,
        "confidence_histogram": confidence,
    })))
}

/// `GET /v1/models/{id}/report`: a version's evaluation report: per-intent F1, confusion
/// matrix and calibration on its dev split (scope `admin`).
pub async fn model_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let record = state.store.model(&id).await?;
    let report = match record.metrics.get("candidate_report") {
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
    Ok(Json(json!({"model": record, "report": report})))
}
