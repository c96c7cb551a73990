//! Explain mode: why each experiment of a snapshot does or does not assign a
//! unit, for support tools ("which experiments is this user in?").
//!
//! [`crate::CompiledSnapshot::explain`] runs the evaluator of
//! [`crate::CompiledSnapshot::evaluate`] with a [`Recorder`] as its tracer, so
//! the explanations come from the same code that assigns, not from a second
//! copy of the rules. The outcomes are diagnostics, not part of the hashing
//! spec: their shape and messages may change between releases.

use serde::Serialize;

use crate::engine::{How, Skip, Trace};
use crate::targeting::TargetingFailure;
use crate::{Assignment, Status};

/// What happened to one experiment when a context was evaluated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation<'a> {
    /// The experiment key.
    pub experiment: &'a str,
    /// The experiment's client-facing key.
    pub flag: &'a str,
    /// The layer the experiment belongs to, if any.
    pub layer: Option<&'a str>,
    /// The outcome, with the figures behind it.
    pub outcome: Outcome<'a>,
}

impl Explanation<'_> {
    /// A sentence for people: the experiment key, then
    /// [`Outcome::message`].
    pub fn message(&self) -> String {
        format!("{}: {}", self.experiment, self.outcome.message())
    }
}

/// Why an experiment does or does not assign the unit. Buckets are in
/// `0..1000`, as in `docs/assignment-spec.md`.
///
/// A skipped experiment reports the first check it failed, in the order the
/// evaluator runs them: status, surface, unit id, holdout, then, for a live
/// experiment, known bot, layer range, targeting and ramp (a concluded experiment's
/// rollout checks only targeting after the holdout).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome<'a> {
    /// The experiment assigns the unit: exactly the experiments that
    /// [`crate::CompiledSnapshot::evaluate`] returns.
    Assigned {
        /// The variant served.
        variant: &'a str,
        /// The variant assigned; differs from `variant` only when the unit
        /// opted out and is served the control.
        assigned: &'a str,
        /// Whether serving this should be logged as an exposure (false for
        /// a concluded experiment's winner).
        log_exposure: bool,
        /// Whether the unit opted out (`opted_out` is `true` in the
        /// context), and is therefore served the control while keeping its
        /// assignment. A rolled-out winner ignores the opt-out.
        opted_out: bool,
        /// The unit's variant bucket; `None` for the winner of a concluded
        /// experiment, which every targeted unit gets without bucketing.
        bucket: Option<u16>,
    },
    /// The experiment serves nothing: it is paused, killed, or concluded
    /// without a winner.
    NotServable {
        /// The experiment's status.
        status: Status,
    },
    /// The experiment does not run on the requested surface.
    NotOnSurface {
        /// The surface of the request.
        surface: String,
        /// The surfaces the experiment runs on.
        surfaces: &'a [String],
    },
    /// The context has no usable unit id for the experiment: the attribute
    /// is missing, or not a non-empty string or an integer.
    NoUnit {
        /// The context attribute that identifies the experiment's unit.
        attribute: &'a str,
    },
    /// The unit is in the global holdout, which the experiment respects.
    HeldOut {
        /// The unit's holdout bucket.
        bucket: u16,
        /// The holdout's size: buckets below it are held out.
        permille: u16,
    },
    /// The unit's bucket in the experiment's layer is outside the
    /// experiment's range of it.
    OutsideLayerRange {
        /// The layer key.
        layer: &'a str,
        /// The unit's bucket in the layer.
        bucket: u16,
        /// The experiment's half-open range `[start, end)` of the layer.
        range: [u16; 2],
    },
    /// The context does not satisfy the experiment's targeting rule.
    TargetingNotMet {
        /// The part of the rule that fails, and the values it read.
        failure: TargetingFailure,
    },
    /// The unit's ramp bucket is not below the experiment's ramp.
    NotInRamp {
        /// The unit's ramp bucket.
        bucket: u16,
        /// The ramp: buckets below it are admitted.
        ramp_permille: u16,
    },
    /// The context's `user_agent` is a known bot's, and the experiment does
    /// not include bots: the bot gets the default and no exposure is logged.
    Bot,
    /// The evaluator skipped the experiment without saying why. Cannot
    /// happen with a snapshot that compiled; present so that explaining
    /// never panics.
    Unexplained,
}

impl Outcome<'_> {
    /// Whether the experiment assigns the unit.
    pub fn is_assigned(&self) -> bool {
        matches!(self, Outcome::Assigned { .. })
    }

    /// A lowercase sentence for people, e.g. `not in the ramp: ramp bucket
    /// 734 is not below the ramp of 500`.
    pub fn message(&self) -> String {
        match self {
            Outcome::Assigned {
                variant,
                assigned,
                log_exposure,
                opted_out,
                bucket,
            } => {
                let logged = if *log_exposure {
                    "an exposure is logged"
                } else {
                    "no exposure is logged"
                };
                match bucket {
                    None => format!(
                        "gets {variant:?}, the rolled-out winner of the concluded experiment; \
                         {logged}"
                    ),
                    Some(b) if *opted_out => format!(
                        "assigned {assigned:?} (bucket {b}) but served {variant:?}, the control, \
                         because the user opted out; {logged}"
                    ),
                    Some(b) => format!("assigned {variant:?} (bucket {b}); {logged}"),
                }
            }
            Outcome::NotServable { status } => {
                let state = match status {
                    Status::Running => "running but not serving",
                    Status::Paused => "paused",
                    Status::Killed => "killed",
                    Status::Concluded => "concluded without a winner",
                };
                format!("not serving: the experiment is {state}")
            }
            Outcome::NotOnSurface { surface, surfaces } => {
                let list: Vec<String> = surfaces.iter().map(|s| format!("{s:?}")).collect();
                format!(
                    "not on this surface: it runs on {} only, not on {surface:?}",
                    list.join(", ")
                )
            }
            Outcome::NoUnit { attribute } => format!(
                "no unit id: the context has no {attribute:?} that is a non-empty string or \
                 an integer"
            ),
            Outcome::HeldOut { bucket, permille } => format!(
                "held out by the global holdout: holdout bucket {bucket} is below the \
                 holdout's {permille}"
            ),
            Outcome::OutsideLayerRange {
                layer,
                bucket,
                range: [start, end],
            } => format!(
                "outside the layer range: bucket {bucket} in layer {layer:?} is not in the \
                 experiment's range {start}-{end}"
            ),
            Outcome::TargetingNotMet { failure } => {
                format!("targeting not met: {}", failure.message())
            }
            Outcome::NotInRamp {
                bucket,
                ramp_permille,
            } => format!(
                "not in the ramp: ramp bucket {bucket} is not below the ramp of {ramp_permille}"
            ),
            Outcome::Bot => "a known bot: the user agent is on the list of bots, which live \
                             experiments serve the default without an exposure"
                .to_owned(),
            Outcome::Unexplained => {
                "not assigned, for a reason the evaluator did not report".to_owned()
            }
        }
    }
}

/// One experiment's decision as the evaluator reported it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step<'a> {
    Assigned(Assignment<'a>, How),
    Skipped(Skip),
}

/// The tracer of `explain`: the decision of each compiled experiment.
pub(crate) struct Recorder<'a> {
    steps: Vec<Option<Step<'a>>>,
}

impl<'a> Recorder<'a> {
    /// A recorder for `experiments` compiled experiments.
    pub(crate) fn new(experiments: usize) -> Self {
        Self {
            steps: vec![None; experiments],
        }
    }

    /// The decision on experiment `idx`, if the evaluator considered it.
    pub(crate) fn step(&self, idx: usize) -> Option<Step<'a>> {
        self.steps.get(idx).copied().flatten()
    }
}

impl<'a> Trace<'a> for Recorder<'a> {
    fn assign(&mut self, exp: u32, assignment: Assignment<'a>, how: How) {
        if let Some(step) = self.steps.get_mut(exp as usize) {
            *step = Some(Step::Assigned(assignment, how));
        }
    }

    fn skip(&mut self, exp: u32, why: Skip) {
        if let Some(step) = self.steps.get_mut(exp as usize) {
            *step = Some(Step::Skipped(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::hash::bucket;
    use crate::{CompiledSnapshot, Context};

    const UNIT: &str = "u-1";

    fn compile(doc: Value) -> CompiledSnapshot {
        CompiledSnapshot::from_json(&doc.to_string()).unwrap()
    }

    fn exp(key: &str, extra: Value) -> Value {
        let mut e = json!({"key": key, "flag": format!("f-{key}"), "salt": format!("s-{key}"),
            "status": "running", "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}]});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    }

    fn outcome_of<'a>(all: &'a [Explanation<'a>], key: &str) -> &'a Outcome<'a> {
        &all.iter().find(|e| e.experiment == key).unwrap().outcome
    }

    /// A range of the layer that does not hold `b`.
    fn range_without(b: u16) -> [u16; 2] {
        if b < 500 {
            [500, 1000]
        } else {
            [0, 500]
        }
    }

    /// One snapshot with an experiment for each reason, evaluated on one surface.
    #[test]
    fn every_reason_with_its_figures() {
        let layer_bucket = bucket(UNIT, "ls");
        let snapshot = compile(json!({"version": 3,
        "layers": [{"key": "L", "salt": "ls"}],
        "experiments": [
            exp("plain", json!({})),
            exp("paused", json!({"status": "paused"})),
            exp("killed", json!({"status": "killed"})),
            exp("concluded", json!({"status": "concluded"})),
            exp("rollout", json!({"status": "concluded", "winner": "treatment", "layer": "L", "range": [0, 1]})),
            exp("elsewhere", json!({"surfaces": ["home", "cart", "home"]})),
            exp("here", json!({"surfaces": ["search"]})),
            exp("by-device", json!({"unit": "device_id"})),
            exp("layered", json!({"layer": "L", "range": range_without(layer_bucket)})),
            exp("targeted", json!({"targeting": {"all": [
                {"attr": "country", "op": "in", "values": ["US", "CA"]},
                {"attr": "platform", "op": "eq", "value": "ios"}]}})),
            exp("unramped", json!({"ramp_permille": 0})),
        ]}));
        let mut ctx = Context::for_user(UNIT);
        ctx.insert("country", "US").insert("platform", "android");
        let all = snapshot.explain(&ctx, Some("search"));
        let keys: Vec<&str> = all.iter().map(|e| e.experiment).collect();
        assert_eq!(
            keys,
            [
                "plain",
                "paused",
                "killed",
                "concluded",
                "rollout",
                "elsewhere",
                "here",
                "by-device",
                "layered",
                "targeted",
                "unramped"
            ]
        );
        let variant_bucket = |key: &str| Some(bucket(UNIT, &format!("s-{key}")));
        let variant = |key: &str| {
            if variant_bucket(key) < Some(500) {
                "control"
            } else {
                "treatment"
            }
        };
        assert_eq!(
            outcome_of(&all, "plain"),
            &Outcome::Assigned {
                variant: variant("plain"),
                assigned: variant("plain"),
                log_exposure: true,
                opted_out: false,
                bucket: variant_bucket("plain"),
            }
        );
        for (key, status) in [
            ("paused", Status::Paused),
            ("killed", Status::Killed),
            ("concluded", Status::Concluded),
        ] {
            assert_eq!(outcome_of(&all, key), &Outcome::NotServable { status });
        }
        assert_eq!(
            outcome_of(&all, "rollout"),
            &Outcome::Assigned {
                variant: "treatment",
                assigned: "treatment",
                log_exposure: false,
                opted_out: false,
                bucket: None,
            }
        );
        assert_eq!(
            outcome_of(&all, "elsewhere"),
            &Outcome::NotOnSurface {
                surface: "search".to_owned(),
                surfaces: &["home".to_owned(), "cart".to_owned()],
            }
        );
        assert!(outcome_of(&all, "here").is_assigned());
        assert_eq!(
            outcome_of(&all, "by-device"),
            &Outcome::NoUnit {
                attribute: "device_id"
            }
        );
        let range = range_without(layer_bucket);
        assert_eq!(
            outcome_of(&all, "layered"),
            &Outcome::OutsideLayerRange {
                layer: "L",
                bucket: layer_bucket,
                range
            }
        );
        let Outcome::TargetingNotMet { failure } = outcome_of(&all, "targeted") else {
            panic!("{:?}", outcome_of(&all, "targeted"));
        };
        assert_eq!(failure.path, ".all[1]");
        assert_eq!(failure.rule, "platform eq \"ios\"");
        assert_eq!(failure.values.get("platform"), Some(&json!("android")));
        assert_eq!(
            outcome_of(&all, "unramped"),
            &Outcome::NotInRamp {
                bucket: bucket(UNIT, "s-unramped:ramp"),
                ramp_permille: 0
            }
        );
        // Layers are reported whatever the outcome; the rollout ignores its own.
        let layer_of = |key: &str| all.iter().find(|e| e.experiment == key).unwrap().layer;
        assert_eq!(
            (layer_of("layered"), layer_of("rollout"), layer_of("plain")),
            (Some("L"), Some("L"), None)
        );

        // Exactly what evaluate assigns is assigned.
        let assigned: Vec<(&str, &str)> = all
            .iter()
            .filter_map(|e| match e.outcome {
                Outcome::Assigned { variant, .. } => Some((e.experiment, variant)),
                _ => None,
            })
            .collect();
        let evaluated: Vec<(&str, &str)> = snapshot
            .evaluate(&ctx, Some("search"))
            .iter()
            .map(|a| (a.experiment, a.variant))
            .collect();
        assert_eq!(assigned, evaluated);
    }

    #[test]
    fn holdout_applies_to_experiments_that_respect_it_and_to_rollouts() {
        let snapshot = compile(
            json!({"version": 1, "holdout": {"salt": "h", "permille": 1000},
            "experiments": [
                exp("respects", json!({})),
                exp("ignores", json!({"respect_holdout": false})),
                exp("rollout", json!({"status": "concluded", "winner": "control"})),
            ]}),
        );
        let all = snapshot.explain(&Context::for_user(UNIT), None);
        let held = Outcome::HeldOut {
            bucket: bucket(UNIT, "h"),
            permille: 1000,
        };
        assert_eq!(outcome_of(&all, "respects"), &held);
        assert_eq!(outcome_of(&all, "rollout"), &held);
        assert!(outcome_of(&all, "ignores").is_assigned());
        // Outside the holdout, nobody is held out.
        let snapshot = compile(
            json!({"version": 1, "holdout": {"salt": "h", "permille": 0},
            "experiments": [exp("respects", json!({}))]}),
        );
        assert!(snapshot.explain(&Context::for_user(UNIT), None)[0]
            .outcome
            .is_assigned());
    }

    #[test]
    fn opted_out_units_keep_their_assignment_and_are_served_the_control() {
        let snapshot = compile(json!({"version": 1, "experiments": [
            exp("a", json!({"variants": [{"key": "control", "weight": 0}, {"key": "treatment", "weight": 1}]})),
            exp("rollout", json!({"status": "concluded", "winner": "treatment"})),
        ]}));
        let mut ctx = Context::for_user(UNIT);
        ctx.insert(crate::OPTED_OUT_ATTR, true);
        let all = snapshot.explain(&ctx, None);
        assert_eq!(
            all[0].outcome,
            Outcome::Assigned {
                variant: "control",
                assigned: "treatment",
                log_exposure: true,
                opted_out: true,
                bucket: Some(bucket(UNIT, "s-a")),
            }
        );
        assert!(
            all[0].message().contains("opted out"),
            "{}",
            all[0].message()
        );
        // A rollout serves its winner to opted-out units too.
        assert_eq!(
            all[1].outcome,
            Outcome::Assigned {
                variant: "treatment",
                assigned: "treatment",
                log_exposure: false,
                opted_out: false,
                bucket: None,
            }
        );
    }

    #[test]
    fn rollouts_report_failed_targeting() {
        let snapshot = compile(json!({"version": 1, "experiments": [
            exp("rollout", json!({"status": "concluded", "winner": "control",
                "targeting": {"not": {"attr": "beta", "op": "exists"}}})),
        ]}));
        let mut ctx = Context::for_user(UNIT);
        ctx.insert("beta", true);
        let all = snapshot.explain(&ctx, None);
        assert_eq!(
            all[0].message(),
            "rollout: targeting not met: not (beta exists), but beta is true"
        );
    }

    #[test]
    fn messages_are_sentences_in_the_users_terms() {
        let table = [
            (Outcome::NotInRamp { bucket: 734, ramp_permille: 500 },
             "not in the ramp: ramp bucket 734 is not below the ramp of 500"),
            (Outcome::HeldOut { bucket: 3, permille: 20 },
             "held out by the global holdout: holdout bucket 3 is below the holdout's 20"),
            (Outcome::OutsideLayerRange { layer: "checkout", bucket: 734, range: [0, 500] },
             "outside the layer range: bucket 734 in layer \"checkout\" is not in the experiment's range 0-500"),
            (Outcome::NotServable { status: Status::Paused }, "not serving: the experiment is paused"),
            (Outcome::NotServable { status: Status::Concluded },
             "not serving: the experiment is concluded without a winner"),
            (Outcome::NoUnit { attribute: "device_id" },
             "no unit id: the context has no \"device_id\" that is a non-empty string or an integer"),
            (Outcome::Assigned { variant: "b", assigned: "b", log_exposure: true, opted_out: false, bucket: Some(612) },
             "assigned \"b\" (bucket 612); an exposure is logged"),
            (Outcome::Assigned { variant: "b", assigned: "b", log_exposure: false, opted_out: false, bucket: None },
             "gets \"b\", the rolled-out winner of the concluded experiment; no exposure is logged"),
        ];
        for (outcome, message) in table {
            assert_eq!(outcome.message(), message);
        }
        let surfaces = ["home".to_owned(), "cart".to_owned()];
        let off = Outcome::NotOnSurface {
            surface: "search".to_owned(),
            surfaces: &surfaces,
        };
        assert_eq!(
            off.message(),
            "not on this surface: it runs on \"home\", \"cart\" only, not on \"search\""
        );
        for outcome in [off, Outcome::Unexplained] {
            let m = outcome.message();
            assert!(
                m.starts_with(char::is_lowercase) && !m.contains("Outcome"),
                "{m}"
            );
        }
    }

    #[test]
    fn explanations_serialize_as_tagged_json() {
        let snapshot = compile(json!({"version": 1, "experiments": [
            exp("a", json!({"ramp_permille": 0})),
            exp("k", json!({"status": "killed"})),
            exp("t", json!({"targeting": {"attr": "country", "op": "eq", "value": "FR"}})),
        ]}));
        let all = snapshot.explain(&Context::for_user(UNIT), None);
        assert_eq!(
            serde_json::to_value(&all).unwrap(),
            json!([
                {"experiment": "a", "flag": "f-a", "layer": null,
                 "outcome": {"kind": "not_in_ramp", "bucket": bucket(UNIT, "s-a:ramp"), "ramp_permille": 0}},
                {"experiment": "k", "flag": "f-k", "layer": null,
                 "outcome": {"kind": "not_servable", "status": "killed"}},
                {"experiment": "t", "flag": "f-t", "layer": null,
                 "outcome": {"kind": "targeting_not_met",
                             "failure": {"path": "", "rule": "country eq \"FR\"", "values": {"country": null}}}},
            ])
        );
        assert_eq!(
            all[2].message(),
            "t: targeting not met: country eq \"FR\", but country is not set"
        );
    }

    #[test]
    fn the_empty_snapshot_explains_nothing() {
        assert!(CompiledSnapshot::empty()
            .explain(&Context::for_user(UNIT), Some("x"))
            .is_empty());
    }

    /// With no surface, nothing is off-surface; with an unknown one, only
    /// experiments that run everywhere are on it.
    #[test]
    fn surfaces_decide_as_in_evaluate() {
        let snapshot = compile(json!({"version": 1, "experiments": [
            exp("everywhere", json!({})),
            exp("home", json!({"surfaces": ["home"]})),
        ]}));
        let ctx = Context::for_user(UNIT);
        let kinds = |surface| -> Vec<bool> {
            snapshot
                .explain(&ctx, surface)
                .iter()
                .map(|e| e.outcome.is_assigned())
                .collect()
        };
        assert_eq!(kinds(None), [true, true]);
        assert_eq!(kinds(Some("home")), [true, true]);
        assert_eq!(kinds(Some("nowhere")), [true, false]);
        assert!(matches!(
            snapshot.explain(&ctx, Some("")).get(1).map(|e| &e.outcome),
            Some(Outcome::NotOnSurface { .. })
        ));
    }
}
