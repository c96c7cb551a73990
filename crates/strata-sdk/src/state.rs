//! A loaded snapshot: the compiled snapshot plus an index by flag.
//!
//! `strata-core` evaluates a whole surface at a time. `variant()` needs one
//! experiment, and scanning 3,000 to find it would cost microseconds, so each
//! servable experiment is also compiled on its own, into a snapshot holding
//! only it, the global holdout and its layer. An experiment's decision
//! depends on nothing else (the holdout, its layer bucket, targeting, ramp
//! and its own salt), so the answer is the same as the full evaluation —
//! which the consistency test checks over 100,000 units — while the work
//! per call is one hash-map lookup and one experiment.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use strata_core::{CompiledSnapshot, Snapshot, SnapshotError};

/// One flag (or experiment key) of the index.
#[derive(Debug)]
pub(crate) struct FlagEntry {
    /// A snapshot with this experiment alone; `None` when it serves nothing
    /// (paused, killed, concluded without a winner).
    pub snapshot: Option<CompiledSnapshot>,
}

/// The snapshot a client evaluates against.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// Whether a real snapshot is loaded (false for the start-up placeholder).
    pub present: bool,
    /// Its version (0 when none).
    pub version: u64,
    /// The whole snapshot, for `assignments()`.
    pub compiled: CompiledSnapshot,
    /// By flag and by experiment key; a flag wins over an equal key.
    flags: HashMap<Box<str>, Arc<FlagEntry>>,
}

impl Loaded {
    /// The placeholder before any snapshot: evaluates to nothing.
    pub fn none() -> Self {
        Self {
            present: false,
            version: 0,
            compiled: CompiledSnapshot::empty(),
            flags: HashMap::new(),
        }
    }

    /// Parses, validates and indexes a snapshot. `surfaces`, when given,
    /// limits the flag index to experiments that apply on one of them.
    pub fn from_slice(
        bytes: &[u8],
        surfaces: Option<&HashSet<String>>,
    ) -> Result<Self, SnapshotError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)?;
        let compiled = CompiledSnapshot::compile(&snapshot)?;
        let mut by_key = HashMap::with_capacity(snapshot.experiments.len());
        let mut by_flag = HashMap::with_capacity(snapshot.experiments.len());
        for exp in &snapshot.experiments {
            if let Some(only) = surfaces {
                if !exp.surfaces.is_empty() && !exp.surfaces.iter().any(|s| only.contains(s)) {
                    continue;
                }
            }
            let single = if exp.is_servable() {
                let alone = Snapshot {
                    version: snapshot.version,
                    holdout: snapshot.holdout.clone(),
                    layers: snapshot
                        .layers
                        .iter()
                        .filter(|l| exp.layer.as_deref() == Some(l.key.as_str()))
                        .cloned()
                        .collect(),
                    experiments: vec![exp.clone()],
                };
                // The whole snapshot compiled, so this part does too; if it
                // ever did not, the flag would serve the default (fail open).
                CompiledSnapshot::compile(&alone).ok()
            } else {
                None
            };
            let entry = Arc::new(FlagEntry { snapshot: single });
            by_key.insert(Box::<str>::from(exp.key.as_str()), entry.clone());
            by_flag.insert(Box::<str>::from(exp.flag.as_str()), entry);
        }
        by_key.extend(by_flag);
        Ok(Self {
            present: true,
            version: snapshot.version,
            compiled,
            flags: by_key,
        })
    }

    /// The entry of a flag or experiment key.
    #[inline]
    pub fn flag(&self, name: &str) -> Option<&FlagEntry> {
        self.flags.get(name).map(|e| &**e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::Context;

    const DOC: &str = r#"{"version": 7, "holdout": {"salt": "h", "permille": 100},
      "layers": [{"key": "l1", "salt": "ls1"}, {"key": "l2", "salt": "ls2"}],
      "experiments": [
        {"key": "e1", "flag": "f1", "salt": "s1", "status": "running", "layer": "l1", "range": [0, 500],
         "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}]},
        {"key": "e2", "flag": "f2", "salt": "s2", "status": "running", "layer": "l1", "range": [500, 1000],
         "surfaces": ["checkout"], "variants": [{"key": "a", "weight": 1}, {"key": "b", "weight": 3}]},
        {"key": "e3", "flag": "f3", "salt": "s3", "status": "killed",
         "variants": [{"key": "control", "weight": 1}]},
        {"key": "e4", "flag": "f4", "salt": "s4", "status": "concluded", "winner": "w",
         "targeting": {"attr": "country", "op": "eq", "value": "US"},
         "variants": [{"key": "control", "weight": 1}, {"key": "w", "weight": 1}]}
      ]}"#;

    #[test]
    fn single_experiment_snapshots_agree_with_the_whole() {
        let loaded = Loaded::from_slice(DOC.as_bytes(), None).unwrap();
        assert_eq!(loaded.version, 7);
        for i in 0..5000 {
            let mut ctx = Context::for_user(format!("u{i}"));
            if i % 2 == 0 {
                ctx.insert("country", "US");
            }
            let whole = loaded.compiled.evaluate(&ctx, None);
            for flag in ["f1", "f2", "f3", "f4"] {
                let expected = whole
                    .iter()
                    .find(|a| a.flag == flag)
                    .map(|a| (a.variant, a.assigned));
                let entry = loaded.flag(flag).unwrap();
                let got = entry.snapshot.as_ref().and_then(|s| {
                    s.evaluate(&ctx, None)
                        .first()
                        .map(|a| (a.variant.to_owned(), a.assigned.to_owned()))
                });
                assert_eq!(
                    got.as_ref().map(|(v, a)| (v.as_str(), a.as_str())),
                    expected,
                    "unit u{i} flag {flag}"
                );
            }
        }
    }

    #[test]
    fn keys_and_flags_are_both_indexed_and_disabled_ones_serve_nothing() {
        let loaded = Loaded::from_slice(DOC.as_bytes(), None).unwrap();
        assert!(std::ptr::eq(
            loaded.flag("e1").unwrap(),
            loaded.flag("f1").unwrap()
        ));
        assert!(loaded.flag("f3").unwrap().snapshot.is_none());
        assert!(loaded.flag("nope").is_none());
    }

    #[test]
    fn the_surface_index_keeps_only_the_host_surfaces() {
        let only: HashSet<String> = ["search".to_owned()].into();
        let loaded = Loaded::from_slice(DOC.as_bytes(), Some(&only)).unwrap();
        assert!(loaded.flag("f1").is_some(), "everywhere-experiments stay");
        assert!(loaded.flag("f2").is_none(), "checkout-only experiments go");
    }

    #[test]
    fn invalid_snapshots_are_errors() {
        assert!(Loaded::from_slice(b"{\"version\": 3, \"experiments\": [", None).is_err());
        assert!(Loaded::from_slice(
            br#"{"version": 3, "experiments": [{"key": "e", "flag": "f", "salt": "s",
                "status": "running", "variants": [{"key": "a", "weight": 0}]}]}"#,
            None
        )
        .is_err());
        assert!(!Loaded::none().present);
    }
}
