//! Append path of the segment log: `LocalStore::append` of 500-byte events
//! in batches of 500 from concurrent callers (encode, dedup, group commit,
//! fdatasync), against the peer `write` + `fdatasync` of the same bytes.

// criterion_main! generates an undocumented `main`.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata_pipeline::{Batch, Event, LocalStore, Record, Sink, StoreOptions};

const BATCH: usize = 500;
const CALLERS: usize = 64;

/// An event whose JSON form is about 500 bytes.
fn event(i: u64) -> Record {
    let mut properties = BTreeMap::new();
    properties.insert(
        "page".to_string(),
        format!("/products/category-{}/item-{}", i % 50, i % 9973),
    );
    properties.insert(
        "referrer".to_string(),
        "https://www.example.com/search?q=running+shoes&page=2".to_string(),
    );
    properties.insert("user_agent".to_string(), "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36".to_string());
    properties.insert("country".to_string(), "DE".to_string());
    properties.insert("platform".to_string(), "web".to_string());
    properties.insert(
        "session_id".to_string(),
        format!("sess-{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    );
    Record::Event(Event {
        event_id: format!(
            "{:032x}",
            u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        ),
        unit_id: format!("user-{:08}", i % 1_000_000),
        event_type: "page_view".into(),
        ts: 1_768_003_200_000_000 + i as i64,
        received_at: 1_768_003_200_000_000 + i as i64,
        value: Some(12.5),
        properties,
        is_bot: false,
        opted_out: false,
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let json_len = serde_json::to_vec(&event(1)).map(|v| v.len()).unwrap_or(0);
    let mut frame = Vec::new();
    strata_pipeline::log::encode_frame(&event(1), &mut frame);
    eprintln!(
        "event: {json_len} bytes as JSON, {} bytes as a log frame",
        frame.len()
    );

    let mut g = c.benchmark_group("log_append");
    g.throughput(Throughput::Elements((BATCH * CALLERS) as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));

    // LocalStore: CALLERS concurrent appends of BATCH fresh events per
    // iteration; the compactor is off so only the log is measured.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = rt
        .block_on(LocalStore::open(
            dir.path(),
            StoreOptions {
                background_compaction: false,
                segment_bytes: 256 << 20,
                ..StoreOptions::default()
            },
        ))
        .unwrap_or_else(|e| panic!("open: {e}"));
    let mut next = 0u64;
    g.bench_function("local_store_64x500", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batches: Vec<Vec<Record>> = (0..CALLERS)
                    .map(|_| {
                        let v = (next..next + BATCH as u64).map(event).collect();
                        next += BATCH as u64;
                        v
                    })
                    .collect();
                let start = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = batches
                        .into_iter()
                        .map(|batch| {
                            let s = Arc::clone(&store);
                            tokio::spawn(async move { s.append(Batch::from(batch)).await })
                        })
                        .collect();
                    for t in tasks {
                        let _ = t.await;
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    rt.block_on(store.shutdown());

    // Peer: the same frame bytes, one write + fdatasync per iteration.
    let mut bytes = Vec::new();
    for i in 0..(BATCH * CALLERS) as u64 {
        strata_pipeline::log::encode_frame(&event(i), &mut bytes);
    }
    let peer_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut f = std::fs::File::create(peer_dir.path().join("raw"))
        .unwrap_or_else(|e| panic!("create: {e}"));
    g.bench_function("raw_write_fdatasync", |b| {
        b.iter(|| {
            f.write_all(&bytes).unwrap_or_else(|e| panic!("write: {e}"));
            f.sync_data().unwrap_or_else(|e| panic!("sync: {e}"));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
