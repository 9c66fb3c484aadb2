//! The `jira` kind (Jira Service Management, Cloud). Formats, as documented by Atlassian (read
//! 2026-12-06; developer.atlassian.com/cloud/jira/platform/webhooks and the REST API v3):
//!
//! - Admin webhooks with a secret: `X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>`
//!   (the WebSub format); the body's `timestamp` (milliseconds) is signed with it, so the replay
//!   window applies to it. `X-Atlassian-Webhook-Identifier` names the delivery but is not
//!   signed: we deduplicate by the body's hash instead (Jira's retries send the same body).
//!   Webhooks without a secret are not signed: we refuse them.
//! - Automation rules' "Send web request" carry the body the rule's author writes and the
//!   headers they add: a secret header checked against the connector's secrets (the README
//!   gives the body, shaped like the admin webhook's).
//! - Payload: `{"webhookEvent": "jira:issue_created" | "jira:issue_updated", "user":
//!   {accountId}, "issue": {"key", "fields": {summary, description, labels, priority{name},
//!   status{name, statusCategory{key}}}}, "changelog": {"items": [{field, toString}]}}`; the
//!   description is text, or an Atlassian Document Format tree (its text nodes are read).
//! - Write-back: `PUT /rest/api/3/issue/{key}` (`fields.priority`, the team's component added
//!   with `update.components`, or a select field, and labels added with `update.labels`, both
//!   atomic), `PUT /rest/api/3/issue/{key}/assignee` (`accountId`), `POST
//!   /rest/api/3/issue/{key}/transitions` (`transition.id`), and the internal note through
//!   Jira Service Management's `POST /rest/servicedeskapi/request/{key}/comment` with
//!   `"public": false`; basic auth `{email}:{api_token}`. Jira has no conditional update, so a
//!   write-back cannot be superseded.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::config::{ConnectorFile, Errors, Id};
use super::path::{hashed_delivery, scalar, FieldPath};
use super::{InboundError, Secret};
use crate::decision::Routed;
use crate::store::connectors::{EventKind, HttpCall, NewInboxEvent};
use crate::ticket::Ticket;

/// The admin webhook's signature header.
pub const SIGNATURE: &str = "x-hub-signature";

/// A Jira site's write-back settings and the helpdesk's ids of our names.
#[derive(Debug, Clone)]
pub struct Jira {
    /// The integration user's e-mail (basic auth).
    pub email: String,
    /// Its API token.
    pub api_token: Secret,
    /// Team -> component name, or select field option.
    pub teams: BTreeMap<String, String>,
    /// `components`, or a custom field's id.
    pub team_field: String,
    /// Agent -> accountId.
    pub agents: BTreeMap<String, String>,
    /// Our priority -> Jira's priority name.
    pub priorities: BTreeMap<String, String>,
    /// Our status -> the transition id that reaches it.
    pub transitions: BTreeMap<String, String>,
    /// Jira statuses that close our assignment.
    pub done: Vec<String>,
    /// Write only the team.
    pub group_only: bool,
    /// Add an internal comment.
    pub internal_note: bool,
    /// The label our updates add.
    pub marker_tag: String,
    /// The integration user's accountId: its events are ignored.
    pub integration_user: Option<String>,
    /// Custom fields: our name -> path in the payload.
    pub custom: Vec<(String, FieldPath)>,
}

/// The text of a description: as it is, or the text nodes of an Atlassian Document Format
/// tree, paragraphs on their own lines.
fn description(v: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        if let Some(t) = v.get("text").and_then(Value::as_str) {
            out.push_str(t);
        }
        if let Some(children) = v.get("content").and_then(Value::as_array) {
            for c in children {
                walk(c, out);
            }
            if matches!(
                v.get("type").and_then(Value::as_str),
                Some("paragraph" | "heading")
            ) {
                out.push('\n');
            }
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Object(_) => {
            let mut out = String::new();
            walk(v, &mut out);
            out.trim().to_string()
        }
        _ => String::new(),
    }
}

impl Jira {
    /// The event a payload stands for.
    pub(super) fn event(
        &self,
        connector: &str,
        window: u64,
        body: &[u8],
        json: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<NewInboxEvent, InboundError> {
        if let Some(ms) = json.get("timestamp").and_then(Value::as_i64) {
            let skew = received_at.timestamp_millis().abs_diff(ms) / 1000;
            if skew > window {
                return Err(InboundError::Unauthenticated(format!(
                    "timestamp (in the signed body): {skew} s away from our clock; at most {window} s are accepted (a replay, or a clock to fix)"
                )));
            }
        }
        let issue = &json["issue"];
        let key = issue
            .get("key")
            .and_then(scalar)
            .filter(|k| !k.trim().is_empty() && k.len() <= 256);
        let key = key.ok_or_else(|| {
            InboundError::Unmappable("issue.key: missing; every Jira event names its issue".into())
        })?;
        let event_type = json
            .get("webhookEvent")
            .and_then(Value::as_str)
            .unwrap_or("jira:issue_created")
            .to_string();
        let actor = json["user"].get("accountId").and_then(Value::as_str);
        let ours =
            self.integration_user.is_some() && actor.map(str::to_string) == self.integration_user;
        let kind = match event_type.as_str() {
            _ if ours => EventKind::Ignored,
            "jira:issue_created" => EventKind::Created,
            "jira:issue_updated" if self.closes(json) => EventKind::Closed,
            "jira:issue_updated" if self.team_now(json).is_some() => EventKind::Reassigned,
            _ => EventKind::Ignored,
        };
        let context = match (kind, self.team_now(json)) {
            (EventKind::Reassigned, Some(team)) => {
                let agent = actor
                    .and_then(|id| super::shared::ours_for(&self.agents, id))
                    .unwrap_or_else(|| format!("jira user {}", actor.unwrap_or("(unknown)")));
                super::shared::reassignment(&team, &agent)
            }
            _ => None,
        };
        let ticket = match kind {
            EventKind::Created => Some(self.ticket(issue, json, &key)?),
            _ => None,
        };
        // The delivery is what the signature covers: the body (its `timestamp` makes each
        // event's unique; Jira's retries send the same). `X-Atlassian-Webhook-Identifier` is
        // not signed, so a replay with a new one must not pass for a new event.
        let delivery_id = hashed_delivery(&key, &[body]);
        Ok(NewInboxEvent {
            connector: connector.to_string(),
            delivery_id,
            kind,
            event_type: if ours {
                format!("{event_type} (our own update)")
            } else {
                event_type
            },
            ticket_id: key,
            ticket: ticket
                .map(|t| serde_json::to_string(&t).expect("a ticket serialises. This is a bug.")),
            context,
            received_at,
        })
    }

    /// The team an update put the issue in (a component swapped for another, or the team field
    /// set, to one of the `teams` values), as ours.
    fn team_now(&self, json: &Value) -> Option<String> {
        let items = json["changelog"]["items"].as_array()?;
        // Components are many: a move takes one away too (adding one beside ours is no move).
        let removed = |i: &Value| i["field"] == "Component" && i["to"].is_null();
        if self.team_field == "components" && !items.iter().any(removed) {
            return None;
        }
        items.iter().rev().find_map(|i| {
            let field = if self.team_field == "components" {
                i["field"] == "Component"
            } else {
                i["fieldId"] == self.team_field.as_str()
            };
            let now = i["toString"]
                .as_str()
                .filter(|_| field && !i["to"].is_null())?;
            super::shared::ours_for(&self.teams, now)
        })
    }

    /// Whether an update moved the issue to a done status.
    fn closes(&self, json: &Value) -> bool {
        let items = json["changelog"]["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        items.iter().any(|i| {
            i["field"] == "status"
                && i["toString"]
                    .as_str()
                    .is_some_and(|s| self.done.iter().any(|d| d.eq_ignore_ascii_case(s)))
        })
    }

    /// The ticket of a created issue.
    fn ticket(&self, issue: &Value, json: &Value, key: &str) -> Result<Ticket, InboundError> {
        let fields = &issue["fields"];
        let subject = fields
            .get("summary")
            .and_then(Value::as_str)
            .map(str::to_string);
        let body = fields
            .get("description")
            .map(description)
            .unwrap_or_default();
        if body.trim().is_empty() && subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
            return Err(InboundError::Unmappable(
                "the issue has no text: neither a summary nor a description".into(),
            ));
        }
        let mut extra: BTreeMap<String, Value> = self
            .custom
            .iter()
            .filter_map(|(name, p)| p.get(json).map(|v| (name.clone(), v.clone())))
            .collect();
        if let Some(labels) = fields
            .get("labels")
            .filter(|l| l.as_array().is_some_and(|a| !a.is_empty()))
        {
            extra
                .entry("labels".into())
                .or_insert_with(|| labels.clone());
        }
        if let Some(p) = fields["priority"].get("name") {
            extra
                .entry("jira_priority".into())
                .or_insert_with(|| p.clone());
        }
        Ok(Ticket {
            id: Some(key.to_string()),
            subject,
            body,
            fields: extra,
            ..Ticket::default()
        })
    }

    /// The requests that write a decision (or why it cannot be written).
    pub fn write_back(&self, key: &str, d: &Routed) -> Result<Vec<HttpCall>, String> {
        let issue = format!("/rest/api/3/issue/{}", super::zendesk::urlencode(key));
        let priority = d.priority.name();
        let p = super::shared::value_for(
            &self.priorities,
            "priority",
            priority,
            "Jira priority",
            "priorities",
        )?;
        let mut labels: Vec<Value> = d.tags.iter().map(|t| json!({"add": t})).collect();
        labels.push(json!({"add": self.marker_tag}));
        let mut edit = json!({"fields": {"priority": {"name": p}}, "update": {"labels": labels}});
        if let Some(team) = &d.team {
            let value = super::shared::value_for(
                &self.teams,
                "team",
                team,
                "Jira component or option",
                "teams",
            )?;
            if self.team_field == "components" {
                edit["update"]["components"] = json!([{"add": {"name": value}}]);
            } else {
                edit["fields"][&self.team_field] = json!({"value": value});
            }
        }
        let mut calls = vec![HttpCall {
            merge_tags_from: None,
            method: "PUT".into(),
            path: issue.clone(),
            body: Some(edit),
        }];
        if let (Some(agent), false) = (&d.assignee, self.group_only) {
            let id =
                super::shared::value_for(&self.agents, "agent", agent, "Jira accountId", "agents")?;
            calls.push(HttpCall {
                merge_tags_from: None,
                method: "PUT".into(),
                path: format!("{issue}/assignee"),
                body: Some(json!({"accountId": id})),
            });
        }
        if let Some(t) = self.transitions.get(d.status.name()) {
            calls.push(HttpCall {
                merge_tags_from: None,
                method: "POST".into(),
                path: format!("{issue}/transitions"),
                body: Some(json!({"transition": {"id": t}})),
            });
        }
        if self.internal_note {
            calls.push(HttpCall {
                merge_tags_from: None,
                method: "POST".into(),
                path: format!(
                    "/rest/servicedeskapi/request/{}/comment",
                    super::zendesk::urlencode(key)
                ),
                body: Some(json!({"body": super::zendesk::note(d), "public": false})),
            });
        }
        Ok(calls)
    }

    /// `Authorization` for the API token.
    pub fn authorization(&self) -> String {
        super::shared::basic_auth(&self.email, &self.api_token.0)
    }
}

/// The jira kind of a `[[connectors]]` entry: its tables checked, defaults filled in.
pub(super) fn compile(f: &ConnectorFile, errors: &mut Errors<'_>) -> Option<Jira> {
    use super::shared::{
        any_text, custom_paths, our_priorities, our_statuses, overrides, refuse_mapping, table,
        Events,
    };
    refuse_mapping(f, "jira", Events::Closed, errors);
    let w = f.write_back.clone().unwrap_or_default();
    let mut agents = BTreeMap::new();
    for (name, id) in &w.agents {
        match id {
            Id::Text(t) if !t.trim().is_empty() => {
                agents.insert(name.clone(), t.clone());
            }
            _ => errors.add(
                &format!("write_back.agents.{name}"),
                "a Jira accountId is text",
            ),
        }
    }
    let priorities = table(&[
        ("low", "Low".to_string()),
        ("normal", "Medium".into()),
        ("high", "High".into()),
        ("urgent", "Highest".into()),
    ]);
    let statuses = our_statuses();
    for k in w
        .transitions
        .keys()
        .filter(|k| !statuses.contains(&k.as_str()))
    {
        errors.add(
            &format!("write_back.transitions.{k}"),
            format!("not one of our statuses: {}", statuses.join(", ")),
        );
    }
    if let Some(Id::Number(n)) = &f.inbound.integration_user_id {
        errors.add(
            "inbound.integration_user_id",
            format!("{n}: a Jira accountId is text (quote it)"),
        );
    }
    let done = if f.events.closed.is_empty() {
        ["Done", "Resolved", "Closed", "Canceled"]
            .map(String::from)
            .to_vec()
    } else {
        f.events.closed.clone()
    };
    Some(Jira {
        email: w.email.clone().unwrap_or_default(),
        api_token: Secret(w.api_token.clone().unwrap_or_default()),
        teams: w.teams.clone(),
        team_field: w.team_field.clone().unwrap_or_else(|| "components".into()),
        agents,
        priorities: overrides(
            &w.priorities,
            "priorities",
            &our_priorities(),
            priorities,
            any_text,
            errors,
        ),
        transitions: w.transitions.clone(),
        done,
        group_only: w.group_only.unwrap_or(false),
        internal_note: w.internal_note.unwrap_or(true),
        marker_tag: w
            .marker_tag
            .clone()
            .unwrap_or_else(|| "intent-router".into()),
        integration_user: f
            .inbound
            .integration_user_id
            .as_ref()
            .map(ToString::to_string),
        custom: custom_paths(&f.fields, errors),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atlassian_document_reads_as_its_text() {
        let adf = json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Charged "}, {"type": "text", "text": "twice"}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "Refund please"}]}]});
        assert_eq!(description(&adf), "Charged twice\nRefund please");
        assert_eq!(description(&json!("plain")), "plain");
    }

    #[test]
    fn a_component_swapped_is_a_move_one_added_beside_ours_is_not() {
        let j = Jira {
            email: "r@x".into(),
            api_token: Secret("t".into()),
            teams: [("billing", "Billing"), ("oncall", "On call")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .into(),
            team_field: "components".into(),
            agents: BTreeMap::new(),
            priorities: BTreeMap::new(),
            transitions: BTreeMap::new(),
            done: vec![],
            group_only: false,
            internal_note: false,
            marker_tag: "intent-router".into(),
            integration_user: None,
            custom: vec![],
        };
        let item = |from: Option<&str>, to: Option<&str>| {
            json!({"field": "Component", "fieldtype": "jira", "from": from.map(|_| "1"),
                   "fromString": from, "to": to.map(|_| "2"), "toString": to})
        };
        let event = |items: Vec<Value>| json!({"changelog": {"items": items}});
        let swapped = event(vec![
            item(Some("Billing"), None),
            item(None, Some("On call")),
        ]);
        assert_eq!(j.team_now(&swapped).as_deref(), Some("oncall"));
        let added = event(vec![item(None, Some("On call"))]);
        assert_eq!(j.team_now(&added), None);
        let unknown = event(vec![item(Some("Billing"), None), item(None, Some("Legal"))]);
        assert_eq!(j.team_now(&unknown), None);
    }
}
