//! SDK distribution: ETag/304, the SSE stream, remote evaluation, OFREP, store
//! outages, Prometheus metrics and the OpenAPI document.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Sse, TestServer, ADMIN};

crate::on_both_backends!(
    etag_and_not_modified,
    sse_pushes_every_version,
    remote_evaluation_matches_strata_core,
    sticky_remote_evaluation_keeps_assignments_across_sign_in,
    ofrep_responses,
    store_outage_keeps_sdk_endpoints_serving,
    prometheus_and_openapi,
);

async fn get_config(s: &TestServer, sdk: &str, etag: Option<&str>) -> reqwest::Response {
    let mut rb = s
        .client
        .get(format!("{}/sdk/v1/config", s.base))
        .bearer_auth(sdk);
    if let Some(e) = etag {
        rb = rb.header("if-none-match", e);
    }
    rb.send().await.unwrap()
}

async fn etag_and_not_modified(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    let r = get_config(&s, &sdk, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", body["version"]));
    let r = get_config(&s, &sdk, Some(&etag)).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = get_config(&s, &sdk, Some("W/\"1\", \"2\"")).await;
    assert_eq!(r.status(), StatusCode::OK);
    s.running("exp_e", json!({}), 5.0).await;
    let r = get_config(&s, &sdk, Some(&etag)).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a new version invalidates the etag"
    );
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    s.finish().await;
}

async fn sse_pushes_every_version(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    let start = s.running("exp_s", json!({}), 5.0).await["version"]
        .as_u64()
        .unwrap();
    let mut stream = Sse::connect(&s.base, &sdk).await;
    assert_eq!(
        stream.next_version(Duration::from_secs(5)).await,
        Some(start),
        "the current version on connect"
    );
    let mut worst = Duration::ZERO;
    for (action, body) in [
        ("ramp", json!({"ramp_percent": 10})),
        ("kill", json!({"reason": "latency"})),
    ] {
        let (st, v) = s.act("exp_s", action, body).await;
        assert_eq!(st, StatusCode::OK);
        let t = Instant::now();
        let got = stream.next_version(Duration::from_secs(2)).await;
        worst = worst.max(t.elapsed());
        assert_eq!(got, v["version"].as_u64(), "{action} is pushed");
    }
    eprintln!("sse push latency after the response (worst of 2): {worst:?}");
    assert!(worst < Duration::from_millis(500), "push took {worst:?}");
    let metrics = s.metrics_text().await;
    assert!(metrics.contains("strata_sse_clients 1"), "{metrics}");
    s.finish().await;
}

async fn remote_evaluation_matches_strata_core(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    s.running("exp_e", json!({}), 100.0).await;
    s.running(
        "exp_all",
        json!({"layer": null, "range": null, "surfaces": [], "targeting": null}),
        50.0,
    )
    .await;
    // A global holdout of 20 %: held-out units get nothing, and every
    // context's holdout exposures come with the answer.
    let (st, v) = s.put("/api/v1/holdout", json!({"percent": 20})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let snap = s.sdk_snapshot(&sdk).await;
    let compiled = strata_core::CompiledSnapshot::from_json(&snap.to_string()).unwrap();
    let mut variants = std::collections::BTreeSet::new();
    for i in 0..50 {
        for (country, surface) in [
            ("US", Some("checkout")),
            ("FR", Some("checkout")),
            ("CA", None),
            ("US", Some("search")),
        ] {
            let ctx = json!({"user_id": format!("user-{i}"), "country": country});
            let mut body = json!({"context": ctx});
            if let Some(sf) = surface {
                body["surface"] = json!(sf);
            }
            let (st, v, _) = s
                .call(Method::POST, "/sdk/v1/evaluate", Some(&sdk), Some(&body))
                .await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let expected: Vec<Value> = compiled
                .evaluate(&strata_core::Context::try_from(ctx.clone()).unwrap(), surface)
                .iter()
                .map(|a| json!({"flag": a.flag, "variant": a.variant, "assigned": a.assigned, "log_exposure": a.log_exposure}))
                .collect();
            assert_eq!(v["assignments"], json!(expected));
            assert_eq!(v["version"], snap["version"]);
            let holdout: Vec<Value> = compiled
                .holdout_exposures(&strata_core::Context::try_from(ctx).unwrap(), surface)
                .iter()
                .map(|h| json!({"unit_attr": h.unit_attr, "unit_id": h.unit_id, "variant": h.variant()}))
                .collect();
            assert!(!holdout.is_empty(), "every context has a unit");
            assert_eq!(v["holdout"], json!(holdout), "{v}");
            variants.extend(holdout.iter().map(|h| h["variant"].to_string()));
        }
    }
    assert_eq!(
        variants.len(),
        2,
        "both holdout variants seen: {variants:?}"
    );
    // OFREP answers carry the same holdout exposures, as flat metadata
    // (`holdout:ATTR`), in the bulk answer and in one flag's.
    let flag = snap["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "exp_e")
        .map(|e| e["flag"].as_str().unwrap().to_owned())
        .unwrap();
    let mut ofrep_variants = std::collections::BTreeSet::new();
    for i in 0..30 {
        let id = format!("user-{i}");
        let core = json!({"user_id": id, "targetingKey": id, "country": "US"});
        let want: serde_json::Map<String, Value> = compiled
            .holdout_exposures(&strata_core::Context::try_from(core).unwrap(), None)
            .iter()
            .map(|h| (format!("holdout:{}", h.unit_attr), json!(h.variant())))
            .collect();
        assert!(!want.is_empty());
        let body = json!({"context": {"targetingKey": id, "country": "US"}});
        let (st, bulk, _) = s
            .call(
                Method::POST,
                "/ofrep/v1/evaluate/flags",
                Some(&sdk),
                Some(&body),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{bulk}");
        let path = format!("/ofrep/v1/evaluate/flags/{flag}");
        let (st, one, _) = s.call(Method::POST, &path, Some(&sdk), Some(&body)).await;
        assert_eq!(st, StatusCode::OK, "{one}");
        for (k, v) in &want {
            assert_eq!(&bulk["metadata"][k], v, "{bulk}");
            assert_eq!(&one["metadata"][k], v, "{one}");
            ofrep_variants.insert(v.to_string());
        }
        assert_eq!(bulk["metadata"]["version"], snap["version"]);
    }
    assert_eq!(ofrep_variants.len(), 2, "{ofrep_variants:?}");
    let (st, v, _) = s
        .call(
            Method::POST,
            "/sdk/v1/evaluate",
            Some(&sdk),
            Some(&json!({"context": "u1"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("context"))
    );
    let (st, _, _) = s
        .call(
            Method::POST,
            "/sdk/v1/evaluate",
            Some(&sdk),
            Some(&json!({"ctx": {}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.finish().await;
}

async fn sticky_remote_evaluation_keeps_assignments_across_sign_in(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    let open = json!({"layer": null, "range": null, "surfaces": [], "targeting": null,
        "fallback_unit": "device_id"});
    let mut sticky = open.clone();
    sticky["sticky"] = json!(true);
    s.running("exp_sticky", sticky, 100.0).await;
    s.running("exp_plain", open, 100.0).await;
    let snap = s.sdk_snapshot(&sdk).await;
    let compiled = strata_core::CompiledSnapshot::from_json(&snap.to_string()).unwrap();
    let local = |ctx: Value, key: &str| {
        let ctx = strata_core::Context::try_from(ctx).unwrap();
        compiled
            .evaluate(&ctx, None)
            .iter()
            .find(|a| a.experiment == key)
            .map(|a| a.variant.to_owned())
    };
    // A device and the user it signs in as, whose own hashes disagree in
    // both experiments: only stickiness can keep the device's variant.
    let (device, user) = (0..1000)
        .map(|i| (format!("device-{i}"), format!("user-{i}")))
        .find(|(d, u)| {
            ["exp_sticky", "exp_plain"]
                .iter()
                .all(|k| local(json!({"device_id": d}), k) != local(json!({"user_id": u}), k))
        })
        .unwrap();
    let remote = |ctx: Value| {
        let s = &s;
        let sdk = &sdk;
        async move {
            let (st, v, _) = s
                .call(
                    Method::POST,
                    "/sdk/v1/evaluate",
                    Some(sdk),
                    Some(&json!({"context": ctx})),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let mut by_flag = std::collections::HashMap::new();
            for a in v["assignments"].as_array().unwrap() {
                by_flag.insert(a["flag"].as_str().unwrap().to_owned(), a["variant"].clone());
            }
            by_flag
        }
    };
    let flag = |key: &str| {
        snap["experiments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap()["flag"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (fs, fp) = (flag("exp_sticky"), flag("exp_plain"));
    let as_device = remote(json!({"device_id": device})).await;
    let kept = as_device[&fs].clone();
    assert_eq!(
        Some(kept.as_str().unwrap().to_owned()),
        local(json!({"device_id": device}), "exp_sticky")
    );
    // Signed in: the sticky experiment keeps the device's variant, the
    // plain one re-evaluates by the user id (the documented flicker).
    let signed_in = remote(json!({"user_id": user, "device_id": device})).await;
    assert_eq!(signed_in[&fs], kept);
    assert_eq!(
        signed_in[&fp].as_str().map(str::to_owned),
        local(json!({"user_id": user}), "exp_plain")
    );
    assert_ne!(signed_in[&fp], as_device[&fp]);
    // The assignment moved to the user id: it holds without the device.
    let user_alone = remote(json!({"user_id": user})).await;
    assert_eq!(user_alone[&fs], kept);
    assert_ne!(
        Some(kept.as_str().unwrap().to_owned()),
        local(json!({"user_id": user}), "exp_sticky")
    );

    // A known bot gets the defaults (no assignment, so no exposure).
    let bot = remote(json!({"user_id": "someone", "user_agent": "curl/8.5.0"})).await;
    assert!(bot.is_empty(), "{bot:?}");
    let metrics = s.metrics_text().await;
    assert!(
        metrics.contains("strata_bot_evaluations_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_sticky_failures_total 0"),
        "{metrics}"
    );
    s.finish().await;
}

async fn ofrep(s: &TestServer, sdk: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let (st, v, _) = s.call(Method::POST, path, Some(sdk), Some(&body)).await;
    (st, v)
}

async fn ofrep_responses(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    let e = s.running("exp_o", json!({}), 100.0).await;
    let flag = e["flag"].as_str().unwrap().to_owned();
    let path = format!("/ofrep/v1/evaluate/flags/{flag}");

    // A unit inside the experiment's layer range [0, 400).
    let mut unit = String::new();
    for i in 0..100 {
        let (_, ev, _) = s
            .call(
                Method::POST,
                "/sdk/v1/evaluate",
                Some(&sdk),
                Some(&json!({"context": {"user_id": format!("user-{i}"), "country": "US"}})),
            )
            .await;
        if !ev["assignments"].as_array().unwrap().is_empty() {
            unit = format!("user-{i}");
            break;
        }
    }
    assert!(!unit.is_empty());
    let (st, v) = ofrep(
        &s,
        &sdk,
        &path,
        json!({"context": {"targetingKey": unit, "country": "US"}}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["key"], flag.as_str());
    assert_eq!(v["reason"], "SPLIT");
    assert_eq!(v["value"], v["variant"]);
    let (_, ev, _) = s
        .call(
            Method::POST,
            "/sdk/v1/evaluate",
            Some(&sdk),
            Some(&json!({"context": {"user_id": unit, "country": "US"}})),
        )
        .await;
    assert_eq!(
        v["value"], ev["assignments"][0]["variant"],
        "OFREP agrees with remote evaluation"
    );
    assert!(v["metadata"]["version"].is_u64());

    let (st, v) = ofrep(
        &s,
        &sdk,
        &path,
        json!({"context": {"targetingKey": "user-1", "country": "FR"}}),
    )
    .await;
    assert_eq!(
        (st, v["reason"].as_str(), v["value"].as_str()),
        (StatusCode::OK, Some("DEFAULT"), Some("control"))
    );
    let (st, v) = ofrep(
        &s,
        &sdk,
        "/ofrep/v1/evaluate/flags/f_nope",
        json!({"context": {"targetingKey": "u"}}),
    )
    .await;
    assert_eq!(
        (st, v["errorCode"].as_str()),
        (StatusCode::NOT_FOUND, Some("FLAG_NOT_FOUND"))
    );
    assert_eq!(v["key"], "f_nope");
    let (st, v) = ofrep(&s, &sdk, &path, json!({"context": {"country": "US"}})).await;
    assert_eq!(
        (st, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("TARGETING_KEY_MISSING"))
    );
    let (st, v) = ofrep(&s, &sdk, &path, json!({"context": "user-1"})).await;
    assert_eq!(
        (st, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_CONTEXT"))
    );
    let (st, v) = ofrep(&s, &sdk, &path, json!({})).await;
    assert_eq!(
        (st, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_CONTEXT"))
    );
    let (st, _, _) = s
        .call(
            Method::POST,
            &path,
            None,
            Some(&json!({"context": {"targetingKey": "u"}})),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Bulk with ETag.
    let body = json!({"context": {"targetingKey": "user-1", "country": "US"}});
    let r = s
        .client
        .post(format!("{}/ofrep/v1/evaluate/flags", s.base))
        .bearer_auth(&sdk)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    let flags = v["flags"].as_array().unwrap();
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["key"], flag.as_str());
    let r = s
        .client
        .post(format!("{}/ofrep/v1/evaluate/flags", s.base))
        .bearer_auth(&sdk)
        .header("if-none-match", &etag)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // Paused: DISABLED with the control. Concluded: the winner for every targeted unit.
    s.act("exp_o", "pause", json!({})).await;
    let (st, v) = ofrep(
        &s,
        &sdk,
        &path,
        json!({"context": {"targetingKey": "user-1", "country": "US"}}),
    )
    .await;
    assert_eq!(
        (st, v["reason"].as_str(), v["value"].as_str()),
        (StatusCode::OK, Some("DISABLED"), Some("control"))
    );
    let r = s
        .client
        .post(format!("{}/ofrep/v1/evaluate/flags", s.base))
        .bearer_auth(&sdk)
        .header("if-none-match", &etag)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a new version changes the bulk etag"
    );
    s.act("exp_o", "conclude", json!({"winner": "treatment"}))
        .await;
    for i in 0..10 {
        let (_, v) = ofrep(
            &s,
            &sdk,
            &path,
            json!({"context": {"targetingKey": format!("u{i}"), "country": "CA"}}),
        )
        .await;
        assert_eq!(
            (v["reason"].as_str(), v["value"].as_str()),
            (Some("TARGETING_MATCH"), Some("treatment"))
        );
    }
    s.finish().await;
}

async fn store_outage_keeps_sdk_endpoints_serving(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    // Sticky, so that remote evaluation needs the store it loses.
    s.running("exp_x", json!({"sticky": true}), 100.0).await;
    let before = s.sdk_snapshot(&sdk).await;
    let mut stream = Sse::connect(&s.base, &sdk).await;
    assert!(stream.next_version(Duration::from_secs(2)).await.is_some());
    s.state().store.close().await;

    let (st, v) = s
        .post(
            "/api/v1/experiments",
            crate::common::experiment("exp_y", json!({"range": [500, 600]})),
        )
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "store_unavailable");
    let (st, _) = s.act("exp_x", "kill", json!({"reason": "r"})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        s.sdk_snapshot(&sdk).await,
        before,
        "the last snapshot is still served"
    );
    let (st, v, _) = s
        .call(
            Method::POST,
            "/sdk/v1/evaluate",
            Some(&sdk),
            Some(&json!({"context": {"user_id": "u", "country": "US"}, "surface": "checkout"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["version"], before["version"]);
    // Without its sticky assignments: strata-core's plain answer, counted.
    let plain: Vec<Value> = strata_core::CompiledSnapshot::from_json(&before.to_string())
        .unwrap()
        .evaluate(
            &strata_core::Context::try_from(json!({"user_id": "u", "country": "US"})).unwrap(),
            Some("checkout"),
        )
        .iter()
        .map(|a| json!({"flag": a.flag, "variant": a.variant, "assigned": a.assigned, "log_exposure": a.log_exposure}))
        .collect();
    assert_eq!(v["assignments"], json!(plain));
    let (st, _, _) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    let (st, _, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let metrics = s.metrics_text().await;
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_store_errors_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors > 0);
    assert!(
        !metrics.contains("strata_sticky_failures_total 0"),
        "the failed sticky lookup is counted: {metrics}"
    );
    s.finish().await;
}

async fn prometheus_and_openapi(s: TestServer) {
    let sdk = s.sdk_key().await;
    get_config(&s, &sdk, None).await;
    let (st, _, _) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let text = s.metrics_text().await;
    assert!(
        text.contains(
            "strata_http_requests_total{method=\"GET\",route=\"/sdk/v1/config\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("strata_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/keys\",status=\"201\",le=\"+Inf\"} 1"), "{text}");
    assert!(text.contains(&format!("strata_config_version {}", s.version().await)));
    assert!(text.contains("strata_sse_clients 0"));
    let (st, doc, _) = s
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/experiments",
        "/api/v1/experiments/{key}/{action}",
        "/api/v1/layers/{key}/allocate",
        "/sdk/v1/config",
        "/ofrep/v1/evaluate/flags/{key}",
        "/api/v1/config/rollback",
        "/api/v1/experiments/{key}/results/{seq}/retract",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    assert!(doc["components"]["schemas"]
        .get("ExperimentRequest")
        .is_some());
    let (st, v, _) = s.call(Method::GET, "/api/v1/nope", Some(ADMIN), None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (st, v, _) = s
        .call(Method::DELETE, "/api/v1/experiments", Some(ADMIN), None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    s.finish().await;
}
