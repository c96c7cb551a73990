//! For 100,000 units the SDK, the engine `strata assign` runs
//! (`strata_core::CompiledSnapshot::evaluate`, called directly here) and the
//! server's `POST /sdk/v1/evaluate` give identical assignments for the same
//! snapshot. The `strata` binary itself is checked against the server the
//! same way by strata-cli's consistency test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use strata_sdk::{Context, Reason};

use crate::real::Real;

const UNITS: usize = 100_000;

fn context(i: usize) -> Context {
    let mut ctx = Context::for_user(format!("u-{i:06}"));
    ctx.insert("country", ["US", "CA", "FR", "DE"][i % 4]);
    ctx.insert("platform", ["ios", "android", "web"][i % 3]);
    if i % 17 == 0 {
        ctx.insert("opted_out", true);
    }
    ctx
}

/// flag → (served, assigned), sorted.
type Decisions = BTreeMap<String, (String, String)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_engine_and_server_agree_on_100000_units() {
    let real = Real::start().await;
    // Layers, ranges, targeting, ramps, surfaces, three-way splits, a
    // concluded rollout and a kill: everything that shapes a decision.
    real.post("/api/v1/layers", json!({"key": "search_layer"}))
        .await;
    let three = json!([{"key": "control", "weight": 50}, {"key": "a", "weight": 25}, {"key": "b", "weight": 25}]);
    let mut flags = vec![
        real.running(
            "c_one",
            json!({"layer": "checkout_layer", "range": [0, 400], "surfaces": ["checkout"],
            "targeting": {"all": [{"attr": "country", "op": "in", "values": ["US", "CA"]}]}}),
            100.0,
        )
        .await,
        real.running(
            "c_two",
            json!({"layer": "checkout_layer", "range": [400, 1000], "variants": three}),
            30.0,
        )
        .await,
        real.running(
            "s_one",
            json!({"layer": "search_layer", "range": [0, 500], "surfaces": ["search"],
            "targeting": {"attr": "platform", "op": "eq", "value": "ios"}}),
            50.0,
        )
        .await,
        real.running(
            "s_two",
            json!({"layer": "search_layer", "range": [500, 900]}),
            100.0,
        )
        .await,
        real.running("free", json!({}), 12.5).await,
        real.running("won", json!({}), 100.0).await,
        real.running("dead", json!({}), 100.0).await,
    ];
    real.act("won", "conclude", json!({"winner": "treatment"}))
        .await;
    real.act("dead", "kill", json!({"reason": "test"})).await;

    let snapshot = real.snapshot().await;
    let compiled = strata_core::CompiledSnapshot::from_slice(&snapshot).unwrap();
    let in_snapshot = serde_json::from_slice::<Value>(&snapshot).unwrap()["experiments"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(in_snapshot, 6, "the killed experiment is left out");
    // An unknown flag too: the default, like the killed one.
    flags.push("no_such_flag".to_owned());

    let client = real
        .client(&real.url)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert!(client.ready(Duration::from_secs(10)).await);
    assert_eq!(client.version(), compiled.version());

    // The server, 8 requests at a time.
    let http = reqwest::Client::new();
    let url = Arc::new(format!("{}/sdk/v1/evaluate", real.url));
    let key = Arc::new(real.sdk_key.clone());
    let mut remote: Vec<Decisions> = Vec::with_capacity(UNITS);
    for start in (0..UNITS).step_by(2000) {
        let mut tasks = Vec::new();
        for lane in 0..8 {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in (start + lane..(start + 2000).min(UNITS)).step_by(8) {
                    let ctx = Value::Object(context(i).attributes().clone());
                    let v: Value = http
                        .post(url.as_str())
                        .bearer_auth(key.as_str())
                        .json(&json!({"context": ctx}))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let d: Decisions = v["assignments"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| {
                            (
                                a["flag"].as_str().unwrap().to_owned(),
                                (
                                    a["variant"].as_str().unwrap().to_owned(),
                                    a["assigned"].as_str().unwrap().to_owned(),
                                ),
                            )
                        })
                        .collect();
                    out.push((i, d));
                }
                out
            }));
        }
        let mut batch = Vec::new();
        for t in tasks {
            batch.extend(t.await.unwrap());
        }
        batch.sort_by_key(|(i, _)| *i);
        remote.extend(batch.into_iter().map(|(_, d)| d));
    }

    let mut assigned_somewhere = 0;
    for (i, remote) in remote.iter().enumerate() {
        let ctx = context(i);
        let engine: Decisions = compiled
            .evaluate(&ctx, None)
            .into_iter()
            .map(|a| {
                (
                    a.flag.to_owned(),
                    (a.variant.to_owned(), a.assigned.to_owned()),
                )
            })
            .collect();
        let sdk: Decisions = client
            .assignments(&ctx, None)
            .iter()
            .map(|a| (a.flag.clone(), (a.variant.clone(), a.assigned.clone())))
            .collect();
        assert_eq!(sdk, engine, "unit {i}: sdk assignments vs engine");
        assert_eq!(remote, &engine, "unit {i}: server vs engine");
        // And flag by flag, through the hot path.
        for flag in &flags {
            let v = client.variant(&ctx, flag, "<default>");
            match engine.get(flag) {
                Some((served, _)) => assert_eq!(v.as_str(), served, "unit {i} flag {flag}"),
                None => assert!(
                    v.is_default() && v.reason() != Reason::Error,
                    "unit {i} flag {flag}: {v:?}"
                ),
            }
        }
        assigned_somewhere += usize::from(!engine.is_empty());
    }
    assert!(assigned_somewhere > UNITS / 2, "{assigned_somewhere}");
    real.stop().await;
}
