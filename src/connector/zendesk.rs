//! The `zendesk` kind. Formats, as documented by Zendesk (read 2026-12-06):
//!
//! - Authenticity: `X-Zendesk-Webhook-Signature` = base64(HMAC-SHA256(signing secret,
//!   TIMESTAMP + BODY)), the timestamp in `X-Zendesk-Webhook-Signature-Timestamp` (RFC 3339,
//!   e.g. `2024-04-17T17:18:10Z`); developer.zendesk.com/documentation/webhooks/verifying.
//!   One older copy of that page shows an example vector that signs BODY + TIMESTAMP; the
//!   formula on the current page (TIMESTAMP + BODY) is what we check.
//! - Ticket event webhooks: `{"type": "zen:event-type:ticket.created", "id", "time", "subject":
//!   "zen:ticket:ID", "detail": {id, subject, description, status, tags, via.channel,
//!   updated_at, actor_id, ...}, "event": {...}}`; `ticket.status_changed` carries the new status
//!   in `event.current`; developer.zendesk.com/api-reference/webhooks/event-types/ticket-events.
//! - Trigger webhooks carry the JSON body an admin writes with placeholders (`{{ticket.id}}`,
//!   `{{ticket.title}}`, `{{ticket.description}}`...): the README gives the body to paste.
//! - `ticket.group_assignment_changed` carries the new group in `event.current` (its id, or an
//!   object with `id`: both are read).
//! - Write-back: `PUT /api/v2/tickets/{id}.json` with `{"ticket": {group_id, assignee_id,
//!   priority, status, additional_tags, comment: {body, public: false}, safe_update: true,
//!   updated_stamp}}`; with `safe_update`, 409 means the ticket changed after `updated_stamp`;
//!   basic auth `{email}/token:{api_token}`; 429 with `Retry-After` (Tickets API reference).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::config::Id;
use super::path::{hashed_delivery, scalar, tags, FieldPath};
use super::{InboundError, Secret};
use crate::decision::Routed;
use crate::store::connectors::{EventKind, HttpCall, NewInboxEvent};
use crate::ticket::Ticket;

/// The signature header.
pub const SIGNATURE: &str = "x-zendesk-webhook-signature";
/// The signed timestamp's header.
pub const TIMESTAMP: &str = "x-zendesk-webhook-signature-timestamp";

/// Zendesk's statuses a ticket is done in.
const DONE: [&str; 2] = ["solved", "closed"];

/// A Zendesk account's write-back settings and the helpdesk's ids of our names.
#[derive(Debug, Clone)]
pub struct Zendesk {
    /// `https://ACCOUNT.zendesk.com`.
    pub base_url: String,
    /// The integration user's e-mail (basic auth `{email}/token`).
    pub email: String,
    /// Its API token.
    pub api_token: Secret,
    /// Team -> group id.
    pub groups: BTreeMap<String, i64>,
    /// Agent -> user id.
    pub agents: BTreeMap<String, i64>,
    /// Our priority -> Zendesk's.
    pub priorities: BTreeMap<String, String>,
    /// Our status -> Zendesk's.
    pub statuses: BTreeMap<String, String>,
    /// Write only the group; the agent is left to Zendesk's own routing.
    pub group_only: bool,
    /// Add an internal note with the intent chain and the rule trace.
    pub internal_note: bool,
    /// The tag our updates carry (events of tickets we updated are not routed again).
    pub marker_tag: String,
    /// The integration user's id: events it caused are ignored (no loops).
    pub integration_user: Option<String>,
    /// Custom fields: our name -> path in the payload.
    pub custom: Vec<(String, FieldPath)>,
}

/// The defaults of the priority and status tables (the same words in Zendesk).
pub fn default_tables() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let same = |words: &[&str]| {
        words
            .iter()
            .map(|w| (w.to_string(), w.to_string()))
            .collect()
    };
    (
        same(&["low", "normal", "high", "urgent"]),
        same(&["new", "open", "pending", "solved"]),
    )
}

/// The ids of both shapes as text.
fn id_at(v: &Value) -> Option<String> {
    scalar(v).filter(|s| !s.trim().is_empty() && s.chars().count() <= 256)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

impl Zendesk {
    /// The event a payload stands for: an event webhook (by its `type`) or a trigger's body.
    pub(super) fn event(
        &self,
        connector: &str,
        body: &[u8],
        json: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<NewInboxEvent, InboundError> {
        let (root, event_type, kind, delivery_id) = match json.get("type").and_then(Value::as_str) {
            Some(t) if t.starts_with("zen:event-type:") => {
                let delivery = json.get("id").and_then(id_at).ok_or_else(|| {
                    InboundError::Unmappable("id: missing; a Zendesk event has one".into())
                })?;
                (
                    &json["detail"],
                    t.to_string(),
                    event_kind(t, json),
                    delivery,
                )
            }
            _ => {
                let event = str_at(json, "/event").unwrap_or("created").to_string();
                let kind = match event.as_str() {
                    "created" => EventKind::Created,
                    e if DONE.contains(&e) => EventKind::Closed,
                    _ => EventKind::Ignored,
                };
                (&json["ticket"], event, kind, String::new())
            }
        };
        let ticket_id = root.get("id").and_then(id_at).ok_or_else(|| {
            InboundError::Unmappable(
                "the ticket's id is missing: detail.id (event webhooks) or ticket.id (trigger bodies)".into(),
            )
        })?;
        let delivery_id = if delivery_id.is_empty() {
            // Triggers send no delivery id: the same body again is the same delivery.
            hashed_delivery(&ticket_id, &[body])
        } else {
            delivery_id
        };
        let ours = self.is_ours(root, kind);
        let kind = if ours { EventKind::Ignored } else { kind };
        let ticket = match kind {
            EventKind::Created => Some(self.ticket(root, json, &ticket_id)?),
            _ => None,
        };
        let (kind, event_type, context) = match kind {
            EventKind::Reassigned => self.reassignment(root, json, event_type),
            _ => {
                let stamp = root.get("updated_at").and_then(Value::as_str);
                (
                    kind,
                    event_type,
                    stamp.map(|s| json!({ "updated_stamp": s }).to_string()),
                )
            }
        };
        Ok(NewInboxEvent {
            connector: connector.to_string(),
            delivery_id,
            kind,
            event_type: if ours {
                format!("{event_type} (our own update)")
            } else {
                event_type
            },
            ticket_id,
            ticket: ticket
                .map(|t| serde_json::to_string(&t).expect("a ticket serialises. This is a bug.")),
            context,
            received_at,
        })
    }

    /// Whether the event is an echo of our own update: caused by our integration user, or a
    /// "created" for a ticket that already carries our tag (a trigger that also fires on
    /// updates); later events of a ticket we updated carry the tag too and are not echoes.
    fn is_ours(&self, root: &Value, kind: EventKind) -> bool {
        let actor = root.get("actor_id").and_then(scalar);
        let by_us = self.integration_user.is_some() && actor == self.integration_user;
        let tagged =
            kind == EventKind::Created && tags(root.get("tags"), None).contains(&self.marker_tag);
        by_us || tagged
    }

    /// A move to another group: the team it stands for and who moved it, or ignored when the
    /// group is not one of ours.
    fn reassignment(
        &self,
        root: &Value,
        json: &Value,
        event_type: String,
    ) -> (EventKind, String, Option<String>) {
        let current = &json["event"]["current"];
        let group = current.get("id").unwrap_or(current);
        let Some(group) = scalar(group) else {
            return (EventKind::Ignored, format!("{event_type} (no group)"), None);
        };
        let Some(team) = super::shared::ours_for(&self.groups, &group) else {
            return (
                EventKind::Ignored,
                format!("{event_type} (group {group} is no single team's in write_back.groups)"),
                None,
            );
        };
        let actor = root.get("actor_id").and_then(scalar).unwrap_or_default();
        let agent = super::shared::ours_for(&self.agents, &actor)
            .unwrap_or_else(|| format!("zendesk user {actor}"));
        (
            EventKind::Reassigned,
            event_type,
            super::shared::reassignment(&team, &agent),
        )
    }

    /// The ticket of a created event (`detail` of an event webhook, `ticket` of a trigger body).
    fn ticket(&self, root: &Value, json: &Value, id: &str) -> Result<Ticket, InboundError> {
        let subject = str_at(root, "/subject")
            .or(str_at(root, "/title"))
            .map(str::to_string);
        let body = str_at(root, "/description").unwrap_or_default().to_string();
        if body.trim().is_empty() && subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
            return Err(InboundError::Unmappable(
                "the ticket has no text: neither a subject (title) nor a description".into(),
            ));
        }
        let channel = str_at(root, "/via/channel")
            .or(str_at(root, "/channel"))
            .map(str::to_string);
        let mut fields: BTreeMap<String, Value> = self
            .custom
            .iter()
            .filter_map(|(name, p)| p.get(json).map(|v| (name.clone(), v.clone())))
            .collect();
        let tags = tags(root.get("tags"), None);
        if !tags.is_empty() {
            fields.entry("tags".into()).or_insert_with(|| json!(tags));
        }
        Ok(Ticket {
            id: Some(id.to_string()),
            subject,
            body,
            channel,
            fields,
            ..Ticket::default()
        })
    }

    /// The update of a decision (or why it cannot be written: a team, agent, priority or
    /// status without a Zendesk id).
    pub fn write_back(
        &self,
        ticket_id: &str,
        decision: &Routed,
        context: Option<&Value>,
    ) -> Result<HttpCall, String> {
        let mut t = Map::new();
        if let Some(team) = &decision.team {
            let id =
                super::shared::value_for(&self.groups, "team", team, "Zendesk group", "groups")?;
            t.insert("group_id".into(), json!(id));
        }
        if let (Some(agent), false) = (&decision.assignee, self.group_only) {
            let id =
                super::shared::value_for(&self.agents, "agent", agent, "Zendesk user", "agents")?;
            t.insert("assignee_id".into(), json!(id));
        }
        let priority = decision.priority.name();
        let p = super::shared::value_for(
            &self.priorities,
            "priority",
            priority,
            "Zendesk priority",
            "priorities",
        )?;
        t.insert("priority".into(), json!(p));
        let status = decision.status.name();
        let s = super::shared::value_for(
            &self.statuses,
            "status",
            status,
            "Zendesk status",
            "statuses",
        )?;
        t.insert("status".into(), json!(s));
        let mut tags: Vec<&str> = decision.tags.iter().map(String::as_str).collect();
        tags.push(&self.marker_tag);
        t.insert("additional_tags".into(), json!(tags));
        if self.internal_note {
            t.insert(
                "comment".into(),
                json!({"body": note(decision), "public": false}),
            );
        }
        if let Some(stamp) = context.and_then(|c| c.get("updated_stamp")) {
            t.insert("safe_update".into(), json!(true));
            t.insert("updated_stamp".into(), stamp.clone());
        }
        Ok(HttpCall {
            merge_tags_from: None,
            method: "PUT".into(),
            path: format!("/api/v2/tickets/{}.json", urlencode(ticket_id)),
            body: Some(json!({ "ticket": t })),
        })
    }

    /// `Authorization` for the API token.
    pub fn authorization(&self) -> String {
        super::shared::basic_auth(&format!("{}/token", self.email), &self.api_token.0)
    }
}

/// What an event webhook's type asks.
fn event_kind(t: &str, json: &Value) -> EventKind {
    match t.strip_prefix("zen:event-type:") {
        Some("ticket.created") => EventKind::Created,
        Some("ticket.group_assignment_changed") => EventKind::Reassigned,
        Some("ticket.status_changed") => {
            let current = &json["event"]["current"];
            let status = current
                .as_str()
                .or(current.get("status").and_then(Value::as_str));
            match status.map(str::to_lowercase) {
                Some(s) if DONE.contains(&s.as_str()) => EventKind::Closed,
                _ => EventKind::Ignored,
            }
        }
        _ => EventKind::Ignored,
    }
}

/// The internal note: the intent chain with probabilities, further requests, the decision and
/// the rules.
pub(super) fn note(d: &Routed) -> String {
    let scored = |s: &crate::intent::Scored| format!("{} ({:.0}%)", s.intent, s.p * 100.0);
    let chain: Vec<String> = d.intent.resolution.chain.iter().map(scored).collect();
    let also: Vec<String> = d.intent.resolution.also().iter().map(scored).collect();
    format!(
        "intent-router: {}{}\nteam {}, priority {}, status {}; rules {}\nmodel {}, rules v{}",
        if chain.is_empty() {
            // `unknown` or `out_of_scope`.
            d.intent.resolution.intent.clone()
        } else {
            chain.join(" > ")
        },
        if also.is_empty() {
            String::new()
        } else {
            format!("; also {}", also.join(", "))
        },
        d.team.as_deref().unwrap_or("none"),
        d.priority.name(),
        d.status.name(),
        if d.rule_ids.is_empty() {
            "none".to_string()
        } else {
            d.rule_ids.join(", ")
        },
        d.model_version,
        d.rules_version
    )
}

/// A path segment with everything but unreserved characters percent-encoded.
pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The zendesk kind of a `[[connectors]]` entry: its tables checked, defaults filled in.
pub(super) fn compile(
    f: &super::ConnectorFile,
    errors: &mut super::config::Errors<'_>,
) -> Option<Zendesk> {
    use super::shared::{
        one_of, our_priorities, our_statuses, overrides, positive_ids, refuse_mapping, Events,
    };
    refuse_mapping(f, "zendesk", Events::None, errors);
    let custom = super::shared::custom_paths(&f.fields, errors);
    let w = f.write_back.clone().unwrap_or_default();
    let (priorities, statuses) = default_tables();
    let zendesk_priorities = one_of("Zendesk", &["low", "normal", "high", "urgent"]);
    let zendesk_statuses = one_of("Zendesk", &["new", "open", "pending", "hold", "solved"]);
    let priorities = overrides(
        &w.priorities,
        "priorities",
        &our_priorities(),
        priorities,
        zendesk_priorities,
        errors,
    );
    let statuses = overrides(
        &w.statuses,
        "statuses",
        &our_statuses(),
        statuses,
        zendesk_statuses,
        errors,
    );
    if let Some(Id::Text(t)) = &f.inbound.integration_user_id {
        errors.add(
            "inbound.integration_user_id",
            format!("{t:?}: a Zendesk user id is a number"),
        );
    }
    Some(Zendesk {
        base_url: w.url.clone().unwrap_or_default(),
        email: w.email.clone().unwrap_or_default(),
        api_token: Secret(w.api_token.clone().unwrap_or_default()),
        groups: positive_ids(&w.groups, "groups", "Zendesk", errors),
        agents: positive_ids(&w.agents, "agents", "Zendesk", errors),
        priorities,
        statuses,
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
        custom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zendesk() -> Zendesk {
        let (priorities, statuses) = default_tables();
        Zendesk {
            base_url: "https://acme.zendesk.com".into(),
            email: "router@acme.example".into(),
            api_token: Secret("t".into()),
            groups: [("billing".to_string(), 360001)].into(),
            agents: [("ann".to_string(), 3611)].into(),
            priorities,
            statuses,
            group_only: false,
            internal_note: false,
            marker_tag: "intent-router".into(),
            integration_user: Some("900".into()),
            custom: Vec::new(),
        }
    }

    fn parse(json: Value) -> NewInboxEvent {
        zendesk()
            .event("zd", json.to_string().as_bytes(), &json, Utc::now())
            .unwrap()
    }

    #[test]
    fn the_note_names_the_chain_and_further_requests() {
        let routed = |intents: Value| -> Routed {
            serde_json::from_value(json!({
                "team": "logistics", "assignee": null, "status": "open", "priority": "high",
                "tags": [], "rule_ids": ["orders"], "language": "en", "trace": [],
                "model_version": "m1", "rules_version": "3", "received_at": "2026-12-06T10:00:00Z",
                "intent": {"intent": "orders.delivery_issue", "margin": 0.9, "top_k": [],
                    "chain": [{"intent": "orders", "p": 0.99}, {"intent": "orders.delivery_issue", "p": 0.95}],
                    "intents": intents, "language": "en", "language_confidence": 1.0}
            }))
            .unwrap()
        };
        let main = json!({"intent": "orders.delivery_issue", "p": 0.95});
        let two = note(&routed(
            json!([main, {"intent": "billing.charge_dispute", "p": 0.82}]),
        ));
        assert!(
            two.starts_with(
                "intent-router: orders (99%) > orders.delivery_issue (95%); also \
                 billing.charge_dispute (82%)\nteam logistics"
            ),
            "{two}"
        );
        let one = note(&routed(json!([main])));
        assert!(one.starts_with("intent-router: orders (99%) > orders.delivery_issue (95%)\nteam"));
    }

    #[test]
    fn events_and_trigger_bodies_become_our_events() {
        let created = json!({"type": "zen:event-type:ticket.created", "id": "e1",
            "detail": {"id": 7, "subject": "Refund", "description": "Twice charged", "tags": ["vip"],
                       "via": {"channel": "email"}, "updated_at": "2026-12-06T10:00:00Z"}});
        let e = parse(created);
        assert_eq!(
            (e.kind, e.delivery_id.as_str(), e.ticket_id.as_str()),
            (EventKind::Created, "e1", "7")
        );
        assert_eq!(
            e.context.as_deref(),
            Some(r#"{"updated_stamp":"2026-12-06T10:00:00Z"}"#)
        );
        let t: Ticket = serde_json::from_str(e.ticket.as_deref().unwrap()).unwrap();
        assert_eq!(
            (t.channel.as_deref(), t.fields["tags"].clone()),
            (Some("email"), json!(["vip"]))
        );
        // Status changes close only when solved or closed; our own user's events are echoes.
        let status = |current: &str, actor: &str| {
            parse(
                json!({"type": "zen:event-type:ticket.status_changed", "id": "e2",
                "detail": {"id": "7", "actor_id": actor}, "event": {"current": current}}),
            )
            .kind
        };
        assert_eq!(status("SOLVED", "5"), EventKind::Closed);
        assert_eq!(status("PENDING", "5"), EventKind::Ignored);
        assert_eq!(status("SOLVED", "900"), EventKind::Ignored);
        // A trigger body: the delivery is the ticket and a hash of the body.
        let trigger = json!({"event": "created", "ticket": {"id": "8", "title": "Hi", "description": "Help",
            "tags": "web intent-router"}});
        let e = parse(trigger);
        assert_eq!(
            e.kind,
            EventKind::Ignored,
            "a created ticket that carries our tag was routed before"
        );
        assert!(e.delivery_id.starts_with("8:") && e.event_type.ends_with("(our own update)"));
        let moved = |group: Value| {
            parse(
                json!({"type": "zen:event-type:ticket.group_assignment_changed", "id": "e3",
                "detail": {"id": "7", "actor_id": "3611"}, "event": {"current": group}}),
            )
        };
        let e = moved(json!({"id": 360001}));
        assert_eq!(
            (e.kind, e.context.as_deref()),
            (
                EventKind::Reassigned,
                Some(r#"{"agent":"ann","team":"billing"}"#)
            )
        );
        assert_eq!(moved(json!("42")).kind, EventKind::Ignored);
    }

    #[test]
    fn a_ticket_id_is_percent_encoded_in_the_update_path() {
        assert_eq!(urlencode("12/../3 x"), "12%2F..%2F3%20x");
    }
}
