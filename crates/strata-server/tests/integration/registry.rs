//! Metric registry, guardrails, the bot detection limits, the key metrics
//! and the global holdout with its periods.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{TestServer, TEAM_ADMIN};

crate::on_both_backends!(
    metrics_and_guardrails,
    holdout_and_rotation,
    holdout_periods_and_key_metrics,
    bot_detection_limits_are_kept_validated_and_audited,
    a_metric_is_edited_only_while_nothing_relies_on_it
);

async fn metrics_and_guardrails(s: TestServer) {
    s.setup_registry().await;
    let (st, v) = s
        .post(
            "/api/v1/metrics",
            json!({"key": "aov", "type": "ratio",
            "numerator": {"type": "sum", "filter": {"type": "purchase"}},
            "denominator": {"type": "count", "filter": {"type": "purchase"}}, "winsorize": 0.99,
            "direction": "increase_is_good"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let bad = [
        (json!({"key": "m", "type": "binomial"}), "filter"),
        (
            json!({"key": "m", "type": "ratio", "numerator": {"type": "count", "filter": {"type": "a"}}}),
            "denominator",
        ),
        (
            json!({"key": "m", "type": "quantile", "filter": {"type": "a"}}),
            "quantile",
        ),
        (
            json!({"key": "m", "type": "quantile", "quantile": 1.5, "filter": {"type": "a"}}),
            "quantile",
        ),
        (
            json!({"key": "m", "type": "mean", "filter": {"type": ""}}),
            "filter.type",
        ),
        (
            json!({"key": "m", "type": "mean", "filter": {"type": "a", "value": {"between": 1}}}),
            "filter.value.between",
        ),
        (
            json!({"key": "m", "type": "median", "filter": {"type": "a"}}),
            "type",
        ),
        (
            json!({"key": "m", "type": "sum", "filter": {"type": "a"}, "winsorize": 2}),
            "winsorize",
        ),
    ];
    for (body, field) in bad {
        let (st, v) = s.post("/api/v1/metrics", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    let (st, _) = s
        .post(
            "/api/v1/metrics",
            json!({"key": "conversion", "type": "binomial", "filter": {"type": "x"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (_, list) = s.get("/api/v1/metrics").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    let (st, m) = s.get("/api/v1/metrics/aov").await;
    assert_eq!((st, m["type"].as_str()), (StatusCode::OK, Some("ratio")));

    let g = json!({"key": "latency_guard", "metric": "page_load_ms", "threshold": 50, "relative": false,
        "direction": "increase_is_bad", "window_minutes": 15, "min_samples": 10000, "min_age_minutes": 120,
        "auto_action": "kill"});
    let (st, v) = s.post("/api/v1/guardrails", g.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["auto_action"], "kill");
    let mut bad = g.clone();
    bad["key"] = json!("g2");
    bad["metric"] = json!("nope");
    let (st, v) = s.post("/api/v1/guardrails", bad).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("metric"))
    );
    // The monitor's sequential test compares means of per-unit values: a
    // quantile cannot be watched (an experiment may still name it among its
    // guardrail metrics, for its looks).
    let mut bad = g.clone();
    bad["key"] = json!("g_p95");
    bad["metric"] = json!("page_load_p95");
    let (st, v) = s.post("/api/v1/guardrails", bad).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("metric")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("quantile"),
        "{v}"
    );
    let mut bad = g.clone();
    bad["key"] = json!("g3");
    bad["auto_action"] = json!("explode");
    let (st, v) = s.post("/api/v1/guardrails", bad).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("auto_action"))
    );
    // An experiment may name the guardrail definition.
    s.create("exp_g", json!({"guardrails": ["latency_guard"]}))
        .await;
    // A metric an experiment uses cannot be deleted: as primary, secondary,
    // or watched by a guardrail definition the experiment names.
    for metric in ["conversion", "revenue", "page_load_ms"] {
        let (st, v, _) = s
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/metrics/{metric}"),
                Some(crate::common::ADMIN),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "{metric}: {v}");
        assert_eq!(v["error"]["experiments"], json!(["exp_g"]), "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("exp_g"),
            "{v}"
        );
        let (st, _) = s.get(&format!("/api/v1/metrics/{metric}")).await;
        assert_eq!(st, StatusCode::OK);
    }
    // Nor can a guardrail definition it names: its look could no longer
    // be checked against what the guardrail watches.
    let (st, v, _) = s
        .call(
            reqwest::Method::DELETE,
            "/api/v1/guardrails/latency_guard",
            Some(crate::common::ADMIN),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["experiments"], json!(["exp_g"]), "{v}");
    assert_eq!(
        v["error"]["message"],
        "guardrail \"latency_guard\" is used by experiments exp_g; archive them or change their guardrails first"
    );
    let (st, _) = s.get("/api/v1/guardrails/latency_guard").await;
    assert_eq!(st, StatusCode::OK);
    // Soft delete: gone from the API, still in the audit log, key not reusable.
    let (st, _, _) = s
        .call(
            reqwest::Method::DELETE,
            "/api/v1/metrics/aov",
            Some(crate::common::ADMIN),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get("/api/v1/metrics/aov").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, audit) = s.get("/api/v1/audit?entity=metric:aov").await;
    assert_eq!(audit["items"][0]["action"], "metric.delete");
    let (st, _) = s
        .post(
            "/api/v1/metrics",
            json!({"key": "aov", "type": "count", "filter": {"type": "x"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    s.finish().await;
}

async fn holdout_and_rotation(s: TestServer) {
    let sdk = s.sdk_key().await;
    let (st, _) = s.get("/api/v1/holdout").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, h) = s.put("/api/v1/holdout", json!({"percent": 2})).await;
    assert_eq!(st, StatusCode::OK, "{h}");
    let salt = h["salt"].as_str().unwrap().to_owned();
    let snap = s.sdk_snapshot(&sdk).await;
    assert_eq!(snap["holdout"], json!({"salt": salt, "permille": 20}));
    let (_, h2) = s.put("/api/v1/holdout", json!({"percent": 5})).await;
    assert_eq!(
        h2["salt"],
        salt.as_str(),
        "changing the percent keeps the salt"
    );
    let (st, h3) = s.post("/api/v1/holdout/rotate", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_ne!(h3["salt"], salt.as_str(), "rotation creates a new salt");
    assert_eq!(h3["percent"], 5.0);
    let (st, v) = s.put("/api/v1/holdout", json!({"percent": 101})).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("percent"))
    );
    let (_, _) = s.put("/api/v1/holdout", json!({"percent": 0})).await;
    assert!(
        s.sdk_snapshot(&sdk).await.get("holdout").is_none(),
        "0 % disables the holdout"
    );
    s.finish().await;
}

/// Each change of the holdout's salt or size ends its period and starts
/// the next, in the same change; the rotation schedule gives the next
/// rotation; the key metrics are validated, audited and in use.
async fn holdout_periods_and_key_metrics(s: TestServer) {
    s.setup_registry().await;
    let (st, v) = s.get("/api/v1/holdout/impact").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"holdout": null, "key_metrics": [], "periods": []})
    );
    let (st, h1) = s
        .put(
            "/api/v1/holdout",
            json!({"percent": 5, "rotate_every_days": 180}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{h1}");
    assert_eq!(
        (h1["period"].as_u64(), h1["rotate_every_days"].as_u64()),
        (Some(1), Some(180))
    );
    let start =
        chrono::DateTime::parse_from_rfc3339(h1["period_started_at"].as_str().unwrap()).unwrap();
    let next =
        chrono::DateTime::parse_from_rfc3339(h1["next_rotation_at"].as_str().unwrap()).unwrap();
    assert_eq!(next - start, chrono::Duration::days(180));
    // Neither the percent nor the salt changes: the same period.
    let (_, same) = s.put("/api/v1/holdout", json!({"percent": 5})).await;
    assert_eq!(
        (same["period"].as_u64(), same["rotate_every_days"].as_u64()),
        (Some(1), Some(180))
    );
    // A new size: a new period, the schedule from its start.
    let (_, h2) = s.put("/api/v1/holdout", json!({"percent": 3})).await;
    assert_eq!(h2["period"], 2);
    assert_eq!(h2["salt"], h1["salt"]);
    let (_, h3) = s.post("/api/v1/holdout/rotate", json!({})).await;
    assert_eq!(h3["period"], 3);
    assert_ne!(h3["salt"], h2["salt"]);
    let (st, v) = s
        .put(
            "/api/v1/holdout",
            json!({"percent": 3, "rotate_every_days": 4000}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("rotate_every_days")),
        "{v}"
    );
    let (_, h4) = s
        .put(
            "/api/v1/holdout",
            json!({"percent": 3, "rotate_every_days": 0}),
        )
        .await;
    assert!(
        h4.get("rotate_every_days").is_none() && h4.get("next_rotation_at").is_none(),
        "{h4}"
    );
    assert_eq!(h4["period"], 3);
    let (_, off) = s.put("/api/v1/holdout", json!({"percent": 0})).await;
    assert_eq!(off["period"], 0, "no period runs without a holdout");
    let (_, on) = s.put("/api/v1/holdout", json!({"percent": 2})).await;
    assert_eq!(on["period"], 4);
    let (_, impact) = s.get("/api/v1/holdout/impact").await;
    let periods = impact["periods"].as_array().unwrap();
    let numbers: Vec<u64> = periods
        .iter()
        .map(|p| p["period"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [4, 3, 2, 1], "the latest first");
    assert!(periods[0].get("ended_at").is_none());
    for w in periods.windows(2) {
        assert!(w[1]["ended_at"].is_string(), "{}", w[1]);
        assert!(w[1]["ended_by"].is_string());
    }
    assert_eq!(periods[1]["salt"], h3["salt"]);
    assert_eq!(
        (
            periods[1]["percent"].as_f64(),
            periods[2]["percent"].as_f64()
        ),
        (Some(3.0), Some(3.0))
    );
    assert_eq!(periods[3]["started_at"], h1["period_started_at"]);

    // Key metrics.
    let (st, v) = s.get("/api/v1/key-metrics").await;
    assert_eq!(
        (st, v["metrics"].clone(), v["revision"].as_i64()),
        (StatusCode::OK, json!([]), Some(0))
    );
    for (body, field) in [
        (json!({"metrics": []}), "metrics"),
        (json!({"metrics": ["conversion", "clicks"]}), "metrics[1]"),
        (json!({"metrics": ["revenue", "revenue"]}), "metrics[1]"),
    ] {
        let (st, v) = s.put("/api/v1/key-metrics", body).await;
        assert_eq!(
            (st, v["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{v}"
        );
    }
    let (st, v) = s
        .put(
            "/api/v1/key-metrics",
            json!({"metrics": ["conversion", "revenue"]}),
        )
        .await;
    assert_eq!(
        (st, v["revision"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{v}"
    );
    let (_, impact) = s.get("/api/v1/holdout/impact").await;
    assert_eq!(impact["key_metrics"], json!(["conversion", "revenue"]));
    // A key metric is in use.
    let (st, v, _) = s
        .call(
            Method::DELETE,
            "/api/v1/metrics/revenue",
            Some(TEAM_ADMIN),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key metrics"),
        "{v}"
    );
    let (_, audit) = s.get("/api/v1/audit?action=key_metrics.set").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    // Analysts set them; experimenters may not.
    let lab = s.key("api", Some("experimenter"), "lab", "lab").await;
    let (st, _, _) = s
        .call(
            Method::PUT,
            "/api/v1/key-metrics",
            Some(&lab),
            Some(&json!({"metrics": ["conversion"]})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    s.finish().await;
}

async fn a_metric_is_edited_only_while_nothing_relies_on_it(s: TestServer) {
    s.setup_registry().await;
    let (st, v) = s
        .post(
            "/api/v1/metrics",
            json!({"key": "aov", "type": "sum", "filter": {"type": "purchase"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let put = |body: Value| {
        let s = &s;
        async move {
            let (st, v, _) = s
                .call(
                    Method::PUT,
                    "/api/v1/metrics/aov",
                    Some(TEAM_ADMIN),
                    Some(&body),
                )
                .await;
            (st, v)
        }
    };
    // Unused: replaced, revision 2, audited with both versions.
    let (st, v) = put(json!({"key": "aov", "type": "mean", "filter": {"type": "purchase"}})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["type"].as_str(), v["revision"].as_i64()),
        (Some("mean"), Some(2))
    );
    let (_, got) = s.get("/api/v1/metrics/aov").await;
    assert_eq!(got["type"], "mean");
    let (_, audit) = s.get("/api/v1/audit?action=metric.update").await;
    let entry = &audit["items"][0];
    assert_eq!(
        (
            entry["before"]["type"].as_str(),
            entry["after"]["type"].as_str()
        ),
        (Some("sum"), Some("mean"))
    );
    // The key is the metric's identity; a bad definition is refused at its field.
    let (st, v) =
        put(json!({"key": "other", "type": "mean", "filter": {"type": "purchase"}})).await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("key")),
        "{v}"
    );
    let (st, _) = put(json!({"key": "aov", "type": "mean"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Used by an experiment: refused, naming it; a viewer may not edit at all.
    s.create("uses_aov", json!({"secondary_metrics": ["aov"]}))
        .await;
    let (st, v) = put(json!({"key": "aov", "type": "sum", "filter": {"type": "purchase"}})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("uses_aov"),
        "{v}"
    );
    let viewer = s.key("api", Some("viewer"), "checkout", "v").await;
    let (st, _, _) = s
        .call(
            Method::PUT,
            "/api/v1/metrics/aov",
            Some(&viewer),
            Some(&json!({"key": "aov", "type": "sum", "filter": {"type": "purchase"}})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    s.finish().await;
}

async fn bot_detection_limits_are_kept_validated_and_audited(s: TestServer) {
    // Never set: the defaults, revision 0.
    let (st, v) = s.get("/api/v1/bot-detection").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["revision"], 0);
    assert_eq!(
        (
            &v["limits"]["enabled"],
            &v["limits"]["per_minute"],
            &v["limits"]["per_day"]
        ),
        (&json!(true), &json!(300), &json!(20000))
    );
    let limits = json!({"per_minute": 120, "event_types": {"heartbeat": {"per_minute": null}}});
    let (st, v) = s.put("/api/v1/bot-detection", limits).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["revision"].as_i64(), v["limits"]["per_minute"].as_i64()),
        (Some(1), Some(120))
    );
    let (_, got) = s.get("/api/v1/bot-detection").await;
    assert_eq!(got, v, "read back as stored");
    assert_eq!(
        got["limits"]["event_types"]["heartbeat"],
        json!({"per_minute": null}),
        "an explicit no-limit is kept"
    );
    // Bad limits are refused naming the field; nothing changes.
    for (body, field) in [
        (json!({"per_minute": -1}), "per_minute"),
        (json!({"per_mniute": 5}), "per_mniute"),
        (json!({"event_types": {"": {"per_day": 5}}}), "event_types"),
    ] {
        let (st, v) = s.put("/api/v1/bot-detection", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        let f = v["error"]["field"].as_str().unwrap_or_default();
        assert!(
            f.contains(field)
                || v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(field),
            "{body}: {v}"
        );
    }
    assert_eq!(s.get("/api/v1/bot-detection").await.1, got);
    // Analysts and admins may change them, viewers may not.
    let viewer = s.key("api", Some("viewer"), "checkout", "v").await;
    let (st, _, _) = s
        .call(
            Method::PUT,
            "/api/v1/bot-detection",
            Some(&viewer),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = s
        .call(Method::GET, "/api/v1/bot-detection", Some(&viewer), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    // The service's in-process view is what analyses apply.
    let service = strata_server::service::registry::RegistryService::new(s.state().clone());
    let rec = service.bot_detection().await.unwrap();
    assert_eq!(rec.limits.limits("purchase").0, Some(120));
    assert_eq!(rec.limits.limits("heartbeat"), (None, Some(20000)));
    let (_, audit) = s.get("/api/v1/audit?entity_type=bot_detection").await;
    assert!(audit.to_string().contains("bot_detection.set"), "{audit}");
    s.finish().await;
}
