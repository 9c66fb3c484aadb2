//! Crash safety: the server is killed with SIGKILL at named steps (failpoints paused through
//! `INTENT_ROUTER_FAILPOINTS`) in the middle of a rules PUT, a model activation and a
//! retraining, then restarted on the same database: the database is consistent, the active
//! rules and model are the old or the new ones (never a mix), acknowledged feedback survives;
//! and an injected write failure gives a clear 5xx while the previous state keeps serving.
//! Each test runs on SQLite and on PostgreSQL (a fresh database on the test run's server).

use std::path::Path;
use std::sync::Arc;

use intent_router::store::DatabaseUrl;
use serde_json::{json, Value};

use crate::pg_cluster;
use crate::server::{self, Server, ADMIN_TOKEN};

/// Where a test's server keeps its state: `router.db` in its directory, or a PostgreSQL
/// database (with the registry beside, where SQLite has it by default).
struct Db {
    postgres: Option<String>,
}

impl Db {
    /// Runs `test` once per backend.
    fn each(test: impl Fn(&Db, &Path)) {
        for postgres in [None, Some(pg_cluster::fresh_database())] {
            let d = tempfile::tempdir().unwrap();
            test(&Db { postgres }, d.path());
        }
    }

    /// `server::start_full` on this database.
    fn start_full(&self, dir: &Path, extra: &[&str], more: &str, env: &[(&str, &str)]) -> Server {
        let Some(url) = &self.postgres else {
            return server::start_full(dir, extra, more, env);
        };
        let mut args = extra.to_vec();
        args.extend(["--database", url.as_str()]);
        let registry = format!("registry = \"{}\"\n", dir.join("models-registry").display());
        let more = if more.contains("[learning]\n") {
            more.replacen("[learning]\n", &format!("[learning]\n{registry}"), 1)
        } else {
            format!("{more}\n[learning]\n{registry}")
        };
        server::start_full(dir, &args, &more, env)
    }

    /// `server::start` on this database.
    fn start(&self, dir: &Path, extra: &[&str]) -> Server {
        self.start_full(dir, extra, "", &[])
    }

    /// The database's consistency check (SQLite's integrity check; PostgreSQL checks its own
    /// pages, so there it says that the server answers after the crash).
    fn integrity(&self, dir: &Path) -> String {
        let url = match &self.postgres {
            Some(u) => DatabaseUrl::Postgres(u.clone()),
            None => DatabaseUrl::Sqlite(dir.join("router.db")),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = intent_router::store::Store::open(&url).await.unwrap();
            let r = store.integrity_check().await.unwrap();
            store.close().await;
            r
        })
    }
}

/// Sends a request on a thread (it may never be answered: the server is killed meanwhile).
fn send_in_background(
    s: &Server,
    method: &str,
    path: &str,
    body: Value,
    headers: Vec<(String, String)>,
) {
    let url = format!("{}{path}", s.base);
    let method = method.to_string();
    std::thread::spawn(move || {
        let mut req =
            ureq::request(&method, &url).set("Authorization", &format!("Bearer {ADMIN_TOKEN}"));
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        let _ = req.send_string(&body.to_string());
    });
}

fn sales_team(s: &Server) -> Value {
    s.post(
        "/v1/route",
        &json!({"body": "Сколько стоит тариф для команды из 30 человек? Можно демо?"}),
    )
    .body["team"]
        .clone()
}

#[test]
fn a_rules_put_killed_before_or_after_commit_leaves_old_or_new_rules() {
    Db::each(|db, dir| {
        let s = db.start(dir, &[]);
        let text = s.admin("GET", "/v1/rules", None, &[]).body["text"]
            .as_str()
            .unwrap()
            .to_string();
        drop(s);
        let edited = text.replace(
            "then = { team = \"sales\", status = \"open\" }",
            "then = { team = \"sales-emea\", status = \"open\" }",
        );
        // Restarts seed from the file that matches what should be active, so no seed import
        // hides the outcome.
        std::fs::write(dir.join("edited.toml"), &edited).unwrap();
        let seeds = [
            dir.join("rules.toml").display().to_string(),
            dir.join("edited.toml").display().to_string(),
        ];
        for ((point, want_version, want_team), seed) in [
            ("rules.save.before_commit", "\"1\"", "sales"),
            ("rules.save.after_commit", "\"2\"", "sales-emea"),
        ]
        .into_iter()
        .zip(&seeds)
        {
            let s = db.start_full(
                dir,
                &[],
                "",
                &[("INTENT_ROUTER_FAILPOINTS", &format!("{point}=pause"))],
            );
            let current = s.admin("GET", "/v1/rules", None, &[]).header["etag"].clone();
            send_in_background(
                &s,
                "PUT",
                "/v1/rules",
                json!({"text": edited}),
                vec![("If-Match".into(), current)],
            );
            s.wait_log(&format!("failpoint {point} reached"));
            s.crash();
            assert_eq!(db.integrity(dir), "ok");
            let s = db.start(dir, &["--rules", seed]);
            let r = s.admin("GET", "/v1/rules", None, &[]);
            assert_eq!(r.header["etag"], want_version, "after a crash at {point}");
            assert_eq!(
                sales_team(&s),
                want_team,
                "the serving rules match the stored ones"
            );
        }
    });
}

#[test]
fn acknowledged_feedback_survives_a_crash_and_a_failed_write_keeps_the_old_state() {
    Db::each(|db, dir| {
        let s = db.start(dir, &[]);
        let r = s.post(
            "/v1/route",
            &json!({"id": "K-1", "body": "You charged my card twice for the same order"}),
        );
        let fb = json!({"decision_id": r.body["decision_id"], "correct_intent": "billing.charge_dispute", "agent": "maria"});
        let f = s.feedback(&fb);
        assert_eq!(f.status, 201);
        s.crash();
        assert_eq!(db.integrity(dir), "ok");

        // Injected write failures: a clear 5xx, nothing half-written, the old state serving.
        let s = db.start_full(
            dir,
            &[],
            "",
            &[(
                "INTENT_ROUTER_FAILPOINTS",
                "rules.save.before_commit=error,decisions.before_commit=error",
            )],
        );
        let report = s.admin("GET", "/v1/feedback/report", None, &[]).body;
        assert_eq!(
            report["feedback"], 1,
            "acknowledged feedback survived SIGKILL"
        );
        let text = s.admin("GET", "/v1/rules", None, &[]).body["text"]
            .as_str()
            .unwrap()
            .to_string();
        let put = s.admin(
            "PUT",
            "/v1/rules",
            Some(&json!({"text": format!("{text}\n# edit\n")})),
            &[("If-Match", "\"1\"")],
        );
        assert_eq!(
            (put.status, put.body["error"]["code"].as_str()),
            (503, Some("storage_failed")),
            "{}",
            put.body
        );
        assert!(put.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"));
        assert_eq!(
            s.admin("GET", "/v1/rules", None, &[]).header["etag"],
            "\"1\""
        );
        let routed = s.post(
            "/v1/route",
            &json!({"id": "K-2", "body": "Where is my parcel?"}),
        );
        assert_eq!(routed.status, 503, "{}", routed.body);
        let logged = s
            .call(
                "GET",
                "/v1/decisions?limit=10",
                server::ROUTE_TOKEN,
                None,
                &[],
            )
            .body;
        assert_eq!(
            logged["decisions"].as_array().unwrap().len(),
            1,
            "the failed decision left nothing"
        );
        assert_eq!(
            s.post("/v1/classify", &json!({"body": "Where is my parcel?"}))
                .status,
            200,
            "still serving"
        );
    });
}

/// A copy of the shipped model with another temperature: a second, different version.
fn second_model(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("model-b");
    std::fs::create_dir_all(&out).unwrap();
    for f in [
        "head.safetensors",
        "ngrams.json",
        "scope.safetensors",
        "also.safetensors",
        "taxonomy.toml",
        "eval.json",
    ] {
        std::fs::copy(root.join("models/helpdesk").join(f), out.join(f)).unwrap();
    }
    let mut meta: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("models/helpdesk/classifier.json")).unwrap(),
    )
    .unwrap();
    meta["base"]["path"] = json!(root.join("models/base/e5-small-ruen").display().to_string());
    meta["temperature"] = json!(meta["temperature"].as_f64().unwrap() * 1.5);
    std::fs::write(out.join("classifier.json"), meta.to_string()).unwrap();
    out
}

#[test]
fn a_model_activation_killed_before_or_after_commit_leaves_old_or_new_model() {
    Db::each(|db, dir| {
        let b = second_model(dir);
        // Register B, then the shipped model A (active).
        let s = db.start(dir, &["--model", &b.display().to_string()]);
        let b_id = s.admin("GET", "/v1/models", None, &[]).body["serving"]
            .as_str()
            .unwrap()
            .to_string();
        drop(s);
        let s = db.start(dir, &[]);
        let a_id = s.admin("GET", "/v1/models", None, &[]).body["serving"]
            .as_str()
            .unwrap()
            .to_string();
        assert_ne!(a_id, b_id);
        drop(s);
        for (point, want) in [
            ("model.activate.before_commit", &a_id),
            ("model.activate.after_commit", &b_id),
        ] {
            let s = db.start_full(
                dir,
                &[],
                "",
                &[("INTENT_ROUTER_FAILPOINTS", &format!("{point}=pause"))],
            );
            send_in_background(
                &s,
                "POST",
                &format!("/v1/models/{b_id}/activate"),
                json!({}),
                vec![],
            );
            s.wait_log(&format!("failpoint {point} reached"));
            s.crash();
            assert_eq!(db.integrity(dir), "ok");
            let s = db.start(dir, &[]);
            let models = s.admin("GET", "/v1/models", None, &[]).body;
            assert_eq!(&models["serving"], want, "after a crash at {point}");
            let active: Vec<&Value> = models["models"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["status"] == "active")
                .collect();
            assert_eq!(active.len(), 1, "exactly one active model: {models}");
            assert_eq!(&active[0]["id"], want);
            assert_eq!(
                &s.post("/v1/route", &json!({"body": "refund please"})).body["model_version"],
                want
            );
            drop(s);
            // Back to A for the next round.
            let s = db.start(dir, &[]);
            if models["serving"] != json!(a_id) {
                assert_eq!(
                    s.admin("POST", &format!("/v1/models/{a_id}/activate"), None, &[])
                        .status,
                    200
                );
            }
        }
    });
}

#[test]
fn a_retraining_killed_before_registering_leaves_the_registry_clean() {
    Db::each(|db, dir| {
        // Small curated files keep this quick.
        let learning = server::small_learning(dir);
        let s = db.start_full(
            dir,
            &[],
            &learning,
            &[("INTENT_ROUTER_FAILPOINTS", "retrain.after_train=pause")],
        );
        send_in_background(&s, "POST", "/v1/models/retrain", json!({}), vec![]);
        s.wait_log("failpoint retrain.after_train reached");
        let registry = dir.join("models-registry");
        let written: Vec<_> = std::fs::read_dir(&registry).unwrap().collect();
        assert_eq!(
            written.len(),
            1,
            "the candidate was written before the crash"
        );
        // On PostgreSQL another replica serves meanwhile: it leaves the running job alone
        // while its replica lives, and marks it failed once that replica is gone.
        let other = db.postgres.as_ref().map(|_| {
            let other = dir.join("other");
            std::fs::create_dir_all(&other).unwrap();
            db.start_full(&other, &[], &learning, &[])
        });
        s.crash();
        if let Some(other) = &other {
            let start = std::time::Instant::now();
            loop {
                let jobs = other.admin("GET", "/v1/jobs", None, &[]).body;
                if jobs["jobs"][0]["status"] == "failed" {
                    assert_eq!(jobs["jobs"][0]["error"]["code"], "interrupted", "{jobs}");
                    break;
                }
                assert_eq!(jobs["jobs"][0]["status"], "running", "{jobs}");
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(10),
                    "the other replica never marked the job interrupted"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        drop(other);
        assert_eq!(db.integrity(dir), "ok");
        let s = Arc::new(db.start_full(dir, &[], &learning, &[]));
        let models = s.admin("GET", "/v1/models", None, &[]).body;
        assert_eq!(
            models["models"].as_array().unwrap().len(),
            1,
            "no half-registered candidate: {models}"
        );
        assert_eq!(
            std::fs::read_dir(&registry).unwrap().count(),
            0,
            "the unregistered candidate's directory was removed at startup"
        );
        // The job the crash cut off ended as failed: interrupted.
        let jobs = s.admin("GET", "/v1/jobs", None, &[]).body;
        assert_eq!(jobs["jobs"][0]["status"], "failed", "{jobs}");
        assert_eq!(jobs["jobs"][0]["error"]["code"], "interrupted", "{jobs}");
        // Retraining works again after the crash.
        let job = s.retrain(None);
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(
            s.admin("GET", "/v1/models", None, &[]).body["models"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    });
}
