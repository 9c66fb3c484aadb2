//! Service settings: a TOML file, environment variables and flags, merged so that flags (and
//! their environment variables) win over the file, and the file over the defaults. Relative
//! paths in the file are relative to the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::assign::AssignmentPolicy;
use crate::batch::{BatchLimits, BatcherConfig};
use crate::cli::ServeArgs;
use crate::connector::{ConnectorFile, Connectors};
use crate::model::bert::LinearMode;
use crate::model::encoder::{
    check_recheck_margin, DeviceChoice, EncoderOptions, DEFAULT_RECHECK_MARGIN,
};
use crate::nats::{NatsFile, NatsSettings};
use crate::registry::{AfterGate, RegistryConfig};
use crate::service::incidents::{AlertTarget, IncidentPolicy};
use crate::service::jobs::Schedule;
use crate::store::{Connect, DatabaseUrl};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Classify and route tickets, close assignments, read the taxonomy.
    Route,
    /// Send agents' corrections.
    Feedback,
    /// Read `/metrics`.
    Metrics,
    /// Rules, intents, models and the console; implies every other scope.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Feedback => "feedback",
            Self::Metrics => "metrics",
            Self::Admin => "admin",
        }
    }
}

/// One configured token (`[[tokens]]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown as the author of changes; never the token itself).
    pub name: String,
    /// Lowercase hex sha256 of the token (`intent-router hash-token` prints it).
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Requests per minute this token may make (default: `limits.rate_per_minute`).
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
}

/// The config file (`--config`), every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Classifier directory.
    pub model: Option<PathBuf>,
    /// The database: an SQLite file path, `sqlite://PATH` or `postgres://…`.
    pub database: Option<String>,
    /// A file holding the PostgreSQL password (instead of one in the URL).
    pub database_password_file: Option<PathBuf>,
    /// Rules file that seeds the database.
    pub rules: Option<PathBuf>,
    /// Threshold edits for the active model (TOML), imported at start.
    pub thresholds: Option<PathBuf>,
    /// Accept requests without tokens (loopback only).
    pub dev_no_auth: Option<bool>,
    /// Inference device.
    pub device: Option<String>,
    /// Dynamic batching.
    #[serde(default)]
    pub batching: BatchingFile,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Retention of stored texts and keys.
    #[serde(default)]
    pub retention: RetentionFile,
    /// Assignment settings.
    #[serde(default)]
    pub assignment: AssignmentFile,
    /// Learning from agents' corrections.
    #[serde(default)]
    pub learning: LearningFile,
    /// Personal data.
    #[serde(default)]
    pub privacy: PrivacyFile,
    /// Several replicas on one database.
    #[serde(default)]
    pub replicas: ReplicasFile,
    /// Team -> agents.
    #[serde(default)]
    pub rosters: BTreeMap<String, Vec<String>>,
    /// API tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Helpdesk connectors.
    #[serde(default)]
    pub connectors: Vec<ConnectorFile>,
    /// The NATS JetStream queue channel.
    pub nats: Option<NatsFile>,
    /// Incident detection and linking.
    #[serde(default)]
    pub incidents: IncidentsFile,
}

/// `[incidents]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsFile {
    /// Watch the ticket stream and link tickets to incidents (default true).
    pub enabled: Option<bool>,
    /// Sensitivity: the false alarms per week one accepts (default 0.5).
    pub false_alarms_per_week: Option<f64>,
    /// Tickets an incident needs to open (default 4).
    pub min_tickets: Option<u32>,
    /// Hours without a new ticket after which an incident stops taking tickets (default 48).
    pub quiet_hours: Option<i64>,
    /// Probability from which a ticket is linked to an incident (default 0.5).
    pub link_probability: Option<f64>,
    /// Cosine to an incident's centroid from which a ticket is linked (default 0: any; the
    /// linking report suggests one).
    pub min_similarity: Option<f32>,
    /// How often the detector reads new decisions (seconds; default 10).
    pub check_every_seconds: Option<u64>,
    /// Where alerts go, if anywhere.
    pub alerts: Option<AlertsFile>,
}

/// `[incidents.alerts]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    /// The receiver's URL (http or https).
    pub url: String,
    /// Signing secrets: one, or two while rotating (the first signs); 16 characters or more.
    pub secrets: Vec<String>,
    /// Attempts before an alert is given up (default 20: one and a half to two hours of
    /// backoff).
    pub max_attempts: Option<u32>,
    /// One request's time limit (seconds; default 10).
    pub timeout_seconds: Option<u64>,
}

impl AlertsFile {
    /// The target; what is wrong with it goes to `problems` (each named by its key).
    fn compile(self, problems: &mut Vec<String>) -> AlertTarget {
        let key = |k: &str| format!("incidents.alerts.{k}");
        match self.url.split_once("://") {
            Some(("http" | "https", rest)) => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                if authority.contains('@') {
                    problems.push(format!(
                        "{}: put no credentials in the URL (they would show in errors and logs); the signature authenticates the alerts",
                        key("url")
                    ));
                }
            }
            _ => problems.push(format!(
                "{}: {:?} is not an http(s) URL",
                key("url"),
                self.url
            )),
        }
        if self.secrets.is_empty() || self.secrets.len() > 2 {
            problems.push(format!(
                "{}: give one secret, or two while rotating ({} given)",
                key("secrets"),
                self.secrets.len()
            ));
        }
        for (i, s) in self.secrets.iter().enumerate() {
            if s.chars().count() < 16 {
                problems.push(format!(
                    "{}[{i}]: too short: use at least 16 characters",
                    key("secrets")
                ));
            }
        }
        if self.max_attempts == Some(0) {
            problems.push(format!("{}: must be at least 1", key("max_attempts")));
        }
        if self.timeout_seconds == Some(0) {
            problems.push(format!("{}: must be at least 1", key("timeout_seconds")));
        }
        AlertTarget {
            url: self.url,
            secrets: self
                .secrets
                .into_iter()
                .map(crate::connector::Secret)
                .collect(),
            max_attempts: self.max_attempts.unwrap_or(20),
            timeout: Duration::from_secs(self.timeout_seconds.unwrap_or(10)),
        }
    }
}

/// `[batching]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingFile {
    /// Most tickets per encoder batch.
    pub max_batch: Option<usize>,
    /// Most padded tokens per batch.
    pub max_tokens: Option<usize>,
    /// How long the first ticket of a batch waits for company.
    pub max_wait_ms: Option<u64>,
    /// Tickets that may wait; beyond, 429.
    pub queue_capacity: Option<usize>,
    /// Near ties re-checked with refined int8 arithmetic under this closest call.
    pub recheck_margin: Option<f32>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest request body.
    pub max_body_bytes: Option<usize>,
    /// Most tickets in one batch request.
    pub max_batch_tickets: Option<usize>,
    /// Longer subject + body text is truncated (the response says so).
    pub max_ticket_chars: Option<usize>,
    /// A request that takes longer gets 503.
    pub request_timeout_ms: Option<u64>,
    /// Requests per minute per token (tokens may set their own); 0 or absent: unlimited.
    pub rate_per_minute: Option<u32>,
}

/// `[retention]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Days ticket texts are kept for simulation (0: not stored at all).
    pub ticket_text_days: Option<u64>,
    /// Hours an idempotency key is remembered.
    pub idempotency_hours: Option<u64>,
}

/// `[assignment]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentFile {
    /// Open assignments close by themselves after this many hours (0: never).
    pub close_after_hours: Option<u64>,
}

/// `[replicas]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicasFile {
    /// How often a replica checks for changes made elsewhere, besides the notifications
    /// PostgreSQL sends (seconds; default 2).
    pub check_every_seconds: Option<u64>,
    /// How long a replica's claim on a connector event or write-back holds before another
    /// replica may take it over (seconds; default 60).
    pub claim_lease_seconds: Option<u64>,
}

/// `[privacy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyFile {
    /// Replace e-mails, phones, card numbers, passport, INN and SNILS numbers in stored ticket
    /// texts by placeholders (default true).
    pub redact_stored_text: Option<bool>,
}

/// `[learning]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningFile {
    /// Curated base training data.
    pub base_data: Option<PathBuf>,
    /// Curated dev split (the gate).
    pub dev_data: Option<PathBuf>,
    /// Directory of model versions.
    pub registry: Option<PathBuf>,
    /// Embedding cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Largest allowed drop of dev macro-F1 and accuracy.
    pub tolerance: Option<f64>,
    /// How many base examples one correction weighs.
    pub correction_weight: Option<usize>,
    /// Head training epochs.
    pub epochs: Option<usize>,
    /// Retrain after this many new intent corrections (0: never by count).
    pub retrain_after: Option<i64>,
    /// Also retrain every this many hours when there are new corrections (0: never by time).
    pub retrain_every_hours: Option<u64>,
    /// What a candidate that passes the gate becomes: `active` or `shadow`.
    pub on_pass: Option<String>,
}

/// Learning settings, resolved.
#[derive(Debug, Clone)]
pub struct Learning {
    /// Data, registry, cache, gate tolerance, training.
    pub learn: crate::learn::LearnSettings,
    /// Retrain after this many new corrections (0: off).
    pub retrain_after: i64,
    /// Retrain on this period when there are new corrections (`None`: off).
    pub retrain_every: Option<Duration>,
    /// What a passing candidate becomes (`learning.on_pass`: activate or shadow).
    pub on_pass: AfterGate,
}

/// Request limits, resolved.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most tickets in one batch request.
    pub max_batch_tickets: usize,
    /// Longer ticket text is truncated.
    pub max_ticket_chars: usize,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// Default requests per minute per token (`None`: unlimited).
    pub rate_per_minute: Option<u32>,
}

/// Resolved settings of `serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Classifier directory (`None`: the default search order).
    pub model: Option<PathBuf>,
    /// The database.
    pub database: DatabaseUrl,
    /// How to connect to it beyond the URL (the password from the environment or a file).
    pub connect: Connect,
    /// Rules file that seeds the database (`None`: built-in default rules).
    pub rules: Option<PathBuf>,
    /// Threshold edits for the active model, imported at start.
    pub thresholds: Option<PathBuf>,
    /// Accept requests without tokens.
    pub dev_no_auth: bool,
    /// Inference device.
    pub device: String,
    /// Keep linears quantised.
    pub quantized_linears: bool,
    /// Near ties re-checked with refined int8 arithmetic under this closest call.
    pub recheck_margin: f32,
    /// Batching worker settings.
    pub batcher: BatcherConfig,
    /// Request limits.
    pub limits: Limits,
    /// How long ticket texts are kept (`ZERO`: never stored).
    pub text_retention: Duration,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl: Duration,
    /// Rosters and assignment expiry.
    pub assignment: AssignmentPolicy,
    /// API tokens.
    pub tokens: Vec<TokenConfig>,
    /// Helpdesk connectors.
    pub connectors: Connectors,
    /// The NATS queue channel (`None`: off).
    pub nats: Option<NatsSettings>,
    /// Learning from corrections.
    pub learning: Learning,
    /// Redact personal data in ticket texts before storing them.
    pub redact_stored_text: bool,
    /// The config file, re-read for tokens on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// How often to check for changes made elsewhere (other replicas, the CLI) when no
    /// notification came.
    pub follow_every: Duration,
    /// How long a claim on a connector event or write-back holds (a replica that dies with
    /// one leaves it to another after this).
    pub claim_lease: Duration,
    /// Incident detection and linking.
    pub incidents: IncidentPolicy,
}

const HOUR: u64 = 3600;

/// With PostgreSQL there is no database file to keep the registry beside.
const SHARED_REGISTRY: &str = "learning.registry: with a PostgreSQL database, set the model \
     registry to a directory that every replica mounts (models retrained on one replica are \
     served from it by all)";

/// The environment variable that may hold the PostgreSQL password.
pub const PASSWORD_ENV: &str = "INTENT_ROUTER_DATABASE_PASSWORD";

/// The PostgreSQL password: from `database_password_file` (first line) or the environment.
pub fn database_password(file: Option<PathBuf>) -> Result<Option<String>, String> {
    match file {
        Some(path) => std::fs::read_to_string(&path)
            .map(|text| Some(text.lines().next().unwrap_or_default().to_string()))
            .map_err(|e| format!("database_password_file: {}: {e}", path.display())),
        None => Ok(std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())),
    }
}

impl Settings {
    /// How the service loads encoders.
    pub fn encoder_options(&self) -> Result<EncoderOptions, String> {
        Ok(EncoderOptions {
            max_tokens: None,
            linear: LinearMode::for_inference(self.quantized_linears),
            device: DeviceChoice::parse(&self.device)?,
            recheck_margin: self.recheck_margin,
        })
    }

    /// The model registry's settings.
    pub fn registry(&self) -> Result<RegistryConfig, String> {
        Ok(RegistryConfig {
            learn: self.learning.learn.clone(),
            after_gate: self.learning.on_pass,
            encoder: self.encoder_options()?,
            batching: self.batcher,
        })
    }

    /// When the service retrains by itself.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            retrain_after: self.learning.retrain_after,
            retrain_every: self.learning.retrain_every,
        }
    }

    /// Reads the config file (if any), applies flags over it and refuses unsafe settings.
    pub fn resolve(args: &ServeArgs) -> Result<Self, String> {
        let settings = Self::load(args)?;
        settings.check()?;
        Ok(settings)
    }

    /// Reads the config file (if any) and applies flags over it (for offline commands, which
    /// serve nothing and so need no tokens).
    pub fn load(args: &ServeArgs) -> Result<Self, String> {
        let (file, base) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let file: FileConfig = toml::from_str(&text).map_err(|e| {
                    let line = e.span().map_or(1, |s| {
                        text[..s.start.min(text.len())].matches('\n').count() + 1
                    });
                    format!("{}:{line}: {}", path.display(), e.message())
                })?;
                (
                    file,
                    path.parent().map(Path::to_path_buf).unwrap_or_default(),
                )
            }
            None => (FileConfig::default(), PathBuf::new()),
        };
        let rel = |p: Option<PathBuf>| p.map(|p| if p.is_absolute() { p } else { base.join(p) });
        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            format!("listen: \"{listen_text}\" is not an address such as 127.0.0.1:8080 or 0.0.0.0:8080")
        })?;
        let dev_no_auth = args.dev_no_auth || file.dev_no_auth.unwrap_or(false);
        let b = &file.batching;
        let defaults = BatcherConfig::default();
        let batcher = BatcherConfig {
            limits: BatchLimits {
                max_batch: args
                    .max_batch
                    .or(b.max_batch)
                    .unwrap_or(defaults.limits.max_batch)
                    .max(1),
                max_tokens: args
                    .max_batch_tokens
                    .or(b.max_tokens)
                    .unwrap_or(defaults.limits.max_tokens)
                    .max(1),
            },
            max_wait: args
                .max_wait_ms
                .or(b.max_wait_ms)
                .map_or(defaults.max_wait, Duration::from_millis),
            queue_capacity: args
                .queue_capacity
                .or(b.queue_capacity)
                .unwrap_or(defaults.queue_capacity)
                .max(1),
        };
        let l = &file.limits;
        let limits = Limits {
            max_body_bytes: args.max_body_bytes.or(l.max_body_bytes).unwrap_or(1 << 20),
            max_batch_tickets: args
                .max_batch_tickets
                .or(l.max_batch_tickets)
                .unwrap_or(256)
                .max(1),
            max_ticket_chars: args
                .max_ticket_chars
                .or(l.max_ticket_chars)
                .unwrap_or(20_000)
                .max(1),
            request_timeout: Duration::from_millis(
                args.request_timeout_ms
                    .or(l.request_timeout_ms)
                    .unwrap_or(30_000)
                    .max(1),
            ),
            rate_per_minute: args
                .rate_per_minute
                .or(l.rate_per_minute)
                .filter(|r| *r > 0),
        };
        let days = args
            .retention_days
            .or(file.retention.ticket_text_days)
            .unwrap_or(30);
        let close_after = file.assignment.close_after_hours.unwrap_or(72);
        let database = match (&args.database, &file.database) {
            (Some(url), _) => DatabaseUrl::parse(url, None),
            (None, Some(url)) => DatabaseUrl::parse(url, Some(&base)),
            (None, None) => Ok(DatabaseUrl::Sqlite("intent-router.db".into())),
        }
        .map_err(|e| e.to_string())?;
        let connect = Connect {
            password: database_password(rel(file.database_password_file))?,
        };
        let lf = file.learning;
        let on_pass = match lf.on_pass.as_deref() {
            None | Some("activate") => AfterGate::Activate,
            Some("shadow") => AfterGate::Shadow,
            Some(other) => {
                return Err(format!(
                    "learning.on_pass: \"{other}\" is not one of activate, shadow"
                ))
            }
        };
        let learning = Learning {
            learn: crate::learn::LearnSettings {
                base_data: rel(lf.base_data)
                    .unwrap_or_else(|| PathBuf::from("training-data/train.jsonl")),
                dev_data: rel(lf.dev_data)
                    .unwrap_or_else(|| PathBuf::from("training-data/dev.jsonl")),
                registry: match (rel(lf.registry), database.sqlite_path()) {
                    (Some(dir), _) => dir,
                    (None, Some(file)) => crate::learn::default_registry(file),
                    (None, None) => return Err(SHARED_REGISTRY.into()),
                },
                cache_dir: rel(lf.cache_dir).or_else(crate::train::cache::default_cache_dir),
                tolerance: lf.tolerance.unwrap_or(0.01),
                correction_weight: lf.correction_weight.unwrap_or(5),
                head: crate::model::head::HeadTraining {
                    epochs: lf.epochs.unwrap_or(100),
                    ..Default::default()
                },
            },
            retrain_after: lf.retrain_after.unwrap_or(50),
            retrain_every: lf
                .retrain_every_hours
                .filter(|h| *h > 0)
                .map(|h| Duration::from_secs(h * HOUR)),
            on_pass,
        };
        let settings = Self {
            listen,
            model: args.model.clone().or(rel(file.model)),
            follow_every: Duration::from_secs(
                file.replicas.check_every_seconds.unwrap_or(2).max(1),
            ),
            claim_lease: Duration::from_secs(
                file.replicas.claim_lease_seconds.unwrap_or(60).max(1),
            ),
            database,
            connect,
            rules: args.rules.clone().or(rel(file.rules)),
            thresholds: args.thresholds.clone().or(rel(file.thresholds)),
            dev_no_auth,
            device: args
                .device
                .clone()
                .or(file.device)
                .unwrap_or_else(|| "cpu".into()),
            quantized_linears: args.quantized_linears,
            recheck_margin: match args.recheck_margin.or(file.batching.recheck_margin) {
                Some(m) => {
                    check_recheck_margin(m).map_err(|e| format!("batching.recheck_margin: {e}"))?
                }
                None => DEFAULT_RECHECK_MARGIN,
            },
            batcher,
            limits,
            text_retention: Duration::from_secs(days * 24 * HOUR),
            idempotency_ttl: Duration::from_secs(
                file.retention.idempotency_hours.unwrap_or(24) * HOUR,
            ),
            assignment: AssignmentPolicy {
                rosters: file.rosters,
                close_after: (close_after > 0).then(|| Duration::from_secs(close_after * HOUR)),
            },
            connectors: compile_connectors(&file.connectors)?,
            nats: match file.nats {
                None => None,
                Some(n) => Some(n.compile(&base).map_err(|errors| {
                    format!(
                        "{} error(s) in [nats]:\n  {}",
                        errors.len(),
                        errors.join("\n  ")
                    )
                })?),
            },
            tokens: file.tokens,
            learning,
            incidents: file.incidents.compile()?,
            redact_stored_text: file.privacy.redact_stored_text.unwrap_or(true),
            config_path: args.config.clone(),
        };
        Ok(settings)
    }

    /// Refuses unsafe combinations: no tokens off dev mode, dev mode off loopback.
    fn check(&self) -> Result<(), String> {
        if self.dev_no_auth && !self.listen.ip().is_loopback() {
            return Err(format!(
                "--dev-no-auth accepts requests without tokens, so it only listens on loopback (127.0.0.1 or ::1), not {}",
                self.listen
            ));
        }
        if !self.dev_no_auth && self.tokens.is_empty() {
            return Err("no API tokens configured: add [[tokens]] to the config file (see `intent-router hash-token`), or run with --dev-no-auth on 127.0.0.1".into());
        }
        for (team, agents) in &self.assignment.rosters {
            if agents.is_empty() {
                return Err(format!("rosters.{team}: lists no agents"));
            }
        }
        Ok(())
    }
}

impl IncidentsFile {
    /// The policy, with every value checked.
    fn compile(self) -> Result<IncidentPolicy, String> {
        let defaults = IncidentPolicy::default();
        let mut detector = defaults.detector.clone();
        if let Some(f) = self.false_alarms_per_week {
            detector.false_alarms_per_week = f;
        }
        if let Some(n) = self.min_tickets {
            detector.min_tickets = n;
        }
        let mut problems: Vec<String> = detector
            .problems()
            .into_iter()
            .map(|p| format!("incidents.{p}"))
            .collect();
        let quiet_hours = self.quiet_hours.unwrap_or(defaults.quiet_hours);
        if !(1..=24 * 365).contains(&quiet_hours) {
            problems.push("incidents.quiet_hours: must be 1 to 8760 (a year)".into());
        }
        let link_probability = self.link_probability.unwrap_or(defaults.link_probability);
        if !(link_probability > 0.0 && link_probability < 1.0) {
            problems.push("incidents.link_probability: must be between 0 and 1".into());
        }
        let alerts = self.alerts.map(|a| a.compile(&mut problems));
        let min_similarity = self.min_similarity.unwrap_or(defaults.min_similarity);
        if !(0.0..1.0).contains(&min_similarity) {
            problems.push("incidents.min_similarity: must be 0 or more, and below 1".into());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(IncidentPolicy {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            detector,
            quiet_hours,
            link_probability,
            min_similarity,
            check_every: self
                .check_every_seconds
                .map_or(defaults.check_every, |s| Duration::from_secs(s.max(1))),
            history: defaults.history,
            alerts,
        })
    }
}

/// The `[[tokens]]` and `[[connectors]]` of a config file (for rotation on SIGHUP).
pub fn read_reloadable(path: &Path) -> Result<(Vec<TokenConfig>, Connectors), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    let connectors =
        compile_connectors(&file.connectors).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((file.tokens, connectors))
}

/// `[[connectors]]` compiled, or every error on its own line.
fn compile_connectors(files: &[ConnectorFile]) -> Result<Connectors, String> {
    Connectors::compile(files).map_err(|errors| {
        format!(
            "{} error(s) in [[connectors]]:\n  {}",
            errors.len(),
            errors.join("\n  ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ServeArgs {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: ServeArgs,
        }
        let mut argv = vec!["t"];
        argv.extend_from_slice(extra);
        T::parse_from(argv).a
    }

    #[test]
    fn flags_win_over_the_file_and_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("router.toml");
        std::fs::write(
            &cfg,
            "listen = \"127.0.0.1:9000\"\ndatabase = \"data/r.db\"\ndev_no_auth = true\n\
             [batching]\nmax_batch = 8\nmax_wait_ms = 2\nrecheck_margin = 0.1\n\
             [rosters]\nbilling = [\"ann\", \"bob\"]\n",
        )
        .unwrap();
        let c = cfg.display().to_string();
        let s = Settings::resolve(&args(&["--config", &c, "--max-batch", "4"])).unwrap();
        assert_eq!(s.recheck_margin, 0.1);
        assert_eq!(s.encoder_options().unwrap().recheck_margin, 0.1);
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(
            s.database,
            DatabaseUrl::Sqlite(dir.path().join("data/r.db"))
        );
        assert_eq!(s.batcher.limits.max_batch, 4, "the flag wins");
        assert_eq!(s.batcher.max_wait, Duration::from_millis(2));
        assert_eq!(s.assignment.roster("billing"), ["ann", "bob"]);
    }

    #[test]
    fn a_postgresql_database_takes_its_password_from_a_file_and_needs_a_shared_registry() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("router.toml");
        std::fs::write(dir.path().join("pw"), "s3cret\nignored\n").unwrap();
        let write = |more: &str| {
            std::fs::write(
                &cfg,
                format!(
                    "dev_no_auth = true\ndatabase = \"postgres://router@db/ir\"\n\
                     database_password_file = \"pw\"\n{more}"
                ),
            )
            .unwrap()
        };
        let c = cfg.display().to_string();
        write("");
        let e = Settings::resolve(&args(&["--config", &c])).unwrap_err();
        assert!(
            e.starts_with("learning.registry: with a PostgreSQL database"),
            "{e}"
        );
        write("[learning]\nregistry = \"/srv/models\"\n[replicas]\ncheck_every_seconds = 60\n");
        let s = Settings::resolve(&args(&["--config", &c])).unwrap();
        assert_eq!(
            s.database,
            DatabaseUrl::Postgres("postgres://router@db/ir".into())
        );
        assert_eq!(
            s.connect.password.as_deref(),
            Some("s3cret"),
            "the file's first line"
        );
        assert_eq!(s.follow_every, Duration::from_secs(60));
        std::fs::remove_file(dir.path().join("pw")).unwrap();
        let e = Settings::resolve(&args(&["--config", &c])).unwrap_err();
        assert!(e.starts_with("database_password_file: "), "{e}");
        let e =
            Settings::resolve(&args(&["--dev-no-auth", "--database", "redis://h/0"])).unwrap_err();
        assert!(e.contains("unsupported scheme \"redis\""), "{e}");
    }

    #[test]
    fn unsafe_or_wrong_settings_are_refused_with_reasons() {
        let e = Settings::resolve(&args(&[])).unwrap_err();
        assert!(e.starts_with("no API tokens configured"), "{e}");
        let e =
            Settings::resolve(&args(&["--dev-no-auth", "--listen", "0.0.0.0:8080"])).unwrap_err();
        assert!(e.contains("only listens on loopback"), "{e}");
        let e = Settings::resolve(&args(&["--dev-no-auth", "--listen", "localhost"])).unwrap_err();
        assert!(
            e.starts_with("listen: \"localhost\" is not an address"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, "dev_no_auth = true\n\n[batching]\nmax_wiat_ms = 3\n").unwrap();
        let e = Settings::resolve(&args(&["--config", &cfg.display().to_string()])).unwrap_err();
        assert!(e.contains("bad.toml:4: unknown field `max_wiat_ms`"), "{e}");
        std::fs::write(&cfg, "dev_no_auth = true\n[batching]\nrecheck_margin = 2\n").unwrap();
        let e = Settings::resolve(&args(&["--config", &cfg.display().to_string()])).unwrap_err();
        assert_eq!(
            e,
            "batching.recheck_margin: the re-check margin is a probability shift from 0 (never \
             re-check) to 1 (always), got 2"
        );
        std::fs::write(
            &cfg,
            "dev_no_auth = true\n\n[incidents]\nfalse_alarms_per_week = 0\nlink_probability = 1.5\nmin_similarity = 1.0\n\n[incidents.alerts]\nurl = \"ops.example\"\nsecrets = [\"short\"]\n",
        )
        .unwrap();
        let e = Settings::resolve(&args(&["--config", &cfg.display().to_string()])).unwrap_err();
        assert_eq!(
            e,
            "incidents.false_alarms_per_week: must be a number above 0; incidents.link_probability: must be between 0 and 1; incidents.alerts.url: \"ops.example\" is not an http(s) URL; incidents.alerts.secrets[0]: too short: use at least 16 characters; incidents.min_similarity: must be 0 or more, and below 1"
        );
    }
}
