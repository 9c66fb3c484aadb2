//! The service in process, for handler and service tests: the real router (`server::router`)
//! over the real state (SQLite in a temporary directory, live rules, the batching worker) on a
//! tiny random-weight model trained once per test run, called with `tower`'s `oneshot`: no
//! socket, no child process, milliseconds per request.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use clap::Parser;
use http_body_util::BodyExt;
use intent_router::cli::ServeArgs;
use intent_router::config::Settings;
use intent_router::server::{self, AppState};
use intent_router::train::trainer::{self, Silent, TrainOptions};
use serde_json::Value;
use tower::ServiceExt;

use super::{tiny_dataset, tiny_encoder, tiny_taxonomy, Format};
use crate::server::{write_config, Resp};

/// Rules for the tiny model's taxonomy (billing / account / orders): billing tickets go round
/// robin to the billing roster, access problems are urgent.
pub const TINY_RULES: &str = r#"[defaults]
team = "triage"
status = "new"
priority = "normal"

[[rules]]
id = "billing"
when.intent = "billing"
then = { team = "billing", status = "open", assignee = { strategy = "round-robin" } }

[[rules]]
id = "access"
when.intent = "account.access"
then = { team = "l1-support", status = "open", priority = "urgent" }

[[rules]]
id = "orders"
when.intent = "orders"
then = { team = "logistics", status = "open" }
"#;

/// The tiny classifier (encoder, head, taxonomy), trained once per test run.
pub fn tiny_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tiny-model-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        tiny_encoder(&dir.join("base"), Format::Safetensors);
        tiny_dataset(&dir.join("train.jsonl"), 12, 0);
        tiny_dataset(&dir.join("dev.jsonl"), 3, 100);
        tiny_taxonomy(&dir.join("taxonomy.toml"));
        let opts = TrainOptions {
            data: dir.join("train.jsonl"),
            dev: Some(dir.join("dev.jsonl")),
            taxonomy: Some(dir.join("taxonomy.toml")),
            base: dir.join("base").display().to_string(),
            out: dir.join("model"),
            head: intent_router::model::head::HeadTraining {
                kind: intent_router::model::head::HeadKind::Mlp { hidden: 64 },
                epochs: 40,
                ..Default::default()
            },
            thresholds: vec![0.5, 0.5],
            node_thresholds: true,
            encoder: Default::default(),
            hub: Default::default(),
            cache_dir: None,
            columns: Default::default(),
            fine_tune: None,
            ngrams: None,
            scope_rejection: 0.01,
            multi_intent: None,
            also_false_rate: 0.02,
            preloaded: None,
        };
        trainer::train(&opts, &Silent).expect("the tiny model trains");
        dir.join("model")
    })
}

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The service in process; its directory (config, rules, database) lives as long as it does.
pub struct App {
    /// The shared state behind the router.
    pub state: Arc<AppState>,
    router: axum::Router,
    /// Config, rules and database, removed on drop.
    _dir: tempfile::TempDir,
}

impl App {
    /// The service on the tiny model with [`TINY_RULES`] and the test tokens.
    pub async fn start() -> Self {
        Self::with_config("").await
    }

    /// Like [`App::start`], with more config text (e.g. `[limits]`).
    pub async fn with_config(more_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.toml"), TINY_RULES).unwrap();
        Self::in_dir(dir, tiny_model(), more_config).await
    }

    /// The service on `model` in a prepared directory (its `rules.toml` and `router.db`, if
    /// there, are used; the test rules otherwise).
    pub async fn in_dir(dir: tempfile::TempDir, model: &Path, more_config: &str) -> Self {
        write_config(dir.path(), more_config);
        let config = dir.path().join("router.toml").display().to_string();
        let model = model.display().to_string();
        let args = Wrap::parse_from(["serve", "--config", &config, "--model", &model]).serve;
        let settings = Settings::resolve(&args).expect("the test config is valid");
        let state = server::build_state(settings)
            .await
            .expect("the service starts");
        Self {
            router: server::router(Arc::clone(&state)),
            state,
            _dir: dir,
        }
    }

    /// Sends a request through the router; `token` may be empty for none.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if !token.is_empty() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let header = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            body,
            header,
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.call("POST", path, token, Some(&body.to_string()), &[])
            .await
    }

    /// `PUT /v1/rules` with `text` as the admin, sending `If-Match: if_match`.
    pub async fn put_rules(&self, text: &str, if_match: &str) -> Resp {
        let body = serde_json::json!({ "text": text }).to_string();
        let if_match = [("if-match", if_match)];
        self.call(
            "PUT",
            "/v1/rules",
            crate::server::ADMIN_TOKEN,
            Some(&body),
            &if_match,
        )
        .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call("GET", path, token, None, &[]).await
    }
}
