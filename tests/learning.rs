//! End-to-end tests of the learning loop over real HTTP: route -> feedback -> retrain -> the
//! promoted model gets the corrected (new) intent for similar tickets; the gate refuses a model
//! trained on corrupted labels; rollback, activation and shadow mode; a hot swap under
//! concurrent load loses and fails nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::common;
use crate::server::{self, Server};

/// A crypto-payment intent that the shipped taxonomy lacks.
const CRYPTO: [&str; 20] = [
    "Can I pay for my subscription with Bitcoin?",
    "Do you accept USDT or other stablecoins as payment?",
    "I'd like to pay the invoice in ETH, what wallet address should I use?",
    "Is there a way to top up my balance with cryptocurrency?",
    "Можно ли оплатить подписку биткоином?",
    "Принимаете ли вы оплату в USDT?",
    "Хочу пополнить баланс криптовалютой, какой адрес кошелька?",
    "Оплата эфиром возможна? Нужен адрес для перевода ETH",
    "We want to settle our annual invoice in bitcoin, please send the BTC address",
    "Crypto payments: which coins do you support for paying orders?",
    "Можно оплатить заказ в биткоинах или только картой?",
    "Есть ли оплата через криптокошелёк, например USDT TRC20?",
    "Please add Litecoin as a payment method, I only have crypto",
    "Я отправил оплату в USDT, но баланс не пополнился, где мои монеты?",
    "How long does a Bitcoin payment take to be confirmed on your side?",
    "Оплатить тариф криптой можно? У меня есть только биткоины",
    // Held back from feedback: similar new tickets.
    "Can I pay my invoice using USDT instead of a card?",
    "Хочу оплатить подписку криптовалютой, какие монеты принимаете?",
    "Do you take Bitcoin for the yearly plan?",
    "Можно ли заплатить за заказ эфиром или USDT?",
];

/// Writes a small curated split of the shipped data: `per` examples of each intent.
fn subset(from: &Path, to: &Path, per: usize, skip: usize) -> Vec<(String, String)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = String::new();
    let mut rest = Vec::new();
    for line in std::fs::read_to_string(from).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let intent = v["intent"].as_str().unwrap().to_string();
        // Enough examples for the out-of-scope detector, which no ticket is corrected to.
        let out_of_scope = intent == "out_of_scope";
        let per = if out_of_scope { per.max(20) } else { per };
        let n = counts.entry(intent.clone()).or_default();
        *n += 1;
        if *n > skip && *n <= skip + per {
            out.push_str(line);
            out.push('\n');
        } else if out_of_scope {
        } else if let Some(t) = v["text"].as_str() {
            rest.push((t.to_string(), intent));
        }
    }
    std::fs::write(to, out).unwrap();
    rest
}

fn setup(dir: &Path) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unused = subset(
        &root.join("training-data/train.jsonl"),
        &dir.join("base.jsonl"),
        15,
        0,
    );
    subset(
        &root.join("training-data/dev.jsonl"),
        &dir.join("dev.jsonl"),
        8,
        0,
    );
    let d = |p: &str| dir.join(p).display().to_string();
    let (ok, _, err) = common::run(&[
        "train",
        "--data",
        &d("base.jsonl"),
        "--dev",
        &d("dev.jsonl"),
        "--taxonomy",
        &root
            .join("training-data/taxonomy.toml")
            .display()
            .to_string(),
        "--base",
        &root.join("models/base/e5-small-ruen").display().to_string(),
        "--out",
        &d("model"),
        "--cache-dir",
        &d("cache"),
    ]);
    assert!(ok, "{err}");
    std::fs::write(
        dir.join("learning.toml"),
        format!(
            "[learning]\nbase_data = \"{}\"\ndev_data = \"{}\"\ncache_dir = \"{}\"\ntolerance = 0.03\nretrain_after = 0\n",
            d("base.jsonl"),
            d("dev.jsonl"),
            d("cache")
        ),
    )
    .unwrap();
    unused
}

fn start(dir: &Path) -> Server {
    server::start_with(
        dir,
        &["--model", &dir.join("model").display().to_string()],
        &std::fs::read_to_string(dir.join("learning.toml")).unwrap(),
    )
}

fn route(s: &Server, id: &str, body: &str) -> Value {
    let r = s.post("/v1/route", &json!({"id": id, "body": body}));
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[test]
fn corrections_teach_a_new_intent_and_the_gate_refuses_corrupted_labels() {
    let d = tempfile::tempdir().unwrap();
    let unused = setup(d.path());
    let s = Arc::new(start(d.path()));
    let first = s.admin("GET", "/v1/models", None, &[]).body;
    let original = first["serving"].as_str().unwrap().to_string();

    // A correction to an intent the taxonomy lacks is refused until an admin adds it.
    let r0 = route(&s, "C-0", CRYPTO[0]);
    let fb = json!({"decision_id": r0["decision_id"], "correct_intent": "billing.crypto", "agent": "maria"});
    let r = s.feedback(&fb);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("POST /v1/intents"));
    let add = s.admin("POST", "/v1/intents", Some(&json!({"id": "billing.crypto", "en": "Paying in cryptocurrency", "ru": "Оплата криптовалютой"})), &[]);
    assert_eq!(add.status, 201, "{}", add.body);
    let leafy = s.admin(
        "POST",
        "/v1/intents",
        Some(&json!({"id": "billing.refund.partial", "en": "x", "ru": "x"})),
        &[],
    );
    assert_eq!(leafy.status, 422, "{}", leafy.body);
    let intents = s
        .call("GET", "/v1/intents", server::ROUTE_TOKEN, None, &[])
        .body;
    let crypto = intents["intents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "billing.crypto")
        .unwrap()
        .clone();
    assert_eq!(crypto["in_model"], false);

    // Agents correct 16 crypto tickets; the same correction twice is stored once.
    for (i, text) in CRYPTO[..16].iter().enumerate() {
        let routed = if i == 0 {
            r0.clone()
        } else {
            route(&s, &format!("C-{i}"), text)
        };
        assert_ne!(routed["intent"]["intent"], "billing.crypto");
        let fb = json!({"decision_id": routed["decision_id"], "correct_intent": "billing.crypto", "agent": "maria"});
        let r = s.feedback(&fb);
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["training_label"], true);
        if i == 3 {
            let again = s.feedback(&fb);
            assert_eq!(
                (again.status, &again.body["feedback_id"]),
                (200, &r.body["feedback_id"])
            );
        }
    }
    // A team correction is a rules signal, reported per rule.
    let billing = route(
        &s,
        "T-1",
        "You charged my card twice for the same order, refund the extra charge",
    );
    let fb = json!({"ticket_id": "T-1", "correct_team": "finance-escalations", "agent": "oleg"});
    let r = s.feedback(&fb);
    assert_eq!(
        (r.status, &r.body["rules_signal"]),
        (201, &json!(true)),
        "{}",
        r.body
    );
    assert_eq!(r.body["decision_id"], billing["decision_id"]);
    let report = s.admin("GET", "/v1/feedback/report", None, &[]).body;
    assert_eq!(report["rules"][0]["rule"], "billing", "{report}");
    assert_eq!(report["rules"][0]["right_teams"]["finance-escalations"], 1);
    assert!(report["intent_confusions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["correct"] == "billing.crypto"));

    // Retrain: the candidate learns the new intent, passes the gate and is activated live.
    let job = s.retrain(None);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["created_by"], "alice-admin");
    assert!(job["progress"]["stage"].is_string(), "{job}");
    let r = &job["result"];
    assert_eq!(r["outcome"], "activated", "{}", r["gate"]);
    let gate = &r["gate"];
    assert_eq!(gate["passed"], true);
    assert!(gate["dev"]["active"]["macro_f1"].as_f64().unwrap() > 0.5);
    assert!(gate["held_out_corrections"]["candidate"]["n"]
        .as_u64()
        .is_some());
    let learned = r["model"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["model"]["parent"], original.as_str());
    assert_eq!(r["model"]["status"], "active");
    let mut right = 0;
    for (i, text) in CRYPTO[16..].iter().enumerate() {
        let b = route(&s, &format!("N-{i}"), text);
        assert_eq!(b["model_version"], learned.as_str());
        right += usize::from(b["intent"]["intent"] == "billing.crypto");
    }
    assert!(right >= 3, "{right} of 4 new crypto tickets recognised");

    // The retraining cached the corrections' embeddings with the tickets they came from;
    // erasing one of those tickets removes the entries made from it.
    let made_from = |ticket: &str| {
        std::fs::read_dir(d.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".tickets.json"))
            .filter(|p| {
                let list: Vec<String> = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                list.iter().any(|t| t == ticket)
            })
            .count()
    };
    let cached = made_from("C-1");
    assert!(cached > 0, "the corrections' embeddings are cached");
    let erased = s.admin("DELETE", "/v1/tickets/C-1", None, &[]);
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(
        erased.body["removed"]["embedding_cache"].as_u64(),
        Some(cached as u64)
    );
    assert_eq!(made_from("C-1"), 0);
    let intents = s
        .call("GET", "/v1/intents", server::ROUTE_TOKEN, None, &[])
        .body;
    assert!(intents["labels"]
        .as_array()
        .unwrap()
        .contains(&json!("billing.crypto")));

    // Corrupted labels: 60 tickets "corrected" to the wrong intent; the gate refuses.
    let labels: Vec<String> = intents["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    for (i, (text, intent)) in unused.iter().step_by(7).take(60).enumerate() {
        let b = route(&s, &format!("X-{i}"), text);
        let k = labels.iter().position(|l| l == intent).unwrap();
        let wrong = &labels[(k + 1 + i % 5) % labels.len()];
        let fb =
            json!({"decision_id": b["decision_id"], "correct_intent": wrong, "agent": "saboteur"});
        assert_eq!(s.feedback(&fb).status, 201);
    }
    let job = s.retrain(None);
    let r = &job["result"];
    assert_eq!(r["outcome"], "refused", "{}", r["gate"]);
    let reasons = r["gate"]["reasons"].as_array().unwrap();
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .starts_with("dev macro-F1 would drop from"),
        "{reasons:?}"
    );
    let refused = r["model"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["model"]["status"], "candidate");
    assert!(r["model"]["note"]
        .as_str()
        .unwrap()
        .starts_with("refused by the gate"));
    assert_eq!(
        s.admin("GET", "/v1/models", None, &[]).body["serving"],
        learned.as_str()
    );

    // Shadow: the refused candidate is scored beside the active model, never returned.
    let r = s.admin(
        "POST",
        &format!("/v1/models/{refused}/shadow"),
        Some(&json!({"enabled": true})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for (i, (text, _)) in unused.iter().skip(3).step_by(11).take(12).enumerate() {
        let b = route(&s, &format!("S-{i}"), text);
        assert_eq!(b["model_version"], learned.as_str());
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rep = s
        .admin(
            "GET",
            &format!("/v1/models/{refused}/shadow-report"),
            None,
            &[],
        )
        .body;
    assert_eq!(rep["tickets"], 12, "{rep}");
    assert!(rep["agreement"].as_f64().unwrap() <= 1.0);
    let review = s
        .call(
            "GET",
            "/v1/review?limit=5",
            server::FEEDBACK_TOKEN,
            None,
            &[],
        )
        .body;
    assert_eq!(review["review"].as_array().unwrap().len(), 5, "{review}");

    // Hot swap under concurrent load: nothing fails, every response names a real version.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut versions = Vec::new();
                while !stop.load(Ordering::Relaxed) || versions.len() < 5 {
                    let r = s.post(
                        "/v1/route",
                        &json!({"body": format!("client {c}: can I pay with bitcoin?")}),
                    );
                    assert_eq!(r.status, 200, "{}", r.body);
                    versions.push(r.body["model_version"].as_str().unwrap().to_string());
                }
                versions
            })
        })
        .collect();
    for _ in 0..2 {
        let r = s.admin("POST", "/v1/models/rollback", None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = s.admin("POST", &format!("/v1/models/{learned}/activate"), None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        for v in c.join().unwrap() {
            assert!(v == learned || v == original, "{v}");
        }
    }
    let models = s.admin("GET", "/v1/models", None, &[]).body;
    assert_eq!(models["serving"], learned.as_str());
    assert_eq!(models["models"].as_array().unwrap().len(), 3);

    // The CLI works on the same registry; the running server follows it.
    let config = d.path().join("router.toml").display().to_string();
    let (ok, out, err) = common::run(&["models", "list", "--config", &config]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("| {learned} | active |")), "{out}");
    assert!(
        out.contains(&format!("| {refused} | candidate | yes |")),
        "{out}"
    );
    let (ok, _, err) = common::run(&["models", "rollback", "--config", &config]);
    assert!(ok, "{err}");
    let mut serving = String::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        serving = s.admin("GET", "/v1/models", None, &[]).body["serving"]
            .as_str()
            .unwrap()
            .to_string();
        if serving == original {
            break;
        }
    }
    assert_eq!(serving, original, "the server follows the CLI's rollback");
    let (ok, out, err) = common::run(&["retrain", "--config", &config]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("refused by the gate: dev macro-F1 would drop"),
        "{err}"
    );
    assert!(out.contains("\"passed\": false"), "{out}");
}

#[test]
fn a_retraining_job_reports_progress_and_stops_when_cancelled() {
    let d = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The whole curated set with an empty cache: embedding it takes long enough to cancel.
    let learning = format!(
        "[learning]\nbase_data = \"{}\"\ndev_data = \"{}\"\ncache_dir = \"{}\"\nretrain_after = 0\n",
        root.join("training-data/train.jsonl").display(),
        root.join("training-data/dev.jsonl").display(),
        d.path().join("cache").display()
    );
    let s = server::start_with(d.path(), &[], &learning);
    let models_before = s.admin("GET", "/v1/models", None, &[]).body["models"].clone();
    let r = s.admin(
        "POST",
        "/v1/models/retrain",
        Some(&json!({"fine_tune": false})),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "running");
    let location = r.header["location"].clone();
    // Fine-tuning the encoder is refused inside serve (named in the message), before the
    // running job is looked at.
    let ft = s.admin(
        "POST",
        "/v1/models/retrain",
        Some(&json!({"fine_tune": true})),
        &[],
    );
    assert_eq!(ft.status, 422, "{}", ft.body);
    let message = ft.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("fine_tune: retraining inside serve trains the head only")
            && message.contains("intent-router train --fine-tune"),
        "{message}"
    );
    // A second retraining is refused while one runs.
    let again = s.admin("POST", "/v1/models/retrain", None, &[]);
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.body["error"]["code"], "retrain_running");
    // Progress shows while it embeds.
    let start = std::time::Instant::now();
    loop {
        let job = s.admin("GET", &location, None, &[]).body;
        let p = &job["progress"];
        if p["stage"] == "embedding" && p["done"].as_u64().unwrap() > 0 {
            assert!(p["done"].as_u64() < p["total"].as_u64(), "{job}");
            break;
        }
        assert_eq!(job["status"], "running", "{job}");
        assert!(start.elapsed().as_secs() < 120, "no progress: {job}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let c = s.admin("POST", &format!("{location}/cancel"), None, &[]);
    assert_eq!(c.status, 202, "{}", c.body);
    assert_eq!(c.body["cancel_requested"], true);
    let job = s.wait_job(&location);
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job["finished_at"].is_string());
    // Nothing was registered, and an ended job cannot be cancelled.
    assert_eq!(
        s.admin("GET", "/v1/models", None, &[]).body["models"],
        models_before
    );
    let c = s.admin("POST", &format!("{location}/cancel"), None, &[]);
    assert_eq!(c.status, 409, "{}", c.body);
    assert_eq!(c.body["error"]["code"], "job_finished");
    let list = s.admin("GET", "/v1/jobs", None, &[]).body;
    assert_eq!(list["jobs"][0]["id"], job["id"]);
}
