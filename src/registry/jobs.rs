//! The registry's background work in a running service: following registry changes made by
//! another process (the CLI) every 2 seconds.

use std::time::Duration;

use super::ModelRegistry;

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
}
