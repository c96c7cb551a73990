//! The whole lifecycle, every illegal transition, approval, optimistic
//! concurrency, audit entries and rollback.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{TestServer, ADMIN};

crate::on_both_backends!(
    whole_lifecycle,
    illegal_transitions,
    approval_required_and_not_by_the_author,
    optimistic_concurrency,
    frozen_after_draft,
    audit_entries,
    rollback_republishes_an_earlier_snapshot,
);

fn find<'a>(snapshot: &'a Value, key: &str) -> Option<&'a Value> {
    snapshot["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == key)
}

async fn whole_lifecycle(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    let created = s.create("exp_checkout_v2", json!({})).await;
    assert_eq!(created["status"], "draft");
    assert_eq!(created["revision"], 1);
    assert!(created["flag"].as_str().unwrap().starts_with("f_"));
    let salt = created["salt"].as_str().unwrap().to_owned();
    assert!(salt.len() >= 16);

    let (st, got) = s.get("/api/v1/experiments/exp_checkout_v2").await;
    assert_eq!(st, StatusCode::OK);
    for f in [
        "status",
        "revision",
        "ramp_percent",
        "flag",
        "salt",
        "created_at",
        "started_at",
        "hypothesis",
        "variants",
    ] {
        assert!(got.get(f).is_some(), "missing {f}");
    }
    assert!(
        find(&s.sdk_snapshot(&sdk).await, "exp_checkout_v2").is_none(),
        "drafts are not served"
    );

    let (st, v) = s.act("exp_checkout_v2", "submit", json!({})).await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("submitted"))
    );
    let before = v["version"].as_u64().unwrap();
    let (st, v) = s.act("exp_checkout_v2", "start", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "running");
    assert_eq!(v["ramp_percent"], 1.0, "default initial ramp");
    assert!(v["version"].as_u64().unwrap() > before);
    assert!(v["started_at"].is_string());
    let snap = s.sdk_snapshot(&sdk).await;
    assert_eq!(snap["version"], v["version"]);
    let e = find(&snap, "exp_checkout_v2").unwrap();
    assert_eq!(e["ramp_permille"], 10);
    assert_eq!(e["salt"], salt.as_str());
    assert_eq!(e["range"], json!([0, 400]));
    assert!(
        e.get("name").is_none() && e.get("owner_team").is_none() && e.get("hypothesis").is_none()
    );

    let (st, v) = s
        .act("exp_checkout_v2", "ramp", json!({"ramp_percent": 25}))
        .await;
    assert_eq!(
        (st, v["ramp_percent"].as_f64()),
        (StatusCode::OK, Some(25.0))
    );
    let (st, v) = s
        .act("exp_checkout_v2", "ramp", json!({"ramp_percent": 0.5}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "ramp_down");
    let (st, v) = s
        .act("exp_checkout_v2", "ramp", json!({"ramp_percent": 50.5}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        find(&s.sdk_snapshot(&sdk).await, "exp_checkout_v2").unwrap()["ramp_permille"],
        505
    );

    let (st, v) = s
        .act("exp_checkout_v2", "pause", json!({"reason": 5}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "a reason is text: {v}");
    let (st, v) = s
        .act(
            "exp_checkout_v2",
            "pause",
            json!({"reason": "waiting for the payment fix"}),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("paused")));
    let (_, audit) = s.get("/api/v1/experiments/exp_checkout_v2/audit").await;
    assert_eq!(audit["items"][0]["action"], "experiment.pause");
    assert_eq!(audit["items"][0]["detail"], "waiting for the payment fix");
    assert!(
        find(&s.sdk_snapshot(&sdk).await, "exp_checkout_v2").is_none(),
        "paused serves nothing"
    );
    let (st, v) = s.act("exp_checkout_v2", "resume", json!({})).await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("running"))
    );
    assert_eq!(v["ramp_percent"], 50.5);

    let (st, v) = s.act("exp_checkout_v2", "kill", json!({})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "kill needs a reason: {v}");
    assert_eq!(v["error"]["field"], "reason");
    let (st, v) = s
        .act(
            "exp_checkout_v2",
            "kill",
            json!({"reason": "checkout errors up 4x"}),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("killed")));
    assert_eq!(v["kill_reason"], "checkout errors up 4x");
    assert!(find(&s.sdk_snapshot(&sdk).await, "exp_checkout_v2").is_none());

    let (st, v) = s
        .act("exp_checkout_v2", "conclude", json!({"winner": "nope"}))
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("winner"))
    );
    let (st, v) = s
        .act(
            "exp_checkout_v2",
            "conclude",
            json!({"winner": "treatment"}),
        )
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("concluded"))
    );
    let snap = s.sdk_snapshot(&sdk).await;
    let e = find(&snap, "exp_checkout_v2").unwrap();
    assert_eq!(
        (e["status"].as_str(), e["winner"].as_str()),
        (Some("concluded"), Some("treatment"))
    );

    let (st, v) = s.act("exp_checkout_v2", "archive", json!({})).await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("archived"))
    );
    assert!(find(&s.sdk_snapshot(&sdk).await, "exp_checkout_v2").is_none());

    // Conclude without a winner reverts: nothing served.
    s.running("exp_b", json!({"range": [400, 500]}), 100.0)
        .await;
    let (st, _) = s.act("exp_b", "conclude", json!({"winner": null})).await;
    assert_eq!(st, StatusCode::OK);
    assert!(find(&s.sdk_snapshot(&sdk).await, "exp_b").is_none());
    s.finish().await;
}

async fn illegal_transitions(s: TestServer) {
    s.setup_registry().await;
    let all = [
        "submit", "approve", "start", "ramp", "pause", "resume", "kill", "conclude", "archive",
    ];
    let body = |a: &str| match a {
        "kill" => json!({"reason": "r"}),
        "conclude" => json!({"winner": null}),
        "ramp" | "start" => json!({"ramp_percent": 5}),
        _ => json!({}),
    };
    // (path to reach a status, the legal actions there, the allowed next states)
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&[], &["submit", "archive"], &["submitted", "archived"]),
        (&["submit"], &["start", "archive"], &["running", "archived"]),
        (
            &["submit", "start"],
            &["ramp", "pause", "kill", "conclude"],
            &["running", "paused", "killed", "concluded"],
        ),
        (
            &["submit", "start", "pause"],
            &["resume", "kill", "conclude"],
            &["running", "killed", "concluded"],
        ),
        (
            &["submit", "start", "kill"],
            &["conclude", "archive"],
            &["concluded", "archived"],
        ),
        (
            &["submit", "start", "conclude"],
            &["archive"],
            &["archived"],
        ),
        (&["submit", "start", "conclude", "archive"], &[], &[]),
    ];
    for (i, (path, legal, allowed)) in cases.iter().enumerate() {
        let key = format!("exp_t{i}");
        s.create(&key, json!({"range": [i * 100, i * 100 + 100]}))
            .await;
        for a in *path {
            let (st, v) = s.act(&key, a, body(a)).await;
            assert_eq!(st, StatusCode::OK, "{key} {a}: {v}");
        }
        for a in all.iter().filter(|a| !legal.contains(a)) {
            let version = s.version().await;
            let (st, v) = s.act(&key, a, body(a)).await;
            assert_eq!(
                st,
                StatusCode::CONFLICT,
                "{key} after {path:?}: {a} must be illegal: {v}"
            );
            assert_eq!(v["error"]["code"], "illegal_transition", "{v}");
            assert_eq!(v["error"]["allowed"], json!(allowed), "{key} {a}");
            assert_eq!(
                s.version().await,
                version,
                "an illegal transition publishes nothing"
            );
        }
    }
    let (st, v) = s.act("exp_t0", "explode", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = s.act("nope", "submit", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.finish().await;
}

async fn approval_required_and_not_by_the_author(s: TestServer) {
    s.setup_registry().await;
    s.create("exp_price", json!({"requires_approval": true}))
        .await;
    s.act("exp_price", "submit", json!({})).await;
    let (st, v) = s.act("exp_price", "start", json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["error"]["allowed"], json!(["approved", "archived"]));
    let (st, v) = s.act("exp_price", "approve", json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "the author cannot approve: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("author"));
    let other = s.key("api", Some("admin"), "", "second-admin").await;
    let (st, v) = s
        .post_as(&other, "/api/v1/experiments/exp_price/approve", json!({}))
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{v}"
    );
    assert_eq!(v["approved_by"], "second-admin");
    let (st, v) = s
        .act("exp_price", "start", json!({"ramp_percent": 10}))
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("running"))
    );
    // Approving an experiment that does not require it is illegal.
    s.create("exp_free", json!({"range": [500, 600]})).await;
    s.act("exp_free", "submit", json!({})).await;
    let (st, _) = s
        .post_as(&other, "/api/v1/experiments/exp_free/approve", json!({}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    s.finish().await;
}

async fn optimistic_concurrency(s: TestServer) {
    s.setup_registry().await;
    s.create("exp_oc", json!({})).await;
    let (st, v) = s
        .put(
            "/api/v1/experiments/exp_oc",
            crate::common::experiment("exp_oc", json!({"name": "A", "revision": 1})),
        )
        .await;
    assert_eq!(
        (st, v["revision"].as_i64()),
        (StatusCode::OK, Some(2)),
        "{v}"
    );
    let version = s.version().await;
    let (st, v) = s
        .put(
            "/api/v1/experiments/exp_oc",
            crate::common::experiment("exp_oc", json!({"name": "B", "revision": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "stale_revision");
    assert_eq!(v["error"]["revision"], 2);
    assert_eq!(s.version().await, version, "store untouched");
    let (_, got) = s.get("/api/v1/experiments/exp_oc").await;
    assert_eq!(got["name"], "A");
    let (st, _) = s
        .put(
            "/api/v1/experiments/exp_oc",
            crate::common::experiment("exp_oc", json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "revision required on update");
    let (st, v) = s.act("exp_oc", "submit", json!({"revision": 1})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("stale_revision"))
    );
    let (st, _) = s.act("exp_oc", "submit", json!({"revision": 2})).await;
    assert_eq!(st, StatusCode::OK);
    // Concurrent writers: exactly one of two updates from the same revision wins.
    s.create("exp_race", json!({"range": [500, 600]})).await;
    let body = |n: &str| {
        crate::common::experiment(
            "exp_race",
            json!({"name": n, "range": [500, 600], "revision": 1}),
        )
    };
    let (a, b) = tokio::join!(
        s.put("/api/v1/experiments/exp_race", body("A")),
        s.put("/api/v1/experiments/exp_race", body("B"))
    );
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [StatusCode::OK, StatusCode::CONFLICT]);
    s.finish().await;
}

async fn frozen_after_draft(s: TestServer) {
    s.setup_registry().await;
    let plan = json!({"analysis": "per_protocol", "multiple_testing": "holm",
                      "cuped": {"pre_period_days": 14}, "segments": ["country", "platform"]});
    let created = s.create("exp_f", plan.clone()).await;
    // A draft stores and serves the pre-registered analysis settings, and
    // may still change them.
    for field in ["analysis", "multiple_testing", "cuped", "segments"] {
        assert_eq!(created[field], plan[field], "{field}");
    }
    let (st, v) = s
        .put(
            "/api/v1/experiments/exp_f",
            crate::common::experiment(
                "exp_f",
                json!({"multiple_testing": "bonferroni", "segments": ["country"], "revision": 1}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (
            &v["multiple_testing"],
            &v["segments"],
            &v["analysis"],
            &v["cuped"]
        ),
        (
            &json!("bonferroni"),
            &json!(["country"]),
            &json!("itt"),
            &Value::Null
        ),
        "an update states the whole definition: what it omits is the default"
    );
    s.act("exp_f", "submit", json!({})).await;
    for change in [
        json!({"mde": 0.5, "revision": 3}),
        json!({"multiple_testing": "none", "segments": ["country"], "revision": 3}),
        json!({"multiple_testing": "bonferroni", "segments": [], "revision": 3}),
    ] {
        let (st, v) = s
            .put(
                "/api/v1/experiments/exp_f",
                crate::common::experiment("exp_f", change.clone()),
            )
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "{change}: {v}");
        assert_eq!(v["error"]["code"], "frozen");
    }
    let (_, got) = s.get("/api/v1/experiments/exp_f").await;
    assert_eq!(got["mde"], 0.02);
    assert_eq!(
        (&got["multiple_testing"], &got["segments"]),
        (&json!("bonferroni"), &json!(["country"]))
    );
    s.finish().await;
}

async fn audit_entries(s: TestServer) {
    s.setup_registry().await;
    s.running("exp_a", json!({}), 5.0).await;
    s.act("exp_a", "kill", json!({"reason": "errors"})).await;
    let (st, v) = s.get("/api/v1/audit?entity=experiment:exp_a").await;
    assert_eq!(st, StatusCode::OK);
    let items = v["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "experiment.kill",
            "experiment.start",
            "experiment.submit",
            "experiment.create"
        ]
    );
    let kill = &items[0];
    assert_eq!(kill["actor"], "checkout-admin");
    assert_eq!(kill["before"]["status"], "running");
    assert_eq!(kill["after"]["status"], "killed");
    assert_eq!(kill["detail"], "errors");
    assert!(kill["version"].as_u64().unwrap() > 0);
    assert!(items[3]["before"].is_null());
    let (_, per) = s.get("/api/v1/experiments/exp_a/audit").await;
    assert_eq!(per["items"].as_array().unwrap().len(), 4);
    // One entry per metric of the test registry.
    let (_, all) = s.get("/api/v1/audit?entity_type=metric").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    let (_, paged) = s.get("/api/v1/audit?limit=2").await;
    assert_eq!(paged["items"].as_array().unwrap().len(), 2);
    let seq = paged["items"][1]["seq"].as_i64().unwrap();
    let (_, next) = s.get(&format!("/api/v1/audit?limit=2&before={seq}")).await;
    assert!(next["items"][0]["seq"].as_i64().unwrap() < seq);
    s.finish().await;
}

async fn rollback_republishes_an_earlier_snapshot(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    let v_running = s.running("exp_r", json!({}), 20.0).await["version"]
        .as_u64()
        .unwrap();
    let (_, killed) = s
        .act("exp_r", "kill", json!({"reason": "bad deploy"}))
        .await;
    assert!(find(&s.sdk_snapshot(&sdk).await, "exp_r").is_none());
    let (st, v) = s
        .post("/api/v1/config/rollback", json!({"to_version": v_running}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let new = v["version"].as_u64().unwrap();
    assert!(new > killed["version"].as_u64().unwrap());
    let snap = s.sdk_snapshot(&sdk).await;
    assert_eq!(snap["version"], new);
    assert_eq!(find(&snap, "exp_r").unwrap()["ramp_permille"], 200);
    let (st, v) = s
        .post("/api/v1/config/rollback", json!({"to_version": 99999}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (_, old) = s.get(&format!("/api/v1/config/versions/{v_running}")).await;
    assert_eq!(old["snapshot"]["version"], v_running);
    let (_, audit) = s.get("/api/v1/audit?entity_type=config").await;
    assert_eq!(audit["items"][0]["action"], "config.rollback");
    let _ = ADMIN;
    s.finish().await;
}

#[tokio::test]
async fn snapshot_retention_bounds_rollback() {
    let s = TestServer::start_with_retention(3).await;
    for i in 0..5 {
        let (st, _) = s
            .post("/api/v1/layers", json!({"key": format!("l{i}")}))
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let v = s.version().await;
    let (st, _) = s.get(&format!("/api/v1/config/versions/{}", v - 3)).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "older versions are pruned");
    let (st, _) = s.get(&format!("/api/v1/config/versions/{}", v - 2)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .post("/api/v1/config/rollback", json!({"to_version": v - 3}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .post("/api/v1/config/rollback", json!({"to_version": v - 1}))
        .await;
    assert_eq!(st, StatusCode::OK);
    s.finish().await;
}
