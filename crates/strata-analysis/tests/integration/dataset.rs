//! The test-data generator writes exactly what strata-pipeline writes, so
//! tests and benchmarks on generated data measure the pipeline's layout, and
//! its segments are read as the pipeline's are (from the `attributes` map).

use std::fs::File;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use strata_analysis::testkit::{self, write_parquet, GenConfig};
use strata_analysis::EngineOptions;

use super::common::*;

/// Field by field, so a difference names the column.
fn assert_same_schema(what: &str, got: &SchemaRef, pipeline: &SchemaRef) {
    let names = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(got), names(pipeline), "{what}: columns");
    for (g, p) in got.fields().iter().zip(pipeline.fields()) {
        assert_eq!(
            g.data_type(),
            p.data_type(),
            "{what}: type of `{}`",
            p.name()
        );
        assert_eq!(
            g.is_nullable(),
            p.is_nullable(),
            "{what}: nullability of `{}`",
            p.name()
        );
    }
    assert_eq!(got, pipeline, "{what}: metadata");
}

fn file_schema(path: &std::path::Path) -> SchemaRef {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .schema()
        .clone()
}

#[test]
fn generator_writes_the_pipeline_schema() {
    let exposures = strata_pipeline::parquet::exposure_schema();
    let events = strata_pipeline::parquet::event_schema();
    assert_same_schema("exposures", &testkit::exposure_schema(), &exposures);
    assert_same_schema("events", &testkit::event_schema(), &events);

    // What the files hold, as a reader sees it.
    let f = Fixture::new();
    let cfg = GenConfig {
        units: 50,
        events_per_unit: 4.0,
        ..GenConfig::default()
    };
    write_parquet(&cfg, "exp", &f.path("gen"), 1).unwrap();
    assert_same_schema(
        "exposure file",
        &file_schema(&f.path("gen/exposures/part=00/data.parquet")),
        &exposures,
    );
    assert_same_schema(
        "event file",
        &file_schema(&f.path("gen/events/part=00/data.parquet")),
        &events,
    );
}

#[test]
fn segments_of_generated_data_come_from_attributes() {
    let cfg = GenConfig {
        units: 400,
        events_per_unit: 5.0,
        ..GenConfig::default()
    };
    let f = Fixture::new();
    write_parquet(&cfg, "exp", &f.path("gen"), 2).unwrap();
    let spec = r#"{"key": "exp", "control": "control",
        "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}],
        "start": "2026-01-01T00:00:00Z", "end": "2026-01-15T00:00:00Z",
        "primary": "conversion", "segments": ["country"]}"#;
    let (r, _) = run_options(
        METRICS,
        spec,
        &f.path("gen/exposures").display().to_string(),
        &f.path("gen/events").display().to_string(),
        EngineOptions::default(),
    );
    let values = &r.segments["country"].values;
    assert_eq!(
        values.keys().map(String::as_str).collect::<Vec<_>>(),
        ["BR", "DE", "JP", "US"]
    );
    // Units cycle through the four countries.
    let n: u64 = values
        .values()
        .map(|m| m["conversion"].values().map(|v| v.n).sum::<u64>())
        .sum();
    assert_eq!(n, 400);
}
