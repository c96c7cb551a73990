//! Sticky assignments: an experiment that must not flicker keeps what it
//! assigned.
//!
//! The evaluator stays a pure function: what the caller kept comes in as a
//! [`StickyLookup`], and the assignments the evaluation makes or moves go
//! out as [`StickyEntry`]s for the caller to store. Where they are stored
//! (memory, Redis, a database) is the caller's business; a caller without a
//! store evaluates with [`CompiledSnapshot::evaluate`], which treats sticky
//! experiments as ordinary ones (the documented flicker).
//!
//! Rules (section 9 of `docs/assignment-spec.md`): stickiness applies to a
//! running experiment whose unit passed the unit id and holdout checks; a
//! kept variant is served before the layer range, targeting and ramp are
//! looked at, so a change of any of them (or of the weights) moves no kept
//! unit; a kept variant that is no longer one of the experiment's variants
//! is ignored. The lookup is by the unit's own id first, then by its
//! fallback id, and a variant found under the fallback id is returned as a
//! new entry for the unit's id — so an anonymous visitor who signs in keeps
//! the variant they were assigned as a device.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::engine::{Assignment, CompiledSnapshot};
use crate::Context;

/// What a caller kept of earlier sticky assignments.
pub trait StickyLookup {
    /// The variant kept for `experiment` and the unit whose attribute
    /// `unit_attr` has the id `unit_id`, if any.
    fn kept(&self, unit_attr: &str, unit_id: &str, experiment: &str) -> Option<&str>;
}

/// One sticky assignment to store: the unit (attribute and id), the
/// experiment and the variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StickyEntry<'a> {
    /// The context attribute that identifies the unit.
    pub unit_attr: &'a str,
    /// The unit id (a JSON integer as its decimal text).
    pub unit_id: String,
    /// The experiment key.
    pub experiment: &'a str,
    /// The assigned variant.
    pub variant: &'a str,
}

impl StickyEntry<'_> {
    /// The entry with owned strings, for storing.
    pub fn to_owned(&self) -> StickyAssignment {
        StickyAssignment {
            unit_attr: self.unit_attr.to_owned(),
            unit_id: self.unit_id.clone(),
            experiment: self.experiment.to_owned(),
            variant: self.variant.to_owned(),
        }
    }
}

/// A stored sticky assignment (the owned form of [`StickyEntry`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StickyAssignment {
    /// The context attribute that identifies the unit.
    pub unit_attr: String,
    /// The unit id.
    pub unit_id: String,
    /// The experiment key.
    pub experiment: String,
    /// The assigned variant.
    pub variant: String,
}

/// Sticky assignments in memory, by unit and experiment: the simplest
/// [`StickyLookup`], and what the conformance suite evaluates against.
/// Lookups borrow their keys: no allocation per lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StickyMap {
    /// unit attribute → unit id → experiment → variant.
    units: HashMap<String, HashMap<String, HashMap<String, String>>>,
    len: usize,
}

impl StickyMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `a`, replacing what was kept for its unit and experiment.
    pub fn insert(&mut self, a: StickyAssignment) {
        let ids = self.units.entry(a.unit_attr).or_default();
        let unit = match ids.entry(a.unit_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.len += 1;
                e.insert(HashMap::new())
            }
        };
        unit.insert(a.experiment, a.variant);
    }

    /// Every assignment kept for one unit, by experiment.
    pub fn unit(&self, unit_attr: &str, unit_id: &str) -> Option<&HashMap<String, String>> {
        self.units.get(unit_attr)?.get(unit_id)
    }

    /// Number of units with kept assignments.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl StickyLookup for StickyMap {
    fn kept(&self, unit_attr: &str, unit_id: &str, experiment: &str) -> Option<&str> {
        self.unit(unit_attr, unit_id)?
            .get(experiment)
            .map(String::as_str)
    }
}

/// The result of [`CompiledSnapshot::evaluate_sticky`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StickyEvaluation<'a> {
    /// The assignments, as [`CompiledSnapshot::evaluate`] returns them.
    pub assignments: Vec<Assignment<'a>>,
    /// Sticky assignments made or moved by this evaluation, for the caller
    /// to store: one per sticky experiment assigned by bucket, and one per
    /// variant found under a fallback id only.
    pub new_entries: Vec<StickyEntry<'a>>,
}

/// The evaluator's view of stickiness; [`NoSticky`] compiles it away.
pub(crate) trait Sticky<'a> {
    /// Whether sticky experiments are looked up at all.
    const ENABLED: bool;
    /// The index in `variants` of the variant kept for the unit, if any
    /// and still one of them.
    fn kept(
        &self,
        unit_attr: &str,
        unit_id: &str,
        experiment: &str,
        variants: &[String],
    ) -> Option<usize>;
    fn record(&mut self, entry: StickyEntry<'a>);
}

/// No sticky lookup: sticky experiments evaluate as ordinary ones.
pub(crate) struct NoSticky;

impl<'a> Sticky<'a> for NoSticky {
    const ENABLED: bool = false;

    #[inline(always)]
    fn kept(&self, _: &str, _: &str, _: &str, _: &[String]) -> Option<usize> {
        None
    }

    #[inline(always)]
    fn record(&mut self, _: StickyEntry<'a>) {}
}

/// A caller's lookup and the entries the evaluation returns.
pub(crate) struct WithLookup<'a, 'l, L: StickyLookup + ?Sized> {
    lookup: &'l L,
    entries: Vec<StickyEntry<'a>>,
}

impl<'a, L: StickyLookup + ?Sized> Sticky<'a> for WithLookup<'a, '_, L> {
    const ENABLED: bool = true;

    fn kept(
        &self,
        unit_attr: &str,
        unit_id: &str,
        experiment: &str,
        variants: &[String],
    ) -> Option<usize> {
        let v = self.lookup.kept(unit_attr, unit_id, experiment)?;
        variants.iter().position(|k| k == v)
    }

    fn record(&mut self, entry: StickyEntry<'a>) {
        self.entries.push(entry);
    }
}

impl CompiledSnapshot {
    /// As [`evaluate`](Self::evaluate), with sticky experiments keeping
    /// what `lookup` holds and returning the entries to store (module
    /// [`crate::sticky`]). Never panics, never fails.
    pub fn evaluate_sticky<'a, L: StickyLookup + ?Sized>(
        &'a self,
        ctx: &Context,
        surface: Option<&str>,
        lookup: &L,
    ) -> StickyEvaluation<'a> {
        let mut assignments = Vec::new();
        let mut sticky = WithLookup {
            lookup,
            entries: Vec::new(),
        };
        self.run(ctx, surface, &mut assignments, &mut sticky);
        StickyEvaluation {
            assignments,
            new_entries: sticky.entries,
        }
    }
}
