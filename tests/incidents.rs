//! Incidents end to end over real HTTP: a wave of tickets about one failure, routed through the
//! real model, opens an incident (the detector runs inside `serve`, off the request path);
//! the wave's later tickets are linked as they are routed (the decision says so and why, and a
//! rule on `when.incident` acts on it), tickets of other intents are not, and a restart on the
//! same database keeps linking.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use intent_router::connector::sign;

use crate::common::helpdesk::{Helpdesk, Reply};
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

/// The usual traffic (three rounds, none linked), then the wave a ticket at a time until one
/// is linked as it is routed: its place in the wave and its decision.
pub fn wave_until_linked(s: &Server) -> (usize, Value) {
    for round in 0..3 {
        for (i, text) in USUAL.iter().enumerate() {
            let d = route(s, &format!("usual-{round}-{i}"), text);
            assert!(d.get("incident_id").is_none(), "{d}");
        }
    }
    let start_wave = Instant::now();
    for i in 0..80 {
        let d = route(s, &format!("wave-{i}"), &wave(i));
        if d.get("incident_id").is_some() {
            return (i, d);
        }
        assert!(
            start_wave.elapsed() < Duration::from_secs(60),
            "no incident after {i} tickets"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    panic!(
        "80 tickets of one failure opened no incident:\n{}",
        s.log.lock().unwrap()
    )
}

pub fn route(s: &Server, id: &str, body: &str) -> Value {
    let r = s.post(
        "/v1/route",
        &json!({"id": id, "body": body, "language": if body.is_ascii() { "en" } else { "ru" }}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The secret alerts are signed with here.
const ALERT_SECRET: &str = "alerts-0123456789abcdef";

/// Alerts go to `receiver`.
fn start(dir: &Path, receiver: &Helpdesk) -> Server {
    let alerts = format!(
        "\n[incidents.alerts]\nurl = \"{}/hooks/incidents\"\nsecrets = [\"{ALERT_SECRET}\"]\n",
        receiver.base
    );
    server::start_with(dir, &[], &format!("{CONFIG}{alerts}"))
}

#[test]
fn a_wave_of_one_failure_opens_an_incident_that_its_later_tickets_join() {
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "{}\n[[rules]]\nid = \"incident-wave\"\ndescription = \"A known incident's tickets wait for its fix\"\nwhen.incident = true\nthen = {{ status = \"pending\", tags = [\"incident\"] }}\n",
        intent_router::rules::DEFAULT_RULES
    );
    std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
    // The alert receiver fails once: the alert is tried again.
    let receiver = Helpdesk::start();
    receiver.script(vec![Reply::new(503, "busy")]);
    let s = start(dir.path(), &receiver);
    let (n, d) = wave_until_linked(&s);
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
    alerted(&s, &receiver, &incident);
    drop(s);
    let s = start(dir.path(), &receiver);
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
    // What its tickets say, from their kept texts.
    let summary = &one.body["summary"];
    assert_eq!(
        summary["texts"].as_u64(),
        Some(links.len() as u64),
        "{summary}"
    );
    let top: Vec<&str> = summary["top_words"]["en"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["word"].as_str().unwrap())
        .collect();
    assert!(
        top.contains(&"gateway") && top.contains(&"502"),
        "{summary}"
    );
    assert_eq!(summary["top_words"]["ru"], json!([]));
    let representative = summary["representative"].as_array().unwrap();
    assert_eq!(representative.len(), 3, "{summary}");
    assert!(representative[0]["similarity"].as_f64().unwrap() > 0.9);
    assert!(representative[0]["excerpt"]
        .as_str()
        .unwrap()
        .contains("payment failed at checkout"));
    corrections(&s, &incident, id, links.len());
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
    let split = s.call(
        "GET",
        "/v1/incidents?status=open",
        FEEDBACK_TOKEN,
        None,
        &[],
    );
    for other in split.body["incidents"].as_array().unwrap() {
        let path = format!("/v1/incidents/{}", other["id"].as_str().unwrap());
        let body = r#"{"status": "dismissed"}"#;
        let r = s.call("PATCH", &path, FEEDBACK_TOKEN, Some(body), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
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

/// Agents correct an incident: unlink a ticket, split two off, merge them back and undo the
/// merge; the linking report counts the unlink; the wave's tickets still join.
fn corrections(s: &Server, incident: &str, unlinked: &str, tickets: usize) {
    let call = |method: &str, path: &str, body: Option<&str>| {
        s.call(method, path, FEEDBACK_TOKEN, body, &[])
    };
    let at = |what: &str| format!("/v1/incidents/{incident}/{what}");
    let one = format!(r#"{{"decisions": ["{unlinked}"]}}"#);
    let r = call("POST", &at("unlink"), Some(&one));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["tickets"].as_u64(), Some(tickets as u64 - 1));
    let ids: Vec<&str> = r.body["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["decision_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&unlinked), "{}", r.body);
    let again = call("POST", &at("unlink"), Some(&one));
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.body["error"]["code"], "incident_conflict");
    assert_eq!(
        again.body["error"]["message"],
        format!("decision {unlinked} is not linked to incident {incident}")
    );
    let empty = call("POST", &at("unlink"), Some(r#"{"decisions": []}"#));
    assert_eq!(empty.status, 422, "{}", empty.body);
    let nowhere = call("POST", "/v1/incidents/nope/unlink", Some(&one));
    assert_eq!(nowhere.status, 404, "{}", nowhere.body);
    // Two tickets split off into a new incident.
    let two = json!({"decisions": [ids[0], ids[1]]}).to_string();
    let split = call("POST", &at("split"), Some(&two));
    assert_eq!(split.status, 201, "{}", split.body);
    let new = split.body["id"].as_str().unwrap().to_string();
    assert_eq!(split.body["split_from"], json!(incident));
    assert_eq!(split.body["tickets"], 2);
    assert_eq!(split.body["links"][0]["linked_by"], "person");
    assert_eq!(split.body["intent"], "billing.payment_failed");
    let left = call("GET", &format!("/v1/incidents/{incident}"), None);
    assert_eq!(left.body["tickets"].as_u64(), Some(tickets as u64 - 3));
    // Merged back, each ticket remembering where from; the merge is undone.
    let body = json!({"incidents": [new]}).to_string();
    let merged = call("POST", &at("merge"), Some(&body));
    assert_eq!(merged.status, 200, "{}", merged.body);
    assert_eq!(merged.body["tickets"].as_u64(), Some(tickets as u64 - 1));
    let from_new = merged.body["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["merged_from"] == json!(new))
        .count();
    assert_eq!(from_new, 2, "{}", merged.body);
    let gone = call("GET", &format!("/v1/incidents/{new}"), None);
    assert_eq!(gone.body["merged_into"], json!(incident), "{}", gone.body);
    let twice = call("POST", &at("merge"), Some(&body));
    assert_eq!(twice.status, 409, "{}", twice.body);
    let itself = json!({"incidents": [incident]}).to_string();
    let r = call("POST", &at("merge"), Some(&itself));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        r.body["error"]["message"],
        format!("incident {incident} cannot be merged into itself")
    );
    let back = call("POST", &format!("/v1/incidents/{new}/unmerge"), None);
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(
        (back.body["tickets"].as_u64(), back.body.get("merged_into")),
        (Some(2), None)
    );
    let not = call("POST", &format!("/v1/incidents/{new}/unmerge"), None);
    assert_eq!(not.status, 409, "{}", not.body);
    // The report counts the unlink; the wave's next ticket still joins the incident.
    let report = call("GET", "/v1/incidents/link-report?days=7", None);
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(report.body["unlinked"], 1, "{}", report.body);
    assert!(report.body["links"].as_u64().unwrap() >= tickets as u64 - 3);
    assert_eq!(report.body["link_probability"], 0.5);
    assert!(report.body["note"].as_str().unwrap().contains("1 of the 5"));
    let bad = call("GET", "/v1/incidents/link-report?days=0", None);
    assert_eq!(bad.status, 400, "{}", bad.body);
    let d = route(s, "wave-after-corrections", &wave(40));
    assert!(
        d["incident_id"] == json!(incident) || d["incident_id"] == json!(new),
        "{d}"
    );
}

/// The incident's opening was alerted: signed, sent again after the receiver's 503, the same
/// body and delivery id each time, recorded as delivered and counted in the metrics.
fn alerted(s: &Server, receiver: &Helpdesk, incident: &str) {
    let got = receiver.wait_for(2, 30);
    let now = chrono::Utc::now().timestamp();
    for req in &got[..2] {
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/hooks/incidents")
        );
        let signature = &req.headers["x-intent-router-signature"];
        sign::verify(signature, &[ALERT_SECRET], req.body.as_bytes(), now, 300).unwrap();
        assert_eq!(req.headers["x-intent-router-event"], "incident.opened");
        assert_eq!(
            req.headers["x-intent-router-delivery"],
            got[0].headers["x-intent-router-delivery"]
        );
        assert_eq!(req.body, got[0].body);
    }
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["event"], "incident.opened");
    assert_eq!(body["incident_id"], json!(incident));
    assert_eq!(body["intent"], "billing.payment_failed");
    assert!(body["tickets"].as_i64().unwrap() >= 4, "{body}");
    let mut list = Value::Null;
    for _ in 0..50 {
        list = s
            .admin("GET", "/v1/incidents/alerts?state=delivered", None, &[])
            .body;
        if !list["alerts"].as_array().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = &list["alerts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (first["attempts"].as_i64(), first["last_status"].as_i64()),
        (Some(2), Some(200)),
        "{list}"
    );
    assert_eq!(first["body"], body);
    let metrics = s.call("GET", "/metrics", server::METRICS_TOKEN, None, &[]);
    let text = metrics.body.as_str().unwrap();
    for want in [
        "intent_router_incident_alerts_total{outcome=\"retry\"} 1",
        "intent_router_incident_alerts_total{outcome=\"delivered\"}",
        "intent_router_incidents_opened_total 1",
        "intent_router_incidents_live 1",
    ] {
        assert!(text.contains(want), "missing {want}");
    }
    let none = s.admin("POST", "/v1/incidents/alerts/nope/retry", None, &[]);
    assert_eq!(none.status, 404, "{}", none.body);
    // The wave's tickets linked while routed double it: an alert says it grew.
    let opened_with = body["tickets"].as_i64().unwrap();
    for i in 0..2 * opened_with {
        let d = route(s, &format!("wave-grows-{i}"), &wave(200 + i as usize));
        assert_eq!(d["incident_id"], json!(incident), "{d}");
    }
    let got = receiver.wait_for(3, 30);
    assert_eq!(got[2].headers["x-intent-router-event"], "incident.grew");
    let grew: Value = serde_json::from_str(&got[2].body).unwrap();
    assert!(
        grew["tickets"].as_i64().unwrap() >= 2 * opened_with,
        "{grew}"
    );
}
