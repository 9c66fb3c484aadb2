//! The webhook path and the NATS path under load: the real router in this process with one
//! `generic` connector and the NATS queue channel (a `nats-server` with JetStream started for
//! the run). Webhook clients send signed webhooks (one ticket each, keep-alive), the decisions
//! written back to a receiver in this process; NATS clients publish tickets to the stream, the
//! decisions read from their subject. Per path two phases: a burst (the clients send as fast
//! as they are acknowledged; the inbox or stream absorbs it and drains at the routing speed)
//! and a steady rate below capacity. Each prints events acknowledged per second, the
//! acknowledgement's p50 / p99 (the webhook stored, or the message stored by JetStream, before
//! routing), decisions delivered per second until all arrived, and the time from the event's
//! send to its decision's arrival (p50 / p99).
//!
//! `cargo bench --bench connectors` (CONNECTOR_SECONDS per phase, default 15, a burst also
//! ending at CONNECTOR_BURST events, default 5000;
//! CONNECTOR_CLIENTS, default 8; CONNECTOR_RATE, the steady phase's events per second, default
//! 100; CONNECTOR_PATHS, `webhook,nats` (default) or one of them; LOAD_DATABASE `sqlite`
//! (default) or `postgres`, a server started for the run).

#[path = "../src/store/pg_cluster.rs"]
mod pg_cluster;

#[allow(dead_code)]
#[path = "../tests/common/nats.rs"]
mod nats_server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use clap::Parser;
use intent_router::cli::ServeArgs;
use intent_router::config::Settings;
use intent_router::connector::sign;
use intent_router::server;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    serve: ServeArgs,
}

const SECRET: &str = "bench-secret-0123456789";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn texts() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/training-data/dev.jsonl");
    std::fs::read_to_string(path)
        .expect("training-data/dev.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v.get("text")
                .or(v.get("body"))
                .and_then(|t| t.as_str())
                .map(String::from)
        })
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// When each ticket's decision arrived at the helpdesk.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Records the first arrival of a decision (a webhook's body or a published decision: both
/// hold `ticket_id`).
fn arrived(arrivals: &Arrivals, decision: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(decision).unwrap();
    let id = v["ticket_id"].as_str().unwrap().to_string();
    arrivals
        .lock()
        .unwrap()
        .entry(id)
        .or_insert_with(Instant::now);
}

/// The helpdesk's side: records each decision's arrival; returns its URL.
fn receiver(rt: &tokio::runtime::Runtime, arrivals: Arrivals) -> String {
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let arrivals = Arc::clone(&arrivals);
            async move {
                arrived(&arrivals, &body);
                "{}"
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

/// The router with one connector writing back to `hook` and the queue channel on `nats`;
/// returns the webhook URL.
fn router(rt: &tokio::runtime::Runtime, dir: &std::path::Path, hook: &str, nats: &str) -> String {
    let database = if std::env::var("LOAD_DATABASE").is_ok_and(|d| d == "postgres") {
        pg_cluster::fresh_database()
    } else {
        dir.join("bench.db").display().to_string()
    };
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[learning]\nregistry = \"{}\"\n\n[[connectors]]\nname = \"bench\"\nkind = \"generic\"\n\
             [connectors.inbound]\nauth = \"intent-router\"\nsecrets = [\"{SECRET}\"]\n\
             [connectors.fields]\nid = \"id\"\nbody = \"body\"\n\
             [connectors.write_back]\nurl = \"{hook}\"\nsecrets = [\"{SECRET}\"]\n\n\
             [nats]\nurl = \"{nats}\"\nstream = \"TICKETS\"\nsubject = \"{TICKETS}\"\n\
             decisions_subject = \"{DECISIONS}\"\ndead_letter_subject = \"helpdesk.dead\"\n\
             create_stream = true\n",
            dir.join("registry").display()
        ),
    )
    .unwrap();
    let args = Wrap::parse_from([
        "bench",
        "--config",
        &config.display().to_string(),
        "--dev-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
    ])
    .serve;
    let settings = Settings::resolve(&args).unwrap();
    let state = rt.block_on(server::build_state(settings)).unwrap();
    rt.block_on(server::start_background(&state)).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, server::router(state)).await });
    format!("http://{addr}/v1/connectors/bench/events")
}

/// The tickets' subject of the NATS path.
const TICKETS: &str = "helpdesk.tickets.created";

/// The decisions' subject of the NATS path.
const DECISIONS: &str = "helpdesk.decisions";

/// How a client sends one ticket's body: `true` once acknowledged.
trait Sender {
    fn send(&mut self, body: &str) -> bool;
}

/// Signed webhooks over one keep-alive connection.
struct Webhook {
    agent: ureq::Agent,
    url: String,
}

impl Sender for Webhook {
    fn send(&mut self, body: &str) -> bool {
        let signature = sign::sign(
            SECRET.as_bytes(),
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        let r = self
            .agent
            .post(&self.url)
            .set("X-Intent-Router-Signature", &signature)
            .set("Content-Type", "application/json")
            .send_string(body);
        r.map(|r| assert_eq!(r.status(), 202)).is_ok()
    }
}

/// JetStream publishes on one connection, each waiting for the stream's acknowledgement.
struct Publisher {
    rt: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
}

impl Sender for Publisher {
    fn send(&mut self, body: &str) -> bool {
        let js = &self.js;
        self.rt.block_on(async {
            match js.publish(TICKETS, body.to_string().into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        })
    }
}

/// A sender for `path` (`webhook` or `nats`) to `url`.
fn sender(path: &str, url: &str) -> Box<dyn Sender> {
    if path == "nats" {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let js = rt.block_on(async {
            async_nats::jetstream::new(async_nats::connect(url).await.unwrap())
        });
        Box::new(Publisher { rt, js })
    } else {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        Box::new(Webhook {
            agent,
            url: url.to_string(),
        })
    }
}

/// One client of a phase: tickets until `stop` or until the phase's clients sent `left` more,
/// one every `every` if given; (ticket id, sent at, acknowledgement ms).
fn client(
    phase: String,
    c: usize,
    mut sender: Box<dyn Sender>,
    texts: Arc<Vec<String>>,
    (stop, left): (Arc<AtomicBool>, Arc<AtomicUsize>),
    every: Option<Duration>,
) -> Vec<(String, Instant, f64)> {
    let mut sent = Vec::new();
    let mut i = 0;
    let start = Instant::now();
    let take = || left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    while !stop.load(Ordering::Relaxed) && take().is_ok() {
        if let Some(every) = every {
            let due = start + every * i as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let id = format!("{phase}-c{c}-{i}");
        let body =
            serde_json::json!({"id": id, "body": texts[(c * 7919 + i) % texts.len()]}).to_string();
        i += 1;
        let t = Instant::now();
        if sender.send(&body) {
            sent.push((id, t, t.elapsed().as_secs_f64() * 1e3));
        }
    }
    sent
}

/// Records the arrival of each decision published on the decisions' subject.
fn subscriber(rt: &tokio::runtime::Runtime, url: &str, arrivals: Arrivals) {
    use futures_util::StreamExt;
    let client = rt.block_on(async_nats::connect(url)).unwrap();
    let mut decisions = rt.block_on(client.subscribe(DECISIONS)).unwrap();
    rt.spawn(async move {
        let _client = client;
        while let Some(m) = decisions.next().await {
            arrived(&arrivals, &m.payload);
        }
    });
}

/// Runs one phase of `path` and prints its row.
fn phase(
    path: &str,
    name: &str,
    url: &str,
    texts: &Arc<Vec<String>>,
    arrivals: &Arrivals,
    rate: Option<f64>,
) {
    let seconds: u64 = env_or("CONNECTOR_SECONDS", 15);
    let clients: usize = env_or("CONNECTOR_CLIENTS", 8);
    let every = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
    let stop = Arc::new(AtomicBool::new(false));
    // A burst is also cut at a number of events: a stream takes them far faster than they
    // are routed.
    let most = if rate.is_none() {
        env_or("CONNECTOR_BURST", 5000)
    } else {
        usize::MAX
    };
    let left = Arc::new(AtomicUsize::new(most));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (texts, stop, left) = (Arc::clone(texts), Arc::clone(&stop), Arc::clone(&left));
            let (phase, path, url) = (format!("{path}-{name}"), path.to_string(), url.to_string());
            std::thread::spawn(move || {
                client(phase, c, sender(&path, &url), texts, (stop, left), every)
            })
        })
        .collect();
    let deadline = start + Duration::from_secs(seconds);
    while Instant::now() < deadline && left.load(Ordering::Relaxed) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let sending = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    let arrived = |sent: &[(String, Instant, f64)]| {
        let a = arrivals.lock().unwrap();
        sent.iter().filter(|(id, _, _)| a.contains_key(id)).count()
    };
    while arrived(&sent) < sent.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let drained = start.elapsed().as_secs_f64();
    let a = arrivals.lock().unwrap().clone();
    let mut ack: Vec<f64> = sent.iter().map(|s| s.2).collect();
    let mut e2e: Vec<f64> = sent
        .iter()
        .filter_map(|(id, t, _)| a.get(id).map(|at| (*at - *t).as_secs_f64() * 1e3))
        .collect();
    ack.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    println!(
        "| {path} | {name} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1} |",
        sent.len(),
        sent.len() as f64 / sending,
        percentile(&ack, 0.5),
        percentile(&ack, 0.99),
        e2e.len(),
        e2e.len() as f64 / drained,
        percentile(&e2e, 0.5),
        percentile(&e2e, 0.99)
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let arrivals: Arrivals = Arc::default();
    let hook = receiver(&rt, Arc::clone(&arrivals));
    let nats = nats_server::Nats::start();
    let url = router(&rt, dir.path(), &hook, &nats.url);
    subscriber(&rt, &nats.url, Arc::clone(&arrivals));
    let texts = Arc::new(texts());
    println!(
        "webhooks on {url}, NATS on {}: {} clients, {} s per phase, {} CPUs",
        nats.url,
        env_or("CONNECTOR_CLIENTS", 8),
        env_or("CONNECTOR_SECONDS", 15),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| path | phase | events | acknowledged/s | ack p50 ms | ack p99 ms | decisions delivered | delivered/s | event to decision p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rate: f64 = env_or("CONNECTOR_RATE", 100.0);
    let paths: String = env_or("CONNECTOR_PATHS", "webhook,nats".to_string());
    for path in paths.split(',') {
        let url = if path == "nats" { &nats.url } else { &url };
        phase(path, "burst", url, &texts, &arrivals, None);
        phase(path, "steady", url, &texts, &arrivals, Some(rate));
    }
}
