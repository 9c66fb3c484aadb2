//! The registry's background work in a running service: following the changes other replicas
//! (or the CLI) make to the models, rules and thresholds. A change notification from the
//! database (on PostgreSQL) starts a catch-up at once; a periodic check catches up when a
//! notification was missed (a dropped connection) or cannot come (SQLite, changed by the CLI).

use std::time::Duration;

use super::{ModelRegistry, RegistryError};
use crate::store::{spawn_on_changes, Changes, Topic};

impl ModelRegistry {
    /// Follows changes made elsewhere, as long as the process runs: on each rules, models or
    /// thresholds notification in `changes` (or when some may have been missed) and every `every`.
    pub fn spawn_follow(&self, changes: Option<Changes>, every: Duration) {
        let registry = self.clone();
        const TOPICS: &[Topic] = &[Topic::Rules, Topic::Models, Topic::Thresholds];
        spawn_on_changes(changes, TOPICS, every, move || {
            let registry = registry.clone();
            async move {
                match registry.follow().await {
                    Ok(()) => {}
                    Err(e @ RegistryError::FollowPaused { .. }) => tracing::debug!("{e}"),
                    Err(e) => tracing::error!("following changes made elsewhere: {e}"),
                }
            }
        });
    }
}
