//! Helpdesk connectors, as configured (`[[connectors]]`): how each helpdesk's webhooks are
//! authenticated (on the raw bytes, before any parsing) and read into our events and tickets,
//! and what is sent back for a decision. Pure translation: no storage, no HTTP client, no
//! routing (`service::connectors` runs the inbox and the outbox).
//!
//! Kinds: `generic` (any JSON, mapped by field paths; the outbound webhook signed with our
//! scheme). Each kind's module records where its formats come from.

pub mod chatwoot;
pub mod config;
pub mod freshdesk;
pub mod generic;
pub mod jira;
pub mod path;
mod shared;
pub mod sign;
pub mod zammad;
pub mod zendesk;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

pub use config::ConnectorFile;

use crate::decision::Routed;
use crate::rules::{Assignee, RuleSet};
use crate::store::connectors::{HttpCall, NewInboxEvent, NewWriteBack};

/// Why an inbound request was refused.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// No connector of that name.
    // The configured names are not listed: this answers unauthenticated callers.
    #[error("no connector named {name:?}")]
    Unknown {
        /// The name in the path.
        name: String,
    },
    /// The authenticity check failed (a missing or wrong signature or token).
    #[error("{0}")]
    Unauthenticated(String),
    /// The body is over the connector's limit.
    #[error("the body is over this connector's limit of {limit} bytes (inbound.max_body_bytes)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// The JSON lacks what the mapping needs, or has it in another type.
    #[error("{0}")]
    Unmappable(String),
}

/// A secret, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl AsRef<[u8]> for Secret {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// How an inbound request proves it comes from the helpdesk.
#[derive(Debug, Clone)]
pub enum InboundAuth {
    /// An HMAC-SHA256 of the body (or of `"<timestamp>.<body>"`) in a header.
    Hmac {
        /// The signature's header.
        header: HeaderName,
        /// How it is written.
        encoding: sign::Encoding,
        /// The header of the signed timestamp (unix seconds or RFC 3339), if the sender sends
        /// one.
        timestamp: Option<HeaderName>,
        /// What joins the timestamp and the body in the signed text (`.`; Zendesk: nothing).
        separator: &'static str,
    },
    /// Our own scheme (`X-Intent-Router-Signature: t=…,v1=…`).
    IntentRouter,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// Jira: an admin webhook's `X-Hub-Signature: sha256=<hex HMAC of the body>`, or an
    /// automation rule's secret in this header.
    Jira {
        /// The automation rules' secret header, if they are used.
        automation: Option<HeaderName>,
    },
    /// Zammad: `X-Hub-Signature`, the hex HMAC-SHA1 of the body.
    Zammad,
    /// Freshdesk (which signs nothing): a secret in this header, or basic auth whose
    /// `user:password` is a secret.
    Freshdesk {
        /// The secret's header (`None`: basic auth).
        header: Option<HeaderName>,
    },
}

impl InboundAuth {
    /// The headers a request must carry one of.
    pub fn headers(&self) -> Vec<HeaderName> {
        match self {
            Self::Hmac { header, .. } => vec![header.clone()],
            Self::IntentRouter => vec![HeaderName::from_static("x-intent-router-signature")],
            Self::Bearer => vec![http::header::AUTHORIZATION],
            Self::Zammad => vec![HeaderName::from_static(zammad::SIGNATURE)],
            Self::Freshdesk { header } => {
                vec![header.clone().unwrap_or(http::header::AUTHORIZATION)]
            }
            Self::Jira { automation } => std::iter::once(HeaderName::from_static(jira::SIGNATURE))
                .chain(automation.clone())
                .collect(),
        }
    }
}

/// The inbound side of a connector.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// How requests are authenticated.
    pub auth: InboundAuth,
    /// Valid secrets (two while one is rotated).
    pub secrets: Vec<Secret>,
    /// A signed timestamp further than this from our clock is refused.
    pub replay_window: Duration,
    /// Largest body.
    pub max_body_bytes: usize,
}

/// Where and how decisions are written back.
#[derive(Debug, Clone)]
pub struct WriteBackTarget {
    /// Where the webhook goes (generic), or the helpdesk API's base URL.
    pub url: String,
    /// Signing secrets (the first signs).
    pub secrets: Vec<Secret>,
    /// Requests per minute to the helpdesk, across replicas (`None`: unlimited).
    pub per_minute: Option<u32>,
    /// Requests per ticket in ten minutes, across replicas (`None`: unlimited).
    pub per_ticket: Option<u32>,
    /// Attempts before a write-back is dead-lettered.
    pub max_attempts: u32,
    /// One request's time limit.
    pub timeout: Duration,
}

/// What a connector is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Any JSON, mapped by field paths.
    Generic(Box<generic::Mapping>),
    /// Zendesk: its event and trigger webhooks, its ticket update API.
    Zendesk(Box<zendesk::Zendesk>),
    /// Jira Service Management: its webhooks and automation requests, its issue API.
    Jira(Box<jira::Jira>),
    /// Zammad: its triggers' webhooks, its ticket and tag API.
    Zammad(Box<zammad::Zammad>),
    /// Chatwoot: its conversation webhooks, its conversation API.
    Chatwoot(Box<chatwoot::Chatwoot>),
    /// Freshdesk: its automation rules' webhooks, its ticket API.
    Freshdesk(Box<freshdesk::Freshdesk>),
}

/// The names a kind writes to its helpdesk by id (teams and agents), for the rules' warnings.
struct Ids<'a> {
    helpdesk: &'static str,
    team_table: &'static str,
    teams: std::collections::BTreeSet<&'a str>,
    agents: std::collections::BTreeSet<&'a str>,
    group_only: bool,
}

impl Kind {
    /// The teams and agents this kind has ids for (`None`: it sends names, as they are).
    fn ids(&self) -> Option<Ids<'_>> {
        match self {
            Self::Generic(_) => None,
            Self::Zendesk(z) => Some(Ids {
                helpdesk: "Zendesk",
                team_table: "groups",
                teams: z.groups.keys().map(String::as_str).collect(),
                agents: z.agents.keys().map(String::as_str).collect(),
                group_only: z.group_only,
            }),
            Self::Zammad(z) => Some(Ids {
                helpdesk: "Zammad",
                team_table: "groups",
                teams: z.groups.keys().map(String::as_str).collect(),
                agents: z.agents.keys().map(String::as_str).collect(),
                group_only: z.group_only,
            }),
            Self::Chatwoot(c) => Some(Ids {
                helpdesk: "Chatwoot",
                team_table: "groups",
                teams: c.teams.keys().map(String::as_str).collect(),
                agents: c.agents.keys().map(String::as_str).collect(),
                group_only: c.group_only,
            }),
            Self::Freshdesk(d) => Some(Ids {
                helpdesk: "Freshdesk",
                team_table: "groups",
                teams: d.groups.keys().map(String::as_str).collect(),
                agents: d.agents.keys().map(String::as_str).collect(),
                group_only: d.group_only,
            }),
            Self::Jira(j) => Some(Ids {
                helpdesk: "Jira",
                team_table: "teams",
                teams: j.teams.keys().map(String::as_str).collect(),
                agents: j.agents.keys().map(String::as_str).collect(),
                group_only: j.group_only,
            }),
        }
    }

    /// The kind's name in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Generic(_) => "generic",
            Self::Zendesk(_) => "zendesk",
            Self::Jira(_) => "jira",
            Self::Zammad(_) => "zammad",
            Self::Chatwoot(_) => "chatwoot",
            Self::Freshdesk(_) => "freshdesk",
        }
    }
}

/// One configured connector.
#[derive(Debug, Clone)]
pub struct Connector {
    /// Its name (the URL's `{name}`).
    pub name: String,
    /// Its kind and mapping.
    pub kind: Kind,
    /// Inbound authentication and limits.
    pub inbound: Inbound,
    /// The write-back (`None`: decisions are not written back).
    pub write_back: Option<WriteBackTarget>,
}

/// How the helpdesk's answer to a write-back request counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepted.
    Accepted,
    /// Try again later (overloaded, failing, rate limited).
    Retry,
    /// An agent acted first: leave the ticket alone.
    Superseded,
    /// Refused for good (a client error that a retry repeats).
    Refused,
}

impl Connector {
    /// Checks what can be checked before the body is read: the authentication header is there.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), InboundError> {
        let expected = self.inbound.auth.headers();
        if expected.iter().any(|h| headers.contains_key(h)) {
            return Ok(());
        }
        let names: Vec<String> = expected.iter().map(display).collect();
        Err(InboundError::Unauthenticated(format!(
            "missing {} header: connector {:?} accepts only requests authenticated by it",
            names.join(" or "),
            self.name
        )))
    }

    /// Checks the request's authenticity on its raw body.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), InboundError> {
        let refuse = |why: String| Err(InboundError::Unauthenticated(why));
        // The first expected header the request carries (there is one: `check_headers`).
        let expected = self.inbound.auth.headers();
        let header = expected
            .iter()
            .find(|h| headers.contains_key(*h))
            .unwrap_or(&expected[0])
            .clone();
        let value = headers
            .get(&header)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let secrets = &self.inbound.secrets;
        let window = self.inbound.replay_window.as_secs() as i64;
        match &self.inbound.auth {
            InboundAuth::Freshdesk { header: Some(_) } => self.secret_matches(value, &header),
            InboundAuth::Freshdesk { header: None } => {
                let given = value.trim().as_bytes();
                let ok = secrets.iter().fold(false, |ok, s| {
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(s.as_ref())
                    );
                    ok | bool::from(expected.as_bytes().ct_eq(given))
                });
                if ok {
                    Ok(())
                } else {
                    refuse("Authorization: not this connector's basic credentials".into())
                }
            }
            InboundAuth::Zammad => {
                let given = sign::decode(value, sign::Encoding::Hex).unwrap_or_default();
                let ok = secrets.iter().fold(false, |ok, s| {
                    ok | bool::from(sign::hmac_sha1(s.as_ref(), body).as_slice().ct_eq(&given))
                });
                if ok {
                    Ok(())
                } else {
                    refuse(format!(
                        "{}: the signature does not match the body",
                        display(&header)
                    ))
                }
            }
            InboundAuth::Jira { automation } if automation.as_ref() == Some(&header) => {
                self.secret_matches(value, &header)
            }
            InboundAuth::Jira { .. } => {
                let given = sign::decode(value, sign::Encoding::Hex)
                    .filter(|_| value.trim().starts_with("sha256="));
                match given {
                    Some(g) if sign::matches_any(&g, secrets, &[body]) => Ok(()),
                    Some(_) => refuse(format!(
                        "{}: the signature does not match the body",
                        display(&header)
                    )),
                    None => refuse(format!("{}: not sha256=<hex>", display(&header))),
                }
            }
            InboundAuth::Bearer => {
                self.secret_matches(value.strip_prefix("Bearer ").unwrap_or_default(), &header)
            }
            InboundAuth::IntentRouter => {
                sign::verify(value, secrets, body, now.timestamp(), window)
                    .or_else(|e| refuse(format!("{}: {e}", display(&header))))
            }
            InboundAuth::Hmac {
                encoding,
                timestamp,
                separator,
                ..
            } => {
                let Some(given) = sign::decode(value, *encoding) else {
                    return refuse(format!(
                        "{}: not a signature in {encoding:?}",
                        display(&header)
                    ));
                };
                let stamp = match timestamp {
                    Some(h) => Some(self.signed_time(headers, h, now)?),
                    None => None,
                };
                let parts: Vec<&[u8]> = match &stamp {
                    Some(t) => vec![t.as_bytes(), separator.as_bytes(), body],
                    None => vec![body],
                };
                if sign::matches_any(&given, secrets, &parts) {
                    Ok(())
                } else {
                    refuse(format!(
                        "{}: the signature does not match the body",
                        display(&header)
                    ))
                }
            }
        }
    }

    /// Whether a header carries one of the secrets as it is (constant time).
    fn secret_matches(&self, value: &str, header: &HeaderName) -> Result<(), InboundError> {
        let value = value.trim().as_bytes();
        let ok = self
            .inbound
            .secrets
            .iter()
            .fold(false, |ok, s| ok | bool::from(s.0.as_bytes().ct_eq(value)));
        if ok {
            Ok(())
        } else {
            Err(InboundError::Unauthenticated(format!(
                "{}: not this connector's secret",
                display(header)
            )))
        }
    }

    /// The signed timestamp in header `h`, within the replay window of `now`.
    fn signed_time(
        &self,
        headers: &HeaderMap,
        h: &HeaderName,
        now: DateTime<Utc>,
    ) -> Result<String, InboundError> {
        let window = self.inbound.replay_window.as_secs() as i64;
        let value = headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim();
        let parsed = value.parse::<i64>().ok().or_else(|| {
            DateTime::parse_from_rfc3339(value)
                .ok()
                .map(|t| t.timestamp())
        });
        let Some(t) = parsed else {
            return Err(InboundError::Unauthenticated(format!(
                "{}: missing, or neither unix seconds nor an RFC 3339 time",
                display(h)
            )));
        };
        let skew = i64::try_from(now.timestamp().abs_diff(t)).unwrap_or(i64::MAX);
        if skew > window {
            return Err(InboundError::Unauthenticated(format!(
                "{}: {skew} s away from our clock; at most {window} s are accepted (a replay, or a clock to fix)",
                display(h)
            )));
        }
        Ok(value.to_string())
    }

    /// Reads an authenticated body into the event to store.
    pub fn parse(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<NewInboxEvent, InboundError> {
        let json: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| InboundError::NotJson(e.to_string()))?;
        match &self.kind {
            Kind::Generic(m) => m.event(&self.name, headers, body, &json, received_at),
            Kind::Zendesk(z) => z.event(&self.name, body, &json, received_at),
            Kind::Jira(j) => {
                let window = self.inbound.replay_window.as_secs();
                j.event(&self.name, window, body, &json, received_at)
            }
            Kind::Zammad(z) => z.event(&self.name, headers, body, &json, received_at),
            Kind::Chatwoot(c) => c.event(&self.name, body, &json, received_at),
            Kind::Freshdesk(d) => d.event(&self.name, body, &json, received_at),
        }
    }

    /// The write-back of a decision on the helpdesk's ticket (`None`: nothing to write); one
    /// that cannot be written (a team without a group id...) is queued dead, with the reason.
    /// `context` is what the event kept for it (Zendesk: the ticket's update stamp).
    pub fn write_back(
        &self,
        ticket_id: &str,
        decision: &Routed,
        context: Option<&str>,
    ) -> Option<NewWriteBack> {
        let target = self.write_back.as_ref()?;
        let decision_id = decision.decision_id.clone()?;
        let context: Option<serde_json::Value> = context.and_then(|c| serde_json::from_str(c).ok());
        let built = match &self.kind {
            Kind::Generic(_) => Ok(vec![generic::webhook(
                &self.name, target, ticket_id, decision,
            )]),
            Kind::Zendesk(z) => z
                .write_back(ticket_id, decision, context.as_ref())
                .map(|c| vec![c]),
            Kind::Jira(j) => j.write_back(ticket_id, decision),
            Kind::Zammad(z) => z.write_back(ticket_id, decision),
            Kind::Chatwoot(c) => c.write_back(ticket_id, decision, context.as_ref()),
            Kind::Freshdesk(d) => d.write_back(ticket_id, decision),
        };
        let (requests, dead) = match built {
            Ok(calls) => (calls, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        Some(NewWriteBack {
            connector: self.name.clone(),
            ticket_id: ticket_id.to_string(),
            decision_id,
            requests,
            context: context.map(|c| c.to_string()),
            dead,
        })
    }

    /// How the helpdesk's status counts.
    pub fn answer(&self, status: u16) -> Answer {
        match status {
            200..=299 => Answer::Accepted,
            // Zendesk's `safe_update`: the ticket changed after the event (an agent acted).
            409 if matches!(self.kind, Kind::Zendesk(_)) => Answer::Superseded,
            408 | 425 | 429 | 500..=599 => Answer::Retry,
            _ => Answer::Refused,
        }
    }

    /// The headers that authenticate a write-back request with `body`, sent at `now`.
    pub fn outbound_headers(&self, body: &[u8], now: DateTime<Utc>) -> Vec<(String, String)> {
        let Some(target) = &self.write_back else {
            return Vec::new();
        };
        match &self.kind {
            Kind::Generic(_) => target
                .secrets
                .first()
                .map(|s| {
                    (
                        sign::SIGNATURE_HEADER.to_string(),
                        sign::sign(s.as_ref(), now.timestamp(), body),
                    )
                })
                .into_iter()
                .collect(),
            Kind::Zendesk(z) => vec![("Authorization".to_string(), z.authorization())],
            Kind::Jira(j) => vec![("Authorization".to_string(), j.authorization())],
            Kind::Zammad(z) => vec![("Authorization".to_string(), z.authorization())],
            Kind::Chatwoot(c) => vec![("api_access_token".to_string(), c.api_token.0.clone())],
            Kind::Freshdesk(d) => vec![("Authorization".to_string(), d.authorization())],
        }
    }

    /// The URL of a call (a path is under the connector's base URL).
    pub fn url(&self, call: &HttpCall) -> String {
        match (&self.write_back, call.path.starts_with('/')) {
            (Some(t), true) => format!("{}{}", t.url.trim_end_matches('/'), call.path),
            _ => call.path.clone(),
        }
    }
}

/// A header's name as people write it (`X-Signature`).
fn display(h: &HeaderName) -> String {
    h.as_str()
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The configured connectors by name (replaced whole on SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct Connectors {
    by_name: BTreeMap<String, Arc<Connector>>,
}

impl Connectors {
    /// Compiles `[[connectors]]`: every error, each naming the connector and the key.
    pub fn compile(files: &[ConnectorFile]) -> Result<Self, Vec<String>> {
        config::compile(files).map(|list| Self {
            by_name: list
                .into_iter()
                .map(|c| (c.name.clone(), Arc::new(c)))
                .collect(),
        })
    }

    /// The connector of a name.
    pub fn get(&self, name: &str) -> Result<Arc<Connector>, InboundError> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| InboundError::Unknown {
                name: name.to_string(),
            })
    }

    /// Every connector, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Connector>> {
        self.by_name.values()
    }

    /// What rules would send that a connector cannot write back (a team without a group id, an
    /// agent, named by a rule or in the team's roster, without a user id): their write-backs
    /// would be dead letters.
    pub fn warnings(
        &self,
        rules: &RuleSet,
        rosters: &BTreeMap<String, Vec<String>>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let actions = std::iter::once(("defaults", &rules.defaults))
            .chain(rules.rules.iter().map(|r| (r.id.as_str(), &r.then)));
        for (rule, then) in actions {
            for c in self.by_name.values().filter(|c| c.write_back.is_some()) {
                let Some(ids) = c.kind.ids() else { continue };
                let mut warn = |what: String, table: &str| {
                    let w = format!(
                        "connector {}: rule {rule:?} sends tickets to {what}, which has no {} id: their write-backs will be dead letters (add it to write_back.{table})",
                        c.name, ids.helpdesk
                    );
                    if !out.contains(&w) {
                        out.push(w);
                    }
                };
                let Some(team) = &then.team else { continue };
                if !ids.teams.contains(team.as_str()) {
                    warn(format!("team {team:?}"), ids.team_table);
                }
                if ids.group_only {
                    continue;
                }
                let agents: Vec<&String> = match &then.assignee {
                    Some(Assignee::Agent(a)) => vec![a],
                    Some(Assignee::RoundRobin | Assignee::LeastLoaded) => rosters
                        .get(team)
                        .map(|r| r.iter().collect())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                for a in agents
                    .into_iter()
                    .filter(|a| !ids.agents.contains(a.as_str()))
                {
                    warn(format!("agent {a:?}"), "agents");
                }
            }
        }
        out
    }
}
