//! The results document follows `docs/results.schema.json`: required keys are
//! present and no undeclared key appears (objects with closed properties).

use serde_json::Value;

use super::common::*;

fn check(value: &Value, schema: &Value, defs: &Value, path: &str) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &defs[r.trim_start_matches("#/$defs/")],
        None => schema,
    };
    if let Some(alts) = schema.get("oneOf").and_then(Value::as_array) {
        if value.is_null() {
            return;
        }
        let obj = alts
            .iter()
            .find(|a| a.get("type") == Some(&Value::from("object")))
            .unwrap();
        return check(value, obj, defs, path);
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert!(
                obj.contains_key(req.as_str().unwrap()),
                "{path}: missing `{req}`"
            );
        }
        for (k, v) in obj {
            let sub = props
                .get(k)
                .unwrap_or_else(|| panic!("{path}: undeclared key `{k}`"));
            check(v, sub, defs, &format!("{path}.{k}"));
        }
    } else if let (Some(sub), Some(obj)) = (
        schema.get("additionalProperties").filter(|s| s.is_object()),
        value.as_object(),
    ) {
        for (k, v) in obj {
            check(v, sub, defs, &format!("{path}.{k}"));
        }
    } else if let (Some(items), Some(arr)) = (
        schema.get("items").filter(|s| s.is_object()),
        value.as_array(),
    ) {
        for (i, v) in arr.iter().enumerate() {
            check(v, items, defs, &format!("{path}[{i}]"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        assert!(
            options.contains(value),
            "{path}: {value} not in {options:?}"
        );
    }
}

#[test]
fn results_follow_the_json_schema() {
    let schema: Value =
        serde_json::from_str(include_str!("../../../../docs/results.schema.json")).unwrap();
    let defs = schema["$defs"].clone();
    for extra in [
        r#", "cuped": {"pre_period_days": 7}, "segments": ["country"]"#,
        r#", "sequential": "always_valid", "planned_units": 100, "analysis": "per_protocol""#,
    ] {
        let r = analyze(extra);
        check(&serde_json::to_value(&r).unwrap(), &schema, &defs, "$");
    }
}

#[test]
fn a_document_round_trips_through_the_model_types() {
    // The control plane reads published documents with strata-model's types
    // (and stores them as sent): every field this engine writes must come
    // back. serde_json's default float parser may differ from the written
    // decimal in the last bit, so numbers compare to a relative 1e-15.
    for extra in [
        r#", "cuped": {"pre_period_days": 7}, "segments": ["country"]"#,
        r#", "sequential": "always_valid", "planned_units": 100, "analysis": "per_protocol""#,
    ] {
        let written = serde_json::to_value(analyze(extra)).unwrap();
        let read: strata_model::results::Results =
            serde_json::from_str(&written.to_string()).unwrap();
        let back = serde_json::to_value(&read).unwrap();
        if let Err(at) = same(&written, &back, "$") {
            panic!("the document changed at {at}:\n{written}\n{back}");
        }
    }
}

/// Equal documents, numbers within a relative 1e-15; else the first path
/// where they differ.
fn same(a: &Value, b: &Value, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs()) {
                Ok(())
            } else {
                Err(format!("{path}: {x} vs {y}"))
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .try_for_each(|(i, (x, y))| same(x, y, &format!("{path}[{i}]"))),
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
            x.iter().try_for_each(|(k, v)| {
                let w = y.get(k).ok_or_else(|| format!("{path}.{k}: missing"))?;
                same(v, w, &format!("{path}.{k}"))
            })
        }
        _ if a == b => Ok(()),
        _ => Err(format!("{path}: {a} vs {b}")),
    }
}
