//! The Freshdesk connector end to end: an automation rule's webhook (basic auth, Freshdesk
//! signs nothing) is routed and the ticket updated through a fake Freshdesk API on 127.0.0.1,
//! its tags read first and ours added (Freshdesk's update replaces them).

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::helpdesk::{Helpdesk, Reply};
use crate::server::{self, Server};

const SECRET: &str = "router:freshdesk-basic-password-0123";

fn config(desk: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "freshdesk"
kind = "freshdesk"
[connectors.inbound]
secrets = ["{SECRET}"]
[connectors.write_back]
url = "{desk}"
api_token = "freshdesk-api-key-0123"
groups = {{ billing = 8000001, oncall = 8000002 }}
agents = {{ ann = 9001, bob = 9002 }}
"#
    )
}

fn send(s: &Server, body: &Value, credentials: &str) -> server::Resp {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    );
    s.call(
        "POST",
        "/v1/connectors/freshdesk/events",
        "",
        Some(&body.to_string()),
        &[("Authorization", auth.as_str())],
    )
}

fn rule(event: &str, id: i64, tags: &str) -> Value {
    json!({"event": event, "ticket": {"id": id, "subject": "Refund please",
        "description": "You charged my card twice for the same order, I want my money back",
        "source": "Email", "tags": tags, "updated_at": "2026-12-06T10:00:00Z"}})
}

#[test]
fn freshdesk_tickets_are_routed_and_updated_keeping_their_tags() {
    let desk = Helpdesk::start();
    // The ticket as Freshdesk returns it: its own tags.
    desk.script(vec![Reply::new(
        200,
        r#"{"id": 5, "tags": ["web", "refund"]}"#,
    )]);
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &config(&desk.base));
    assert_eq!(
        send(
            &s,
            &rule("created", 5, "web, refund"),
            "router:wrong-password-0123456"
        )
        .status,
        401
    );
    let r = send(&s, &rule("created", 5, "web, refund"), SECRET);
    assert_eq!(
        (r.status, r.body["kind"].clone()),
        (202, json!("created")),
        "{}",
        r.body
    );
    assert_eq!(
        send(&s, &rule("created", 5, "web, refund"), SECRET).body["duplicate"],
        true
    );

    let got = desk.wait_for(3, 30);
    let calls: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", "/api/v2/tickets/5"),
            ("PUT", "/api/v2/tickets/5"),
            ("POST", "/api/v2/tickets/5/notes")
        ]
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("freshdesk-api-key-0123:X")
    );
    assert!(got.iter().all(|r| r.headers["authorization"] == auth));
    let put: Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(
        (put["group_id"].clone(), put["status"].clone()),
        (json!(8000001), json!(2))
    );
    assert!(
        put["responder_id"] == 9001 || put["responder_id"] == 9002,
        "{put}"
    );
    let tags = put["tags"].as_array().unwrap();
    assert_eq!(
        &tags[..2],
        [json!("web"), json!("refund")],
        "the ticket's own tags first"
    );
    assert_eq!(tags.last().unwrap(), "intent-router");
    let note: Value = serde_json::from_str(&got[2].body).unwrap();
    assert_eq!(note["private"], true);

    // A rule that fires on the tagged ticket again is an echo; a resolved one closes.
    assert_eq!(
        send(
            &s,
            &rule("created", 5, "web, refund, intent-router"),
            SECRET
        )
        .body["kind"],
        "ignored"
    );
    let mut resolved = rule("resolved", 5, "web");
    resolved["ticket"]["updated_at"] = json!("2026-12-06T11:00:00Z");
    assert_eq!(send(&s, &resolved, SECRET).body["kind"], "closed");
    crate::connectors::wait_billing_closed(&s);
    assert_eq!(desk.requests().len(), 3);

    // Bob moves the ticket to On call's group: a correction from the helpdesk.
    let mut moved = rule("group_changed", 5, "web,intent-router");
    moved["ticket"]["updated_at"] = json!("2026-12-06T12:00:00Z");
    moved["changes"] = json!({"group_id": {"from": 8000001, "to": 8000002}});
    moved["agent_id"] = json!(9002);
    assert_eq!(send(&s, &moved, SECRET).body["kind"], "reassigned");
    let note = crate::connectors::reassignment_note(&s, "freshdesk");
    assert_eq!(
        note,
        "correction by bob: team oncall, not billing; its assignment is closed"
    );
}
