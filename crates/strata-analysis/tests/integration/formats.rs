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
    let base = from_ndjson(&f, &spec);
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

/// The analysis of `spec` over the fixture's NDJSON files: what every other
/// input must reproduce.
fn from_ndjson(f: &Fixture, spec: &str) -> strata_analysis::Results {
    analyze_with(
        METRICS,
        spec,
        &f.path("exposures.ndjson"),
        &f.path("events.ndjson"),
        None,
    )
    .unwrap()
}

/// The fixture's records as the pipeline's record types.
fn pipeline_records() -> Vec<strata_pipeline::record::Record> {
    use strata_pipeline::record::{Event, Exposure, Record};
    let us = |v: &serde_json::Value| {
        strata_analysis::spec::parse_time(v.as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for line in EXPOSURES.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        out.push(Record::Exposure(Exposure {
            unit_id: s(&v["unit_id"]),
            experiment: s(&v["experiment"]),
            variant: s(&v["variant"]),
            assigned_variant: v["assigned_variant"]
                .as_str()
                .map_or_else(|| s(&v["variant"]), str::to_string),
            opted_out: v["opted_out"].as_bool().unwrap_or(false),
            ts: us(&v["ts"]),
            received_at: us(&v["ts"]),
            attributes: [("country".to_string(), s(&v["country"]))].into(),
            is_bot: v["is_bot"].as_bool().unwrap_or(false),
        }));
    }
    for line in EVENTS.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        out.push(Record::Event(Event {
            event_id: s(&v["event_id"]),
            unit_id: s(&v["unit_id"]),
            event_type: s(&v["type"]),
            ts: us(&v["ts"]),
            received_at: us(&v["ts"]),
            value: v["value"].as_f64(),
            properties: v["properties"]
                .as_object()
                .map(|p| p.iter().map(|(k, x)| (k.clone(), s(x))).collect())
                .unwrap_or_default(),
            is_bot: v["is_bot"].as_bool().unwrap_or(false),
            opted_out: v["opted_out"].as_bool().unwrap_or(false),
        }));
    }
    out
}

#[test]
fn the_pipeline_parquet_root_reads_as_its_two_tables() {
    let f = Fixture::new();
    let spec = spec_json(r#", "segments": ["country"]"#);
    let base = from_ndjson(&f, &spec);
    let root = f.path("data/pipeline/parquet");
    strata_pipeline::parquet::write_records(
        &root,
        &pipeline_records(),
        &strata_pipeline::parquet::WriteOptions::new("seg-1-2"),
    )
    .unwrap();
    // The root for both inputs, and the kind= directories, agree with NDJSON.
    let from_root = analyze_with(METRICS, &spec, &root, &root, None).unwrap();
    assert_same(&json(&base), &json(&from_root), "");
    let from_kinds = analyze_with(
        METRICS,
        &spec,
        &root.join("kind=exposures"),
        &root.join("kind=events"),
        None,
    )
    .unwrap();
    assert_same(&json(&base), &json(&from_kinds), "");
    // An ancestor of the root is not guessed at: the error says what to pass.
    let data = f.path("data");
    let e = analyze_with(METRICS, &spec, &data, &root, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "exposures input {}: directory holds the pipeline's Parquet root {}; pass that root or its `kind=exposures` directory",
            data.display(),
            root.display()
        )
    );
}

/// A directory where the pipeline has written a merged file but not yet
/// deleted its inputs holds some rows twice: the analysis refuses it.
#[test]
fn a_merge_in_progress_is_not_read() {
    use strata_pipeline::parquet::{write_records, WriteOptions};
    let f = Fixture::new();
    let spec = spec_json("");
    let root = f.path("parquet");
    let records = pipeline_records();
    write_records(&root, &records, &WriteOptions::new("seg-1-4")).unwrap();
    let e = analyze_with(METRICS, &spec, &root, &root, None).map(|_| ());
    assert!(e.is_ok(), "{e:?}");
    write_records(&root, &records, &WriteOptions::new("seg-2-2")).unwrap();
    let e = analyze_with(METRICS, &spec, &root, &root, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the pipeline is merging small files in")
            && e.contains("run the analysis again"),
        "{e}"
    );
}

/// A bot's exposure and an opted-out event, stored by the pipeline beside
/// files written before those flags existed (no `is_bot` column among the
/// exposures, no `opted_out` among the events).
#[test]
fn bot_exposures_and_opted_out_events_are_honoured_beside_older_files() {
    use strata_pipeline::parquet::{list_parquet_files, write_records, WriteOptions};
    use strata_pipeline::record::{Event, Exposure, Record};
    let f = Fixture::new();
    let spec = spec_json(r#", "segments": ["country"]"#);
    let base = from_ndjson(&f, &spec);
    let root = f.path("parquet");
    // The fixture as older files: written by the pipeline, then rewritten
    // without the new column.
    let staged = f.path("staged");
    write_records(&staged, &pipeline_records(), &WriteOptions::new("seg-1-2")).unwrap();
    for file in list_parquet_files(&staged).unwrap() {
        let rel = file.strip_prefix(&staged).unwrap();
        let dropped = if rel.starts_with("kind=exposures") {
            "is_bot"
        } else {
            "opted_out"
        };
        let (schema, batches) = strata_pipeline::parquet::read_file(&file).unwrap();
        let keep: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| schema.field(i).name() != dropped)
            .collect();
        assert_eq!(keep.len(), schema.fields().len() - 1);
        let out = root.join(rel).with_file_name("old.parquet");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let projected = std::sync::Arc::new(schema.project(&keep).unwrap());
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&out).unwrap(),
            projected,
            None,
        )
        .unwrap();
        for b in &batches {
            w.write(&b.project(&keep).unwrap()).unwrap();
        }
        w.close().unwrap();
    }
    // New records: a bot exposed to treatment who then purchased, and a
    // non-metric event by u1 saying u1 had opted out.
    let ts = |t: &str| {
        strata_analysis::spec::parse_time(t)
            .unwrap()
            .timestamp_micros()
    };
    let new = vec![
        Record::Exposure(Exposure {
            unit_id: "u8".into(),
            experiment: "exp".into(),
            variant: "treatment".into(),
            assigned_variant: "treatment".into(),
            opted_out: false,
            ts: ts("2026-01-11T00:00:00Z"),
            received_at: ts("2026-01-11T00:00:00Z"),
            attributes: [("country".to_string(), "US".to_string())].into(),
            is_bot: true,
        }),
        Record::Event(Event {
            event_id: "e16".into(),
            unit_id: "u8".into(),
            event_type: "purchase".into(),
            ts: ts("2026-01-12T00:00:00Z"),
            received_at: ts("2026-01-12T00:00:00Z"),
            value: Some(1000.0),
            properties: Default::default(),
            is_bot: false,
            opted_out: false,
        }),
        Record::Event(Event {
            event_id: "e17".into(),
            unit_id: "u1".into(),
            event_type: "settings".into(),
            ts: ts("2026-01-11T00:00:00Z"),
            received_at: ts("2026-01-11T00:00:00Z"),
            value: None,
            properties: Default::default(),
            is_bot: false,
            opted_out: true,
        }),
    ];
    write_records(&root, &new, &WriteOptions::new("seg-3-3")).unwrap();
    assert!(list_parquet_files(&root).unwrap().len() >= 4);

    // Intent-to-treat: the bot is not a unit, so nothing changes.
    let itt = analyze_with(METRICS, &spec, &root, &root, None).unwrap();
    assert_same(&json(&base), &json(&itt), "");
    assert_eq!(itt.units["treatment"], 3);

    // Per-protocol: u1 is dropped for its opted-out event, as u5 is for its
    // opted-out exposure.
    let pp_spec = spec_json(r#", "segments": ["country"], "analysis": "per_protocol""#);
    let pp = analyze_with(METRICS, &pp_spec, &root, &root, None).unwrap();
    assert_eq!(pp.units["control"], 1);
    assert_eq!(pp.units["treatment"], 2);
    let opted = pp
        .warnings
        .iter()
        .find(|w| w.code == "opted_out_units_excluded")
        .unwrap();
    assert_eq!(opted.count, Some(2));
}
