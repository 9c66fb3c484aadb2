//! End-to-end tests of `intent-router serve`: the real binary on 127.0.0.1 (port 0) with the
//! committed default model, real HTTP, real decisions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common;

/// A token with the `route` scope.
pub const ROUTE_TOKEN: &str = "route-token-0123456789abcdef";
/// A token with the `admin` scope.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
/// A token with the `metrics` scope.
pub const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";
/// A token with the `feedback` scope.
pub const FEEDBACK_TOKEN: &str = "feedback-token-0123456789abcdef";

fn sha(t: &str) -> String {
    intent_router::server::auth::hash_token(t)
}

/// The configured hash of a token.
pub fn sha_of(t: &str) -> String {
    sha(t)
}

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Everything the server wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    /// Its working directory (config, database).
    pub dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default rules with a round-robin assignee for billing.
fn test_rules() -> String {
    intent_router::rules::DEFAULT_RULES.replace(
        "then = { team = \"billing\", status = \"open\" }",
        "then = { team = \"billing\", status = \"open\", assignee = { strategy = \"round-robin\" } }",
    )
}

/// Writes a config with four tokens and a billing roster, starts the server with `extra`
/// flags, and waits until it listens.
pub fn start(dir: &Path, extra: &[&str]) -> Server {
    start_with(dir, extra, "")
}

/// Like [`start`], with more config text appended (e.g. a `[learning]` table).
pub fn start_with(dir: &Path, extra: &[&str], more_config: &str) -> Server {
    start_full(dir, extra, more_config, &[])
}

/// Writes small curated files (60 training and 9 dev tickets of the committed data) into `dir`
/// and returns the `[learning]` table that retrains on them in seconds.
pub fn small_learning(dir: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let take = |from: &str, to: &str, n: usize| {
        let text: String = std::fs::read_to_string(root.join(from))
            .unwrap()
            .lines()
            .step_by(40)
            .take(n)
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.join(to), text).unwrap();
    };
    take("training-data/train.jsonl", "base.jsonl", 60);
    take("training-data/dev.jsonl", "dev.jsonl", 9);
    format!(
        "[learning]\nbase_data = \"base.jsonl\"\ndev_data = \"dev.jsonl\"\ncache_dir = \"{}\"\nretrain_after = 0\n",
        dir.join("cache").display()
    )
}

/// Writes `dir/router.toml` (four tokens, a billing roster, `more_config` appended) and, unless
/// one is there, `dir/rules.toml` with the default rules and a round-robin billing assignee.
pub fn write_config(dir: &Path, more_config: &str) {
    let mut config = format!(
        r#"listen = "127.0.0.1:0"
database = "router.db"
rules = "rules.toml"

[rosters]
billing = ["ann", "bob"]

[[tokens]]
name = "helpdesk"
sha256 = "{}"
scopes = ["route"]

[[tokens]]
name = "alice-admin"
sha256 = "{}"
scopes = ["admin"]

[[tokens]]
name = "prometheus"
sha256 = "{}"
scopes = ["metrics"]

[[tokens]]
name = "agents"
sha256 = "{}"
scopes = ["feedback"]
"#,
        sha(ROUTE_TOKEN),
        sha(ADMIN_TOKEN),
        sha(METRICS_TOKEN),
        sha(FEEDBACK_TOKEN)
    );
    config.push_str(more_config);
    std::fs::write(dir.join("router.toml"), config).unwrap();
    if !dir.join("rules.toml").exists() {
        std::fs::write(dir.join("rules.toml"), test_rules()).unwrap();
    }
}

/// Like [`start_with`], with environment variables (e.g. failpoints).
pub fn start_full(dir: &Path, extra: &[&str], more_config: &str, env: &[(&str, &str)]) -> Server {
    write_config(dir, more_config);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/helpdesk");
    let mut cmd = Command::new(common::binary());
    cmd.args(["--log", "info", "serve", "--config"])
        .arg(dir.join("router.toml"));
    if !extra.contains(&"--model") {
        cmd.arg("--model").arg(&model);
    }
    let mut child = cmd
        .args(extra)
        .env_remove("INTENT_ROUTER_MODEL")
        .env_remove("INTENT_ROUTER_RULES")
        .env_remove("INTENT_ROUTER_FAILPOINTS")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(addr);
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!("server did not start:\n{}", log.lock().unwrap());
        }
    };
    Server {
        child,
        base: format!("http://{addr}"),
        log,
        dir: dir.to_path_buf(),
    }
}

/// A response: status, headers we look at, JSON body (or the text as a JSON string).
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub header: std::collections::HashMap<String, String>,
}

impl Server {
    /// Waits until the server's log contains `what` (panics after 60 s).
    pub fn wait_log(&self, what: &str) {
        for _ in 0..600 {
            if self.log.lock().unwrap().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the log never said {what:?}:\n{}", self.log.lock().unwrap());
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a request; `token` may be empty for none.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let mut req = agent.request(method, &format!("{}{path}", self.base));
        if !token.is_empty() {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let header = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.to_lowercase(), v.to_string())))
            .collect();
        let text = resp.into_string().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            body,
            header,
        }
    }

    /// `POST` a JSON value with the route token.
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.call("POST", path, ROUTE_TOKEN, Some(&body.to_string()), &[])
    }

    /// A request with the admin token.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let text = body.map(Value::to_string);
        self.call(method, path, ADMIN_TOKEN, text.as_deref(), headers)
    }

    /// Starts a retraining job (`POST /v1/models/retrain`: 202 and its address) and waits for
    /// it to end; the job as it ended.
    pub fn retrain(&self, body: Option<&Value>) -> Value {
        let r = self.admin("POST", "/v1/models/retrain", body, &[]);
        assert_eq!(r.status, 202, "{}", r.body);
        let location = r.header["location"].clone();
        assert_eq!(
            location,
            format!("/v1/jobs/{}", r.body["id"].as_str().unwrap())
        );
        self.wait_job(&location)
    }

    /// Polls a job until it is no longer running (panics after 10 minutes).
    pub fn wait_job(&self, location: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let job = self.admin("GET", location, None, &[]);
            assert_eq!(job.status, 200, "{}", job.body);
            if job.body["status"] != "running" {
                return job.body;
            }
            assert!(
                start.elapsed().as_secs() < 600,
                "job still running: {}",
                job.body
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `POST /v1/feedback` with the agents' (feedback-scoped) token.
    pub fn feedback(&self, body: &Value) -> Resp {
        self.call(
            "POST",
            "/v1/feedback",
            FEEDBACK_TOKEN,
            Some(&body.to_string()),
            &[],
        )
    }
}

fn refund_ticket(id: &str) -> Value {
    json!({"id": id, "subject": "Refund please", "body": "You charged my card twice for the same order, I want my money back", "channel": "email"})
}

#[test]
fn routes_tickets_end_to_end_with_logging_and_assignment() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &[]);
    assert_eq!(s.call("GET", "/healthz", "", None, &[]).status, 200);
    let ready = s.call("GET", "/readyz", "", None, &[]);
    assert_eq!((ready.status, &ready.body["ready"]), (200, &json!(true)));

    // One ticket: a real decision with trace, versions and a request id.
    let r = s.post("/v1/route", &refund_ticket("T-1"));
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["ticket_id"], "T-1");
    assert_eq!(b["team"], "billing");
    assert_eq!(
        b["assignee"], "ann",
        "round-robin starts at the roster's head"
    );
    assert_eq!(b["assignment"]["strategy"], "round-robin");
    assert_eq!(b["intent"]["chain"][0]["intent"], "billing");
    assert_eq!(b["language"], "en");
    assert_eq!(b["rules_version"], "1");
    assert_eq!(b["model_version"].as_str().unwrap().len(), 12);
    assert_eq!(b["trace"].as_array().unwrap().len(), 16);
    assert!(b["timings"]["total_ms"].as_f64().unwrap() > 0.0);
    assert!(!r.header["x-request-id"].is_empty());
    let echoed = s.call(
        "POST",
        "/v1/route",
        ROUTE_TOKEN,
        Some(&refund_ticket("T-2").to_string()),
        &[("X-Request-Id", "helpdesk-42")],
    );
    assert_eq!(echoed.header["x-request-id"], "helpdesk-42");
    assert_eq!(echoed.body["assignee"], "bob");

    // A ticket without an id gets one; the decision log has it.
    let r = s.post(
        "/v1/route",
        &json!({"body": "Сайт лежит у всех, никто в компании не может зайти, ошибка 503"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["team"], "oncall");
    assert_eq!(r.body["priority"], "urgent");
    assert_eq!(r.body["language"], "ru");
    assert!(!r.body["ticket_id"].as_str().unwrap().is_empty());
    let id = r.body["decision_id"].as_str().unwrap();
    let logged = s.call(
        "GET",
        &format!("/v1/decisions/{id}"),
        ROUTE_TOKEN,
        None,
        &[],
    );
    assert_eq!(logged.body["decision_id"], id);
    assert_eq!(logged.body["team"], "oncall");

    // Batch: every decision in order, the same as one by one.
    let texts = [
        "How do I set up webhooks with your REST API?",
        "Огромное спасибо оператору Марии, всё решили за пять минут!",
        "Сколько стоит тариф для команды из 30 человек? Можно демо?",
        "Where is my parcel? The tracking number has not updated for a week",
    ];
    let tickets: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("B-{i}"), "body": t}))
        .collect();
    let batch = s.post("/v1/route/batch", &json!({ "tickets": tickets }));
    assert_eq!(batch.status, 200, "{}", batch.body);
    let decisions = batch.body["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 4);
    for (i, (t, d)) in tickets.iter().zip(decisions).enumerate() {
        assert_eq!(d["ticket_id"], format!("B-{i}"));
        let alone = s.post("/v1/route", t);
        for key in ["team", "status", "priority", "tags", "rule_ids"] {
            assert_eq!(alone.body[key], d[key], "{key} of ticket {i}");
        }
        assert_eq!(alone.body["intent"]["intent"], d["intent"]["intent"]);
        let (pa, pb) = (
            alone.body["intent"]["top_k"][0]["p"].as_f64().unwrap(),
            d["intent"]["top_k"][0]["p"].as_f64().unwrap(),
        );
        assert!((pa - pb).abs() < 1e-4, "batched {pb} vs alone {pa}");
    }
    assert_eq!(decisions[1]["status"], "solved");
    assert_eq!(decisions[2]["team"], "sales");

    // Classify: intent only, nothing logged.
    let c = s.post(
        "/v1/classify",
        &json!({"body": "I forgot my password and the reset code never arrives"}),
    );
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["intent"], "account.access");
    assert!(c.body.get("team").is_none());

    // The taxonomy.
    let i = s.call("GET", "/v1/intents", ROUTE_TOKEN, None, &[]);
    let ids: Vec<&str> = i.body["intents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"billing") && ids.contains(&"billing.refund"),
        "{ids:?}"
    );

    // Assignments: two open for billing; closing one frees ann.
    let open = s.call(
        "GET",
        "/v1/assignments?team=billing",
        ROUTE_TOKEN,
        None,
        &[],
    );
    let list = open.body["assignments"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", open.body);
    let anns = list.iter().find(|a| a["agent"] == "ann").unwrap();
    let did = anns["decision_id"].as_str().unwrap();
    let closed = s.post(&format!("/v1/assignments/{did}/close"), &json!({}));
    assert_eq!(closed.body["closed_by"], "api:helpdesk");
    let open = s.call(
        "GET",
        "/v1/assignments?team=billing",
        ROUTE_TOKEN,
        None,
        &[],
    );
    assert_eq!(open.body["assignments"].as_array().unwrap().len(), 1);

    // Metrics: requests, decisions, rules version, queue depth.
    let m = s.call("GET", "/metrics", METRICS_TOKEN, None, &[]);
    let text = m.body.as_str().unwrap();
    for want in [
        "intent_router_http_requests_total{endpoint=\"/v1/route\",method=\"POST\",status=\"200\"}",
        "intent_router_decisions_total{team=\"billing\",intent=\"billing.refund\"}",
        "intent_router_rules_version 1",
        "intent_router_inference_queue_depth 0",
        "intent_router_inference_batch_size_count",
    ] {
        assert!(text.contains(want), "missing {want}");
    }

    // The OpenAPI document describes every endpoint the server has.
    let doc = s.call("GET", "/openapi.json", "", None, &[]).body;
    let paths = [
        "/v1/route",
        "/v1/route/batch",
        "/v1/classify",
        "/v1/intents",
        "/v1/decisions/{decision_id}",
        "/v1/assignments",
        "/v1/assignments/{decision_id}/close",
        "/v1/rules",
        "/v1/rules/versions",
        "/v1/rules/versions/{version}",
        "/v1/rules/rollback",
        "/v1/rules/simulate",
        "/v1/feedback",
        "/v1/feedback/report",
        "/v1/review",
        "/v1/models",
        "/v1/models/retrain",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/models/rollback",
        "/v1/models/{id}/activate",
        "/v1/models/{id}/shadow",
        "/v1/models/{id}/shadow-report",
        "/v1/models/{id}/thresholds",
        "/v1/models/{id}/thresholds/history",
        "/v1/route/dry-run",
        "/v1/tickets/{id}",
        "/v1/decisions",
        "/v1/stats",
        "/v1/rules/validate",
        "/v1/models/{id}/report",
        "/",
        "/assets/{file}",
        "/console/login",
        "/console/session",
        "/console/logout",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/connectors",
        "/v1/connectors/{name}/events",
        "/v1/connectors/{name}/inbox",
        "/v1/connectors/{name}/outbox",
        "/v1/connectors/{name}/inbox/{id}/retry",
        "/v1/connectors/{name}/outbox/{id}/retry",
        "/v1/incidents",
        "/v1/incidents/{id}",
        "/v1/incidents/{id}/merge",
        "/v1/incidents/{id}/split",
        "/v1/incidents/{id}/unlink",
        "/v1/incidents/{id}/unmerge",
        "/v1/incidents/link-report",
        "/v1/incidents/alerts",
        "/v1/incidents/alerts/{id}/retry",
        "/v1/incidents/{id}/series",
    ];
    for path in paths {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        paths.len(),
        "openapi documents an endpoint the server lacks"
    );
    // Every /v1 endpoint needs a token, checked before the body is read; but the helpdesks'
    // webhooks, which carry their connector's signature instead (refused without it).
    let probe = |path: &str| {
        path.replace("{decision_id}", "x")
            .replace("{version}", "1")
            .replace("{id}", "x")
            .replace("{name}", "x")
    };
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let webhook = intent_router::server::auth::is_helpdesk_webhook(&probe(path));
        assert_eq!(webhook, path == "/v1/connectors/{name}/events", "{path}");
        for method in item.as_object().unwrap().keys() {
            let r = s.call(
                &method.to_uppercase(),
                &probe(path),
                "",
                Some("not json"),
                &[],
            );
            let status = if webhook { 404 } else { 401 };
            assert_eq!(
                r.status, status,
                "{method} {path} without a token: {}",
                r.body
            );
        }
        assert_eq!(
            item.as_object()
                .unwrap()
                .values()
                .all(|op| op["security"] == json!([{"connector": []}])),
            webhook,
            "{path}: only the webhooks are documented without our security"
        );
    }
    for path in paths {
        // Every documented path is routed (a 404 with our shape would mean it is not).
        let r = s.call("GET", &probe(path), ADMIN_TOKEN, None, &[]);
        assert_ne!(
            r.body["error"]["message"], "no such endpoint; GET /openapi.json lists them",
            "{path}"
        );
    }
    // Tokens never reach the log.
    let log = s.log.lock().unwrap().clone();
    for t in [ROUTE_TOKEN, ADMIN_TOKEN, METRICS_TOKEN] {
        assert!(!log.contains(t));
    }
}

#[test]
fn bad_requests_get_clear_errors_in_one_shape() {
    let d = tempfile::tempdir().unwrap();
    let s = start(
        d.path(),
        &["--max-body-bytes", "4096", "--max-batch-tickets", "3"],
    );
    let check = |r: Resp, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{}", r.body);
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
        r
    };
    // Authentication and scopes.
    check(
        s.call("POST", "/v1/route", "", Some("{}"), &[]),
        401,
        "unauthorized",
    );
    check(
        s.call(
            "POST",
            "/v1/route",
            "wrong-token-0000000000",
            Some("{}"),
            &[],
        ),
        401,
        "unauthorized",
    );
    check(
        s.call("GET", "/v1/rules", ROUTE_TOKEN, None, &[]),
        403,
        "forbidden",
    );
    check(
        s.call("GET", "/metrics", ROUTE_TOKEN, None, &[]),
        403,
        "forbidden",
    );
    assert_eq!(
        s.call("GET", "/v1/rules", ADMIN_TOKEN, None, &[]).status,
        200
    );
    // Bodies.
    check(
        s.call("POST", "/v1/route", ROUTE_TOKEN, Some(""), &[]),
        400,
        "empty_body",
    );
    check(
        s.call("POST", "/v1/route", ROUTE_TOKEN, Some("{\"body\": "), &[]),
        400,
        "malformed_json",
    );
    let r = check(
        s.call(
            "POST",
            "/v1/route",
            ROUTE_TOKEN,
            Some("{\"body\": \"x\", \"priority\": 1}"),
            &[],
        ),
        422,
        "invalid_request",
    );
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("unknown field `priority`"));
    check(
        s.post("/v1/route", &json!({"subject": " ", "body": ""})),
        422,
        "empty_ticket",
    );
    let big = json!({"body": "x".repeat(5000)});
    check(s.post("/v1/route", &big), 413, "body_too_large");
    let four = json!({"tickets": [{"body": "a"}, {"body": "b"}, {"body": "c"}, {"body": "d"}]});
    check(s.post("/v1/route/batch", &four), 413, "too_many_tickets");
    let r = check(
        s.post(
            "/v1/route/batch",
            &json!({"tickets": [{"body": "a"}, {"body": ""}]}),
        ),
        422,
        "empty_ticket",
    );
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("tickets[1]:"));
    check(
        s.call("GET", "/v1/nothing", ROUTE_TOKEN, None, &[]),
        404,
        "not_found",
    );
    check(
        s.call("DELETE", "/v1/route", ROUTE_TOKEN, None, &[]),
        405,
        "method_not_allowed",
    );
    check(
        s.call("GET", "/v1/decisions/nope", ROUTE_TOKEN, None, &[]),
        404,
        "not_found",
    );
}

#[test]
fn idempotent_retries_return_the_first_decision_and_assign_once() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &[]);
    let body = refund_ticket("I-1").to_string();
    let key = [("Idempotency-Key", "retry-1")];
    let first = s.call("POST", "/v1/route", ROUTE_TOKEN, Some(&body), &key);
    let again = s.call("POST", "/v1/route", ROUTE_TOKEN, Some(&body), &key);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, again.body, "the retry gets the first decision");
    assert_eq!(
        again.header.get("idempotent-replayed").map(String::as_str),
        Some("true")
    );
    let open = s.call(
        "GET",
        "/v1/assignments?team=billing",
        ROUTE_TOKEN,
        None,
        &[],
    );
    assert_eq!(
        open.body["assignments"].as_array().unwrap().len(),
        1,
        "assigned once"
    );
    let other = refund_ticket("I-2").to_string();
    let r = s.call("POST", "/v1/route", ROUTE_TOKEN, Some(&other), &key);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Concurrent retries with one key also assign once.
    let s = Arc::new(s);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let body = refund_ticket("I-3").to_string();
                s.call(
                    "POST",
                    "/v1/route",
                    ROUTE_TOKEN,
                    Some(&body),
                    &[("Idempotency-Key", "retry-3")],
                )
                .body["decision_id"]
                    .clone()
            })
        })
        .collect();
    let ids: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let open = s.call(
        "GET",
        "/v1/assignments?team=billing",
        ROUTE_TOKEN,
        None,
        &[],
    );
    assert_eq!(open.body["assignments"].as_array().unwrap().len(), 2);
}

#[test]
fn rules_are_edited_live_with_versions_rollback_and_simulation() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &[]);
    let current = s.admin("GET", "/v1/rules", None, &[]);
    assert_eq!(current.header["etag"], "\"1\"");
    assert_eq!(current.body["author"], "seed");
    let text = current.body["text"].as_str().unwrap().to_string();
    let edited = text.replace(
        "then = { team = \"sales\", status = \"open\" }",
        "then = { team = \"sales-emea\", status = \"open\", tags = [\"lead\"] }",
    );
    let body = json!({"text": edited, "note": "EMEA sales team"});
    // If-Match is required, and must be current.
    let r = s.admin("PUT", "/v1/rules", Some(&body), &[]);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (428, Some("if_match_required"))
    );
    let r = s.admin("PUT", "/v1/rules", Some(&body), &[("If-Match", "\"7\"")]);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (412, Some("version_conflict"))
    );
    assert_eq!(r.body["error"]["details"]["current_version"], "1");
    // An invalid ruleset: 422 with every error (path and line); the old rules keep serving.
    let broken = json!({"text": text.replace("when.intent = \"sales\"", "when.intent = \"sale\"").replace("priority = \"urgent\"", "priority = \"asap\"")});
    let r = s.admin("PUT", "/v1/rules", Some(&broken), &[("If-Match", "\"1\"")]);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("invalid_rules"))
    );
    let errors: Vec<&str> = r.body["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains(".then.priority: unknown priority \"asap\"")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains(".when.intent: unknown intent \"sale\"; known: sales")),
        "{errors:?}"
    );
    let sales =
        json!({"id": "S-1", "body": "Сколько стоит тариф для команды из 30 человек? Можно демо?"});
    assert_eq!(s.post("/v1/route", &sales).body["team"], "sales");

    // Simulate the edit first: against given tickets and against the logged decision.
    let sim = s.admin(
        "POST",
        "/v1/rules/simulate",
        Some(&json!({"rules": edited, "tickets": [sales, refund_ticket("S-2")]})),
        &[],
    );
    assert_eq!(sim.status, 200, "{}", sim.body);
    assert_eq!(sim.body["summary"]["changed"], 1);
    assert_eq!(sim.body["summary"]["teams"]["sales-emea"]["after"], 1);
    assert_eq!(sim.body["results"][0]["changed"], json!(["team", "tags"]));
    assert_eq!(sim.body["results"][1]["changed"], json!([]));
    let sim = s.admin(
        "POST",
        "/v1/rules/simulate",
        Some(&json!({"rules": edited, "last": 10})),
        &[],
    );
    assert_eq!(sim.body["summary"]["tickets"], 1);
    assert_eq!(sim.body["results"][0]["ticket_id"], "S-1");
    assert_eq!(sim.body["results"][0]["text_missing"], false);
    assert_eq!(sim.body["results"][0]["facts_missing"], false);
    assert_eq!(sim.body["results"][0]["after"]["team"], "sales-emea");
    let open = s.call("GET", "/v1/assignments?open=false", ROUTE_TOKEN, None, &[]);
    assert_eq!(
        open.body["assignments"].as_array().unwrap().len(),
        0,
        "simulation assigns nobody"
    );

    // Save: live at once, authored by the token's name.
    let r = s.admin("PUT", "/v1/rules", Some(&body), &[("If-Match", "\"1\"")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.header["etag"].as_str(), &r.body["author"]),
        ("\"2\"", &json!("alice-admin"))
    );
    let routed = s.post(
        "/v1/route",
        &json!({"body": "Сколько стоит тариф для команды из 30 человек? Можно демо?"}),
    );
    assert_eq!(
        (&routed.body["team"], &routed.body["rules_version"]),
        (&json!("sales-emea"), &json!("2"))
    );

    // History with diffs; rollback appends a version with the old text.
    let v = s.admin("GET", "/v1/rules/versions", None, &[]);
    let versions = v.body["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["note"], "EMEA sales team");
    assert!(versions[0]["diff"]
        .as_str()
        .unwrap()
        .contains("+then = { team = \"sales-emea\""));
    let r = s.admin(
        "POST",
        "/v1/rules/rollback",
        Some(&json!({"version": 1})),
        &[],
    );
    assert_eq!(
        (r.status, r.header["etag"].as_str()),
        (200, "\"3\""),
        "{}",
        r.body
    );
    assert_eq!(r.body["note"], "rollback to v1");
    assert_eq!(
        s.admin("GET", "/v1/rules/versions/3", None, &[]).body["text"],
        text
    );
    let routed = s.post(
        "/v1/route",
        &json!({"body": "Сколько стоит тариф для команды из 30 человек? Можно демо?"}),
    );
    assert_eq!(routed.body["team"], "sales");

    // The database is the source of truth across restarts; a changed --rules file is imported.
    drop(s);
    let s = start(d.path(), &[]);
    assert_eq!(
        s.admin("GET", "/v1/rules", None, &[]).header["etag"],
        "\"3\"",
        "v3 has the seed file's text"
    );
    drop(s);
    let seed = format!("# reviewed by the CX team\n{}", test_rules());
    std::fs::write(d.path().join("rules.toml"), seed).unwrap();
    let s = start(d.path(), &[]);
    let r = s.admin("GET", "/v1/rules", None, &[]);
    assert_eq!(
        r.header["etag"], "\"4\"",
        "the seed file differs from v3, so it is imported"
    );
    assert_eq!(
        r.body["note"],
        format!("imported from {}", d.path().join("rules.toml").display())
    );
    drop(s);
    let s = start(d.path(), &[]);
    assert_eq!(
        s.admin("GET", "/v1/rules", None, &[]).header["etag"],
        "\"4\"",
        "unchanged: no new version"
    );
}

#[test]
fn rules_hot_swap_under_load_never_fails_or_mixes_rulesets() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(start(d.path(), &[]));
    let ruleset = |name: &str| {
        format!(
            "[defaults]\nteam = \"{name}\"\n\n[[rules]]\nid = \"tag\"\nthen = {{ tags = [\"{name}\"] }}\n\n[[rules]]\nid = \"spam\"\nwhen.intent = \"other.spam\"\nthen.status = \"spam\"\n\n[[rules]]\nid = \"rest\"\nwhen.not.intent = \"other.spam\"\nthen.status = \"open\"\n"
        )
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || seen < 5 {
                    let r = s.post(
                        "/v1/route",
                        &json!({"body": format!("client {c}: please refund my last payment")}),
                    );
                    assert_eq!(r.status, 200, "{}", r.body);
                    let b = &r.body;
                    if b["rules_version"] != "1" {
                        // Each swapped-in ruleset tags its own team: a mix would disagree.
                        assert_eq!(b["tags"], json!([b["team"].clone()]), "{b}");
                    }
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..8 {
        let current = s.admin("GET", "/v1/rules", None, &[]).header["etag"].clone();
        let name = if i % 2 == 0 { "alpha" } else { "beta" };
        let r = s.admin(
            "PUT",
            "/v1/rules",
            Some(&json!({"text": ruleset(name)})),
            &[("If-Match", &current)],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        std::thread::sleep(Duration::from_millis(30));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(total >= 20);
    let r = s.post("/v1/route", &json!({"body": "refund please"}));
    assert_eq!(
        (&r.body["team"], &r.body["rules_version"]),
        (&json!("beta"), &json!("9"))
    );
}

#[test]
fn overload_gets_429_with_retry_after_and_the_rest_succeed() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(start(
        d.path(),
        &[
            "--queue-capacity",
            "2",
            "--max-batch",
            "1",
            "--max-wait-ms",
            "0",
        ],
    ));
    let long = "My order arrived damaged and the replacement never came. ".repeat(20);
    let clients: Vec<_> = (0..24)
        .map(|i| {
            let (s, long) = (Arc::clone(&s), long.clone());
            std::thread::spawn(move || {
                let r = s.post("/v1/route", &json!({"id": format!("L-{i}"), "body": long}));
                (r.status, r.header.get("retry-after").cloned(), r.body)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(ok + busy.len(), results.len(), "only 200 or 429");
    assert!(ok >= 1 && !busy.is_empty(), "ok {ok}, busy {}", busy.len());
    for (_, retry, body) in busy {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "overloaded");
    }
    // When the load is gone, it serves again.
    assert_eq!(
        s.post("/v1/route", &json!({"body": "refund please"}))
            .status,
        200
    );
}

#[test]
fn sigterm_finishes_requests_in_flight() {
    let d = tempfile::tempdir().unwrap();
    let mut s = start(d.path(), &["--max-batch", "2"]);
    let tickets: Vec<Value> = (0..60)
        .map(|i| json!({"body": format!("Ticket {i}: the app crashes when I upload a photo, please fix it soon")}))
        .collect();
    let base = s.base.clone();
    let inflight = std::thread::spawn(move || {
        let r = ureq::post(&format!("{base}/v1/route/batch"))
            .set("Authorization", &format!("Bearer {ROUTE_TOKEN}"))
            .send_string(&json!({ "tickets": tickets }).to_string());
        match r {
            Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
            Err(ureq::Error::Status(c, r)) => (c, r.into_json::<Value>().unwrap()),
            Err(e) => panic!("{e}"),
        }
    });
    std::thread::sleep(Duration::from_millis(150));
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (status, body) = inflight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decisions"].as_array().unwrap().len(), 60);
    let exit = s.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(s.dir.join("router.db").exists());
}

#[test]
fn thresholds_are_edited_live_per_node_and_every_decision_names_their_version() {
    let d = tempfile::tempdir().unwrap();
    let s = start(d.path(), &[]);
    let model = s.call("GET", "/readyz", "", None, &[]).body["model_version"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/models/{model}/thresholds");
    let node = |view: &Value, id: &str| -> Value {
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["intent"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {view}"))
    };
    // Admin only.
    for (method, p) in [
        ("GET", path.clone()),
        ("PUT", path.clone()),
        ("GET", format!("{path}/history")),
    ] {
        let body = json!({"overrides": {}}).to_string();
        let r = s.call(method, &p, ROUTE_TOKEN, Some(&body), &[("If-Match", "*")]);
        assert_eq!(r.status, 403, "{method} {p}: {}", r.body);
    }
    // As trained: version 0, every node with the threshold that enters it.
    let trained = s.admin("GET", &path, None, &[]);
    assert_eq!(
        (trained.status, trained.header["etag"].as_str()),
        (200, "\"0\"")
    );
    assert_eq!(trained.body["version"], 0);
    let refund = node(&trained.body, "billing.refund");
    assert_eq!(refund["depth"], 1);
    assert_eq!(refund["edited"], false);
    assert_eq!(refund["effective"], refund["trained"]);

    let first = s.post("/v1/route", &refund_ticket("T-1"));
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["intent"]["intent"], "billing.refund");
    assert_eq!(first.body["thresholds_version"], 0);
    let p = first.body["intent"]["chain"][1]["p"].as_f64().unwrap();
    assert!(p < 1.0, "the leaf is not certain: {p}");

    // Edits: the leaf asks for more than it has, the roots for less than their default;
    // different values at different depths.
    let above = (p + 1.0) / 2.0;
    let edits = json!({"overrides": {"depth": [0.3, 0.5], "nodes": {"billing.refund": above}}, "note": "stricter refunds"});
    let r = s.admin("PUT", &path, Some(&edits), &[]);
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (428, Some("if_match_required"))
    );
    let r = s.admin("PUT", &path, Some(&edits), &[("If-Match", "\"3\"")]);
    assert_eq!(
        (r.status, &r.body["error"]["details"]["current_version"]),
        (412, &json!("0"))
    );
    let bad = json!({"overrides": {"nodes": {"billing.refnd": 0.5}}});
    let r = s.admin("PUT", &path, Some(&bad), &[("If-Match", "\"0\"")]);
    assert_eq!(r.status, 422, "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "threshold for `billing.refnd`: the taxonomy has no such intent (known: billing.refund"
        ),
        "{message}"
    );
    let bad = json!({"overrides": {"depth": [1.5]}});
    let r = s.admin("PUT", &path, Some(&bad), &[("If-Match", "\"0\"")]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("threshold of depth 0 is 1.5"));
    let r = s.admin(
        "PUT",
        "/v1/models/nope/thresholds",
        Some(&edits),
        &[("If-Match", "\"0\"")],
    );
    assert_eq!(r.status, 404, "{}", r.body);

    let saved = s.admin("PUT", &path, Some(&edits), &[("If-Match", "\"0\"")]);
    assert_eq!(
        (saved.status, saved.header["etag"].as_str()),
        (200, "\"1\""),
        "{}",
        saved.body
    );
    assert_eq!(saved.body["author"], "alice-admin");
    let refund = node(&saved.body, "billing.refund");
    assert_eq!(
        (
            &refund["edited"],
            refund["effective"].as_f64().unwrap() as f32
        ),
        (&json!(true), above as f32)
    );
    // A root without a tuned value of its own follows the edited depth; a tuned one keeps its.
    let root = node(&saved.body, "account");
    assert_eq!(
        (&root["edited"], &root["effective"]),
        (&json!(true), &json!(0.3))
    );
    let tuned = saved.body["trained"]["nodes"].as_object().unwrap();
    assert!(!tuned.is_empty(), "the shipped model has tuned thresholds");
    for (id, value) in tuned {
        let n = node(&saved.body, id);
        if id != "billing.refund" {
            assert_eq!(
                (&n["effective"], &n["edited"]),
                (value, &json!(false)),
                "{id}"
            );
        }
    }
    // The model is the same; the chain now stops at the parent, and says which edits.
    let second = s.post("/v1/route", &refund_ticket("T-2"));
    assert_eq!(second.body["model_version"], model);
    assert_eq!(second.body["intent"]["intent"], "billing");
    assert_eq!(second.body["thresholds_version"], 1);
    let id = second.body["decision_id"].as_str().unwrap();
    let logged = s.admin("GET", &format!("/v1/decisions/{id}"), None, &[]);
    assert_eq!(logged.body["thresholds_version"], 1, "{}", logged.body);
    let classified = s.post("/v1/classify", &refund_ticket("T-3"));
    assert_eq!(
        (
            &classified.body["intent"],
            &classified.body["thresholds_version"]
        ),
        (&json!("billing"), &json!(1))
    );
    let history = s.admin("GET", &format!("{path}/history"), None, &[]);
    assert_eq!(history.body["versions"][0]["note"], "stricter refunds");
    assert_eq!(history.body["versions"].as_array().unwrap().len(), 1);
    drop(s);

    // A restart keeps them; a --thresholds file is imported once, as the next version.
    std::fs::write(
        d.path().join("thresholds.toml"),
        "[nodes]\n\"billing.refund\" = 0.2\n",
    )
    .unwrap();
    let file = d.path().join("thresholds.toml");
    let s = start(d.path(), &["--thresholds", file.to_str().unwrap()]);
    let now = s.admin("GET", &path, None, &[]);
    assert_eq!(
        (now.body["version"].as_i64(), now.body["author"].as_str()),
        (Some(2), Some("config"))
    );
    assert_eq!(
        s.post("/v1/route", &refund_ticket("T-4")).body["intent"]["intent"],
        "billing.refund"
    );
    // Back to as trained through the API; the file, imported already, does not come back.
    let r = s.admin(
        "PUT",
        &path,
        Some(&json!({"overrides": {}})),
        &[("If-Match", "\"2\"")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    drop(s);
    let s = start(d.path(), &["--thresholds", file.to_str().unwrap()]);
    let now = s.admin("GET", &path, None, &[]);
    assert_eq!(now.body["version"], 3);
    assert_eq!(node(&now.body, "billing.refund")["edited"], false);
    let r = s.post("/v1/route", &refund_ticket("T-5"));
    assert_eq!(
        (&r.body["intent"]["intent"], &r.body["thresholds_version"]),
        (&json!("billing.refund"), &json!(3))
    );
    drop(s);

    // A file naming an intent the model lacks stops the start with the file and the intent.
    std::fs::write(&file, "[nodes]\n\"billing.refnd\" = 0.2\n").unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/helpdesk");
    let mut child = Command::new(common::binary())
        .args(["serve", "--config"])
        .arg(d.path().join("router.toml"))
        .arg("--model")
        .arg(&model)
        .arg("--thresholds")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("serve started with a threshold file naming an unknown intent");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains(
            "thresholds.toml: threshold for `billing.refnd`: the taxonomy has no such intent"
        ),
        "{err}"
    );
}
