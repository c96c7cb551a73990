//! NDJSON, CSV and Parquet inputs (files, directories with Hive partitions,
//! globs) give identical results.

use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{JsonReadOptions, SessionContext};

use super::common::*;

fn json(r: &strata_analysis::Results) -> serde_json::Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn ndjson_csv_and_parquet_agree() {
    let f = Fixture::new();
    let spec = spec_json(r#", "cuped": {"pre_period_days": 7}, "segments": ["country"]"#);
    let base = analyze_with(
        METRICS,
        &spec,
        &f.path("exposures.ndjson"),
        &f.path("events.ndjson"),
        None,
    )
    .unwrap();
    let csv = analyze_with(
        METRICS,
        &spec,
        &f.path("exposures.csv"),
        &f.path("events.csv"),
        None,
    )
    .unwrap();
    assert_same(&json(&base), &json(&csv), "csv");

    // Parquet: events as a directory of files with real timestamps, exposures
    // Hive-partitioned by experiment (the column lives only in the path).
    rt().block_on(async {
        let ctx = SessionContext::new();
        let ev = ctx
            .read_json(
                f.path("events.ndjson").to_str().unwrap(),
                JsonReadOptions::default().file_extension(".ndjson"),
            )
            .await
            .unwrap();
        ctx.register_table("ev", ev.into_view()).unwrap();
        ctx.sql("SELECT event_id, unit_id, type, CAST(ts AS TIMESTAMP) AS ts, value, is_bot, properties FROM ev")
            .await
            .unwrap()
            .write_parquet(
                f.path("events_pq").to_str().unwrap(),
                DataFrameWriteOptions::new(),
                None,
            )
            .await
            .unwrap();
        let ex = ctx
            .read_json(
                f.path("exposures.ndjson").to_str().unwrap(),
                JsonReadOptions::default().file_extension(".ndjson"),
            )
            .await
            .unwrap();
        ex.write_parquet(
            f.path("exposures_pq").to_str().unwrap(),
            DataFrameWriteOptions::new().with_partition_by(vec!["experiment".into()]),
            None,
        )
        .await
        .unwrap();
    });
    assert!(f.path("exposures_pq/experiment=exp").is_dir());
    let pq = analyze_with(
        METRICS,
        &spec,
        &f.path("exposures_pq"),
        &f.path("events_pq"),
        None,
    )
    .unwrap();
    assert_same(&json(&base), &json(&pq), "parquet");
    let glob = f.path("events_pq").join("*.parquet");
    let pq_glob = analyze_with(METRICS, &spec, &f.path("exposures_pq"), &glob, None).unwrap();
    assert_same(&json(&base), &json(&pq_glob), "glob");
}
