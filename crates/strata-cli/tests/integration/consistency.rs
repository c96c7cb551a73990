//! For 100,000 units, `strata assign --contexts` on the snapshot a running
//! `strata serve` publishes gives exactly the assignments of that server's
//! `POST /sdk/v1/evaluate`. (strata-sdk's consistency test checks the SDK
//! against the same server and engine, so all three agree.)

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};

use crate::serve::{call, strata_ok, token, Served, ADMIN};

const UNITS: usize = 100_000;

fn context(i: usize) -> Value {
    let country = ["US", "CA", "FR", "DE"][i % 4];
    let platform = ["ios", "android", "web"][i % 3];
    let mut ctx = json!({"user_id": format!("u-{i:06}"), "country": country, "platform": platform});
    if i % 17 == 0 {
        ctx["opted_out"] = json!(true);
    }
    ctx
}

/// flag → (served, assigned, log exposure).
type Decisions = BTreeMap<String, (String, String, bool)>;

fn decision(a: &Value) -> (String, (String, String, bool)) {
    let s = |f: &str| a[f].as_str().unwrap().to_owned();
    (
        s("flag"),
        (
            s("variant"),
            s("assigned"),
            a["log_exposure"].as_bool().unwrap(),
        ),
    )
}

async fn admin(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    post(http, base, ADMIN, path, body).await
}

async fn post(http: &reqwest::Client, base: &str, token: &str, path: &str, body: Value) -> Value {
    let (s, v) = call(
        http,
        Method::POST,
        format!("{base}{path}"),
        token,
        Some(body),
    )
    .await;
    assert!(s.is_success(), "{path}: {s} {v}");
    v
}

/// Creates and starts an experiment as `team`, an experimenter of the
/// `checkout` team that owns it.
async fn running(
    http: &reqwest::Client,
    base: &str,
    team: &str,
    key: &str,
    over: Value,
    ramp: f64,
) {
    let mut body = json!({
        "key": key, "name": key, "hypothesis": "it converts better", "owner_team": "checkout",
        "unit": "user_id",
        "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
        "primary_metric": "conversion", "secondary_metrics": [], "guardrails": [],
        "mde": 0.02, "planned_units": 200000, "alpha": 0.05, "sequential": "group_sequential",
        "requires_approval": false
    });
    if let (Some(o), Value::Object(over)) = (body.as_object_mut(), over) {
        o.extend(over);
    }
    post(http, base, team, "/api/v1/experiments", body).await;
    let act = |a: &str| format!("/api/v1/experiments/{key}/{a}");
    post(http, base, team, &act("submit"), json!({})).await;
    post(
        http,
        base,
        team,
        &act("start"),
        json!({"ramp_percent": ramp}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_assign_and_the_server_agree_on_100000_units() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let served = Served::start_in_runtime(&dir);
    let base = served.base.clone();
    let http = reqwest::Client::new();
    admin(
        &http,
        &base,
        "/api/v1/metrics",
        json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}),
    )
    .await;
    for layer in ["checkout_layer", "search_layer"] {
        admin(&http, &base, "/api/v1/layers", json!({"key": layer})).await;
    }
    // Layers, ranges, targeting, ramps, surfaces, a three-way split, a
    // concluded rollout and a kill: everything that shapes a decision.
    let three = json!([{"key": "control", "weight": 50}, {"key": "a", "weight": 25}, {"key": "b", "weight": 25}]);
    let experiments = [
        (
            "c_one",
            json!({"layer": "checkout_layer", "range": [0, 400], "surfaces": ["checkout"],
                "targeting": {"all": [{"attr": "country", "op": "in", "values": ["US", "CA"]}]}}),
            100.0,
        ),
        (
            "c_two",
            json!({"layer": "checkout_layer", "range": [400, 1000], "variants": three}),
            30.0,
        ),
        (
            "s_one",
            json!({"layer": "search_layer", "range": [0, 500], "surfaces": ["search"],
                "targeting": {"attr": "platform", "op": "eq", "value": "ios"}}),
            50.0,
        ),
        ("free", json!({}), 12.5),
        ("won", json!({}), 100.0),
        ("dead", json!({}), 100.0),
    ];
    let team = token(&dir, &["--role", "experimenter", "--team", "checkout"]);
    for (key, over, ramp) in experiments {
        running(&http, &base, &team, key, over, ramp).await;
    }
    post(
        &http,
        &base,
        &team,
        "/api/v1/experiments/won/conclude",
        json!({"winner": "treatment"}),
    )
    .await;
    admin(
        &http,
        &base,
        "/api/v1/experiments/dead/kill",
        json!({"reason": "test"}),
    )
    .await;

    let sdk = token(&dir, &["--kind", "sdk"]);
    let (s, snapshot) = call(
        &http,
        Method::GET,
        format!("{base}/sdk/v1/config"),
        &sdk,
        None,
    )
    .await;
    assert_eq!(s, 200, "{snapshot}");
    let snapshot_path = tmp.path().join("snapshot.json");
    std::fs::write(&snapshot_path, snapshot.to_string()).unwrap();
    let contexts_path = tmp.path().join("contexts.ndjson");
    let ndjson: String = (0..UNITS).map(|i| format!("{}\n", context(i))).collect();
    std::fs::write(&contexts_path, ndjson).unwrap();

    let out = strata_ok([
        "assign".as_ref(),
        "--config".as_ref(),
        snapshot_path.as_os_str(),
        "--contexts".as_ref(),
        contexts_path.as_os_str(),
    ]);
    let local: Vec<Decisions> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["assignments"]
                .as_object()
                .unwrap()
                .values()
                .map(decision)
                .collect()
        })
        .collect();
    assert_eq!(local.len(), UNITS);

    // The server, 8 requests at a time.
    let url = Arc::new(format!("{base}/sdk/v1/evaluate"));
    let sdk = Arc::new(sdk);
    let mut lanes = Vec::new();
    for lane in 0..8 {
        let (http, url, sdk) = (http.clone(), url.clone(), sdk.clone());
        lanes.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (lane..UNITS).step_by(8) {
                let v: Value = http
                    .post(url.as_str())
                    .bearer_auth(sdk.as_str())
                    .json(&json!({"context": context(i)}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let d: Decisions = v["assignments"]
                    .as_array()
                    .unwrap_or_else(|| panic!("unit {i}: {v}"))
                    .iter()
                    .map(decision)
                    .collect();
                out.push((i, d));
            }
            out
        }));
    }
    let mut remote = vec![Decisions::new(); UNITS];
    for lane in lanes {
        for (i, d) in lane.await.unwrap() {
            remote[i] = d;
        }
    }
    let mut assigned = 0;
    for (i, (l, r)) in local.iter().zip(&remote).enumerate() {
        assert_eq!(l, r, "unit {i}: strata assign vs the server");
        assigned += usize::from(!l.is_empty());
    }
    assert!(assigned > UNITS / 2, "{assigned} units assigned somewhere");
    tokio::task::block_in_place(|| served.terminate());
}
