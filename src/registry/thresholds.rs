//! Chain thresholds edited on a running server: each model's edits over the thresholds it was
//! trained with (its identity unchanged), versioned per model in the store, applied to the
//! model where it serves (this replica at once, the others when they hear of it) and named by
//! every decision (`thresholds_version`), so a decision is reproducible from its model, rules
//! and thresholds versions.

use std::path::Path;

use serde::Serialize;
use utoipa::ToSchema;

use super::{ModelRegistry, RegistryError};
use crate::intent::{IntentTree, Thresholds};
use crate::model::classifier::ClassifierMeta;
use crate::model::files;
use crate::serving::ServingModel;
use crate::store::{Store, StoreError, ThresholdsVersion};

/// The author of edits imported from a `--thresholds` file.
const FILE_AUTHOR: &str = "config";

/// A model's thresholds: as trained, the edits stored for it, and what resolves, node by node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThresholdsView {
    /// The stored edits (version 0: none).
    #[serde(flatten)]
    pub edits: ThresholdsVersion,
    /// The thresholds the model was trained with (per depth, and nodes' own as tuned).
    pub trained: Thresholds,
    /// Every node of the taxonomy, in taxonomy order, with the threshold that enters it.
    pub nodes: Vec<NodeThreshold>,
}

/// One node's threshold.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NodeThreshold {
    /// Intent id.
    pub intent: String,
    /// Depth (roots are 0).
    pub depth: usize,
    /// As trained: its own if tuned, else its depth's.
    pub trained: f32,
    /// What resolves now.
    pub effective: f32,
    /// Whether `effective` comes from the edits.
    pub edited: bool,
}

impl ThresholdsView {
    fn new(edits: ThresholdsVersion, trained: Thresholds, tree: &IntentTree) -> Self {
        let effective = trained.overridden_by(&edits.overrides);
        let nodes = tree
            .nodes()
            .iter()
            .map(|n| {
                let (was, now) = (trained.of(&n.id, n.depth), effective.of(&n.id, n.depth));
                NodeThreshold {
                    intent: n.id.clone(),
                    depth: n.depth,
                    trained: was,
                    effective: now,
                    edited: edits.overrides.nodes.contains_key(&n.id)
                        || (!edits.overrides.depth.is_empty()
                            && !trained.nodes.contains_key(&n.id)),
                }
            })
            .collect();
        Self {
            edits,
            trained,
            nodes,
        }
    }
}

/// A change to a model's thresholds: the whole set of edits (replacing the last), who made it
/// and why, and the version it was based on (`None`: no check).
pub struct ThresholdsChange<'a> {
    /// The edits over the model's own thresholds.
    pub overrides: Thresholds,
    /// Who (a token's name).
    pub author: &'a str,
    /// Why.
    pub note: &'a str,
    /// The version the author edited (the If-Match of the API).
    pub expected: Option<i64>,
}

impl ModelRegistry {
    /// A registered model's thresholds.
    pub async fn thresholds(&self, id: &str) -> Result<ThresholdsView, RegistryError> {
        let (trained, tree) = self.trained_thresholds(id).await?;
        let edits = self.inner.store.current_thresholds(id).await?;
        Ok(ThresholdsView::new(edits, trained, &tree))
    }

    /// Every stored version of a registered model's threshold edits, newest first.
    pub async fn thresholds_history(
        &self,
        id: &str,
    ) -> Result<Vec<ThresholdsVersion>, RegistryError> {
        self.inner.store.model(id).await?;
        Ok(self.inner.store.thresholds_history(id).await?)
    }

    /// Checks a change against the model's taxonomy, stores it as the model's next version
    /// and, where the model serves here, resolves with it from the next request on (other
    /// replicas follow). On any error nothing changes.
    pub async fn set_thresholds(
        &self,
        id: &str,
        change: ThresholdsChange<'_>,
    ) -> Result<ThresholdsView, RegistryError> {
        let (trained, tree) = self.trained_thresholds(id).await?;
        change
            .overrides
            .check(&tree)
            .map_err(|source| RegistryError::Thresholds {
                id: id.to_string(),
                source,
            })?;
        let saved = self
            .inner
            .store
            .save_thresholds(
                id,
                &change.overrides,
                change.author,
                change.note,
                change.expected,
            )
            .await?;
        tracing::info!(
            model = id,
            version = saved.version,
            author = change.author,
            "thresholds saved"
        );
        for serving in self.serving_models() {
            if serving.id == id {
                serving.set_thresholds(saved.version, &saved.overrides);
            }
        }
        Ok(ThresholdsView::new(saved, trained, &tree))
    }

    /// Imports the edits of a thresholds file (TOML: `depth = [...]` and `[nodes]`) for the
    /// active model as its next version, unless they are its current edits or were the last
    /// ones imported from a file (the edits made through the API since then stand). Read at
    /// start only: a model activated later starts from its own thresholds.
    pub async fn import_thresholds(&self, path: &Path) -> Result<(), RegistryError> {
        let bad = |message: String| RegistryError::ThresholdsFile {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let overrides: Thresholds = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let active = super::active_record(&self.inner.store).await?;
        let history = self.inner.store.thresholds_history(&active.id).await?;
        // Imported already (the file has not changed since its last import): the edits made
        // through the API since stand.
        let imported = history
            .iter()
            .find(|v| v.author == FILE_AUTHOR)
            .is_some_and(|v| v.overrides == overrides);
        let current = history.first().map(|v| &v.overrides);
        if imported || current.unwrap_or(&Thresholds::default()) == &overrides {
            return Ok(());
        }
        let note = format!("imported from {}", path.display());
        let change = ThresholdsChange {
            overrides,
            author: FILE_AUTHOR,
            note: &note,
            expected: None,
        };
        match self.set_thresholds(&active.id, change).await {
            Err(RegistryError::Thresholds { source, .. }) => Err(bad(source.to_string())),
            other => other.map(|_| ()),
        }
    }

    /// Brings the serving models' thresholds up to the stored edits (made here, on another
    /// replica, or by an earlier run).
    pub(super) async fn follow_thresholds(&self) -> Result<(), StoreError> {
        for serving in self.serving_models() {
            follow_thresholds(&self.inner.store, &serving).await?;
        }
        Ok(())
    }

    /// The models serving here (active first); none offline.
    fn serving_models(&self) -> Vec<std::sync::Arc<ServingModel>> {
        match &self.inner.live {
            Some((models, _)) => std::iter::once(models.active())
                .chain(models.shadow())
                .collect(),
            None => Vec::new(),
        }
    }

    /// A registered model's thresholds as trained, and its taxonomy (read from its directory,
    /// or from memory where it serves).
    async fn trained_thresholds(
        &self,
        id: &str,
    ) -> Result<(Thresholds, IntentTree), RegistryError> {
        let record = self.inner.store.model(id).await?;
        if let Some(serving) = self.serving_models().into_iter().find(|m| m.id == id) {
            let c = serving.engine.classifier();
            return Ok((c.thresholds.clone(), c.tree.clone()));
        }
        let dir = Path::new(&record.path);
        let meta: ClassifierMeta = files::read_json(&dir.join(files::CLASSIFIER_META))
            .map_err(|e| RegistryError::Unloadable(e.into()))?;
        let tree = IntentTree::load(&dir.join(files::TAXONOMY))?;
        Ok((meta.thresholds(), tree))
    }
}

/// Makes a serving model resolve with its stored threshold edits, if they are newer than the
/// ones it has.
pub(super) async fn follow_thresholds(
    store: &Store,
    model: &ServingModel,
) -> Result<(), StoreError> {
    let stored = store.current_thresholds(&model.id).await?;
    if model.set_thresholds(stored.version, &stored.overrides) {
        tracing::info!(
            model = model.id,
            version = stored.version,
            "thresholds now serving"
        );
    }
    Ok(())
}
