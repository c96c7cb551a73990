//! Layers: allocation, utilisation, dry runs and the cool-down.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{settings, Db, TestServer};

crate::on_both_backends!(allocation_utilisation_and_dry_run);

async fn allocation_utilisation_and_dry_run(s: TestServer) {
    s.setup_registry().await;
    let (st, layer) = s
        .post("/api/v1/layers", json!({"key": "search_layer"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert!(layer["salt"].as_str().unwrap().len() >= 10);
    let (st, _) = s
        .post("/api/v1/layers", json!({"key": "search_layer"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    s.create("exp_a", json!({})).await; // [0, 400)
    let b = s.create("exp_b", json!({"range": null, "size": 300})).await;
    assert_eq!(b["range"], json!([400, 700]));
    let (st, v) = s
        .post(
            "/api/v1/layers/checkout_layer/allocate",
            json!({"size": 300}),
        )
        .await;
    assert_eq!(
        (st, v["range"].clone()),
        (StatusCode::OK, json!([700, 1000]))
    );
    let (st, v) = s
        .post(
            "/api/v1/layers/checkout_layer/allocate",
            json!({"size": 301}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("layer_full"))
    );
    let (st, v) = s
        .post(
            "/api/v1/experiments",
            crate::common::experiment("exp_c", json!({"range": null, "size": 301})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("size"))
    );

    let (_, l) = s.get("/api/v1/layers/checkout_layer").await;
    assert_eq!(l["free"], json!([[700, 1000]]));
    assert_eq!(l["free_buckets"], 300);
    assert_eq!(l["allocated"].as_array().unwrap().len(), 2);
    let (_, list) = s.get("/api/v1/layers").await;
    let keys: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["default", "checkout_layer", "search_layer"]);

    let (st, v) = s
        .post(
            "/api/v1/layers/checkout_layer/dry-run",
            json!({"range": [350, 450]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["ok"], false);
    assert_eq!(v["overlaps"].as_array().unwrap().len(), 2);
    let (_, v) = s
        .post(
            "/api/v1/layers/checkout_layer/dry-run",
            json!({"range": [700, 800]}),
        )
        .await;
    assert_eq!(v["ok"], true);
    let (st, _) = s
        .post(
            "/api/v1/layers/checkout_layer/dry-run",
            json!({"range": [800, 700]}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.get("/api/v1/layers/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // An archived experiment keeps its range for the cool-down (7 days by default).
    s.act("exp_a", "archive", json!({})).await;
    let (_, l) = s.get("/api/v1/layers/checkout_layer").await;
    assert_eq!(l["free_buckets"], 300);
    assert!(l["allocated"][0]["reserved_until"].is_string());
    // No layer given but a range: the default layer.
    let d = s
        .create("exp_d", json!({"layer": null, "range": [0, 10]}))
        .await;
    assert_eq!(d["layer"], "default");
    s.finish().await;
}

#[tokio::test]
async fn ranges_return_to_the_pool_after_the_cooldown() {
    let s = TestServer::start_with(
        Db::Sqlite,
        strata_server::Settings {
            range_cooldown: Duration::ZERO,
            ..settings()
        },
    )
    .await
    .unwrap();
    s.setup_registry().await;
    s.running("exp_a", json!({"range": [0, 1000]}), 1.0).await;
    let (st, _) = s
        .post("/api/v1/layers/checkout_layer/allocate", json!({"size": 1}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    s.act("exp_a", "kill", json!({"reason": "r"})).await;
    let (st, v) = s
        .post(
            "/api/v1/layers/checkout_layer/allocate",
            json!({"size": 1000}),
        )
        .await;
    assert_eq!((st, v["range"].clone()), (StatusCode::OK, json!([0, 1000])));
    s.create("exp_b", json!({"range": [0, 1000]})).await;
    s.finish().await;
}
