//! Activation: a started experiment is `activating` until the SDK instances
//! that poll the server hold its config version, or the timeout passes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{settings, Db, TestServer};

/// Polls the config as SDK instance `id` holding `version`.
async fn poll(s: &TestServer, sdk: &str, id: &str, version: u64) -> StatusCode {
    let resp = s
        .client
        .get(format!("{}/sdk/v1/config", s.base))
        .bearer_auth(sdk)
        .header("x-strata-instance", id)
        .header("if-none-match", format!("\"{version}\""))
        .send()
        .await
        .unwrap();
    resp.status()
}

async fn activation(s: &TestServer, key: &str) -> Value {
    let (st, v) = s
        .get(&format!("/api/v1/experiments/{key}/activation"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_is_active_once_the_sdk_instances_hold_its_version() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    s.create("exp_a", json!({"range": [0, 100]})).await;
    assert_eq!(activation(&s, "exp_a").await["state"], "inactive");
    // Two instances hold the version before the start.
    let before = s.version().await;
    assert_eq!(poll(&s, &sdk, "host-1", 0).await, StatusCode::OK);
    assert_eq!(
        poll(&s, &sdk, "host-2", before).await,
        StatusCode::NOT_MODIFIED
    );
    let (st, v) = s.act("exp_a", "submit", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s.act("exp_a", "start", json!({"ramp_percent": 5})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let a = activation(&s, "exp_a").await;
    assert_eq!(a["state"], "activating", "{a}");
    assert_eq!(
        (a["instances"].as_u64(), a["applied"].as_u64()),
        (Some(2), Some(0)),
        "{a}"
    );
    assert_eq!(a["version"], s.version().await);
    // One of two has it: not yet 95 %.
    assert_eq!(poll(&s, &sdk, "host-1", before).await, StatusCode::OK);
    let a = activation(&s, "exp_a").await;
    assert_eq!(
        (a["state"].as_str(), a["applied"].as_u64()),
        (Some("activating"), Some(1)),
        "{a}"
    );
    // Both have it.
    assert_eq!(poll(&s, &sdk, "host-2", before).await, StatusCode::OK);
    let a = activation(&s, "exp_a").await;
    assert_eq!(a["state"], "active", "{a}");
    assert_eq!(a["timed_out"], false);
    let metrics = s.metrics_text().await;
    assert!(
        metrics.contains("strata_sdk_instances{version=\"current\"} 2"),
        "{metrics}"
    );
    // Unknown experiments are 404; a viewer may read activation.
    let (st, _) = s.get("/api/v1/experiments/nope/activation").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let viewer = s.key("api", Some("viewer"), "other", "v").await;
    let (st, v, _) = s
        .call(
            Method::GET,
            "/api/v1/experiments/exp_a/activation",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activation_timeout_ends_activating() {
    let s = TestServer::start_with(
        Db::Sqlite,
        strata_server::Settings {
            activation_timeout: Duration::ZERO,
            ..settings()
        },
    )
    .await
    .unwrap();
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    assert_eq!(poll(&s, &sdk, "stuck", 0).await, StatusCode::OK);
    s.running("exp_t", json!({"range": [0, 100]}), 5.0).await;
    let a = activation(&s, "exp_t").await;
    assert_eq!(a["state"], "active", "{a}");
    assert_eq!(a["timed_out"], true, "{a}");
    assert_eq!(a["applied"], 0, "{a}");
    s.finish().await;
}
