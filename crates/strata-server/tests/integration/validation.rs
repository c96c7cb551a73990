//! Field-level validation: every rejected body names its field and leaves the store untouched.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{experiment, TestServer};

crate::on_both_backends!(validation_errors, snapshot_validation_by_strata_core);

async fn validation_errors(s: TestServer) {
    s.setup_registry().await;
    s.running("exp_live", json!({"range": [0, 300]}), 10.0)
        .await;
    let cases = [
        (
            json!({"variants": [{"key": "control", "weight": 50}, {"key": "control", "weight": 50}]}),
            "variants[1].key",
        ),
        (
            json!({"variants": [{"key": "control", "weight": 50}, {"key": "t", "weight": 0}]}),
            "variants[1].weight",
        ),
        (
            json!({"variants": [{"key": "a", "weight": 50}, {"key": "b", "weight": 50}]}),
            "variants",
        ),
        (
            json!({"variants": [{"key": "a", "weight": 1, "control": true}, {"key": "b", "weight": 1, "control": true}]}),
            "variants",
        ),
        (
            json!({"variants": [{"key": "control", "weight": 1}]}),
            "variants",
        ),
        (
            json!({"variants": [{"key": "control", "weight": -1}, {"key": "b", "weight": 1}]}),
            "variants[0].weight",
        ),
        (
            json!({"primary_metric": "unknown_metric"}),
            "primary_metric",
        ),
        (
            json!({"secondary_metrics": ["revenue", "nope"]}),
            "secondary_metrics[1]",
        ),
        (json!({"guardrails": ["nope"]}), "guardrails[0]"),
        (json!({"range": [0, 1001]}), "range"),
        (json!({"range": [500, 400]}), "range"),
        (json!({"range": [-1, 400]}), "range"),
        (json!({"range": [200, 400]}), "range"),
        (json!({"range": [0, 400], "size": 10}), "size"),
        (json!({"size": 0}), "size"),
        (json!({"layer": "nope_layer"}), "layer"),
        (json!({"layer": "checkout_layer", "range": null}), "range"),
        (
            json!({"targeting": {"attr": "country", "op": "in", "value": "US"}}),
            "targeting",
        ),
        (
            json!({"targeting": {"all": [{"attr": "v", "op": "semver_gt", "value": "x.y"}]}}),
            "targeting.all[0]",
        ),
        (
            json!({"targeting": {"attr": "a", "op": "bogus_op", "value": 1}}),
            "targeting",
        ),
        (json!({"alpha": 0.9}), "alpha"),
        (json!({"mde": -0.1}), "mde"),
        (json!({"planned_units": 0}), "planned_units"),
        (json!({"key": ""}), "key"),
        (json!({"key": "has space"}), "key"),
        (json!({"name": ""}), "name"),
        (json!({"sequential": "magic"}), "sequential"),
        (json!({"analysis": "as_treated"}), "analysis"),
        (json!({"multiple_testing": "fdr"}), "multiple_testing"),
        (
            json!({"cuped": {"pre_period_days": 0}}),
            "cuped.pre_period_days",
        ),
        (json!({"cuped": {"days": 7}}), "cuped"),
        (json!({"segments": ["country", "country"]}), "segments[1]"),
        (json!({"segments": [""]}), "segments[0]"),
        (json!({"surprise": 1}), "surprise"),
        (json!({"mde": "big"}), "mde"),
        (json!({"planned_units": 1e300}), "planned_units"),
        (json!({"owner_team": null}), "owner_team"),
        (json!({"salt": ""}), "salt"),
        (json!({"salt": "has space"}), "salt"),
        (json!({"salt": "x".repeat(65)}), "salt"),
    ];
    let version = s.version().await;
    for (over, field) in cases {
        let (st, v) = s
            .post("/api/v1/experiments", experiment("exp_bad", over.clone()))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{over}: {v}");
        let f = v["error"]["field"].as_str().unwrap_or_default();
        assert!(
            f.starts_with(field),
            "{over}: field {f:?}, expected {field:?}: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(!msg.ends_with('.'), "{msg}");
        assert!(v["error"]["code"].is_string());
    }
    assert_eq!(
        s.version().await,
        version,
        "no rejected body changed the store"
    );
    let (st, _) = s.get("/api/v1/experiments/exp_bad").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Ramp bounds.
    for bad in [json!(-1), json!(100.5), json!(0.05), json!("x")] {
        let (st, v) = s
            .act("exp_live", "ramp", json!({"ramp_percent": bad}))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["field"], "ramp_percent");
    }
    // Duplicate keys.
    s.create("exp_dup", json!({"range": [300, 400]})).await;
    let (st, v) = s
        .post(
            "/api/v1/experiments",
            experiment("exp_dup", json!({"range": [400, 500]})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists"))
    );
    // Overlap reports the experiments in the way.
    let (_, v) = s
        .post(
            "/api/v1/experiments",
            experiment("exp_ov", json!({"range": [250, 350]})),
        )
        .await;
    let names: Vec<&str> = v["error"]["overlaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["experiment"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exp_live", "exp_dup"]);
    // A salt given at creation is the experiment's, and never changes.
    let rec = s
        .create(
            "exp_salted",
            json!({"range": [500, 600], "salt": "demo-aa.v1"}),
        )
        .await;
    assert_eq!(rec["salt"], "demo-aa.v1");
    let mut body = experiment("exp_salted", json!({"range": [500, 600], "salt": "other"}));
    body["revision"] = rec["revision"].clone();
    let (st, v) = s.put("/api/v1/experiments/exp_salted", body.clone()).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("salt")),
        "{v}"
    );
    body["salt"] = json!("demo-aa.v1");
    let (st, v) = s.put("/api/v1/experiments/exp_salted", body).await;
    assert_eq!(
        (st, v["salt"].as_str()),
        (StatusCode::OK, Some("demo-aa.v1")),
        "{v}"
    );
    s.finish().await;
}

async fn snapshot_validation_by_strata_core(s: TestServer) {
    // Experiments without a layer and a control named differently; the snapshot
    // strata-core receives puts the control first.
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    s.running(
        "exp_nolayer",
        json!({"layer": null, "range": null, "unit": "device_id",
               "variants": [{"key": "b", "weight": 1}, {"key": "base", "weight": 3, "control": true}]}),
        100.0,
    )
    .await;
    let snap = s.sdk_snapshot(&sdk).await;
    let e = &snap["experiments"][0];
    assert!(e.get("layer").is_none());
    assert_eq!(e["unit"], "device_id");
    assert_eq!(e["variants"][0]["key"], "base");
    strata_core::CompiledSnapshot::from_json(&snap.to_string()).expect("valid for strata-core");
    s.finish().await;
}

#[tokio::test]
async fn guardrails_name_definitions_or_metrics_unambiguously() {
    let s = TestServer::start(crate::common::Db::Sqlite).await.unwrap();
    s.setup_registry().await;
    for (key, metric) in [
        ("latency_guard", "page_load_ms"),
        ("revenue", "page_load_ms"),
    ] {
        let (st, v) = s
            .post(
                "/api/v1/guardrails",
                json!({"key": key, "metric": metric, "threshold": 50, "direction": "increase_is_bad",
                       "window_minutes": 15, "auto_action": "alert"}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    // A definition key and a metric key may be mixed.
    s.create(
        "exp_g",
        json!({"guardrails": ["latency_guard", "conversion"]}),
    )
    .await;
    // "revenue" is a definition watching page_load_ms and also a metric.
    let (st, v) = s
        .post(
            "/api/v1/experiments",
            experiment(
                "exp_h",
                json!({"range": [400, 500], "guardrails": ["conversion", "revenue"]}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "guardrails[1]", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ambiguous"),
        "{v}"
    );
    s.finish().await;
}

/// The power calculator over HTTP: any role may ask; statsmodels'
/// `NormalIndPower` figures (strata-stats' reference fixtures, case
/// `rate_relative`) come back; a bad request names its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_plans_an_experiment() {
    let s = TestServer::start(crate::common::Db::Sqlite).await.unwrap();
    let (st, v) = s
        .post(
            "/api/v1/power",
            json!({"metric": "binomial", "baseline_rate": 0.1, "mde": 0.05,
                   "daily_traffic": 10000, "allocation": 0.5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["units_per_variant"], &v["total_units"], &v["days"]),
        (&json!(56512), &json!(113024), &json!(23))
    );
    let (st, v) = s
        .post(
            "/api/v1/power",
            json!({"metric": "binomial", "baseline_rate": 0.1, "units_per_variant": 5000}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let d = v["mde"]["effect_size"].as_f64().unwrap();
    assert!((d - 0.056_031_635_740_271_58).abs() < 1e-9, "{v}");
    assert!(v["days"].is_null());
    let (st, v) = s
        .post(
            "/api/v1/power",
            json!({"metric": "continuous", "baseline_rate": 0.1, "mde": 0.05}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "baseline_rate");
    s.finish().await;
}
