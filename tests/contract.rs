//! The API's error contract through the real router in process: every rejection has the one
//! JSON shape (bad query strings, path parameters, methods and paths included), rules compile
//! errors come as lines and as fields, and `If-Match: *` means the current version.

use serde_json::{json, Value};

use crate::common::app::{App, TINY_RULES};
use crate::server::{ADMIN_TOKEN, ROUTE_TOKEN};

fn assert_error(r: &crate::server::Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header["content-type"], "application/json", "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

/// Whether the router itself refused the request: no such path, or not that method.
fn router_refused(r: &crate::server::Resp) -> bool {
    r.status == 405
        || (r.status == 404
            && r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no such endpoint")))
}

#[tokio::test]
async fn the_document_and_the_router_agree() {
    let app = App::start().await;
    let doc = app.get("/openapi.json", "").await;
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.len() > 30, "{}", paths.len());
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    for (path, item) in paths {
        // Path parameters get values that exist where it matters (the asset) and a malformed
        // body stops every handler before it changes anything.
        let concrete = path
            .replace("{file}", "app.js")
            .replace("{version}", "1")
            .replace(['{', '}'], "");
        for method in methods {
            let documented = item.get(method.to_lowercase()).is_some();
            let r = app
                .call(method, &concrete, ADMIN_TOKEN, Some("{"), &[])
                .await;
            assert_eq!(
                router_refused(&r),
                !documented,
                "{method} {path} is {}documented but answered {} {}",
                if documented { "" } else { "not " },
                r.status,
                r.body
            );
        }
    }
    for path in ["/v1/nowhere", "/v2/route", "/assets", "/v1/models/x/y/z"] {
        let r = app.get(path, ADMIN_TOKEN).await;
        assert!(router_refused(&r), "GET {path}: {} {}", r.status, r.body);
    }
}

#[tokio::test]
async fn every_rejection_has_the_one_error_shape() {
    let app = App::start().await;
    let r = app.get("/v1/assignments?limit=lots", ROUTE_TOKEN).await;
    assert_error(&r, 400, "bad_request");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("query string: ") && message.contains("limit"),
        "{message}"
    );
    let r = app.get("/v1/decisions?colour=red", ROUTE_TOKEN).await;
    assert_error(&r, 400, "bad_request");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("colour"));
    let r = app.get("/v1/decisions?since=yesterday", ROUTE_TOKEN).await;
    assert_error(&r, 400, "bad_request");
    let r = app.get("/v1/rules/versions/%FF", ADMIN_TOKEN).await;
    assert_error(&r, 400, "bad_request");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("path: "));
    let r = app.get("/v1/rules/versions/seven", ADMIN_TOKEN).await;
    assert_error(&r, 400, "bad_request");
    let r = app
        .call("DELETE", "/v1/route", ROUTE_TOKEN, None, &[])
        .await;
    assert_error(&r, 405, "method_not_allowed");
    let r = app.get("/v1/nowhere", ROUTE_TOKEN).await;
    assert_error(&r, 404, "not_found");
    let r = app.get("/v1/decisions/nope", ROUTE_TOKEN).await;
    assert_error(&r, 404, "not_found");
    let r = app
        .call("POST", "/v1/route", ROUTE_TOKEN, Some("{\"body\": "), &[])
        .await;
    assert_error(&r, 400, "malformed_json");
    let r = app.call("POST", "/v1/route", ROUTE_TOKEN, None, &[]).await;
    assert_error(&r, 400, "empty_body");
    let r = app
        .post("/v1/route", ROUTE_TOKEN, &json!({"body": "x", "colour": 1}))
        .await;
    assert_error(&r, 422, "invalid_request");
    let r = app.post("/v1/route", "", &json!({"body": "x"})).await;
    assert_error(&r, 401, "unauthorized");
    let r = app.get("/v1/rules", ROUTE_TOKEN).await;
    assert_error(&r, 403, "forbidden");
}

#[tokio::test]
async fn rules_errors_come_as_lines_and_as_fields() {
    let app = App::start().await;
    let bad = TINY_RULES.replace("when.intent = \"orders\"", "when.intent = \"orders.lost\"");
    let line = bad.lines().position(|l| l.contains("orders.lost")).unwrap() + 1;
    let put = app.put_rules(&bad, "\"1\"").await;
    assert_error(&put, 422, "invalid_rules");
    let details = &put.body["error"]["details"];
    let text = details["errors"][0].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "rules:{line}: rules[2].when.intent: unknown intent \"orders.lost\""
        )),
        "{text}"
    );
    let problem = &details["problems"][0];
    assert_eq!(
        (&problem["file"], &problem["line"], &problem["path"]),
        (
            &json!("rules"),
            &json!(line),
            &json!("rules[2].when.intent")
        )
    );
    assert!(problem["message"]
        .as_str()
        .unwrap()
        .starts_with("unknown intent \"orders.lost\""));

    let valid = app
        .post("/v1/rules/validate", ADMIN_TOKEN, &json!({"text": bad}))
        .await;
    assert_eq!(valid.status, 200);
    assert_eq!(valid.body["valid"], false);
    let e = &valid.body["errors"][0];
    assert_eq!(
        (&e["line"], &e["path"]),
        (&json!(line), &json!("rules[2].when.intent"))
    );
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("rules[2].when.intent: unknown intent"));
    let syntax = app
        .post(
            "/v1/rules/validate",
            ADMIN_TOKEN,
            &json!({"text": "[[rules]\n"}),
        )
        .await;
    let e = &syntax.body["errors"][0];
    assert_eq!((&e["line"], &e["path"]), (&json!(1), &json!("")));
}

#[tokio::test]
async fn if_match_star_applies_a_change_over_whatever_version_is_current() {
    let app = App::start().await;
    let first = app
        .put_rules(
            &TINY_RULES.replace("\"logistics\"", "\"couriers\""),
            "\"1\"",
        )
        .await;
    assert_eq!(first.header["etag"], "\"2\"");
    let any = app.put_rules(TINY_RULES, "*").await;
    assert_eq!(any.status, 200, "{}", any.body);
    assert_eq!(any.header["etag"], "\"3\"");
    assert_eq!(any.body["version"], "3");
    let junk = app.put_rules(TINY_RULES, "\"v3\"").await;
    assert_error(&junk, 400, "bad_request");
    let rollback = app
        .call(
            "POST",
            "/v1/rules/rollback",
            ADMIN_TOKEN,
            Some(r#"{"version": 2}"#),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(rollback.status, 200, "{}", rollback.body);
    let current: Value = app.get("/v1/rules", ADMIN_TOKEN).await.body;
    assert_eq!(current["version"], "4");
}

/// schemathesis, pinned, in a virtual environment outside the repository (`.ci/run` makes it;
/// `SCHEMATHESIS` may name another `st`).
fn schemathesis() -> std::path::PathBuf {
    let st = std::env::var_os("SCHEMATHESIS").map_or_else(
        || "/opt/schemathesis/bin/st".into(),
        std::path::PathBuf::from,
    );
    assert!(
        st.exists(),
        "the API contract test needs schemathesis 4.32.5 at {}: python3 -m venv /opt/schemathesis && /opt/schemathesis/bin/pip install schemathesis==4.32.5",
        st.display()
    );
    st
}

/// The served OpenAPI document against the real server (the binary on the tiny model, a tiny
/// learning base set, an admin token): every operation, every check, a fixed seed
/// (`tests/fixtures/schemathesis.toml` says which state-dependent 422s are expected where). A
/// failure prints schemathesis' report with a curl line for each case.
#[test]
fn schemathesis_finds_no_contract_failures() {
    let st = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(dir.path().join("rules.toml"), TINY_RULES).unwrap();
    crate::common::tiny_dataset(&dir.path().join("base.jsonl"), 6, 0);
    crate::common::tiny_dataset(&dir.path().join("dev.jsonl"), 2, 50);
    let learning = format!(
        "\n[learning]\nbase_data = \"{}\"\ndev_data = \"{}\"\nretrain_after = 0\n",
        d("base.jsonl"),
        d("dev.jsonl")
    );
    let model = crate::common::app::tiny_model().display().to_string();
    let server = crate::server::start_full(dir.path(), &["--model", &model], &learning, &[]);
    let settings = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/schemathesis.toml"
    );
    // Another seed explores other data: SCHEMATHESIS_SEED=7 cargo test schemathesis.
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261206".into());
    let out = std::process::Command::new(st)
        .args(["--config-file", settings])
        .args(["run", &format!("{}/openapi.json", server.base)])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", "all", "--max-examples", "25", "--seed", &seed])
        .args(["--request-timeout", "60", "--no-color"])
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found contract failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_request_over_the_time_limit_gets_the_timeout_error_with_its_request_id() {
    let app = App::with_config("[limits]\nrequest_timeout_ms = 1\n").await;
    // 256 tickets cannot be tokenised, embedded and logged in a millisecond.
    let tickets: Vec<Value> = (0..256)
        .map(|i| json!({"body": format!("refund my money back please, order {i}")}))
        .collect();
    let r = app
        .call(
            "POST",
            "/v1/route/batch",
            ROUTE_TOKEN,
            Some(&json!({ "tickets": tickets }).to_string()),
            &[("x-request-id", "slow-1")],
        )
        .await;
    assert_error(&r, 503, "timeout");
    assert_eq!(r.header["retry-after"], "1");
    assert_eq!(r.header["x-request-id"], "slow-1");
    let metrics = app.state.metrics.render(0);
    assert!(
        metrics.contains(
            "intent_router_http_requests_total{endpoint=\"/v1/route/batch\",method=\"POST\",status=\"503\"} 1"
        ),
        "{metrics}"
    );
    // An insane request id is replaced by a new one.
    let r = app
        .call(
            "GET",
            "/healthz",
            "",
            None,
            &[("x-request-id", "no spaces allowed")],
        )
        .await;
    assert_eq!(r.header["x-request-id"].len(), 36, "{:?}", r.header);
}
