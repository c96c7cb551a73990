//! One run, equivalent configurations: `variant` of Strata's SDK against
//! `EngineState::get_variant` of Unleash's Yggdrasil (the shared engine of
//! the Unleash SDKs), each holding 3,000 flags shaped like strata-core's
//! benchmark snapshot.
//!
//! Equivalence: each Strata experiment (3 variants 50/25/25, a ramp of 100%
//! or 50%, sticky by `user_id`, targeting on country / platform + app
//! version / account age) is an Unleash toggle with one `flexibleRollout`
//! strategy (rollout = ramp, stickiness `userId`, `groupId` = the salt),
//! the same constraints, and strategy variants weighted 500/250/250. Unleash
//! has no layers, so the 2,000 layered Strata experiments become plain
//! toggles; the flags measured are unlayered on both sides. The unit is in
//! the flag on both sides (so both hash and pick a variant).
//!
//! Measured per call: Strata `variant()` (which includes the exposure
//! deduplication check) and Yggdrasil `get_variant` alone and followed by
//! `count_variant`, the metrics counting its SDKs do on each evaluation.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use serde_json::{json, Value};
use unleash_yggdrasil::{Context as UnleashContext, EngineState, UpdateMessage};

const EXPERIMENTS: usize = 3000;
const SURFACES: usize = 50;
const LAYERS: usize = 30;
const UNLAYERED: usize = 1000;

fn targeting(i: usize) -> (Value, Value) {
    match i % 4 {
        0 => (
            json!({"attr": "country", "op": "in", "values": ["US", "CA", "GB", "DE"]}),
            json!([{"contextName": "country", "operator": "IN", "values": ["US", "CA", "GB", "DE"]}]),
        ),
        1 => (
            json!({"all": [{"attr": "platform", "op": "eq", "value": "ios"},
                           {"attr": "app_version", "op": "semver_gte", "value": "4.2.0"}]}),
            json!([{"contextName": "platform", "operator": "IN", "values": ["ios"]},
                   {"contextName": "app_version", "operator": "SEMVER_GTE", "value": "4.2.0"}]),
        ),
        2 => (
            json!({"attr": "account_age_days", "op": "gte", "value": 30}),
            json!([{"contextName": "account_age_days", "operator": "NUM_GTE", "value": "30"}]),
        ),
        _ => (Value::Null, json!([])),
    }
}

fn strata_doc() -> String {
    let per_layer = (EXPERIMENTS - UNLAYERED).div_ceil(LAYERS);
    let width = 1000 / per_layer;
    let experiments: Vec<Value> = (0..EXPERIMENTS)
        .map(|i| {
            let mut e = json!({
                "key": format!("exp_{i:04}"), "flag": format!("exp_{i:04}"), "salt": format!("salt-{i:08x}"),
                "status": "running", "ramp_permille": if i % 10 == 0 { 500 } else { 1000 },
                "surfaces": [format!("surface_{}", i % SURFACES)],
                "targeting": targeting(i).0,
                "variants": [{"key": "control", "weight": 50}, {"key": "treatment_a", "weight": 25},
                             {"key": "treatment_b", "weight": 25}],
            });
            if i >= UNLAYERED {
                let j = i - UNLAYERED;
                e["layer"] = json!(format!("layer_{}", j % LAYERS));
                e["range"] = json!([(j / LAYERS) * width, (j / LAYERS + 1) * width]);
            }
            e
        })
        .collect();
    let layers: Vec<Value> = (0..LAYERS)
        .map(|l| json!({"key": format!("layer_{l}"), "salt": format!("ls-{l:04}")}))
        .collect();
    json!({"version": 1, "layers": layers, "experiments": experiments}).to_string()
}

fn unleash_features() -> Value {
    let features: Vec<Value> = (0..EXPERIMENTS)
        .map(|i| {
            json!({
                "name": format!("exp_{i:04}"), "enabled": true,
                "strategies": [{
                    "name": "flexibleRollout",
                    "parameters": {"rollout": if i % 10 == 0 { "50" } else { "100" },
                                   "stickiness": "userId", "groupId": format!("salt-{i:08x}")},
                    "constraints": targeting(i).1,
                    "variants": [
                        {"name": "control", "weight": 500, "stickiness": "userId"},
                        {"name": "treatment_a", "weight": 250, "stickiness": "userId"},
                        {"name": "treatment_b", "weight": 250, "stickiness": "userId"}]
                }]
            })
        })
        .collect();
    json!({"version": 2, "features": features, "query": null})
}

fn strata_context(i: usize) -> strata_sdk::Context {
    let Value::Object(attrs) = json!({
        "user_id": format!("user-{i:08}"), "device_id": format!("dev-{i:x}"), "country": "US",
        "platform": "ios", "app_version": "4.3.1", "account_age_days": 120, "locale": "en-US",
        "tier": "gold", "browser": "safari", "tenure_bucket": 3,
    }) else {
        unreachable!()
    };
    strata_sdk::Context::from(attrs)
}

fn unleash_context(i: usize) -> UnleashContext {
    let properties: HashMap<String, String> = [
        ("device_id", format!("dev-{i:x}")),
        ("country", "US".into()),
        ("platform", "ios".into()),
        ("app_version", "4.3.1".into()),
        ("account_age_days", "120".into()),
        ("locale", "en-US".into()),
        ("tier", "gold".into()),
        ("browser", "safari".into()),
        ("tenure_bucket", "3".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    UnleashContext {
        user_id: Some(format!("user-{i:08}")),
        session_id: None,
        environment: None,
        app_name: None,
        current_time: None,
        remote_address: None,
        properties: Some(properties),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let strata = {
        let _g = rt.enter();
        strata_sdk::Client::builder("http://127.0.0.1:9", "sdk-key")
            .bootstrap_json(strata_doc())
            .streaming(false)
            .poll_interval(Duration::from_secs(3600))
            .build()
            .expect("client")
    };
    let engine = EngineState::default();
    let features = serde_json::from_value(unleash_features()).expect("features");
    let warnings = engine.take_state(UpdateMessage::FullResponse(features));
    assert!(
        warnings.as_ref().is_none_or(|w| w.is_empty()),
        "{warnings:?}"
    );

    let sc: Vec<strata_sdk::Context> = (0..1024).map(strata_context).collect();
    let uc: Vec<UnleashContext> = (0..1024).map(unleash_context).collect();

    // Both engines put (almost) every unit in the measured flags.
    for flag in ["exp_0003", "exp_0004"] {
        let s = sc
            .iter()
            .filter(|c| !strata.variant(c, flag, "off").is_default())
            .count();
        let u = uc
            .iter()
            .filter(|c| engine.get_variant(flag, c, &None).enabled)
            .count();
        println!("{flag}: in the flag: strata {s}/1024, unleash {u}/1024");
    }

    let mut c = Criterion::default().configure_from_args();
    for (flag, label) in [("exp_0003", "no_targeting"), ("exp_0004", "country_in")] {
        let mut i = 0usize;
        c.bench_function(&format!("strata_sdk/variant/{label}"), |b| {
            b.iter(|| {
                i += 1;
                black_box(strata.variant(&sc[i & 1023], black_box(flag), "off"))
            })
        });
        c.bench_function(&format!("unleash_yggdrasil/get_variant/{label}"), |b| {
            b.iter(|| {
                i += 1;
                black_box(engine.get_variant(black_box(flag), &uc[i & 1023], &None))
            })
        });
        c.bench_function(
            &format!("unleash_yggdrasil/get_variant+count/{label}"),
            |b| {
                b.iter(|| {
                    i += 1;
                    let v = engine.get_variant(black_box(flag), &uc[i & 1023], &None);
                    engine.count_variant(flag, &v.name);
                    black_box(v)
                })
            },
        );
    }
    c.final_summary();
}
