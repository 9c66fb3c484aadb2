//! Load benchmark of the HTTP service on loopback: the real router (default model, default
//! rules, a fresh SQLite database) in this process, and 1, 8 and 32 concurrent clients that each
//! send `POST /v1/route` one ticket at a time (keep-alive), cycling through the dev split's
//! Russian and English tickets. Prints throughput and p50 / p99 latency per concurrency.
//!
//! `cargo bench --bench load` (LOAD_SECONDS per level, default 15; LOAD_CLIENTS, default
//! "1,8,32").

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
    let db = tempfile::tempdir().unwrap();
    let database = db.path().join("load.db").display().to_string();
    let args = Wrap::parse_from([
        "load",
        "--dev-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--database",
        &database,
    ])
    .serve;
    let settings = Settings::resolve(&args).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = rt.block_on(server::build_state(settings)).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, server::router(state)).await });
    let url = format!("http://{addr}/v1/route");
    let tickets = Arc::new(tickets());
    println!(
        "load on {url}: {} tickets (dev split), {seconds} s per level, {} CPUs",
        tickets.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| clients | requests/s | p50 ms | p99 ms | errors |");
    println!("|---:|---:|---:|---:|---:|");
    for clients in levels {
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, url, tickets) = (Arc::clone(&stop), url.clone(), Arc::clone(&tickets));
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
}
