//! Loading an encoder by hub id through hf-hub, against a local server on 127.0.0.1 that serves a
//! tiny model in the hub's URL layout (`/{repo}/resolve/{revision}/{file}`). Never the internet.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use intent_router::batch::BatchLimits;
use intent_router::model::encoder::{Encoder, EncoderOptions};
use intent_router::model::source::{resolve_encoder, HubOptions};

use crate::common::{self, Format};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

async fn serve_file(
    State(root): State<Arc<PathBuf>>,
    Path((org, name, _rev, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if org != "test-org" || name != "tiny-bert" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(bytes) = std::fs::read(root.join(&file)) else {
        return (StatusCode::NOT_FOUND, [("x-error-code", "EntryNotFound")]).into_response();
    };
    let size = bytes.len();
    let etag = format!(
        "\"{}\"",
        intent_router::import::hex(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)
        ))
    );
    let start = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<usize>().ok());
    let mut resp_headers = vec![
        ("etag".to_string(), etag),
        ("x-repo-commit".to_string(), COMMIT.to_string()),
    ];
    match start {
        Some(start) => {
            let range = headers["range"].to_str().unwrap_or_default();
            let end = if range.ends_with("-0") && start == 0 {
                0
            } else {
                size - 1
            };
            resp_headers.push((
                "content-range".into(),
                format!("bytes {start}-{end}/{size}"),
            ));
            let body = bytes[start..=end.max(start).min(size - 1)].to_vec();
            let mut r = (StatusCode::PARTIAL_CONTENT, body).into_response();
            for (k, v) in resp_headers {
                r.headers_mut().insert(
                    axum::http::HeaderName::try_from(k).unwrap(),
                    v.parse().unwrap(),
                );
            }
            r
        }
        None => {
            let mut r = (StatusCode::OK, bytes).into_response();
            for (k, v) in resp_headers {
                r.headers_mut().insert(
                    axum::http::HeaderName::try_from(k).unwrap(),
                    v.parse().unwrap(),
                );
            }
            r
        }
    }
}

/// Starts the fake hub on 127.0.0.1 (port 0) and returns its URL.
fn start_fake_hub(root: PathBuf) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route(
                    "/{org}/{name}/resolve/{rev}/{*file}",
                    axum::routing::get(serve_file),
                )
                .with_state(Arc::new(root));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

#[test]
fn hub_id_downloads_through_hf_hub_and_loads() {
    let served = tempfile::tempdir().unwrap();
    common::tiny_encoder(served.path(), Format::Safetensors);
    let endpoint = start_fake_hub(served.path().to_path_buf());
    let cache = tempfile::tempdir().unwrap();
    let hub = HubOptions {
        endpoint: Some(endpoint),
        cache_dir: Some(cache.path().to_path_buf()),
        revision: None,
    };
    let dir = resolve_encoder("test-org/tiny-bert", &hub).unwrap();
    assert!(dir.starts_with(cache.path()), "{}", dir.display());
    let from_hub = Encoder::load(&dir, &EncoderOptions::default()).unwrap();
    let local = Encoder::load(served.path(), &EncoderOptions::default()).unwrap();
    let texts: Vec<String> = vec!["refund my money".into()];
    let (a, b) = (
        from_hub.embed(&texts, BatchLimits::default()).unwrap(),
        local.embed(&texts, BatchLimits::default()).unwrap(),
    );
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());

    let e = resolve_encoder("test-org/no-such-model", &hub)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("hub model `test-org/no-such-model`: cannot fetch config.json"),
        "{e}"
    );
    let e = resolve_encoder("./definitely/not/here", &hub)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "`./definitely/not/here` is neither an existing directory nor a hub model id (owner/name)"
    );
}
