//! The Parquet tree on an object store (S3 or compatible), for nodes that
//! share no disk.
//!
//! The node that compacts keeps the tree on its own disk, where every
//! write is atomic and crash-safe as before, and [`Mirror`] makes the
//! object store hold the same files: the object store is the tree of
//! record, the local directory its working copy.
//!
//! - [`Mirror::pull`] makes the local tree a copy of the object store's
//!   (downloads every file, removes what the store does not hold). A node runs it when it starts compacting, before its recovery
//!   looks at the tree, so it finds what the previous compactor left — in
//!   particular the files of a batch written but never acknowledged, which
//!   recovery removes.
//! - [`Mirror::push`] makes the object store hold the local tree: uploads
//!   every file written or rewritten since it last saw it, deletes every
//!   file removed. The JetStream compactor pushes each batch's files before
//!   acknowledging the batch, so an acknowledged record is on the object
//!   store; merges, deletions and retention push when they are done.
//!
//! A push uploads before it deletes, so a crash in between leaves a merge's
//! inputs beside its output (as on a local disk between the rename and the
//! deletions); the next compactor's recovery finishes the merge and pushes
//! the deletions. Files are told apart by name, size and modification time
//! of the local copy, so a rewritten file is uploaded again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use crate::error::{Result, StoreError};
use crate::parquet::list_parquet_files;

/// What a pull or a push moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MirrorReport {
    /// Files uploaded (push) or downloaded (pull).
    pub copied: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Files deleted from the object store (push) or the local tree (pull).
    pub deleted: u64,
}

/// A local Parquet tree mirrored to a prefix of an object store.
pub struct Mirror {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    root: PathBuf,
    /// The files the object store holds as this node last wrote or read
    /// them: path below the root → (size, modification time of the local
    /// copy).
    known: tokio::sync::Mutex<BTreeMap<String, (u64, SystemTime)>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("url", &self.url)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn object_error(op: &'static str, location: String, e: impl std::fmt::Display) -> StoreError {
    StoreError::Object {
        op,
        location,
        reason: e.to_string().to_lowercase(),
    }
}

impl Mirror {
    /// Mirrors `root` to `prefix` of `store`; `url` names the prefix in
    /// messages (`s3://bucket/prefix`).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: &str, root: &Path) -> Self {
        Self {
            store,
            prefix: ObjectPath::from(prefix.trim_matches('/')),
            url: url.trim_end_matches('/').to_owned(),
            root: root.to_path_buf(),
            known: tokio::sync::Mutex::default(),
        }
    }

    /// An S3 (or S3-compatible) store for `s3://bucket/prefix`: the
    /// credentials, region and endpoint come from the usual environment
    /// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP` for a local
    /// endpoint). Returns the store and the prefix.
    pub fn s3_from_env(url: &str) -> Result<(Arc<dyn ObjectStore>, String)> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| StoreError::Option {
                option: "storage",
                reason: format!("{url:?} is not an s3:// URL"),
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Option {
                option: "storage",
                reason: format!("{url:?} names no bucket (s3://bucket/prefix)"),
            });
        }
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| StoreError::Option {
                option: "storage",
                reason: format!("{url}: {}", e.to_string().to_lowercase()),
            })?;
        Ok((Arc::new(store), prefix.to_owned()))
    }

    /// The object store's URL of the tree.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The local working copy.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn location(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    fn object(&self, rel: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/') {
            p = p.join(part);
        }
        p
    }

    /// The Parquet files the object store holds under the prefix: path
    /// below the root → size.
    async fn remote(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        let mut list = self.store.list(Some(&self.prefix));
        let base = self.prefix.as_ref();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| object_error("list", self.url.clone(), e))?;
            let key = meta.location.as_ref();
            let rel = if base.is_empty() {
                key
            } else {
                key.strip_prefix(base)
                    .and_then(|k| k.strip_prefix('/'))
                    .unwrap_or(key)
            };
            if rel.ends_with(".parquet")
                && !rel.rsplit('/').next().is_some_and(|n| n.starts_with('.'))
            {
                out.insert(rel.to_owned(), meta.size);
            }
        }
        Ok(out)
    }

    /// The local Parquet files: path below the root → (size, mtime).
    fn local(&self) -> Result<BTreeMap<String, (u64, SystemTime)>> {
        let mut out = BTreeMap::new();
        if !self.root.exists() {
            return Ok(out);
        }
        for path in list_parquet_files(&self.root)? {
            let meta = std::fs::metadata(&path).map_err(|e| StoreError::io("stat", &path, e))?;
            let modified = meta
                .modified()
                .map_err(|e| StoreError::io("stat", &path, e))?;
            let rel = path
                .strip_prefix(&self.root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(rel, (meta.len(), modified));
        }
        Ok(out)
    }

    /// Makes the local tree a copy of the object store's.
    pub async fn pull(&self) -> Result<MirrorReport> {
        let mut known = self.known.lock().await;
        let remote = self.remote().await?;
        let local = self.local()?;
        let mut report = MirrorReport::default();
        for rel in local.keys().filter(|rel| !remote.contains_key(*rel)) {
            let path = self.root.join(rel);
            std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
            report.deleted += 1;
        }
        known.clear();
        // Every file is downloaded, whatever a local copy holds: one left
        // from an earlier term may share the size of a file another node
        // rewrote since (a deletion, retention), and only the store is
        // known to be right.
        for rel in remote.into_keys() {
            let path = self.root.join(&rel);
            {
                let bytes = self
                    .store
                    .get(&self.object(&rel))
                    .await
                    .map_err(|e| object_error("download", self.location(&rel), e))?
                    .bytes()
                    .await
                    .map_err(|e| object_error("download", self.location(&rel), e))?;
                write_atomic(&path, &bytes)?;
                report.copied += 1;
                report.bytes += bytes.len() as u64;
            }
            let meta = std::fs::metadata(&path).map_err(|e| StoreError::io("stat", &path, e))?;
            let modified = meta
                .modified()
                .map_err(|e| StoreError::io("stat", &path, e))?;
            known.insert(rel, (meta.len(), modified));
        }
        Ok(report)
    }

    /// Makes the object store hold the local tree: uploads what was written
    /// or rewritten since it was last seen, then deletes what was removed.
    pub async fn push(&self) -> Result<MirrorReport> {
        let mut known = self.known.lock().await;
        let local = self.local()?;
        let mut report = MirrorReport::default();
        for (rel, seen) in &local {
            if known.get(rel) == Some(seen) {
                continue;
            }
            let path = self.root.join(rel);
            let bytes = std::fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
            let len = bytes.len() as u64;
            self.store
                .put(&self.object(rel), PutPayload::from(bytes))
                .await
                .map_err(|e| object_error("upload", self.location(rel), e))?;
            known.insert(rel.clone(), *seen);
            report.copied += 1;
            report.bytes += len;
        }
        let gone: Vec<String> = known
            .keys()
            .filter(|rel| !local.contains_key(*rel))
            .cloned()
            .collect();
        for rel in gone {
            match self.store.delete(&self.object(&rel)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(object_error("delete", self.location(&rel), e)),
            }
            known.remove(&rel);
            report.deleted += 1;
        }
        Ok(report)
    }
}

/// Writes `bytes` to `path` through a hidden temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.download"));
    std::fs::write(&tmp, bytes).map_err(|e| StoreError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io("rename", path, e))
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn write(root: &Path, rel: &str, body: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    async fn keys(store: &Arc<dyn ObjectStore>) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = store
            .list(None)
            .map(|m| {
                let m = m.unwrap();
                (m.location.to_string(), m.size)
            })
            .collect()
            .await;
        out.sort();
        out
    }

    #[tokio::test]
    async fn push_uploads_changes_and_deletions_and_pull_copies_the_store() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let a = tempfile::tempdir().unwrap();
        let m = Mirror::new(store.clone(), "pre/fix", "mem://pre/fix", a.path());
        let one = "kind=events/date=2026-01-01/part=00/nats-1-2.parquet";
        let two = "kind=events/date=2026-01-01/part=01/nats-1-2.parquet";
        write(a.path(), one, b"first");
        write(a.path(), two, b"second");
        write(
            a.path(),
            "kind=events/date=2026-01-01/part=00/.tmp.parquet",
            b"x",
        );
        let r = m.push().await.unwrap();
        assert_eq!((r.copied, r.deleted), (2, 0));
        // Nothing changed: nothing moves.
        assert_eq!(m.push().await.unwrap(), MirrorReport::default());
        // A rewrite (same name) and a removal.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(a.path(), one, b"rewritten");
        std::fs::remove_file(a.path().join(two)).unwrap();
        let r = m.push().await.unwrap();
        assert_eq!((r.copied, r.deleted), (1, 1));
        assert_eq!(keys(&store).await, vec![(format!("pre/fix/{one}"), 9)]);

        // Another node's working copy: stale files go, the store's come.
        let b = tempfile::tempdir().unwrap();
        write(b.path(), two, b"stale");
        let other = Mirror::new(store.clone(), "pre/fix", "mem://pre/fix", b.path());
        let r = other.pull().await.unwrap();
        assert_eq!((r.copied, r.deleted), (1, 1));
        // Even a local copy of the right size is replaced by the store's.
        write(b.path(), one, b"rewrite!!");
        assert_eq!(other.pull().await.unwrap().copied, 1);
        assert_eq!(std::fs::read(b.path().join(one)).unwrap(), b"rewritten");
        assert_eq!(std::fs::read(b.path().join(one)).unwrap(), b"rewritten");
        assert!(!b.path().join(two).exists());
        // Pulled files are known: a push after a pull moves nothing.
        assert_eq!(other.push().await.unwrap(), MirrorReport::default());
    }

    #[test]
    fn s3_urls_name_a_bucket() {
        assert!(Mirror::s3_from_env("s3://bucket/some/prefix").is_ok());
        assert!(Mirror::s3_from_env("s3:///prefix").is_err());
        assert!(Mirror::s3_from_env("gs://bucket").is_err());
    }
}
