//! Helpdesk connectors end to end: the real binary receives a helpdesk's webhooks (signed as
//! the helpdesk signs them), routes the ticket and writes the signed decision back to a fake
//! helpdesk on 127.0.0.1, through rate limits, failures, a helpdesk that is down, dead letters
//! and a crash between routing and recording the event.

use serde_json::{json, Value};

use crate::common::helpdesk::{Helpdesk, Reply};
use crate::server::{self, Server, ADMIN_TOKEN};
use intent_router::connector::sign;

const INBOUND: &str = "inbound-secret-0123456789";
const OLD_INBOUND: &str = "old-inbound-secret-0123456789";
const OUTBOUND: &str = "outbound-secret-0123456789";

/// A generic connector named `name`, its write-back going to `url`.
pub fn connector(name: &str, url: &str) -> String {
    format!(
        r#"
[[connectors]]
name = "{name}"
kind = "generic"
[connectors.inbound]
auth = "hmac-sha256"
header = "X-Signature"
timestamp_header = "X-Timestamp"
secrets = ["{INBOUND}", "{OLD_INBOUND}"]
max_body_bytes = 4096
[connectors.fields]
id = "ticket.id"
subject = "ticket.subject"
body = "ticket.text"
channel = "ticket.channel"
event = "event"
delivery_id = "event_id"
[connectors.fields.custom]
plan = "client.plan"
[connectors.events]
created = ["ticket_created"]
closed = ["ticket_closed"]
[connectors.write_back]
url = "{url}/hooks/decisions"
secrets = ["{OUTBOUND}"]
"#
    )
}

/// Short claims, so that work a killed process held is taken over within the test.
const SHORT_LEASE: &str = "[replicas]\nclaim_lease_seconds = 2\n";

pub fn created(event_id: &str, ticket: &str) -> Value {
    json!({"event": "ticket_created", "event_id": event_id,
           "ticket": {"id": ticket, "subject": "Refund please", "channel": "email",
                      "text": "You charged my card twice for the same order, I want my money back"},
           "client": {"plan": "pro"}})
}

/// Posts a webhook signed as the helpdesk signs it (with `secret`, at `t`).
fn send_signed(s: &Server, name: &str, body: &str, secret: &str, t: i64) -> server::Resp {
    let stamp = t.to_string();
    let mac = sign::hmac_sha256(
        secret.as_bytes(),
        &[stamp.as_bytes(), b".", body.as_bytes()],
    );
    let signature = sign::hex(&mac);
    let headers = [
        ("X-Signature", signature.as_str()),
        ("X-Timestamp", stamp.as_str()),
    ];
    s.call(
        "POST",
        &format!("/v1/connectors/{name}/events"),
        "",
        Some(body),
        &headers,
    )
}

pub fn send(s: &Server, name: &str, body: &Value) -> server::Resp {
    send_signed(
        s,
        name,
        &body.to_string(),
        INBOUND,
        chrono::Utc::now().timestamp(),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Polls `GET path` (admin) until `done` holds (panics after 30 s).
fn wait_until(s: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let r = s.admin("GET", path, None, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        if done(&r.body) {
            return r.body;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "{path} never got there: {}",
        s.admin("GET", path, None, &[]).body
    );
}

/// How many of the billing team's assignments are open.
pub fn open_billing(s: &Server) -> usize {
    s.admin("GET", "/v1/assignments?team=billing", None, &[])
        .body["assignments"]
        .as_array()
        .unwrap()
        .len()
}

/// Waits (up to 10 s) until the billing team has no open assignment.
pub fn wait_billing_closed(s: &Server) {
    for _ in 0..100 {
        if open_billing(s) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(open_billing(s), 0);
}

/// The note of `connector`'s processed reassignment event (waits for it up to 10 s).
pub fn reassignment_note(s: &Server, connector: &str) -> Value {
    let path = format!("/v1/connectors/{connector}/inbox?state=done");
    for _ in 0..100 {
        let done = s.admin("GET", &path, None, &[]).body;
        let events = done["events"].as_array().unwrap();
        if let Some(e) = events.iter().find(|e| e["kind"] == "reassigned") {
            return e["error"].clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "no reassignment processed: {}",
        s.admin("GET", &path, None, &[]).body
    );
}

fn decisions_of(s: &Server, ticket: &str) -> Vec<Value> {
    let all = s.admin("GET", "/v1/decisions?limit=1000", None, &[]).body;
    all["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["ticket_id"] == ticket)
        .cloned()
        .collect()
}

#[test]
fn a_signed_webhook_is_routed_and_the_signed_decision_written_back_once() {
    let desk = Helpdesk::start();
    // Rate-limited, then failing, then accepted: three attempts of one write-back.
    desk.script(vec![
        Reply::new(429, r#"{"error":"slow down"}"#).header("Retry-After", "2"),
        Reply::new(500, "oops"),
    ]);
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &connector("inhouse", &desk.base));
    let body = created("ev-1", "T-1");
    let r = send(&s, "inhouse", &body);
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        (r.body["duplicate"].clone(), r.body["kind"].clone()),
        (json!(false), json!("created"))
    );
    // The same delivery again (the helpdesk retried), signed with the secret being rotated out.
    let again = send_signed(&s, "inhouse", &body.to_string(), OLD_INBOUND, now());
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["event_id"], r.body["event_id"]);

    let got = desk.wait_for(3, 30);
    for req in &got {
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/hooks/decisions")
        );
        let signature = &req.headers["x-intent-router-signature"];
        sign::verify(signature, &[OUTBOUND], req.body.as_bytes(), now(), 300).unwrap();
        assert_eq!(req.headers["content-type"], "application/json");
        assert_eq!(
            req.headers["x-intent-router-delivery"],
            got[0].headers["x-intent-router-delivery"]
        );
        assert_eq!(req.body, got[0].body, "every attempt sends the same body");
    }
    let sent: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        (
            sent["type"].clone(),
            sent["connector"].clone(),
            sent["ticket_id"].clone()
        ),
        (json!("ticket.routed"), json!("inhouse"), json!("T-1"))
    );
    assert_eq!(sent["decision"]["team"], "billing");
    assert_eq!(sent["decision"]["ticket_id"], "T-1");
    let agent = sent["decision"]["assignee"].as_str().unwrap().to_string();
    let outbox = wait_until(&s, "/v1/connectors/inhouse/outbox", |b| {
        b["write_backs"][0]["state"] == "delivered"
    });
    let w = &outbox["write_backs"][0];
    assert_eq!(
        (w["attempts"].clone(), w["last_status"].clone()),
        (json!(3), json!(200)),
        "{w}"
    );
    assert_eq!(w["id"], got[0].headers["x-intent-router-delivery"].as_str());
    // One decision, the one written back; the custom field reached the rules' ticket.
    let logged = decisions_of(&s, "T-1");
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["decision_id"], sent["decision"]["decision_id"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        desk.requests().len(),
        3,
        "nothing is sent twice once delivered"
    );

    // The helpdesk closes the ticket: the assignment closes (least-loaded counts stay true).
    assert_eq!(open_billing(&s), 1);
    let closed = json!({"event": "ticket_closed", "event_id": "ev-2", "ticket": {"id": "T-1"}});
    assert_eq!(send(&s, "inhouse", &closed).status, 202);
    let inbox = wait_until(&s, "/v1/connectors/inhouse/inbox?state=done", |b| {
        b["events"].as_array().unwrap().len() == 2
    });
    assert_eq!(inbox["events"][0]["error"], "assignment closed");
    assert_eq!(open_billing(&s), 0);
    let all = s
        .admin("GET", "/v1/assignments?team=billing&open=false", None, &[])
        .body;
    assert_eq!(all["assignments"][0]["agent"], agent.as_str());
    assert_eq!(all["assignments"][0]["closed_by"], "connector:inhouse");
    // Updates are recorded and change nothing.
    let reply = json!({"event": "agent_replied", "event_id": "ev-3", "ticket": {"id": "T-1"}});
    let r = send(&s, "inhouse", &reply);
    assert_eq!((r.status, r.body["kind"].clone()), (202, json!("ignored")));

    let status = s.admin("GET", "/v1/connectors", None, &[]).body;
    let c = &status["connectors"][0];
    assert_eq!(
        (
            c["name"].clone(),
            c["kind"].clone(),
            c["events_url"].clone()
        ),
        (
            json!("inhouse"),
            json!("generic"),
            json!("/v1/connectors/inhouse/events")
        )
    );
    assert_eq!(
        (c["outbox_delivered"].clone(), c["outbox_dead"].clone()),
        (json!(1), json!(0))
    );
    let metrics = s
        .call("GET", "/metrics", server::METRICS_TOKEN, None, &[])
        .body;
    let metrics = metrics.as_str().unwrap();
    for want in [
        "intent_router_connector_events_total{connector=\"inhouse\",outcome=\"accepted\"} 3",
        "intent_router_connector_events_total{connector=\"inhouse\",outcome=\"duplicate\"} 1",
        "intent_router_connector_write_backs_total{connector=\"inhouse\",outcome=\"retry\"} 2",
        "intent_router_connector_write_backs_total{connector=\"inhouse\",outcome=\"delivered\"} 1",
    ] {
        assert!(metrics.contains(want), "{want}\n{metrics}");
    }
}

#[test]
fn webhooks_that_are_not_the_helpdesks_are_refused_and_stored_nowhere() {
    let desk = Helpdesk::start();
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &connector("inhouse", &desk.base));
    let body = created("ev-1", "T-1").to_string();
    let path = "/v1/connectors/inhouse/events";
    let refused = |r: server::Resp, status: u16, code: &str, message: &str| {
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{}",
            r.body
        );
        let m = r.body["error"]["message"].as_str().unwrap();
        assert!(m.contains(message), "{m}");
    };
    // No signature (our bearer token is no substitute): 401 before the body is read.
    refused(s.call("POST", path, ADMIN_TOKEN, Some(&body), &[]), 401, "unauthorized",
        "missing X-Signature header: connector \"inhouse\" accepts only requests authenticated by it");
    let t = now().to_string();
    refused(
        s.call(
            "POST",
            path,
            "",
            Some(&body),
            &[("X-Signature", "00ff"), ("X-Timestamp", &t)],
        ),
        401,
        "unauthorized",
        "X-Signature: the signature does not match the body",
    );
    refused(
        send_signed(&s, "inhouse", &body, "not-the-secret-0123456789", now()),
        401,
        "unauthorized",
        "does not match",
    );
    refused(
        send_signed(&s, "inhouse", &body, INBOUND, now() - 3600),
        401,
        "unauthorized",
        "X-Timestamp: 3600 s away from our clock; at most 300 s are accepted",
    );
    // Authentic but wrong: too large, not JSON, lacking what the mapping needs.
    let big = json!({"event": "ticket_created", "pad": "x".repeat(5000)}).to_string();
    refused(
        send_signed(&s, "inhouse", &big, INBOUND, now()),
        413,
        "body_too_large",
        "over this connector's limit of 4096 bytes",
    );
    refused(
        send_signed(&s, "inhouse", "{not json", INBOUND, now()),
        400,
        "malformed_json",
        "not JSON",
    );
    let no_text =
        json!({"event": "ticket_created", "event_id": "e", "ticket": {"id": 7}}).to_string();
    refused(
        send_signed(&s, "inhouse", &no_text, INBOUND, now()),
        422,
        "invalid_request",
        "the ticket has no text: nothing at ticket.subject or ticket.text",
    );
    refused(
        s.call("POST", "/v1/connectors/nope/events", "", Some(&body), &[]),
        404,
        "not_found",
        "no connector named \"nope\"",
    );
    // The admin views need a token.
    assert_eq!(s.call("GET", "/v1/connectors", "", None, &[]).status, 401);
    let inbox = s
        .admin("GET", "/v1/connectors/inhouse/inbox", None, &[])
        .body;
    assert_eq!(inbox["events"], json!([]));
    assert_eq!(
        s.admin("GET", "/v1/connectors/inhouse/inbox?state=lost", None, &[])
            .status,
        400
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(desk.requests().is_empty());
}

#[test]
fn write_backs_wait_for_a_helpdesk_that_is_down_and_dead_letters_are_retried() {
    let down = Helpdesk::reserve();
    let strict = Helpdesk::start();
    strict.script(vec![Reply::new(
        400,
        r#"{"error":"unknown group billing"}"#,
    )]);
    let d = tempfile::tempdir().unwrap();
    let config = connector("down", &down.base) + &connector("strict", &strict.base);
    let s = server::start_with(d.path(), &[], &config);
    assert_eq!(send(&s, "down", &created("a-1", "D-1")).status, 202);
    assert_eq!(send(&s, "strict", &created("b-1", "S-1")).status, 202);
    // Refused for good: dead at once, with the helpdesk's reason.
    let dead = wait_until(&s, "/v1/connectors/strict/outbox?state=dead", |b| {
        !b["write_backs"].as_array().unwrap().is_empty()
    });
    let w = dead["write_backs"][0].clone();
    let error = w["last_error"].as_str().unwrap();
    assert!(
        error.ends_with("/hooks/decisions answered 400: {\"error\":\"unknown group billing\"}"),
        "{error}"
    );
    assert_eq!(w["attempts"], 1);
    // Connection refused: retried with backoff, delivered once the helpdesk is up.
    let pending = wait_until(&s, "/v1/connectors/down/outbox", |b| {
        b["write_backs"][0]["attempts"].as_i64() >= Some(2)
    });
    assert!(pending["write_backs"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("/hooks/decisions: "));
    down.listen();
    wait_until(&s, "/v1/connectors/down/outbox", |b| {
        b["write_backs"][0]["state"] == "delivered"
    });
    assert_eq!(down.requests().len(), 1);
    // The dead letter, retried from the API once the mapping is fixed, is delivered.
    let id = w["id"].as_str().unwrap();
    let retry = s.admin(
        "POST",
        &format!("/v1/connectors/strict/outbox/{id}/retry"),
        None,
        &[],
    );
    assert_eq!(
        (retry.status, retry.body["state"].clone()),
        (202, json!("pending")),
        "{}",
        retry.body
    );
    wait_until(&s, "/v1/connectors/strict/outbox", |b| {
        b["write_backs"][0]["state"] == "delivered"
    });
    assert_eq!(strict.requests().len(), 2);
    assert_eq!(strict.requests()[0].body, strict.requests()[1].body);
    let again = s.admin(
        "POST",
        &format!("/v1/connectors/strict/outbox/{id}/retry"),
        None,
        &[],
    );
    assert_eq!(
        (again.status, again.body["error"]["code"].clone()),
        (409, json!("not_retryable"))
    );
    let other = s.admin(
        "POST",
        &format!("/v1/connectors/down/outbox/{id}/retry"),
        None,
        &[],
    );
    assert_eq!(other.status, 404);
}

#[test]
fn a_crash_between_routing_and_recording_the_event_decides_once_and_writes_back() {
    let desk = Helpdesk::start();
    let d = tempfile::tempdir().unwrap();
    let config = connector("inhouse", &desk.base) + SHORT_LEASE;
    let env = [("INTENT_ROUTER_FAILPOINTS", "inbox.finish=pause")];
    let s = server::start_full(d.path(), &[], &config, &env);
    assert_eq!(send(&s, "inhouse", &created("ev-1", "T-9")).status, 202);
    // The ticket is routed and its decision committed; the process dies before the event is
    // marked done and its write-back queued.
    s.wait_log("failpoint inbox.finish reached");
    s.crash();
    let s = server::start_with(d.path(), &[], &config);
    let got = desk.wait_for(1, 30);
    let sent: Value = serde_json::from_str(&got[0].body).unwrap();
    let logged = decisions_of(&s, "T-9");
    assert_eq!(logged.len(), 1, "the retry replays the first decision");
    assert_eq!(logged[0]["decision_id"], sent["decision"]["decision_id"]);
    wait_until(&s, "/v1/connectors/inhouse/inbox", |b| {
        b["events"][0]["state"] == "done"
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(desk.requests().len(), 1);
}

#[test]
fn connector_secrets_rotate_on_sighup() {
    let desk = Helpdesk::start();
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &connector("inhouse", &desk.base));
    const NEW: &str = "brand-new-inbound-secret-0123";
    let body = created("ev-1", "T-1").to_string();
    assert_eq!(send_signed(&s, "inhouse", &body, NEW, now()).status, 401);
    let hup = |config: &str, marker: &str, times: usize| {
        server::write_config(d.path(), config);
        let pid = s.pid().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        for _ in 0..100 {
            if s.log.lock().unwrap().matches(marker).count() >= times {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("not reloaded:\n{}", s.log.lock().unwrap());
    };
    // The new secret beside the old one: both are accepted while the helpdesk switches.
    const RELOADED: &str = "SIGHUP: tokens and connectors reloaded";
    let both = connector("inhouse", &desk.base).replace(OLD_INBOUND, NEW);
    hup(&both, RELOADED, 1);
    assert_eq!(send_signed(&s, "inhouse", &body, NEW, now()).status, 202);
    assert_eq!(
        send_signed(&s, "inhouse", &body, INBOUND, now()).status,
        202
    );
    // A broken file keeps what works, and says why.
    let broken = "[[connectors]]\nname = \"inhouse\"\nkind = \"generic\"\n";
    hup(broken, "the old ones stay", 1);
    let log = s.log.lock().unwrap().clone();
    assert!(
        log.contains("connectors[0] (inhouse).inbound.auth: missing"),
        "{log}"
    );
    assert_eq!(send_signed(&s, "inhouse", &body, NEW, now()).status, 202);
    // The old secret removed: refused.
    let only_new = connector("inhouse", &desk.base).replace(
        &format!("\"{INBOUND}\", \"{OLD_INBOUND}\""),
        &format!("\"{NEW}\""),
    );
    hup(&only_new, RELOADED, 2);
    assert_eq!(
        send_signed(&s, "inhouse", &body, INBOUND, now()).status,
        401
    );
    assert_eq!(send_signed(&s, "inhouse", &body, NEW, now()).status, 202);
}

#[test]
fn a_bearer_connector_and_its_per_minute_limit() {
    let desk = Helpdesk::start();
    let d = tempfile::tempdir().unwrap();
    let config = connector("limited", &desk.base)
        .replace(
            "auth = \"hmac-sha256\"\nheader = \"X-Signature\"\ntimestamp_header = \"X-Timestamp\"\n",
            "auth = \"bearer\"\n",
        )
        .replace("secrets = [\"outbound", "per_minute = 1\nsecrets = [\"outbound");
    let s = server::start_with(d.path(), &[], &config);
    let post = |token: &str, body: &Value| {
        s.call(
            "POST",
            "/v1/connectors/limited/events",
            token,
            Some(&body.to_string()),
            &[],
        )
    };
    assert_eq!(
        post("not-the-secret-0123456789", &created("x", "X")).status,
        401
    );
    for i in 0..3 {
        let r = post(INBOUND, &created(&format!("ev-{i}"), &format!("L-{i}")));
        assert_eq!(r.status, 202, "{}", r.body);
    }
    // One write-back a minute: the others wait for the next minute, no attempt counted.
    desk.wait_for(1, 30);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = s
        .admin(
            "GET",
            "/v1/connectors/limited/outbox?state=pending",
            None,
            &[],
        )
        .body;
    let waiting = out["write_backs"].as_array().unwrap();
    assert!(!waiting.is_empty() && desk.requests().len() <= 2, "{out}");
    for w in waiting {
        assert_eq!(
            (w["attempts"].clone(), w["last_error"].clone()),
            (json!(0), Value::Null),
            "{w}"
        );
        // Postponed to the start of the next minute (and less than a second of jitter).
        let next: chrono::DateTime<chrono::Utc> = w["next_at"].as_str().unwrap().parse().unwrap();
        let created: chrono::DateTime<chrono::Utc> =
            w["created_at"].as_str().unwrap().parse().unwrap();
        use chrono::Timelike as _;
        assert!(next > created && next.second() == 0, "{w}");
    }
}
