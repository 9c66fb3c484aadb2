//! The embedding cache: sentence embeddings of a data set on disk, keyed by the encoder and the
//! texts, so that retraining embeds only what is new. An entry that holds embeddings of agents'
//! corrections lists their tickets beside it (`<key>.tickets.json`), so that erasing a ticket
//! removes the entries made from it, and such entries go once their texts' retention is over.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use super::dataset::Example;
use super::trainer::{checkpoint, Progress, TrainError};
use crate::batch::BatchLimits;
use crate::fsutil::{self, FsError};
use crate::model::encoder::Encoder;

/// The suffix of an entry's list of tickets.
const TICKETS: &str = ".tickets.json";

/// The file that says the directory's entries list their tickets (entries written by releases
/// before this format list none, even when made from tickets).
const FORMAT: &str = "FORMAT";

/// Caches sentence embeddings of a data set on disk, keyed by encoder hash, truncation and texts.
pub struct EmbeddingCache {
    /// Cache directory (none: no caching).
    pub dir: Option<PathBuf>,
    /// Encoder identity.
    pub key: String,
}

impl EmbeddingCache {
    /// A cache for `encoder` (whose files hash to `encoder_hash`): the key covers everything
    /// that changes its embeddings (files, truncation, how the linear layers compute).
    pub fn new(dir: Option<PathBuf>, encoder_hash: &str, encoder: &Encoder) -> Self {
        Self {
            dir,
            key: format!(
                "{encoder_hash}:{}:{:?}",
                encoder.text().max_tokens(),
                encoder.linear_mode()
            ),
        }
    }

    /// Embeddings `[n, dim]` for the examples' texts, from the cache when present.
    pub fn embed(
        &self,
        encoder: &Encoder,
        examples: &[Example],
        progress: &dyn Progress,
    ) -> Result<Tensor, TrainError> {
        let mut h = Sha256::new();
        h.update(self.key.as_bytes());
        for e in examples {
            h.update((e.text.len() as u64).to_le_bytes());
            h.update(e.text.as_bytes());
        }
        let name = crate::import::hex(&h.finalize());
        let file = self
            .dir
            .as_ref()
            .map(|d| d.join(format!("{name}.safetensors")));
        if let Some(f) = file.as_ref().filter(|f| f.exists()) {
            if let Ok(mut t) = candle_core::safetensors::load(f, &Device::Cpu) {
                if let Some(x) = t.remove("embeddings") {
                    return Ok(x);
                }
            }
        }
        let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
        progress.stage("embedding", texts.len());
        let mut parts = Vec::new();
        for (i, chunk) in texts.chunks(256).enumerate() {
            checkpoint(progress)?;
            parts.push(encoder.embed(chunk, BatchLimits::default())?);
            progress.step((i * 256 + chunk.len()).min(texts.len()));
        }
        let xs = Tensor::cat(&parts, 0)?;
        if let (Some(f), Some(dir)) = (file, &self.dir) {
            mark_format(dir)?;
            // The tickets first: an entry is never on disk without the list that erasure reads.
            let tickets: BTreeSet<&str> = examples.iter().filter_map(Example::ticket_id).collect();
            if !tickets.is_empty() {
                let list = serde_json::to_vec(&tickets).expect("strings serialise. This is a bug.");
                fsutil::write_atomic(&dir.join(format!("{name}{TICKETS}")), &list)?;
            }
            let tmp = tempfile::tempdir().map_err(|e| FsError::new(&f, e))?;
            let p = tmp.path().join("e.safetensors");
            candle_core::safetensors::save(
                &std::collections::HashMap::from([("embeddings".to_string(), xs.clone())]),
                &p,
            )?;
            let bytes = std::fs::read(&p).map_err(|e| FsError::new(&p, e))?;
            fsutil::write_atomic(&f, &bytes)?;
        }
        Ok(xs)
    }
}

/// Marks `dir` as holding entries of this format.
fn mark_format(dir: &Path) -> Result<(), FsError> {
    let marker = dir.join(FORMAT);
    if marker.exists() {
        return Ok(());
    }
    fsutil::write_atomic(&marker, b"2\n")
}

/// Removes the entries an earlier release wrote (they list no tickets, so an erasure could
/// not find them), once: then marks the directory; returns how many went.
pub fn upgrade(dir: &Path) -> Result<usize, FsError> {
    if !dir.is_dir() || dir.join(FORMAT).exists() {
        return Ok(0);
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| FsError::new(dir, e))? {
        let path = entry.map_err(|e| FsError::new(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(key) = name.as_deref().and_then(|n| n.strip_suffix(".safetensors")) else {
            continue;
        };
        if !dir.join(format!("{key}{TICKETS}")).exists() {
            std::fs::remove_file(&path).map_err(|e| FsError::new(&path, e))?;
            removed += 1;
        }
    }
    mark_format(dir)?;
    Ok(removed)
}

/// Removes, in one pass over `dir`, the entries made from any of `tickets` (or whose list
/// cannot be read) and, with `expired_before`, the entries made from tickets and written
/// before it (their texts are past retention); returns how many.
pub fn forget(
    dir: &Path,
    tickets: &HashSet<String>,
    expired_before: Option<SystemTime>,
) -> Result<usize, FsError> {
    let doomed = |list: Option<&[String]>, written: SystemTime| {
        list.is_none_or(|l| l.iter().any(|t| tickets.contains(t)))
            || expired_before.is_some_and(|cutoff| written < cutoff)
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(FsError::new(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| FsError::new(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(key) = name.strip_suffix(TICKETS) else {
            continue;
        };
        let path = entry.path();
        let written = entry
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| FsError::new(&path, e))?;
        let list: Option<Vec<String>> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if !doomed(list.as_deref(), written) {
            continue;
        }
        let embeddings = dir.join(format!("{key}.safetensors"));
        for p in [&embeddings, &path] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(FsError::new(p, e)),
            }
        }
        removed += 1;
    }
    Ok(removed)
}

/// Default cache directory: `$XDG_CACHE_HOME/intent-router` or `~/.cache/intent-router`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("intent-router").join("embeddings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, key: &str, tickets: Option<&str>) {
        std::fs::write(dir.join(format!("{key}.safetensors")), b"x").unwrap();
        if let Some(t) = tickets {
            std::fs::write(dir.join(format!("{key}{TICKETS}")), t).unwrap();
        }
    }

    fn keys(dir: &Path) -> Vec<String> {
        let mut k: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        k.sort();
        k
    }

    #[test]
    fn erasing_a_ticket_removes_only_the_entries_made_from_it() {
        let dir = tempfile::tempdir().unwrap();
        entry(dir.path(), "base", None);
        entry(dir.path(), "a", Some(r#"["5512","77"]"#));
        entry(dir.path(), "b", Some(r#"["77"]"#));
        entry(dir.path(), "broken", Some("not json"));
        let gone = forget(dir.path(), &HashSet::from(["5512".to_string()]), None).unwrap();
        assert_eq!(gone, 2, "the entry made from 5512 and the unreadable one");
        assert_eq!(
            keys(dir.path()),
            ["b.safetensors", "b.tickets.json", "base.safetensors"]
        );
        assert_eq!(
            forget(&dir.path().join("absent"), &HashSet::new(), None).unwrap(),
            0
        );
    }

    #[test]
    fn entries_of_an_earlier_release_go_once_and_this_formats_stay() {
        let dir = tempfile::tempdir().unwrap();
        entry(dir.path(), "old", None);
        entry(dir.path(), "listed", Some(r#"["1"]"#));
        assert_eq!(upgrade(dir.path()).unwrap(), 1);
        assert_eq!(
            keys(dir.path()),
            ["FORMAT", "listed.safetensors", "listed.tickets.json"]
        );
        entry(dir.path(), "base", None);
        assert_eq!(upgrade(dir.path()).unwrap(), 0, "once");
        assert!(dir.path().join("base.safetensors").exists());
        assert_eq!(upgrade(&dir.path().join("absent")).unwrap(), 0);
    }

    #[test]
    fn entries_made_from_tickets_expire_and_the_rest_stay() {
        let dir = tempfile::tempdir().unwrap();
        entry(dir.path(), "base", None);
        entry(dir.path(), "a", Some(r#"["1"]"#));
        let none = HashSet::new();
        let expire = |cutoff| forget(dir.path(), &none, Some(cutoff)).unwrap();
        assert_eq!(expire(SystemTime::UNIX_EPOCH), 0);
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(expire(later), 1);
        assert_eq!(keys(dir.path()), ["base.safetensors"]);
    }
}
