//! The whole `strata analyze` path on the committed example: YAML and JSON
//! documents agree, JSON and table rendering, `--looks` as an array.

use strata_analysis::{run_request, EngineOptions, OutputFormat, Request};

fn request(spec: &str, metrics: &str, format: OutputFormat) -> Request {
    let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/analysis");
    Request {
        spec: format!("{ex}/{spec}"),
        metrics: format!("{ex}/{metrics}"),
        exposures: format!("{ex}/data/exposures"),
        events: format!("{ex}/data/events"),
        as_of: None,
        looks: None,
        format,
        options: EngineOptions::default(),
    }
}

#[test]
fn example_runs_in_json_yaml_and_table() {
    let json = run_request(&request(
        "experiment.json",
        "metrics.json",
        OutputFormat::Json,
    ))
    .unwrap();
    let yaml = run_request(&request(
        "experiment.yaml",
        "metrics.yaml",
        OutputFormat::Json,
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // Parallel aggregation merges partial sums in varying order: equal to rounding.
    super::common::assert_same(&v, &serde_json::from_str(&yaml).unwrap(), "yaml");
    let units = &v["units"];
    assert_eq!(
        units["control"].as_u64().unwrap() + units["treatment"].as_u64().unwrap(),
        2000
    );
    assert_eq!(v["metrics"].as_array().unwrap().len(), 5);
    assert!(v["metrics"][0]["effects"][0]["cuped"]["theta"].is_number());

    let table = run_request(&request(
        "experiment.yaml",
        "metrics.yaml",
        OutputFormat::Table,
    ))
    .unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with(
        "experiment exp_checkout_v2 (itt), data from 2026-01-01T00:00:00Z to 2026-01-15T00:00:00Z"
    ));
    let header = lines
        .iter()
        .position(|l| l.starts_with("| metric "))
        .unwrap();
    assert!(
        lines[header + 2].starts_with("| conversion    | primary   | treatment |"),
        "{table}"
    );
    assert!(
        lines[header + 6].starts_with("| page_load_p95 | guardrail | treatment |"),
        "{table}"
    );

    let mut looks = request("experiment.json", "metrics.json", OutputFormat::Json);
    looks.looks = Some("2026-01-05T00:00:00Z, 2026-01-10T00:00:00Z".into());
    let v: serde_json::Value = serde_json::from_str(&run_request(&looks).unwrap()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["as_of"], "2026-01-10T00:00:00Z");
    looks.as_of = Some("2026-01-10T00:00:00Z".into());
    assert!(run_request(&looks)
        .unwrap_err()
        .to_string()
        .contains("either --as-of or --looks"));
}
