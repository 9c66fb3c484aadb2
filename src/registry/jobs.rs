//! The registry's background jobs in a running service: following registry changes made by
//! another process (the CLI), every 2 seconds, and retraining on a schedule: after a number of
//! new corrections, or periodically when there are new ones (checked every 30 seconds).

use std::time::Duration;

use chrono::Utc;

use super::{ModelRegistry, RegistryError};

/// When to retrain by itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    /// Retrain after this many new corrections (0: never by count).
    pub retrain_after: i64,
    /// Retrain this often when there are new corrections (`None`: never by time).
    pub retrain_every: Option<Duration>,
}

impl ModelRegistry {
    /// Starts the jobs on the async runtime; they run as long as the process.
    pub fn spawn_jobs(&self, schedule: Schedule) {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            let mut last_check = std::time::Instant::now();
            loop {
                tick.tick().await;
                if let Err(e) = registry.follow().await {
                    tracing::error!("following the model registry: {e}");
                }
                if last_check.elapsed() < Duration::from_secs(30) {
                    continue;
                }
                last_check = std::time::Instant::now();
                match registry.retrain_due(schedule).await {
                    Ok(false) => {}
                    Ok(true) => match registry.retrain(false, None).await {
                        Ok(r) => tracing::info!(
                            model = r.record.id,
                            outcome = r.outcome.name(),
                            "scheduled retraining"
                        ),
                        Err(e) => tracing::error!("scheduled retraining: {e}"),
                    },
                    Err(e) => tracing::error!("reading the registry: {e}"),
                }
            }
        });
    }

    /// Whether the schedule asks for a retraining now: counts the corrections made since the
    /// newest registered model.
    async fn retrain_due(&self, schedule: Schedule) -> Result<bool, RegistryError> {
        let store = &self.inner.store;
        let since = store
            .models()
            .await?
            .first()
            .map(|m| m.created_at)
            .unwrap_or_default();
        let new = store.corrections_since(since).await?;
        let by_count = schedule.retrain_after > 0 && new >= schedule.retrain_after;
        let by_time = schedule
            .retrain_every
            .is_some_and(|p| new > 0 && (Utc::now() - since).to_std().is_ok_and(|age| age >= p));
        Ok(by_count || by_time)
    }
}
