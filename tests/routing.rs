//! The route service through the real router in process (`oneshot`, tiny model): routing one
//! ticket and a batch, assignment, the decision log, idempotent replay, admission errors,
//! classify and dry run, and live rules changes seen by the very next request.

use serde_json::{json, Value};

use crate::common::app::{App, TINY_RULES};
use crate::server::{ADMIN_TOKEN, ROUTE_TOKEN};

const REFUND: &str = "refund my money back please";
const PARCEL: &str = "where is my order parcel";
const LOGIN: &str = "i forgot my password login code";

async fn route(app: &App, body: &Value) -> Value {
    let r = app.post("/v1/route", ROUTE_TOKEN, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn a_routed_ticket_is_decided_assigned_logged_and_replayed_on_retry() {
    let app = App::start().await;
    let first = route(&app, &json!({"id": "T-1", "body": REFUND})).await;
    assert_eq!(first["ticket_id"], "T-1");
    assert_eq!(first["intent"]["intent"], "billing.refund", "{first}");
    let chain: Vec<&str> = first["intent"]["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["intent"].as_str().unwrap())
        .collect();
    assert_eq!(chain, ["billing", "billing.refund"]);
    assert_eq!(first["team"], "billing");
    assert_eq!(first["status"], "open");
    assert_eq!(first["rule_ids"], json!(["billing"]));
    assert_eq!(first["assignee"], "ann");
    assert_eq!(first["assignment"], json!({"strategy": "round-robin"}));
    assert_eq!(first["model_version"], app.state.models.active().id);
    assert_eq!(first["rules_version"], "1");
    assert!(first["timings"]["total_ms"].as_f64().unwrap() >= 0.0);
    assert!(first.get("truncated").is_none());

    // The log keeps exactly what was returned.
    let id = first["decision_id"].as_str().unwrap();
    let logged = app.get(&format!("/v1/decisions/{id}"), ROUTE_TOKEN).await;
    assert_eq!((logged.status, &logged.body), (200, &first));

    // The next billing ticket goes to the next agent of the roster.
    let second = route(&app, &json!({"body": REFUND})).await;
    assert_eq!(second["assignee"], "bob");
    assert!(!second["ticket_id"].as_str().unwrap().is_empty());

    // A retry with the same key gets the same bytes and assigns nobody again.
    let body = json!({"id": "T-3", "body": REFUND}).to_string();
    let key = [("idempotency-key", "retry-1")];
    let a = app
        .call("POST", "/v1/route", ROUTE_TOKEN, Some(&body), &key)
        .await;
    let b = app
        .call("POST", "/v1/route", ROUTE_TOKEN, Some(&body), &key)
        .await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body);
    assert_eq!(a.body["assignee"], "ann");
    assert!(!a.header.contains_key("idempotent-replayed"));
    assert_eq!(b.header["idempotent-replayed"], "true");
    // Where the time went: every stage in Server-Timing (not on a replay), in the body, and
    // in the metrics.
    let timing = &a.header["server-timing"];
    let names: Vec<&str> = timing
        .split(", ")
        .map(|m| {
            let (name, dur) = m.split_once(";dur=").unwrap();
            assert!(dur.parse::<f64>().unwrap() >= 0.0, "{timing}");
            name
        })
        .collect();
    assert_eq!(
        names,
        ["tokenize", "queue", "encoder", "rules", "store", "total"]
    );
    assert!(!b.header.contains_key("server-timing"));
    for stage in ["tokenize_ms", "queue_ms", "encoder_ms", "rules_ms"] {
        assert!(
            a.body["timings"][stage].as_f64().unwrap() >= 0.0,
            "{}",
            a.body
        );
    }
    assert!(
        a.body["timings"]["encoder_ms"].as_f64().unwrap() > 0.0,
        "{}",
        a.body
    );
    let metrics = app.state.metrics.render(0);
    for stage in ["tokenize", "queue", "encoder", "rules", "store", "total"] {
        let count = format!("intent_router_stage_duration_seconds_count{{stage=\"{stage}\"}} 3");
        assert!(metrics.contains(&count), "{count} in\n{metrics}");
    }
    let open = app.get("/v1/assignments?team=billing", ROUTE_TOKEN).await;
    assert_eq!(open.body["assignments"].as_array().unwrap().len(), 3);
    // The same key with another request is refused.
    let other = json!({"id": "T-4", "body": REFUND}).to_string();
    let c = app
        .call("POST", "/v1/route", ROUTE_TOKEN, Some(&other), &key)
        .await;
    assert_eq!(c.status, 422);
    assert_eq!(c.body["error"]["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn a_batch_is_routed_in_order_and_bad_batches_are_refused_with_their_place() {
    let app = App::with_config("\n[limits]\nmax_batch_tickets = 3\n").await;
    let r = app
        .post(
            "/v1/route/batch",
            ROUTE_TOKEN,
            &json!({"tickets": [{"body": PARCEL}, {"subject": LOGIN}, {"text": REFUND}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.body["decisions"].as_array().unwrap();
    let teams: Vec<&str> = d.iter().map(|d| d["team"].as_str().unwrap()).collect();
    assert_eq!(teams, ["logistics", "l1-support", "billing"]);
    assert_eq!(d[1]["priority"], "urgent");
    assert_eq!(d[2]["assignee"], "ann");

    let refused = [
        (
            json!({"tickets": []}),
            422,
            "invalid_request",
            "tickets: the list is empty",
        ),
        (
            json!({"tickets": [{"body": "a"}, {"body": "b"}, {"body": "c"}, {"body": "d"}]}),
            413,
            "too_many_tickets",
            "tickets: 4 tickets in one request; the limit is 3 (limits.max_batch_tickets)",
        ),
        (
            json!({"tickets": [{"body": PARCEL}, {"subject": " ", "body": ""}]}),
            422,
            "empty_ticket",
            "tickets[1]: the ticket has no text; send `body` (or `text`) and/or `subject`",
        ),
        (
            json!({"tickets": [{"id": "", "body": PARCEL}]}),
            422,
            "invalid_request",
            "tickets[0].id: must be 1 to 256 characters",
        ),
    ];
    for (body, status, code, message) in refused {
        let r = app.post("/v1/route/batch", ROUTE_TOKEN, &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code);
        assert_eq!(r.body["error"]["message"], message);
    }
    // Nothing was logged for the refused batches.
    let log = app.get("/v1/decisions", ROUTE_TOKEN).await;
    assert_eq!(log.body["decisions"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn classify_and_dry_run_agree_with_route_and_log_nothing() {
    let app = App::with_config("\n[limits]\nmax_ticket_chars = 40\n").await;
    let ticket = json!({"subject": PARCEL, "body": format!("{PARCEL} ").repeat(5)});
    let c = app.post("/v1/classify", ROUTE_TOKEN, &ticket).await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["truncated"], true);
    let dry = app.post("/v1/route/dry-run", ROUTE_TOKEN, &ticket).await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["truncated"], true);
    assert_eq!(dry.body["trace"].as_array().unwrap().len(), 3);
    let log = app.get("/v1/decisions", ROUTE_TOKEN).await;
    assert_eq!(log.body["decisions"], json!([]), "nothing is logged");

    let routed = route(&app, &ticket).await;
    assert_eq!(routed["truncated"], true);
    for (key, value) in c.body.as_object().unwrap() {
        if key == "thresholds_version" {
            assert_eq!(&routed[key], value, "{key}");
        } else if key != "model_version" && key != "truncated" {
            assert_eq!(&routed["intent"][key], value, "{key}");
        }
    }
    assert_eq!(routed["team"], "logistics");
    for key in [
        "team", "status", "priority", "tags", "rule_ids", "trace", "language",
    ] {
        assert_eq!(routed[key], dry.body[key], "{key}");
    }
    // Routing gives the ticket an id; the rest of the classification is the same.
    assert_eq!(routed["intent"]["id"], routed["ticket_id"]);
    let mut intent = routed["intent"].clone();
    intent.as_object_mut().unwrap().remove("id");
    assert_eq!(intent, dry.body["intent"]);
    assert_eq!(routed["model_version"], c.body["model_version"]);

    let empty = app
        .post("/v1/classify", ROUTE_TOKEN, &json!({"body": "  "}))
        .await;
    assert_eq!(empty.status, 422);
    assert_eq!(
        empty.body["error"]["message"],
        "ticket: the ticket has no text; send `body` (or `text`) and/or `subject`"
    );
}

#[tokio::test]
async fn a_rules_change_is_live_for_the_next_request_and_a_bad_one_changes_nothing() {
    let app = App::start().await;
    let before = route(&app, &json!({"body": PARCEL})).await;
    assert_eq!(before["team"], "logistics");

    let text =
        crate::common::app::TINY_RULES.replace("team = \"logistics\"", "team = \"couriers\"");
    let saved = app.put_rules(&text, "\"1\"").await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.header["etag"], "\"2\"");
    let after = route(&app, &json!({"body": PARCEL})).await;
    assert_eq!(
        (after["team"].as_str(), after["rules_version"].as_str()),
        (Some("couriers"), Some("2"))
    );

    // An edit based on an old version, and rules that do not compile, leave version 2 serving.
    let stale = app.put_rules(crate::common::app::TINY_RULES, "\"1\"").await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.body["error"]["code"], "version_conflict");
    let bad = text.replace("when.intent = \"orders\"", "when.intent = \"orders.lost\"");
    let invalid = app.put_rules(&bad, "\"2\"").await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.body["error"]["code"], "invalid_rules");
    let message = invalid.body["error"]["details"]["errors"][0]
        .as_str()
        .unwrap();
    assert!(
        message.contains("unknown intent \"orders.lost\""),
        "{message}"
    );
    let still = route(&app, &json!({"body": PARCEL})).await;
    assert_eq!(
        (still["team"].as_str(), still["rules_version"].as_str()),
        (Some("couriers"), Some("2"))
    );
    assert_eq!(app.state.rules.current().stored.version, 2);
}

/// A copy of a database written by the release before the typed decision record (commit
/// f5b3273, `serve` with the default model and the test rules: five decisions, one under the
/// idempotency key `fx-1`), with its registry pointed at this checkout's model.
async fn previous_release_database() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("router.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/router-f5b3273.db"
        ),
        &db,
    )
    .unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE models SET path = ?")
        .bind(helpdesk_model().display().to_string())
        .execute(&pool)
        .await
        .unwrap();
    // The rules file it was seeded from, unchanged since (the built-in rules have changed).
    let seeded: String = sqlx::query_scalar("SELECT text FROM rules_versions WHERE version = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    std::fs::write(dir.path().join("rules.toml"), seeded).unwrap();
    pool.close().await;
    dir
}

fn helpdesk_model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/helpdesk")
}

/// With the shipped model and the default rules, a message that is no request to this
/// business is answered `out_of_scope` over HTTP, with the detector's probability, and goes to
/// triage by the default rule, explained in the trace.
#[tokio::test]
async fn a_message_that_is_no_request_is_routed_out_of_scope_to_triage() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        intent_router::rules::DEFAULT_RULES,
    )
    .unwrap();
    let app = App::in_dir(dir, &helpdesk_model(), "").await;
    let body = json!({"id": "M-1", "subject": "Saturday", "body": "Mum, we arrive on Saturday at 6, could Dad pick us up at the station?"});
    let d = route(&app, &body).await;
    assert_eq!(d["intent"]["intent"], "out_of_scope", "{d}");
    assert_eq!(d["intent"]["chain"], json!([]), "{d}");
    assert!(d["intent"]["out_of_scope"].as_f64().unwrap() > 0.5, "{d}");
    assert_eq!(d["rule_ids"], json!(["out-of-scope"]), "{d}");
    assert_eq!(
        (&d["team"], &d["status"]),
        (&json!("triage"), &json!("new"))
    );
    assert_eq!(d["tags"], json!(["out-of-scope"]));
    let rule = d["trace"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["rule"] == "out-of-scope")
        .unwrap();
    assert_eq!(rule["matched"], true, "{d}");
    let refund = route(&app, &json!({"id": "M-2", "body": "You charged me twice for one order, please refund the second payment"})).await;
    assert_eq!(
        refund["intent"]["intent"], "billing.charge_dispute",
        "{refund}"
    );
    assert_eq!(refund["team"], "billing", "{refund}");
    assert_eq!(
        refund["intent"]["intents"].as_array().unwrap().len(),
        1,
        "one request: {refund}"
    );
}

/// A ticket with two requests is routed by its main intent over HTTP, lists the further
/// request in `intents` with its probability, and the default rules tag it.
#[tokio::test]
async fn a_second_request_in_a_ticket_is_listed_and_tagged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        intent_router::rules::DEFAULT_RULES,
    )
    .unwrap();
    let app = App::in_dir(dir, &helpdesk_model(), "").await;
    let body = json!({"id": "M-3", "subject": "Broken parcel and a double charge", "body": "My parcel arrived with the screen cracked and the box crushed. Also, I was charged twice for this order, please fix the second charge."});
    let d = route(&app, &body).await;
    let intents: Vec<&str> = d["intent"]["intents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["intent"].as_str().unwrap())
        .collect();
    let mut sorted = intents.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["billing.charge_dispute", "orders.delivery_issue"],
        "{d}"
    );
    assert_eq!(
        intents[0], d["intent"]["intent"],
        "the main intent comes first: {d}"
    );
    let p = d["intent"]["intents"][1]["p"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0, "{d}");
    let tags = d["tags"].as_array().unwrap();
    assert!(tags.contains(&json!("several-requests")), "{d}");
    assert!(tags.contains(&json!(format!("also:{}", intents[1]))), "{d}");
    assert!(d["rule_ids"]
        .as_array()
        .unwrap()
        .contains(&json!("further-request")));
}

#[tokio::test]
async fn the_decision_log_of_the_previous_release_is_read_and_extended() {
    let dir = previous_release_database().await;
    let app = App::in_dir(dir, &helpdesk_model(), "").await;
    let log = app.get("/v1/decisions", ROUTE_TOKEN).await;
    assert_eq!(log.status, 200, "{}", log.body);
    let old = log.body["decisions"].as_array().unwrap().clone();
    let tickets: Vec<&str> = old
        .iter()
        .map(|d| d["ticket_id"].as_str().unwrap())
        .collect();
    assert_eq!(tickets, ["F-5", "F-4", "F-3", "F-2", "F-1"]);
    assert_eq!(old[4]["assignee"], "ann");
    assert_eq!(old[4]["assignment"], json!({"strategy": "round-robin"}));
    assert!(old[4]["timings"]["total_ms"].is_number());
    let f1 = old[4]["decision_id"].as_str().unwrap();
    let one = app.get(&format!("/v1/decisions/{f1}"), ROUTE_TOKEN).await;
    assert_eq!(
        one.body, old[4],
        "read typed or raw, a logged decision is the same"
    );

    // Readers of the log: the review queue, feedback (the rules that fired), simulation.
    let review = app.get("/v1/review", crate::server::FEEDBACK_TOKEN).await;
    assert_eq!(review.status, 200, "{}", review.body);
    assert_eq!(review.body["review"].as_array().unwrap().len(), 5);
    let feedback = app
        .post(
            "/v1/feedback",
            crate::server::FEEDBACK_TOKEN,
            &json!({"decision_id": f1, "correct_team": "sales", "agent": "ann"}),
        )
        .await;
    assert_eq!(feedback.status, 201, "{}", feedback.body);
    let report = app.get("/v1/feedback/report", ADMIN_TOKEN).await;
    assert_eq!(
        report.body["rules"][0]["rule"], "billing",
        "{}",
        report.body
    );
    let rules = app.get("/v1/rules", ADMIN_TOKEN).await;
    assert_eq!(rules.body["version"], "1", "the stored rules are the same");
    let sim = app
        .post(
            "/v1/rules/simulate",
            ADMIN_TOKEN,
            &json!({"rules": rules.body["text"], "last": 10}),
        )
        .await;
    assert_eq!(sim.status, 200, "{}", sim.body);
    assert_eq!(sim.body["summary"]["tickets"], 5);
    assert_eq!(sim.body["summary"]["changed"], 0);
    assert_eq!(
        sim.body["summary"]["facts_missing"], 5,
        "the release logged facts unredacted: the upgrade dropped them"
    );

    // A retry of an old request gets the old answer; new decisions continue the round robin.
    let retry = app
        .call(
            "POST",
            "/v1/route",
            ROUTE_TOKEN,
            Some(r#"{"id":"F-2","body":"Где моя посылка? Заказ 5512 не пришёл уже неделю"}"#),
            &[("idempotency-key", "fx-1")],
        )
        .await;
    assert_eq!(retry.header["idempotent-replayed"], "true");
    assert_eq!(retry.body, old[3]);
    let next = route(
        &app,
        &json!({"body": "I was charged twice, please refund the money"}),
    )
    .await;
    assert_eq!(
        (next["team"].as_str(), next["assignee"].as_str()),
        (Some("billing"), Some("ann"))
    );
    let log = app.get("/v1/decisions", ROUTE_TOKEN).await;
    assert_eq!(log.body["decisions"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn classify_with_rules_prints_the_decision_that_route_returns() {
    let app = App::start().await;
    let ticket = json!({"id": "T-9", "body": REFUND, "received_at": "2026-12-01T10:00:00Z"});
    let api = route(&app, &ticket).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tickets.jsonl");
    std::fs::write(&file, format!("{ticket}\n")).unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, crate::common::app::TINY_RULES).unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let (ok, out, err) = crate::common::run(&[
        "classify",
        "--model",
        &path(crate::common::app::tiny_model()),
        "--rules",
        &path(&rules),
        "--file",
        &path(&file),
    ]);
    assert!(ok, "{err}");
    let cli: Value = serde_json::from_str(out.trim()).unwrap();
    // Offline there is no decision log, no agent picked, no stored rules version.
    assert!(
        cli.get("decision_id").is_none() && cli.get("timings").is_none(),
        "{cli}"
    );
    assert_eq!(cli["assignee"], Value::Null);
    assert_eq!(cli["assignment"], json!({"strategy": "round-robin"}));
    assert_eq!(
        cli["rules_version"].as_str().unwrap().len(),
        16,
        "the rules' content hash"
    );
    let without = |mut v: Value| {
        for key in [
            "decision_id",
            "timings",
            "assignee",
            "assignment",
            "rules_version",
        ] {
            v.as_object_mut().unwrap().remove(key);
        }
        v
    };
    assert_eq!(without(cli), without(api));
}

#[tokio::test]
async fn a_model_activated_elsewhere_that_cannot_serve_here_is_tried_again_after_a_pause() {
    use intent_router::registry::RegistryError;
    use intent_router::store::ModelStatus;

    let app = App::start().await;
    let store = &app.state.store;
    let serving = app.state.models.active().id.clone();
    // Another replica activated a model whose files this replica cannot read.
    let mut elsewhere = store.model(&serving).await.unwrap();
    elsewhere.id = "elsewhere".into();
    elsewhere.path = "/nonexistent/elsewhere".into();
    elsewhere.status = ModelStatus::Candidate;
    elsewhere.activated_at = None;
    store.insert_model(&elsewhere).await.unwrap();
    store.activate_model("elsewhere", None, None).await.unwrap();

    let registry = &app.state.registry;
    let first = registry.follow().await.unwrap_err();
    assert!(
        matches!(first, RegistryError::Unloadable(_)),
        "the first check tries it: {first}"
    );
    // The next checks do not load it again until the pause is over; the replica keeps
    // serving the model it has.
    match registry.follow().await {
        Err(RegistryError::FollowPaused { id, retry_in }) => {
            assert_eq!(id, "elsewhere");
            assert!(retry_in.as_secs() <= 30, "{retry_in:?}");
        }
        other => panic!("paused, not {other:?}"),
    }
    assert_eq!(app.state.models.active().id, serving);
    let routed = route(&app, &json!({"body": REFUND})).await;
    assert_eq!(routed["model_version"], serving.as_str());
}

#[tokio::test]
async fn a_simulation_over_the_log_sees_the_channel_and_the_kept_customer_facts_and_fields() {
    let app = App::start().await;
    let ticket = json!({"id": "V-1", "body": REFUND, "channel": "chat",
        "customer": {"tier": "vip"}, "fields": {"plan": "pro", "contact": "ivan@example.com"}});
    route(&app, &ticket).await;
    let candidate = format!(
        "{TINY_RULES}\n[[rules]]\nid = \"vip-chat-pro\"\nwhen.channel = \"chat\"\nwhen.tier = \"vip\"\n\
         when.fields = {{ plan = \"pro\", contact = \"[EMAIL]\" }}\nthen = {{ priority = \"high\" }}\n"
    );
    let sim = app
        .post(
            "/v1/rules/simulate",
            ADMIN_TOKEN,
            &json!({"rules": candidate, "last": 1}),
        )
        .await;
    assert_eq!(sim.status, 200, "{}", sim.body);
    let result = &sim.body["results"][0];
    assert_eq!(
        (&result["text_missing"], &result["facts_missing"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(
        result["after"]["rule_ids"],
        json!(["billing", "vip-chat-pro"]),
        "the channel, tier and fields (redacted as kept) reach the rules: {result}"
    );
    assert_eq!(result["changed"], json!(["priority"]));
}

#[tokio::test]
async fn near_ties_are_encoded_again_with_refined_arithmetic_and_counted() {
    // A margin of 1 takes every ticket for a near tie.
    let app = App::with_config("\n[batching]\nrecheck_margin = 1\n").await;
    let rechecked = || async {
        let m = app.get("/metrics", crate::server::METRICS_TOKEN).await;
        let text = m.body.as_str().unwrap().to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("intent_router_inference_rechecked_texts_total "))
            .unwrap_or_else(|| panic!("no re-check counter in {text}"))
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let before = rechecked().await;
    let r = app
        .post(
            "/v1/route/batch",
            ROUTE_TOKEN,
            &json!({"tickets": [{"body": PARCEL}, {"body": REFUND}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let teams: Vec<&str> = r.body["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["logistics", "billing"]);
    // Only int8 linears approximate; elsewhere there is nothing to re-check.
    let expected = if intent_router::model::qgemm::available() {
        2
    } else {
        0
    };
    assert_eq!(rechecked().await - before, expected);
}
