//! One process owns a pipeline directory at a time.
//!
//! A server writing the log and `strata compact` rewriting it from another
//! process would corrupt each other's view of which segments are compacted,
//! so whoever opens a directory first takes an exclusive lock on its
//! `pipeline.lock`, held for as long as the returned file is open.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a pipeline directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error("pipeline directory {} is in use by another process (a running strata serve?)", .0.display())]
    InUse(PathBuf),
    /// The directory or its lock file could not be created or locked.
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        /// The directory or lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Takes the exclusive lock of a pipeline directory (created if needed); the
/// lock is released when the file is dropped or the process exits.
pub fn lock_dir(dir: &Path) -> Result<File, LockError> {
    std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("pipeline.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::InUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err();
        assert!(matches!(err, LockError::InUse(_)), "{err}");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(first);
        lock_dir(dir.path()).unwrap();
    }
}
