//! Models in the service: the registry bootstrap at startup, loading a registered version with
//! the service's settings, and activation: the hot swap (through [`crate::serving::LiveModels`])
//! that never drops a request in flight.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use super::config::Settings;
use super::error::ApiError;
use super::AppState;
use crate::metrics::Metrics;
use crate::model::bert::LinearMode;
use crate::model::classifier::Classifier;
use crate::model::encoder::{DeviceChoice, EncoderOptions};
use crate::model::source;
use crate::rules::live::RulesError;
use crate::serving::{self, ServingModel};
use crate::store::{ModelRecord, Store};

/// Encoder options of the service.
pub fn encoder_options(settings: &Settings) -> anyhow::Result<EncoderOptions> {
    Ok(EncoderOptions {
        max_tokens: None,
        linear: LinearMode::for_inference(settings.quantized_linears),
        device: DeviceChoice::parse(&settings.device).map_err(anyhow::Error::msg)?,
    })
}

/// Loads a classifier directory with the service's encoder options, sharing encoders with
/// `others`.
pub async fn load_classifier(
    dir: PathBuf,
    settings: &Settings,
    others: Vec<Arc<ServingModel>>,
) -> anyhow::Result<Classifier> {
    serving::load_classifier(dir, encoder_options(settings)?, others).await
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
        store.activate_model(&version, None).await?;
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
        settings.batcher,
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
                settings.batcher,
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

/// Activates a registered model: loads it (sharing the encoder), warms it, then, if the active
/// rules compile against its taxonomy, records and swaps it in one step. Requests in flight
/// finish on the model they started with.
pub async fn activate(
    state: &Arc<AppState>,
    id: &str,
    note: Option<&str>,
) -> Result<ModelRecord, ApiError> {
    let _one = state.swap_lock.lock().await;
    let record = state.store.model(id).await?;
    let current = state.models.active();
    if current.id == record.id {
        return Ok(record);
    }
    let mut others = vec![Arc::clone(&current)];
    if let Some(s) = state.models.shadow() {
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
    let refs: Vec<&ServingModel> = others.iter().map(|m| m.as_ref()).collect();
    let serving = Arc::new(ServingModel::start(
        classifier,
        record.id.clone(),
        state.settings.batcher,
        Arc::clone(&state.metrics),
        &refs,
    ));
    serving.warm_up().await.map_err(ApiError::internal)?;
    let tree = &serving.engine.classifier().tree;
    let swapped = state
        .rules
        .check_then(tree, async {
            let stored = state.store.activate_model(id, note).await?;
            state.models.activate(Arc::clone(&serving));
            Ok::<_, ApiError>(stored)
        })
        .await
        .map_err(|e| match e {
            RulesError::Incompatible { version, errors } => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "rules_incompatible",
                format!(
                    "the active rules (version {version}) do not compile against model {id}'s taxonomy; change the rules first"
                ),
            )
            .with_details(serde_json::json!({ "errors": errors.0 })),
            other => ApiError::from(other),
        })??;
    tracing::info!(model = id, "model activated");
    Ok(swapped)
}
