//! Explain mode against evaluate and against the spec: on every case of the
//! language-neutral suite, on the consistency corpus, and on random units.
//!
//! [`agree`] is the check. `explain` must list every experiment of the
//! snapshot in order; exactly the assignments of `evaluate` must be
//! `Assigned`, with the same variants and exposure flags; and every other
//! outcome must be a reason that the spec, applied independently to the
//! snapshot document (buckets recomputed with `hash::bucket`), confirms.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{json, Value};
use strata_core::hash::bucket;
use strata_core::{CompiledSnapshot, Context, Outcome, Snapshot, OPTED_OUT_ATTR};

use crate::conformance::json_files;

/// The unit id of a context value, by section 2 of the spec.
fn unit_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Checks `explain` against `evaluate` and the spec for one request.
pub fn agree(
    doc: &Snapshot,
    snapshot: &CompiledSnapshot,
    ctx: &Context,
    surface: Option<&str>,
) -> Result<(), String> {
    let explained = snapshot.explain(ctx, surface);
    let keys: Vec<&str> = explained.iter().map(|e| e.experiment).collect();
    let want: Vec<&str> = doc.experiments.iter().map(|e| e.key.as_str()).collect();
    if keys != want {
        return Err(format!("explains {keys:?}, the snapshot has {want:?}"));
    }
    let assigned: Vec<Value> = explained
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Assigned {
                variant,
                assigned,
                log_exposure,
                ..
            } => Some(json!([
                e.experiment,
                e.flag,
                variant,
                assigned,
                log_exposure
            ])),
            _ => None,
        })
        .collect();
    let evaluated: Vec<Value> = snapshot
        .evaluate(ctx, surface)
        .iter()
        .map(|a| json!([a.experiment, a.flag, a.variant, a.assigned, a.log_exposure]))
        .collect();
    if assigned != evaluated {
        return Err(format!(
            "explain assigns {}, evaluate {}",
            json!(assigned),
            json!(evaluated)
        ));
    }

    for (exp, e) in doc.experiments.iter().zip(&explained) {
        let fail = |why: &str| Err(format!("{}: {why}: {:?}", exp.key, e.outcome));
        // The unit id, by the fallback attribute when the unit's has none.
        let unit = unit_text(ctx.get(&exp.unit)).or_else(|| {
            exp.fallback_unit
                .as_ref()
                .and_then(|f| unit_text(ctx.get(f)))
        });
        let layer_salt = exp
            .layer
            .as_ref()
            .and_then(|l| doc.layers.iter().find(|x| &x.key == l))
            .map(|l| l.salt.as_str());
        if e.layer != exp.layer.as_deref() {
            return fail("wrong layer");
        }
        if !exp.is_servable() {
            if e.outcome != (Outcome::NotServable { status: exp.status }) {
                return fail("not servable, not reported so");
            }
            continue;
        }
        let on_surface = match surface {
            Some(s) => exp.surfaces.is_empty() || exp.surfaces.iter().any(|x| x == s),
            None => true,
        };
        let ok = match &e.outcome {
            Outcome::Assigned {
                variant,
                assigned,
                opted_out,
                bucket: b,
                ..
            } => match (b, &exp.winner, &unit) {
                (None, Some(w), Some(_)) => variant == w && assigned == w && !opted_out,
                (Some(b), None, Some(u)) => {
                    *b == bucket(u, &exp.salt) && *opted_out == ctx.opted_out()
                }
                _ => false,
            },
            Outcome::NotServable { .. } => false,
            Outcome::NotOnSurface {
                surface: s,
                surfaces,
            } => {
                !on_surface
                    && Some(s.as_str()) == surface
                    && surfaces.iter().all(|x| exp.surfaces.contains(x))
            }
            Outcome::NoUnit { attribute } => on_surface && unit.is_none() && *attribute == exp.unit,
            Outcome::HeldOut {
                bucket: b,
                permille,
            } => match (&doc.holdout, &unit) {
                (Some(h), Some(u)) => {
                    on_surface
                        && exp.respect_holdout
                        && *b == bucket(u, &h.salt)
                        && *b < h.permille
                        && *permille == h.permille
                }
                _ => false,
            },
            Outcome::OutsideLayerRange {
                layer,
                bucket: b,
                range,
            } => match (layer_salt, exp.range, &unit) {
                (Some(salt), Some(r), Some(u)) => {
                    on_surface
                        && exp.winner.is_none()
                        && Some(*layer) == exp.layer.as_deref()
                        && *range == r
                        && *b == bucket(u, salt)
                        && !(r[0] <= *b && *b < r[1])
                }
                _ => false,
            },
            Outcome::TargetingNotMet { failure } => {
                on_surface
                    && unit.is_some()
                    && exp.targeting.as_ref().is_some_and(|t| !t.is_null())
                    && !failure.rule.is_empty()
            }
            Outcome::Bot => {
                on_surface
                    && unit.is_some()
                    && exp.winner.is_none()
                    && !exp.include_bots
                    && strata_core::bots::is_bot(ctx)
            }
            Outcome::NotInRamp {
                bucket: b,
                ramp_permille,
            } => match &unit {
                Some(u) => {
                    on_surface
                        && exp.winner.is_none()
                        && *ramp_permille == exp.ramp_permille
                        && *b == bucket(u, &format!("{}:ramp", exp.salt))
                        && *b >= exp.ramp_permille
                }
                None => false,
            },
            _ => false,
        };
        if !ok {
            return fail("not what the spec says");
        }
        if e.message().is_empty() {
            return fail("no message");
        }
    }
    Ok(())
}

fn compile(doc: &Value) -> (Snapshot, CompiledSnapshot) {
    let parsed: Snapshot = serde_json::from_value(doc.clone()).expect("a snapshot");
    let compiled = CompiledSnapshot::from_json(&doc.to_string()).expect("a valid snapshot");
    (parsed, compiled)
}

/// Every case of the suite, on its own surface, on every surface and on
/// a surface no experiment names; opted out as well as not.
#[test]
fn explain_agrees_with_evaluate_on_the_conformance_suite() {
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut reasons = std::collections::BTreeSet::new();
    for (name, scenario) in json_files("cases") {
        let (doc, snapshot) = compile(&scenario["snapshot"]);
        for (i, case) in scenario["cases"].as_array().unwrap().iter().enumerate() {
            let ctx = Context::try_from(case["context"].clone()).unwrap();
            let mut opted = ctx.clone();
            opted.insert(OPTED_OUT_ATTR, !ctx.opted_out());
            let surface = case["surface"].as_str();
            // The expected results of the suite, from the reference implementation.
            let assigned: serde_json::Map<String, Value> = snapshot
                .explain(&ctx, surface)
                .iter()
                .filter_map(|e| match &e.outcome {
                    Outcome::Assigned {
                        variant,
                        assigned,
                        log_exposure,
                        ..
                    } => Some((
                        e.experiment.to_owned(),
                        json!({"variant": variant, "assigned": assigned, "flag": e.flag,
                               "log_exposure": log_exposure}),
                    )),
                    _ => None,
                })
                .collect();
            // Explain evaluates without a sticky lookup, and the suite adds
            // `unit_attr` to experiments with a fallback unit.
            let mut expected = case["expected"].clone();
            for r in expected.as_object_mut().unwrap().values_mut() {
                r.as_object_mut().unwrap().remove("unit_attr");
            }
            if case.get("sticky").is_none() && Value::Object(assigned) != expected {
                failures.push(format!("{name}[{i}]: assignments differ from the suite's"));
            }
            for ctx in [&ctx, &opted] {
                for surface in [surface, None, Some("no-such-surface")] {
                    for e in snapshot.explain(ctx, surface) {
                        reasons.insert(
                            format!("{:?}", e.outcome)
                                .split([' ', '{'])
                                .next()
                                .unwrap_or("")
                                .to_owned(),
                        );
                    }
                    if let Err(e) = agree(&doc, &snapshot, ctx, surface) {
                        failures.push(format!("{name}[{i}] surface {surface:?}: {e}"));
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 1200, "only {checked} requests");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The suite exercises every reason.
    let want = [
        "Assigned",
        "NotServable",
        "NotOnSurface",
        "NoUnit",
        "HeldOut",
        "OutsideLayerRange",
        "TargetingNotMet",
        "NotInRamp",
        "Bot",
    ];
    for reason in want {
        assert!(reasons.contains(reason), "no {reason} in {reasons:?}");
    }
    assert_eq!(reasons.len(), want.len(), "{reasons:?}");
}

/// The 120,000 units of the consistency corpus.
#[test]
fn explain_agrees_with_evaluate_on_the_consistency_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/assignment/consistency");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("snapshot.json")).unwrap()).unwrap();
    let (doc, snapshot) = compile(&doc);
    let ids = std::fs::read_to_string(dir.join("ids.txt")).unwrap();
    let mut n = 0;
    for id in ids.split_terminator('\n') {
        let ctx = Context::for_user(id);
        agree(&doc, &snapshot, &ctx, None).unwrap_or_else(|e| panic!("{id:?}: {e}"));
        n += 1;
    }
    assert!(n >= 100_000);
}

fn unit_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9:-]{0,24}",
        any::<String>(),
        any::<u64>().prop_map(|n| n.to_string()),
    ]
}

proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 512, ..Default::default() })]

    /// Random units, with and without opt-out and targeting attributes, on
    /// the suite's realistic scenario and on the consistency snapshot.
    #[test]
    fn explain_agrees_with_evaluate_on_random_units(
        id in unit_id(),
        device in prop::option::of(unit_id()),
        opted_out in any::<bool>(),
        country in prop::option::of(prop_oneof![Just("US"), Just("FR"), Just("DE"), Just("JP")]),
        surface in prop::option::of(prop_oneof![Just("home"), Just("checkout"), Just("search"), Just("x")]),
    ) {
        let mut ctx = Context::for_user(id);
        ctx.insert(OPTED_OUT_ATTR, opted_out);
        if let Some(d) = device {
            ctx.insert("device_id", d);
        }
        if let Some(c) = country {
            ctx.insert("country", c);
        }
        let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/assignment");
        for file in ["cases/20-realistic-mixed.json", "cases/04-layers.json", "consistency/snapshot.json"] {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(suite.join(file)).unwrap()).unwrap();
            let doc = if doc.get("snapshot").is_some() { doc["snapshot"].clone() } else { doc };
            let (doc, snapshot) = compile(&doc);
            if let Err(e) = agree(&doc, &snapshot, &ctx, surface) {
                prop_assert!(false, "{}: {}", file, e);
            }
        }
    }
}
