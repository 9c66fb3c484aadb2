//! Helpdesk connectors, as configured (`[[connectors]]`): how each helpdesk's webhooks are
//! authenticated (on the raw bytes, before any parsing) and read into our events and tickets,
//! and what is sent back for a decision. Pure translation: no storage, no HTTP client, no
//! routing (`service::connectors` runs the inbox and the outbox).
//!
//! Kinds: `generic` (any JSON, mapped by field paths; the outbound webhook signed with our
//! scheme). Each kind's module records where its formats come from.

pub mod config;
pub mod generic;
pub mod sign;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

pub use config::ConnectorFile;

use crate::decision::Routed;
use crate::store::connectors::{HttpCall, NewInboxEvent, NewWriteBack};

/// Why an inbound request was refused.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// No connector of that name.
    #[error("no connector named {name:?}; configured: {known}")]
    Unknown {
        /// The name in the path.
        name: String,
        /// The configured names.
        known: String,
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
        /// The header of the signed timestamp (unix seconds), if the sender sends one.
        timestamp: Option<HeaderName>,
    },
    /// Our own scheme (`X-Intent-Router-Signature: t=…,v1=…`).
    IntentRouter,
    /// `Authorization: Bearer <secret>`.
    Bearer,
}

impl InboundAuth {
    /// The header a request must carry.
    pub fn header(&self) -> HeaderName {
        match self {
            Self::Hmac { header, .. } => header.clone(),
            Self::IntentRouter => HeaderName::from_static("x-intent-router-signature"),
            Self::Bearer => http::header::AUTHORIZATION,
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
    /// Where the webhook goes (generic).
    pub url: String,
    /// Signing secrets (the first signs).
    pub secrets: Vec<Secret>,
    /// Requests per minute to the helpdesk, across replicas (`None`: unlimited).
    pub per_minute: Option<u32>,
    /// Attempts before a write-back is dead-lettered.
    pub max_attempts: u32,
    /// One request's time limit.
    pub timeout: Duration,
}

/// What a connector is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Any JSON, mapped by field paths.
    Generic(generic::Mapping),
}

impl Kind {
    /// The kind's name in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Generic(_) => "generic",
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
        let header = self.inbound.auth.header();
        if headers.contains_key(&header) {
            Ok(())
        } else {
            Err(InboundError::Unauthenticated(format!(
                "missing {} header: connector {:?} accepts only requests authenticated by it",
                display(&header),
                self.name
            )))
        }
    }

    /// Checks the request's authenticity on its raw body.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), InboundError> {
        let refuse = |why: String| Err(InboundError::Unauthenticated(why));
        let header = self.inbound.auth.header();
        let value = headers
            .get(&header)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let secrets = &self.inbound.secrets;
        let window = self.inbound.replay_window.as_secs() as i64;
        match &self.inbound.auth {
            InboundAuth::Bearer => {
                let token = value.strip_prefix("Bearer ").unwrap_or_default().trim();
                let ok = secrets.iter().fold(false, |ok, s| {
                    ok | bool::from(s.0.as_bytes().ct_eq(token.as_bytes()))
                });
                if ok {
                    Ok(())
                } else {
                    refuse("the bearer token is not this connector's".into())
                }
            }
            InboundAuth::IntentRouter => {
                sign::verify(value, secrets, body, now.timestamp(), window)
                    .or_else(|e| refuse(format!("{}: {e}", display(&header))))
            }
            InboundAuth::Hmac {
                encoding,
                timestamp,
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
                    Some(t) => vec![t.as_bytes(), b".", body],
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
        let Ok(t) = value.parse::<i64>() else {
            return Err(InboundError::Unauthenticated(format!(
                "{}: missing or not unix seconds",
                display(h)
            )));
        };
        let skew = (now.timestamp() - t).abs();
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
        }
    }

    /// The write-back of a decision on the helpdesk's ticket (`None`: nothing to write).
    pub fn write_back(&self, ticket_id: &str, decision: &Routed) -> Option<NewWriteBack> {
        let target = self.write_back.as_ref()?;
        let decision_id = decision.decision_id.clone()?;
        let requests: Vec<HttpCall> = match &self.kind {
            Kind::Generic(_) => vec![generic::webhook(&self.name, target, ticket_id, decision)],
        };
        Some(NewWriteBack {
            connector: self.name.clone(),
            ticket_id: ticket_id.to_string(),
            decision_id,
            requests,
            dead: None,
        })
    }

    /// How the helpdesk's status counts.
    pub fn answer(&self, status: u16) -> Answer {
        match status {
            200..=299 => Answer::Accepted,
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
        }
    }

    /// The URL of a call (a path is under the connector's base URL).
    pub fn url(&self, call: &HttpCall) -> String {
        call.path.clone()
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
                known: if self.by_name.is_empty() {
                    "none".into()
                } else {
                    self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })
    }

    /// Every connector, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Connector>> {
        self.by_name.values()
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}
