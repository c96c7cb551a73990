//! Compaction of sealed log segments into partitioned Parquet
//! (`compact::compact_range`): read, checksum and decode the frames, group
//! by (kind, date, partition), sort, build Arrow columns, write Parquet.
//! Events like those of `bench/ingest` (about 500 bytes as JSON, six
//! properties), 44 MiB of segments per compaction (the store compacts up to
//! 64 MiB at a time), read into fresh buffers or into buffers kept from the
//! previous iteration as the background compactor does. The peer is reading
//! and checksumming the same segments without decoding them (frame headers
//! and CRC), the floor any compactor pays.

// criterion_main! generates an undocumented `main`.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strata_pipeline::compact::{compact_range, compact_range_with, Layout, SegmentBuffers};
use strata_pipeline::log::{encode_frame, segment_path, ActiveSegment};
use strata_pipeline::parquet::DEFAULT_ROW_GROUP_ROWS;
use strata_pipeline::partition::DEFAULT_PARTITIONS;
use strata_pipeline::{Event, Record};

const SEGMENTS: u64 = 8;
const PER_SEGMENT: u64 = 25_000;

fn event(i: u64) -> Record {
    let mut properties = BTreeMap::new();
    for (k, v) in [
        ("country", "DE".to_string()),
        ("platform", "web".to_string()),
        ("plan", "pro".to_string()),
        (
            "path",
            format!("/products/category-{}/item-{}", i % 50, i % 9973),
        ),
        (
            "referrer",
            "https://www.example.com/search?q=shoes".to_string(),
        ),
        (
            "session",
            format!("sess-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        ),
    ] {
        properties.insert(k.to_string(), v);
    }
    Record::Event(Event {
        event_id: format!(
            "{:032x}",
            u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        ),
        unit_id: format!("user-{:08}", i.wrapping_mul(7919) % 1_000_000),
        event_type: ["page_view", "click", "purchase"][(i % 3) as usize].into(),
        ts: 1_768_003_200_000_000 + (i as i64) * 3,
        received_at: 1_768_003_200_000_000 + (i as i64) * 3,
        value: (i % 3 == 2).then_some(12.5),
        properties,
        is_bot: false,
        opted_out: false,
    })
}

/// Writes the segments once; each iteration copies them back.
fn source(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for id in 1..=SEGMENTS {
        let mut seg = ActiveSegment::create(dir, id).unwrap_or_else(|e| panic!("{e}"));
        let mut frames = Vec::new();
        for i in (id - 1) * PER_SEGMENT..id * PER_SEGMENT {
            encode_frame(&event(i), &mut frames);
        }
        seg.append_durable(&frames)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let bytes = std::fs::read(segment_path(dir, id)).unwrap_or_else(|e| panic!("{e}"));
        out.push((id, bytes));
    }
    out
}

/// A fresh data directory holding `segments` in its log, for one iteration.
fn data_dir(segments: &[(u64, Vec<u8>)]) -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let layout = Layout::new(dir.path());
    layout.create().unwrap_or_else(|e| panic!("{e}"));
    for (id, b) in segments {
        std::fs::write(segment_path(&layout.log, *id), b).unwrap_or_else(|e| panic!("{e}"));
    }
    (dir, layout)
}

fn bench(c: &mut Criterion) {
    let src_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let segments = source(src_dir.path());
    let bytes: usize = segments.iter().map(|(_, b)| b.len()).sum();
    let ids: Vec<u64> = segments.iter().map(|(id, _)| *id).collect();
    eprintln!(
        "{} events in {} segments, {:.1} MiB",
        SEGMENTS * PER_SEGMENT,
        SEGMENTS,
        bytes as f64 / (1 << 20) as f64
    );
    let mut g = c.benchmark_group("compact");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SEGMENTS * PER_SEGMENT));
    g.bench_function("compact_range_200k_events", |b| {
        b.iter_batched(
            || data_dir(&segments),
            |(dir, layout)| {
                let r = compact_range(&layout, &ids, DEFAULT_PARTITIONS, DEFAULT_ROW_GROUP_ROWS)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(r.events, SEGMENTS * PER_SEGMENT);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    let mut kept = SegmentBuffers::default();
    g.bench_function("compact_range_200k_events_kept_buffers", |b| {
        b.iter_batched(
            || data_dir(&segments),
            |(dir, layout)| {
                let r = compact_range_with(
                    &layout,
                    &ids,
                    DEFAULT_PARTITIONS,
                    DEFAULT_ROW_GROUP_ROWS,
                    &mut kept,
                )
                .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(r.events, SEGMENTS * PER_SEGMENT);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("peer_read_and_checksum", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for (id, _) in &segments {
                let bytes = std::fs::read(segment_path(src_dir.path(), *id))
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut pos = strata_pipeline::log::HEADER_LEN as usize;
                while pos + 8 <= bytes.len() {
                    let len = u32::from_le_bytes([
                        bytes[pos],
                        bytes[pos + 1],
                        bytes[pos + 2],
                        bytes[pos + 3],
                    ]) as usize;
                    std::hint::black_box(crc32fast::hash(&bytes[pos + 8..pos + 8 + len]));
                    pos += 8 + len;
                    n += 1;
                }
            }
            assert_eq!(n as u64, SEGMENTS * PER_SEGMENT);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
