//! Which experiments and variants an exposure may name.
//!
//! An exposure to an experiment that never existed, or to a variant it does
//! not have, can only be a client bug; accepted, it would surface much later
//! as `unknown_variant_units` in an analysis. With a [`Catalog`] mounted,
//! ingestion refuses such exposures one by one with the reason, and accepts
//! an experiment's opaque `flag` in place of its key (remote-evaluation and
//! OFREP clients know only the flag), storing the key.
//!
//! The catalog holds every experiment that was ever started (running, paused,
//! killed, concluded, archived): late exposures of an ended experiment are
//! still data about it. `strata serve` implements [`Catalog`] over the
//! control plane's store, refreshed when the config version changes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::BoxFuture;

/// One experiment exposures may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Its key, as stored in exposures.
    pub key: String,
    /// Its opaque client-facing flag.
    pub flag: String,
    /// Its variant keys.
    pub variants: Vec<String>,
}

/// The experiments exposures may name, by key and by flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Experiments {
    by_key: HashMap<String, Arc<CatalogEntry>>,
    by_flag: HashMap<String, Arc<CatalogEntry>>,
}

/// Why an exposure was refused: the reason and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// Human-readable reason.
    pub reason: String,
    /// `experiment`, `variant` or `assigned_variant`.
    pub field: &'static str,
}

impl Experiments {
    /// The catalog of `entries`. A key also used as another experiment's
    /// flag resolves as the key.
    pub fn new(entries: impl IntoIterator<Item = CatalogEntry>) -> Self {
        let mut out = Self::default();
        for e in entries {
            let e = Arc::new(e);
            out.by_flag.insert(e.flag.clone(), e.clone());
            out.by_key.insert(e.key.clone(), e);
        }
        out
    }

    /// Number of experiments.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The experiment named by `key_or_flag`, if `variant` (and
    /// `assigned_variant`, when given) are among its variants.
    pub fn resolve(
        &self,
        key_or_flag: &str,
        variant: &str,
        assigned_variant: Option<&str>,
    ) -> Result<&CatalogEntry, Unknown> {
        let Some(e) = self
            .by_key
            .get(key_or_flag)
            .or_else(|| self.by_flag.get(key_or_flag))
        else {
            return Err(Unknown {
                reason: format!("experiment {key_or_flag:?} does not exist (neither a key nor a flag of a started experiment)"),
                field: "experiment",
            });
        };
        for (field, v) in [
            ("variant", Some(variant)),
            ("assigned_variant", assigned_variant),
        ] {
            let Some(v) = v else { continue };
            if !e.variants.iter().any(|x| x == v) {
                return Err(Unknown {
                    reason: format!(
                        "experiment {:?} has no variant {v:?}; its variants are {}",
                        e.key,
                        e.variants.join(", ")
                    ),
                    field,
                });
            }
        }
        Ok(e)
    }
}

/// Where ingestion learns which experiments exist.
pub trait Catalog: Send + Sync + 'static {
    /// The experiments as of now. Called once per exposure batch; an
    /// implementation answers from memory and refreshes only when the
    /// experiments may have changed. `None` means it does not know (its
    /// source is unreachable and nothing was ever loaded): the batch is then
    /// accepted unchecked rather than refused, since refusing would lose data.
    fn current(&self) -> BoxFuture<'_, Option<Arc<Experiments>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Experiments {
        Experiments::new([
            CatalogEntry {
                key: "checkout".into(),
                flag: "f-1a2b".into(),
                variants: vec!["control".into(), "treatment".into()],
            },
            CatalogEntry {
                key: "search".into(),
                flag: "f-9z".into(),
                variants: vec!["control".into(), "b".into()],
            },
        ])
    }

    #[test]
    fn an_experiment_is_named_by_key_or_by_flag() {
        let c = catalog();
        assert_eq!(
            c.resolve("checkout", "control", None).unwrap().key,
            "checkout"
        );
        assert_eq!(
            c.resolve("f-1a2b", "treatment", None).unwrap().key,
            "checkout"
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn an_unknown_experiment_or_variant_is_refused_with_the_field() {
        let c = catalog();
        let e = c.resolve("nope", "control", None).unwrap_err();
        assert_eq!(e.field, "experiment");
        assert!(e.reason.contains("\"nope\" does not exist"), "{}", e.reason);
        let e = c.resolve("checkout", "b", None).unwrap_err();
        assert_eq!(e.field, "variant");
        assert_eq!(
            e.reason,
            "experiment \"checkout\" has no variant \"b\"; its variants are control, treatment"
        );
        let e = c.resolve("f-9z", "b", Some("x")).unwrap_err();
        assert_eq!(e.field, "assigned_variant");
        assert!(c.resolve("f-9z", "b", Some("control")).is_ok());
    }
}
