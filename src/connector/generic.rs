//! The `generic` kind: any helpdesk or in-house system that can send JSON (Usedesk, Omnidesk,
//! Okdesk, HappyDesk...) connects by configuration alone. Field paths say where the ticket's
//! facts are; the write-back is a webhook carrying the decision, signed with our scheme
//! (`sign::sign`).

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName};
use serde_json::{json, Value};

pub use super::path::FieldPath;
use super::path::{hashed_delivery, text_at};
use super::{InboundError, WriteBackTarget};
use crate::decision::Routed;
use crate::store::connectors::{EventKind, HttpCall, NewInboxEvent};
use crate::ticket::{Customer, Ticket};

/// Where the delivery id comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A field of the payload.
    Path(FieldPath),
    /// A header.
    Header(HeaderName),
    /// The ticket id and a hash of the body (a sender that resends the same body is deduplicated).
    BodyHash,
}

/// The generic kind's mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The helpdesk's ticket id.
    pub id: FieldPath,
    /// Subject.
    pub subject: Option<FieldPath>,
    /// Body.
    pub body: Option<FieldPath>,
    /// Channel.
    pub channel: Option<FieldPath>,
    /// The customer's tier.
    pub customer_tier: Option<FieldPath>,
    /// The language given.
    pub language: Option<FieldPath>,
    /// Custom fields: name -> path.
    pub custom: Vec<(String, FieldPath)>,
    /// The delivery id.
    pub delivery: Source,
    /// The event's type (`None`: every event routes its ticket).
    pub event: Option<FieldPath>,
    /// Event types that route.
    pub created: Vec<String>,
    /// Event types that close.
    pub closed: Vec<String>,
    /// Event types that say the ticket was moved to another team.
    pub reassigned: Vec<String>,
    /// The ticket's team now (reassigned events).
    pub team: Option<FieldPath>,
    /// Who moved it.
    pub agent: Option<FieldPath>,
}

impl Mapping {
    /// The text at `path` (`None` when the path is not configured or absent).
    fn text(
        &self,
        json: &Value,
        path: &Option<FieldPath>,
        key: &str,
    ) -> Result<Option<String>, InboundError> {
        path.as_ref().map_or(Ok(None), |p| text_at(json, p, key))
    }

    /// The event a payload stands for.
    pub(super) fn event(
        &self,
        connector: &str,
        headers: &HeaderMap,
        body: &[u8],
        json: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<NewInboxEvent, InboundError> {
        let ticket_id = self
            .text(json, &Some(self.id.clone()), "id")?
            .filter(|id| !id.trim().is_empty() && id.chars().count() <= 256)
            .ok_or_else(|| {
                InboundError::Unmappable(format!(
                    "fields.id ({}): missing, blank or over 256 characters; every event needs the ticket's id",
                    self.id.text
                ))
            })?;
        let event_type = match &self.event {
            Some(p) => self.text(json, &Some(p.clone()), "event")?.ok_or_else(|| {
                InboundError::Unmappable(format!("fields.event ({}): missing", p.text))
            })?,
            None => "created".to_string(),
        };
        let kind = if self.event.is_none() || self.created.contains(&event_type) {
            EventKind::Created
        } else if self.closed.contains(&event_type) {
            EventKind::Closed
        } else if self.reassigned.contains(&event_type) {
            EventKind::Reassigned
        } else {
            EventKind::Ignored
        };
        let ticket = match kind {
            EventKind::Created => Some(self.ticket(json, &ticket_id)?),
            _ => None,
        };
        let context = match kind {
            EventKind::Reassigned => self.reassignment(connector, json)?,
            _ => None,
        };
        Ok(NewInboxEvent {
            connector: connector.to_string(),
            delivery_id: self.delivery_id(headers, body, json, &ticket_id)?,
            kind,
            event_type,
            ticket_id,
            ticket: ticket
                .map(|t| serde_json::to_string(&t).expect("a ticket serialises. This is a bug.")),
            context,
            received_at,
        })
    }

    /// The team a reassigned event moved the ticket to, and who moved it (default: the
    /// connector's agents).
    fn reassignment(&self, connector: &str, json: &Value) -> Result<Option<String>, InboundError> {
        let team = self
            .text(json, &self.team, "team")?
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                let at = self.team.as_ref().map_or("", |p| p.text.as_str());
                InboundError::Unmappable(format!(
                    "fields.team ({at}): missing; a reassigned event needs the ticket's team"
                ))
            })?;
        // Who moved it is a nicety: absent, null or empty, the connector's agents did.
        let agent = self
            .text(json, &self.agent, "agent")
            .ok()
            .flatten()
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| format!("{connector} agent"));
        Ok(super::shared::reassignment(&team, &agent))
    }

    /// The ticket a created event carries.
    fn ticket(&self, json: &Value, id: &str) -> Result<Ticket, InboundError> {
        let subject = self.text(json, &self.subject, "subject")?;
        let body = self.text(json, &self.body, "body")?.unwrap_or_default();
        if body.trim().is_empty() && subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
            let paths: Vec<&str> = [&self.subject, &self.body]
                .into_iter()
                .flatten()
                .map(|p| p.text.as_str())
                .collect();
            return Err(InboundError::Unmappable(format!(
                "the ticket has no text: nothing at {}",
                paths.join(" or ")
            )));
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
            channel: self.text(json, &self.channel, "channel")?,
            language: self.text(json, &self.language, "language")?,
            customer: Customer {
                tier: self.text(json, &self.customer_tier, "customer_tier")?,
            },
            fields,
            received_at: None,
        })
    }

    fn delivery_id(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        json: &Value,
        ticket_id: &str,
    ) -> Result<String, InboundError> {
        let id = match &self.delivery {
            Source::Path(p) => self.text(json, &Some(p.clone()), "delivery_id")?,
            Source::Header(h) => headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            Source::BodyHash => Some(hashed_delivery(ticket_id, &[body])),
        };
        id.filter(|d| !d.trim().is_empty() && d.chars().count() <= 256)
            .ok_or_else(|| {
                let at = match &self.delivery {
                    Source::Path(p) => format!("fields.delivery_id ({})", p.text),
                    Source::Header(h) => format!("fields.delivery_header ({h})"),
                    Source::BodyHash => "the delivery id".into(),
                };
                InboundError::Unmappable(format!("{at}: missing, blank or over 256 characters"))
            })
    }
}

/// The decision webhook of the generic kind: `POST` to the configured URL with
/// `{"type": "ticket.routed", "connector", "ticket_id", "decision"}`.
pub fn webhook(
    connector: &str,
    target: &WriteBackTarget,
    ticket_id: &str,
    decision: &Routed,
) -> HttpCall {
    HttpCall {
        merge_tags_from: None,
        method: "POST".into(),
        path: target.url.clone(),
        body: Some(json!({
            "type": "ticket.routed",
            "connector": connector,
            "ticket_id": ticket_id,
            "decision": decision,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        let p = |s: &str| FieldPath::parse(s).unwrap();
        Mapping {
            id: p("ticket.id"),
            subject: Some(p("ticket.subject")),
            body: Some(p("/ticket/messages/0/text")),
            channel: Some(p("ticket.channel")),
            customer_tier: Some(p("client.tier")),
            language: None,
            custom: vec![("plan".into(), p("client.plan"))],
            delivery: Source::Path(p("event_id")),
            event: Some(p("trigger")),
            created: vec!["new_ticket".into()],
            closed: vec!["closed".into()],
            reassigned: vec!["group_changed".into()],
            team: Some(p("ticket.team")),
            agent: Some(p("by.login")),
        }
    }

    #[test]
    fn a_reassignment_names_the_team_now_and_who_moved_it() {
        let moved = json!({"event_id": "z", "trigger": "group_changed",
            "ticket": {"id": "42", "team": "oncall"}, "by": {"login": "kate"}});
        let e = mapping()
            .event("u", &HeaderMap::new(), b"{}", &moved, Utc::now())
            .unwrap();
        assert_eq!((e.kind, e.ticket), (EventKind::Reassigned, None));
        let context: Value = serde_json::from_str(e.context.as_deref().unwrap()).unwrap();
        assert_eq!(context, json!({"team": "oncall", "agent": "kate"}));
        let unnamed = json!({"event_id": "z", "trigger": "group_changed", "ticket": {"id": "42"}});
        let err = mapping()
            .event("u", &HeaderMap::new(), b"{}", &unnamed, Utc::now())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "fields.team (ticket.team): missing; a reassigned event needs the ticket's team"
        );
    }

    #[test]
    fn a_payload_maps_to_a_ticket_by_paths() {
        let json = json!({"event_id": 991, "trigger": "new_ticket",
            "ticket": {"id": 42, "subject": "Refund", "channel": "email",
                       "messages": [{"text": "Верните деньги"}]},
            "client": {"tier": "vip", "plan": {"name": "pro"}}});
        let e = mapping()
            .event("usedesk", &HeaderMap::new(), b"{}", &json, Utc::now())
            .unwrap();
        assert_eq!(
            (e.kind, e.ticket_id.as_str(), e.delivery_id.as_str()),
            (EventKind::Created, "42", "991")
        );
        let t: Ticket = serde_json::from_str(e.ticket.as_deref().unwrap()).unwrap();
        assert_eq!(t.body, "Верните деньги");
        assert_eq!(t.customer.tier.as_deref(), Some("vip"));
        assert_eq!(t.fields["plan"], json!({"name": "pro"}));
        let closed = json!({"event_id": "x", "trigger": "closed", "ticket": {"id": "42"}});
        let e = mapping()
            .event("u", &HeaderMap::new(), b"{}", &closed, Utc::now())
            .unwrap();
        assert_eq!((e.kind, e.ticket), (EventKind::Closed, None));
        let other = json!({"event_id": "y", "trigger": "reply", "ticket": {"id": "42"}});
        let e = mapping()
            .event("u", &HeaderMap::new(), b"{}", &other, Utc::now())
            .unwrap();
        assert_eq!(e.kind, EventKind::Ignored);
    }

    #[test]
    fn what_cannot_be_mapped_is_named_with_its_path() {
        let m = mapping();
        let err = |json: Value| {
            m.event("u", &HeaderMap::new(), b"{}", &json, Utc::now())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(json!({"event_id": 1, "trigger": "new_ticket", "ticket": {}})),
            "fields.id (ticket.id): missing, blank or over 256 characters; every event needs the ticket's id"
        );
        assert_eq!(
            err(
                json!({"event_id": 1, "trigger": "new_ticket", "ticket": {"id": 1, "subject": ["x"]}})
            ),
            "fields.subject (ticket.subject): expected text, found a list"
        );
        assert_eq!(
            err(json!({"event_id": 1, "trigger": "new_ticket", "ticket": {"id": 1}})),
            "the ticket has no text: nothing at ticket.subject or /ticket/messages/0/text"
        );
        assert_eq!(
            err(json!({"trigger": "new_ticket", "ticket": {"id": 1, "subject": "x"}})),
            "fields.delivery_id (event_id): missing, blank or over 256 characters"
        );
        assert!(FieldPath::parse("a..b").is_err());
    }
}
