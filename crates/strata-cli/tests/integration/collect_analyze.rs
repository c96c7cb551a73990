//! The data plane end to end through the binary: exposures and events sent
//! to `strata serve` over HTTP (JSON, NDJSON, gzip, with retried batches),
//! compacted into Parquet, analysed by `strata analyze`: the analysis sees
//! exactly the data that was sent, once.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::serve::{call, started_experiment, strata_ok, token, Served, ADMIN};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

const UNITS: usize = 400;

/// Whether unit `i` (variant by parity) buys, and for how much: treatment
/// converts at 1/3, control at 1/5.
fn purchase(i: usize) -> Option<f64> {
    let treatment = i % 2 == 1;
    let buys = if treatment { i % 3 == 0 } else { i % 5 == 0 };
    buys.then_some(10.0 + (i % 7) as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_data_is_analysed_exactly_as_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let key = token(&dir, &["--kind", "ingest"]);
    let served = Served::start_in_runtime(&dir);
    started_experiment(&served.base, &dir, "exp_e2e", &["control", "treatment"]).await;
    let http = reqwest::Client::new();
    let now = Utc::now();
    let exposed_at = rfc3339(now - Duration::from_secs(600));
    let bought_at = rfc3339(now - Duration::from_secs(60));

    let exposures: Vec<Value> = (0..UNITS)
        .map(|i| {
            json!({"unit_id": format!("u{i}"), "experiment": "exp_e2e",
                "variant": if i % 2 == 1 { "treatment" } else { "control" }, "ts": exposed_at,
                "attributes": {"country": if i % 4 < 2 { "US" } else { "DE" }}})
        })
        .collect();
    let events: Vec<Value> = (0..UNITS)
        .filter_map(|i| {
            purchase(i).map(|v| {
                json!({"event_id": format!("p{i}"), "unit_id": format!("u{i}"),
                    "type": "purchase", "ts": bought_at, "value": v})
            })
        })
        .collect();
    let base = served.base.clone();
    let url = |kind: &str| format!("{base}/collect/v1/{kind}");

    // Exposures as a JSON array, sent twice (a retry): stored once.
    for round in 0..2 {
        let (s, v) = call(
            &http,
            reqwest::Method::POST,
            url("exposures"),
            &key,
            Some(json!(exposures)),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["accepted"], if round == 0 { UNITS } else { 0 }, "{v}");
    }
    // Events as gzip-compressed NDJSON, half of them sent again as JSON.
    let ndjson: String = events.iter().map(|e| format!("{e}\n")).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(ndjson.as_bytes()).unwrap();
    let resp = http
        .post(url("events"))
        .bearer_auth(&key)
        .header(CONTENT_TYPE, "application/x-ndjson")
        .header(CONTENT_ENCODING, "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["accepted"], events.len(), "{v}");
    let half = &events[..events.len() / 2];
    let (s, v) = call(
        &http,
        reqwest::Method::POST,
        url("events"),
        &key,
        Some(json!(half)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(half.len() as u64))
    );

    let (s, v) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/pipeline/compact"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    tokio::task::block_in_place(|| served.terminate());

    let spec = json!({"key": "exp_e2e", "control": "control",
        "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
        "start": rfc3339(now - Duration::from_secs(3600)), "end": rfc3339(now + Duration::from_secs(3600)),
        "primary": "conversion", "secondary": ["revenue"], "segments": ["country"]});
    let metrics = json!({"metrics": [
        {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
        {"key": "revenue", "type": "sum", "filter": {"type": "purchase"}}]});
    let spec_path = tmp.path().join("spec.json");
    let metrics_path = tmp.path().join("metrics.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    std::fs::write(&metrics_path, metrics.to_string()).unwrap();
    let parquet = dir.join("pipeline/parquet");
    let as_of = rfc3339(now + Duration::from_secs(60));
    let out = strata_ok([
        "analyze".as_ref(),
        "--spec".as_ref(),
        spec_path.as_os_str(),
        "--metrics".as_ref(),
        metrics_path.as_os_str(),
        "--exposures".as_ref(),
        parquet.join("kind=exposures").as_os_str(),
        "--events".as_ref(),
        parquet.join("kind=events").as_os_str(),
        "--as-of".as_ref(),
        as_of.as_ref(),
    ]);
    let doc: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        doc["units"],
        json!({"control": UNITS / 2, "treatment": UNITS / 2})
    );
    // Expected per-variant means, computed from what was sent.
    for (variant, parity) in [("control", 0), ("treatment", 1)] {
        let units: Vec<usize> = (0..UNITS).filter(|i| i % 2 == parity).collect();
        let n = units.len() as f64;
        let conversion = units.iter().filter(|i| purchase(**i).is_some()).count() as f64 / n;
        let revenue = units.iter().filter_map(|i| purchase(*i)).sum::<f64>() / n;
        for (metric, want) in [("conversion", conversion), ("revenue", revenue)] {
            let m = doc["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["metric"] == metric)
                .unwrap();
            let got = &m["variants"][variant];
            assert_eq!(got["n"], units.len(), "{metric} {variant}: {got}");
            let mean = got["mean"].as_f64().unwrap();
            assert!(
                (mean - want).abs() < 1e-9,
                "{metric} {variant}: {mean} vs {want}"
            );
        }
    }
    // Segments come from the exposures' attributes, kept as a Parquet map.
    let countries = doc["segments"]["country"]["values"].as_object().unwrap();
    let mut keys: Vec<&String> = countries.keys().collect();
    keys.sort();
    assert_eq!(keys, ["DE", "US"], "{}", doc["segments"]);
}

/// `strata analyze --server … --experiment … --publish`: the experiment as
/// pre-registered on a running `strata serve`, analysed from the Parquet
/// that server wrote of the data it collected, published back as a look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_reads_the_stored_definition_and_publishes_a_look() {
    const N: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let served = Served::start_in_runtime(&dir);
    let base = served.base.clone();
    started_experiment(&base, &dir, "exp_look", &["control", "treatment"]).await;
    let ingest = token(&dir, &["--kind", "ingest"]);
    let analyst = token(&dir, &["--role", "analyst", "--name", "nightly-analysis"]);
    let http = reqwest::Client::new();
    let t0 = Utc::now();
    let exposures: Vec<Value> = (0..N)
        .map(|i| {
            json!({"unit_id": format!("u{i}"), "experiment": "exp_look",
                "variant": if i % 2 == 1 { "treatment" } else { "control" }, "ts": rfc3339(t0)})
        })
        .collect();
    // Every third control unit and every second treatment unit converts.
    let converts = |i: usize| if i % 2 == 1 { i % 4 == 1 } else { i % 3 == 0 };
    let events: Vec<Value> = (0..N)
        .filter(|i| converts(*i))
        .map(|i| {
            json!({"event_id": format!("p{i}"), "unit_id": format!("u{i}"), "type": "purchase",
                "ts": rfc3339(t0 + Duration::from_millis(100))})
        })
        .collect();
    for (kind, body) in [("exposures", exposures), ("events", events)] {
        let (s, v) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/collect/v1/{kind}"),
            &ingest,
            Some(json!(body)),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(v["rejected"].as_array().unwrap().is_empty(), "{v}");
    }
    let (s, v) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/pipeline/compact"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let analyze = |experiment: &str, publish: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.args(["analyze", "--server", &base, "--token", &analyst])
            .args(["--experiment", experiment, "--data"])
            .arg(&dir);
        if publish {
            cmd.arg("--publish");
        }
        tokio::task::block_in_place(|| cmd.output().unwrap())
    };
    let out = analyze("exp_look", true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("published look 1 of experiment exp_look"),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["experiment"], "exp_look");
    assert_eq!(doc["units"], json!({"control": N / 2, "treatment": N / 2}));
    let conversion = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "conversion")
        .expect("the pre-registered primary metric");
    for (variant, parity) in [("control", 0), ("treatment", 1)] {
        let units: Vec<usize> = (0..N).filter(|i| i % 2 == parity).collect();
        let want = units.iter().filter(|i| converts(**i)).count() as f64 / units.len() as f64;
        let got = conversion["variants"][variant]["mean"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{variant}: {got} vs {want}");
    }

    // The look is the experiment's latest results.
    let (s, v) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/experiments/exp_look/results"),
        &analyst,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["seq"], 1, "{v}");
    assert_eq!(v["published_by"], "nightly-analysis", "{v}");
    assert_eq!(v["results"]["as_of"], doc["as_of"], "{v}");

    // An experiment the server does not know is an error, not an empty analysis.
    let out = analyze("exp_never", false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/api/v1/experiments/exp_never") && stderr.contains("not found"),
        "{stderr}"
    );
    tokio::task::block_in_place(|| served.terminate());
}
