//! Rules endpoints: read, replace (If-Match, validated, atomic, live), history with diffs,
//! rollback and simulation of a candidate ruleset. All need the `admin` scope.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{invalid_rules, ApiError, Code};
use super::extract::{ApiJson, ApiPath};
use super::AppState;
use crate::config::Scope;
use crate::decision::Routed;
use crate::rules::compile::RuleError;
use crate::rules::live::{RulesChange, Taxonomy};
use crate::rules::simulate::{self, Case, Simulation};
use crate::rules::RuleSet;
use crate::store::RulesVersion;
use crate::ticket::Ticket;

/// A version number as an ETag.
pub(super) fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header")
}

/// A rules version as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Rules)]
pub struct RulesBody {
    /// The rules file (TOML).
    text: String,
    /// The version number (also the ETag).
    version: String,
    /// Who saved it.
    author: String,
    /// Why.
    note: String,
    /// When.
    created_at: chrono::DateTime<Utc>,
    /// Compiler warnings (active rules only).
    warnings: Vec<String>,
}

fn rules_body(v: &RulesVersion, warnings: &[String]) -> RulesBody {
    RulesBody {
        text: v.text.clone(),
        version: v.version.to_string(),
        author: v.author.clone(),
        note: v.note.clone(),
        created_at: v.created_at,
        warnings: warnings.to_vec(),
    }
}

fn with_etag(version: i64, body: RulesBody) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

/// 428 for a change sent without `If-Match`: `read` gives the ETag, `current` is the version now.
pub(super) fn if_match_required(read: &str, current: i64) -> ApiError {
    ApiError::new(
        Code::IfMatchRequired,
        format!("send If-Match with the version you edited ({read} gives it as the ETag; now \"{current}\"), so that concurrent edits are not lost"),
    )
    .with_details(json!({ "current_version": current.to_string() }))
}

/// What `If-Match` asks for.
pub(super) enum IfMatch {
    /// `*`: whatever version is current (RFC 9110).
    Any,
    /// `"7"` (or `7`): that version.
    Version(i64),
}

impl IfMatch {
    /// The version a change must be based on (`None`: any).
    pub(super) fn expected(self) -> Option<i64> {
        match self {
            Self::Any => None,
            Self::Version(v) => Some(v),
        }
    }
}

/// The `If-Match` header, if sent; `read` names the request that gives the ETag.
pub(super) fn if_match(headers: &HeaderMap, read: &str) -> Result<Option<IfMatch>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(Some(IfMatch::Any));
    }
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse().map(|v| Some(IfMatch::Version(v))).map_err(|_| {
        ApiError::bad_request(format!(
            "If-Match: \"{text}\" is not a version; send the ETag of {read}, e.g. If-Match: \"3\", or * for whatever version is current"
        ))
    })
}

/// The active rules text and version (also the ETag).
#[utoipa::path(get, path = "/v1/rules", operation_id = "getRules", security(("bearer" = ["admin"])),
    responses((status = 200, description = "The active rules.", body = RulesBody,
               headers(("ETag" = String, description = "The rules version, quoted.")))))]
pub async fn get_rules(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let r = state.rules.current();
    let warnings = with_connectors(&state, &r.ruleset, &r.warnings);
    Ok(with_etag(
        r.stored.version,
        rules_body(&r.stored, &warnings),
    ))
}

/// Body of `PUT /v1/rules`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRules {
    /// The rules file (TOML).
    text: String,
    /// Why (kept in the history).
    #[serde(default)]
    note: String,
}

/// The `If-Match` header of a rules change.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IfMatchHeader {
    /// The version you edited, as GET /v1/rules returned it in ETag (e.g. "3"), or * for
    /// whatever version is current. A rules change without it is 428 if_match_required; a
    /// rollback may leave it out.
    #[serde(rename = "If-Match")]
    #[param(nullable = false, pattern = r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#)]
    if_match: Option<String>,
}

/// Validates, stores and activates rules text as the next version after `expected`.
async fn save_and_activate(
    state: &AppState,
    change: RulesChange<'_>,
) -> Result<Response, ApiError> {
    let saved = state.rules.replace(change, &state.models).await?;
    let warnings = with_connectors(state, &saved.ruleset, &saved.warnings);
    Ok(with_etag(
        saved.stored.version,
        rules_body(&saved.stored, &warnings),
    ))
}

/// The compiler's warnings and the connectors': decisions a helpdesk could not be given.
fn with_connectors(state: &AppState, rules: &RuleSet, warnings: &[String]) -> Vec<String> {
    let mut all = warnings.to_vec();
    let rosters = &state.settings.assignment.rosters;
    all.extend(state.connectors.connectors().warnings(rules, rosters));
    all
}

/// Replace the rules: validated, stored atomically as the next version and swapped in live.
#[utoipa::path(put, path = "/v1/rules", operation_id = "putRules", security(("bearer" = ["admin"])),
    params(IfMatchHeader), request_body = PutRules,
    responses((status = 200, description = "Stored and active.", body = RulesBody,
               headers(("ETag" = String, description = "The new version, quoted."))),
              (status = 412, description = "The rules changed since the version in If-Match."),
              (status = 428, description = "No If-Match.")))]
pub async fn put_rules(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PutRules>,
) -> Result<Response, ApiError> {
    let caller = state.auth.permit(caller, Scope::Admin)?;
    let Some(expected) = if_match(&headers, "GET /v1/rules")? else {
        let current = state.rules.current().stored.version;
        return Err(if_match_required("GET /v1/rules", current));
    };
    save_and_activate(
        &state,
        RulesChange {
            text: &body.text,
            author: &caller.name,
            note: &body.note,
            expected: expected.expected(),
        },
    )
    .await
}

/// One entry of the history.
#[derive(Serialize, ToSchema)]
pub struct VersionEntry {
    /// The version number.
    version: String,
    /// Who saved it.
    author: String,
    /// Why.
    note: String,
    /// When.
    created_at: chrono::DateTime<Utc>,
    /// Content hash of the text.
    content_hash: String,
    /// Whether it is the active version.
    active: bool,
    /// Unified diff from the previous version.
    diff: String,
}

/// Answer of `GET /v1/rules/versions`.
#[derive(Serialize, ToSchema)]
pub struct VersionList {
    /// Newest first.
    versions: Vec<VersionEntry>,
}

/// Body of `POST /v1/rules/validate`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Validate {
    /// The rules file (TOML).
    text: String,
}

/// One compile error.
#[derive(Serialize, ToSchema)]
pub struct ValidationError {
    /// 1-based line in the text.
    line: usize,
    /// Key path, e.g. `rules[2].when.intent`; empty for TOML syntax errors.
    path: String,
    /// The message, with the path in front.
    message: String,
}

/// Answer of `POST /v1/rules/validate`.
#[derive(Serialize, ToSchema)]
pub struct Validation {
    /// Whether the text compiles.
    valid: bool,
    /// Every error.
    errors: Vec<ValidationError>,
    /// Warnings (when valid).
    warnings: Vec<String>,
    /// How many rules (when valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<usize>,
}

/// Compile rules text against the active model's taxonomy without saving: every error with its
/// line, and the warnings.
#[utoipa::path(post, path = "/v1/rules/validate", operation_id = "validateRules",
    security(("bearer" = ["admin"])), request_body = Validate,
    responses((status = 200, description = "The verdict.", body = Validation)))]
pub async fn validate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<Validate>,
) -> Result<Json<Validation>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    // Each error as its line, its key path, and the message with the path in front.
    let entry = |e: &RuleError| ValidationError {
        line: e.line,
        path: e.path.clone(),
        message: match e.path.as_str() {
            "" => e.message.clone(),
            path => format!("{path}: {}", e.message),
        },
    };
    Ok(Json(
        match state.models.compile_rules(&body.text, "rules") {
            Ok(c) => Validation {
                valid: true,
                errors: Vec::new(),
                warnings: with_connectors(&state, &c.ruleset, &c.warnings),
                rules: Some(c.ruleset.rules.len()),
            },
            Err(e) => Validation {
                valid: false,
                errors: e.0.iter().map(entry).collect(),
                warnings: Vec::new(),
                rules: None,
            },
        },
    ))
}

/// Every version, newest first, with author, time and the diff from the one before.
#[utoipa::path(get, path = "/v1/rules/versions", operation_id = "rulesVersions",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "The history.", body = VersionList)))]
pub async fn versions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<VersionList>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let history = state.store.rules_history().await?;
    let active = state.rules.current().stored.version;
    let entries: Vec<VersionEntry> = history
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let before = history.get(i + 1).map_or("", |p| p.text.as_str());
            let from = history
                .get(i + 1)
                .map_or("(none)".to_string(), |p| format!("v{}", p.version));
            let diff = similar::TextDiff::from_lines(before, v.text.as_str())
                .unified_diff()
                .context_radius(2)
                .header(&from, &format!("v{}", v.version))
                .to_string();
            VersionEntry {
                version: v.version.to_string(),
                author: v.author.clone(),
                note: v.note.clone(),
                created_at: v.created_at,
                content_hash: v.content_hash.clone(),
                active: v.version == active,
                diff,
            }
        })
        .collect();
    Ok(Json(VersionList { versions: entries }))
}

/// One version's full text.
#[utoipa::path(get, path = "/v1/rules/versions/{version}", operation_id = "rulesVersion",
    security(("bearer" = ["admin"])),
    params(("version" = String, Path, pattern = "^[0-9]{1,18}$", description = "The version number.")),
    responses((status = 200, description = "The version.", body = RulesBody),
              (status = 404, description = "No such version.")))]
pub async fn version(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(v): ApiPath<String>,
) -> Result<Json<RulesBody>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let n: i64 = v
        .parse()
        .map_err(|_| ApiError::bad_request(format!("\"{v}\" is not a version number")))?;
    let stored = state.store.rules_version(n).await?;
    Ok(Json(rules_body(&stored, &[])))
}

/// Body of `POST /v1/rules/rollback`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version to bring back (a number, or its digits as a string).
    #[schema(schema_with = version_schema)]
    version: serde_json::Value,
}

/// A version number as a rollback takes it: an integer or its digits.
fn version_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]{1,18}$")),
        )
        .description(Some("The version to bring back."))
        .build()
        .into()
}

/// Append a new version with an old version's text and activate it.
#[utoipa::path(post, path = "/v1/rules/rollback", operation_id = "rollbackRules",
    security(("bearer" = ["admin"])), params(IfMatchHeader), request_body = Rollback,
    responses((status = 200, description = "Stored and active.", body = RulesBody,
               headers(("ETag" = String, description = "The new version, quoted."))),
              (status = 404, description = "No such version."),
              (status = 412, description = "The rules changed since the version in If-Match.")))]
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Rollback>,
) -> Result<Response, ApiError> {
    let caller = state.auth.permit(caller, Scope::Admin)?;
    let n = match &body.version {
        // JSON numbers with no fraction are integers, `3.0` too.
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid("version: give a version number, e.g. {\"version\": 3}"))?;
    let old = state.store.rules_version(n).await?;
    let expected = if_match(&headers, "GET /v1/rules")?.and_then(IfMatch::expected);
    save_and_activate(
        &state,
        RulesChange {
            text: &old.text,
            author: &caller.name,
            note: &format!("rollback to v{n}"),
            expected,
        },
    )
    .await
}

/// Body of `POST /v1/rules/simulate`: give tickets or last, not both.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SimulateRequest)]
pub struct Simulate {
    /// Candidate rules text.
    rules: String,
    /// 1 to limits.max_batch_tickets (default 256) tickets to classify and decide.
    #[serde(default, deserialize_with = "crate::ticket::optional_objects")]
    #[schema(min_items = 1)]
    tickets: Option<Vec<Ticket>>,
    /// Or: the last N logged decisions (1 to 10000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    last: Option<usize>,
}

/// Dry-run a candidate ruleset against tickets or the last N logged decisions: the active
/// rules' outcome vs the candidate's, per ticket and in totals. Assigns and logs nothing.
#[utoipa::path(post, path = "/v1/rules/simulate", operation_id = "simulateRules",
    security(("bearer" = ["admin"])), request_body = Simulate,
    responses((status = 200, description = "Before and after.", body = Simulation)))]
pub async fn simulate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<Simulate>,
) -> Result<Json<Simulation>, ApiError> {
    state.auth.permit(caller, Scope::Admin)?;
    let candidate = state
        .models
        .compile_rules(&body.rules, "rules")
        .map_err(invalid_rules)?;
    let cases = match (body.tickets, body.last) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::invalid(
                "give either `tickets` (a list of tickets) or `last` (how many logged decisions), not both",
            ))
        }
        (Some(tickets), None) => given_cases(&state, tickets).await?,
        (None, Some(n)) => logged_cases(&state, n).await?,
    };
    let active = state.rules.current();
    Ok(Json(simulate::compare(
        &active.ruleset,
        &candidate.ruleset,
        &cases,
        &candidate.warnings,
        active.stored.version,
    )))
}

async fn given_cases(state: &AppState, tickets: Vec<Ticket>) -> Result<Vec<Case>, ApiError> {
    let max = state.settings.limits.max_batch_tickets;
    if tickets.is_empty() || tickets.len() > max {
        return Err(ApiError::invalid(format!(
            "tickets: give 1 to {max} tickets (limits.max_batch_tickets)"
        )));
    }
    let admitted = state.route.classify_all(tickets).await?;
    let now = Utc::now();
    Ok(admitted
        .tickets
        .into_iter()
        .zip(admitted.classifications)
        .map(|(ticket, c)| Case {
            received_at: ticket.received_at.unwrap_or(now),
            ticket,
            resolution: c.resolution,
            language: c.language,
            decision_id: None,
            text_missing: false,
            facts_missing: false,
            incident: None,
        })
        .collect())
}

async fn logged_cases(state: &AppState, n: usize) -> Result<Vec<Case>, ApiError> {
    if n == 0 || n > 10_000 {
        return Err(ApiError::invalid("last: give 1 to 10000"));
    }
    let logged = state.store.recent_decisions(n as i64).await?;
    logged
        .into_iter()
        .map(|d| {
            let routed: Routed = serde_json::from_str(&d.decision).map_err(ApiError::internal)?;
            let mut ticket = Ticket {
                id: Some(d.ticket_id),
                channel: d.channel,
                language: d.language_given,
                received_at: Some(routed.received_at),
                ..Ticket::default()
            };
            let text_missing = d.kept.is_none();
            let mut facts_missing = true;
            if let Some(kept) = d.kept {
                ticket.subject = kept.subject;
                ticket.body = kept.body;
                ticket.customer = kept.customer;
                if let Some(fields) = kept.fields {
                    ticket.fields = fields;
                    facts_missing = false;
                }
            }
            Ok(Case {
                ticket,
                incident: routed.incident_id,
                resolution: routed.intent.resolution,
                language: routed.language,
                received_at: routed.received_at,
                decision_id: Some(d.decision_id),
                text_missing,
                facts_missing,
            })
        })
        .collect()
}
