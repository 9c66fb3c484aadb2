//! `[[connectors]]` as written in the config file, and its compilation into [`Connector`]s:
//! every error at once, each naming the connector and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use super::generic::{FieldPath, Mapping, Source};
use super::{sign, Connector, Inbound, InboundAuth, Kind, Secret, WriteBackTarget};

/// Default largest inbound body.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Default replay window of signed timestamps.
pub const REPLAY_WINDOW_SECONDS: u64 = 300;
/// Default replay window of Jira's signed event times (a week: its retries come late).
pub const JIRA_REPLAY_WINDOW_SECONDS: u64 = 7 * 24 * 3600;
/// Default attempts before a write-back is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 15;
/// Default time limit of one write-back request.
pub const TIMEOUT_SECONDS: u64 = 10;

/// One `[[connectors]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorFile {
    /// The name in `/v1/connectors/{name}/events`.
    pub name: String,
    /// `generic`.
    pub kind: String,
    /// Authentication and limits of inbound webhooks.
    #[serde(default)]
    pub inbound: InboundFile,
    /// Where the ticket's facts are in the payload (generic).
    #[serde(default)]
    pub fields: FieldsFile,
    /// Which event types route a ticket and which close it (generic).
    #[serde(default)]
    pub events: EventsFile,
    /// Where decisions go back.
    pub write_back: Option<WriteBackFile>,
}

/// `[connectors.inbound]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundFile {
    /// `hmac-sha256`, `intent-router` or `bearer`.
    pub auth: Option<String>,
    /// The signature's header (hmac-sha256; default `X-Signature`).
    pub header: Option<String>,
    /// `hex` (default; `sha256=` prefix allowed) or `base64` (hmac-sha256).
    pub encoding: Option<String>,
    /// The header of a signed unix timestamp: the signed text is `"<timestamp>.<body>"`.
    pub timestamp_header: Option<String>,
    /// Valid secrets: one, or two while rotating.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// A signed time further than this from ours is refused (default 300).
    pub replay_window_seconds: Option<u64>,
    /// Largest body (default 1 MiB).
    pub max_body_bytes: Option<usize>,
    /// The helpdesk user our write-backs are made as: its events are ignored (zendesk: a
    /// number; jira: an accountId).
    pub integration_user_id: Option<Id>,
}

/// `[connectors.fields]`: dotted paths (`ticket.messages.0.text`) or JSON pointers (`/ticket/id`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsFile {
    /// The helpdesk's ticket id (required).
    pub id: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Body.
    pub body: Option<String>,
    /// Channel.
    pub channel: Option<String>,
    /// The customer's tier.
    pub customer_tier: Option<String>,
    /// The language the helpdesk gives.
    pub language: Option<String>,
    /// The event's type (`events` says which values do what).
    pub event: Option<String>,
    /// The delivery id in the payload (default: the ticket id and a hash of the body).
    pub delivery_id: Option<String>,
    /// The delivery id in a header instead.
    pub delivery_header: Option<String>,
    /// Custom fields: our name -> path (rules see them as `fields.<name>`).
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
    /// The team the ticket is in now, in our rules' words (reassigned events).
    pub team: Option<String>,
    /// Who moved the ticket (reassigned events; the correction's author).
    pub agent: Option<String>,
}

/// `[connectors.events]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsFile {
    /// Event types that route the ticket.
    #[serde(default)]
    pub created: Vec<String>,
    /// Event types that close its assignment (solved, closed).
    #[serde(default)]
    pub closed: Vec<String>,
    /// Event types saying an agent moved the ticket to another team (a correction for the
    /// learning loop when it is not the team we chose).
    #[serde(default)]
    pub reassigned: Vec<String>,
}

/// `[connectors.write_back]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBackFile {
    /// Where the signed webhook goes (generic).
    pub url: Option<String>,
    /// Signing secrets (the first signs; the receiver may accept two while rotating).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Requests per minute, across replicas (default: unlimited).
    pub per_minute: Option<u32>,
    /// Attempts before dead-lettering (default 15).
    pub max_attempts: Option<u32>,
    /// One request's time limit (default 10 s).
    pub timeout_seconds: Option<u64>,
    /// Requests per ticket in ten minutes, across replicas (zendesk; default 30).
    pub per_ticket_per_10_minutes: Option<u32>,
    /// The integration user's e-mail (zendesk).
    pub email: Option<String>,
    /// Its API token (zendesk).
    pub api_token: Option<String>,
    /// Team -> the helpdesk's group: its id (zendesk: a number), or its name or id (zammad).
    #[serde(default)]
    pub groups: BTreeMap<String, Id>,
    /// Agent -> the helpdesk's user id (zendesk: a number; jira: an accountId).
    #[serde(default)]
    pub agents: BTreeMap<String, Id>,
    /// Team -> a component's name or a select field's option (jira).
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
    /// Where the team goes: `components` (default) or a select custom field's id (jira).
    pub team_field: Option<String>,
    /// Our status -> the workflow transition's id that reaches it (jira; statuses without one
    /// are not changed).
    #[serde(default)]
    pub transitions: BTreeMap<String, String>,
    /// Our priority -> the helpdesk's (zendesk; default: the same words).
    #[serde(default)]
    pub priorities: BTreeMap<String, String>,
    /// Our status -> the helpdesk's (zendesk; default: new, open, pending, solved as they are).
    #[serde(default)]
    pub statuses: BTreeMap<String, String>,
    /// Write only the group, leave the agent to the helpdesk's routing (zendesk).
    pub group_only: Option<bool>,
    /// Add an internal note with the intent chain and the rules (zendesk; default true).
    pub internal_note: Option<bool>,
    /// The tag our updates add (zendesk; default `intent-router`).
    pub marker_tag: Option<String>,
}

/// A helpdesk's id: a number (Zendesk) or text (Jira's accountId).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A number.
    Number(i64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// The kinds that talk to a helpdesk's own API.
const HELPDESKS: &str = "zendesk, jira, zammad, chatwoot, freshdesk";

/// The kinds, as named in the config.
pub const KINDS: &str = "generic, zendesk, jira, zammad, chatwoot, freshdesk";

/// Collects a connector's errors, each prefixed with where it is.
pub(super) struct Errors<'a> {
    at: String,
    list: &'a mut Vec<String>,
}

impl Errors<'_> {
    /// Adds an error at `key`.
    pub(super) fn add(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.list.push(format!("{}.{key}: {msg}", self.at));
    }
}

/// Compiles every connector, or returns every error.
pub(super) fn compile(files: &[ConnectorFile]) -> Result<Vec<Connector>, Vec<String>> {
    let mut list = Vec::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let mut errors = Errors {
            at: format!("connectors[{i}] ({})", f.name),
            list: &mut list,
        };
        if !valid_name(&f.name) {
            errors.add("name", "use 1 to 64 letters, digits, '-' or '_'");
        } else if !seen.insert(f.name.clone()) {
            errors.add("name", "another connector has this name");
        }
        if let Some(c) = one(f, &mut errors) {
            out.push(c);
        }
    }
    if list.is_empty() {
        Ok(out)
    } else {
        Err(list)
    }
}

/// Whether an http URL points at this machine (where a test or a local proxy listens).
fn loopback(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    ["127.", "localhost:", "localhost/", "[::1]"]
        .iter()
        .any(|p| rest.starts_with(p))
        || rest == "localhost"
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn one(f: &ConnectorFile, errors: &mut Errors<'_>) -> Option<Connector> {
    let k = f.kind.as_str();
    let kind = match k {
        "generic" => {
            super::shared::overlapping_events(f, errors);
            mapping(&f.fields, &f.events, errors).map(|m| Kind::Generic(Box::new(m)))
        }
        "zendesk" => super::zendesk::compile(f, errors).map(|z| Kind::Zendesk(Box::new(z))),
        "jira" => super::jira::compile(f, errors).map(|j| Kind::Jira(Box::new(j))),
        "zammad" => super::zammad::compile(f, errors).map(|z| Kind::Zammad(Box::new(z))),
        "chatwoot" => super::chatwoot::compile(f, errors).map(|c| Kind::Chatwoot(Box::new(c))),
        "freshdesk" => super::freshdesk::compile(f, errors).map(|d| Kind::Freshdesk(Box::new(d))),
        other => {
            errors.add("kind", format!("unknown kind {other:?}; known: {KINDS}"));
            None
        }
    };
    if matches!(k, "generic" | "freshdesk") && f.inbound.integration_user_id.is_some() {
        errors.add(
            "inbound.integration_user_id",
            "applies to kinds zendesk, jira, zammad and chatwoot",
        );
    }
    let inbound = inbound(&f.inbound, k, errors);
    let write_back = f.write_back.as_ref().and_then(|w| write_back(w, k, errors));
    Some(Connector {
        name: f.name.clone(),
        kind: kind?,
        inbound: inbound?,
        write_back,
    })
}

fn header(value: &str, key: &str, errors: &mut Errors<'_>) -> Option<HeaderName> {
    HeaderName::try_from(value)
        .map_err(|_| errors.add(key, format!("{value:?} is not a header name")))
        .ok()
}

fn secrets(list: &[String], key: &str, errors: &mut Errors<'_>) -> Vec<Secret> {
    if list.is_empty() || list.len() > 2 {
        errors.add(key, "give one secret, or two while rotating");
    }
    for (i, s) in list.iter().enumerate() {
        if s.chars().count() < 16 {
            errors.add(
                &format!("{key}[{i}]"),
                "too short: use at least 16 characters",
            );
        }
    }
    list.iter().cloned().map(Secret).collect()
}

fn inbound(f: &InboundFile, kind: &str, errors: &mut Errors<'_>) -> Option<Inbound> {
    let only_hmac = [
        ("inbound.header", f.header.is_some()),
        ("inbound.encoding", f.encoding.is_some()),
        ("inbound.timestamp_header", f.timestamp_header.is_some()),
    ];
    let auth = match f.auth.as_deref() {
        _ if kind == "freshdesk" => {
            let fixed = [
                ("inbound.auth", f.auth.is_some()),
                ("inbound.encoding", f.encoding.is_some()),
                ("inbound.timestamp_header", f.timestamp_header.is_some()),
            ];
            for (key, given) in fixed {
                if given {
                    errors.add(
                        key,
                        "set by kind freshdesk (basic auth, or the secret in inbound.header)",
                    );
                }
            }
            let header = match &f.header {
                Some(h) => Some(header(h, "inbound.header", errors)?),
                None => None,
            };
            Some(InboundAuth::Freshdesk { header })
        }
        _ if kind == "chatwoot" => {
            for (key, given) in [("inbound.auth", f.auth.is_some())]
                .into_iter()
                .chain(only_hmac)
            {
                if given {
                    errors.add(key, "set by kind chatwoot (X-Chatwoot-Signature over the timestamp and the body)");
                }
            }
            Some(InboundAuth::Hmac {
                header: HeaderName::from_static(super::chatwoot::SIGNATURE),
                encoding: sign::Encoding::Hex,
                timestamp: Some(HeaderName::from_static(super::chatwoot::TIMESTAMP)),
                separator: ".",
            })
        }
        _ if kind == "zammad" => {
            for (key, given) in [("inbound.auth", f.auth.is_some())]
                .into_iter()
                .chain(only_hmac)
            {
                if given {
                    errors.add(
                        key,
                        "set by kind zammad (X-Hub-Signature, HMAC-SHA1 of the body)",
                    );
                }
            }
            Some(InboundAuth::Zammad)
        }
        _ if kind == "jira" => {
            let fixed = [
                ("inbound.auth", f.auth.is_some()),
                ("inbound.encoding", f.encoding.is_some()),
                ("inbound.timestamp_header", f.timestamp_header.is_some()),
            ];
            for (key, given) in fixed {
                if given {
                    errors.add(key, "set by kind jira (X-Hub-Signature: sha256=<hex>; inbound.header names an automation rule's secret header)");
                }
            }
            let automation = match &f.header {
                Some(h) => Some(header(h, "inbound.header", errors)?),
                None => None,
            };
            Some(InboundAuth::Jira { automation })
        }
        _ if kind == "zendesk" => {
            let fixed = [("inbound.auth", f.auth.is_some())]
                .into_iter()
                .chain(only_hmac);
            for (key, given) in fixed {
                if given {
                    errors.add(key, "set by kind zendesk (X-Zendesk-Webhook-Signature, base64, signed timestamp)");
                }
            }
            Some(InboundAuth::Hmac {
                header: HeaderName::from_static(super::zendesk::SIGNATURE),
                encoding: sign::Encoding::Base64,
                timestamp: Some(HeaderName::from_static(super::zendesk::TIMESTAMP)),
                separator: "",
            })
        }
        Some("hmac-sha256") => {
            let h = header(
                f.header.as_deref().unwrap_or("X-Signature"),
                "inbound.header",
                errors,
            );
            let encoding = match f.encoding.as_deref().unwrap_or("hex") {
                "hex" => Some(sign::Encoding::Hex),
                "base64" => Some(sign::Encoding::Base64),
                other => {
                    errors.add(
                        "inbound.encoding",
                        format!("unknown encoding {other:?}; known: hex, base64"),
                    );
                    None
                }
            };
            let timestamp = match &f.timestamp_header {
                Some(t) => Some(header(t, "inbound.timestamp_header", errors)?),
                None => None,
            };
            Some(InboundAuth::Hmac {
                header: h?,
                encoding: encoding?,
                timestamp,
                separator: ".",
            })
        }
        Some(a @ ("intent-router" | "bearer")) => {
            for (key, given) in only_hmac {
                if given {
                    errors.add(key, format!("applies to auth = \"hmac-sha256\", not {a:?}"));
                }
            }
            Some(if a == "bearer" {
                InboundAuth::Bearer
            } else {
                InboundAuth::IntentRouter
            })
        }
        Some(other) => {
            errors.add(
                "inbound.auth",
                format!("unknown {other:?}; known: hmac-sha256, intent-router, bearer"),
            );
            None
        }
        None => {
            errors.add(
                "inbound.auth",
                "missing: hmac-sha256, intent-router or bearer",
            );
            None
        }
    };
    let secrets = secrets(&f.secrets, "inbound.secrets", errors);
    if matches!(kind, "zammad" | "freshdesk") && f.replay_window_seconds.is_some() {
        errors.add(
            "inbound.replay_window_seconds",
            format!("kind {kind} signs no time: deliveries are known by their content instead"),
        );
    }
    if f.max_body_bytes == Some(0) {
        errors.add("inbound.max_body_bytes", "must be at least 1");
    }
    Some(Inbound {
        auth: auth?,
        secrets,
        replay_window: Duration::from_secs(f.replay_window_seconds.unwrap_or(
            // Jira signs its event's time, not the delivery's: its retries after an outage of
            // ours must pass (a replay within the window is a duplicate by the body's hash).
            if kind == "jira" {
                JIRA_REPLAY_WINDOW_SECONDS
            } else {
                REPLAY_WINDOW_SECONDS
            },
        )),
        max_body_bytes: f.max_body_bytes.unwrap_or(MAX_BODY_BYTES),
    })
}

fn path(value: &Option<String>, key: &str, errors: &mut Errors<'_>) -> Option<FieldPath> {
    let v = value.as_deref()?;
    FieldPath::parse(v)
        .map_err(|e| errors.add(&format!("fields.{key}"), e))
        .ok()
}

fn mapping(f: &FieldsFile, events: &EventsFile, errors: &mut Errors<'_>) -> Option<Mapping> {
    let id = path(&f.id, "id", errors);
    if f.id.is_none() {
        errors.add("fields.id", "missing: the path of the helpdesk's ticket id");
    }
    if f.subject.is_none() && f.body.is_none() {
        errors.add("fields", "give the path of the body, the subject, or both");
    }
    let delivery = match (&f.delivery_id, &f.delivery_header) {
        (Some(_), Some(_)) => {
            errors.add(
                "fields.delivery_header",
                "give delivery_id or delivery_header, not both",
            );
            Source::BodyHash
        }
        (Some(_), None) => {
            path(&f.delivery_id, "delivery_id", errors).map_or(Source::BodyHash, Source::Path)
        }
        (None, Some(h)) => {
            header(h, "fields.delivery_header", errors).map_or(Source::BodyHash, Source::Header)
        }
        (None, None) => Source::BodyHash,
    };
    let event = path(&f.event, "event", errors);
    if f.event.is_some() && events.created.is_empty() {
        errors.add(
            "events.created",
            "list the event types that route a ticket (fields.event is set)",
        );
    }
    let listed =
        !(events.created.is_empty() && events.closed.is_empty() && events.reassigned.is_empty());
    if f.event.is_none() && listed {
        errors.add(
            "fields.event",
            "missing: events are listed, so give the path of the event's type",
        );
    }
    if !events.reassigned.is_empty() && f.team.is_none() {
        errors.add(
            "fields.team",
            "missing: events.reassigned is listed, so give the path of the ticket's team now",
        );
    }
    for (key, given) in [("fields.team", &f.team), ("fields.agent", &f.agent)] {
        if given.is_some() && events.reassigned.is_empty() {
            errors.add(key, "applies to events.reassigned, which lists none");
        }
    }
    let custom = f
        .custom
        .iter()
        .filter_map(|(name, p)| {
            path(&Some(p.clone()), &format!("custom.{name}"), errors).map(|p| (name.clone(), p))
        })
        .collect();
    Some(Mapping {
        id: id?,
        subject: path(&f.subject, "subject", errors),
        body: path(&f.body, "body", errors),
        channel: path(&f.channel, "channel", errors),
        customer_tier: path(&f.customer_tier, "customer_tier", errors),
        language: path(&f.language, "language", errors),
        custom,
        delivery,
        event,
        created: events.created.clone(),
        closed: events.closed.clone(),
        reassigned: events.reassigned.clone(),
        team: path(&f.team, "team", errors),
        agent: path(&f.agent, "agent", errors),
    })
}

fn write_back(f: &WriteBackFile, kind: &str, errors: &mut Errors<'_>) -> Option<WriteBackTarget> {
    let zendesk = kind == "zendesk";
    let api = matches!(
        kind,
        "zendesk" | "jira" | "zammad" | "chatwoot" | "freshdesk"
    );
    // Kinds whose API takes a token alone (no e-mail).
    let token_only = matches!(kind, "zammad" | "chatwoot" | "freshdesk");
    let url = match &f.url {
        Some(u) if api && u.starts_with("http://") && !loopback(u) => {
            errors.add("write_back.url", format!("{u:?}: the API token would travel in clear; use https:// (http:// only to this machine)"));
            None
        }
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => Some(u.clone()),
        Some(u) => {
            errors.add("write_back.url", format!("{u:?} is not an http(s) URL"));
            None
        }
        None if api => {
            errors.add("write_back.url", "missing: the helpdesk's URL (https://ACCOUNT.zendesk.com, https://SITE.atlassian.net)");
            None
        }
        None => {
            errors.add("write_back.url", "missing: where the decision webhook goes");
            None
        }
    };
    let keys = [
        ("email", f.email.is_some(), "zendesk, jira"),
        ("api_token", f.api_token.is_some(), HELPDESKS),
        ("agents", !f.agents.is_empty(), HELPDESKS),
        ("priorities", !f.priorities.is_empty(), HELPDESKS),
        ("group_only", f.group_only.is_some(), HELPDESKS),
        ("internal_note", f.internal_note.is_some(), HELPDESKS),
        ("marker_tag", f.marker_tag.is_some(), HELPDESKS),
        (
            "groups",
            !f.groups.is_empty(),
            "zendesk, zammad, chatwoot, freshdesk",
        ),
        (
            "statuses",
            !f.statuses.is_empty(),
            "zendesk, zammad, freshdesk",
        ),
        (
            "per_ticket_per_10_minutes",
            f.per_ticket_per_10_minutes.is_some(),
            "zendesk",
        ),
        ("teams", !f.teams.is_empty(), "jira"),
        ("team_field", f.team_field.is_some(), "jira"),
        ("transitions", !f.transitions.is_empty(), "jira"),
    ];
    for (key, given, kinds) in keys {
        if given && !kinds.split(", ").any(|k| k == kind) {
            let which = if kinds.contains(',') { "kinds" } else { "kind" };
            errors.add(
                &format!("write_back.{key}"),
                format!("applies to {which} {kinds}"),
            );
        }
    }
    let secrets = if api {
        if !f.secrets.is_empty() {
            errors.add(
                "write_back.secrets",
                if token_only {
                    format!("kind {kind} authenticates with api_token")
                } else {
                    format!("kind {kind} authenticates with email and api_token")
                },
            );
        }
        if token_only && f.api_token.is_none() {
            errors.add(
                "write_back.api_token",
                "missing: the integration user's, for the API",
            );
        } else if !token_only && (f.email.is_none() || f.api_token.is_none()) {
            errors.add(
                "write_back",
                "give email and api_token: the integration user's, for the API",
            );
        }
        Vec::new()
    } else {
        secrets(&f.secrets, "write_back.secrets", errors)
    };
    if f.per_ticket_per_10_minutes == Some(0) {
        errors.add(
            "write_back.per_ticket_per_10_minutes",
            "must be at least 1 (leave it out for the default)",
        );
    }
    if f.per_minute == Some(0) {
        errors.add(
            "write_back.per_minute",
            "must be at least 1 (leave it out for no limit)",
        );
    }
    if f.max_attempts == Some(0) {
        errors.add("write_back.max_attempts", "must be at least 1");
    }
    if f.timeout_seconds == Some(0) {
        errors.add("write_back.timeout_seconds", "must be at least 1");
    }
    Some(WriteBackTarget {
        url: url?,
        secrets,
        // Zendesk's documented limits: ticket updates per account per minute, per ticket per
        // ten minutes (lower them to leave room for other integrations).
        per_minute: f.per_minute.or(zendesk.then_some(100)),
        per_ticket: f.per_ticket_per_10_minutes.or(zendesk.then_some(30)),
        max_attempts: f.max_attempts.unwrap_or(MAX_ATTEMPTS),
        timeout: Duration::from_secs(f.timeout_seconds.unwrap_or(TIMEOUT_SECONDS)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<ConnectorFile> {
        #[derive(Deserialize)]
        struct File {
            connectors: Vec<ConnectorFile>,
        }
        toml::from_str::<File>(text).unwrap().connectors
    }

    #[test]
    fn a_generic_connector_compiles_with_its_defaults() {
        let files = parse(
            r#"
[[connectors]]
name = "usedesk"
kind = "generic"
inbound = { auth = "hmac-sha256", secrets = ["0123456789abcdef"] }
fields = { id = "ticket.id", body = "/ticket/text" }
write_back = { url = "https://desk.example/hook", secrets = ["0123456789abcdef"] }
"#,
        );
        let c = compile(&files).unwrap().remove(0);
        assert_eq!(c.inbound.max_body_bytes, MAX_BODY_BYTES);
        assert_eq!(c.write_back.as_ref().unwrap().per_ticket, None);
        assert_eq!(
            c.inbound.replay_window,
            Duration::from_secs(REPLAY_WINDOW_SECONDS)
        );
        assert!(matches!(
            &c.inbound.auth,
            InboundAuth::Hmac { header, encoding: sign::Encoding::Hex, timestamp: None, separator: "." } if header == "x-signature"
        ));
        let w = c.write_back.unwrap();
        assert_eq!(
            (w.max_attempts, w.timeout, w.per_minute),
            (MAX_ATTEMPTS, Duration::from_secs(10), None)
        );
    }

    #[test]
    fn every_error_is_listed_with_its_connector_and_key() {
        let files = parse(
            r#"
[[connectors]]
name = "bad name"
kind = "zendesk2"
inbound = { auth = "bearer", header = "X-Sig", secrets = ["short"] }
fields = { delivery_id = "a..b" }
events = { created = ["new"] }
write_back = { url = "ftp://x", secrets = [], per_minute = 0 }

[[connectors]]
name = "ok"
kind = "generic"
inbound = { secrets = ["0123456789abcdef", "0123456789abcdef", "0123456789abcdef"] }
fields = { event = "type" }
events = { reassigned = ["moved"] }

[[connectors]]
name = "ok"
kind = "generic"
inbound = { auth = "hmac-sha256", encoding = "base32", secrets = ["0123456789abcdef"] }
fields = { id = "id", subject = "s", event = "e", agent = "by" }
events = { created = ["new"], closed = ["new"] }

[[connectors]]
name = "zd"
kind = "zendesk"
inbound = { secrets = ["0123456789abcdef"] }
write_back = { url = "http://acme.zendesk.com", email = "a@b.c", api_token = "t", agents = { ann = "x" } }
events = { reassigned = ["moved"] }
"#,
        );
        let errors = compile(&files).unwrap_err();
        assert_eq!(
            errors,
            [
                "connectors[0] (bad name).name: use 1 to 64 letters, digits, '-' or '_'",
                "connectors[0] (bad name).kind: unknown kind \"zendesk2\"; known: generic, zendesk, jira, zammad, chatwoot, freshdesk",
                "connectors[0] (bad name).inbound.header: applies to auth = \"hmac-sha256\", not \"bearer\"",
                "connectors[0] (bad name).inbound.secrets[0]: too short: use at least 16 characters",
                "connectors[0] (bad name).write_back.url: \"ftp://x\" is not an http(s) URL",
                "connectors[0] (bad name).write_back.secrets: give one secret, or two while rotating",
                "connectors[0] (bad name).write_back.per_minute: must be at least 1 (leave it out for no limit)",
                "connectors[1] (ok).fields.id: missing: the path of the helpdesk's ticket id",
                "connectors[1] (ok).fields: give the path of the body, the subject, or both",
                "connectors[1] (ok).events.created: list the event types that route a ticket (fields.event is set)",
                "connectors[1] (ok).fields.team: missing: events.reassigned is listed, so give the path of the ticket's team now",
                "connectors[1] (ok).inbound.auth: missing: hmac-sha256, intent-router or bearer",
                "connectors[1] (ok).inbound.secrets: give one secret, or two while rotating",
                "connectors[2] (ok).name: another connector has this name",
                "connectors[2] (ok).events.closed: \"new\" is also in events.created; list it once",
                "connectors[2] (ok).fields.agent: applies to events.reassigned, which lists none",
                "connectors[2] (ok).inbound.encoding: unknown encoding \"base32\"; known: hex, base64",
                "connectors[3] (zd).events.reassigned: kind zendesk knows which of its events do what",
                "connectors[3] (zd).write_back.agents.ann: a Zendesk id is a positive number",
                "connectors[3] (zd).write_back.url: \"http://acme.zendesk.com\": the API token would travel in clear; use https:// (http:// only to this machine)",
            ]
        );
    }
}
