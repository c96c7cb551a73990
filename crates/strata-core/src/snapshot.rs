//! The config snapshot as it travels: the serde model of the JSON document.
//!
//! A snapshot is immutable and versioned. The server publishes it, SDKs and
//! the CLI load it, and [`crate::CompiledSnapshot::compile`] validates it and
//! turns it into an evaluation-ready form. The types here are plain data and
//! do no validation of their own; unknown fields are ignored so that an older
//! SDK can read a snapshot written by a newer server.

use serde::{Deserialize, Serialize};

/// A published configuration snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Monotonically increasing version; consumers apply only newer versions.
    pub version: u64,
    /// The global holdout, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<Holdout>,
    /// Layers: sets of mutually exclusive experiments.
    #[serde(default)]
    pub layers: Vec<Layer>,
    /// Every experiment the snapshot knows about, whatever its status.
    #[serde(default)]
    pub experiments: Vec<Experiment>,
}

/// The global holdout: a slice of units kept out of every experiment that
/// respects it, to measure the cumulative impact of everything shipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdout {
    /// Salt of the holdout bucket.
    pub salt: String,
    /// Units with `bucket(unit, salt) < permille` are held out (0–1000).
    pub permille: u16,
}

/// A layer: experiments in one layer own disjoint bucket ranges of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Unique layer key.
    pub key: String,
    /// Salt of the layer bucket.
    pub salt: String,
}

/// Lifecycle status of an experiment as the evaluator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Assigning units.
    Running,
    /// Temporarily serving nothing.
    Paused,
    /// Stopped in an emergency; serves nothing.
    Killed,
    /// Finished: serves `winner` to every targeted unit, or nothing if `winner` is null.
    Concluded,
}

/// One experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Unique experiment key (never shown to clients).
    pub key: String,
    /// Opaque client-facing key, unique in the snapshot.
    pub flag: String,
    /// Salt of the variant bucket; the ramp bucket uses `salt ++ ":ramp"`.
    pub salt: String,
    /// Lifecycle status.
    pub status: Status,
    /// The context attribute that identifies the unit.
    #[serde(default = "default_unit")]
    pub unit: String,
    /// A second context attribute that identifies the unit when the context
    /// has no usable value for `unit` — typically `device_id` before sign-in.
    /// The assignment reports which attribute identified the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_unit: Option<String>,
    /// Whether an assignment, once made, is kept for the unit — and, through
    /// the fallback attribute or an identify step, for the id it becomes —
    /// however targeting, ranges, ramps or weights change while it runs.
    /// The caller passes what it kept as a [`crate::StickyLookup`] and
    /// stores what the evaluation returns (`docs/assignment-spec.md`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub sticky: bool,
    /// Whether contexts whose `user_agent` is a known bot's are assigned
    /// (default false: a bot gets the default and logs no exposure; see
    /// [`crate::bots`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_bots: bool,
    /// The layer this experiment belongs to; absent means the default layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Half-open bucket range `[start, end)` owned in the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u16; 2]>,
    /// Share of eligible units admitted, in permille (0–1000). Absent means 1000.
    #[serde(default = "default_ramp")]
    pub ramp_permille: u16,
    /// Surfaces the experiment applies to; empty means everywhere.
    #[serde(default)]
    pub surfaces: Vec<String>,
    /// Targeting rule tree; absent or null targets everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeting: Option<serde_json::Value>,
    /// Variants with integer weights; the first is the control.
    pub variants: Vec<Variant>,
    /// Whether units in the global holdout are excluded (default true).
    #[serde(default = "default_true")]
    pub respect_holdout: bool,
    /// On a concluded experiment, the variant rolled out to every targeted unit.
    #[serde(default)]
    pub winner: Option<String>,
}

impl Experiment {
    /// Whether the experiment serves anything: its `status` is `running`, or
    /// `concluded` with a `winner` (served to every targeted unit as a
    /// rollout). `paused`, `killed` and `concluded` without a winner serve
    /// nothing, and callers fall back to their default. This is the rule of
    /// section 3 of `docs/assignment-spec.md`.
    ///
    /// It depends on the status and the winner alone: a running experiment
    /// ramped to 0 is servable (it admits no unit), and the layer range a
    /// paused experiment keeps is a matter of validation, not of serving.
    /// Every component that decides what a snapshot serves (the compiler
    /// here, the SDK's flag index, the server's publisher) asks this method,
    /// so that they cannot drift apart.
    pub fn is_servable(&self) -> bool {
        match self.status {
            Status::Running => true,
            Status::Concluded => self.winner.is_some(),
            Status::Paused | Status::Killed => false,
        }
    }
}

/// One variant of an experiment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Variant key, unique within the experiment.
    pub key: String,
    /// Relative integer weight.
    pub weight: u32,
}

fn default_unit() -> String {
    "user_id".to_owned()
}

fn default_ramp() -> u16 {
    1000
}

fn default_true() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CompiledSnapshot, Context};

    fn experiment(key: &str, status: Status, winner: Option<&str>) -> Experiment {
        Experiment {
            key: key.to_owned(),
            flag: format!("f-{key}"),
            salt: format!("s-{key}"),
            status,
            unit: default_unit(),
            fallback_unit: None,
            sticky: false,
            include_bots: false,
            layer: None,
            range: None,
            ramp_permille: default_ramp(),
            surfaces: Vec::new(),
            targeting: None,
            variants: vec![
                Variant {
                    key: "control".to_owned(),
                    weight: 1,
                },
                Variant {
                    key: "treatment".to_owned(),
                    weight: 1,
                },
            ],
            respect_holdout: true,
            winner: winner.map(str::to_owned),
        }
    }

    /// The rule of section 3 of the assignment spec, status by status. A
    /// winner on anything but a concluded experiment fails validation, but
    /// the rule itself still reads the status first.
    #[test]
    fn servable_is_running_or_concluded_with_a_winner() {
        let table = [
            (Status::Running, None, true),
            (Status::Running, Some("treatment"), true),
            (Status::Paused, None, false),
            (Status::Paused, Some("treatment"), false),
            (Status::Killed, None, false),
            (Status::Killed, Some("treatment"), false),
            (Status::Concluded, None, false),
            (Status::Concluded, Some("treatment"), true),
        ];
        for (status, winner, servable) in table {
            assert_eq!(
                experiment("e", status, winner).is_servable(),
                servable,
                "{status:?} with winner {winner:?}"
            );
        }
        // The ramp does not enter the rule: a running experiment at 0 is
        // servable and simply admits nobody.
        let mut unramped = experiment("e", Status::Running, None);
        unramped.ramp_permille = 0;
        assert!(unramped.is_servable());
    }

    /// The compiler serves exactly the servable experiments: the others are
    /// validated but neither counted nor evaluated.
    #[test]
    fn the_compiler_serves_exactly_the_servable_experiments() {
        let experiments = vec![
            experiment("running", Status::Running, None),
            experiment("paused", Status::Paused, None),
            experiment("killed", Status::Killed, None),
            experiment("concluded", Status::Concluded, None),
            experiment("rollout", Status::Concluded, Some("treatment")),
        ];
        let servable: Vec<String> = experiments
            .iter()
            .filter(|e| e.is_servable())
            .map(|e| e.key.clone())
            .collect();
        assert_eq!(servable, ["running", "rollout"]);
        let compiled = CompiledSnapshot::compile(&Snapshot {
            version: 1,
            holdout: None,
            layers: Vec::new(),
            experiments,
        })
        .unwrap();
        assert_eq!(compiled.servable_experiments(), servable.len());
        let served: Vec<&str> = compiled
            .evaluate(&Context::for_user("u"), None)
            .iter()
            .map(|a| a.experiment)
            .collect();
        assert_eq!(served, servable);
    }
}
