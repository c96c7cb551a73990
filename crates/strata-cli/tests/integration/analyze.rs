//! `strata analyze` end to end on the example data set.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/analysis")
        .join(rel)
}

fn analyze(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("analyze")
        .arg("--spec")
        .arg(example("experiment.yaml"))
        .arg("--metrics")
        .arg(example("metrics.yaml"))
        .arg("--exposures")
        .arg(example("data/exposures"))
        .arg("--events")
        .arg(example("data/events"))
        .args(extra)
        .output()
        .expect("run strata")
}

#[test]
fn analyze_prints_the_results_document() {
    let out = analyze(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["experiment"], "exp_checkout_v2");
    let units = doc["units"].as_object().expect("units");
    assert_eq!(units.len(), 2);
    assert!(units.values().all(|n| n.as_u64().is_some_and(|n| n > 0)));
    let metrics = doc["metrics"].as_array().expect("metrics");
    let primary = metrics
        .iter()
        .find(|m| m["role"] == "primary")
        .expect("primary");
    assert_eq!(primary["metric"], "conversion");
    assert!(primary["effects"][0]["p_value"].is_number());
    assert!(doc["srm"]["p_value"].is_number());
}

#[test]
fn analyze_table_and_bad_input() {
    let out = analyze(&["--format", "table"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("conversion"));

    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["analyze", "--spec", "missing.yaml", "--metrics"])
        .arg(example("metrics.yaml"))
        .args(["--exposures", "x", "--events", "y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("missing.yaml"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn analyze_of_an_experiment_not_in_the_data_fails() {
    let dir = tempfile::tempdir().unwrap();
    let spec = std::fs::read_to_string(example("experiment.yaml"))
        .unwrap()
        .replace("key: exp_checkout_v2", "key: exp_x");
    let spec_path = dir.path().join("experiment.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("analyze")
        .arg("--spec")
        .arg(&spec_path)
        .arg("--metrics")
        .arg(example("metrics.yaml"))
        .arg("--exposures")
        .arg(example("data/exposures"))
        .arg("--events")
        .arg(example("data/events"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no exposures of experiment \"exp_x\" in ")
            && stderr.contains("the data holds experiments \"exp_checkout_v2\""),
        "{stderr}"
    );
}

#[test]
fn analyze_resolves_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(
        p("metrics.json"),
        r#"{"metrics": [{"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}]}"#,
    )
    .unwrap();
    std::fs::write(
        p("spec.json"),
        r#"{"key": "exp", "control": "control",
            "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}],
            "start": "2026-01-10T00:00:00Z", "end": "2026-01-20T00:00:00Z", "primary": "conversion"}"#,
    )
    .unwrap();
    // anon-1 signs in as user-1 and buys under it.
    std::fs::write(
        p("exposures.ndjson"),
        r#"{"unit_id":"anon-1","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"anon-2","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z"}
"#,
    )
    .unwrap();
    std::fs::write(
        p("events.ndjson"),
        r#"{"event_id":"e1","unit_id":"user-1","type":"purchase","ts":"2026-01-12T00:00:00Z"}
"#,
    )
    .unwrap();
    std::fs::write(
        p("aliases.ndjson"),
        r#"{"anonymous_id":"anon-1","user_id":"user-1","ts":"2026-01-11T01:00:00Z"}
"#,
    )
    .unwrap();
    let run = |aliases: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.arg("analyze");
        for (flag, file) in [
            ("--spec", "spec.json"),
            ("--metrics", "metrics.json"),
            ("--exposures", "exposures.ndjson"),
            ("--events", "events.ndjson"),
        ]
        .into_iter()
        .chain(aliases.map(|a| ("--aliases", a)))
        {
            cmd.arg(flag).arg(p(file));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success() == (aliases != Some("missing.ndjson")),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let control_conversion = |out: std::process::Output| {
        let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
        let primary = &doc["metrics"][0];
        assert_eq!(primary["metric"], "conversion");
        primary["variants"]["control"]["mean"].as_f64().unwrap()
    };
    assert_eq!(control_conversion(run(Some("aliases.ndjson"))), 1.0);
    assert_eq!(control_conversion(run(None)), 0.0);
    let stderr = String::from_utf8_lossy(&run(Some("missing.ndjson")).stderr).to_string();
    assert!(
        stderr.contains("aliases input") && stderr.contains("missing.ndjson"),
        "{stderr}"
    );
}
