//! The registry's background work in a running service: following the changes other replicas
//! (or the CLI) make to the models and rules. A change notification from the database (on
//! PostgreSQL) starts a catch-up at once; a periodic check catches up when a notification was
//! missed (a dropped connection) or cannot come (SQLite, changed by the CLI).

use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use super::ModelRegistry;
use crate::store::Topic;

impl ModelRegistry {
    /// Follows changes made elsewhere, as long as the process runs: on each notification in
    /// `changes` (`None`: some may have been missed) and every `every`.
    pub fn spawn_follow(&self, mut changes: Option<Receiver<Option<Topic>>>, every: Duration) {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let heard = async {
                    match changes.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    topic = heard => match topic {
                        Some(Some(Topic::Jobs | Topic::Erasures)) => continue,
                        Some(_) => {}
                        // The listener stopped (the pool closed): the periodic check remains.
                        None => changes = None,
                    },
                    _ = tick.tick() => {}
                }
                match registry.follow().await {
                    Ok(()) => {}
                    Err(e @ super::RegistryError::FollowPaused { .. }) => tracing::debug!("{e}"),
                    Err(e) => tracing::error!("following changes made elsewhere: {e}"),
                }
            }
        });
    }
}
