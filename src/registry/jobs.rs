//! The registry's background work in a running service: following registry changes made by
//! another process (the CLI) every 2 seconds, and telling the schedule when a retraining is due.

use std::time::Duration;

use chrono::Utc;

use super::{ModelRegistry, RegistryError};

impl ModelRegistry {
    /// Follows registry changes made elsewhere, every 2 seconds, as long as the process runs.
    pub fn spawn_follow(&self) {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                if let Err(e) = registry.follow().await {
                    tracing::error!("following the model registry: {e}");
                }
            }
        });
    }

    /// Whether a retraining is due: `after` new corrections (0: never by count) since the
    /// newest registered model, or `every` elapsed since it with at least one new correction.
    pub async fn retrain_due(
        &self,
        after: i64,
        every: Option<Duration>,
    ) -> Result<bool, RegistryError> {
        let store = &self.inner.store;
        let since = store
            .models()
            .await?
            .first()
            .map(|m| m.created_at)
            .unwrap_or_default();
        let new = store.corrections_since(since).await?;
        let by_count = after > 0 && new >= after;
        let by_time = every
            .is_some_and(|p| new > 0 && (Utc::now() - since).to_std().is_ok_and(|age| age >= p));
        Ok(by_count || by_time)
    }
}
