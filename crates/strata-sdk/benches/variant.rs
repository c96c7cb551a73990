//! `Client::variant` on a warm client with a production-sized snapshot:
//! 3,000 running experiments across 30 layers and 50 surfaces (the snapshot
//! of strata-core's `evaluate` bench, plus one concluded experiment for a
//! baseline), a context with 10 attributes.
//!
//! Criterion measures:
//! - `variant/assigned_dedup_hit` — the steady state: the unit is in the
//!   experiment and was exposed earlier today, so nothing is buffered;
//! - `variant/not_in_layer_range` — a layered experiment most units miss;
//! - `variant/unknown_flag` — the lookup alone;
//! - `variant/new_exposure_logged` — a new unit each call: the exposure is
//!   deduplicated, built and buffered on the caller's thread (the buffer is
//!   full and drops its oldest record each time: the worst case);
//! - `variant/new_exposure_no_ingest_key` — the same without shipping;
//! - `variant/new_unit_rollout` — a new unit each call on a concluded copy
//!   of the same experiment (its winner rolled out: no exposure, and no
//!   ramp or variant hashing): the baseline, so that `new_exposure_logged`
//!   minus it bounds what exposure logging adds on the caller's thread;
//! - `engine/single_experiment` — strata-core evaluating the one-experiment
//!   snapshot the SDK evaluates for that flag, for the same new units.
//!
//! Then, printed: the per-call latency distribution (p50, p99) and the
//! throughput of 1, 2, 4 and 8 threads calling one client concurrently.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use serde_json::{json, Value};
use strata_sdk::{Client, Context};

const LAYERS: usize = 30;
const SURFACES: usize = 50;
const EXPERIMENTS: usize = 3000;
/// Experiments outside any layer; the rest are spread over the layers.
const UNLAYERED: usize = 1000;
/// Experiment 3: no layer, no targeting, full ramp: every unit not held out
/// is in it.
const FLAG_ASSIGNED: &str = "f3";
/// Experiment 1503: a narrow range of layer 3.
const FLAG_LAYERED: &str = "f5df";
/// A concluded copy of experiment 3, its winner rolled out.
const FLAG_ROLLOUT: &str = "f_rollout";

fn experiment(i: usize) -> Value {
    let per_layer = (EXPERIMENTS - UNLAYERED).div_ceil(LAYERS);
    let width = 1000 / per_layer;
    let mut e = json!({
        "key": format!("exp_{i:04}"), "flag": format!("f{i:x}"), "salt": format!("salt-{i:08x}"),
        "status": "running", "ramp_permille": if i % 10 == 0 { 500 } else { 1000 },
        "surfaces": [format!("surface_{}", i % SURFACES)],
        "targeting": match i % 4 {
            0 => json!({"attr": "country", "op": "in", "values": ["US", "CA", "GB", "DE"]}),
            1 => json!({"all": [{"attr": "platform", "op": "eq", "value": "ios"},
                                {"attr": "app_version", "op": "semver_gte", "value": "4.2.0"}]}),
            2 => json!({"any": [{"attr": "account_age_days", "op": "gte", "value": 30},
                                {"not": {"attr": "beta", "op": "exists"}}]}),
            _ => Value::Null,
        },
        "variants": [{"key": "control", "weight": 50}, {"key": "treatment_a", "weight": 25},
                     {"key": "treatment_b", "weight": 25}],
    });
    if i >= UNLAYERED {
        let j = i - UNLAYERED;
        let (layer, slot) = (j % LAYERS, j / LAYERS);
        e["layer"] = json!(format!("layer_{layer}"));
        e["range"] = json!([slot * width, (slot + 1) * width]);
    }
    e
}

fn layers() -> Vec<Value> {
    (0..LAYERS)
        .map(|l| json!({"key": format!("layer_{l}"), "salt": format!("ls-{l:04}")}))
        .collect()
}

fn snapshot_json() -> String {
    let mut experiments: Vec<Value> = (0..EXPERIMENTS).map(experiment).collect();
    let mut rollout = experiment(3);
    rollout["key"] = json!("exp_rollout");
    rollout["flag"] = json!(FLAG_ROLLOUT);
    rollout["salt"] = json!("salt-rollout");
    rollout["status"] = json!("concluded");
    rollout["winner"] = json!("treatment_a");
    experiments.push(rollout);
    json!({"version": 1, "holdout": {"salt": "holdout_v4", "permille": 20},
        "layers": layers(), "experiments": experiments})
    .to_string()
}

fn context(i: usize) -> Context {
    let Value::Object(attrs) = json!({
        "user_id": format!("user-{i:08}"), "device_id": format!("dev-{i:x}"), "country": "US",
        "platform": "ios", "app_version": "4.3.1", "account_age_days": 120, "locale": "en-US",
        "tier": "gold", "browser": "safari", "tenure_bucket": 3,
    }) else {
        unreachable!()
    };
    Context::from(attrs)
}

/// A warm client: bootstrapped, no control plane reachable (nothing
/// listens on port 9), so no background work competes with the caller.
fn client(rt: &tokio::runtime::Runtime, doc: &str, ingest: bool) -> Client {
    let _guard = rt.enter();
    let mut b = Client::builder("http://127.0.0.1:9", "sdk-key")
        .bootstrap_json(doc)
        .streaming(false)
        .poll_interval(Duration::from_secs(3600))
        .flush_interval(Duration::from_secs(3600))
        .retry_backoff(Duration::from_secs(3600), Duration::from_secs(3600));
    if ingest {
        b = b.ingest_key("ingest-key");
    }
    b.build().expect("client")
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, doc: &str) {
    let warm = client(rt, doc, true);
    let contexts: Vec<Context> = (0..1024).map(context).collect();
    // Expose every unit once, so the timed calls are dedup hits.
    for ctx in &contexts {
        warm.variant(ctx, FLAG_ASSIGNED, "control");
    }
    let mut i = 0;
    c.bench_function("variant/assigned_dedup_hit", |b| {
        b.iter(|| {
            i += 1;
            black_box(warm.variant(&contexts[i & 1023], black_box(FLAG_ASSIGNED), "control"))
        })
    });
    c.bench_function("variant/not_in_layer_range", |b| {
        b.iter(|| {
            i += 1;
            black_box(warm.variant(&contexts[i & 1023], black_box(FLAG_LAYERED), "control"))
        })
    });
    c.bench_function("variant/unknown_flag", |b| {
        b.iter(|| {
            i += 1;
            black_box(warm.variant(&contexts[i & 1023], black_box("no_such_flag"), "control"))
        })
    });

    let mut next = 1_000_000;
    let mut fresh = || {
        next += 1;
        context(next)
    };
    c.bench_function("variant/new_exposure_logged", |b| {
        b.iter_batched_ref(
            &mut fresh,
            |ctx| black_box(warm.variant(ctx, FLAG_ASSIGNED, "control")),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("variant/new_unit_rollout", |b| {
        b.iter_batched_ref(
            &mut fresh,
            |ctx| black_box(warm.variant(ctx, FLAG_ROLLOUT, "control")),
            BatchSize::SmallInput,
        )
    });
    let unshipped = client(rt, doc, false);
    c.bench_function("variant/new_exposure_no_ingest_key", |b| {
        b.iter_batched_ref(
            &mut fresh,
            |ctx| black_box(unshipped.variant(ctx, FLAG_ASSIGNED, "control")),
            BatchSize::SmallInput,
        )
    });
    // The one-experiment snapshot the SDK evaluates for FLAG_ASSIGNED.
    let alone = json!({"version": 1, "holdout": {"salt": "holdout_v4", "permille": 20},
        "layers": [], "experiments": [experiment(3)]});
    let single = strata_core::CompiledSnapshot::from_json(&alone.to_string()).expect("valid");
    c.bench_function("engine/single_experiment", |b| {
        b.iter_batched_ref(
            &mut fresh,
            |ctx| {
                let mut out = Vec::new();
                single.evaluate_into(ctx, None, &mut out);
                black_box(out.first().map(|a| a.variant.len()))
            },
            BatchSize::SmallInput,
        )
    });
    eprintln!(
        "buffered {}, dropped {} (full buffer), deduplicated {}",
        warm.stats().buffered,
        warm.stats().exposures_dropped,
        warm.stats().exposures_deduplicated
    );
}

/// Per-call latency over 200,000 dedup-hit calls.
fn percentiles(client: &Client) {
    let contexts: Vec<Context> = (0..1024).map(context).collect();
    for ctx in &contexts {
        client.variant(ctx, FLAG_ASSIGNED, "control");
    }
    let mut nanos = Vec::with_capacity(200_000);
    for i in 0..200_000 {
        let ctx = &contexts[i & 1023];
        let start = Instant::now();
        black_box(client.variant(ctx, FLAG_ASSIGNED, "control"));
        nanos.push(start.elapsed().as_nanos() as u64);
    }
    nanos.sort_unstable();
    let at = |q: f64| nanos[((nanos.len() as f64 * q) as usize).min(nanos.len() - 1)];
    println!(
        "variant latency over {} calls (timer included): p50 {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns",
        nanos.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999)
    );
}

/// Throughput of `threads` threads sharing one client.
fn scaling(client: &Client) {
    const CALLS: usize = 2_000_000;
    let mut base = 0.0;
    for threads in [1usize, 2, 4, 8] {
        let per_thread = CALLS / threads;
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    let contexts: Vec<Context> = (0..256).map(|i| context(t * 256 + i)).collect();
                    for ctx in &contexts {
                        client.variant(ctx, FLAG_ASSIGNED, "control");
                    }
                    for i in 0..per_thread {
                        black_box(client.variant(&contexts[i & 255], FLAG_ASSIGNED, "control"));
                    }
                });
            }
        });
        let rate = (per_thread * threads) as f64 / start.elapsed().as_secs_f64();
        if threads == 1 {
            base = rate;
        }
        println!(
            "variant with {threads} thread(s): {:.2} M calls/s, {:.2}x one thread",
            rate / 1e6,
            rate / base
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let doc = snapshot_json();
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, &rt, &doc);
    criterion.final_summary();
    let c = client(&rt, &doc, true);
    percentiles(&c);
    scaling(&c);
}
