//! Incidents end to end over real HTTP: a wave of tickets about one failure, routed through the
//! real model, opens an incident (the detector runs inside `serve`, off the request path);
//! the wave's later tickets are linked as they are routed (the decision says so and why, and a
//! rule on `when.incident` acts on it), tickets of other intents are not, and a restart on the
//! same database keeps linking.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{self, Server, FEEDBACK_TOKEN};

/// The detector reads the log every second here (10 s by default).
pub const CONFIG: &str = "\n[incidents]\ncheck_every_seconds = 1\n";

/// The usual traffic: several intents, both languages.
pub const USUAL: &[&str] = &[
    "I forgot my password and the reset link never arrives",
    "Please change the e-mail address on my profile",
    "Where is my order? It was supposed to arrive on Monday",
    "I want to cancel my order before it ships",
    "Can you send me the invoice for last month?",
    "How much does the business plan cost for 20 users?",
    "The export button does nothing in Firefox",
    "Great service, thank you for the quick help!",
    "Не могу войти в личный кабинет, пишет неверный пароль",
    "Где мой заказ? Трек-номер не обновляется уже неделю",
    "Пришлите, пожалуйста, счёт за прошлый месяц",
    "Хочу вернуть деньги за подписку, я ей не пользуюсь",
];

/// One failure in the words of many customers.
pub fn wave(i: usize) -> String {
    let opening = ["Hi,", "Hello,", "Urgent:", "Help!", "Good morning,"][i % 5];
    let card = ["Visa", "Mastercard", "card", "debit card"][i % 4];
    format!("{opening} my {card} payment failed at checkout with error 502 from the payment gateway, the order is not placed")
}

pub fn route(s: &Server, id: &str, body: &str) -> Value {
    let r = s.post(
        "/v1/route",
        &json!({"id": id, "body": body, "language": if body.is_ascii() { "en" } else { "ru" }}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn start(dir: &Path) -> Server {
    server::start_with(dir, &[], CONFIG)
}

#[test]
fn a_wave_of_one_failure_opens_an_incident_that_its_later_tickets_join() {
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "{}\n[[rules]]\nid = \"incident-wave\"\ndescription = \"A known incident's tickets wait for its fix\"\nwhen.incident = true\nthen = {{ status = \"pending\", tags = [\"incident\"] }}\n",
        intent_router::rules::DEFAULT_RULES
    );
    std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
    let s = start(dir.path());
    for round in 0..3 {
        for (i, text) in USUAL.iter().enumerate() {
            let d = route(&s, &format!("usual-{round}-{i}"), text);
            assert!(d.get("incident_id").is_none(), "{d}");
        }
    }
    // The wave, a ticket at a time, until one is linked as it is routed.
    let start_wave = Instant::now();
    let mut linked = None;
    for i in 0..80 {
        let d = route(&s, &format!("wave-{i}"), &wave(i));
        if d.get("incident_id").is_some() {
            linked = Some((i, d));
            break;
        }
        assert!(
            start_wave.elapsed() < Duration::from_secs(60),
            "no incident after {i} tickets"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    let (n, d) = linked.unwrap_or_else(|| {
        panic!(
            "80 tickets of one failure opened no incident:\n{}",
            s.log.lock().unwrap()
        )
    });
    assert!(
        n >= 3,
        "linked after {n} tickets: at least min_tickets open one"
    );
    let incident = d["incident_id"].as_str().unwrap().to_string();
    let why = d["incident_link"].as_str().unwrap();
    assert!(
        why.starts_with(&format!("linked to incident {incident}: cosine "))
            && why.ends_with("likely"),
        "{why}"
    );
    assert_eq!(
        d["status"], "pending",
        "the rule on when.incident acted: {d}"
    );
    assert!(d["tags"].as_array().unwrap().contains(&json!("incident")));
    assert!(s.log.lock().unwrap().contains("incident opened"));
    // The decision log keeps it; a dry run shows the same link without counting it.
    let id = d["decision_id"].as_str().unwrap();
    let logged = s.admin("GET", &format!("/v1/decisions/{id}"), None, &[]);
    assert_eq!(
        logged.body["incident_id"],
        json!(incident),
        "{}",
        logged.body
    );
    let dry = s.post(
        "/v1/route/dry-run",
        &json!({"body": wave(n + 1), "language": "en"}),
    );
    assert_eq!(dry.body["incident_id"], json!(incident), "{}", dry.body);
    // Other intents are not the incident's.
    let other = route(&s, "usual-after", USUAL[3]);
    assert!(other.get("incident_id").is_none(), "{other}");
    assert_ne!(other["status"], "pending");
    // A restart on the same database links the wave's next tickets to the same incident.
    drop(s);
    let s = start(dir.path());
    let again = route(&s, "wave-after-restart", &wave(n + 2));
    assert_eq!(again["incident_id"], json!(incident), "{again}");
    // The watch took up the log again and opens no second incident for the same wave.
    s.wait_log("detector rebuilt from the decision log");
    for i in 0..5 {
        let d = route(&s, &format!("wave-late-{i}"), &wave(n + 3 + i));
        assert_eq!(d["incident_id"], json!(incident), "{d}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let log = s.log.lock().unwrap();
    assert!(!log.contains("incident opened"), "{log}");
    drop(log);
    // Agents read it with its tickets, and dismiss it: the wave's tickets stop joining it.
    let list = s.call(
        "GET",
        "/v1/incidents?status=open",
        FEEDBACK_TOKEN,
        None,
        &[],
    );
    assert_eq!(list.status, 200, "{}", list.body);
    let listed = &list.body["incidents"][0];
    assert_eq!(listed["id"], json!(incident), "{}", list.body);
    assert_eq!(listed["intent"], "billing.payment_failed");
    assert!(
        listed["detection"]["count"].as_u64().unwrap() >= 4,
        "{listed}"
    );
    let one = s.call(
        "GET",
        &format!("/v1/incidents/{incident}"),
        FEEDBACK_TOKEN,
        None,
        &[],
    );
    let links = one.body["links"].as_array().unwrap();
    assert_eq!(one.body["tickets"].as_u64(), Some(links.len() as u64));
    let by = |how: &str| links.iter().filter(|l| l["linked_by"] == how).count();
    assert!(by("detection") >= 4 && by("routing") >= 7, "{}", one.body);
    assert!(links.iter().any(|l| l["decision_id"] == json!(id)));
    let bad = s.call(
        "PATCH",
        &format!("/v1/incidents/{incident}"),
        FEEDBACK_TOKEN,
        Some(r#"{"status": "closed"}"#),
        &[],
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown variant `closed`, expected one of `open`, `acknowledged`"));
    let missing = s.call(
        "PATCH",
        "/v1/incidents/nope",
        FEEDBACK_TOKEN,
        Some(r#"{"status": "resolved"}"#),
        &[],
    );
    assert_eq!(missing.status, 404, "{}", missing.body);
    let done = s.call(
        "PATCH",
        &format!("/v1/incidents/{incident}"),
        FEEDBACK_TOKEN,
        Some(r#"{"status": "dismissed"}"#),
        &[],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["status"], "dismissed");
    let after = route(&s, "wave-dismissed", &wave(n + 9));
    assert!(after.get("incident_id").is_none(), "{after}");
    let open = s.call(
        "GET",
        "/v1/incidents?status=open",
        FEEDBACK_TOKEN,
        None,
        &[],
    );
    assert_eq!(open.body["incidents"], json!([]));
}
