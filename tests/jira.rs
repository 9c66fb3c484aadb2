//! The Jira Service Management connector end to end: the real binary receives Jira's admin
//! webhooks (signed `X-Hub-Signature: sha256=<hex>`) and automation rules' requests (a secret
//! header), and updates the issue through a fake Jira API on 127.0.0.1 in several requests,
//! resuming after a failure where it stopped.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::helpdesk::{Helpdesk, Reply};
use crate::server::{self, Server};
use intent_router::connector::sign;

const SECRET: &str = "jira-webhook-secret-0123456789";

fn config(desk: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "jira"
kind = "jira"
[connectors.inbound]
secrets = ["{SECRET}"]
header = "X-Automation-Secret"
integration_user_id = "5b10-router"
[connectors.write_back]
url = "{desk}"
email = "router@acme.example"
api_token = "jira-api-token-0123"
teams = {{ billing = "Billing", oncall = "On call" }}
agents = {{ ann = "acc-ann", bob = "acc-bob" }}
transitions = {{ open = "21" }}
"#
    )
}

/// An admin webhook: signed, with its delivery id.
fn send(s: &Server, body: &Value, delivery: &str, secret: &str) -> server::Resp {
    let text = body.to_string();
    let signature = format!(
        "sha256={}",
        sign::hex(&sign::hmac_sha256(secret.as_bytes(), &[text.as_bytes()]))
    );
    let headers = [
        ("X-Hub-Signature", signature.as_str()),
        ("X-Atlassian-Webhook-Identifier", delivery),
    ];
    s.call(
        "POST",
        "/v1/connectors/jira/events",
        "",
        Some(&text),
        &headers,
    )
}

fn created(key: &str, summary: &str, text: &str) -> Value {
    json!({"timestamp": chrono::Utc::now().timestamp_millis(), "webhookEvent": "jira:issue_created",
           "issue_event_type_name": "issue_created", "user": {"accountId": "557058:customer"},
           "issue": {"id": "10002", "key": key, "fields": {"summary": summary, "labels": ["portal"],
               "priority": {"name": "Medium"}, "status": {"name": "Waiting for support"},
               "description": {"type": "doc", "version": 1, "content": [
                   {"type": "paragraph", "content": [{"type": "text", "text": text}]}]}}}})
}

fn updated(key: &str, by: &str, to: &str) -> Value {
    json!({"webhookEvent": "jira:issue_updated", "user": {"accountId": by},
           "issue": {"key": key, "fields": {"summary": "x"}},
           "changelog": {"items": [{"field": "status", "fromString": "In Progress", "toString": to}]}})
}

fn wait_outbox(s: &Server, state: &str) -> Value {
    for _ in 0..300 {
        let r = s.admin(
            "GET",
            &format!("/v1/connectors/jira/outbox?state={state}"),
            None,
            &[],
        );
        if let Some(w) = r.body["write_backs"].as_array().unwrap().first() {
            return w.clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "no {state} write-back: {}",
        s.admin("GET", "/v1/connectors/jira/outbox", None, &[]).body
    );
}

#[test]
fn jira_issues_are_routed_and_updated_in_several_requests() {
    let desk = Helpdesk::start();
    // The issue is edited, then the assignment fails once: the retry resumes at the assignee.
    desk.script(vec![
        Reply::new(204, ""),
        Reply::new(500, r#"{"errorMessages":["try later"]}"#),
    ]);
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &config(&desk.base));
    let issue = created(
        "SD-1",
        "Refund please",
        "You charged my card twice for the same order, I want my money back",
    );
    let r = send(&s, &issue, "wh-1", SECRET);
    assert_eq!(
        (r.status, r.body["kind"].clone()),
        (202, json!("created")),
        "{}",
        r.body
    );
    // Jira's retry, or a replay under another (unsigned) identifier: the same delivery.
    assert_eq!(send(&s, &issue, "wh-1", SECRET).body["duplicate"], true);
    assert_eq!(
        send(&s, &issue, "wh-1-replayed", SECRET).body["duplicate"],
        true
    );
    let mut old = issue.clone();
    old["timestamp"] = json!(chrono::Utc::now().timestamp_millis() - 8 * 86_400_000);
    let r = send(&s, &old, "wh-old", SECRET);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["error"]["message"], "timestamp (in the signed body): 691200 s away from our clock; at most 604800 s are accepted (a replay, or a clock to fix)");

    let got = desk.wait_for(5, 30);
    let auth =
        base64::engine::general_purpose::STANDARD.encode("router@acme.example:jira-api-token-0123");
    let calls: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("PUT", "/rest/api/3/issue/SD-1"),
            ("PUT", "/rest/api/3/issue/SD-1/assignee"),
            ("PUT", "/rest/api/3/issue/SD-1/assignee"),
            ("POST", "/rest/api/3/issue/SD-1/transitions"),
            ("POST", "/rest/servicedeskapi/request/SD-1/comment"),
        ]
    );
    assert!(got
        .iter()
        .all(|r| r.headers["authorization"] == format!("Basic {auth}")));
    let body = |i: usize| serde_json::from_str::<Value>(&got[i].body).unwrap();
    assert_eq!(
        body(0),
        json!({"fields": {"priority": {"name": "Medium"}},
        "update": {"labels": [{"add": "intent-router"}], "components": [{"add": {"name": "Billing"}}]}})
    );
    let account = body(1)["accountId"].as_str().unwrap().to_string();
    assert!(account == "acc-ann" || account == "acc-bob", "{account}");
    assert_eq!(body(2), body(1));
    assert_eq!(body(3), json!({"transition": {"id": "21"}}));
    assert_eq!(body(4)["public"], false);
    assert!(body(4)["body"]
        .as_str()
        .unwrap()
        .starts_with("intent-router: billing"));
    let w = wait_outbox(&s, "delivered");
    assert_eq!(
        (w["step"].clone(), w["attempts"].clone()),
        (json!(4), json!(2)),
        "{w}"
    );

    // Our own edit's echo is ignored; an agent moving the issue to Done closes the assignment.
    assert_eq!(
        send(&s, &updated("SD-1", "5b10-router", "Done"), "wh-2", SECRET).body["kind"],
        "ignored"
    );
    let r = send(&s, &updated("SD-1", "557058:agent", "Done"), "wh-3", SECRET);
    assert_eq!(r.body["kind"], "closed", "{}", r.body);
    crate::connectors::wait_billing_closed(&s);

    // Bob moves the issue from the Billing component to On call's: a correction.
    let moved = json!({"webhookEvent": "jira:issue_updated", "user": {"accountId": "acc-bob"},
        "issue": {"key": "SD-1", "fields": {"summary": "x"}},
        "changelog": {"items": [
            {"field": "Component", "fieldtype": "jira", "from": "10001", "fromString": "Billing", "to": null, "toString": null},
            {"field": "Component", "fieldtype": "jira", "from": null, "fromString": null, "to": "10002", "toString": "On call"}]}});
    let r = send(&s, &moved, "wh-4", SECRET);
    assert_eq!(r.body["kind"], "reassigned", "{}", r.body);
    let note = crate::connectors::reassignment_note(&s, "jira");
    assert_eq!(
        note,
        "correction by bob: team oncall, not billing; its assignment is closed"
    );

    // An automation rule's request, authenticated by its secret header, for a team Jira has no
    // component for: dead at once, nothing sent.
    let automation = json!({"webhookEvent": "jira:issue_created", "issue": {"key": "SD-2", "fields": {
        "summary": "Pricing", "description": "Сколько стоит тариф для команды из 30 человек? Можно демо?"}}});
    let r = s.call(
        "POST",
        "/v1/connectors/jira/events",
        "",
        Some(&automation.to_string()),
        &[("X-Automation-Secret", SECRET)],
    );
    assert_eq!(
        (r.status, r.body["kind"].clone()),
        (202, json!("created")),
        "{}",
        r.body
    );
    let dead = wait_outbox(&s, "dead");
    assert_eq!(
        dead["last_error"],
        "team \"sales\" has no Jira component or option: add it to write_back.teams"
    );
    assert_eq!(desk.requests().len(), 5);

    // Refused: a wrong signature or secret, no authentication at all.
    assert_eq!(
        send(&s, &issue, "wh-9", "not-the-secret-0123456789").status,
        401
    );
    let r = s.call(
        "POST",
        "/v1/connectors/jira/events",
        "",
        Some("{}"),
        &[("X-Automation-Secret", "nope")],
    );
    assert_eq!(r.status, 401);
    let r = s.call("POST", "/v1/connectors/jira/events", "", Some("{}"), &[]);
    assert_eq!(r.body["error"]["message"], "missing X-Hub-Signature or X-Automation-Secret header: connector \"jira\" accepts only requests authenticated by it");
}
