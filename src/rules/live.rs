//! The rules serving now, and the one place that changes them: a change is compiled against the
//! active taxonomy, persisted through the store, and swapped in only when both succeed (the old
//! rules keep serving otherwise). A request reads the `Arc` of the active rules once, so it never
//! sees a half-applied set. Model activations check the rules here too, under the same lock, so a
//! rules change and a model swap can never leave rules that do not compile against the model.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::compile::{compile, CompileErrors, Compiled};
use super::{RuleSet, DEFAULT_RULES};
use crate::intent::IntentTree;
use crate::metrics::Metrics;
use crate::store::{RulesVersion, Store, StoreError};

/// The rules serving now.
#[derive(Debug)]
pub struct ActiveRules {
    /// The stored version.
    pub stored: RulesVersion,
    /// Compiled.
    pub ruleset: RuleSet,
    /// Compile warnings.
    pub warnings: Vec<String>,
}

/// What rules compile against: the active model's taxonomy (or a given one).
pub trait Taxonomy {
    /// Compiles rules text against this taxonomy; `name` names the text in messages.
    fn compile_rules(&self, text: &str, name: &str) -> Result<Compiled, CompileErrors>;

    /// The registry id of the model whose taxonomy this is, if it is a model's (saving rules
    /// then checks that it is still the active one on the database).
    fn model(&self) -> Option<String> {
        None
    }
}

impl Taxonomy for IntentTree {
    fn compile_rules(&self, text: &str, name: &str) -> Result<Compiled, CompileErrors> {
        compile(text, name, self)
    }
}

/// Why the rules could not be changed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The text does not compile; the active rules are unchanged.
    #[error("the ruleset has {} error(s); the active rules are unchanged", .0.0.len())]
    Invalid(CompileErrors),
    /// The store refused the change (version conflict, write failure); nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `--rules` file could not be read.
    #[error("--rules {}: {source}", path.display())]
    SeedUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--rules` file (or the built-in rules) does not compile.
    #[error("{name}: invalid rules:\n{errors}")]
    SeedInvalid {
        /// The file's name.
        name: String,
        /// Every error.
        errors: CompileErrors,
    },
    /// The stored active rules do not compile against the model being served.
    #[error("the active rules (version {version}) do not compile against this model's taxonomy; fix them with --rules FILE:\n{errors}")]
    Incompatible {
        /// The active version.
        version: i64,
        /// Every error.
        errors: CompileErrors,
    },
}

/// A change to the rules: the new text, who made it and why, and the version it was based on
/// (`None`: no check).
pub struct RulesChange<'a> {
    /// The rules text.
    pub text: &'a str,
    /// Who (a token's name).
    pub author: &'a str,
    /// Why.
    pub note: &'a str,
    /// The version the author edited (the If-Match of the API).
    pub expected: Option<i64>,
}

/// The handle to the live rules; cloning shares the same state.
#[derive(Clone)]
pub struct LiveRules {
    inner: Arc<Live>,
}

struct Live {
    current: RwLock<Arc<ActiveRules>>,
    /// Serialises changes (and model swaps that check the rules), so the version stored last
    /// is the version serving.
    write: tokio::sync::Mutex<()>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl LiveRules {
    /// Makes the stored rules match the seed (the built-in rules on first start, or `seed` when
    /// it differs from the active text, as a new version) and starts serving the active
    /// version, which must compile against `tree`.
    pub async fn start(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        seed: Option<&std::path::Path>,
        tree: &IntentTree,
    ) -> Result<Self, RulesError> {
        let stored = seed_rules(&store, seed, tree).await?;
        let compiled = compile_stored(tree, &stored)?;
        for w in &compiled.warnings {
            tracing::warn!("rules v{}: {w}", stored.version);
        }
        metrics.set_rules_version(stored.version);
        Ok(Self {
            inner: Arc::new(Live {
                current: RwLock::new(Arc::new(ActiveRules {
                    stored,
                    ruleset: compiled.ruleset,
                    warnings: compiled.warnings,
                })),
                write: tokio::sync::Mutex::new(()),
                store,
                metrics,
            }),
        })
    }

    /// The rules serving now.
    pub fn current(&self) -> Arc<ActiveRules> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .expect("rules lock poisoned. This is a bug."),
        )
    }

    /// Validates, stores and activates a change as the next version; on any error the active
    /// rules stay as they were.
    pub async fn replace(
        &self,
        change: RulesChange<'_>,
        taxonomy: &impl Taxonomy,
    ) -> Result<Arc<ActiveRules>, RulesError> {
        let _one = self.inner.write.lock().await;
        let compiled = taxonomy
            .compile_rules(change.text, "rules")
            .map_err(RulesError::Invalid)?;
        let stored = self
            .inner
            .store
            .save_rules(
                change.text,
                &compiled.ruleset.version,
                change.author,
                change.note,
                change.expected,
                taxonomy.model().as_deref(),
            )
            .await?;
        tracing::info!(
            version = stored.version,
            author = change.author,
            "rules saved and active"
        );
        Ok(self.swap(ActiveRules {
            stored,
            ruleset: compiled.ruleset,
            warnings: compiled.warnings,
        }))
    }

    /// Runs `swap` (a model activation: persist, then swap; given the rules version checked,
    /// which the database confirms is still the newest) only if the active rules compile
    /// against `tree`, with no rules change in between.
    pub async fn check_then<T, F: std::future::Future<Output = T>>(
        &self,
        tree: &IntentTree,
        swap: impl FnOnce(i64) -> F,
    ) -> Result<T, RulesError> {
        let _one = self.inner.write.lock().await;
        let current = self.current();
        compile_stored(tree, &current.stored)?;
        Ok(swap(current.stored.version).await)
    }

    /// Catches up with the stored rules (another replica, or the CLI, may have changed them):
    /// the newest stored version must compile against `tree` (the taxonomy of the model that
    /// will serve), then `then` runs (a model swap, when the active model changed too), then the
    /// newer rules swap in. On any error nothing changes.
    pub async fn follow_with<T>(
        &self,
        tree: &IntentTree,
        then: impl std::future::Future<Output = T>,
    ) -> Result<T, RulesError> {
        let _one = self.inner.write.lock().await;
        let current = self.current();
        let stored = match self.inner.store.current_rules().await? {
            Some(s) if s.version != current.stored.version => s,
            _ => current.stored.clone(),
        };
        let compiled = compile_stored(tree, &stored)?;
        let out = then.await;
        if stored.version != current.stored.version {
            tracing::info!(
                version = stored.version,
                "rules changed elsewhere: now serving them"
            );
            self.swap(ActiveRules {
                stored,
                ruleset: compiled.ruleset,
                warnings: compiled.warnings,
            });
        }
        Ok(out)
    }

    /// Whether the stored rules are newer than the ones serving.
    pub async fn behind(&self) -> Result<bool, RulesError> {
        let stored = self.inner.store.current_rules().await?;
        Ok(stored.is_some_and(|s| s.version != self.current().stored.version))
    }

    fn swap(&self, rules: ActiveRules) -> Arc<ActiveRules> {
        self.inner.metrics.set_rules_version(rules.stored.version);
        let rules = Arc::new(rules);
        *self
            .inner
            .current
            .write()
            .expect("rules lock poisoned. This is a bug.") = Arc::clone(&rules);
        rules
    }
}

/// A stored version compiled against `tree`: `Incompatible` with every error otherwise.
fn compile_stored(tree: &IntentTree, stored: &RulesVersion) -> Result<Compiled, RulesError> {
    tree.compile_rules(&stored.text, &format!("rules v{}", stored.version))
        .map_err(|errors| RulesError::Incompatible {
            version: stored.version,
            errors,
        })
}

/// Makes the stored rules match the seed; returns the active version.
async fn seed_rules(
    store: &Store,
    seed: Option<&std::path::Path>,
    tree: &IntentTree,
) -> Result<RulesVersion, RulesError> {
    let current = store.current_rules().await?;
    let seed = match seed {
        Some(path) => Some((
            std::fs::read_to_string(path).map_err(|source| RulesError::SeedUnreadable {
                path: path.to_path_buf(),
                source,
            })?,
            path.display().to_string(),
        )),
        None if current.is_none() => Some((
            DEFAULT_RULES.to_string(),
            "(built-in default rules)".to_string(),
        )),
        None => None,
    };
    // Imported already (the file has not changed since): the database's newer versions, made
    // through the API on this or another replica, stand.
    let imported = match (&current, &seed) {
        (Some(_), Some((text, _))) => store
            .rules_history()
            .await?
            .iter()
            .find(|v| v.author == "seed")
            .is_some_and(|v| v.text == *text),
        _ => false,
    };
    match (current, seed) {
        (Some(c), None) => Ok(c),
        (Some(c), Some(_)) if imported => Ok(c),
        (Some(c), Some((text, _))) if c.text == text => Ok(c),
        (current, Some((text, name))) => {
            let compiled =
                tree.compile_rules(&text, &name)
                    .map_err(|errors| RulesError::SeedInvalid {
                        name: name.clone(),
                        errors,
                    })?;
            let note = if current.is_some() {
                format!("imported from {name}")
            } else {
                format!("seeded from {name}")
            };
            Ok(store
                .save_rules(&text, &compiled.ruleset.version, "seed", &note, None, None)
                .await?)
        }
        (None, None) => {
            unreachable!("a seed exists when the database has no rules. This is a bug.")
        }
    }
}
