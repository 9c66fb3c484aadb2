//! Models in the service: a serving model (engine + the batching worker of its encoder, which
//! returns embeddings so that heads on one base share one encoder pass), the registry bootstrap
//! at startup, loading a registered version, and the hot swap that never drops a request in
//! flight (a request holds the `Arc` of the model it started with).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use chrono::Utc;

use super::config::Settings;
use super::error::ApiError;
use super::metrics::Metrics;
use super::AppState;
use crate::batch::Batcher;
use crate::engine::{Engine, EngineOptions};
use crate::model::bert::LinearMode;
use crate::model::classifier::Classifier;
use crate::model::encoder::{DeviceChoice, EncoderOptions};
use crate::model::source;
use crate::store::{ModelRecord, Store};

/// A model that serves requests (active) or is scored beside it (shadow).
pub struct ServingModel {
    /// Registry id: the version every response names.
    pub id: String,
    /// Tokeniser, head, taxonomy, resolver.
    pub engine: Arc<Engine>,
    /// The batching worker of the engine's encoder (shared by models on one encoder).
    pub batcher: Batcher,
}

impl ServingModel {
    /// Wraps a loaded classifier; reuses the batching worker of `others` that run the same
    /// encoder in memory, else starts one.
    pub fn start(
        classifier: Classifier,
        id: String,
        settings: &Settings,
        metrics: Arc<Metrics>,
        others: &[&ServingModel],
    ) -> Self {
        let shared = others
            .iter()
            .find(|o| Arc::ptr_eq(&o.engine.classifier().encoder, &classifier.encoder))
            .map(|o| o.batcher.clone());
        let engine = Arc::new(Engine::new(
            classifier,
            EngineOptions {
                top_k: 3,
                limits: settings.batcher.limits,
            },
        ));
        let batcher = shared.unwrap_or_else(|| {
            let encoder = Arc::clone(&engine.classifier().encoder);
            Batcher::start(settings.batcher, move |items| {
                let start = Instant::now();
                let emb = encoder
                    .embed_batch(items)
                    .map_err(|e| e.to_string())?
                    .to_vec2::<f32>()
                    .map_err(|e| e.to_string())?;
                metrics.batch(items.len(), start.elapsed().as_secs_f64());
                Ok(emb)
            })
        });
        Self {
            id,
            engine,
            batcher,
        }
    }

    /// Whether two models run the same encoder in memory (one embedding serves both).
    pub fn shares_encoder(&self, other: &ServingModel) -> bool {
        Arc::ptr_eq(
            &self.engine.classifier().encoder,
            &other.engine.classifier().encoder,
        )
    }

    /// Label probabilities for embeddings (one per text).
    pub fn probabilities(&self, embeddings: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ApiError> {
        let dim = embeddings.first().map_or(0, Vec::len);
        let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (embeddings.len(), dim), &Device::Cpu)
            .map_err(ApiError::internal)?;
        self.engine
            .classifier()
            .probabilities(&t)
            .map_err(ApiError::internal)
    }

    /// Scores one text end to end, so the first real request does not pay for warm-up.
    pub async fn warm_up(&self) -> anyhow::Result<()> {
        let tokens = self.engine.classifier().encoder.text().encode("warm up")?;
        let emb = self
            .batcher
            .submit(tokens)?
            .await
            .map_err(|_| anyhow::anyhow!("the inference worker stopped"))??;
        self.probabilities(&[emb])
            .map_err(|e| anyhow::anyhow!(e.message))?;
        Ok(())
    }
}

/// Encoder options of the service.
pub fn encoder_options(settings: &Settings) -> anyhow::Result<EncoderOptions> {
    Ok(EncoderOptions {
        max_tokens: None,
        linear: LinearMode::for_inference(settings.quantized_linears),
        device: DeviceChoice::parse(&settings.device).map_err(anyhow::Error::msg)?,
    })
}

/// Loads a classifier directory off the async runtime, sharing encoders with `others`.
pub async fn load_classifier(
    dir: PathBuf,
    settings: &Settings,
    others: Vec<Arc<ServingModel>>,
) -> anyhow::Result<Classifier> {
    use anyhow::Context;
    let opts = encoder_options(settings)?;
    tokio::task::spawn_blocking(move || {
        let loaded: Vec<&Classifier> = others.iter().map(|m| m.engine.classifier()).collect();
        Classifier::load_sharing(&dir, &opts, &loaded)
            .with_context(|| format!("loading model {}", dir.display()))
    })
    .await?
}

/// The registry at startup: the configured model is registered (and made active) unless the
/// registry already knows it; then the active version (and the shadow, if any) is loaded.
pub async fn bootstrap(
    store: &Store,
    settings: &Settings,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<ServingModel>, Option<Arc<ServingModel>>)> {
    let configured = match &settings.model {
        Some(d) => d.clone(),
        None => source::find_default_model()?,
    };
    let configured = std::fs::canonicalize(&configured).unwrap_or(configured);
    let version = super::model_version(&configured)
        .map_err(|e| anyhow::anyhow!("{}: {e}", configured.display()))?;
    let records = store.models().await?;
    if !records.iter().any(|m| m.id == version) {
        let first = records.is_empty();
        let classifier_meta: serde_json::Value =
            std::fs::read_to_string(configured.join(crate::model::files::CLASSIFIER_META))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        store
            .insert_model(&ModelRecord {
                id: version.clone(),
                parent: None,
                path: configured.display().to_string(),
                data_hash: classifier_meta["training"]["data"]["data_sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                metrics: classifier_meta["training"]["metrics"].clone(),
                status: "candidate".into(),
                shadow: false,
                note: format!(
                    "{} {}",
                    if first {
                        "seeded from"
                    } else {
                        "imported from"
                    },
                    configured.display()
                ),
                created_at: Utc::now(),
                activated_at: None,
            })
            .await?;
        store.activate_model(&version, None, || {}).await?;
    }
    let records = store.models().await?;
    clean_registry(&settings.learning.learn.registry, &records);
    let active = records
        .iter()
        .find(|m| m.status == "active")
        .ok_or_else(|| anyhow::anyhow!("the model registry has no active model"))?;
    let classifier = load_classifier(PathBuf::from(&active.path), settings, Vec::new()).await?;
    let active = Arc::new(ServingModel::start(
        classifier,
        active.id.clone(),
        settings,
        Arc::clone(metrics),
        &[],
    ));
    active.warm_up().await?;
    let shadow = match records.iter().find(|m| m.shadow && m.status == "candidate") {
        Some(rec) => {
            let c = load_classifier(
                PathBuf::from(&rec.path),
                settings,
                vec![Arc::clone(&active)],
            )
            .await?;
            Some(Arc::new(ServingModel::start(
                c,
                rec.id.clone(),
                settings,
                Arc::clone(metrics),
                &[&active],
            )))
        }
        None => None,
    };
    Ok((active, shadow))
}

/// Removes what a crashed retraining left in the registry directory: candidates written but
/// never registered, and staging directories.
fn clean_registry(dir: &std::path::Path, records: &[ModelRecord]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stray = name.starts_with(".staging-")
            || (name.starts_with("m-") && !records.iter().any(|r| r.id == name));
        if stray {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::warn!(dir = %e.path().display(), "removed an unregistered model directory left by an interrupted retraining")
                }
                Err(err) => {
                    tracing::error!(dir = %e.path().display(), "could not remove a stray model directory: {err}")
                }
            }
        }
    }
}

/// Activates a registered model: loads it (sharing the encoder), checks that the active rules
/// compile against its taxonomy, warms it, then records and swaps it in one step. Requests in
/// flight finish on the model they started with.
pub async fn activate(
    state: &Arc<AppState>,
    id: &str,
    note: Option<&str>,
) -> Result<ModelRecord, ApiError> {
    let _one = state.swap_lock.lock().await;
    let record = state.store.model(id).await?;
    let current = state.model();
    if current.id == record.id {
        return Ok(record);
    }
    let mut others = vec![Arc::clone(&current)];
    if let Some(s) = state.shadow() {
        others.push(s);
    }
    let classifier = load_classifier(PathBuf::from(&record.path), &state.settings, others.clone())
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "model_unloadable",
                format!("{e:#}"),
            )
        })?;
    let rules = state.active_rules();
    if let Err(e) = crate::rules::compile::compile(
        &rules.stored.text,
        &format!("rules v{}", rules.stored.version),
        &classifier.tree,
    ) {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "rules_incompatible",
            format!(
                "the active rules (version {}) do not compile against model {id}'s taxonomy; change the rules first",
                rules.stored.version
            ),
        )
        .with_details(serde_json::json!({ "errors": e.0 })));
    }
    let refs: Vec<&ServingModel> = others.iter().map(|m| m.as_ref()).collect();
    let serving = Arc::new(ServingModel::start(
        classifier,
        record.id.clone(),
        &state.settings,
        Arc::clone(&state.metrics),
        &refs,
    ));
    serving.warm_up().await.map_err(ApiError::internal)?;
    let swapped = state
        .store
        .activate_model(id, note, || {
            state.set_model(Arc::clone(&serving));
            // A model that becomes active stops being the shadow.
            if state.shadow().is_some_and(|s| s.id == serving.id) {
                state.set_shadow(None);
            }
        })
        .await?;
    tracing::info!(model = id, "model activated");
    Ok(swapped)
}
