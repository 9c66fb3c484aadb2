//! The registry at startup: the configured model registered (and made active) when it is new,
//! stray directories of interrupted retrainings removed, and the active model (and the shadow)
//! loaded and warmed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::{RegistryConfig, RegistryError};
use crate::learn::ModelMetrics;
use crate::metrics::Metrics;
use crate::model::files;
use crate::serving::{self, ServingModel};
use crate::store::{Exclusive, ModelRecord, ModelStatus, Store, StoreError};

/// Content hash of a classifier directory (metadata, head, taxonomy, and the n-gram view, the
/// out-of-scope and the further-request detectors where it has them), 12 hex digits: the id under which a model is
/// registered.
pub fn model_version(dir: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    for name in [files::CLASSIFIER_META, files::HEAD_WEIGHTS, files::TAXONOMY] {
        h.update(std::fs::read(dir.join(name))?);
    }
    for name in [files::NGRAMS, files::SCOPE_WEIGHTS, files::ALSO_WEIGHTS] {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => h.update(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(crate::import::hex(&h.finalize())[..12].to_string())
}

/// The registry at startup: the configured model directory is registered (and made active)
/// unless the registry already knows it; stray directories of interrupted retrainings are
/// removed; then the active version (and the shadow, if any) is loaded and warmed.
pub async fn bootstrap(
    store: &Store,
    configured: &Path,
    config: &RegistryConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<ServingModel>, Option<Arc<ServingModel>>)> {
    let configured = std::fs::canonicalize(configured).unwrap_or(configured.to_path_buf());
    let version =
        model_version(&configured).map_err(|e| anyhow::anyhow!("{}: {e}", configured.display()))?;
    let records = store.models().await?;
    if !records.iter().any(|m| m.id == version) {
        let registered =
            register_configured(store, &configured, &version, records.is_empty()).await;
        // A replica starting at the same time may have registered it first.
        if let Err(e) = registered {
            if !store.models().await?.iter().any(|m| m.id == version) {
                return Err(e.into());
            }
        }
    }
    // Cleaned only while no process retrains: a retraining elsewhere may be writing its
    // candidate (and the records are read under the lock, so a candidate just registered is
    // known).
    let nobody_retrains = store.try_exclusive(Exclusive::Retrain).await?;
    let records = store.models().await?;
    if nobody_retrains.is_some() {
        clean_registry(&config.learn.registry, &records);
    }
    drop(nobody_retrains);
    let active = records
        .iter()
        .find(|m| m.status == ModelStatus::Active)
        .ok_or(RegistryError::NoActiveModel)?;
    let load = |path: &str, others| {
        serving::load_classifier(PathBuf::from(path), config.encoder.clone(), others)
    };
    let start = |c, id: &str, others: &[&ServingModel]| {
        Arc::new(ServingModel::start(
            c,
            id.to_string(),
            config.batching,
            Arc::clone(metrics),
            others,
        ))
    };
    let active = start(load(&active.path, Vec::new()).await?, &active.id, &[]);
    super::thresholds::follow_thresholds(store, &active).await?;
    active.warm_up().await?;
    let shadow = match records
        .iter()
        .find(|m| m.shadow && m.status == ModelStatus::Candidate)
    {
        Some(rec) => {
            let c = load(&rec.path, vec![Arc::clone(&active)]).await?;
            let shadow = start(c, &rec.id, &[&active]);
            super::thresholds::follow_thresholds(store, &shadow).await?;
            Some(shadow)
        }
        None => None,
    };
    Ok((active, shadow))
}

/// Registers a model directory given on the command line (or found by default) and makes it
/// active, with the metrics its training left in its metadata.
async fn register_configured(
    store: &Store,
    dir: &Path,
    version: &str,
    first: bool,
) -> Result<(), StoreError> {
    let meta: serde_json::Value = std::fs::read_to_string(dir.join(files::CLASSIFIER_META))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let how = if first {
        "seeded from"
    } else {
        "imported from"
    };
    store
        .insert_model(&ModelRecord {
            id: version.to_string(),
            parent: None,
            path: dir.display().to_string(),
            data_hash: meta["training"]["data"]["data_sha256"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            metrics: ModelMetrics::read(meta["training"]["metrics"].clone()),
            status: ModelStatus::Candidate,
            shadow: false,
            note: format!("{how} {}", dir.display()),
            created_at: Utc::now(),
            activated_at: None,
        })
        .await?;
    store.activate_model(version, None, None).await?;
    Ok(())
}

/// Removes what a crashed retraining left in the registry directory: candidates written but
/// never registered, and staging directories.
fn clean_registry(dir: &Path, records: &[ModelRecord]) {
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
