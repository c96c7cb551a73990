//! Bad inputs give clear errors naming the file, line/column or field.

use super::common::*;

fn err(metrics: &str, spec: &str, exposures: &str, events: &str) -> String {
    let f = Fixture::new();
    std::fs::write(f.path("x.ndjson"), exposures).unwrap();
    std::fs::write(f.path("e.ndjson"), events).unwrap();
    analyze_with(
        metrics,
        spec,
        &f.path("x.ndjson"),
        &f.path("e.ndjson"),
        None,
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn missing_column_is_named() {
    let e = err(
        METRICS,
        &spec_json(""),
        &EXPOSURES.replace("\"variant\"", "\"arm\""),
        EVENTS,
    );
    assert!(
        e.contains("exposures input") && e.contains("missing required column `variant`"),
        "{e}"
    );
}

#[test]
fn bad_timestamp_names_file_and_line() {
    let events = EVENTS.replace(
        "2026-01-12T00:00:00Z\",\"value\":5.0",
        "yesterday\",\"value\":5.0",
    );
    let e = err(METRICS, &spec_json(""), EXPOSURES, &events);
    assert!(
        e.contains("e.ndjson line 3") && e.contains("`yesterday` is not an RFC 3339 timestamp"),
        "{e}"
    );
}

#[test]
fn unknown_metric_and_variant_name_the_field() {
    let e = err(
        METRICS,
        &spec_json("").replace("\"primary\": \"conversion\"", "\"primary\": \"nope\""),
        EXPOSURES,
        EVENTS,
    );
    assert!(e.contains("field `primary`: unknown metric `nope`"), "{e}");
    let e = err(
        METRICS,
        &spec_json("").replace("\"control\": \"control\"", "\"control\": \"ctrl\""),
        EXPOSURES,
        EVENTS,
    );
    assert!(e.contains("field `control`: unknown variant `ctrl`"), "{e}");
}

#[test]
fn parse_errors_have_line_and_column() {
    let e = err(
        "{\"metrics\": [\n {\"key\": \"a\", \"type\": \"binomal\"}]}",
        &spec_json(""),
        EXPOSURES,
        EVENTS,
    );
    assert!(e.starts_with("metrics.json: line 2 column"), "{e}");
    assert!(e.contains("unknown variant `binomal`"), "{e}");
    let yaml = strata_analysis::MetricRegistry::from_str_named(
        "metrics:\n  - key: a\n    type: count\n    filtr: {}\n",
        std::path::Path::new("m.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        yaml.starts_with("m.yaml: line 4 column 5: metrics[0]")
            && yaml.contains("unknown field `filtr`"),
        "{yaml}"
    );
}

#[test]
fn invalid_metric_definitions_are_rejected() {
    for (doc, field) in [
        (
            r#"{"metrics": [{"key": "r", "type": "ratio", "numerator": {"type": "sum"}}]}"#,
            "metrics[0].denominator",
        ),
        (
            r#"{"metrics": [{"key": "q", "type": "quantile"}]}"#,
            "metrics[0].quantile",
        ),
        (
            r#"{"metrics": [{"key": "c", "type": "count"}, {"key": "c", "type": "sum"}]}"#,
            "metrics[1].key",
        ),
        (
            r#"{"metrics": [{"key": "c", "type": "count", "filter": {"value": {"gt": "x"}}}]}"#,
            "metrics[0].filter.value",
        ),
        (
            r#"{"metrics": [{"key": "b", "type": "binomial", "winsorize": 0.99}]}"#,
            "metrics[0].winsorize",
        ),
    ] {
        let e =
            strata_analysis::MetricRegistry::from_str_named(doc, std::path::Path::new("m.json"))
                .unwrap_err()
                .to_string();
        assert!(e.contains(&format!("field `{field}`")), "{e}");
    }
}

#[test]
fn missing_property_and_file_are_reported() {
    let e = err(
        METRICS,
        &spec_json(""),
        EXPOSURES,
        &EVENTS
            .replace("\"properties\":{\"country\":\"US\"}", "\"p\":1")
            .replace(",\"properties\":{\"country\":\"DE\"}", ""),
    );
    assert!(
        e.contains("events input") && e.contains("property `country`"),
        "{e}"
    );
    let f = Fixture::new();
    let e = analyze_with(
        METRICS,
        &spec_json(""),
        &f.path("nope.parquet"),
        &f.path("events.ndjson"),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("exposures input") && e.contains("nope.parquet"),
        "{e}"
    );
}

/// Runs the fixture with `spec`, `exposures` and the fixture's events, as of `as_of`.
fn run_names(
    spec: &str,
    exposures: &str,
    as_of: Option<&str>,
) -> (Fixture, strata_analysis::Result<strata_analysis::Results>) {
    let f = Fixture::new();
    std::fs::write(f.path("x.ndjson"), exposures).unwrap();
    let r = analyze_with(
        METRICS,
        spec,
        &f.path("x.ndjson"),
        &f.path("events.ndjson"),
        as_of,
    );
    (f, r)
}

#[test]
fn wrong_experiment_key_names_the_experiments_of_the_data() {
    let spec = spec_json("").replace("\"key\": \"exp\"", "\"key\": \"exp_x\"");
    let (f, r) = run_names(&spec, EXPOSURES, None);
    let e = r.unwrap_err();
    assert!(
        matches!(e, strata_analysis::Error::NoExposures { .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "no exposures of experiment \"exp_x\" in {}; the data holds experiments \"exp\", \"other\"",
            f.path("x.ndjson").display()
        )
    );
}

#[test]
fn wrong_variant_keys_name_the_variants_of_the_data() {
    let spec = spec_json("")
        .replace("\"control\": \"control\"", "\"control\": \"a\"")
        .replace("{\"key\": \"control\"", "{\"key\": \"a\"")
        .replace("{\"key\": \"treatment\"", "{\"key\": \"b\"");
    let (_, r) = run_names(&spec, EXPOSURES, None);
    let e = r.unwrap_err();
    assert!(
        matches!(e, strata_analysis::Error::UnknownVariants { .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "variants \"a\", \"b\" of the spec are not in the data of experiment \"exp\"; it holds \"control\", \"treatment\""
    );
    // One misspelt variant while the data holds one the spec lacks.
    let spec = spec_json("").replace("{\"key\": \"treatment\"", "{\"key\": \"treatmnet\"");
    let (_, r) = run_names(&spec, EXPOSURES, None);
    assert_eq!(
        r.unwrap_err().to_string(),
        "variant \"treatmnet\" of the spec is not in the data of experiment \"exp\"; it holds \"control\", \"treatment\""
    );
}

#[test]
fn variants_without_units_are_not_errors() {
    // A variant with no exposures at all, and nothing the spec lacks: a
    // small experiment, not a misspelling.
    let control_only: String = EXPOSURES
        .lines()
        .filter(|l| !l.contains("treatment"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (_, r) = run_names(&spec_json(""), &control_only, None);
    let r = r.unwrap();
    assert_eq!(r.units["treatment"], 0);
    assert!(r.units["control"] > 0);
    // An early look before any exposure: the names match the whole data.
    let (_, r) = run_names(&spec_json(""), EXPOSURES, Some("2026-01-10T00:00:00Z"));
    let r = r.unwrap();
    assert!(r.units.values().all(|&n| n == 0));
    // Data with a variant the spec lacks, all the spec's variants present:
    // left out with the `unknown_variant_units` warning, as before.
    let extra = format!(
        "{EXPOSURES}{}\n",
        r#"{"unit_id":"u9","experiment":"exp","variant":"legacy","ts":"2026-01-11T00:00:00Z","country":"US"}"#
    );
    let (_, r) = run_names(&spec_json(""), &extra, None);
    let r = r.unwrap();
    let w = r
        .warnings
        .iter()
        .find(|w| w.code == "unknown_variant_units")
        .unwrap();
    assert_eq!(w.count, Some(1));
}
