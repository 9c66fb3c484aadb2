//! Load benchmark of the HTTP service on loopback: the real router (default model, default
//! rules, a fresh database) in this process, and 1, 8 and 32 concurrent clients that each send
//! `POST /v1/route` one ticket at a time (keep-alive), cycling through the dev split's Russian
//! and English tickets. Prints throughput and p50 / p99 latency per concurrency.
//!
//! `cargo bench --bench load` (LOAD_SECONDS per level, default 15; LOAD_CLIENTS, default
//! "1,8,32"; LOAD_DATABASE `sqlite` (default) or `postgres`: a PostgreSQL server started for
//! the run, as the tests do; LOAD_REPLICAS, default 1: with 2, two routers in this process on
//! the one PostgreSQL database, the clients alternating between them).

#[path = "../src/store/pg_cluster.rs"]
mod pg_cluster;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use intent_router::cli::ServeArgs;
use intent_router::config::Settings;
use intent_router::server;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    serve: ServeArgs,
}

fn tickets() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/training-data/dev.jsonl");
    std::fs::read_to_string(path)
        .expect("training-data/dev.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let mut t = serde_json::json!({ "body": v.get("text").or(v.get("body")).cloned() });
            if let Some(s) = v.get("subject") {
                t["subject"] = s.clone();
            }
            t.to_string()
        })
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let levels: Vec<usize> = std::env::var("LOAD_CLIENTS")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let postgres = std::env::var("LOAD_DATABASE").is_ok_and(|d| d == "postgres");
    let replicas: usize = std::env::var("LOAD_REPLICAS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    assert!(
        replicas == 1 || postgres,
        "several replicas need LOAD_DATABASE=postgres"
    );
    let database = if postgres {
        pg_cluster::fresh_database()
    } else {
        dir.path().join("load.db").display().to_string()
    };
    let config = dir.path().join("load.toml");
    let registry = dir.path().join("registry");
    std::fs::write(
        &config,
        format!("[learning]\nregistry = \"{}\"\n", registry.display()),
    )
    .unwrap();
    let args = Wrap::parse_from([
        "load",
        "--config",
        &config.display().to_string(),
        "--dev-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
    ])
    .serve;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let urls: Vec<String> = (0..replicas)
        .map(|_| {
            let settings = Settings::resolve(&args).unwrap();
            let state = rt.block_on(server::build_state(settings)).unwrap();
            rt.block_on(server::start_background(&state)).unwrap();
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = listener.local_addr().unwrap();
            rt.spawn(async move { axum::serve(listener, server::router(state)).await });
            format!("http://{addr}/v1/route")
        })
        .collect();
    let url = urls.join(", ");
    let tickets = Arc::new(tickets());
    println!(
        "load on {url} ({}): {} tickets (dev split), {seconds} s per level, {} CPUs",
        if postgres { "PostgreSQL" } else { "SQLite" },
        tickets.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| clients | requests/s | p50 ms | p99 ms | errors |");
    println!("|---:|---:|---:|---:|---:|");
    for clients in levels {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, url, tickets) = (
                    Arc::clone(&stop),
                    urls[c % urls.len()].clone(),
                    Arc::clone(&tickets),
                );
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(60))
                        .build();
                    let (mut lat, mut errors) = (Vec::new(), 0usize);
                    let mut i = c * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        let body = &tickets[i % tickets.len()];
                        i += 1;
                        let t = Instant::now();
                        match agent.post(&url).send_string(body) {
                            Ok(r) => {
                                let _ = r.into_string();
                                lat.push(t.elapsed().as_secs_f64() * 1e3);
                            }
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let mut errors = 0;
        for h in handles {
            let (l, e) = h.join().unwrap();
            all.extend(l);
            errors += e;
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_by(f64::total_cmp);
        println!(
            "| {clients} | {:.1} | {:.1} | {:.1} | {errors} |",
            all.len() as f64 / elapsed,
            percentile(&all, 0.5),
            percentile(&all, 0.99)
        );
    }
    if urls.len() > 1 {
        propagation(&urls[0], &urls[1]);
    }
}

/// How long a rules change saved through one replica takes to be served by another: 20 saves,
/// each timed from the save's answer until the other replica reports the new version.
fn propagation(one: &str, other: &str) {
    let rules = |url: &str| url.replace("/v1/route", "/v1/rules");
    let agent = ureq::agent();
    let mut took = Vec::new();
    for i in 0..20 {
        let current = agent.get(&rules(one)).call().unwrap();
        let etag = current.header("etag").unwrap().to_string();
        let body: serde_json::Value = current.into_json().unwrap();
        let text = format!("{}\n# propagation {i}\n", body["text"].as_str().unwrap());
        let saved = agent
            .put(&rules(one))
            .set("If-Match", &etag)
            .send_json(serde_json::json!({ "text": text }))
            .unwrap();
        let want = saved.header("etag").unwrap().to_string();
        let start = Instant::now();
        loop {
            let seen = agent.get(&rules(other)).call().unwrap();
            if seen.header("etag") == Some(want.as_str()) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "never propagated"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(start.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    println!(
        "rules change seen by the other replica after: median {:.1} ms, max {:.1} ms (20 changes)",
        percentile(&took, 0.5),
        took[took.len() - 1]
    );
}
