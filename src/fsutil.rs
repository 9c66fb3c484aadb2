//! Crash-safe file output: every file the tool saves (models, reports, caches) is written to a
//! temporary file beside its destination and renamed into place, so a crash never leaves a
//! half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O failure with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FsError {
    /// File or directory concerned.
    pub path: PathBuf,
    /// Underlying error.
    #[source]
    pub source: std::io::Error,
}

impl FsError {
    /// Wraps an I/O error with its path.
    pub fn new(path: &Path, source: std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| FsError::new(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| FsError::new(dir, e))?;
    tmp.write_all(bytes).map_err(|e| FsError::new(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FsError::new(path, e))?;
    set_readable(tmp.path()).map_err(|e| FsError::new(path, e))?;
    tmp.persist(path).map_err(|e| FsError::new(path, e.error))?;
    Ok(())
}

/// Copies a file into a directory being staged (the staged directory's rename makes the
/// whole set appear at once, so the single file needs no atomic write of its own).
pub fn copy_into_staged(from: &Path, to: &Path) -> Result<(), FsError> {
    std::fs::copy(from, to).map_err(|e| FsError::new(from, e))?;
    Ok(())
}

/// Gives a saved file the usual 0644 (temp files are created owner-only).
#[cfg(unix)]
pub fn set_readable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// Staging directories are created owner-only; committed ones get the usual 0755.
#[cfg(unix)]
fn set_dir_readable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_dir_readable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Gives a saved file the usual 0644 (a no-op off Unix).
#[cfg(not(unix))]
pub fn set_readable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Serialises `value` as compact JSON and writes it atomically (for large machine-read files).
pub fn write_json_compact_atomic<T: serde::Serialize>(
    path: &Path,
    value: &T,
) -> Result<(), FsError> {
    let mut bytes = serde_json::to_vec(value).map_err(|e| FsError::new(path, e.into()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), FsError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| FsError::new(path, e.into()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// A directory being filled beside its destination; `commit` renames it into place, so readers
/// see either the old directory or the complete new one. Dropped uncommitted, it is removed.
pub struct StagedDir {
    staging: tempfile::TempDir,
    dest: PathBuf,
}

impl StagedDir {
    /// Starts staging the directory `dest`.
    pub fn new(dest: &Path) -> Result<Self, FsError> {
        let parent = parent_dir(dest);
        std::fs::create_dir_all(parent).map_err(|e| FsError::new(parent, e))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(parent)
            .map_err(|e| FsError::new(parent, e))?;
        Ok(Self {
            staging,
            dest: dest.to_path_buf(),
        })
    }

    /// Path of the staging directory to write into.
    pub fn path(&self) -> &Path {
        self.staging.path()
    }

    /// Replaces `dest` with the staged directory (an existing `dest` is moved aside first).
    pub fn commit(self) -> Result<PathBuf, FsError> {
        let staged = self.staging.keep();
        set_dir_readable(&staged).map_err(|e| FsError::new(&staged, e))?;
        if self.dest.exists() {
            let old = self.dest.with_extension("old-replaced");
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&self.dest, &old).map_err(|e| FsError::new(&self.dest, e))?;
            std::fs::rename(&staged, &self.dest).map_err(|e| FsError::new(&self.dest, e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&staged, &self.dest).map_err(|e| FsError::new(&self.dest, e))?;
        }
        Ok(self.dest)
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn staged_dir_replaces_whole_directory() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("stale"), "x").unwrap();
        let staged = StagedDir::new(&dest).unwrap();
        std::fs::write(staged.path().join("fresh"), "y").unwrap();
        staged.commit().unwrap();
        assert!(dest.join("fresh").exists() && !dest.join("stale").exists());
    }
}
