//! Data-subject erasure: everything stored about a ticket goes, in the database (one
//! transaction, recorded so that every replica hears of it) and in this replica's embedding
//! cache. Every replica drops from its own cache the entries made from tickets erased
//! elsewhere, at once when the database announces an erasure and at each periodic check, and
//! the entries made from tickets once their texts are past retention.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use crate::fsutil::FsError;
use crate::store::{spawn_on_changes, Changes, Store, StoreError, Topic};
use crate::train::cache;

/// Why an erasure did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// The database part failed; nothing was erased.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database part is done; the embedding cache could not be cleaned (erase again to
    /// retry).
    #[error("the ticket's rows are erased, but its embedding-cache entries are not: {0}")]
    Cache(FsError),
}

/// Erasure, and cleaning the embedding cache after erasures made elsewhere.
pub struct ErasureService {
    store: Arc<Store>,
    cache_dir: Option<PathBuf>,
    retention: Duration,
}

impl ErasureService {
    /// Erasures in `store`; `cache_dir` is this replica's embedding cache, whose entries made
    /// from tickets go after `retention` (the ticket texts' retention).
    pub fn new(store: Arc<Store>, cache_dir: Option<PathBuf>, retention: Duration) -> Self {
        Self {
            store,
            cache_dir,
            retention,
        }
    }

    /// Erases everything stored about a ticket; the rows (and `embedding_cache` entries)
    /// removed per kind.
    pub async fn erase(
        &self,
        ticket_id: &str,
    ) -> Result<BTreeMap<&'static str, u64>, ErasureError> {
        let mut removed = self.store.erase_ticket(ticket_id).await?;
        let forgotten = self.forget(HashSet::from([ticket_id.to_string()])).await?;
        removed.insert("embedding_cache", forgotten as u64);
        Ok(removed)
    }

    /// Applies every recorded erasure (they are kept for the retention period, as long as a
    /// cache entry made from their tickets may exist) to this replica's cache, so an entry a
    /// long retraining wrote after the erasure goes too, and drops the entries past retention;
    /// returns how many entries went.
    pub async fn sweep(&self) -> Result<usize, ErasureError> {
        let Some(dir) = self.cache_dir.clone() else {
            return Ok(0);
        };
        let erased = self.store.erased_since(DateTime::<Utc>::UNIX_EPOCH).await?;
        let tickets: HashSet<String> = erased.into_iter().map(|e| e.0).collect();
        let cutoff = SystemTime::now().checked_sub(self.retention);
        blocking(move || Ok(cache::upgrade(&dir)? + cache::forget(&dir, &tickets, cutoff)?)).await
    }

    /// Sweeps as long as the process runs: on each erasure announced in `changes` (or when
    /// some may have been missed) and every `every`.
    pub fn spawn_follow(self: &Arc<Self>, changes: Option<Changes>, every: Duration) {
        let erasure = Arc::clone(self);
        spawn_on_changes(changes, &[Topic::Erasures], every, move || {
            let erasure = Arc::clone(&erasure);
            async move {
                match erasure.sweep().await {
                    Ok(n) if n > 0 => tracing::info!(
                        n,
                        "embedding-cache entries of erased or expired tickets removed"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!("cleaning the embedding cache: {e}"),
                }
            }
        });
    }

    /// Removes the cache entries made from any of `tickets`.
    async fn forget(&self, tickets: HashSet<String>) -> Result<usize, ErasureError> {
        let Some(dir) = self.cache_dir.clone() else {
            return Ok(0);
        };
        blocking(move || cache::forget(&dir, &tickets, None)).await
    }
}

/// Runs file work off the async threads.
async fn blocking(
    work: impl FnOnce() -> Result<usize, FsError> + Send + 'static,
) -> Result<usize, ErasureError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("cache cleaning does not panic. This is a bug.")
        .map_err(ErasureError::Cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatabaseUrl;

    #[tokio::test]
    async fn a_sweep_applies_erasures_made_elsewhere_once_and_expires_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("router.db"));
        let store = Arc::new(Store::open(&url).await.unwrap());
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let entry = |key: &str, tickets: &str| {
            std::fs::write(cache.join(format!("{key}.safetensors")), b"x").unwrap();
            std::fs::write(cache.join(format!("{key}.tickets.json")), tickets).unwrap();
        };
        entry("a", r#"["t-1"]"#);
        entry("b", r#"["t-2"]"#);
        std::fs::write(cache.join("base.safetensors"), b"x").unwrap();
        // A cache of this format (an earlier release's entries would go at the first sweep).
        std::fs::write(cache.join("FORMAT"), b"2\n").unwrap();
        let year = Duration::from_secs(365 * 86_400);
        let here = ErasureService::new(Arc::clone(&store), Some(cache.clone()), year);
        assert_eq!(here.sweep().await.unwrap(), 0, "nothing erased yet");

        // Another replica erases t-1 (a decision of it must exist for the erasure to count).
        let elsewhere = ErasureService::new(Arc::clone(&store), None, year);
        log_decision(&store, "t-1").await;
        let removed = elsewhere.erase("t-1").await.unwrap();
        assert_eq!((removed["decisions"], removed["embedding_cache"]), (1, 0));
        assert_eq!(here.sweep().await.unwrap(), 1);
        assert!(!cache.join("a.safetensors").exists());
        assert_eq!(here.sweep().await.unwrap(), 0, "nothing left to remove");

        // With no retention left, entries made from tickets go; the base set's stays.
        let none = ErasureService::new(Arc::clone(&store), Some(cache.clone()), Duration::ZERO);
        assert_eq!(none.sweep().await.unwrap(), 1);
        assert!(cache.join("base.safetensors").exists());
        assert!(!cache.join("b.safetensors").exists());
    }

    /// Logs one decision of `ticket` through the store's port.
    async fn log_decision(store: &Store, ticket: &str) {
        let crate::store::DecisionLog::Open(mut tx) = store
            .begin_decisions(None, &Default::default(), None)
            .await
            .unwrap()
        else {
            unreachable!("no idempotency key")
        };
        let d = crate::store::NewDecision {
            decision_id: format!("d-{ticket}"),
            ticket_id: ticket.into(),
            received_at: Utc::now(),
            intent: "billing".into(),
            confidence: 0.9,
            language: "en".into(),
            team: None,
            strategy: None,
            assignee: None,
            assignment_note: None,
            status: "open".into(),
            priority: "normal".into(),
            model_version: "m".into(),
            rules_version: 1,
            channel: None,
            language_given: None,
            kept: None,
            vector: None,
            incident: None,
        };
        tx.insert_decision(&d, "{}").await.unwrap();
        assert_eq!(tx.commit(false).await.unwrap(), None);
    }
}
