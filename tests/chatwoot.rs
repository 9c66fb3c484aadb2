//! The Chatwoot connector end to end: the real binary receives Chatwoot's webhooks (signed
//! `X-Chatwoot-Signature: sha256=<hex>` over the timestamp and the body) and updates the
//! conversation through a fake Chatwoot API on 127.0.0.1.

use serde_json::{json, Value};

use crate::common::helpdesk::Helpdesk;
use crate::server::{self, Server};
use intent_router::connector::sign;

const SECRET: &str = "chatwoot-webhook-secret-0123";

fn config(desk: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "chatwoot"
kind = "chatwoot"
[connectors.inbound]
secrets = ["{SECRET}"]
integration_user_id = 99
[connectors.write_back]
url = "{desk}"
api_token = "chatwoot-access-token-0123"
groups = {{ billing = 3, oncall = 4 }}
agents = {{ ann = 21, bob = 22 }}
"#
    )
}

fn send_at(s: &Server, body: &Value, delivery: &str, t: i64) -> server::Resp {
    let text = body.to_string();
    let stamp = t.to_string();
    let mac = sign::hmac_sha256(
        SECRET.as_bytes(),
        &[stamp.as_bytes(), b".", text.as_bytes()],
    );
    let signature = format!("sha256={}", sign::hex(&mac));
    let headers = [
        ("X-Chatwoot-Signature", signature.as_str()),
        ("X-Chatwoot-Timestamp", stamp.as_str()),
        ("X-Chatwoot-Delivery", delivery),
    ];
    s.call(
        "POST",
        "/v1/connectors/chatwoot/events",
        "",
        Some(&text),
        &headers,
    )
}

fn send(s: &Server, body: &Value, delivery: &str) -> server::Resp {
    send_at(s, body, delivery, chrono::Utc::now().timestamp())
}

#[test]
fn chatwoot_conversations_are_routed_and_updated_in_chatwoot() {
    let desk = Helpdesk::start();
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &config(&desk.base));
    let created = json!({"event": "conversation_created", "id": 7, "status": "open", "channel": "Channel::WebWidget",
        "account": {"id": 1, "name": "Acme"}, "inbox": {"id": 2, "name": "Website"},
        "meta": {"sender": {"id": 5, "name": "Chris"}},
        "messages": [{"id": 70, "content": "You charged my card twice for the same order, I want my money back", "message_type": 0}]});
    let r = send(&s, &created, "cw-1");
    assert_eq!(
        (r.status, r.body["kind"].clone()),
        (202, json!("created")),
        "{}",
        r.body
    );
    assert_eq!(send(&s, &created, "cw-1").body["duplicate"], true);

    let got = desk.wait_for(5, 30);
    let calls: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let base = "/api/v1/accounts/1/conversations/7";
    assert_eq!(
        calls,
        [
            ("POST", format!("{base}/assignments").as_str()),
            ("POST", format!("{base}/assignments").as_str()),
            ("POST", format!("{base}/toggle_priority").as_str()),
            ("POST", format!("{base}/labels").as_str()),
            ("POST", format!("{base}/messages").as_str()),
        ]
    );
    assert!(got
        .iter()
        .all(|r| r.headers["api_access_token"] == "chatwoot-access-token-0123"));
    let body = |i: usize| serde_json::from_str::<Value>(&got[i].body).unwrap();
    assert_eq!(body(0), json!({"team_id": 3}));
    let agent = body(1)["assignee_id"].as_i64().unwrap();
    assert!(agent == 21 || agent == 22);
    // The priority and labels the decision gave, in Chatwoot's words.
    let all = s.admin("GET", "/v1/decisions?limit=10", None, &[]).body;
    let decision = &all["decisions"][0];
    let priority = match decision["priority"].as_str().unwrap() {
        "normal" => "medium",
        other => other,
    };
    assert_eq!(body(2), json!({ "priority": priority }));
    let mut labels = decision["tags"].as_array().unwrap().clone();
    labels.push(json!("intent-router"));
    assert_eq!(body(3), json!({ "labels": labels }));
    assert_eq!(
        (body(4)["private"].clone(), body(4)["message_type"].clone()),
        (json!(true), json!("outgoing"))
    );

    // A message, and our own bot's: recorded.
    let message = json!({"event": "message_created", "id": 71, "content": "any news?", "message_type": "incoming",
        "conversation": {"id": 7}, "account": {"id": 1}, "sender": {"id": 5}});
    assert_eq!(send(&s, &message, "cw-2").body["kind"], "ignored");
    // An agent moved the conversation to another team: a correction from the helpdesk, and
    // the agent we chose has it no more.
    let moved = json!({"event": "conversation_updated", "id": 7, "account": {"id": 1},
        "meta": {"team": {"id": 4, "name": "on call"}},
        "changed_attributes": [{"team_id": {"previous_value": 3, "current_value": 4}}]});
    assert_eq!(send(&s, &moved, "cw-5").body["kind"], "reassigned");
    let note = crate::connectors::reassignment_note(&s, "chatwoot");
    assert_eq!(
        note,
        "correction by chatwoot agent: team oncall, not billing; its assignment is closed"
    );
    // The conversation resolved: a closing event (the assignment is closed already).
    let resolved = json!({"event": "conversation_status_changed", "id": 7, "status": "resolved",
        "account": {"id": 1}, "performed_by": {"id": 21}});
    assert_eq!(send(&s, &resolved, "cw-3").body["kind"], "closed");
    crate::connectors::wait_billing_closed(&s);
    // A stale timestamp is refused.
    let r = send_at(&s, &created, "cw-4", chrono::Utc::now().timestamp() - 3600);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(desk.requests().len(), 5);
}
