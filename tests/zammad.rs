//! The Zammad connector end to end: the real binary receives a Zammad trigger's webhook
//! (signed `X-Hub-Signature` with HMAC-SHA1, delivered with `X-Zammad-Delivery` and the
//! trigger's name) and updates the ticket through a fake Zammad API on 127.0.0.1.

use serde_json::{json, Value};

use crate::common::helpdesk::Helpdesk;
use crate::server::{self, Server};
use intent_router::connector::sign;

const SECRET: &str = "zammad-signature-token-0123";

fn config(desk: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "zammad"
kind = "zammad"
[connectors.inbound]
secrets = ["{SECRET}"]
integration_user_id = 7
[connectors.events]
created = ["intent-router: new ticket"]
closed = ["intent-router: closed"]
reassigned = ["intent-router: group changed"]
[connectors.write_back]
url = "{desk}"
api_token = "zammad-api-token-0123"
groups = {{ billing = "Billing", oncall = 4 }}
agents = {{ ann = 11, bob = 12 }}
"#
    )
}

fn send(s: &Server, body: &Value, trigger: &str, delivery: &str, secret: &str) -> server::Resp {
    let text = body.to_string();
    let signature = format!(
        "sha1={}",
        sign::hex(&sign::hmac_sha1(secret.as_bytes(), text.as_bytes()))
    );
    let headers = [
        ("X-Hub-Signature", signature.as_str()),
        ("X-Zammad-Delivery", delivery),
        ("X-Zammad-Trigger", trigger),
        ("User-Agent", "Zammad User Agent"),
    ];
    s.call(
        "POST",
        "/v1/connectors/zammad/events",
        "",
        Some(&text),
        &headers,
    )
}

fn payload(id: i64, state: &str, updated_by: i64) -> Value {
    json!({"ticket": {"id": id, "number": "31001", "title": "Refund please", "state": state,
                      "priority": "2 normal", "group": "Users", "article_count": 1,
                      "updated_by_id": updated_by, "customer": {"vip": true, "email": "chris@example.com"}},
           "article": {"body": "You charged my card twice for the same order, I want my money back",
                       "type": "email", "internal": false, "sender": "Customer"}})
}

#[test]
fn zammad_tickets_are_routed_and_updated_in_zammad() {
    let desk = Helpdesk::start();
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &config(&desk.base));
    let r = send(
        &s,
        &payload(42, "new", 3),
        "intent-router: new ticket",
        "d-1",
        SECRET,
    );
    assert_eq!(
        (r.status, r.body["kind"].clone()),
        (202, json!("created")),
        "{}",
        r.body
    );
    assert_eq!(
        send(
            &s,
            &payload(42, "new", 3),
            "intent-router: new ticket",
            "d-1",
            SECRET
        )
        .body["duplicate"],
        true
    );

    // The ticket update, then each tag added (the ticket's own tags stay): the VIP rule's and
    // ours.
    let got = desk.wait_for(3, 30);
    let calls: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("PUT", "/api/v1/tickets/42"),
            ("POST", "/api/v1/tags/add"),
            ("POST", "/api/v1/tags/add")
        ]
    );
    assert!(got
        .iter()
        .all(|r| r.headers["authorization"] == "Token token=zammad-api-token-0123"));
    let put: Value = serde_json::from_str(&got[0].body).unwrap();
    let owner = put["owner_id"].as_i64().unwrap();
    assert!(owner == 11 || owner == 12, "{put}");
    assert_eq!(
        (
            put["group"].clone(),
            put["priority"].clone(),
            put["state"].clone()
        ),
        (json!("Billing"), json!("3 high"), json!("open")),
        "{put}"
    );
    assert_eq!(
        (
            put["article"]["type"].clone(),
            put["article"]["internal"].clone()
        ),
        (json!("note"), json!(true))
    );
    let tags: Vec<Value> = got[1..]
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(
        tags,
        [
            json!({"object": "Ticket", "o_id": 42, "item": "vip"}),
            json!({"object": "Ticket", "o_id": 42, "item": "intent-router"})
        ]
    );

    // Our own update's echo is ignored; the closing trigger closes the assignment.
    let echo = send(
        &s,
        &payload(42, "open", 7),
        "intent-router: closed",
        "d-2",
        SECRET,
    );
    assert_eq!(echo.body["kind"], "ignored");
    let closed = send(
        &s,
        &payload(42, "closed", 11),
        "intent-router: closed",
        "d-3",
        SECRET,
    );
    assert_eq!(closed.body["kind"], "closed");
    crate::connectors::wait_billing_closed(&s);
    // An agent (bob, user 12) moved the ticket to the group of another team: a correction from
    // the helpdesk.
    let mut moved = payload(42, "open", 12);
    moved["ticket"]["group"] = json!("On call");
    moved["ticket"]["group_id"] = json!(4);
    let r = send(&s, &moved, "intent-router: group changed", "d-5", SECRET);
    assert_eq!(r.body["kind"], "reassigned");
    let note = crate::connectors::reassignment_note(&s, "zammad");
    assert_eq!(
        note,
        "correction by bob: team oncall, not billing; its assignment is closed"
    );
    let fb = s.admin("GET", "/v1/feedback/report", None, &[]).body;
    assert_eq!(fb["feedback"], 1, "{fb}");
    // Another trigger is recorded and changes nothing; a wrong token is refused.
    assert_eq!(
        send(&s, &payload(43, "open", 3), "escalation", "d-4", SECRET).body["kind"],
        "ignored"
    );
    assert_eq!(
        send(
            &s,
            &payload(44, "new", 3),
            "intent-router: new ticket",
            "d-5",
            "not-the-token-0123456789"
        )
        .status,
        401
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(desk.requests().len(), 3);
}
