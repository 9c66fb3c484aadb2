//! The webhook path under load: the real router in this process with one `generic` connector,
//! clients sending signed webhooks (one ticket each, keep-alive), and the decisions written
//! back to a receiver in this process. Two phases: a burst (the clients send as fast as they
//! are acknowledged; the inbox absorbs it and drains at the routing speed) and a steady rate
//! below capacity. Each prints events acknowledged per second, the acknowledgement's p50 / p99
//! (the event stored, before routing), write-backs per second until the queue drained, and the
//! time from the webhook's send to its decision's arrival at the helpdesk (p50 / p99).
//!
//! `cargo bench --bench connectors` (CONNECTOR_SECONDS per phase, default 15;
//! CONNECTOR_CLIENTS, default 8; CONNECTOR_RATE, the steady phase's events per second, default
//! 100; LOAD_DATABASE `sqlite` (default) or `postgres`, a server started for the run).

#[path = "../src/store/pg_cluster.rs"]
mod pg_cluster;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The helpdesk's side: records each decision's arrival; returns its URL.
fn receiver(rt: &tokio::runtime::Runtime, arrivals: Arrivals) -> String {
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let arrivals = Arc::clone(&arrivals);
            async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let id = v["ticket_id"].as_str().unwrap().to_string();
                arrivals
                    .lock()
                    .unwrap()
                    .entry(id)
                    .or_insert_with(Instant::now);
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

/// The router with one connector writing back to `hook`; returns the webhook URL.
fn router(rt: &tokio::runtime::Runtime, dir: &std::path::Path, hook: &str) -> String {
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
             [connectors.write_back]\nurl = \"{hook}\"\nsecrets = [\"{SECRET}\"]\n",
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

/// One client of a phase: signed webhooks until `stop`, one every `every` if given; (ticket
/// id, sent at, acknowledgement ms).
fn client(
    phase: &'static str,
    c: usize,
    url: String,
    texts: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    every: Option<Duration>,
) -> Vec<(String, Instant, f64)> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let mut sent = Vec::new();
    let mut i = 0;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(every) = every {
            let due = start + every * i as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let id = format!("{phase}-c{c}-{i}");
        let body =
            serde_json::json!({"id": id, "body": texts[(c * 7919 + i) % texts.len()]}).to_string();
        i += 1;
        let signature = sign::sign(
            SECRET.as_bytes(),
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        );
        let t = Instant::now();
        let r = agent
            .post(&url)
            .set("X-Intent-Router-Signature", &signature)
            .set("Content-Type", "application/json")
            .send_string(&body);
        if let Ok(r) = r {
            assert_eq!(r.status(), 202);
            let _ = r.into_string();
            sent.push((id, t, t.elapsed().as_secs_f64() * 1e3));
        }
    }
    sent
}

/// Runs one phase and prints its row.
fn phase(
    name: &'static str,
    url: &str,
    texts: &Arc<Vec<String>>,
    arrivals: &Arrivals,
    rate: Option<f64>,
) {
    let seconds: u64 = env_or("CONNECTOR_SECONDS", 15);
    let clients: usize = env_or("CONNECTOR_CLIENTS", 8);
    let every = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (url, texts, stop) = (url.to_string(), Arc::clone(texts), Arc::clone(&stop));
            std::thread::spawn(move || client(name, c, url, texts, stop, every))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
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
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1} |",
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
    let url = router(&rt, dir.path(), &hook);
    let texts = Arc::new(texts());
    println!(
        "webhooks on {url}: {} clients, {} s per phase, {} CPUs",
        env_or("CONNECTOR_CLIENTS", 8),
        env_or("CONNECTOR_SECONDS", 15),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| phase | events | acknowledged/s | ack p50 ms | ack p99 ms | written back | written back/s | event to write-back p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    phase("burst", &url, &texts, &arrivals, None);
    let rate: f64 = env_or("CONNECTOR_RATE", 100.0);
    phase("steady", &url, &texts, &arrivals, Some(rate));
}
