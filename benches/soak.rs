//! Soak and overload test of `intent-router serve` on loopback (a bench, never part of the test
//! suite): the real binary with the default model, dev mode, a fresh database.
//!
//! 1. Capacity: 32 closed-loop clients for 15 s give requests/s.
//! 2. Soak: an open-loop schedule at 80% of capacity for SOAK_SECONDS (default 600): every
//!    response must be 200 (no 5xx, no lost response), and the server's resident memory may
//!    grow less than 5% from the end of the first minute to the end.
//! 3. Overload: 3x capacity for OVERLOAD_SECONDS (default 60): 429 with Retry-After, no crash;
//!    then 50% of capacity for 30 s: every response 200 again (recovery).
//!
//! `cargo bench --bench soak` (SOAK_SECONDS, OVERLOAD_SECONDS change the durations).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn tickets() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/training-data/dev.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| serde_json::json!({"body": v.get("text").or(v.get("body")).cloned()}).to_string())
        .collect()
}

/// Counts of statuses (0: transport error: a lost response).
type Counts = Arc<Mutex<BTreeMap<u16, u64>>>;

/// Sends `rate` requests per second for `secs` seconds on a fixed schedule (open loop), from
/// `threads` senders; returns the status counts.
fn run(
    url: &str,
    rate: f64,
    secs: u64,
    threads: usize,
    tickets: &Arc<Vec<String>>,
) -> BTreeMap<u16, u64> {
    let counts: Counts = Arc::default();
    let start = Instant::now() + Duration::from_millis(50);
    let total = (rate * secs as f64) as u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (url, counts, tickets) =
                (url.to_string(), Arc::clone(&counts), Arc::clone(tickets));
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                let mut i = t as u64;
                while i < total {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let body = &tickets[(i as usize) % tickets.len()];
                    let status = match agent.post(&url).send_string(body) {
                        Ok(r) => {
                            let _ = r.into_string();
                            200
                        }
                        Err(ureq::Error::Status(c, r)) => {
                            let _ = r.into_string();
                            c
                        }
                        Err(_) => 0,
                    };
                    *counts.lock().unwrap().entry(status).or_default() += 1;
                    i += threads as u64;
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let c = counts.lock().unwrap().clone();
    c
}

fn main() {
    let soak_secs: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let over_secs: u64 = std::env::var("OVERLOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_intent-router"))
        .args([
            "serve",
            "--dev-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--database",
        ])
        .arg(dir.path().join("soak.db"))
        .env("INTENT_ROUTER_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("intent-router serve");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let url = format!("http://{addr}/v1/route");
    let tickets = Arc::new(tickets());

    // 1. Capacity, closed loop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(0u64));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let (url, stop, done, tickets) = (
                url.clone(),
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&tickets),
            );
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    if agent
                        .post(&url)
                        .send_string(&tickets[i % tickets.len()])
                        .is_ok()
                    {
                        *done.lock().unwrap() += 1;
                    }
                    i += 32;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(15));
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().unwrap());
    let capacity = *done.lock().unwrap() as f64 / t0.elapsed().as_secs_f64();
    println!("capacity (32 closed-loop clients, 15 s): {capacity:.1} requests/s");

    // 2. Soak at 80%, memory sampled after the first minute and at the end.
    let rate = 0.8 * capacity;
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, samples) = (Arc::clone(&sampler_stop), Arc::clone(&samples));
        std::thread::spawn(move || {
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                samples
                    .lock()
                    .unwrap()
                    .push((t.elapsed().as_secs(), rss_kib(pid)));
                std::thread::sleep(Duration::from_secs(5));
            }
        })
    };
    let counts = run(&url, rate, soak_secs, 64, &tickets);
    sampler_stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let samples = samples.lock().unwrap().clone();
    let after_minute = samples
        .iter()
        .find(|(t, _)| *t >= 60.min(soak_secs / 2))
        .map_or(0, |s| s.1);
    let end = samples.last().map_or(0, |s| s.1);
    let growth = 100.0 * (end as f64 - after_minute as f64) / after_minute.max(1) as f64;
    println!(
        "soak: {soak_secs} s at {rate:.1} requests/s: statuses {counts:?}; resident memory {} MiB after the first minute, {} MiB at the end ({growth:+.2}%)",
        after_minute / 1024,
        end / 1024
    );
    let soak_ok = counts.keys().all(|s| *s == 200) && growth < 5.0;
    let soak_ok = soak_ok || soak_secs == 0;

    // 3. Overload at 3x, then recovery at 50%.
    // More senders than the inference queue holds, so that the offered load really exceeds it.
    let over = run(&url, 3.0 * capacity, over_secs, 512, &tickets);
    let alive = std::fs::metadata(format!("/proc/{pid}")).is_ok();
    println!(
        "overload: {over_secs} s at {:.1} requests/s: statuses {over:?}; server alive: {alive}",
        3.0 * capacity
    );
    let recovery = run(&url, 0.5 * capacity, 30, 32, &tickets);
    println!(
        "recovery: 30 s at {:.1} requests/s: statuses {recovery:?}",
        0.5 * capacity
    );
    let over_ok = alive && over.contains_key(&429) && over.keys().all(|s| *s == 200 || *s == 429);
    let recovery_ok = recovery.keys().all(|s| *s == 200);
    println!(
        "verdict: soak {}, overload {}, recovery {}",
        if soak_ok { "PASS" } else { "FAIL" },
        if over_ok { "PASS" } else { "FAIL" },
        if recovery_ok { "PASS" } else { "FAIL" }
    );
    let _ = child.kill();
    let _ = child.wait();
}
