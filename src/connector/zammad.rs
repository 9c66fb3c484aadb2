//! The `zammad` kind. Formats, as documented by Zammad (read 2026-12-06;
//! admin-docs.zammad.org, manage/webhook/payload, and the REST API docs):
//!
//! - A trigger's webhook: `POST` with `X-Zammad-Trigger` (the trigger's name),
//!   `X-Zammad-Delivery` (a unique id per delivery; not signed, so deliveries are known by the
//!   hash of the trigger's name and the body) and, when the webhook has a signature
//!   token, `X-Hub-Signature`: the HMAC-SHA1 of the body under the token, hex (read with or
//!   without a `sha1=` prefix; the prefix is GitHub's convention, which Zammad's docs do not
//!   spell out).
//! - Default payload: `{"ticket": {id, title, state, priority, group, article_count,
//!   updated_by_id, customer: {vip...}, tags...}, "article": {body, type, internal...}}`.
//! - Write-back: `PUT /api/v1/tickets/{id}` with `group` (a name) or `group_id`, `owner_id`,
//!   `priority`, `state` and an internal `article` of type `note`; tags one by one with `POST
//!   /api/v1/tags/add` (`object: "Ticket"`, `o_id`, `item`), which keeps the ticket's own;
//!   `Authorization: Token token=…`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::{json, Map, Value};

use super::config::{ConnectorFile, Errors, Id};
use super::path::{hashed_delivery, tags, text, FieldPath};
use super::{InboundError, Secret};
use crate::decision::Routed;
use crate::store::connectors::{EventKind, HttpCall, NewInboxEvent};
use crate::ticket::{Customer, Ticket};

/// The signature header.
pub const SIGNATURE: &str = "x-hub-signature";
/// The trigger's name.
pub const TRIGGER: &str = "x-zammad-trigger";

/// Zammad's states a ticket is done in.
const DONE: [&str; 3] = ["closed", "merged", "removed"];

/// A Zammad system's write-back settings and the helpdesk's ids of our names.
#[derive(Debug, Clone)]
pub struct Zammad {
    /// The API token (`Authorization: Token token=…`).
    pub api_token: Secret,
    /// Team -> group name (or id).
    pub groups: BTreeMap<String, Id>,
    /// Agent -> user id.
    pub agents: BTreeMap<String, i64>,
    /// Our priority -> Zammad's priority name.
    pub priorities: BTreeMap<String, String>,
    /// Our status -> Zammad's state name (statuses without one are not changed).
    pub statuses: BTreeMap<String, String>,
    /// Triggers whose webhooks route a ticket (empty: a new ticket by its state).
    pub created: Vec<String>,
    /// Triggers whose webhooks close the assignment (empty: by the ticket's state).
    pub closed: Vec<String>,
    /// Triggers whose webhooks say an agent moved the ticket to another group.
    pub reassigned: Vec<String>,
    /// Write only the group.
    pub group_only: bool,
    /// Add an internal note.
    pub internal_note: bool,
    /// The tag our updates add.
    pub marker_tag: String,
    /// The integration user's id: its updates are ignored.
    pub integration_user: Option<String>,
    /// Custom fields: our name -> path in the payload.
    pub custom: Vec<(String, FieldPath)>,
}

impl Zammad {
    /// The event a trigger's webhook stands for.
    pub(super) fn event(
        &self,
        connector: &str,
        headers: &HeaderMap,
        body: &[u8],
        json: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<NewInboxEvent, InboundError> {
        let ticket = &json["ticket"];
        let id = text(ticket, "/id")
            .filter(|id| id.len() <= 256)
            .ok_or_else(|| {
                InboundError::Unmappable(
                    "ticket.id: missing; a Zammad trigger's payload has it".into(),
                )
            })?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let trigger = header(TRIGGER).unwrap_or_default();
        let ours = self.integration_user.is_some()
            && text(ticket, "/updated_by_id") == self.integration_user;
        let kind = if ours {
            EventKind::Ignored
        } else {
            self.kind(&trigger, ticket)
        };
        let routed = match kind {
            EventKind::Created => Some(self.ticket(json, &id)?),
            _ => None,
        };
        let (kind, context, note) = match kind {
            EventKind::Reassigned => self.reassignment(ticket),
            _ => (kind, None, None),
        };
        // What the signature covers (the body) and the trigger's name (which decides what the
        // event does) name the delivery: `X-Zammad-Delivery` is not signed.
        let delivery_id = hashed_delivery(&id, &[trigger.as_bytes(), b"\n", body]);
        let mut event_type = if trigger.is_empty() {
            "trigger".to_string()
        } else {
            trigger
        };
        if let Some(note) = note {
            event_type = format!("{event_type} ({note})");
        }
        Ok(NewInboxEvent {
            connector: connector.to_string(),
            delivery_id,
            kind,
            event_type: if ours {
                format!("{event_type} (our own update)")
            } else {
                event_type
            },
            ticket_id: id,
            ticket: routed
                .map(|t| serde_json::to_string(&t).expect("a ticket serialises. This is a bug.")),
            context,
            received_at,
        })
    }

    /// By the trigger's name when triggers are listed, else by the ticket: done states close,
    /// a ticket with one article (or none counted) is new.
    fn kind(&self, trigger: &str, ticket: &Value) -> EventKind {
        let listed = |names: &[String]| names.iter().any(|n| n == trigger);
        if listed(&self.reassigned) {
            return EventKind::Reassigned;
        }
        let by_triggers = !(self.created.is_empty() && self.closed.is_empty());
        // The signed body must agree with the (unsigned) trigger's name: a new ticket is in
        // state new and not yet tagged by us, a closed one in a done state.
        let state = text(ticket, "/state").unwrap_or_default().to_lowercase();
        let done = DONE.contains(&state.as_str());
        let tags = tags(ticket.get("tags"), Some(','));
        let new = state == "new" && !tags.contains(&self.marker_tag);
        let (creates, closes) = if by_triggers {
            (listed(&self.created), listed(&self.closed))
        } else {
            (
                ticket["article_count"].as_i64().is_none_or(|n| n <= 1),
                true,
            )
        };
        if creates && new {
            EventKind::Created
        } else if closes && done {
            EventKind::Closed
        } else {
            EventKind::Ignored
        }
    }

    /// The group a reassignment trigger's ticket is in now, as our team, and who moved it (the
    /// last updater): the event's context; ignored (with a note) for a group we have no team
    /// for.
    fn reassignment(&self, ticket: &Value) -> (EventKind, Option<String>, Option<String>) {
        let group = text(ticket, "/group/name")
            .or_else(|| text(ticket, "/group"))
            .or_else(|| text(ticket, "/group_id"));
        let Some(group) = group else {
            return (EventKind::Ignored, None, Some("no group".into()));
        };
        let team = super::shared::ours_for(&self.groups, &group).or_else(|| {
            let id = text(ticket, "/group_id")?;
            super::shared::ours_for(&self.groups, &id)
        });
        let Some(team) = team else {
            let note = format!("group {group} is no single team's in write_back.groups");
            return (EventKind::Ignored, None, Some(note));
        };
        let by = text(ticket, "/updated_by_id");
        let agent = by
            .as_deref()
            .and_then(|id| super::shared::ours_for(&self.agents, id))
            .unwrap_or_else(|| format!("zammad user {}", by.as_deref().unwrap_or("(unknown)")));
        (
            EventKind::Reassigned,
            super::shared::reassignment(&team, &agent),
            None,
        )
    }

    /// The ticket a payload carries: the title, the first article's body and type, the
    /// customer's VIP flag as the tier.
    fn ticket(&self, json: &Value, id: &str) -> Result<Ticket, InboundError> {
        let subject = text(&json["ticket"], "/title");
        let body = text(&json["article"], "/body").unwrap_or_default();
        if body.trim().is_empty() && subject.is_none() {
            return Err(InboundError::Unmappable(
                "the ticket has no text: neither a title nor an article body".into(),
            ));
        }
        let vip = json
            .pointer("/ticket/customer/vip")
            .and_then(Value::as_bool)
            == Some(true);
        let mut fields: BTreeMap<String, Value> = self
            .custom
            .iter()
            .filter_map(|(name, p)| p.get(json).map(|v| (name.clone(), v.clone())))
            .collect();
        if let Some(tags) = json.pointer("/ticket/tags").filter(|t| !t.is_null()) {
            fields.entry("tags".into()).or_insert_with(|| tags.clone());
        }
        Ok(Ticket {
            id: Some(id.to_string()),
            subject,
            body,
            channel: text(&json["article"], "/type"),
            customer: Customer {
                tier: vip.then(|| "vip".to_string()),
            },
            fields,
            ..Ticket::default()
        })
    }

    /// The requests that write a decision (or why it cannot be written).
    pub fn write_back(&self, id: &str, d: &Routed) -> Result<Vec<HttpCall>, String> {
        let mut t = Map::new();
        if let Some(team) = &d.team {
            match super::shared::value_for(&self.groups, "team", team, "Zammad group", "groups")? {
                Id::Text(name) => t.insert("group".into(), json!(name)),
                Id::Number(n) => t.insert("group_id".into(), json!(n)),
            };
        }
        if let (Some(agent), false) = (&d.assignee, self.group_only) {
            let owner =
                super::shared::value_for(&self.agents, "agent", agent, "Zammad user", "agents")?;
            t.insert("owner_id".into(), json!(owner));
        }
        let priority = d.priority.name();
        let p = super::shared::value_for(
            &self.priorities,
            "priority",
            priority,
            "Zammad priority",
            "priorities",
        )?;
        t.insert("priority".into(), json!(p));
        if let Some(state) = self.statuses.get(d.status.name()) {
            t.insert("state".into(), json!(state));
        }
        if self.internal_note {
            let note = json!({"body": super::zendesk::note(d), "type": "note", "internal": true, "content_type": "text/plain"});
            t.insert("article".into(), note);
        }
        let encoded = super::zendesk::urlencode(id);
        let mut calls = vec![HttpCall {
            merge_tags_from: None,
            method: "PUT".into(),
            path: format!("/api/v1/tickets/{encoded}"),
            body: Some(Value::Object(t)),
        }];
        let o_id: Value = id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n));
        for tag in d.tags.iter().chain(std::iter::once(&self.marker_tag)) {
            calls.push(HttpCall {
                merge_tags_from: None,
                method: "POST".into(),
                path: "/api/v1/tags/add".into(),
                body: Some(json!({"object": "Ticket", "o_id": o_id, "item": tag})),
            });
        }
        Ok(calls)
    }

    /// `Authorization` for the API token.
    pub fn authorization(&self) -> String {
        format!("Token token={}", self.api_token.0)
    }
}

/// The zammad kind of a `[[connectors]]` entry: its tables checked, defaults filled in.
pub(super) fn compile(f: &ConnectorFile, errors: &mut Errors<'_>) -> Option<Zammad> {
    use super::shared::{
        any_text, custom_paths, our_priorities, our_statuses, overrides, positive_ids,
        refuse_mapping, table, Events,
    };
    refuse_mapping(f, "zammad", Events::All, errors);
    let w = f.write_back.clone().unwrap_or_default();
    let priorities = table(&[
        ("low", "1 low".to_string()),
        ("normal", "2 normal".into()),
        ("high", "3 high".into()),
        ("urgent", "3 high".into()),
    ]);
    let statuses = table(&[
        ("new", "new".to_string()),
        ("open", "open".into()),
        ("solved", "closed".into()),
    ]);
    if let Some(Id::Text(t)) = &f.inbound.integration_user_id {
        errors.add(
            "inbound.integration_user_id",
            format!("{t:?}: a Zammad user id is a number"),
        );
    }
    Some(Zammad {
        api_token: Secret(w.api_token.clone().unwrap_or_default()),
        groups: w.groups.clone(),
        agents: positive_ids(&w.agents, "agents", "Zammad", errors),
        priorities: overrides(
            &w.priorities,
            "priorities",
            &our_priorities(),
            priorities,
            any_text,
            errors,
        ),
        statuses: overrides(
            &w.statuses,
            "statuses",
            &our_statuses(),
            statuses,
            any_text,
            errors,
        ),
        created: f.events.created.clone(),
        closed: f.events.closed.clone(),
        reassigned: f.events.reassigned.clone(),
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
