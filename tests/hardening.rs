//! Hardening over real HTTP: personal data redacted before storage, a data-subject erasure,
//! token rotation on SIGHUP without a restart, per-token rate limits.

use std::process::Command;
use std::time::Duration;

use intent_router::store::DatabaseUrl;
use serde_json::json;

use crate::server::{self, ADMIN_TOKEN, ROUTE_TOKEN};

#[test]
fn stored_text_is_redacted_and_a_ticket_can_be_erased() {
    let d = tempfile::tempdir().unwrap();
    let s = server::start(d.path(), &[]);
    let body = "Refund please: you charged card 4111 1111 1111 1111 twice. Reach me at anna.k@example.com or +7 916 123-45-67.";
    let ticket = json!({
        "id": "P-1", "body": body, "customer": {"tier": "vip"},
        "fields": {"contact": "anna.k@example.com", "phone": 79161234567_u64, "order": 1234}
    });
    let r = s.post("/v1/route", &ticket);
    assert_eq!(r.status, 200, "{}", r.body);
    let decision_id = r.body["decision_id"].as_str().unwrap().to_string();
    let fb = json!({"decision_id": decision_id, "correct_intent": "billing.charge_dispute", "agent": "maria"});
    let f = s.feedback(&fb);
    assert_eq!(f.status, 201, "{}", f.body);
    // A batch with the same ticket and another one, under an idempotency key.
    let batch = json!({"tickets": [
        {"id": "P-2", "body": "I was charged twice for my subscription, please refund"},
        ticket,
    ]})
    .to_string();
    let key = [("Idempotency-Key", "batch-1")];
    let first = s.call("POST", "/v1/route/batch", ROUTE_TOKEN, Some(&batch), &key);
    assert_eq!(first.status, 200, "{}", first.body);

    // What the database keeps has placeholders, not the card, e-mail or phone, in the text and
    // in the fields; the decision log has no customer facts or fields at all.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let logged = rt.block_on(async {
        let store =
            intent_router::store::Store::open(&DatabaseUrl::Sqlite(d.path().join("router.db")))
                .await
                .unwrap();
        let logged = store.recent_decisions(1).await.unwrap().remove(0);
        store.close().await;
        logged
    });
    let kept = logged.kept.unwrap();
    assert_eq!(
        kept.body,
        "Refund please: you charged card [CARD] twice. Reach me at [EMAIL] or [PHONE]."
    );
    assert_eq!(kept.customer.tier.as_deref(), Some("vip"));
    assert_eq!(
        serde_json::to_value(kept.fields.unwrap()).unwrap(),
        json!({"contact": "[EMAIL]", "phone": "[PHONE]", "order": 1234})
    );
    for personal in ["example.com", "7916", "contact"] {
        assert!(!logged.decision.contains(personal), "{}", logged.decision);
    }
    assert_eq!((logged.channel, logged.language_given), (None, None));

    // Erasure: everything about the ticket goes, and the answer says what.
    let e = s.call("DELETE", "/v1/tickets/P-1", ROUTE_TOKEN, None, &[]);
    assert_eq!(e.status, 403, "erasing needs the admin scope");
    let e = s.admin("DELETE", "/v1/tickets/P-1", None, &[]);
    assert_eq!(e.status, 200, "{}", e.body);
    let assigned = u64::from(!r.body["assignee"].is_null())
        + u64::from(!first.body["decisions"][1]["assignee"].is_null());
    assert_eq!(
        e.body["removed"],
        json!({"assignments": assigned, "connector_events": 0, "decisions": 2, "embedding_cache": 0, "feedback": 1, "idempotency_keys": 1, "incident_links": 0, "incident_unlinks": 0, "shadow_results": 0, "ticket_texts": 1, "ticket_vectors": 2, "write_backs": 0})
    );
    let gone = s.call(
        "GET",
        &format!("/v1/decisions/{decision_id}"),
        ROUTE_TOKEN,
        None,
        &[],
    );
    assert_eq!(gone.status, 404);
    let again = s.admin("DELETE", "/v1/tickets/P-1", None, &[]);
    assert_eq!(again.body["removed"]["decisions"], 0);

    // A retry of the batch replays the other ticket's decision (assigned once) and nothing of
    // the erased one.
    let retry = s.call("POST", "/v1/route/batch", ROUTE_TOKEN, Some(&batch), &key);
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(
        retry.header.get("idempotent-replayed").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        retry.body,
        json!({"decisions": [first.body["decisions"][0].clone()]})
    );
}

#[test]
fn tokens_rotate_on_sighup_and_rate_limits_hold() {
    let d = tempfile::tempdir().unwrap();
    let s = server::start(d.path(), &["--rate-per-minute", "600"]);
    let ok = |token: &str| {
        s.call(
            "POST",
            "/v1/classify",
            token,
            Some(r#"{"body": "refund please"}"#),
            &[],
        )
        .status
    };
    assert_eq!(ok(ROUTE_TOKEN), 200);
    // Rotate: the route token is replaced by a new one with a tight limit.
    let new_token = "rotated-route-token-0123456789";
    let config = std::fs::read_to_string(d.path().join("router.toml")).unwrap();
    let rotated = config.replace(
        &server::sha_of(ROUTE_TOKEN),
        &format!("{}\"\nrate_per_minute = 2\n#\"", server::sha_of(new_token)),
    );
    std::fs::write(d.path().join("router.toml"), rotated).unwrap();
    let pid = s.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let mut old = 0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        old = ok(ROUTE_TOKEN);
        if old == 401 {
            break;
        }
    }
    assert_eq!(old, 401, "the old token is revoked without a restart");
    assert!(s
        .log
        .lock()
        .unwrap()
        .contains("SIGHUP: tokens and connectors reloaded"));
    assert_eq!(ok(new_token), 200);
    assert_eq!(ok(new_token), 200);
    let r = s.call(
        "POST",
        "/v1/classify",
        new_token,
        Some(r#"{"body": "x"}"#),
        &[],
    );
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(r.header["retry-after"], "30");
    // Other tokens keep their own budget.
    assert_eq!(s.admin("GET", "/v1/rules", None, &[]).status, 200);
    let _ = ADMIN_TOKEN;
}
