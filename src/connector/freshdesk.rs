//! The `freshdesk` kind. Formats, as Freshdesk documents them (read 2026-12-06; its
//! automation rules' "Trigger Webhook" action and API v2):
//!
//! - A webhook carries the JSON body the rule's author writes with placeholders
//!   (`{{ticket.id}}`, `{{ticket.subject}}`, `{{ticket.description_text}}`...; the README gives
//!   the body). Freshdesk signs nothing: the action's basic authentication (or a custom header)
//!   is what we check, against the connector's secrets.
//! - Write-back: `PUT /api/v2/tickets/{id}` with `group_id`, `responder_id`, `priority` (1 low
//!   to 4 urgent), `status` (2 open, 3 pending, 4 resolved, 5 closed) and `tags`, which
//!   replaces the ticket's tags: they are read first (`GET /api/v2/tickets/{id}`) and ours
//!   added (a read-modify-write: a tag an agent adds in between is lost); the internal note
//!   with `POST /api/v2/tickets/{id}/notes` (`private: true`); basic auth with the API key as
//!   the user and `X` as the password.
//! - A group change: a "Ticket updates" rule on the group whose body carries
//!   `"event": "group_changed"` and `{{triggered_event}}` (rendered as
//!   `{"group_id": {"from": …, "to": …}}` by Freshdesk's automation code; not tried on an
//!   account) or the group's id in `ticket.group_id`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::config::{ConnectorFile, Errors};
use super::path::{hashed_delivery, tags, text, FieldPath};
use super::{InboundError, Secret};
use crate::decision::Routed;
use crate::store::connectors::{EventKind, HttpCall, NewInboxEvent};
use crate::ticket::Ticket;

/// A Freshdesk account's write-back settings and the helpdesk's ids of our names.
#[derive(Debug, Clone)]
pub struct Freshdesk {
    /// The API key.
    pub api_key: Secret,
    /// Team -> group id.
    pub groups: BTreeMap<String, i64>,
    /// Agent -> agent id.
    pub agents: BTreeMap<String, i64>,
    /// Our priority -> Freshdesk's number.
    pub priorities: BTreeMap<String, i64>,
    /// Our status -> Freshdesk's number (statuses without one are not changed).
    pub statuses: BTreeMap<String, i64>,
    /// Write only the group.
    pub group_only: bool,
    /// Add a private note.
    pub internal_note: bool,
    /// The tag our updates add.
    pub marker_tag: String,
    /// Custom fields: our name -> path in the payload.
    pub custom: Vec<(String, FieldPath)>,
}

impl Freshdesk {
    /// The event a rule's webhook stands for.
    pub(super) fn event(
        &self,
        connector: &str,
        body: &[u8],
        json: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<NewInboxEvent, InboundError> {
        let ticket = &json["ticket"];
        let id = text(ticket, "/id")
            .filter(|id| id.len() <= 256)
            .ok_or_else(|| {
                InboundError::Unmappable(
                    "ticket.id: missing; put \"{{ticket.id}}\" in the rule's body".into(),
                )
            })?;
        let event = text(json, "/event").unwrap_or_else(|| "created".into());
        let tagged = tags(ticket.get("tags"), Some(',')).contains(&self.marker_tag);
        let kind = match event.as_str() {
            // A "created" for a ticket we updated already: the rule also fires on updates.
            "created" if tagged => EventKind::Ignored,
            "created" => EventKind::Created,
            "resolved" | "closed" => EventKind::Closed,
            "group_changed" => EventKind::Reassigned,
            _ => EventKind::Ignored,
        };
        let (kind, context, note) = match kind {
            EventKind::Reassigned => self.reassignment(json),
            _ => (kind, None, None),
        };
        let routed = match kind {
            EventKind::Created => Some(self.ticket(json, &id)?),
            _ => None,
        };
        // The ticket and its update time (a rule fires once per update); else the body.
        let delivery_id = match text(ticket, "/updated_at") {
            Some(at) => format!("{id}:{event}:{at}"),
            None => hashed_delivery(&id, &[body]),
        };
        Ok(NewInboxEvent {
            connector: connector.to_string(),
            delivery_id,
            kind,
            event_type: match note {
                _ if tagged && event == "created" => format!("{event} (our own update)"),
                Some(note) => format!("{event} ({note})"),
                None => event,
            },
            ticket_id: id,
            ticket: routed
                .map(|t| serde_json::to_string(&t).expect("a ticket serialises. This is a bug.")),
            context,
            received_at,
        })
    }

    /// The group a rule's body says the ticket is in now (`changes.group_id.to`, else
    /// `ticket.group_id`), as our team, and who moved it (`agent_id` through the `agents`
    /// table): the event's context; ignored (with a note) for a group we have no team for.
    fn reassignment(&self, json: &Value) -> (EventKind, Option<String>, Option<String>) {
        let group = text(json, "/changes/group_id/to").or_else(|| text(json, "/ticket/group_id"));
        let Some(group) = group else {
            return (EventKind::Ignored, None, Some("no group".into()));
        };
        let Some(team) = super::shared::ours_for(&self.groups, &group) else {
            let note = format!("group {group} is no single team's in write_back.groups");
            return (EventKind::Ignored, None, Some(note));
        };
        let agent = match text(json, "/agent_id") {
            Some(id) => super::shared::ours_for(&self.agents, &id)
                .unwrap_or_else(|| format!("freshdesk agent {id}")),
            None => "freshdesk agent".to_string(),
        };
        (
            EventKind::Reassigned,
            super::shared::reassignment(&team, &agent),
            None,
        )
    }

    /// The ticket a rule's body carries.
    fn ticket(&self, json: &Value, id: &str) -> Result<Ticket, InboundError> {
        let t = &json["ticket"];
        let subject = text(t, "/subject");
        let body = text(t, "/description").unwrap_or_default();
        if body.trim().is_empty() && subject.is_none() {
            return Err(InboundError::Unmappable(
                "the ticket has no text: neither ticket.subject nor ticket.description".into(),
            ));
        }
        let mut fields: BTreeMap<String, Value> = self
            .custom
            .iter()
            .filter_map(|(name, p)| p.get(json).map(|v| (name.clone(), v.clone())))
            .collect();
        let own = tags(t.get("tags"), Some(','));
        if !own.is_empty() {
            fields.entry("tags".into()).or_insert_with(|| json!(own));
        }
        Ok(Ticket {
            id: Some(id.to_string()),
            subject,
            body,
            channel: text(t, "/source"),
            fields,
            ..Ticket::default()
        })
    }

    /// The requests that write a decision (or why it cannot be written).
    pub fn write_back(&self, id: &str, d: &Routed) -> Result<Vec<HttpCall>, String> {
        let mut t = Map::new();
        if let Some(team) = &d.team {
            let g =
                super::shared::value_for(&self.groups, "team", team, "Freshdesk group", "groups")?;
            t.insert("group_id".into(), json!(g));
        }
        if let (Some(agent), false) = (&d.assignee, self.group_only) {
            let a = super::shared::value_for(
                &self.agents,
                "agent",
                agent,
                "Freshdesk agent",
                "agents",
            )?;
            t.insert("responder_id".into(), json!(a));
        }
        let priority = d.priority.name();
        let p = super::shared::value_for(
            &self.priorities,
            "priority",
            priority,
            "Freshdesk priority",
            "priorities",
        )?;
        t.insert("priority".into(), json!(p));
        if let Some(s) = self.statuses.get(d.status.name()) {
            t.insert("status".into(), json!(s));
        }
        let mut ours = d.tags.clone();
        ours.push(self.marker_tag.clone());
        t.insert("tags".into(), json!(ours));
        let path = format!("/api/v2/tickets/{}", super::zendesk::urlencode(id));
        let mut calls = vec![HttpCall {
            method: "PUT".into(),
            path: path.clone(),
            body: Some(Value::Object(t)),
            merge_tags_from: Some(path.clone()),
        }];
        if self.internal_note {
            calls.push(HttpCall {
                method: "POST".into(),
                path: format!("{path}/notes"),
                body: Some(json!({"body": super::zendesk::note(d), "private": true})),
                merge_tags_from: None,
            });
        }
        Ok(calls)
    }

    /// `Authorization` for the API key.
    pub fn authorization(&self) -> String {
        super::shared::basic_auth(&self.api_key.0, "X")
    }
}

/// The freshdesk kind of a `[[connectors]]` entry.
pub(super) fn compile(f: &ConnectorFile, errors: &mut Errors<'_>) -> Option<Freshdesk> {
    use super::shared::{
        custom_paths, our_priorities, our_statuses, overrides, positive_ids, refuse_mapping, table,
        Events,
    };
    refuse_mapping(f, "freshdesk", Events::None, errors);
    let w = f.write_back.clone().unwrap_or_default();
    let number = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| format!("{v:?}: Freshdesk's values are numbers"))
    };
    let priorities = table(&[("low", 1), ("normal", 2), ("high", 3), ("urgent", 4)]);
    let statuses = table(&[("new", 2), ("open", 2), ("pending", 3), ("solved", 4)]);
    Some(Freshdesk {
        api_key: Secret(w.api_token.clone().unwrap_or_default()),
        groups: positive_ids(&w.groups, "groups", "Freshdesk", errors),
        agents: positive_ids(&w.agents, "agents", "Freshdesk", errors),
        priorities: overrides(
            &w.priorities,
            "priorities",
            &our_priorities(),
            priorities,
            number,
            errors,
        ),
        statuses: overrides(
            &w.statuses,
            "statuses",
            &our_statuses(),
            statuses,
            number,
            errors,
        ),
        group_only: w.group_only.unwrap_or(false),
        internal_note: w.internal_note.unwrap_or(true),
        marker_tag: w
            .marker_tag
            .clone()
            .unwrap_or_else(|| "intent-router".into()),
        custom: custom_paths(&f.fields, errors),
    })
}
