//! The in-memory, compiled config that the SDK endpoints serve.
//!
//! A [`LiveConfig`] is built once per published version (parse + compile +
//! indexes) and swapped in atomically through [`SharedConfig`]; readers load
//! an `Arc` without locking and never rebuild anything per request. A store
//! outage does not touch it: the SDK endpoints keep serving the last version.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::http::HeaderValue;
use serde::{Deserialize, Serialize};
use strata_core::{CompiledSnapshot, Snapshot, SnapshotError};
use tokio::sync::watch;

/// A started experiment that serves nothing (paused, killed, concluded without winner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    /// Its flag.
    pub flag: String,
    /// Its control variant (what OpenFeature clients get, reason `DISABLED`).
    pub control: String,
    /// Its status.
    pub status: String,
}

/// What the server keeps beside a snapshot (not sent to SDKs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotExtra {
    /// Started experiments that serve nothing.
    #[serde(default)]
    pub disabled: Vec<Disabled>,
}

/// What the server knows about a flag for OFREP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagInfo {
    /// The control variant key.
    pub control: String,
    /// The unit attribute.
    pub unit: String,
    /// `Some(status)` when the flag serves nothing.
    pub disabled: Option<String>,
    /// Whether it is a concluded rollout.
    pub rollout: bool,
}

/// One published version, ready to serve.
#[derive(Debug)]
pub struct LiveConfig {
    /// The version.
    pub version: u64,
    /// The exact JSON SDKs receive.
    pub body: Bytes,
    /// `"<version>"`.
    pub etag: HeaderValue,
    /// The compiled evaluator.
    pub compiled: CompiledSnapshot,
    /// Flags by key.
    pub flags: HashMap<String, FlagInfo>,
    /// Distinct unit attributes of the servable experiments.
    pub unit_attrs: Vec<String>,
    /// Unit and fallback attributes of the running sticky experiments:
    /// the ids remote evaluation looks up kept assignments for (empty: no
    /// sticky experiment, no lookup).
    pub sticky_attrs: Vec<String>,
    /// The extras as stored.
    pub extra: SnapshotExtra,
}

impl LiveConfig {
    /// Compiles a snapshot whose serialised form is `body`.
    pub fn from_snapshot(
        snapshot: &Snapshot,
        body: Bytes,
        extra: SnapshotExtra,
    ) -> Result<Self, SnapshotError> {
        let compiled = CompiledSnapshot::compile(snapshot)?;
        let mut flags = HashMap::with_capacity(snapshot.experiments.len() + extra.disabled.len());
        let mut unit_attrs: Vec<String> = Vec::new();
        let mut sticky_attrs: Vec<String> = Vec::new();
        for e in &snapshot.experiments {
            if e.sticky && e.status == strata_core::Status::Running {
                for a in std::iter::once(&e.unit).chain(&e.fallback_unit) {
                    if !sticky_attrs.contains(a) {
                        sticky_attrs.push(a.clone());
                    }
                }
            }
            if !unit_attrs.contains(&e.unit) {
                unit_attrs.push(e.unit.clone());
            }
            flags.insert(
                e.flag.clone(),
                FlagInfo {
                    control: e
                        .variants
                        .first()
                        .map(|v| v.key.clone())
                        .unwrap_or_default(),
                    unit: e.unit.clone(),
                    disabled: None,
                    rollout: e.status == strata_core::Status::Concluded,
                },
            );
        }
        for d in &extra.disabled {
            flags.entry(d.flag.clone()).or_insert_with(|| FlagInfo {
                control: d.control.clone(),
                unit: String::new(),
                disabled: Some(d.status.clone()),
                rollout: false,
            });
        }
        let etag = HeaderValue::from_str(&format!("\"{}\"", snapshot.version))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Ok(Self {
            version: snapshot.version,
            body,
            etag,
            compiled,
            flags,
            unit_attrs,
            sticky_attrs,
            extra,
        })
    }

    /// Parses and compiles a stored snapshot.
    pub fn from_stored(body: &str, extra: &str) -> Result<Self, SnapshotError> {
        let snapshot: Snapshot = serde_json::from_str(body)?;
        let extra: SnapshotExtra = serde_json::from_str(extra).unwrap_or_default();
        Self::from_snapshot(&snapshot, Bytes::copy_from_slice(body.as_bytes()), extra)
    }

    /// The empty config served before anything is published.
    pub fn empty() -> Self {
        Self {
            version: 0,
            body: Bytes::from_static(b"{\"version\":0,\"layers\":[],\"experiments\":[]}"),
            etag: HeaderValue::from_static("\"0\""),
            compiled: CompiledSnapshot::empty(),
            flags: HashMap::new(),
            unit_attrs: Vec::new(),
            sticky_attrs: Vec::new(),
            extra: SnapshotExtra::default(),
        }
    }
}

/// The current [`LiveConfig`], swapped atomically, with a version watch for
/// streaming subscribers.
#[derive(Debug)]
pub struct SharedConfig {
    current: ArcSwap<LiveConfig>,
    version_tx: watch::Sender<u64>,
    swap_lock: std::sync::Mutex<()>,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedConfig {
    /// Starts with the empty config.
    pub fn new() -> Self {
        let (version_tx, _) = watch::channel(0);
        Self {
            current: ArcSwap::from_pointee(LiveConfig::empty()),
            version_tx,
            swap_lock: std::sync::Mutex::new(()),
        }
    }

    /// The current config.
    #[inline]
    pub fn load(&self) -> Arc<LiveConfig> {
        self.current.load_full()
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.current.load().version
    }

    /// Installs `config` if it is newer than the current one; returns whether it did.
    pub fn install(&self, config: LiveConfig) -> bool {
        let _g = self
            .swap_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if config.version <= self.current.load().version {
            return false;
        }
        let v = config.version;
        self.current.store(Arc::new(config));
        self.version_tx.send_replace(v);
        true
    }

    /// A receiver of version changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version_tx.subscribe()
    }
}
