//! Snapshot validation: every rejected shape gets a clear error naming the place.

use serde_json::{json, Value};
use strata_core::{CompiledSnapshot, SnapshotError};

fn err(snapshot: Value) -> SnapshotError {
    match CompiledSnapshot::from_json(&snapshot.to_string()) {
        Ok(_) => panic!("accepted {snapshot}"),
        Err(e) => e,
    }
}

fn exp(key: &str, extra: Value) -> Value {
    let mut e = json!({"key": key, "flag": format!("f-{key}"), "salt": format!("s-{key}"),
        "status": "running", "variants": [{"key": "c", "weight": 1}, {"key": "t", "weight": 1}]});
    if let (Value::Object(e), Value::Object(extra)) = (&mut e, extra) {
        e.extend(extra);
    }
    e
}

fn snap(experiments: Vec<Value>) -> Value {
    json!({"version": 3, "layers": [{"key": "L", "salt": "ls"}], "experiments": experiments})
}

#[test]
fn messages_name_the_problem_and_place() {
    let cases: Vec<(Value, &str)> = vec![
        (
            snap(vec![
                exp("a", json!({})),
                exp("a", json!({"flag": "other"})),
            ]),
            "duplicate experiment key \"a\"",
        ),
        (
            snap(vec![
                exp("a", json!({"flag": "x"})),
                exp("b", json!({"flag": "x"})),
            ]),
            "duplicate flag \"x\" (experiments \"a\" and \"b\")",
        ),
        (
            snap(vec![exp("a", json!({"layer": "nope", "range": [0, 10]}))]),
            "experiment \"a\": unknown layer \"nope\"",
        ),
        (
            snap(vec![exp("a", json!({"layer": "L", "range": [0, 1001]}))]),
            "experiment \"a\": field range: [0, 1001) is outside 0-1000",
        ),
        (
            snap(vec![exp("a", json!({"layer": "L", "range": [5, 5]}))]),
            "experiment \"a\": field range: [5, 5) is empty",
        ),
        (
            snap(vec![exp("a", json!({"layer": "L"}))]),
            "experiment \"a\": field range: an experiment in a layer needs a range",
        ),
        (
            snap(vec![exp("a", json!({"range": [0, 5]}))]),
            "experiment \"a\": field range: a range needs a layer",
        ),
        (
            snap(vec![
                exp("a", json!({"layer": "L", "range": [0, 400]})),
                exp(
                    "b",
                    json!({"layer": "L", "range": [399, 600], "status": "paused"}),
                ),
            ]),
            "layer \"L\": ranges of experiments \"a\" [0, 400] and \"b\" [399, 600] overlap",
        ),
        (
            snap(vec![exp(
                "a",
                json!({"variants": [{"key": "c", "weight": 0}]}),
            )]),
            "experiment \"a\": field variants: total weight is zero",
        ),
        (
            snap(vec![exp("a", json!({"variants": []}))]),
            "experiment \"a\": field variants: total weight is zero",
        ),
        (
            snap(vec![exp("a", json!({"ramp_permille": 1001}))]),
            "experiment \"a\": field ramp_permille: 1001 is outside 0-1000",
        ),
        (
            snap(vec![exp("a", json!({"winner": "t"}))]),
            "experiment \"a\": field winner: is only allowed on a concluded experiment",
        ),
        (
            snap(vec![exp(
                "a",
                json!({"status": "concluded", "winner": "zz"}),
            )]),
            "experiment \"a\": field winner: \"zz\" is not one of the variants",
        ),
        (
            snap(vec![exp(
                "a",
                json!({"targeting": {"all": [{"attr": "x", "op": "like", "value": 1}]}}),
            )]),
            "experiment \"a\": field targeting.all[0]: unknown op \"like\"",
        ),
        (
            json!({"version": 1, "holdout": {"salt": "h", "permille": 2000}, "experiments": []}),
            "holdout: field permille: 2000 is outside 0-1000",
        ),
        (
            json!({"version": 1, "layers": [{"key": "L", "salt": "a"}, {"key": "L", "salt": "b"}], "experiments": []}),
            "duplicate layer key \"L\"",
        ),
    ];
    for (snapshot, want) in cases {
        assert_eq!(err(snapshot).to_string(), want);
    }
}

#[test]
fn json_errors_carry_line_and_column() {
    let e = CompiledSnapshot::from_json("{\"version\": 1,\n \"experiments\": [\n  {\"key\": 5}]}")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid snapshot json at line 3, column 11: invalid type: integer `5`, expected a string"
    );
    let e = CompiledSnapshot::from_json(
        r#"{"version": 1, "experiments": [], "holdout": {"salt": "h", "permille": -1}}"#,
    )
    .unwrap_err();
    assert!(matches!(e, SnapshotError::Json { .. }), "{e}");
}

#[test]
fn released_ranges_may_be_reused() {
    // Killed and concluded experiments no longer own their layer range.
    let s = snap(vec![
        exp(
            "old",
            json!({"layer": "L", "range": [0, 500], "status": "killed"}),
        ),
        exp(
            "done",
            json!({"layer": "L", "range": [0, 500], "status": "concluded", "winner": "t"}),
        ),
        exp("new", json!({"layer": "L", "range": [0, 500]})),
    ]);
    let compiled = CompiledSnapshot::from_json(&s.to_string()).unwrap();
    assert_eq!(compiled.servable_experiments(), 2);
}

#[test]
fn the_example_snapshot_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/snapshot.json"
    ))
    .unwrap();
    let s = CompiledSnapshot::from_json(&text).unwrap();
    assert_eq!(s.version(), 7);
    assert_eq!(s.servable_experiments(), 4);
}

#[test]
fn the_schema_lists_exactly_the_ops_the_loader_accepts() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/snapshot.schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut ops = Vec::new();
    for rule in schema["$defs"]["rule"]["oneOf"].as_array().unwrap() {
        let op = &rule["properties"]["op"];
        if let Some(list) = op["enum"].as_array() {
            ops.extend(list.iter().map(|v| v.as_str().unwrap().to_owned()));
        }
        if let Some(one) = op["const"].as_str() {
            ops.push(one.to_owned());
        }
    }
    assert_eq!(ops.len(), 15, "{ops:?}");
    for op in &ops {
        let condition = match op.as_str() {
            "in" | "not_in" => json!({"attr": "a", "op": op, "values": ["1.0.0"]}),
            "exists" => json!({"attr": "a", "op": op}),
            _ => json!({"attr": "a", "op": op, "value": "1.0.0"}),
        };
        let s = snap(vec![exp("a", json!({"targeting": condition}))]);
        assert!(CompiledSnapshot::from_json(&s.to_string()).is_ok(), "{op}");
    }
}
