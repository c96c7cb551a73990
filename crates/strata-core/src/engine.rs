//! The compiled snapshot and the evaluator.
//!
//! [`CompiledSnapshot::compile`] validates a [`Snapshot`] once and precomputes
//! everything that does not depend on the unit: the `":" ++ salt` bytes of
//! every salt, variant boundaries, layer indices, compiled targeting rules and
//! an index of experiments by surface. [`CompiledSnapshot::evaluate`] then
//! runs per request, hashes each unit id once, and touches only the
//! experiments of the request's surface.
//!
//! [`CompiledSnapshot::explain`] runs the very same evaluation with a
//! recording [`Trace`]: the per-experiment rules exist once, generic over the
//! tracer, and the tracer of [`CompiledSnapshot::evaluate`] (a plain
//! `Vec<Assignment>`) compiles its skip notes to nothing.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::bots;
use crate::explain::{Explanation, Outcome, Recorder, Step};
use crate::hash::{SaltKey, UnitHasher, BUCKETS, RAMP_SUFFIX};
use crate::snapshot::{Experiment, Snapshot, Status};
use crate::sticky::{NoSticky, Sticky, StickyEntry};
use crate::targeting::{self, Rule, TargetingError};
use crate::{Context, SnapshotError};

/// A layer bucket not yet computed in this request: (unit index, bucket).
const NOT_HASHED: (usize, u16) = (usize::MAX, 0);

/// The experiment key of holdout exposures (spec section 11). The control
/// plane's experiment keys are `[A-Za-z0-9_.-]`, so no experiment has it.
pub const HOLDOUT_EXPERIMENT: &str = "$holdout";
/// The variant of a held-out unit's holdout exposure.
pub const HOLDOUT_VARIANT: &str = "holdout";
/// The variant of the holdout exposure of a unit outside the holdout.
pub const REST_VARIANT: &str = "rest";

/// A unit's membership of the global holdout, from
/// [`CompiledSnapshot::holdout_exposures`]: logged once per unit and day as
/// an exposure of [`HOLDOUT_EXPERIMENT`], so the holdout can be compared
/// with everyone else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldoutExposure<'a> {
    /// The context attribute that identified the unit.
    pub unit_attr: &'a str,
    /// The unit id.
    pub unit_id: String,
    /// Whether the unit is in the holdout.
    pub held_out: bool,
}

impl HoldoutExposure<'_> {
    /// [`HOLDOUT_VARIANT`] or [`REST_VARIANT`].
    pub fn variant(&self) -> &'static str {
        if self.held_out {
            HOLDOUT_VARIANT
        } else {
            REST_VARIANT
        }
    }
}

/// One experiment's decision for one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Assignment<'a> {
    /// The experiment key (internal; never shown to clients).
    pub experiment: &'a str,
    /// The opaque client-facing key.
    pub flag: &'a str,
    /// The variant to serve.
    pub variant: &'a str,
    /// The variant the unit was assigned; differs from `variant` only for
    /// opted-out units, which are served the control (intent-to-treat).
    pub assigned: &'a str,
    /// Whether serving this should be logged as an exposure; false for the
    /// winner of a concluded experiment, which is no longer an experiment.
    pub log_exposure: bool,
    /// The context attribute that identified the unit.
    pub unit_attr: &'a str,
}

/// Why the evaluator skipped an experiment, with the figures it compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The context has no usable value for the experiment's unit attribute.
    NoUnit,
    /// The unit's holdout bucket is below the holdout's permille.
    HeldOut { bucket: u16 },
    /// The unit's layer bucket is outside the experiment's `[start, end)`.
    OutsideRange { bucket: u16, start: u16, end: u16 },
    /// The context fails the experiment's targeting rule.
    Targeting,
    /// The unit's ramp bucket is not below the ramp.
    NotInRamp { bucket: u16, permille: u16 },
    /// The context's user agent is a known bot's and the experiment does
    /// not include bots.
    Bot,
}

/// How an assigned unit got its variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    /// The winner of a concluded experiment, served without bucketing.
    Rollout,
    /// By its variant bucket; `opted_out` units are served the control.
    Bucket { bucket: u16, opted_out: bool },
    /// A sticky experiment's kept assignment (only with a sticky lookup).
    Kept { opted_out: bool },
}

/// What the evaluator reports of each experiment it considers, by index in
/// `CompiledSnapshot::experiments`. The rules of evaluation exist once,
/// generic over this trait: `evaluate` collects assignments into a `Vec` and
/// ignores the rest, `explain` records every step.
pub(crate) trait Trace<'a> {
    /// The experiment assigns the unit.
    fn assign(&mut self, exp: u32, assignment: Assignment<'a>, how: How);
    /// The experiment skips the unit.
    fn skip(&mut self, exp: u32, why: Skip);
}

/// The tracer of the hot path: keeps the assignments, drops the notes.
impl<'a> Trace<'a> for Vec<Assignment<'a>> {
    #[inline(always)]
    fn assign(&mut self, _: u32, assignment: Assignment<'a>, _: How) {
        self.push(assignment);
    }

    #[inline(always)]
    fn skip(&mut self, _: u32, _: Skip) {}
}

#[derive(Debug)]
struct Holdout {
    suffix: SaltKey,
    permille: u16,
    /// `salt:permille`: which units are held out ([`CompiledSnapshot::holdout_key`]).
    key: String,
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per experiment, read on the hot path: inline beats a pointer chase"
)]
enum Mode {
    /// Assigning: layer range, ramp and variant buckets apply.
    Live {
        layer: Option<LayerSlot>,
        ramp_permille: u16,
        ramp_suffix: SaltKey,
        /// `boundaries[i]` = `1000 * (w_1 + … + w_{i+1}) / W`.
        boundaries: Vec<u16>,
    },
    /// A concluded experiment's winner, served to every targeted unit.
    Rollout { winner: usize },
}

#[derive(Debug)]
struct LayerSlot {
    layer: usize,
    start: u16,
    end: u16,
}

#[derive(Debug)]
struct CompiledExperiment {
    key: String,
    flag: String,
    unit: usize,
    /// Index of the fallback unit attribute, if any.
    fallback: Option<usize>,
    sticky: bool,
    include_bots: bool,
    suffix: SaltKey,
    targeting: Option<Rule>,
    respect_holdout: bool,
    variants: Vec<String>,
    mode: Mode,
}

/// Every experiment of the snapshot, servable or not, for `explain`.
#[derive(Debug)]
struct Listed {
    /// Index into `layer_keys`.
    layer: Option<usize>,
    /// The experiment's surfaces, without repeats; empty means everywhere.
    surfaces: Vec<String>,
    kind: Listing,
}

#[derive(Debug)]
enum Listing {
    /// Index into `experiments`.
    Served(u32),
    NotServable {
        key: String,
        flag: String,
        status: Status,
    },
}

/// A validated, evaluation-ready snapshot. Immutable; share it behind an
/// `Arc` and swap the pointer when a new version arrives.
#[derive(Debug, Default)]
pub struct CompiledSnapshot {
    version: u64,
    holdout: Option<Holdout>,
    layer_suffixes: Vec<SaltKey>,
    layer_keys: Vec<String>,
    /// Distinct unit attributes, so each unit id is hashed once per request.
    unit_attrs: Vec<String>,
    experiments: Vec<CompiledExperiment>,
    /// Per surface: the experiments that apply there (surface-specific and
    /// everywhere-experiments), in snapshot order.
    by_surface: HashMap<String, Vec<u32>>,
    /// Experiments that apply everywhere: the list for an unknown surface.
    everywhere: Vec<u32>,
    /// All servable experiments: the list when no surface is given.
    all: Vec<u32>,
    /// Every experiment of the snapshot, in snapshot order (for `explain`).
    listed: Vec<Listed>,
}

/// The unit of one unit attribute, resolved lazily once per request.
#[derive(Clone, Copy)]
enum UnitSlot {
    Unresolved,
    Missing,
    /// Held out by the global holdout, with the unit's holdout bucket.
    HeldOut(UnitHasher, u16),
    Ready(UnitHasher),
}

/// The unit id a context value stands for: strings as given, integers as
/// decimal text. Anything else (and the empty string) identifies no unit.
pub fn unit_text(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::String(s) if !s.is_empty() => Some(std::borrow::Cow::Borrowed(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            Some(std::borrow::Cow::Owned(n.to_string()))
        }
        _ => None,
    }
}

impl CompiledSnapshot {
    /// Parses and compiles a snapshot from JSON text.
    pub fn from_json(text: &str) -> Result<Self, SnapshotError> {
        let snapshot: Snapshot = serde_json::from_str(text)?;
        Self::compile(&snapshot)
    }

    /// Parses and compiles a snapshot from JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)?;
        Self::compile(&snapshot)
    }

    /// Validates a snapshot and compiles it for evaluation.
    pub fn compile(snapshot: &Snapshot) -> Result<Self, SnapshotError> {
        let holdout = match &snapshot.holdout {
            Some(h) if h.permille > 1000 => {
                return Err(SnapshotError::InvalidField {
                    location: "holdout".to_owned(),
                    field: "permille",
                    reason: format!("{} is outside 0-1000", h.permille),
                })
            }
            Some(h) => Some(Holdout {
                suffix: SaltKey::new(&h.salt),
                permille: h.permille,
                key: format!("{}:{}", h.salt, h.permille),
            }),
            None => None,
        };

        let mut layer_index = HashMap::new();
        for (i, layer) in snapshot.layers.iter().enumerate() {
            if layer_index.insert(layer.key.as_str(), i).is_some() {
                return Err(SnapshotError::DuplicateLayer {
                    key: layer.key.clone(),
                });
            }
        }
        let layer_suffixes = snapshot
            .layers
            .iter()
            .map(|l| SaltKey::new(&l.salt))
            .collect();
        let layer_keys = snapshot.layers.iter().map(|l| l.key.clone()).collect();

        let mut keys = HashSet::new();
        let mut flags: HashMap<&str, &str> = HashMap::new();
        let mut unit_attrs: Vec<String> = Vec::new();
        let mut experiments = Vec::new();
        let mut all = Vec::new();
        let mut everywhere = Vec::new();
        let mut surface_lists: Vec<(&str, u32)> = Vec::new();
        let mut listed = Vec::with_capacity(snapshot.experiments.len());
        // Live ranges per layer, for the overlap check.
        let mut claimed: Vec<Vec<(&str, [u16; 2])>> = vec![Vec::new(); snapshot.layers.len()];

        for exp in &snapshot.experiments {
            if !keys.insert(exp.key.as_str()) {
                return Err(SnapshotError::DuplicateExperiment {
                    key: exp.key.clone(),
                });
            }
            if let Some(first) = flags.insert(exp.flag.as_str(), exp.key.as_str()) {
                return Err(SnapshotError::DuplicateFlag {
                    flag: exp.flag.clone(),
                    first: first.to_owned(),
                    second: exp.key.clone(),
                });
            }
            let compiled = compile_experiment(exp, &layer_index, &mut unit_attrs)?;
            if let (
                Mode::Live {
                    layer: Some(slot), ..
                },
                Status::Running | Status::Paused,
            ) = (&compiled.mode, exp.status)
            {
                for &(other, range) in &claimed[slot.layer] {
                    if slot.start < range[1] && range[0] < slot.end {
                        return Err(SnapshotError::OverlappingRanges {
                            layer: snapshot.layers[slot.layer].key.clone(),
                            first: other.to_owned(),
                            first_range: range,
                            second: exp.key.clone(),
                            second_range: [slot.start, slot.end],
                        });
                    }
                }
                claimed[slot.layer].push((exp.key.as_str(), [slot.start, slot.end]));
            }
            let mut surfaces: Vec<String> = Vec::new();
            for s in &exp.surfaces {
                if !surfaces.contains(s) {
                    surfaces.push(s.clone());
                }
            }
            let kind = if exp.is_servable() {
                let idx = experiments.len() as u32;
                all.push(idx);
                if exp.surfaces.is_empty() {
                    everywhere.push(idx);
                } else {
                    let mut seen = HashSet::new();
                    for s in &exp.surfaces {
                        if seen.insert(s.as_str()) {
                            surface_lists.push((s.as_str(), idx));
                        }
                    }
                }
                experiments.push(compiled);
                Listing::Served(idx)
            } else {
                Listing::NotServable {
                    key: exp.key.clone(),
                    flag: exp.flag.clone(),
                    status: exp.status,
                }
            };
            listed.push(Listed {
                layer: exp
                    .layer
                    .as_ref()
                    .and_then(|l| layer_index.get(l.as_str()).copied()),
                surfaces,
                kind,
            });
        }

        let mut by_surface: HashMap<String, Vec<u32>> = HashMap::new();
        for (surface, idx) in surface_lists {
            by_surface.entry(surface.to_owned()).or_default().push(idx);
        }
        for list in by_surface.values_mut() {
            list.extend_from_slice(&everywhere);
            list.sort_unstable();
        }

        Ok(Self {
            version: snapshot.version,
            holdout,
            layer_suffixes,
            layer_keys,
            unit_attrs,
            experiments,
            by_surface,
            everywhere,
            all,
            listed,
        })
    }

    /// A snapshot that assigns nothing: what to evaluate against when no
    /// usable snapshot exists (fail open).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The snapshot version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether a live experiment of the snapshot excludes known bots (the
    /// default; [`crate::bots`]).
    pub fn excludes_bots(&self) -> bool {
        self.experiments
            .iter()
            .any(|e| !e.include_bots && matches!(e.mode, Mode::Live { .. }))
    }

    /// Whether a live experiment of the snapshot is sticky.
    pub fn has_sticky(&self) -> bool {
        self.experiments
            .iter()
            .any(|e| e.sticky && matches!(e.mode, Mode::Live { .. }))
    }

    /// The unit attributes (unit and fallback) of the live sticky
    /// experiments, without repeats: the ids whose kept assignments an
    /// evaluation may look up. Empty when no experiment is sticky.
    pub fn sticky_attributes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for e in &self.experiments {
            if !e.sticky || !matches!(e.mode, Mode::Live { .. }) {
                continue;
            }
            for i in std::iter::once(e.unit).chain(e.fallback) {
                if let Some(attr) = self.unit_attrs.get(i) {
                    if !out.contains(&attr.as_str()) {
                        out.push(attr);
                    }
                }
            }
        }
        out
    }

    /// Number of servable experiments (see [`Experiment::is_servable`]).
    pub fn servable_experiments(&self) -> usize {
        self.experiments.len()
    }

    /// The experiments that apply to a request on `surface` (all servable
    /// experiments when `surface` is `None`).
    fn candidates(&self, surface: Option<&str>) -> &[u32] {
        match surface {
            None => &self.all,
            Some(s) => self
                .by_surface
                .get(s)
                .map_or(&self.everywhere, Vec::as_slice),
        }
    }

    /// Which units the global holdout holds out, as text (its salt and
    /// size; none without a holdout): a caller that logs holdout exposures
    /// once per unit and day logs them again when this changes, since a
    /// new salt or size starts a new period of the holdout (spec section
    /// 11).
    pub fn holdout_key(&self) -> Option<&str> {
        self.holdout.as_ref().map(|h| h.key.as_str())
    }

    /// The context's units' membership of the global holdout (spec
    /// section 11), to log as exposures of [`HOLDOUT_EXPERIMENT`]: one per
    /// distinct (unit attribute, unit id) that a servable experiment on
    /// `surface` respecting the holdout identifies (its unit, else its
    /// fallback unit), in snapshot order of the first such experiment.
    /// Empty without a holdout and for a known bot. The holdout's size may
    /// be 0: every unit is then of [`REST_VARIANT`].
    pub fn holdout_exposures<'a>(
        &'a self,
        ctx: &Context,
        surface: Option<&str>,
    ) -> Vec<HoldoutExposure<'a>> {
        let mut out: Vec<HoldoutExposure<'a>> = Vec::new();
        let Some(holdout) = &self.holdout else {
            return out;
        };
        let candidates = self.candidates(surface);
        if candidates.is_empty() || bots::is_bot(ctx) {
            return out;
        }
        // Per unit attribute, resolved once per call: within one context an
        // attribute has one value, so its unit is reported once (the
        // distinct pairs of the spec are the distinct attributes).
        const UNSEEN: u8 = 0;
        const ABSENT: u8 = 1;
        const REPORTED: u8 = 2;
        let mut state = vec![UNSEEN; self.unit_attrs.len()];
        for &idx in candidates {
            let Some(exp) = self.experiments.get(idx as usize) else {
                continue;
            };
            if !exp.respect_holdout {
                continue;
            }
            for i in std::iter::once(exp.unit).chain(exp.fallback) {
                let (Some(attr), Some(seen)) = (self.unit_attrs.get(i), state.get_mut(i)) else {
                    continue;
                };
                match *seen {
                    ABSENT => continue,
                    REPORTED => break,
                    _ => {}
                }
                let Some(id) = ctx.get(attr).and_then(unit_text) else {
                    *seen = ABSENT;
                    continue;
                };
                *seen = REPORTED;
                let held_out = UnitHasher::new(&id).bucket(&holdout.suffix) < holdout.permille;
                out.push(HoldoutExposure {
                    unit_attr: attr.as_str(),
                    unit_id: id.into_owned(),
                    held_out,
                });
                break;
            }
        }
        out
    }

    /// Evaluates every experiment applicable to `surface` for the unit(s) in
    /// `ctx`. `None` evaluates every surface. Never panics, never fails.
    pub fn evaluate<'a>(&'a self, ctx: &Context, surface: Option<&str>) -> Vec<Assignment<'a>> {
        let mut out = Vec::new();
        self.evaluate_into(ctx, surface, &mut out);
        out
    }

    /// As [`evaluate`](Self::evaluate), appending to a caller-owned buffer so
    /// that hot loops reuse one allocation.
    pub fn evaluate_into<'a>(
        &'a self,
        ctx: &Context,
        surface: Option<&str>,
        out: &mut Vec<Assignment<'a>>,
    ) {
        self.run(ctx, surface, out, &mut NoSticky);
    }

    /// Explains the evaluation of `ctx` on `surface` (`None`: every surface)
    /// experiment by experiment: one [`Explanation`] for every experiment of
    /// the snapshot, servable or not, in snapshot order.
    ///
    /// It runs the evaluation of [`evaluate`](Self::evaluate) itself, noting
    /// why each experiment was skipped, so the two cannot disagree: exactly
    /// the assignments of `evaluate` are [`Outcome::Assigned`], with the same
    /// variants and exposure flags. A skipped experiment reports the first
    /// check it failed in the order the evaluator runs them: status, surface,
    /// unit id, holdout, then (for a live experiment) layer range, targeting
    /// and ramp. Slower than `evaluate` and allocating: meant for support
    /// tools, not for serving. Never panics.
    pub fn explain<'a>(&'a self, ctx: &Context, surface: Option<&str>) -> Vec<Explanation<'a>> {
        let mut recorder = Recorder::new(self.experiments.len());
        self.run(ctx, surface, &mut recorder, &mut NoSticky);
        let mut considered = vec![false; self.experiments.len()];
        for &idx in self.candidates(surface) {
            if let Some(c) = considered.get_mut(idx as usize) {
                *c = true;
            }
        }
        let layer_key = |layer: Option<usize>| layer.and_then(|l| self.layer_keys.get(l));
        self.listed
            .iter()
            .map(|listed| {
                let layer = layer_key(listed.layer).map(String::as_str);
                let idx = match &listed.kind {
                    Listing::NotServable { key, flag, status } => {
                        return Explanation {
                            experiment: key,
                            flag,
                            layer,
                            outcome: Outcome::NotServable { status: *status },
                        }
                    }
                    Listing::Served(idx) => *idx as usize,
                };
                let Some(exp) = self.experiments.get(idx) else {
                    return Explanation {
                        experiment: "",
                        flag: "",
                        layer,
                        outcome: Outcome::Unexplained,
                    };
                };
                let outcome = match (recorder.step(idx), surface) {
                    (Some(step), _) => self.outcome(exp, step, ctx),
                    (None, Some(surface)) if !considered.get(idx).copied().unwrap_or(false) => {
                        Outcome::NotOnSurface {
                            surface: surface.to_owned(),
                            surfaces: &listed.surfaces,
                        }
                    }
                    (None, _) => Outcome::Unexplained,
                };
                Explanation {
                    experiment: &exp.key,
                    flag: &exp.flag,
                    layer,
                    outcome,
                }
            })
            .collect()
    }

    /// The outcome of a step the evaluator recorded for `exp`.
    fn outcome<'a>(
        &'a self,
        exp: &'a CompiledExperiment,
        step: Step<'a>,
        ctx: &Context,
    ) -> Outcome<'a> {
        match step {
            Step::Assigned(a, how) => {
                let (bucket, opted_out) = match how {
                    How::Rollout => (None, false),
                    How::Kept { opted_out } => (None, opted_out),
                    How::Bucket { bucket, opted_out } => (Some(bucket), opted_out),
                };
                Outcome::Assigned {
                    variant: a.variant,
                    assigned: a.assigned,
                    log_exposure: a.log_exposure,
                    opted_out,
                    bucket,
                }
            }
            Step::Skipped(Skip::NoUnit) => Outcome::NoUnit {
                attribute: self.unit_attrs.get(exp.unit).map_or("", String::as_str),
            },
            Step::Skipped(Skip::HeldOut { bucket }) => Outcome::HeldOut {
                bucket,
                permille: self.holdout.as_ref().map_or(0, |h| h.permille),
            },
            Step::Skipped(Skip::OutsideRange { bucket, start, end }) => {
                let layer = match &exp.mode {
                    Mode::Live {
                        layer: Some(slot), ..
                    } => self.layer_keys.get(slot.layer).map_or("", String::as_str),
                    _ => "",
                };
                Outcome::OutsideLayerRange {
                    layer,
                    bucket,
                    range: [start, end],
                }
            }
            Step::Skipped(Skip::Targeting) => {
                match exp.targeting.as_ref().and_then(|r| r.failure(ctx)) {
                    Some(failure) => Outcome::TargetingNotMet { failure },
                    None => Outcome::Unexplained,
                }
            }
            Step::Skipped(Skip::NotInRamp { bucket, permille }) => Outcome::NotInRamp {
                bucket,
                ramp_permille: permille,
            },
            Step::Skipped(Skip::Bot) => Outcome::Bot,
        }
    }

    /// The evaluation itself, for [`evaluate`](Self::evaluate) and
    /// [`explain`](Self::explain) alike.
    #[inline(always)]
    pub(crate) fn run<'a, T: Trace<'a>, S: Sticky<'a>>(
        &'a self,
        ctx: &Context,
        surface: Option<&str>,
        trace: &mut T,
        sticky: &mut S,
    ) {
        let candidates = self.candidates(surface);
        if candidates.is_empty() {
            return;
        }
        let opted_out = ctx.opted_out();
        // Almost every snapshot uses one to three unit attributes.
        let mut inline = [UnitSlot::Unresolved; 4];
        let mut heap;
        let units: &mut [UnitSlot] = if self.unit_attrs.len() <= inline.len() {
            &mut inline
        } else {
            heap = vec![UnitSlot::Unresolved; self.unit_attrs.len()];
            &mut heap
        };
        // Layer buckets are shared by every experiment of a layer.
        let mut layer_inline = [NOT_HASHED; 64];
        let mut layer_heap;
        let layer_buckets: &mut [(usize, u16)] = if self.layer_suffixes.len() <= layer_inline.len()
        {
            &mut layer_inline
        } else {
            layer_heap = vec![NOT_HASHED; self.layer_suffixes.len()];
            &mut layer_heap
        };
        // Whether the context is a known bot: looked up once, and only when
        // a live experiment that excludes bots gets that far.
        let mut bot = None;
        for &idx in candidates {
            let Some(exp) = self.experiments.get(idx as usize) else {
                continue;
            };
            let Some(mut unit) = self.slot(ctx, units, exp.unit) else {
                continue;
            };
            if let (Some(UnitSlot::Missing), Some(fallback)) = (units.get(unit), exp.fallback) {
                match self.slot(ctx, units, fallback) {
                    Some(f) => unit = f,
                    None => continue,
                }
            }
            let Some(&resolved) = units.get(unit) else {
                continue;
            };
            let hasher = match resolved {
                UnitSlot::Ready(h) => h,
                UnitSlot::HeldOut(h, _) if !exp.respect_holdout => h,
                UnitSlot::HeldOut(_, bucket) => {
                    trace.skip(idx, Skip::HeldOut { bucket });
                    continue;
                }
                UnitSlot::Missing => {
                    trace.skip(idx, Skip::NoUnit);
                    continue;
                }
                UnitSlot::Unresolved => continue,
            };
            if !exp.include_bots
                && matches!(exp.mode, Mode::Live { .. })
                && *bot.get_or_insert_with(|| bots::is_bot(ctx))
            {
                trace.skip(idx, Skip::Bot);
                continue;
            }
            let _ = self.decide(
                idx,
                exp,
                unit,
                &hasher,
                ctx,
                opted_out,
                layer_buckets,
                trace,
                sticky,
            );
        }
    }

    /// Resolves unit attribute `unit` of `ctx` into its slot (once per
    /// request) and returns the slot's index.
    #[inline(always)]
    fn slot(&self, ctx: &Context, units: &mut [UnitSlot], unit: usize) -> Option<usize> {
        let slot = units.get_mut(unit)?;
        if let UnitSlot::Unresolved = slot {
            *slot = self.resolve_unit(ctx, unit);
        }
        Some(unit)
    }

    fn unit_hasher(&self, ctx: &Context, unit: usize) -> Option<UnitHasher> {
        let attr = self.unit_attrs.get(unit)?;
        let text = unit_text(ctx.get(attr)?)?;
        Some(UnitHasher::new(&text))
    }

    fn resolve_unit(&self, ctx: &Context, unit: usize) -> UnitSlot {
        let Some(hasher) = self.unit_hasher(ctx, unit) else {
            return UnitSlot::Missing;
        };
        match &self.holdout {
            Some(h) => match hasher.bucket(&h.suffix) {
                bucket if bucket < h.permille => UnitSlot::HeldOut(hasher, bucket),
                _ => UnitSlot::Ready(hasher),
            },
            None => UnitSlot::Ready(hasher),
        }
    }

    /// Decides experiment `idx` (that is, `exp`) for a unit that passed the
    /// surface, unit and holdout checks, and reports the decision to `trace`.
    /// `None` only on an inconsistency that compilation rules out.
    #[allow(
        clippy::too_many_arguments,
        reason = "the hot path's state, passed by register"
    )]
    fn decide<'a, T: Trace<'a>, S: Sticky<'a>>(
        &'a self,
        idx: u32,
        exp: &'a CompiledExperiment,
        unit: usize,
        hasher: &UnitHasher,
        ctx: &Context,
        opted_out: bool,
        layer_buckets: &mut [(usize, u16)],
        trace: &mut T,
        sticky: &mut S,
    ) -> Option<()> {
        let unit_attr = self.unit_attrs.get(unit)?;
        let assignment = |served: usize, assigned: usize, log_exposure: bool| {
            Some(Assignment {
                experiment: &exp.key,
                flag: &exp.flag,
                variant: exp.variants.get(served)?,
                assigned: exp.variants.get(assigned)?,
                log_exposure,
                unit_attr,
            })
        };
        // A sticky experiment first looks for what was kept: under the unit's
        // id, then under its fallback id (the anonymous id it was assigned
        // as before it signed in), whose assignment then moves to the unit's id.
        let id = if S::ENABLED && exp.sticky && matches!(exp.mode, Mode::Live { .. }) {
            let id = unit_text(ctx.get(unit_attr)?)?;
            let fallback = exp
                .fallback
                .filter(|&f| f != unit)
                .and_then(|f| self.unit_attrs.get(f))
                .and_then(|attr| Some((attr.as_str(), unit_text(ctx.get(attr)?)?)));
            let kept = sticky
                .kept(unit_attr, &id, &exp.key, &exp.variants)
                .map(|v| (v, true))
                .or_else(|| {
                    let (attr, fid) = fallback.as_ref()?;
                    Some((sticky.kept(attr, fid, &exp.key, &exp.variants)?, false))
                });
            if let Some((kept, stored)) = kept {
                if !stored {
                    sticky.record(StickyEntry {
                        unit_attr,
                        unit_id: id.into_owned(),
                        experiment: &exp.key,
                        variant: exp.variants.get(kept)?,
                    });
                }
                trace.assign(
                    idx,
                    assignment(if opted_out { 0 } else { kept }, kept, true)?,
                    How::Kept { opted_out },
                );
                return Some(());
            }
            Some(id)
        } else {
            None
        };
        match &exp.mode {
            Mode::Rollout { winner } => {
                if exp.targeting.as_ref().is_some_and(|r| !r.matches(ctx)) {
                    trace.skip(idx, Skip::Targeting);
                    return Some(());
                }
                trace.assign(idx, assignment(*winner, *winner, false)?, How::Rollout);
            }
            Mode::Live {
                layer,
                ramp_permille,
                ramp_suffix,
                boundaries,
            } => {
                // The layer check excludes most units cheaply, so it runs first.
                if let Some(slot) = layer {
                    let cached = layer_buckets.get_mut(slot.layer)?;
                    // Experiments of one layer may identify units differently.
                    if cached.0 != unit {
                        *cached = (unit, hasher.bucket(self.layer_suffixes.get(slot.layer)?));
                    }
                    let b = cached.1;
                    if b < slot.start || b >= slot.end {
                        trace.skip(
                            idx,
                            Skip::OutsideRange {
                                bucket: b,
                                start: slot.start,
                                end: slot.end,
                            },
                        );
                        return Some(());
                    }
                }
                if exp.targeting.as_ref().is_some_and(|r| !r.matches(ctx)) {
                    trace.skip(idx, Skip::Targeting);
                    return Some(());
                }
                // A ramp of 1000 admits every bucket; skip the hash.
                if *ramp_permille < BUCKETS {
                    let b = hasher.bucket(ramp_suffix);
                    if b >= *ramp_permille {
                        trace.skip(
                            idx,
                            Skip::NotInRamp {
                                bucket: b,
                                permille: *ramp_permille,
                            },
                        );
                        return Some(());
                    }
                }
                let b = hasher.bucket(&exp.suffix);
                let assigned = boundaries.iter().position(|&edge| b < edge)?;
                if let Some(id) = id {
                    sticky.record(StickyEntry {
                        unit_attr,
                        unit_id: id.into_owned(),
                        experiment: &exp.key,
                        variant: exp.variants.get(assigned)?,
                    });
                }
                trace.assign(
                    idx,
                    assignment(if opted_out { 0 } else { assigned }, assigned, true)?,
                    How::Bucket {
                        bucket: b,
                        opted_out,
                    },
                );
            }
        }
        Some(())
    }
}

fn compile_experiment(
    exp: &Experiment,
    layers: &HashMap<&str, usize>,
    unit_attrs: &mut Vec<String>,
) -> Result<CompiledExperiment, SnapshotError> {
    let field_err = |field: &'static str, reason: String| SnapshotError::InvalidField {
        location: format!("experiment {:?}", exp.key),
        field,
        reason,
    };
    if exp.key.is_empty() {
        return Err(field_err("key", "must not be empty".to_owned()));
    }
    if exp.flag.is_empty() {
        return Err(field_err("flag", "must not be empty".to_owned()));
    }
    if exp.unit.is_empty() {
        return Err(field_err("unit", "must not be empty".to_owned()));
    }
    if exp.ramp_permille > 1000 {
        return Err(field_err(
            "ramp_permille",
            format!("{} is outside 0-1000", exp.ramp_permille),
        ));
    }
    let total: u64 = exp.variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return Err(SnapshotError::ZeroTotalWeight {
            experiment: exp.key.clone(),
        });
    }
    let mut seen = HashSet::new();
    for v in &exp.variants {
        if !seen.insert(v.key.as_str()) {
            return Err(field_err(
                "variants",
                format!("duplicate variant key {:?}", v.key),
            ));
        }
    }
    let winner = match (&exp.winner, exp.status) {
        (None, _) => None,
        (Some(w), Status::Concluded) => match exp.variants.iter().position(|v| &v.key == w) {
            Some(i) => Some(i),
            None => {
                return Err(field_err(
                    "winner",
                    format!("{w:?} is not one of the variants"),
                ))
            }
        },
        (Some(_), _) => {
            return Err(field_err(
                "winner",
                "is only allowed on a concluded experiment".to_owned(),
            ))
        }
    };
    let range_err = |reason: &str| SnapshotError::InvalidRange {
        experiment: exp.key.clone(),
        reason: reason.to_owned(),
    };
    let layer = match (&exp.layer, exp.range) {
        (None, None) => None,
        (Some(_), None) => return Err(range_err("an experiment in a layer needs a range")),
        (None, Some(_)) => return Err(range_err("a range needs a layer")),
        (Some(name), Some([start, end])) => {
            let Some(&layer) = layers.get(name.as_str()) else {
                return Err(SnapshotError::UnknownLayer {
                    experiment: exp.key.clone(),
                    layer: name.clone(),
                });
            };
            if end > BUCKETS {
                return Err(range_err(&format!("[{start}, {end}) is outside 0-1000")));
            }
            if start >= end {
                return Err(range_err(&format!("[{start}, {end}) is empty")));
            }
            Some(LayerSlot { layer, start, end })
        }
    };
    let targeting = match &exp.targeting {
        None => None,
        Some(v) => targeting::compile(v).map_err(|e| match e {
            TargetingError::Malformed { path, reason } => SnapshotError::InvalidTargeting {
                experiment: exp.key.clone(),
                path,
                reason,
            },
        })?,
    };
    let mut attr_index = |attr: &str| match unit_attrs.iter().position(|u| u == attr) {
        Some(i) => i,
        None => {
            unit_attrs.push(attr.to_owned());
            unit_attrs.len() - 1
        }
    };
    let unit = attr_index(&exp.unit);
    let fallback = match exp.fallback_unit.as_deref() {
        None => None,
        Some("") => return Err(field_err("fallback_unit", "must not be empty".to_owned())),
        Some(f) if f == exp.unit => {
            return Err(field_err(
                "fallback_unit",
                format!("{f:?} is the unit attribute itself"),
            ))
        }
        Some(f) => Some(attr_index(f)),
    };
    let mode = match winner {
        Some(winner) => Mode::Rollout { winner },
        None => {
            let mut cumulative = 0u64;
            let boundaries = exp
                .variants
                .iter()
                .map(|v| {
                    cumulative += u64::from(v.weight);
                    // cumulative <= total, so the quotient is at most 1000.
                    (1000 * cumulative / total) as u16
                })
                .collect();
            Mode::Live {
                layer,
                ramp_permille: exp.ramp_permille,
                ramp_suffix: SaltKey::new(&format!("{}{RAMP_SUFFIX}", exp.salt)),
                boundaries,
            }
        }
    };
    Ok(CompiledExperiment {
        key: exp.key.clone(),
        flag: exp.flag.clone(),
        unit,
        fallback,
        sticky: exp.sticky,
        include_bots: exp.include_bots,
        suffix: SaltKey::new(&exp.salt),
        targeting,
        respect_holdout: exp.respect_holdout,
        variants: exp.variants.iter().map(|v| v.key.clone()).collect(),
        mode,
    })
}
