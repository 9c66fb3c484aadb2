//! The queue channel: tickets published on a NATS JetStream stream, taken through a durable
//! pull consumer that every replica shares, routed by the one route service (idempotent per
//! message), their decisions published to another subject with `Nats-Msg-Id` = the decision
//! id. A message is acknowledged only after its decision is committed and published, so a
//! crash at any point makes the server deliver it again, and the replay gives the same
//! decision under the same message id (which the decisions' stream deduplicates). A message
//! that can never be routed, or that failed `max_deliver` times, goes to the dead-letter
//! subject with the reason.
//!
//! Sources: the JetStream consumer and acknowledgement model (docs.nats.io, "Consumers",
//! "Consumer Details": AckExplicit, AckWait, MaxDeliver, Nak with a delay, `$JS.ACK` reply
//! subjects carrying the delivery count) and message deduplication (`Nats-Msg-Id` within the
//! stream's `duplicate_window`); tested against nats-server 2.9.10 (Debian bookworm).

pub mod config;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind, Context};
use async_nats::{ConnectOptions, HeaderMap};
use futures_util::StreamExt;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};
use utoipa::ToSchema;

pub use config::{NatsAuth, NatsFile, NatsSettings, NatsTls};

use crate::batch::BatchError;
use crate::metrics::Metrics;
use crate::service::connectors::jittered_backoff;
use crate::service::route::{
    Idempotency, RouteError, RouteReply, RouteRequest, RouteService, Shape,
};
use crate::serving::ClassifyError;
use crate::ticket::Ticket;

/// How long one pull request waits for messages before the next is made.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// The longest wait before connecting again after a failure.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// How long a stopping service waits for the messages it is handling.
const DRAIN: Duration = Duration::from_secs(10);

/// The header naming the message a decision or dead letter came from (our idempotency key).
pub const SOURCE_HEADER: &str = "Intent-Router-Message";

/// The header of a dead letter whose decision was committed (and not published).
pub const DECISION_HEADER: &str = "Intent-Router-Decision";

/// The duplicate window of a stream made with `create_stream` (at least; four `ack_wait`s).
const CREATED_WINDOW: Duration = Duration::from_secs(120);

/// The header with the reason a message went to the dead-letter subject.
pub const ERROR_HEADER: &str = "Intent-Router-Error";

/// Why the channel could not start.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server did not answer or refused us.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The configured URL(s).
        url: String,
        /// What the client said.
        source: async_nats::ConnectError,
    },
    /// The credentials file could not be read.
    #[error("nats.credentials_file: {0}")]
    Credentials(std::io::Error),
    /// The tickets' stream is missing.
    #[error(
        "nats.stream: the stream \"{0}\" does not exist on the server; create it (see the README) or set nats.create_stream = true"
    )]
    NoStream(String),
    /// A subject we publish to is in no stream.
    #[error(
        "nats.{key}: no stream captures the subject \"{subject}\", so what is published there would be lost; add it to a stream's subjects"
    )]
    Uncaptured {
        /// The setting.
        key: &'static str,
        /// Its subject.
        subject: String,
    },
    /// Any other JetStream API failure.
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// What became of one message.
#[derive(Debug)]
enum Failure {
    /// It may pass later: delivered again after a backoff, up to `max_deliver` times.
    Transient(String),
    /// It never will: to the dead-letter subject now.
    Permanent(String),
    /// Its decision is committed but could not be published: as transient; a dead letter
    /// names the decision.
    Unpublished {
        /// Why.
        why: String,
        /// The committed decision.
        decision_id: String,
    },
}

/// Where the channel of this replica stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NatsState {
    /// Connecting, or waiting to try again (`error` says why).
    Connecting,
    /// Pulling messages.
    Consuming,
    /// Stopped (the service is shutting down).
    Stopped,
}

/// The queue channel as `GET /v1/connectors` shows it (this replica's view).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NatsStatus {
    /// Connecting, consuming or stopped.
    pub state: NatsState,
    /// Since when.
    pub since: chrono::DateTime<chrono::Utc>,
    /// The last failure to connect or set up, while connecting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stream of tickets.
    pub stream: String,
    /// The durable consumer.
    pub consumer: String,
    /// The tickets' subject.
    pub subject: String,
    /// Where decisions go.
    pub decisions_subject: String,
    /// Where dead letters go.
    pub dead_letter_subject: String,
    /// Messages handled by this replica since it started, by outcome.
    pub messages: NatsCounts,
}

/// Messages handled, by outcome.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct NatsCounts {
    /// Routed, decision published.
    pub routed: u64,
    /// An earlier decision published again (a redelivery).
    pub replayed: u64,
    /// Asked for again later.
    pub retried: u64,
    /// Sent to the dead-letter subject.
    pub dead_lettered: u64,
}

/// The queue channel; [`NatsChannel::spawn`] starts it.
#[derive(Clone)]
pub struct NatsChannel {
    settings: Arc<NatsSettings>,
    route: RouteService,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    in_flight: Arc<Semaphore>,
    status: Arc<Mutex<NatsStatus>>,
}

impl NatsChannel {
    /// A channel routing with `route`.
    pub fn new(settings: NatsSettings, route: RouteService, metrics: Arc<Metrics>) -> Self {
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
        let status = NatsStatus {
            state: NatsState::Connecting,
            since: chrono::Utc::now(),
            error: None,
            stream: settings.stream.clone(),
            consumer: settings.consumer.clone(),
            subject: settings.subject.clone(),
            decisions_subject: settings.decisions_subject.clone(),
            dead_letter_subject: settings.dead_letter_subject.clone(),
            messages: NatsCounts::default(),
        };
        Self {
            settings: Arc::new(settings),
            route,
            metrics,
            stop: watch::channel(false).0,
            in_flight,
            status: Arc::new(Mutex::new(status)),
        }
    }

    /// Where the channel stands, and what it handled.
    pub fn status(&self) -> NatsStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Records a new state (and why, while connecting).
    fn set_state(&self, state: NatsState, error: Option<String>) {
        let mut s = self.status.lock().expect("status lock");
        if s.state != state {
            s.since = chrono::Utc::now();
        }
        s.state = state;
        s.error = error;
    }

    /// Connects (again and again, with a growing wait, while the server is away or the
    /// stream is missing) and consumes until [`NatsChannel::stop`].
    pub fn spawn(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut stop = this.stop.subscribe();
            let mut failures = 0;
            loop {
                let outcome = tokio::select! {
                    _ = stopped(&mut stop) => return this.set_state(NatsState::Stopped, None),
                    r = this.run(&mut failures) => r,
                };
                let wait = jittered_backoff(failures).min(MAX_RECONNECT_WAIT);
                failures += 1;
                match outcome {
                    Ok(()) => return this.set_state(NatsState::Stopped, None),
                    Err(e) => {
                        this.set_state(NatsState::Connecting, Some(e.to_string()));
                        tracing::error!(
                            "NATS queue channel: {e}; trying again in {} s",
                            wait.as_secs().max(1)
                        );
                    }
                }
                tokio::select! {
                    _ = stopped(&mut stop) => return this.set_state(NatsState::Stopped, None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Stops taking messages (those being handled go on).
    pub fn stop_pulling(&self) {
        self.stop.send_replace(true);
    }

    /// Stops taking messages and waits (up to ten seconds) for those being handled; the
    /// server delivers any others again after `ack_wait`.
    pub async fn stop(&self) {
        self.stop_pulling();
        let all = u32::try_from(self.settings.max_in_flight).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(DRAIN, self.in_flight.acquire_many(all)).await;
    }

    /// One connection's life: set up (then the count of failed attempts starts again), then
    /// consume until the consumer fails for good; `Ok` once stopped.
    async fn run(&self, failures: &mut i64) -> Result<(), NatsError> {
        let js = self.connect().await?;
        let (consumer, sequence_key) = self.consumer(&js).await?;
        *failures = 0;
        self.set_state(NatsState::Consuming, None);
        let s = &self.settings;
        tracing::info!(
            stream = %s.stream,
            consumer = %s.consumer,
            subject = %s.subject,
            "NATS queue channel consuming"
        );
        let mut errors = 0u32;
        loop {
            match self.pull(&js, &consumer, &sequence_key).await {
                Ok(true) => errors = 0,
                Ok(false) => return Ok(()),
                Err(e) if errors < 5 => {
                    errors += 1;
                    tracing::warn!("NATS queue channel: pulling messages: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(NatsError::JetStream(format!("pulling messages: {e}"))),
            }
        }
    }

    /// Connects with the configured credentials and TLS.
    async fn connect(&self) -> Result<Context, NatsError> {
        let s = &self.settings;
        let mut options = ConnectOptions::new()
            .name("intent-router")
            .require_tls(s.tls.required);
        if let Some(ca) = &s.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &s.tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options = match &s.auth {
            NatsAuth::None => options,
            NatsAuth::Credentials(path) => options
                .credentials_file(path)
                .await
                .map_err(NatsError::Credentials)?,
            NatsAuth::NKey(seed) => options.nkey(seed.clone()),
            NatsAuth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
        };
        let servers: Vec<&str> = s.url.split(',').map(str::trim).collect();
        let client = options
            .connect(servers)
            .await
            .map_err(|source| NatsError::Connect {
                url: without_passwords(&s.url),
                source,
            })?;
        Ok(jetstream::new(client))
    }

    /// Checks (or creates) the stream, checks that decisions and dead letters are captured by
    /// a stream, and creates or updates the durable consumer; with the key prefix of messages
    /// known by their place (the stream's creation time in it: a stream deleted and made again
    /// numbers its messages from 1 again).
    async fn consumer(
        &self,
        js: &Context,
    ) -> Result<(jetstream::consumer::PullConsumer, Arc<str>), NatsError> {
        let s = &self.settings;
        let api = |e: &dyn std::fmt::Display| NatsError::JetStream(e.to_string());
        let stream = if s.create_stream {
            js.get_or_create_stream(jetstream::stream::Config {
                name: s.stream.clone(),
                subjects: vec![
                    s.subject.clone(),
                    s.decisions_subject.clone(),
                    s.dead_letter_subject.clone(),
                ],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: CREATED_WINDOW.max(s.ack_wait * 4),
                ..Default::default()
            })
            .await
            .map_err(|e| api(&format!("creating the stream \"{}\": {e}", s.stream)))?
        } else {
            js.get_stream(&s.stream).await.map_err(|e| {
                use jetstream::context::GetStreamErrorKind;
                match e.kind() {
                    GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        NatsError::NoStream(s.stream.clone())
                    }
                    _ => api(&format!("the stream \"{}\": {e}", s.stream)),
                }
            })?
        };
        for (key, subject) in [
            ("decisions_subject", &s.decisions_subject),
            ("dead_letter_subject", &s.dead_letter_subject),
        ] {
            use jetstream::context::GetStreamByNameErrorKind;
            let name = match js.stream_by_subject(subject.clone()).await {
                Ok(name) => name,
                Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                    return Err(NatsError::Uncaptured {
                        key,
                        subject: subject.clone(),
                    })
                }
                Err(e) => return Err(api(&format!("the stream of nats.{key}: {e}"))),
            };
            if key == "decisions_subject" {
                let window = js
                    .get_stream(&name)
                    .await
                    .map_err(|e| api(&format!("the stream \"{name}\": {e}")))?
                    .cached_info()
                    .config
                    .duplicate_window;
                if window < s.ack_wait * 2 {
                    tracing::warn!(
                        "NATS: the stream \"{name}\" remembers message ids for {window:?}, less than twice nats.ack_wait_seconds: a decision published again after a crash may be stored twice (same Nats-Msg-Id); raise its duplicate window"
                    );
                }
            }
        }
        let sequence_key: Arc<str> = format!(
            "nats:{}@{}:seq:",
            s.stream,
            stream.cached_info().created.timestamp()
        )
        .into();
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(s.consumer.clone()),
                description: Some("intent-router: tickets to route".into()),
                filter_subject: s.subject.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: s.ack_wait,
                // Unlimited on the server: we count deliveries ourselves, so that a message
                // whose handling kills the process still reaches the dead-letter subject.
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .map_err(|e| api(&format!("the consumer \"{}\": {e}", s.consumer)))?;
        Ok((consumer, sequence_key))
    }

    /// One pull request: as many messages as there are free places, each handled in its own
    /// task as it arrives; `Ok(false)` once the channel is stopped.
    async fn pull(
        &self,
        js: &Context,
        consumer: &jetstream::consumer::PullConsumer,
        sequence_key: &Arc<str>,
    ) -> Result<bool, String> {
        if js.client().connection_state() != async_nats::connection::State::Connected {
            // The client reconnects by itself; pull requests made meanwhile would pile up.
            let lost = "the connection to the server is lost; reconnecting".to_string();
            self.set_state(NatsState::Connecting, Some(lost));
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(true);
        }
        self.set_state(NatsState::Consuming, None);
        let mut stop = self.stop.subscribe();
        let first = tokio::select! {
            _ = stopped(&mut stop) => return Ok(false),
            p = Arc::clone(&self.in_flight).acquire_owned() => p.map_err(|e| e.to_string())?,
        };
        let wanted = 1 + self.in_flight.available_permits();
        let mut batch = consumer
            .batch()
            .max_messages(wanted)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut permit = Some(first);
        loop {
            let next = tokio::select! {
                _ = stopped(&mut stop) => return Ok(false),
                m = batch.next() => m,
            };
            let Some(message) = next else { return Ok(true) };
            let message = message.map_err(|e| e.to_string())?;
            let permit = match permit.take() {
                Some(p) => p,
                None => Arc::clone(&self.in_flight)
                    .acquire_owned()
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let (this, js, sequence_key) = (self.clone(), js.clone(), Arc::clone(sequence_key));
            tokio::spawn(async move {
                this.handle(&js, message, &sequence_key).await;
                drop(permit);
            });
        }
    }

    /// Routes one message and publishes its decision, then acknowledges it; or sends it to the
    /// dead-letter subject; or asks for it again later.
    async fn handle(&self, js: &Context, message: jetstream::Message, sequence_key: &str) {
        let Ok(info) = message.info() else {
            tracing::warn!(subject = %message.subject, "NATS: a message without JetStream metadata; left alone");
            return;
        };
        let (delivered, sequence, published) =
            (info.delivered, info.stream_sequence, info.published);
        let key = message_key(
            &self.settings.stream,
            sequence_key,
            message.headers.as_ref(),
            sequence,
        );
        let most = i64::from(self.settings.max_deliver);
        let result = if delivered > most {
            Err(Failure::Permanent(format!(
                "delivered {delivered} times without an outcome (the process handling it stopped each time)"
            )))
        } else {
            // Still working on it: the server waits another ack_wait before delivering it
            // again (to this or another replica).
            let work = self.route_and_publish(js, &message, &key, published);
            tokio::pin!(work);
            let mut progress = tokio::time::interval(self.settings.ack_wait / 2);
            progress.tick().await;
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = progress.tick() => {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        let outcome = match result {
            Ok(replayed) => {
                if let Err(e) = message.double_ack().await {
                    // Delivered again later: the replay publishes the same decision.
                    tracing::warn!(%key, "NATS: acknowledging: {e}");
                }
                if replayed {
                    "replayed"
                } else {
                    "routed"
                }
            }
            Err(Failure::Transient(why) | Failure::Unpublished { why, .. }) if delivered < most => {
                let wait = jittered_backoff(delivered - 1);
                tracing::warn!(%key, delivered, "NATS: {why}; delivered again in {wait:?}");
                let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
                "retried"
            }
            Err(failure) => {
                let (why, decision) = match failure {
                    Failure::Transient(why) | Failure::Permanent(why) => (why, None),
                    Failure::Unpublished { why, decision_id } => (why, Some(decision_id)),
                };
                let dead =
                    self.dead_letter(js, &message, &key, delivered, &why, decision.as_deref());
                match dead.await {
                    Ok(()) => {
                        tracing::warn!(%key, delivered, "NATS: to the dead-letter subject: {why}");
                        // Terminated: never delivered again (the server's advisory says so).
                        if let Err(e) = message.double_ack_with(AckKind::Term).await {
                            tracing::warn!(%key, "NATS: terminating: {e}");
                        }
                        "dead_lettered"
                    }
                    Err(e) => {
                        tracing::error!(%key, "NATS: the dead-letter subject refused the message ({e}); it stays for later");
                        let _ = message
                            .ack_with(AckKind::Nak(Some(jittered_backoff(delivered))))
                            .await;
                        "retried"
                    }
                }
            }
        };
        self.metrics.queue_message(outcome);
        let mut status = self.status.lock().expect("status lock");
        let counts = &mut status.messages;
        match outcome {
            "routed" => counts.routed += 1,
            "replayed" => counts.replayed += 1,
            "retried" => counts.retried += 1,
            "dead_lettered" => counts.dead_lettered += 1,
            other => unreachable!("outcome {other} is counted. This is a bug."),
        }
    }

    /// Routes the message's ticket (idempotent per message) and publishes its decision;
    /// `Ok(true)` when the decision was an earlier one replayed.
    async fn route_and_publish(
        &self,
        js: &Context,
        message: &jetstream::Message,
        key: &str,
        published: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, Failure> {
        let mut ticket = parse_ticket(&message.payload).map_err(Failure::Permanent)?;
        ticket.received_at.get_or_insert(published);
        let request = RouteRequest {
            tickets: vec![ticket],
            shape: Shape::One,
            idempotency: Some(Idempotency {
                key: key.to_string(),
                request_hash: crate::connector::sign::hex(&Sha256::digest(&message.payload)),
            }),
        };
        let reply = self.route_waiting(request).await.map_err(|e| {
            if e.is_transient() {
                Failure::Transient(e.to_string())
            } else {
                Failure::Permanent(e.to_string())
            }
        })?;
        let replayed = reply.replayed;
        let body = reply.body.clone();
        let decision_id = reply
            .into_decision()
            .ok()
            .and_then(|d| d.decision_id)
            .ok_or_else(|| Failure::Permanent("the stored decision is unreadable".into()))?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", decision_id.as_str());
        headers.insert(SOURCE_HEADER, key);
        let published = match crate::failpoint::hit("nats.publish").await {
            Err(point) => Err(format!("failpoint {point}")),
            Ok(()) => {
                publish(
                    js,
                    &self.settings.decisions_subject,
                    headers,
                    body.into_bytes(),
                )
                .await
            }
        };
        published.map_err(|e| Failure::Unpublished {
            why: format!("publishing the decision: {e}"),
            decision_id,
        })?;
        Ok(replayed)
    }

    /// Routes, waiting while the batching queue is full: that is backpressure (HTTP traffic
    /// or a burst), not a failure, so the message is held (its acknowledgement deadline
    /// extended) instead of counting an attempt towards `max_deliver`.
    async fn route_waiting(&self, request: RouteRequest) -> Result<RouteReply, RouteError> {
        loop {
            match self.route.route(request.clone()).await {
                Err(RouteError::Classify(ClassifyError::Batch(BatchError::QueueFull {
                    ..
                }))) => {
                    let pause = rand::rng().random_range(10..50);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }

    /// Publishes the message to the dead-letter subject with why, how often it was delivered
    /// and where it came from (its own headers kept, but for the server's `Nats-*` ones).
    async fn dead_letter(
        &self,
        js: &Context,
        message: &jetstream::Message,
        key: &str,
        delivered: i64,
        why: &str,
        decision: Option<&str>,
    ) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                let name_text: &str = name.as_ref();
                if !name_text.to_ascii_lowercase().starts_with("nats-") {
                    for v in values {
                        headers.append(name.clone(), v.clone());
                    }
                }
            }
        }
        headers.insert("Nats-Msg-Id", format!("dead:{key}"));
        headers.insert(SOURCE_HEADER, key);
        headers.insert(ERROR_HEADER, header_text(why));
        headers.insert("Intent-Router-Delivered", delivered.to_string());
        headers.insert("Intent-Router-Subject", message.subject.as_str());
        if let Some(id) = decision {
            headers.insert(DECISION_HEADER, id);
        }
        let payload = message.payload.to_vec();
        publish(js, &self.settings.dead_letter_subject, headers, payload).await
    }
}

/// Resolves once the channel is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Publishes to JetStream and waits for the stream's acknowledgement (stored, or recognised
/// as a duplicate of its `Nats-Msg-Id`).
async fn publish(
    js: &Context,
    subject: &str,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> Result<(), String> {
    js.publish_with_headers(subject.to_string(), headers, payload.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The idempotency key of a message: the `Intent-Router-Message` of a dead letter published
/// again (so that its committed decision is replayed), else its publisher's `Nats-Msg-Id` (a
/// ticket published twice is routed once), else its place in the stream (after
/// `sequence_key`).
fn message_key(
    stream: &str,
    sequence_key: &str,
    headers: Option<&HeaderMap>,
    sequence: u64,
) -> String {
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(key) = header(SOURCE_HEADER) {
        return key;
    }
    match header("Nats-Msg-Id") {
        Some(id) => format!("nats:{stream}:id:{id}"),
        None => format!("{sequence_key}{sequence}"),
    }
}

/// A server list with any `user:password@` taken out (for messages and logs).
fn without_passwords(url: &str) -> String {
    url.split(',')
        .map(|server| match (server.find("://"), server.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &server[..scheme + 3], &server[at..])
            }
            _ => server.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A ticket from a message body: a JSON object, as the body of `POST /v1/route`.
fn parse_ticket(payload: &[u8]) -> Result<Ticket, String> {
    const WANTED: &str = "publish a JSON ticket (the body of POST /v1/route)";
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(format!("the message is empty; {WANTED}")),
        Some(b'{') => serde_json::from_slice(payload)
            .map_err(|e| format!("the message is not a ticket: {e}; {WANTED}")),
        Some(_) => Err(format!("the message is not a JSON object; {WANTED}")),
    }
}

/// Text fit for a header value: one line, at most 500 bytes.
fn header_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > 500 {
        let mut cut = 500;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_known_by_its_publishers_id_or_its_place() {
        let seq = "nats:S@1765000000:seq:";
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "T-1#created");
        assert_eq!(message_key("S", seq, Some(&h), 7), "nats:S:id:T-1#created");
        assert_eq!(message_key("S", seq, None, 7), "nats:S@1765000000:seq:7");
        h.insert("Nats-Msg-Id", "");
        assert_eq!(
            message_key("S", seq, Some(&h), 7),
            "nats:S@1765000000:seq:7"
        );
        // A dead letter published again keeps the key it had.
        h.insert(SOURCE_HEADER, "nats:S@1765000000:seq:3");
        assert_eq!(
            message_key("S", seq, Some(&h), 9),
            "nats:S@1765000000:seq:3"
        );
    }

    #[test]
    fn passwords_in_server_urls_stay_out_of_messages() {
        assert_eq!(
            without_passwords("nats://u:secret@a:4222, tls://b:4222"),
            "nats://***@a:4222, tls://b:4222"
        );
    }

    #[test]
    fn a_message_body_must_be_a_ticket_object() {
        let t = parse_ticket(br#" {"id": "T-1", "body": "hello"}"#).unwrap();
        assert_eq!(t.id.as_deref(), Some("T-1"));
        for (bad, says) in [
            (&b"  "[..], "the message is empty"),
            (b"[1]", "not a JSON object"),
            (b"{\"body\": 1}", "not a ticket"),
            (b"{\"bdy\": \"x\"}", "not a ticket"),
        ] {
            let e = parse_ticket(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        assert_eq!(header_text("a\r\nb"), "a  b");
        let long = "é".repeat(400);
        let cut = header_text(&long);
        assert!(cut.len() <= 500 && cut.chars().all(|c| c == 'é'));
    }
}
