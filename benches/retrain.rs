//! Retraining benchmark: the server's retraining path (`learn::retrain`: load the base data,
//! cached embeddings, train the head, calibrate, write the candidate, run the gate) on 10,000
//! base examples plus 200 corrections, with the embedding cache warm. The first, untimed pass
//! fills the cache (`target/bench-embedding-cache`, kept between runs).
//!
//! `cargo bench --bench retrain` (RETRAIN_EXAMPLES, default 10000; RETRAIN_RUNS, default 3).

use std::path::Path;
use std::time::Instant;

use intent_router::learn::{self, LearnSettings};
use intent_router::model::classifier::Classifier;
use intent_router::model::encoder::EncoderOptions;
use intent_router::model::head::HeadTraining;
use intent_router::store::Correction;
use intent_router::train::trainer::Silent;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let n: usize = std::env::var("RETRAIN_EXAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = std::env::var("RETRAIN_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let work = tempfile::tempdir().unwrap();
    // 10,000 base examples: the shipped training data, repeated.
    let lines: Vec<String> = std::fs::read_to_string(root.join("training-data/train.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let base: String = (0..n)
        .map(|i| {
            let mut v: serde_json::Value = serde_json::from_str(&lines[i % lines.len()]).unwrap();
            v["id"] = serde_json::json!(format!("bench-{i}"));
            format!("{v}\n")
        })
        .collect();
    let base_path = work.path().join("base.jsonl");
    std::fs::write(&base_path, base).unwrap();
    // Corrections from the independently written set, so the gate's dev figures stay honest.
    let dev: Vec<serde_json::Value> =
        std::fs::read_to_string(root.join("training-data/dev-independent-a.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let corrections: Vec<Correction> = dev
        .iter()
        .take(200)
        .enumerate()
        .map(|(i, v)| Correction {
            ticket_id: format!("c-{i}"),
            subject: v["subject"].as_str().map(str::to_string),
            body: v
                .get("text")
                .or(v.get("body"))
                .and_then(|t| t.as_str())
                .unwrap_or("x")
                .to_string(),
            intent: v["intent"].as_str().unwrap().to_string(),
            language: v["lang"].as_str().unwrap_or("en").to_string(),
        })
        .collect();
    let active = Classifier::load(&root.join("models/helpdesk"), &EncoderOptions::default())
        .expect("models/helpdesk");
    let settings = LearnSettings {
        base_data: base_path,
        dev_data: root.join("training-data/dev.jsonl"),
        registry: work.path().join("registry"),
        cache_dir: Some(root.join("target/bench-embedding-cache")),
        tolerance: 0.01,
        correction_weight: 5,
        head: HeadTraining::default(),
    };
    let retrain = || {
        learn::retrain(
            &active,
            &[],
            &corrections,
            &settings,
            None,
            "bench",
            &Silent,
        )
        .expect("retrain")
    };
    let t = Instant::now();
    let first = retrain();
    println!(
        "warm-up (fills the embedding cache when cold): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "{} base examples + {} corrections (x{} weight); gate passed: {}, dev macro-F1 {:.3} -> {:.3}",
        n,
        corrections.len(),
        settings.correction_weight,
        first.gate.passed,
        first.gate.dev.active.macro_f1,
        first.gate.dev.candidate.macro_f1
    );
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        retrain();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "retrain with cached embeddings: median {:.2} s, min {:.2} s, max {:.2} s over {runs} runs",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
