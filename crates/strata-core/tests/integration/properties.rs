//! Property tests of the evaluator's invariants, and a fuzz-style test that
//! arbitrary input never panics.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{json, Map, Value};
use strata_core::hash::{bucket, murmur3_x86_32, SaltKey, UnitHasher};
use strata_core::{CompiledSnapshot, Context, StickyMap};

use crate::common::{chi2_sf, compile, single, user, variant_of};

fn unit_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9:-]{0,24}",
        any::<String>(),
        "\\PC{1,12}",
        any::<u64>().prop_map(|n| n.to_string()),
    ]
}

/// The consistency suite's reference snapshot with every experiment
/// sticky, and the running ones falling back to `device_id`.
fn sticky_reference() -> CompiledSnapshot {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/assignment/consistency/snapshot.json"
    );
    let mut snap: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for e in snap["experiments"].as_array_mut().unwrap() {
        e["sticky"] = json!(true);
        e["fallback_unit"] = json!("device_id");
    }
    compile(snap)
}

proptest! {
    #![proptest_config(Config { cases: 256, ..Config::default() })]

    /// With nothing kept, a sticky evaluation is the plain one and returns
    /// one entry per bucket assignment; fed back, those entries change no
    /// assignment and ask for nothing new — also once every experiment's
    /// weights and ramps would now say otherwise.
    #[test]
    fn sticky_evaluation_is_the_plain_one_and_keeps_what_it_returned(id in unit_id(), device in unit_id()) {
        let s = sticky_reference();
        let ctx = Context::try_from(json!({"user_id": id, "device_id": device})).unwrap();
        let plain = s.evaluate(&ctx, None);
        let first = s.evaluate_sticky(&ctx, None, &StickyMap::new());
        prop_assert_eq!(&first.assignments, &plain);
        let by_bucket: Vec<&str> = plain.iter().filter(|a| a.log_exposure).map(|a| a.experiment).collect();
        let returned: Vec<&str> = first.new_entries.iter().map(|e| e.experiment).collect();
        prop_assert_eq!(returned, by_bucket);
        let mut kept = StickyMap::new();
        for e in &first.new_entries {
            kept.insert(e.to_owned());
        }
        let again = s.evaluate_sticky(&ctx, None, &kept);
        prop_assert_eq!(&again.assignments, &plain);
        prop_assert!(again.new_entries.is_empty());
    }
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn precomputed_salt_keys_hash_like_the_concatenation(unit in unit_id(), salt in any::<String>()) {
        let bytes = [unit.as_bytes(), b":", salt.as_bytes()].concat();
        prop_assert_eq!(UnitHasher::new(&unit).hash(&SaltKey::new(&salt)), murmur3_x86_32(&bytes, 0));
    }

    #[test]
    fn ramp_up_only_adds_units_and_keeps_their_variant(
        id in unit_id(), low in 0u16..=1000, extra in 0u16..=1000,
        weights in prop::collection::vec(0u32..100, 1..5),
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let high = low.saturating_add(extra).min(1000);
        let before = variant_of(&compile(single(low, &weights)), &Context::for_user(id.clone()), "e");
        let after = variant_of(&compile(single(high, &weights)), &Context::for_user(id.clone()), "e");
        if let Some(v) = before {
            prop_assert_eq!(Some(v), after);
        }
        // And the ramp decides membership exactly as the spec says.
        let in_ramp = bucket(&id, "s-e:ramp") < high;
        let got = variant_of(&compile(single(high, &weights)), &Context::for_user(id.clone()), "e");
        prop_assert_eq!(got.is_some(), in_ramp && !id.is_empty());
    }

    #[test]
    fn a_unit_is_in_at_most_one_experiment_of_a_layer(
        id in unit_id(),
        cuts in prop::collection::btree_set(1u16..1000, 1..8),
        ramps in prop::collection::vec(0u16..=1000, 9),
    ) {
        let mut edges = vec![0u16];
        edges.extend(cuts);
        edges.push(1000);
        let experiments: Vec<Value> = edges.windows(2).enumerate().map(|(i, w)| json!({
            "key": format!("e{i}"), "flag": format!("f{i}"), "salt": format!("salt{i}"),
            "status": "running", "layer": "L", "range": [w[0], w[1]], "ramp_permille": ramps[i],
            "variants": [{"key": "c", "weight": 1}, {"key": "t", "weight": 1}],
        })).collect();
        let n = experiments.len();
        let s = compile(json!({"version": 1, "layers": [{"key": "L", "salt": "layer-salt"}], "experiments": experiments}));
        let got = s.evaluate(&Context::for_user(id.clone()), None);
        prop_assert!(got.len() <= 1);
        if !id.is_empty() {
            // The ranges tile the layer, so the unit's layer bucket picks exactly one
            // experiment, which then admits it by its own ramp.
            let b = bucket(&id, "layer-salt");
            let owner = edges.windows(2).position(|w| w[0] <= b && b < w[1]).unwrap();
            prop_assert!(owner < n);
            let admitted = bucket(&id, &format!("salt{owner}:ramp")) < ramps[owner];
            prop_assert_eq!(got.len(), usize::from(admitted));
            if let Some(a) = got.first() {
                prop_assert_eq!(a.experiment, format!("e{owner}"));
            }
        }
    }

    #[test]
    fn held_out_units_get_nothing_from_experiments_that_respect_the_holdout(
        id in unit_id(), permille in 0u16..=1000,
    ) {
        prop_assume!(!id.is_empty());
        let s = compile(json!({"version": 1, "holdout": {"salt": "hold", "permille": permille}, "experiments": [
            {"key": "a", "flag": "fa", "salt": "sa", "status": "running", "variants": [{"key": "c", "weight": 1}]},
            {"key": "b", "flag": "fb", "salt": "sb", "status": "concluded", "winner": "c", "variants": [{"key": "c", "weight": 1}]},
            {"key": "x", "flag": "fx", "salt": "sx", "status": "running", "respect_holdout": false, "variants": [{"key": "c", "weight": 1}]},
        ]}));
        let got: Vec<&str> = s.evaluate(&Context::for_user(id.clone()), None).iter().map(|a| a.experiment).collect();
        if bucket(&id, "hold") < permille {
            prop_assert_eq!(got, vec!["x"]);
        } else {
            prop_assert_eq!(got, vec!["a", "b", "x"]);
        }
    }

    #[test]
    fn opted_out_units_are_served_control_and_keep_their_assignment(
        id in unit_id(), weights in prop::collection::vec(1u32..10, 2..5),
    ) {
        let s = compile(single(1000, &weights));
        let normal = s.evaluate(&Context::for_user(id.clone()), None);
        let opted = s.evaluate(&user(&id, json!({"opted_out": true})), None);
        prop_assert_eq!(normal.len(), opted.len());
        if let (Some(n), Some(o)) = (normal.first(), opted.first()) {
            prop_assert_eq!(o.variant, "v0");
            prop_assert_eq!(o.assigned, n.assigned);
            prop_assert!(o.log_exposure);
        }
    }

    #[test]
    fn integer_unit_ids_hash_as_their_decimal_text(n in any::<i64>()) {
        let s = compile(single(1000, &[1, 1, 1]));
        let mut as_number = Context::new();
        as_number.insert("user_id", n);
        let by_number = variant_of(&s, &as_number, "e");
        prop_assert!(by_number.is_some());
        prop_assert_eq!(by_number, variant_of(&s, &Context::for_user(n.to_string()), "e"));
    }
}

proptest! {
    // Statistical: a fixed seed keeps the outcome reproducible run to run.
    #![proptest_config(Config { cases: 24, rng_seed: RngSeed::Fixed(7), ..Config::default() })]

    #[test]
    fn weights_are_honoured(weights in prop::collection::vec(0u32..1000, 2..6)) {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        prop_assume!(total > 0);
        let s = compile(single(1000, &weights));
        let units = 40_000;
        let mut counts = vec![0u64; weights.len()];
        for i in 0..units {
            let v = variant_of(&s, &Context::for_user(format!("w-{i}")), "e").unwrap();
            counts[v[1..].parse::<usize>().unwrap()] += 1;
        }
        // Integer boundaries shift each share by less than 1 permille.
        let mut prev = 0u64;
        let mut stat = 0.0;
        let mut df = -1.0;
        for (i, &w) in weights.iter().enumerate() {
            let edge = 1000 * weights[..=i].iter().map(|&w| u64::from(w)).sum::<u64>() / total;
            let share = (edge - prev) as f64 / 1000.0;
            prev = edge;
            prop_assert!((share - w as f64 / total as f64).abs() < 0.001);
            if share == 0.0 {
                prop_assert_eq!(counts[i], 0);
                continue;
            }
            let expected = share * units as f64;
            stat += (counts[i] as f64 - expected).powi(2) / expected;
            df += 1.0;
        }
        if df > 0.0 {
            let p = chi2_sf(stat, df);
            prop_assert!(p > 1e-6, "counts {:?} weights {:?} p {}", counts, weights, p);
        }
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("running"),
            Just("paused"),
            Just("killed"),
            Just("concluded"),
            Just("all"),
            Just("any"),
            Just("not"),
            Just("attr"),
            Just("op"),
            Just("eq"),
            Just("in"),
            Just("semver_gt"),
            Just("user_id"),
            Just("L"),
            Just("c"),
            Just("1.2.3-rc.1"),
        ]
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("key"),
            Just("flag"),
            Just("salt"),
            Just("status"),
            Just("unit"),
            Just("layer"),
            Just("range"),
            Just("ramp_permille"),
            Just("surfaces"),
            Just("targeting"),
            Just("variants"),
            Just("weight"),
            Just("winner"),
            Just("respect_holdout"),
            Just("all"),
            Just("any"),
            Just("not"),
            Just("attr"),
            Just("op"),
            Just("value"),
            Just("values"),
            Just("user_id"),
            Just("opted_out"),
        ]
        .prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ]
}

/// A snapshot-shaped document whose fields are sometimes right and sometimes
/// garbage, so that many inputs get past JSON parsing into validation and
/// evaluation.
fn snapshot_like() -> impl Strategy<Value = Value> {
    let weight = prop_oneof![0u32..5, any::<u32>()].prop_map(Value::from);
    let variant = (
        prop_oneof![Just("c".to_owned()), Just("t".to_owned()), "[a-z]{0,2}"],
        weight,
    )
        .prop_map(|(k, w)| json!({"key": k, "weight": w}));
    let condition = (
        field_name(),
        prop_oneof![
            Just("eq"),
            Just("neq"),
            Just("in"),
            Just("not_in"),
            Just("gt"),
            Just("gte"),
            Just("lt"),
            Just("lte"),
            Just("contains"),
            Just("starts_with"),
            Just("exists"),
            Just("semver_gt"),
            Just("semver_lte"),
            Just("bad"),
        ],
        arbitrary_json(),
    )
        .prop_map(|(attr, op, v)| {
            if op.ends_with("in") {
                json!({"attr": attr, "op": op, "values": v})
            } else if op == "exists" {
                json!({"attr": attr, "op": op})
            } else {
                json!({"attr": attr, "op": op, "value": v})
            }
        });
    let rule = condition.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|r| json!({"all": r})),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|r| json!({"any": r})),
            inner.prop_map(|r| json!({"not": r})),
        ]
    });
    let experiment = (
        "[a-c]", "[a-d]", prop_oneof![Just("running"), Just("concluded"), Just("paused"), Just("killed")],
        prop_oneof![Just("user_id"), Just("device_id")],
        prop::option::of((prop_oneof![Just("L"), Just("M")], 0u16..1100, 0u16..1100)),
        0u16..1100,
        prop::collection::vec(variant, 0..4),
        prop::option::of(rule),
        prop::option::of(prop_oneof![Just("c"), Just("t"), Just("z")]),
        prop::collection::vec(prop_oneof![Just("home"), Just("search")], 0..3),
        any::<bool>(),
    )
        .prop_map(|(key, flag, status, unit, layer, ramp, variants, targeting, winner, surfaces, respect)| {
            let mut e = json!({"key": key, "flag": flag, "salt": format!("s{key}"), "status": status, "unit": unit,
                "ramp_permille": ramp, "variants": variants, "targeting": targeting, "winner": winner,
                "surfaces": surfaces, "respect_holdout": respect});
            if let Some((l, a, b)) = layer {
                e["layer"] = json!(l);
                e["range"] = json!([a, b]);
            }
            e
        });
    (prop::collection::vec(experiment, 0..6), prop::option::of(0u16..1100))
        .prop_map(|(experiments, holdout)| json!({
            "version": 1, "layers": [{"key": "L", "salt": "ls"}, {"key": "M", "salt": "ms"}],
            "holdout": holdout.map(|p| json!({"salt": "h", "permille": p})), "experiments": experiments,
        }))
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    #[test]
    fn arbitrary_json_never_panics(doc in arbitrary_json()) {
        let _ = CompiledSnapshot::from_json(&doc.to_string());
        let _ = CompiledSnapshot::from_json(&json!({"version": 1, "experiments": [doc]}).to_string());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = CompiledSnapshot::from_slice(&bytes);
    }

    #[test]
    fn evaluating_any_accepted_snapshot_never_panics(
        doc in snapshot_like(),
        ctx in prop::collection::vec((field_name(), arbitrary_json()), 0..8),
        surface in prop::option::of(prop_oneof![Just("home"), Just("search"), Just("other")]),
    ) {
        if let Ok(s) = CompiledSnapshot::from_json(&doc.to_string()) {
            let ctx = Context::from(ctx.into_iter().collect::<Map<_, _>>());
            for a in s.evaluate(&ctx, surface) {
                prop_assert!(!a.variant.is_empty() || !a.assigned.is_empty() || a.variant == a.assigned);
            }
        }
    }

    /// On any accepted snapshot, `explain` agrees with `evaluate` and the spec.
    #[test]
    fn explain_agrees_with_evaluate_on_any_accepted_snapshot(
        doc in snapshot_like(),
        id in prop::option::of(unit_id()),
        ctx in prop::collection::vec((field_name(), arbitrary_json()), 0..8),
        surface in prop::option::of(prop_oneof![Just("home"), Just("search"), Just("other")]),
    ) {
        if let Ok(s) = CompiledSnapshot::from_json(&doc.to_string()) {
            let parsed: strata_core::Snapshot = serde_json::from_value(doc).unwrap();
            let mut ctx = Context::from(ctx.into_iter().collect::<Map<_, _>>());
            if let Some(id) = id {
                ctx.insert("user_id", id.clone()).insert("device_id", id);
            }
            if let Err(e) = crate::explain::agree(&parsed, &s, &ctx, surface) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

#[test]
fn empty_snapshot_assigns_nothing() {
    let s = CompiledSnapshot::empty();
    assert!(s.evaluate(&Context::for_user("u"), None).is_empty());
    assert!(s.evaluate(&Context::for_user("u"), Some("home")).is_empty());
}

#[test]
fn only_strings_and_integer_literals_identify_a_unit() {
    let s = compile(single(1000, &[1, 1]));
    let from_json = |text: &str| {
        let ctx = Context::try_from(
            serde_json::from_str::<Value>(&format!("{{\"user_id\": {text}}}")).unwrap(),
        )
        .unwrap();
        variant_of(&s, &ctx, "e")
    };
    for text in [
        "\"u\"",
        "42",
        "-7",
        "18446744073709551615",
        "-9223372036854775808",
    ] {
        assert!(from_json(text).is_some(), "{text}");
    }
    assert_eq!(
        from_json("18446744073709551615"),
        variant_of(&s, &Context::for_user("18446744073709551615"), "e")
    );
    for text in [
        "\"\"",
        "42.0",
        "1e3",
        "-0",
        "18446744073709551616",
        "true",
        "null",
        "[1]",
        "{}",
    ] {
        assert_eq!(from_json(text), None, "{text}");
    }
}
