//! The simulator's data sets (`strata_sim::dataset`) are what strata-pipeline
//! writes, so tests and benchmarks on generated data measure the pipeline's
//! files, and their segments are read as the pipeline's are (from the
//! `attributes` map).

use std::collections::BTreeMap;
use std::fs::File;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use strata_analysis::EngineOptions;
use strata_sim::dataset::write_parquet;
use strata_sim::population::User;

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
fn data_sets_have_the_pipeline_schema() {
    let exposures = strata_pipeline::parquet::exposure_schema();
    let events = strata_pipeline::parquet::event_schema();
    // What the files hold, as a reader sees it.
    let f = Fixture::new();
    write_parquet(&dataset(50, 1.0, 0.0, 1), &f.path("gen"), 1).unwrap();
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
    let cfg = dataset(400, 1.0, 0.0, 1);
    let f = Fixture::new();
    write_parquet(&cfg, &f.path("gen"), 2).unwrap();
    let spec = r#"{"key": "exp", "control": "control",
        "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}],
        "start": "2026-01-01T00:00:00Z", "end": "2026-01-15T00:00:00Z",
        "primary": "conversion", "segments": ["country", "plan"]}"#;
    let (r, _) = run_options(
        METRICS,
        spec,
        &f.path("gen/exposures").display().to_string(),
        &f.path("gen/events").display().to_string(),
        EngineOptions::default(),
    );
    // Every unit is in the segment of its simulated user's attribute.
    let population = cfg.population();
    type Attribute = fn(&User) -> String;
    let attributes: [(&str, Attribute); 2] = [
        ("country", |u| u.country.to_owned()),
        ("plan", |u| u.plan.as_str().to_owned()),
    ];
    for (attribute, of) in attributes {
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for i in 0..cfg.units {
            *expected.entry(of(&population.user(i))).or_default() += 1;
        }
        let got: BTreeMap<String, u64> = r.segments[attribute]
            .values
            .iter()
            .map(|(value, m)| (value.clone(), m["conversion"].values().map(|v| v.n).sum()))
            .collect();
        assert_eq!(got, expected, "{attribute}");
    }
}
