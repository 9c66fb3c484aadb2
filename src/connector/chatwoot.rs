//! The `chatwoot` kind. Formats, as Chatwoot sends and documents them (read 2026-12-06; its
//! webhooks and application API docs, and public receivers):
//!
//! - Authenticity: `X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!   with `t` in `X-Chatwoot-Timestamp` (unix seconds, within the replay window);
//!   `X-Chatwoot-Delivery` names the delivery but is not signed: deliveries are known by the
//!   body's hash.
//! - Events: `conversation_created` (`id`, `account.id`, `messages[0].content`,
//!   `meta.sender`, `status`), `conversation_status_changed` (`status: "resolved"` closes),
//!   `message_created` (recorded; the conversation is routed when created),
//!   `conversation_updated` with `changed_attributes: [{"team_id": {previous_value,
//!   current_value}}, …]` and the team now in `meta.team.id` (an agent moved it; Chatwoot sends
//!   no actor: app/listeners/webhook_listener.rb, base_listener.rb#extract_changed_attributes
//!   and the conversation's event data in chatwoot/chatwoot).
//! - Write-back under `/api/v1/accounts/{account}/conversations/{id}`: `assignments` with
//!   `team_id`, then with `assignee_id`; `toggle_priority`; `labels` (Chatwoot's call sets the
//!   conversation's labels: we send the decision's with ours, so labels added by hand between
//!   the event and the write-back are replaced: the race is documented); a private `messages`
//!   note; header `api_access_token`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::config::{ConnectorFile, Errors};
use super::path::{hashed_delivery, scalar, text, FieldPath};
use super::{InboundError, Secret};
use crate::decision::Routed;
use crate::store::connectors::{EventKind, HttpCall, NewInboxEvent};
use crate::ticket::Ticket;

/// Whether a `conversation_updated` event's changes include the team.
fn team_changed(json: &Value) -> bool {
    json["changed_attributes"]
        .as_array()
        .is_some_and(|changes| changes.iter().any(|c| c.get("team_id").is_some()))
}

/// The signature header.
pub const SIGNATURE: &str = "x-chatwoot-signature";
/// The signed timestamp's header.
pub const TIMESTAMP: &str = "x-chatwoot-timestamp";

/// A Chatwoot account's write-back settings and the helpdesk's ids of our names.
#[derive(Debug, Clone)]
pub struct Chatwoot {
    /// The agent bot's or user's access token.
    pub api_token: Secret,
    /// Team -> team id.
    pub teams: BTreeMap<String, i64>,
    /// Agent -> user id.
    pub agents: BTreeMap<String, i64>,
    /// Our priority -> Chatwoot's.
    pub priorities: BTreeMap<String, String>,
    /// Write only the team.
    pub group_only: bool,
    /// Add a private note.
    pub internal_note: bool,
    /// The label our updates add.
    pub marker_tag: String,
    /// The integration user's id: its events are ignored.
    pub integration_user: Option<String>,
    /// Custom fields: our name -> path in the payload.
    pub custom: Vec<(String, FieldPath)>,
}

impl Chatwoot {
    /// The event a webhook stands for.
    pub(super) fn event(
        &self,
        connector: &str,
        body: &[u8],
        json: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<NewInboxEvent, InboundError> {
        let event = json
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        // A conversation event carries the conversation; a message event, its conversation.
        let conversation = if event.starts_with("conversation_") {
            json
        } else {
            &json["conversation"]
        };
        let id = text(conversation, "/id")
            .filter(|id| id.len() <= 256)
            .ok_or_else(|| {
                InboundError::Unmappable(format!("{event}: the conversation's id is missing"))
            })?;
        let account = text(json, "/account/id");
        let actor = text(json, "/sender/id").or_else(|| text(json, "/performed_by/id"));
        let ours = self.integration_user.is_some() && actor == self.integration_user;
        let kind = match event.as_str() {
            _ if ours => EventKind::Ignored,
            "conversation_created" => EventKind::Created,
            "conversation_status_changed"
                if text(json, "/status").as_deref() == Some("resolved") =>
            {
                EventKind::Closed
            }
            "conversation_updated" if team_changed(json) => EventKind::Reassigned,
            _ => EventKind::Ignored,
        };
        let (kind, reassigned, note) = match kind {
            EventKind::Reassigned => self.reassignment(json),
            _ => (kind, None, None),
        };
        let ticket = match kind {
            EventKind::Created => Some(self.ticket(json, &id)?),
            _ => None,
        };
        // What the signature covers names the delivery: `X-Chatwoot-Delivery` is not signed,
        // so a replay under a new one must still be a duplicate.
        let delivery_id = hashed_delivery(&id, &[body]);
        Ok(NewInboxEvent {
            connector: connector.to_string(),
            delivery_id,
            kind,
            event_type: match (ours, note) {
                (true, _) => format!("{event} (our own update)"),
                (false, Some(note)) => format!("{event} ({note})"),
                (false, None) => event,
            },
            ticket_id: id,
            ticket: ticket
                .map(|t| serde_json::to_string(&t).expect("a ticket serialises. This is a bug.")),
            context: reassigned.or_else(|| account.map(|a| json!({ "account": a }).to_string())),
            received_at,
        })
    }

    /// The team a conversation was moved to, as ours: the event's context (Chatwoot names no
    /// actor); ignored (with a note) for a team we have no name for.
    fn reassignment(&self, json: &Value) -> (EventKind, Option<String>, Option<String>) {
        let Some(team_id) = text(json, "/meta/team/id") else {
            return (EventKind::Ignored, None, Some("no team".into()));
        };
        match super::shared::ours_for(&self.teams, &team_id) {
            Some(team) => (
                EventKind::Reassigned,
                super::shared::reassignment(&team, "chatwoot agent"),
                None,
            ),
            None => {
                let note =
                    format!("Chatwoot team {team_id} is no single team's in write_back.groups");
                (EventKind::Ignored, None, Some(note))
            }
        }
    }

    /// The conversation's first message, its channel and contact.
    fn ticket(&self, json: &Value, id: &str) -> Result<Ticket, InboundError> {
        let body = text(json, "/messages/0/content").unwrap_or_default();
        let subject = text(json, "/additional_attributes/mail_subject");
        if body.trim().is_empty() && subject.is_none() {
            return Err(InboundError::Unmappable(
                "conversation_created: no text (messages[0].content is empty); Chatwoot sends the first message with it".into(),
            ));
        }
        let fields = self
            .custom
            .iter()
            .filter_map(|(name, p)| p.get(json).map(|v| (name.clone(), v.clone())))
            .collect();
        Ok(Ticket {
            id: Some(id.to_string()),
            subject,
            body,
            channel: text(json, "/channel").or_else(|| text(json, "/inbox/channel_type")),
            fields,
            ..Ticket::default()
        })
    }

    /// The requests that write a decision (or why it cannot be written).
    pub fn write_back(
        &self,
        id: &str,
        d: &Routed,
        context: Option<&Value>,
    ) -> Result<Vec<HttpCall>, String> {
        let account = context
            .and_then(|c| c.get("account"))
            .and_then(scalar)
            .ok_or(
                "the event named no account (account.id): the conversation cannot be addressed",
            )?;
        let base = format!(
            "/api/v1/accounts/{}/conversations/{}",
            super::zendesk::urlencode(&account),
            super::zendesk::urlencode(id)
        );
        let post = |path: &str, body: Value| HttpCall {
            merge_tags_from: None,
            method: "POST".into(),
            path: format!("{base}/{path}"),
            body: Some(body),
        };
        let mut calls = Vec::new();
        if let Some(team) = &d.team {
            let t = super::shared::value_for(&self.teams, "team", team, "Chatwoot team", "groups")?;
            calls.push(post("assignments", json!({ "team_id": t })));
        }
        if let (Some(agent), false) = (&d.assignee, self.group_only) {
            let a =
                super::shared::value_for(&self.agents, "agent", agent, "Chatwoot user", "agents")?;
            calls.push(post("assignments", json!({ "assignee_id": a })));
        }
        let priority = d.priority.name();
        let p = super::shared::value_for(
            &self.priorities,
            "priority",
            priority,
            "Chatwoot priority",
            "priorities",
        )?;
        calls.push(post("toggle_priority", json!({ "priority": p })));
        let mut labels = d.tags.clone();
        labels.push(self.marker_tag.clone());
        calls.push(post("labels", json!({ "labels": labels })));
        if self.internal_note {
            calls.push(post("messages", json!({"content": super::zendesk::note(d), "message_type": "outgoing", "private": true})));
        }
        Ok(calls)
    }
}

/// The chatwoot kind of a `[[connectors]]` entry.
pub(super) fn compile(f: &ConnectorFile, errors: &mut Errors<'_>) -> Option<Chatwoot> {
    use super::shared::{
        any_text, custom_paths, our_priorities, overrides, positive_ids, refuse_mapping, table,
        Events,
    };
    refuse_mapping(f, "chatwoot", Events::None, errors);
    let w = f.write_back.clone().unwrap_or_default();
    let defaults = table(&[
        ("low", "low".to_string()),
        ("normal", "medium".into()),
        ("high", "high".into()),
        ("urgent", "urgent".into()),
    ]);
    Some(Chatwoot {
        api_token: Secret(w.api_token.clone().unwrap_or_default()),
        teams: positive_ids(&w.groups, "groups", "Chatwoot", errors),
        agents: positive_ids(&w.agents, "agents", "Chatwoot", errors),
        priorities: overrides(
            &w.priorities,
            "priorities",
            &our_priorities(),
            defaults,
            any_text,
            errors,
        ),
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
