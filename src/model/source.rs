//! Finding model directories: a local path, or a Hugging Face Hub model id fetched through
//! `hf-hub` into its cache (endpoint configurable, e.g. a mirror), and the documented search
//! order for the embedded default model.

use std::path::{Path, PathBuf};

use super::files;

/// Environment variable naming the hub endpoint (same as the Python `huggingface_hub`).
pub const HUB_ENDPOINT_ENV: &str = "HF_ENDPOINT";
/// Name of the default classifier directory under `models/`.
pub const DEFAULT_MODEL: &str = "helpdesk";

/// Errors locating a model.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Neither a directory nor a hub id.
    #[error("`{0}` is neither an existing directory nor a hub model id (owner/name)")]
    NotFound(String),
    /// The hub could not provide a file.
    #[error("hub model `{repo}`: cannot fetch {file}: {message}")]
    Hub {
        repo: String,
        file: String,
        message: String,
    },
    /// No default model was found.
    #[error("no model found; looked in: {}. Pass --model DIR or set INTENT_ROUTER_MODEL", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoDefault(Vec<PathBuf>),
}

/// How to reach the hub.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Endpoint URL (default: `HF_ENDPOINT` or huggingface.co).
    pub endpoint: Option<String>,
    /// Cache directory (default: hf-hub's, `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Revision (default `main`).
    pub revision: Option<String>,
}

/// Resolves `spec` to a local encoder directory: an existing path, or a hub id whose files are
/// downloaded into the hub cache.
pub fn resolve_encoder(spec: &str, hub: &HubOptions) -> Result<PathBuf, SourceError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let looks_like_id =
        spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.contains('\\');
    if !looks_like_id {
        return Err(SourceError::NotFound(spec.to_string()));
    }
    fetch_from_hub(spec, hub)
}

fn fetch_from_hub(repo_id: &str, hub: &HubOptions) -> Result<PathBuf, SourceError> {
    use hf_hub::{api::sync::ApiBuilder, Repo, RepoType};
    let err = |file: &str, message: String| SourceError::Hub {
        repo: repo_id.to_string(),
        file: file.to_string(),
        message,
    };
    let mut builder = ApiBuilder::from_env().with_progress(false);
    if let Some(endpoint) = &hub.endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    if let Some(dir) = &hub.cache_dir {
        builder = builder.with_cache_dir(dir.clone());
    }
    let api = builder
        .build()
        .map_err(|e| err("(client)", e.to_string()))?;
    let revision = hub.revision.clone().unwrap_or_else(|| "main".into());
    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision,
    ));
    let config = repo
        .get(files::HF_CONFIG)
        .map_err(|e| err(files::HF_CONFIG, e.to_string()))?;
    repo.get(files::TOKENIZER)
        .map_err(|e| err(files::TOKENIZER, e.to_string()))?;
    // Optional files: intent-router metadata, then whichever weights exist.
    let _ = repo.get(files::ENCODER_META);
    let gguf = repo.get(files::GGUF_WEIGHTS);
    if gguf.is_err() {
        repo.get(files::SAFETENSORS_WEIGHTS)
            .map_err(|e| err(files::SAFETENSORS_WEIGHTS, e.to_string()))?;
    }
    Ok(config
        .parent()
        .expect("a cached file has a parent directory. This is a bug.")
        .to_path_buf())
}

/// Where the default classifier is looked for, in order: `INTENT_ROUTER_MODEL`; `models/helpdesk`
/// next to the binary and two levels up (a `target/<profile>/` build); `models/helpdesk` in the
/// current directory; the source checkout's `models/helpdesk`.
pub fn default_model_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(p) = std::env::var("INTENT_ROUTER_MODEL") {
        out.push(PathBuf::from(p));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(exe_dir.join("models").join(DEFAULT_MODEL));
        if let Some(up) = exe_dir.parent().and_then(Path::parent) {
            out.push(up.join("models").join(DEFAULT_MODEL));
        }
    }
    out.push(PathBuf::from("models").join(DEFAULT_MODEL));
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL),
    );
    out
}

/// The first default candidate that holds a classifier.
pub fn find_default_model() -> Result<PathBuf, SourceError> {
    let candidates = default_model_candidates();
    candidates
        .iter()
        .find(|p| p.join(files::CLASSIFIER_META).exists())
        .cloned()
        .ok_or(SourceError::NoDefault(candidates))
}
