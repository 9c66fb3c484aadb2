//! `[nats]` of the config file: the server, the stream and subjects, delivery limits,
//! credentials and TLS; compiled with every error listed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[nats]` as written in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsFile {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`).
    pub url: Option<String>,
    /// The JetStream stream holding the tickets.
    pub stream: Option<String>,
    /// The subject tickets are published on (the consumer's filter; wildcards allowed).
    pub subject: Option<String>,
    /// The durable pull consumer every replica shares (default `intent-router`).
    pub consumer: Option<String>,
    /// Where decisions are published (a stream must capture it).
    pub decisions_subject: Option<String>,
    /// Where messages that cannot be routed go (a stream must capture it).
    pub dead_letter_subject: Option<String>,
    /// Create the stream (file storage, the three subjects) when it does not exist.
    pub create_stream: Option<bool>,
    /// Attempts before a message goes to the dead-letter subject (default 5).
    pub max_deliver: Option<u32>,
    /// Seconds the server waits for an acknowledgement before redelivering (default 30).
    pub ack_wait_seconds: Option<u64>,
    /// Messages one replica handles at once (default 64).
    pub max_in_flight: Option<usize>,
    /// A NATS credentials file (`.creds`: user JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// A file holding an NKey seed (`SU…`).
    pub nkey_seed_file: Option<PathBuf>,
    /// User name (with `password_file`).
    pub user: Option<String>,
    /// A file holding the user's password (first line).
    pub password_file: Option<PathBuf>,
    /// A file holding an authentication token (first line).
    pub token_file: Option<PathBuf>,
    /// Require TLS even when the URL says `nats://` (default: when certificates are set).
    pub tls_required: Option<bool>,
    /// PEM file of the certificate authorities that signed the server's certificate.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS; with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM key of the client certificate.
    pub tls_key_file: Option<PathBuf>,
}

/// How we authenticate to the NATS server.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    None,
    /// A credentials file (read when connecting).
    Credentials(PathBuf),
    /// An NKey seed.
    NKey(String),
    /// User and password.
    UserPassword(String, String),
    /// A token.
    Token(String),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs and error messages.
        f.write_str(match self {
            Self::None => "none",
            Self::Credentials(_) => "credentials file",
            Self::NKey(_) => "nkey",
            Self::UserPassword(..) => "user and password",
            Self::Token(_) => "token",
        })
    }
}

/// TLS to the NATS server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Refuse a plain connection.
    pub required: bool,
    /// Extra certificate authorities.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// `[nats]`, resolved.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server URL(s).
    pub url: String,
    /// The stream of tickets.
    pub stream: String,
    /// The tickets' subject (filter).
    pub subject: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// Where decisions go.
    pub decisions_subject: String,
    /// Where unroutable messages go.
    pub dead_letter_subject: String,
    /// Create the stream if missing.
    pub create_stream: bool,
    /// Attempts before the dead-letter subject.
    pub max_deliver: u32,
    /// The server's redelivery timer.
    pub ack_wait: Duration,
    /// Messages handled at once by this replica.
    pub max_in_flight: usize,
    /// Credentials.
    pub auth: NatsAuth,
    /// TLS.
    pub tls: NatsTls,
}

impl NatsFile {
    /// Resolves the section; relative paths are taken from `base` (the config file's
    /// directory); secrets in files are read now. Every error is listed.
    pub fn compile(self, base: &Path) -> Result<NatsSettings, Vec<String>> {
        let mut errors = Vec::new();
        let mut required = |key: &str, v: Option<String>| {
            v.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
                errors.push(format!("nats.{key}: required"));
                String::new()
            })
        };
        let url = required("url", self.url);
        let stream = required("stream", self.stream);
        let subject = required("subject", self.subject);
        let decisions_subject = required("decisions_subject", self.decisions_subject);
        let dead_letter_subject = required("dead_letter_subject", self.dead_letter_subject);
        for server in url.split(',').filter(|_| !url.is_empty()) {
            if server.trim().parse::<async_nats::ServerAddr>().is_err() {
                errors.push(format!(
                    "nats.url: \"{}\" is not a server address such as nats://127.0.0.1:4222",
                    server.trim()
                ));
            }
        }
        let consumer = self.consumer.unwrap_or_else(|| "intent-router".into());
        if consumer.trim().is_empty() {
            errors.push("nats.consumer: empty (leave it out for \"intent-router\")".into());
        }
        for (key, name) in [("stream", &stream), ("consumer", &consumer)] {
            if !name.is_empty() && !is_name(name) {
                errors.push(format!(
                    "nats.{key}: \"{name}\" may not contain spaces, `.`, `*`, `>` or path separators"
                ));
            }
        }
        if !subject.is_empty() && !is_subject(&subject, true) {
            errors.push(format!(
                "nats.subject: \"{subject}\" is not a NATS subject (tokens separated by `.`, no spaces)"
            ));
        }
        for (key, s) in [
            ("decisions_subject", &decisions_subject),
            ("dead_letter_subject", &dead_letter_subject),
        ] {
            if s.is_empty() {
                continue;
            }
            if !is_subject(s, false) {
                errors.push(format!(
                    "nats.{key}: \"{s}\" is not a subject one can publish to (tokens separated by `.`, no spaces or wildcards)"
                ));
            } else if matches_filter(&subject, s) {
                errors.push(format!(
                    "nats.{key}: \"{s}\" is also matched by nats.subject \"{subject}\": our own messages would come back as tickets"
                ));
            }
        }
        if !dead_letter_subject.is_empty() && dead_letter_subject == decisions_subject {
            errors.push("nats.dead_letter_subject: must differ from nats.decisions_subject".into());
        }
        let max_deliver = self.max_deliver.unwrap_or(5);
        if max_deliver == 0 {
            errors.push("nats.max_deliver: must be at least 1".into());
        }
        let ack_wait = self.ack_wait_seconds.unwrap_or(30);
        if ack_wait == 0 {
            errors.push("nats.ack_wait_seconds: must be at least 1".into());
        }
        let max_in_flight = self.max_in_flight.unwrap_or(64);
        if max_in_flight == 0 {
            errors.push("nats.max_in_flight: must be at least 1".into());
        }
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let secret = |key: &str, p: PathBuf, errors: &mut Vec<String>| {
            let path = rel(p);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let first = text.lines().next().unwrap_or_default().trim().to_string();
                    if first.is_empty() {
                        errors.push(format!("nats.{key}: {} is empty", path.display()));
                    }
                    first
                }
                Err(e) => {
                    errors.push(format!("nats.{key}: {}: {e}", path.display()));
                    String::new()
                }
            }
        };
        let mut ways = Vec::new();
        if let Some(p) = self.credentials_file {
            let path = rel(p);
            if !path.is_file() {
                errors.push(format!(
                    "nats.credentials_file: {} is not a readable file",
                    path.display()
                ));
            }
            ways.push(("credentials_file", NatsAuth::Credentials(path)));
        }
        if let Some(p) = self.nkey_seed_file {
            let seed = secret("nkey_seed_file", p, &mut errors);
            ways.push(("nkey_seed_file", NatsAuth::NKey(seed)));
        }
        match (self.user, self.password_file) {
            (Some(user), _) if user.trim().is_empty() => errors.push("nats.user: empty".into()),
            (Some(user), Some(p)) => {
                let password = secret("password_file", p, &mut errors);
                ways.push(("user", NatsAuth::UserPassword(user, password)));
            }
            (Some(_), None) => errors.push("nats.user: needs nats.password_file".into()),
            (None, Some(_)) => errors.push("nats.password_file: needs nats.user".into()),
            (None, None) => {}
        }
        if let Some(p) = self.token_file {
            let token = secret("token_file", p, &mut errors);
            ways.push(("token_file", NatsAuth::Token(token)));
        }
        if ways.len() > 1 {
            let keys: Vec<_> = ways.iter().map(|(k, _)| format!("nats.{k}")).collect();
            errors.push(format!(
                "{}: choose one way to authenticate",
                keys.join(", ")
            ));
        }
        let auth = ways.pop().map_or(NatsAuth::None, |(_, a)| a);
        let file = |key: &str, p: PathBuf, errors: &mut Vec<String>| {
            let path = rel(p);
            if !path.is_file() {
                errors.push(format!(
                    "nats.{key}: {} is not a readable file",
                    path.display()
                ));
            }
            path
        };
        let client = match (self.tls_cert_file, self.tls_key_file) {
            (Some(c), Some(k)) => Some((
                file("tls_cert_file", c, &mut errors),
                file("tls_key_file", k, &mut errors),
            )),
            (None, None) => None,
            (Some(_), None) => {
                errors.push("nats.tls_cert_file: needs nats.tls_key_file".into());
                None
            }
            (None, Some(_)) => {
                errors.push("nats.tls_key_file: needs nats.tls_cert_file".into());
                None
            }
        };
        // Certificates configured mean TLS is meant: never fall back to a plain connection
        // (where a client certificate would go unused and credentials travel in clear).
        let implied = self.tls_ca_file.is_some() || client.is_some();
        let tls = NatsTls {
            required: self.tls_required.unwrap_or(implied),
            ca_file: self
                .tls_ca_file
                .map(|p| file("tls_ca_file", p, &mut errors)),
            client,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NatsSettings {
            url,
            stream,
            subject,
            consumer,
            decisions_subject,
            dead_letter_subject,
            create_stream: self.create_stream.unwrap_or(false),
            max_deliver,
            ack_wait: Duration::from_secs(ack_wait),
            max_in_flight,
            auth,
            tls,
        })
    }
}

/// A stream or consumer name: no whitespace, `.`, `*`, `>` or path separators.
fn is_name(name: &str) -> bool {
    !name
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

/// A subject: non-empty tokens separated by `.`, no whitespace; wildcards (`*` as a token,
/// `>` as the last) only in a filter.
fn is_subject(subject: &str, filter: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.chars().any(char::is_whitespace)
            && match *t {
                "*" => filter,
                ">" => filter && i + 1 == tokens.len(),
                t => !t.contains(['*', '>']),
            }
    })
}

/// Whether the filter (which may hold wildcards) matches a literal subject.
fn matches_filter(filter: &str, subject: &str) -> bool {
    let (f, s): (Vec<&str>, Vec<&str>) =
        (filter.split('.').collect(), subject.split('.').collect());
    for (i, t) in f.iter().enumerate() {
        match *t {
            ">" => return s.len() > i,
            "*" if i < s.len() => {}
            t if s.get(i) == Some(&t) => {}
            _ => return false,
        }
    }
    f.len() == s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> NatsFile {
        NatsFile {
            url: Some("nats://127.0.0.1:4222".into()),
            stream: Some("TICKETS".into()),
            subject: Some("helpdesk.tickets.*".into()),
            decisions_subject: Some("helpdesk.decisions".into()),
            dead_letter_subject: Some("helpdesk.dead".into()),
            ..NatsFile::default()
        }
    }

    #[test]
    fn a_minimal_section_gets_the_documented_defaults() {
        let s = minimal().compile(Path::new("/etc")).unwrap();
        assert_eq!(s.consumer, "intent-router");
        assert_eq!(s.max_deliver, 5);
        assert_eq!(s.ack_wait, Duration::from_secs(30));
        assert_eq!(s.max_in_flight, 64);
        assert_eq!(s.auth, NatsAuth::None);
        assert!(!s.create_stream && !s.tls.required);
    }

    #[test]
    fn secrets_are_read_from_files_next_to_the_config() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pw"), "s3cret\n").unwrap();
        let f = NatsFile {
            user: Some("router".into()),
            password_file: Some("pw".into()),
            ..minimal()
        };
        let s = f.compile(d.path()).unwrap();
        assert_eq!(
            s.auth,
            NatsAuth::UserPassword("router".into(), "s3cret".into())
        );
        assert_eq!(format!("{:?}", s.auth), "user and password");
    }

    #[test]
    fn every_mistake_is_listed_with_its_key() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("token"), "\n").unwrap();
        let f = NatsFile {
            url: None,
            stream: Some("TICK.ETS".into()),
            subject: Some("helpdesk.>".into()),
            decisions_subject: Some("helpdesk.decisions".into()),
            dead_letter_subject: Some("dead.*".into()),
            max_deliver: Some(0),
            token_file: Some("token".into()),
            user: Some("router".into()),
            tls_cert_file: Some("missing.pem".into()),
            ..NatsFile::default()
        };
        let errors = f.compile(d.path()).unwrap_err();
        let text = errors.join("\n");
        for expected in [
            "nats.url: required",
            "nats.stream: \"TICK.ETS\" may not contain",
            "nats.decisions_subject: \"helpdesk.decisions\" is also matched by nats.subject",
            "nats.dead_letter_subject: \"dead.*\" is not a subject one can publish to",
            "nats.max_deliver: must be at least 1",
            "nats.token_file:",
            "is empty",
            "nats.user: needs nats.password_file",
            "nats.tls_cert_file: needs nats.tls_key_file",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn certificates_mean_tls_and_names_may_not_be_empty() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let f = NatsFile {
            tls_ca_file: Some("ca.pem".into()),
            ..minimal()
        };
        let s = f.compile(d.path()).unwrap();
        assert!(s.tls.required, "no plain fallback once a CA is configured");
        let f = NatsFile {
            consumer: Some(" ".into()),
            user: Some("".into()),
            password_file: Some("pw".into()),
            ..minimal()
        };
        let text = f.compile(d.path()).unwrap_err().join("\n");
        assert!(text.contains("nats.consumer: empty"), "{text}");
        assert!(text.contains("nats.user: empty"), "{text}");
    }

    #[test]
    fn subjects_and_filters() {
        assert!(is_subject("a.b.c", false));
        assert!(!is_subject("a..b", false));
        assert!(!is_subject("a.*", false));
        assert!(is_subject("a.*.>", true));
        assert!(!is_subject("a.>.b", true));
        assert!(!is_subject("a b", true));
        assert!(matches_filter("a.*", "a.b"));
        assert!(!matches_filter("a.*", "a.b.c"));
        assert!(matches_filter("a.>", "a.b.c"));
        assert!(!matches_filter("a.>", "a"));
        assert!(matches_filter("a.b", "a.b"));
        assert!(!matches_filter("a.b", "a.c"));
    }
}
