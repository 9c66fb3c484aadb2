//! The Zendesk connector end to end: the real binary receives Zendesk's event and trigger
//! webhooks, signed as Zendesk signs them (base64 HMAC-SHA256 of the timestamp and the body),
//! and updates the ticket through a fake Zendesk API on 127.0.0.1: the exact request, a 409
//! of `safe_update` (an agent acted first), an unmapped team, our own updates ignored, a
//! solved ticket closing the assignment, and the rules warning about unmapped teams.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::helpdesk::{Helpdesk, Reply};
use crate::server::{self, Server};
use intent_router::connector::sign;

const SECRET: &str = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==";

fn config(desk: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "zendesk"
kind = "zendesk"
[connectors.inbound]
secrets = ["{SECRET}"]
integration_user_id = 900
[connectors.write_back]
url = "{desk}"
email = "router@acme.example"
api_token = "zd-api-token-0123456789"
groups = {{ billing = 360001, oncall = 360009 }}
agents = {{ ann = 3611, bob = 3612 }}
"#
    )
}

/// Posts `body` signed as Zendesk signs it, at `stamp` (RFC 3339).
fn send_at(s: &Server, body: &Value, stamp: &str, secret: &str) -> server::Resp {
    let text = body.to_string();
    let mac = sign::hmac_sha256(secret.as_bytes(), &[stamp.as_bytes(), text.as_bytes()]);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac);
    let headers = [
        ("X-Zendesk-Webhook-Signature", signature.as_str()),
        ("X-Zendesk-Webhook-Signature-Timestamp", stamp),
        ("X-Zendesk-Webhook-Id", "01GK8E6BKWMJZD2T8Y5AXJQMG5"),
    ];
    s.call(
        "POST",
        "/v1/connectors/zendesk/events",
        "",
        Some(&text),
        &headers,
    )
}

fn send(s: &Server, body: &Value) -> server::Resp {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    send_at(s, body, &now, SECRET)
}

/// A ticket event as Zendesk sends it (`zen:event-type:ticket.*`).
fn event(kind: &str, id: &str, detail: Value, event: Value) -> Value {
    json!({"type": format!("zen:event-type:ticket.{kind}"), "account_id": 88888888,
           "id": id, "time": "2026-12-06T10:00:00Z", "zendesk_event_version": "2022-11-06",
           "subject": format!("zen:ticket:{}", detail["id"].as_str().unwrap()),
           "detail": detail, "event": event})
}

fn created(id: &str, ticket: &str, subject: &str, description: &str) -> Value {
    event(
        "created",
        id,
        json!({"id": ticket, "subject": subject, "description": description,
        "status": "NEW", "priority": "NORMAL", "requester_id": "20978392", "actor_id": "20978392",
        "tags": ["web"], "via": {"channel": "web_form"},
        "created_at": "2026-12-06T10:00:00Z", "updated_at": "2026-12-06T10:00:00Z"}),
        json!({"meta": {"sequence": {"id": "s1", "position": 1}}}),
    )
}

fn wait_outbox(s: &Server, state: &str) -> Value {
    for _ in 0..300 {
        let r = s.admin(
            "GET",
            &format!("/v1/connectors/zendesk/outbox?state={state}"),
            None,
            &[],
        );
        if !r.body["write_backs"].as_array().unwrap().is_empty() {
            return r.body["write_backs"][0].clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "no {state} write-back: {}",
        s.admin("GET", "/v1/connectors/zendesk/outbox", None, &[])
            .body
    );
}

#[test]
fn zendesk_tickets_are_routed_and_updated_in_zendesk() {
    let desk = Helpdesk::start();
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &config(&desk.base));
    let refund = created(
        "01HNX-1",
        "35436",
        "Refund please",
        "You charged my card twice for the same order, I want my money back",
    );
    let r = send(&s, &refund);
    assert_eq!(
        (r.status, r.body["kind"].clone()),
        (202, json!("created")),
        "{}",
        r.body
    );

    // The update: PUT with basic auth as the integration user, group and agent by their
    // Zendesk ids, our tag added to the ticket's own, an internal note, and safe_update.
    let got = desk.wait_for(1, 30);
    let put = &got[0];
    assert_eq!(
        (put.method.as_str(), put.path.as_str()),
        ("PUT", "/api/v2/tickets/35436.json")
    );
    let auth = base64::engine::general_purpose::STANDARD
        .encode("router@acme.example/token:zd-api-token-0123456789");
    assert_eq!(put.headers["authorization"], format!("Basic {auth}"));
    let body: Value = serde_json::from_str(&put.body).unwrap();
    let t = &body["ticket"];
    let agent = match t["assignee_id"].as_i64() {
        Some(3611) => "ann",
        Some(3612) => "bob",
        other => panic!("assignee {other:?}"),
    };
    assert_eq!(t["group_id"], 360001);
    assert_eq!(
        (t["priority"].clone(), t["status"].clone()),
        (json!("normal"), json!("open"))
    );
    assert_eq!(t["additional_tags"], json!(["intent-router"]));
    assert_eq!(
        (t["safe_update"].clone(), t["updated_stamp"].clone()),
        (json!(true), json!("2026-12-06T10:00:00Z"))
    );
    assert_eq!(t["comment"]["public"], false);
    let note = t["comment"]["body"].as_str().unwrap();
    assert!(
        note.starts_with("intent-router: billing") && note.contains("team billing"),
        "{note}"
    );
    let keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "additional_tags",
            "assignee_id",
            "comment",
            "group_id",
            "priority",
            "safe_update",
            "status",
            "updated_stamp"
        ]
    );
    wait_outbox(&s, "delivered");

    // Our own update comes back as an event: ignored, nothing routed or written.
    let ours = event(
        "status_changed",
        "01HNX-2",
        json!({"id": "35436", "actor_id": "900",
        "tags": ["intent-router"], "updated_at": "2026-12-06T10:00:05Z"}),
        json!({"current": "OPEN", "previous": "NEW"}),
    );
    let r = send(&s, &ours);
    assert_eq!((r.status, r.body["kind"].clone()), (202, json!("ignored")));
    // An agent solves it: the assignment closes.
    assert_eq!(crate::connectors::open_billing(&s), 1);
    let solved = event(
        "status_changed",
        "01HNX-3",
        json!({"id": "35436", "actor_id": "3611",
        "tags": ["web", "intent-router"], "updated_at": "2026-12-06T11:00:00Z"}),
        json!({"current": "SOLVED", "previous": "OPEN"}),
    );
    let r = send(&s, &solved);
    assert_eq!(r.body["kind"], "closed", "{}", r.body);
    crate::connectors::wait_billing_closed(&s);
    let closed = s
        .admin("GET", "/v1/assignments?team=billing&open=false", None, &[])
        .body;
    assert_eq!(closed["assignments"][0]["agent"], agent);

    // An agent moves the ticket to another group: a team correction from the helpdesk.
    let moved = event(
        "group_assignment_changed",
        "01HNX-5",
        json!({"id": "35436", "actor_id": "3612",
        "tags": ["web", "intent-router"], "updated_at": "2026-12-06T10:30:00Z"}),
        json!({"current": {"id": "360009"}, "previous": {"id": "360001"}}),
    );
    assert_eq!(send(&s, &moved).body["kind"], "reassigned");
    let note = crate::connectors::reassignment_note(&s, "zendesk");
    assert_eq!(
        note,
        "correction by bob: team oncall, not billing; its assignment is closed"
    );
    let fb = s.admin("GET", "/v1/feedback/report", None, &[]).body;
    assert_eq!(fb["feedback"], 1, "{fb}");

    // An agent changed the ticket before our update: 409, superseded, not retried.
    desk.script(vec![Reply::new(409, r#"{"error":"UpdateConflict"}"#)]);
    let outage = created(
        "01HNX-4",
        "35437",
        "Everything is down",
        "Your whole platform is down for everyone in our company since 9am!",
    );
    assert_eq!(send(&s, &outage).status, 202);
    let w = wait_outbox(&s, "superseded");
    assert_eq!(
        (
            w["ticket_id"].clone(),
            w["last_status"].clone(),
            w["attempts"].clone()
        ),
        (json!("35437"), json!(409), json!(1))
    );
    // A trigger's body (the README's template) for a team without a Zendesk group: dead at
    // once with the reason, nothing sent.
    let trigger = json!({"event": "created", "ticket": {"id": "35438", "title": "Pricing",
        "description": "Сколько стоит тариф для команды из 30 человек? Можно демо?",
        "channel": "Web form", "tags": "web trial", "updated_at": "2026-12-06T10:02:00Z", "actor_id": "20978392"}});
    let r = send(&s, &trigger);
    assert_eq!(
        (r.status, r.body["kind"].clone()),
        (202, json!("created")),
        "{}",
        r.body
    );
    let dead = wait_outbox(&s, "dead");
    assert_eq!(
        dead["last_error"],
        "team \"sales\" has no Zendesk group: add it to write_back.groups"
    );
    assert_eq!(desk.requests().len(), 2);
    // The mapping fixed (SIGHUP) and the dead letter retried: rebuilt with the group, and the
    // trigger's stamp kept for safe_update; delivered.
    let fixed = config(&desk.base).replace("oncall = 360009", "oncall = 360009, sales = 360002");
    server::write_config(d.path(), &fixed);
    let pid = s.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    s.wait_log("SIGHUP: tokens and connectors reloaded");
    let id = dead["id"].as_str().unwrap();
    let retry = s.admin(
        "POST",
        &format!("/v1/connectors/zendesk/outbox/{id}/retry"),
        None,
        &[],
    );
    assert_eq!(retry.status, 202, "{}", retry.body);
    let got = desk.wait_for(3, 30);
    assert_eq!(got[2].path, "/api/v2/tickets/35438.json");
    let t: Value = serde_json::from_str(&got[2].body).unwrap();
    assert_eq!(
        (
            t["ticket"]["group_id"].clone(),
            t["ticket"]["updated_stamp"].clone()
        ),
        (json!(360002), json!("2026-12-06T10:02:00Z"))
    );
    // The same trigger body again is the same delivery.
    assert_eq!(send(&s, &trigger).body["duplicate"], true);

    // Refused: a wrong secret, a stale timestamp (nothing stored).
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = send_at(&s, &refund, &now, "another-secret-0123456789");
    assert_eq!(r.status, 401, "{}", r.body);
    let old = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = send_at(&s, &created("01HNX-9", "1", "x", "y"), &old, SECRET);
    assert_eq!(r.status, 401);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Zendesk-Webhook-Signature-Timestamp: 3600 s away"),
        "{}",
        r.body
    );

    // The rules name teams and agents Zendesk has no id for: said when they are read.
    let rules = s.admin("GET", "/v1/rules", None, &[]).body;
    let warnings: Vec<&str> = rules["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(warnings.contains(&"connector zendesk: rule \"tech\" sends tickets to team \"tech-support\", which has no Zendesk id: their write-backs will be dead letters (add it to write_back.groups)"), "{warnings:#?}");
    // Billing, and sales since the reload, have their groups.
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("team \"billing\"") || w.contains("team \"sales\"")),
        "{warnings:#?}"
    );
}
