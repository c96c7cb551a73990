//! Shared helpers: record builders, a store with manual compaction, row
//! counts of the Parquet output.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata_pipeline::parquet::{list_parquet_files, read_file, string_column};
use strata_pipeline::{Alias, Event, Exposure, LocalStore, Record, StoreOptions};

/// 2026-01-10T00:00:00Z in µs.
pub const DAY0: i64 = 1_768_003_200_000_000;
pub const HOUR: i64 = 3_600_000_000;
pub const DAY: i64 = 24 * HOUR;

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

pub fn event(id: &str, unit: &str, ty: &str, ts: i64, value: Option<f64>) -> Record {
    let mut properties = BTreeMap::new();
    properties.insert("page".to_string(), format!("/checkout/{id}"));
    Record::Event(Event {
        event_id: id.into(),
        unit_id: unit.into(),
        event_type: ty.into(),
        ts,
        received_at: now_micros(),
        value,
        properties,
        is_bot: false,
        opted_out: false,
    })
}

pub fn exposure(unit: &str, exp: &str, variant: &str, ts: i64) -> Record {
    let mut attributes = BTreeMap::new();
    attributes.insert("country".to_string(), "DE".to_string());
    Record::Exposure(Exposure {
        unit_id: unit.into(),
        experiment: exp.into(),
        variant: variant.into(),
        assigned_variant: variant.into(),
        opted_out: false,
        ts,
        received_at: now_micros(),
        attributes,
        is_bot: false,
    })
}

pub fn alias(anonymous_id: &str, user_id: &str, ts: i64) -> Record {
    Record::Alias(Alias {
        anonymous_id: anonymous_id.into(),
        user_id: user_id.into(),
        ts,
        received_at: now_micros(),
    })
}

/// Options for tests: no background compactor, small segments.
pub fn manual() -> StoreOptions {
    StoreOptions {
        background_compaction: false,
        segment_bytes: 64 * 1024,
        ..StoreOptions::default()
    }
}

pub async fn open(dir: &Path) -> Arc<LocalStore> {
    LocalStore::open(dir, manual()).await.unwrap()
}

/// Rows of every Parquet file under `dir`.
pub fn rows(dir: &Path) -> usize {
    list_parquet_files(dir)
        .unwrap()
        .iter()
        .map(|f| {
            read_file(f)
                .unwrap()
                .1
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        })
        .sum()
}

/// The values of a string column over every Parquet file under `dir`.
pub fn column(dir: &Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in list_parquet_files(dir).unwrap() {
        for b in read_file(&f).unwrap().1 {
            out.extend(
                string_column(&b, name, &f)
                    .unwrap()
                    .iter()
                    .map(|v| v.unwrap().to_string()),
            );
        }
    }
    out.sort();
    out
}
