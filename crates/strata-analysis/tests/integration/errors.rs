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
