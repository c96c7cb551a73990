//! Evaluation cost on a production-sized snapshot: 3,000 running experiments
//! across 30 layers and 50 surfaces, a context with 10 attributes, one
//! request evaluating the 60 experiments of its surface (about 20 of which
//! assign the unit).
//!
//! Besides criterion's estimate, a per-request latency distribution (p50,
//! p99) is printed. Peers measured in the same run: the bare cost of 60
//! murmur3 buckets for one unit, with and without building the key strings.

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use serde_json::{json, Value};
use strata_core::hash::murmur3_x86_32;
use strata_core::{CompiledSnapshot, Context};

const LAYERS: usize = 30;
const SURFACES: usize = 50;
const EXPERIMENTS: usize = 3000;
/// Experiments outside any layer; the rest are spread over the layers.
const UNLAYERED: usize = 1000;
/// A current desktop browser's user agent.
const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

fn snapshot() -> CompiledSnapshot {
    let layers: Vec<Value> = (0..LAYERS)
        .map(|l| json!({"key": format!("layer_{l}"), "salt": format!("ls-{l:04}")}))
        .collect();
    let per_layer = (EXPERIMENTS - UNLAYERED).div_ceil(LAYERS);
    let width = 1000 / per_layer;
    let experiments: Vec<Value> = (0..EXPERIMENTS)
        .map(|i| {
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
        })
        .collect();
    let doc = json!({"version": 1, "holdout": {"salt": "holdout_v4", "permille": 20},
        "layers": layers, "experiments": experiments});
    CompiledSnapshot::from_json(&doc.to_string()).expect("valid benchmark snapshot")
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

fn bench(c: &mut Criterion) {
    let snapshot = snapshot();
    let contexts: Vec<Context> = (0..1024).map(context).collect();
    let mut out = Vec::with_capacity(64);
    let mut i = 0;
    c.bench_function("evaluate/one_surface", |b| {
        b.iter(|| {
            out.clear();
            snapshot.evaluate_into(&contexts[i & 1023], Some(black_box("surface_7")), &mut out);
            i += 1;
            black_box(out.len())
        })
    });
    // What an SDK adds per request while a holdout is set: the context's
    // holdout exposures (spec section 11) for the same surface.
    c.bench_function("evaluate/holdout_exposures_one_surface", |b| {
        b.iter(|| {
            let h = snapshot.holdout_exposures(&contexts[i & 1023], Some(black_box("surface_7")));
            i += 1;
            black_box(h.len())
        })
    });
    // The same requests from a browser: every live experiment excludes
    // known bots, so the context's user agent is checked against the bot
    // list once per request.
    let browsers: Vec<Context> = contexts
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.insert("user_agent", BROWSER);
            c
        })
        .collect();
    // A fresh context per request (made and dropped outside the timing),
    // so that the user agent is checked every time, as for a new request.
    c.bench_function("evaluate/one_surface_with_user_agent", |b| {
        b.iter_batched_ref(
            || {
                i += 1;
                browsers[i & 1023].clone()
            },
            |ctx| {
                out.clear();
                snapshot.evaluate_into(ctx, Some(black_box("surface_7")), &mut out);
                black_box(out.len())
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("peer/is_bot_user_agent", |b| {
        b.iter(|| strata_core::bots::is_bot_user_agent(black_box(BROWSER)))
    });
    // Peers: the bare cost of 60 murmur3 bucket computations for one unit,
    // (a) concatenating `unit:salt` into a reused buffer, as a naive
    // evaluator would, and (b) over prebuilt keys, hashing only.
    let salts: Vec<String> = (0..60).map(|i| format!("salt-{i:08x}")).collect();
    let mut key = String::with_capacity(64);
    c.bench_function("peer/murmur3_60_salts_concatenated", |b| {
        b.iter(|| {
            let unit = black_box("user-00000042");
            let mut acc = 0u32;
            for salt in &salts {
                key.clear();
                key.push_str(unit);
                key.push(':');
                key.push_str(salt);
                acc ^= murmur3_x86_32(key.as_bytes(), 0) % 1000;
            }
            acc
        })
    });
    let keys: Vec<String> = salts.iter().map(|s| format!("user-00000042:{s}")).collect();
    c.bench_function("peer/murmur3_60_prebuilt_keys", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for key in black_box(&keys) {
                acc ^= murmur3_x86_32(key.as_bytes(), 0) % 1000;
            }
            acc
        })
    });
}

/// Per-request latency over 200,000 requests with distinct units.
fn percentiles() {
    let snapshot = snapshot();
    let contexts: Vec<Context> = (0..200_000).map(context).collect();
    let mut out = Vec::with_capacity(64);
    let mut nanos = Vec::with_capacity(contexts.len());
    let mut assigned = 0usize;
    for ctx in &contexts {
        out.clear();
        let start = Instant::now();
        snapshot.evaluate_into(ctx, Some("surface_7"), &mut out);
        nanos.push(start.elapsed().as_nanos() as u64);
        assigned += black_box(out.len());
    }
    nanos.sort_unstable();
    let at = |q: f64| nanos[((nanos.len() as f64 * q) as usize).min(nanos.len() - 1)];
    println!(
        "evaluate/one_surface latency over {} requests: p50 {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns; \
         {:.1} assignments per request",
        nanos.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        assigned as f64 / contexts.len() as f64
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    percentiles();
}
