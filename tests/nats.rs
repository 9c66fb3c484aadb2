//! The NATS queue channel end to end: a real `nats-server` with JetStream, started by the
//! tests on a random port, and the real binary consuming tickets through its durable pull
//! consumer, publishing decisions, dead-lettering messages that cannot be routed, finding a
//! stream created late, and killed mid-stream with every message getting exactly one committed
//! decision.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::nats::{Nats, Stored};
use crate::server::{self, Server};

/// The `[nats]` section for `url`, with `extra` keys.
pub fn section(url: &str, extra: &str) -> String {
    format!(
        r#"
[nats]
url = "{url}"
stream = "TICKETS"
subject = "helpdesk.tickets.created"
decisions_subject = "helpdesk.decisions"
dead_letter_subject = "helpdesk.dead"
ack_wait_seconds = 2
{extra}
"#
    )
}

/// The streams an operator creates: tickets (deduplicated within `window`) and outcomes.
pub fn operator_streams(n: &Nats, window: Duration) {
    n.stream("TICKETS", &["helpdesk.tickets.>"], window);
    n.stream(
        "OUTCOMES",
        &["helpdesk.decisions", "helpdesk.dead"],
        Duration::from_secs(120),
    );
}

pub fn ticket(id: &str) -> String {
    json!({"id": id, "subject": "Refund please", "channel": "email",
           "body": "You charged my card twice for the same order, I want my money back"})
    .to_string()
}

pub fn decisions(s: &Server) -> Vec<Value> {
    let all = s.admin("GET", "/v1/decisions?limit=1000", None, &[]).body;
    all["decisions"].as_array().unwrap().clone()
}

pub fn metric(s: &Server, outcome: &str) -> u64 {
    let text = s
        .call("GET", "/metrics", server::METRICS_TOKEN, None, &[])
        .body;
    let line = format!("intent_router_nats_messages_total{{outcome=\"{outcome}\"}} ");
    text.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The decision a published message holds.
fn body(m: &Stored) -> Value {
    serde_json::from_str(&m.body).unwrap()
}

#[test]
fn tickets_on_a_subject_are_routed_once_and_what_cannot_be_routed_is_dead_lettered() {
    let mut n = Nats::start();
    operator_streams(&n, Duration::from_secs(1));
    let subject = "helpdesk.tickets.created";
    n.publish(
        subject,
        &[
            (Some("T-1#created"), ticket("T-1")),
            (None, ticket("T-2")),
            (None, "not json".to_string()),
            (None, json!({"id": "T-4"}).to_string()),
        ],
    );
    let d = tempfile::tempdir().unwrap();
    let s = server::start_with(d.path(), &[], &section(&n.url, ""));
    Nats::eventually("two decisions and two dead letters", 30, || {
        n.read("OUTCOMES", "helpdesk.decisions").len() == 2
            && n.read("OUTCOMES", "helpdesk.dead").len() == 2
    });
    let published = n.read("OUTCOMES", "helpdesk.decisions");
    let logged = decisions(&s);
    assert_eq!(logged.len(), 2);
    for (ticket, source) in [("T-1", "nats:TICKETS:id:T-1#created"), ("T-2", ":seq:2")] {
        let m = published
            .iter()
            .find(|m| body(m)["ticket_id"] == ticket)
            .unwrap();
        let decision = body(m);
        assert_eq!(m.subject, "helpdesk.decisions");
        assert_eq!(decision["team"], "billing");
        assert_eq!(
            m.headers["Nats-Msg-Id"],
            decision["decision_id"].as_str().unwrap()
        );
        assert!(
            m.headers["Intent-Router-Message"].ends_with(source),
            "{source}"
        );
        assert!(logged
            .iter()
            .any(|l| l["decision_id"] == decision["decision_id"]));
    }
    let dead = n.read("OUTCOMES", "helpdesk.dead");
    let error_of = |text: &str| {
        let m = dead.iter().find(|m| m.body == text).unwrap();
        m.headers["Intent-Router-Error"].clone()
    };
    assert!(error_of("not json").contains("not a JSON object"));
    assert!(error_of(r#"{"id":"T-4"}"#).contains("the ticket has no text"));
    for m in &dead {
        assert_eq!(m.headers["Intent-Router-Delivered"], "1", "never retried");
        assert_eq!(m.headers["Intent-Router-Subject"], subject);
    }
    Nats::eventually("everything acknowledged", 10, || {
        n.consumer_backlog("TICKETS", "intent-router") == (0, 0)
    });

    // The same ticket published again under its id after the stream's own deduplication
    // window: routed once, its decision published once.
    // (The server forgets ids lazily, some time after the window: publish until stored.)
    Nats::eventually("the repeat stored", 20, || {
        n.publish(subject, &[(Some("T-1#created"), ticket("T-1"))]);
        n.stream_messages("TICKETS") == 5
    });
    Nats::eventually("the repeat replayed", 20, || metric(&s, "replayed") == 1);
    assert_eq!(decisions(&s).len(), 2);
    assert_eq!(n.read("OUTCOMES", "helpdesk.decisions").len(), 2);
    assert_eq!(metric(&s, "routed"), 2);
    assert_eq!(metric(&s, "dead_lettered"), 2);

    // The NATS server restarts: the channel reconnects and goes on.
    n.restart();
    n.publish(subject, &[(None, ticket("T-5"))]);
    Nats::eventually("routed after the restart", 40, || {
        n.read("OUTCOMES", "helpdesk.decisions").len() == 3
    });
}

#[test]
fn a_message_failing_every_time_is_dead_lettered_after_max_deliver() {
    let n = Nats::start();
    let d = tempfile::tempdir().unwrap();
    let env = [("INTENT_ROUTER_FAILPOINTS", "nats.publish=error")];
    let config = section(&n.url, "create_stream = true\nmax_deliver = 3");
    let s = server::start_full(d.path(), &[], &config, &env);
    s.wait_log("NATS queue channel consuming");
    n.publish("helpdesk.tickets.created", &[(None, ticket("T-1"))]);
    Nats::eventually("a dead letter", 30, || {
        n.read("TICKETS", "helpdesk.dead").len() == 1
    });
    let dead = n.read("TICKETS", "helpdesk.dead").remove(0);
    assert_eq!(dead.headers["Intent-Router-Delivered"], "3");
    assert!(dead.headers["Intent-Router-Error"].contains("failpoint nats.publish"));
    assert_eq!(dead.body, ticket("T-1"));
    Nats::eventually("nothing delivered again", 10, || {
        n.consumer_backlog("TICKETS", "intent-router") == (0, 0)
    });
    assert!(n.read("TICKETS", "helpdesk.decisions").is_empty());
    assert_eq!(metric(&s, "retried"), 2);
    let logged = decisions(&s);
    assert_eq!(logged.len(), 1, "routed once, replayed twice");
    assert_eq!(
        dead.headers["Intent-Router-Decision"],
        logged[0]["decision_id"].as_str().unwrap(),
        "the dead letter names the decision that was committed"
    );

    // The dead letter published again with its headers (but for the server's), once
    // publishing works: the committed decision is published, not a second one made.
    drop(s);
    let s = server::start_with(d.path(), &[], &config);
    let mut again = dead.headers.clone();
    again.retain(|name, _| !name.starts_with("Nats-"));
    n.publish_with_headers("helpdesk.tickets.created", &again, &dead.body);
    Nats::eventually("the decision published", 30, || {
        n.read("TICKETS", "helpdesk.decisions").len() == 1
    });
    let published = n.read("TICKETS", "helpdesk.decisions").remove(0);
    assert_eq!(
        published.headers["Nats-Msg-Id"],
        dead.headers["Intent-Router-Decision"]
    );
    assert_eq!(decisions(&s).len(), 1);
    assert_eq!(metric(&s, "replayed"), 1);
}

#[test]
fn a_missing_stream_is_reported_and_used_once_created_and_credentials_and_tls_work() {
    let n = Nats::start_with(Some(("router", "pa55word")), true);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("nats-password"), "pa55word\n").unwrap();
    let extra = format!(
        "user = \"router\"\npassword_file = \"nats-password\"\ntls_ca_file = \"{}\"\ntls_required = true",
        n.ca.as_ref().unwrap().display()
    );
    let s = server::start_with(d.path(), &[], &section(&n.url, &extra));
    s.wait_log("TICKETS\" does not exist on the server");
    assert_eq!(s.call("GET", "/healthz", "", None, &[]).status, 200);
    let status = s.admin("GET", "/v1/connectors", None, &[]).body["nats"].clone();
    assert_eq!(status["state"], "connecting");
    assert!(
        status["error"].as_str().unwrap().contains("does not exist"),
        "{status}"
    );
    operator_streams(&n, Duration::from_secs(120));
    n.publish("helpdesk.tickets.created", &[(None, ticket("T-1"))]);
    Nats::eventually("the decision", 40, || {
        n.read("OUTCOMES", "helpdesk.decisions").len() == 1
    });
    let status = || s.admin("GET", "/v1/connectors", None, &[]).body["nats"].clone();
    Nats::eventually("the status counts it", 10, || {
        status()["messages"]["routed"] == 1
    });
    assert_eq!(status()["state"], "consuming");
    assert!(status().get("error").is_none());

    // A wrong password is refused by the server and said so.
    let d2 = tempfile::tempdir().unwrap();
    std::fs::write(d2.path().join("nats-password"), "wrong\n").unwrap();
    let s2 = server::start_with(d2.path(), &[], &section(&n.url, &extra));
    s2.wait_log("cannot connect to NATS at");
    drop(s);
}

#[test]
fn killed_mid_stream_every_message_gets_exactly_one_committed_decision() {
    let n = Nats::start();
    operator_streams(&n, Duration::from_secs(120));
    let total = 300;
    let messages: Vec<(Option<String>, String)> = (0..total)
        .map(|i| {
            let id = format!("Q-{i}");
            ((i % 2 == 0).then(|| format!("{id}#created")), ticket(&id))
        })
        .collect();
    let refs: Vec<(Option<&str>, String)> = messages
        .iter()
        .map(|(id, body)| (id.as_deref(), body.clone()))
        .collect();
    n.publish("helpdesk.tickets.created", &refs);
    let d = tempfile::tempdir().unwrap();
    // A batching queue far smaller than what is in flight: most attempts find it full, and
    // wait (backpressure) instead of failing.
    let config = section(&n.url, "max_in_flight = 16\nmax_deliver = 10")
        + "\n[batching]\nqueue_capacity = 2\n";

    // 1. Decisions committed, none published: killed at the publish.
    let env = [("INTENT_ROUTER_FAILPOINTS", "nats.publish=pause")];
    let s = server::start_full(d.path(), &[], &config, &env);
    s.wait_log("failpoint nats.publish reached");
    std::thread::sleep(Duration::from_millis(500));
    s.crash();

    // 2. Killed again part-way through the stream.
    let s = server::start_with(d.path(), &[], &config);
    Nats::eventually("some decisions published", 60, || {
        n.stream_messages("OUTCOMES") >= 60
    });
    let replayed_before = metric(&s, "replayed");
    s.crash();
    assert!(
        n.stream_messages("OUTCOMES") < total,
        "killed part-way through the stream"
    );

    // 3. Runs to the end.
    let s = server::start_with(d.path(), &[], &config);
    Nats::eventually("every message handled", 120, || {
        n.stream_messages("OUTCOMES") >= total
            && n.consumer_backlog("TICKETS", "intent-router") == (0, 0)
    });
    assert!(
        replayed_before + metric(&s, "replayed") >= 1,
        "the decisions committed before the first kill are replayed, not made again"
    );
    let logged = decisions(&s);
    let tickets: BTreeSet<&str> = logged
        .iter()
        .map(|d| d["ticket_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged.len(), total as usize, "one decision per message");
    assert_eq!(tickets.len(), total as usize);
    let published = n.read("OUTCOMES", "helpdesk.decisions");
    assert_eq!(
        published.len(),
        total as usize,
        "each decision published once"
    );
    let by_id: HashMap<&str, &Stored> = published
        .iter()
        .map(|m| (m.headers["Nats-Msg-Id"].as_str(), m))
        .collect();
    for d in &logged {
        let m = by_id[d["decision_id"].as_str().unwrap()];
        assert_eq!(body(m)["ticket_id"], d["ticket_id"]);
    }
    assert!(n.read("OUTCOMES", "helpdesk.dead").is_empty());
}
