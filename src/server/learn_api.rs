//! Learning endpoints: agents' feedback, taxonomy additions, the review queue, retraining
//! behind the evaluation gate, the model registry (list, activate, roll back), shadow mode and
//! its report; plus the background jobs (retraining by count or period, following registry
//! changes made by the CLI).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{ApiError, Code};
use super::extract::{in_range, parse_json, ApiJson, ApiPath, ApiQuery, RawBody};
use super::AppState;
use crate::config::Scope;
use crate::intent::{IntentTree, UNKNOWN};
use crate::learn;
use crate::registry::AfterGate;
use crate::rules::{Condition, RuleSet};
use crate::store::AddedIntent;

/// The active model's taxonomy plus the intents added through the API.
pub async fn taxonomy(state: &AppState) -> Result<IntentTree, ApiError> {
    let added = state.store.added_intents().await?;
    learn::taxonomy(&state.models.active().engine.classifier().tree, &added)
        .map_err(ApiError::internal)
}

/// The one intent a team stands for in the rules, if exactly one: every rule that sends
/// tickets to `team` conditions on one single leaf intent, and they all name the same one.
pub fn team_intent(rules: &RuleSet, team: &str, labels: &[String]) -> Option<String> {
    let mut found: Option<String> = None;
    for r in rules
        .rules
        .iter()
        .filter(|r| r.then.team.as_deref() == Some(team))
    {
        let [Condition::Intent(nodes)] = r.when.as_slice() else {
            return None;
        };
        let [node] = nodes.as_slice() else {
            return None;
        };
        if !labels.contains(node) || found.as_ref().is_some_and(|f| f != node) {
            return None;
        }
        found = Some(node.clone());
    }
    found
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
        (None, Some(team)) => team_intent(&state.rules.current().ruleset, team, &labels),
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

/// The rule that set a decision's team: the last fired rule with a `team` action.
fn team_rule(rules: &RuleSet, fired: &[String]) -> String {
    fired
        .iter()
        .rev()
        .find(|id| {
            rules
                .rules
                .iter()
                .any(|r| &r.id == *id && r.then.team.is_some())
        })
        .cloned()
        .unwrap_or_else(|| "(defaults)".to_string())
}

/// `GET /v1/feedback/report`: corrections summarised for rule authors and model owners: team
/// and assignee corrections per rule with suggested changes, intent confusions (scope `admin`).
pub async fn feedback_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    let all = state.store.feedback().await?;
    let rules = state.rules.current();
    // rule -> (tickets corrected, right team -> count, assignee corrections)
    let mut per_rule: BTreeMap<String, (usize, BTreeMap<String, usize>, usize)> = BTreeMap::new();
    let mut confusions: BTreeMap<(String, String), usize> = BTreeMap::new();
    for f in &all {
        if let Some(right) = &f.correct_intent {
            if *right != f.predicted_intent {
                *confusions
                    .entry((f.predicted_intent.clone(), right.clone()))
                    .or_default() += 1;
            }
        }
        if f.correct_team.is_some() || f.correct_assignee.is_some() {
            let entry = per_rule
                .entry(team_rule(&rules.ruleset, &f.rule_ids))
                .or_default();
            entry.0 += 1;
            if let Some(t) = &f.correct_team {
                *entry.1.entry(t.clone()).or_default() += 1;
            }
            if f.correct_assignee.is_some() {
                entry.2 += 1;
            }
        }
    }
    let rules_report: Vec<Value> = per_rule
        .into_iter()
        .map(|(rule, (n, teams, assignees))| {
            let top = teams.iter().max_by_key(|(_, c)| **c);
            let suggestion = match top {
                Some((team, &c)) if c >= 3 && c * 10 >= n * 6 => format!(
                    "agents moved {c} of {n} tickets from rule \"{rule}\" to team \"{team}\": consider `then.team = \"{team}\"` there, or a narrower rule before it"
                ),
                Some(_) => format!("agents disagree with rule \"{rule}\" on {n} tickets, with no single better team yet: review its conditions"),
                None => format!("agents reassigned {assignees} tickets of rule \"{rule}\": review the team's roster or strategy"),
            };
            json!({"rule": rule, "corrected": n, "right_teams": teams, "assignee_corrections": assignees, "suggestion": suggestion})
        })
        .collect();
    let confusions: Vec<Value> = confusions
        .into_iter()
        .map(|((p, r), n)| json!({"predicted": p, "correct": r, "count": n}))
        .collect();
    Ok(Json(json!({
        "feedback": all.len(),
        "intent_corrections": all.iter().filter(|f| f.correct_intent.is_some()).count(),
        "training_labels": all.iter().filter(|f| f.correct_intent.is_some() && f.has_text).count(),
        "rules": rules_report,
        "intent_confusions": confusions,
    })))
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
        Some(s) => Some((s.id.clone(), state.store.shadow_intents(&s.id).await?)),
        None => None,
    };
    let mut items: Vec<(u8, ReviewItem)> = recent
        .into_iter()
        .filter_map(|d| {
            let decision_id = d.decision_id?;
            let intent = d.intent.resolution.intent;
            let margin = d.intent.resolution.margin;
            let shadow_intent = shadow
                .as_ref()
                .and_then(|(_, m)| m.get(&decision_id).cloned())
                .filter(|s| *s != intent);
            let (rank, reason) = if intent == UNKNOWN {
                (0, "the model did not recognise the intent".to_string())
            } else if let Some(s) = &shadow_intent {
                (1, format!("the shadow model says {s}"))
            } else {
                (
                    2,
                    format!("small margin {margin:.2} between the top intents"),
                )
            };
            let item = ReviewItem {
                decision_id,
                ticket_id: d.ticket_id,
                intent,
                top_k: d.intent.resolution.top_k,
                margin,
                reason,
            };
            Some((rank, item))
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.margin.total_cmp(&b.1.margin)));
    let review = items
        .into_iter()
        .take(limit)
        .map(|(_, item)| item)
        .collect();
    Ok(Json(Review { review }))
}

/// Body of `GET /v1/review`.
#[derive(Serialize)]
pub struct Review {
    /// The tickets most worth a label first.
    review: Vec<ReviewItem>,
}

/// One ticket worth an agent's label.
#[derive(Serialize)]
pub struct ReviewItem {
    decision_id: String,
    ticket_id: Option<String>,
    intent: String,
    top_k: Vec<crate::intent::Scored>,
    margin: f32,
    reason: String,
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
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin)?;
    state.store.model(&id).await?;
    let rows = state.store.shadow_rows(&id).await?;
    let agree = rows.iter().filter(|r| r.active == r.shadow).count();
    let corrected: Vec<_> = rows.iter().filter(|r| r.correct.is_some()).collect();
    let right = |f: &dyn Fn(&crate::store::ShadowRow) -> &str| {
        corrected
            .iter()
            .filter(|r| r.correct.as_deref() == Some(f(r)))
            .count()
    };
    let ratio = |a: usize, n: usize| {
        if n == 0 {
            None
        } else {
            Some(a as f64 / n as f64)
        }
    };
    let (active_right, shadow_right) = (right(&|r| &r.active), right(&|r| &r.shadow));
    Ok(Json(json!({
        "model": id,
        "tickets": rows.len(),
        "agreement": ratio(agree, rows.len()),
        "corrected_tickets": corrected.len(),
        "active_accuracy_on_corrected": ratio(active_right, corrected.len()),
        "shadow_accuracy_on_corrected": ratio(shadow_right, corrected.len()),
    })))
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
