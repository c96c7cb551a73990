//! Tokens, the role matrix, denied-request auditing and rate limits.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{settings, Db, TestServer, ADMIN};

crate::on_both_backends!(
    role_matrix,
    tokens_are_required,
    admins_run_only_their_own_teams_experiments,
);

const ROLES: [&str; 7] = [
    "admin",
    "exp_checkout",
    "exp_other",
    "analyst",
    "viewer",
    "sdk",
    "ingest",
];

async fn role_matrix(s: TestServer) {
    s.setup_registry().await;
    let tokens = [
        ADMIN.to_owned(),
        s.key("api", Some("experimenter"), "checkout", "alice")
            .await,
        s.key("api", Some("experimenter"), "search", "bob").await,
        s.key("api", Some("analyst"), "", "ann").await,
        s.key("api", Some("viewer"), "", "vic").await,
        s.key("sdk", None, "", "web").await,
        s.key("ingest", None, "", "collector").await,
    ];
    let started = s.running("exp_m", json!({"range": [0, 100]}), 5.0).await;
    let now = crate::results::after_start(&started, 1000);
    // An experiment authored by the experimenter, so that the admin may approve it.
    let (st, v) = s
        .post_as(
            &tokens[1],
            "/api/v1/experiments",
            crate::common::experiment(
                "exp_appr",
                json!({"range": [100, 200], "requires_approval": true}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, _) = s
        .post_as(&tokens[1], "/api/v1/experiments/exp_appr/submit", json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);

    let create = |i: usize| {
        crate::common::experiment(&format!("exp_new{i}"), json!({"range": [900 + i, 901 + i]}))
    };
    // (method, path, body, allowed for [admin, exp_checkout, exp_other, analyst, viewer, sdk, ingest])
    type Row = (Method, &'static str, Option<Value>, &'static str);
    let rows: Vec<Row> = vec![
        (Method::GET, "/api/v1/experiments", None, "yyyyynn"),
        (Method::GET, "/api/v1/experiments/exp_m", None, "yyyyynn"),
        (
            Method::GET,
            "/api/v1/experiments/exp_m/audit",
            None,
            "yyyyynn",
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            Some(Value::Null),
            "nynnnnn",
        ),
        (
            Method::POST,
            "/api/v1/experiments/exp_m/ramp",
            Some(json!({"ramp_percent": 10})),
            "nynnnnn",
        ),
        (
            Method::POST,
            "/api/v1/experiments/exp_m/pause",
            Some(json!({})),
            "nynnnnn",
        ),
        (
            Method::POST,
            "/api/v1/experiments/exp_m/kill",
            Some(json!({"reason": "r"})),
            "yynnnnn",
        ),
        (
            Method::POST,
            "/api/v1/experiments/exp_appr/approve",
            Some(json!({})),
            "ynnnnnn",
        ),
        (
            Method::POST,
            "/api/v1/experiments/exp_m/results",
            Some(crate::results::doc("exp_m", &now, 1)),
            "yynynnn",
        ),
        (
            Method::GET,
            "/api/v1/experiments/exp_m/results",
            None,
            "yynynnn",
        ),
        (
            Method::GET,
            "/api/v1/experiments/exp_m/results/history",
            None,
            "yynynnn",
        ),
        (Method::GET, "/api/v1/layers", None, "yyyyynn"),
        (
            Method::POST,
            "/api/v1/layers",
            Some(json!({"key": "l_new"})),
            "ynnnnnn",
        ),
        (
            Method::POST,
            "/api/v1/layers/checkout_layer/allocate",
            Some(json!({"size": 1})),
            "yyynnnn",
        ),
        (Method::GET, "/api/v1/metrics", None, "yyyyynn"),
        (
            Method::POST,
            "/api/v1/metrics",
            Some(json!({"key": "m_new", "type": "count", "filter": {"type": "x"}})),
            "ynnynnn",
        ),
        (
            Method::POST,
            "/api/v1/guardrails",
            Some(
                json!({"key": "g_new", "metric": "conversion", "threshold": 1, "direction": "decrease_is_bad", "window_minutes": 5, "auto_action": "alert"}),
            ),
            "ynnnnnn",
        ),
        (
            Method::PUT,
            "/api/v1/holdout",
            Some(json!({"percent": 1})),
            "ynnnnnn",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            Some(json!({"kind": "sdk", "name": "k"})),
            "ynnnnnn",
        ),
        (Method::GET, "/api/v1/keys", None, "ynnnnnn"),
        (Method::GET, "/api/v1/audit", None, "ynnynnn"),
        (
            Method::POST,
            "/api/v1/config/rollback",
            Some(json!({"to_version": 1})),
            "ynnnnnn",
        ),
        (Method::GET, "/api/v1/config", None, "yyyyynn"),
        (Method::GET, "/sdk/v1/config", None, "nnnnnyn"),
        (
            Method::POST,
            "/sdk/v1/evaluate",
            Some(json!({"context": {"user_id": "u"}})),
            "nnnnnyn",
        ),
        (
            Method::POST,
            "/ofrep/v1/evaluate/flags",
            Some(json!({"context": {"targetingKey": "u"}})),
            "nnnnnyn",
        ),
    ];
    let mut denied = 0;
    for (method, path, body, expect) in rows {
        for (i, role) in ROLES.iter().enumerate() {
            let body = match &body {
                Some(Value::Null) => Some(create(i)),
                other => other.clone(),
            };
            let (st, v, _) = s
                .call(method.clone(), path, Some(&tokens[i]), body.as_ref())
                .await;
            let allowed = expect.as_bytes()[i] == b'y';
            if allowed {
                assert!(
                    st != StatusCode::FORBIDDEN && st != StatusCode::UNAUTHORIZED,
                    "{role} {method} {path}: expected allowed, got {st} {v}"
                );
            } else {
                assert_eq!(
                    st,
                    StatusCode::FORBIDDEN,
                    "{role} {method} {path}: expected denied, got {v}"
                );
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("missing permission "),
                    "{v}"
                );
                assert!(v["error"]["permission"].is_string());
                denied += 1;
            }
        }
    }
    let (_, audit) = s.get("/api/v1/audit?action=denied&limit=1000").await;
    assert_eq!(
        audit["items"].as_array().unwrap().len(),
        denied,
        "every denial is audited"
    );
    assert_eq!(audit["items"][0]["entity_type"], "request");
    s.finish().await;
}

/// An admin runs the platform, not other teams' experiments: creating,
/// editing or running one is 403 naming `experiments:write` (and audited);
/// approving and killing any team's experiment are allowed.
async fn admins_run_only_their_own_teams_experiments(s: TestServer) {
    s.setup_registry().await;
    // Made by the admin of team checkout, which owns them.
    s.running("exp_run", json!({"range": [0, 100]}), 5.0).await;
    s.create("exp_draft", json!({"range": [100, 200]})).await;
    s.create(
        "exp_appr",
        json!({"range": [200, 300], "requires_approval": true}),
    )
    .await;
    s.act("exp_appr", "submit", json!({})).await;
    let forbidden = |st: StatusCode, v: &Value, what: &str| {
        assert_eq!(st, StatusCode::FORBIDDEN, "{what}: {v}");
        let err = v["error"].as_object().unwrap();
        assert_eq!(err["code"], "forbidden", "{what}");
        assert_eq!(err["permission"], "experiments:write", "{what}");
        assert_eq!(
            err["message"],
            "missing permission experiments:write: the experiment belongs to team \"checkout\"",
            "{what}"
        );
        assert!(err["field"].is_null(), "{what}");
    };
    let version = s.version().await;
    // ADMIN is the bootstrap admin, of no team.
    let (st, v) = s
        .post_as(
            ADMIN,
            "/api/v1/experiments",
            crate::common::experiment("exp_new", json!({"range": [300, 400]})),
        )
        .await;
    forbidden(st, &v, "create");
    let update = crate::common::experiment(
        "exp_draft",
        json!({"range": [100, 200], "name": "X", "revision": 1}),
    );
    let (st, v, _) = s
        .call(
            Method::PUT,
            "/api/v1/experiments/exp_draft",
            Some(ADMIN),
            Some(&update),
        )
        .await;
    forbidden(st, &v, "update");
    for (key, action, body) in [
        ("exp_draft", "submit", json!({})),
        ("exp_draft", "archive", json!({})),
        ("exp_run", "ramp", json!({"ramp_percent": 50})),
        ("exp_run", "pause", json!({})),
        ("exp_run", "conclude", json!({"winner": null})),
    ] {
        let path = format!("/api/v1/experiments/{key}/{action}");
        let (st, v) = s.post_as(ADMIN, &path, body).await;
        forbidden(st, &v, action);
    }
    assert_eq!(
        s.version().await,
        version,
        "no refused request changed anything"
    );
    let (_, denied) = s.get("/api/v1/audit?action=denied").await;
    assert_eq!(denied["items"].as_array().unwrap().len(), 7, "{denied}");
    assert_eq!(denied["items"][0]["actor"], "bootstrap-admin");

    // Approving and killing are the platform's duties, on any team's experiment.
    let (st, v) = s
        .post_as(ADMIN, "/api/v1/experiments/exp_appr/approve", json!({}))
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{v}"
    );
    let (st, v) = s
        .post_as(
            ADMIN,
            "/api/v1/experiments/exp_run/kill",
            json!({"reason": "incident"}),
        )
        .await;
    assert_eq!(
        (st, v["status"].as_str()),
        (StatusCode::OK, Some("killed")),
        "{v}"
    );
    // The admin of the owning team runs it like its experimenters.
    let (st, v) = s.act("exp_draft", "submit", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.finish().await;
}

async fn tokens_are_required(s: TestServer) {
    let (st, v, _) = s.call(Method::GET, "/api/v1/experiments", None, None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (st, _, _) = s
        .call(
            Method::GET,
            "/api/v1/experiments",
            Some("strata_wrong"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = s.call(Method::GET, "/sdk/v1/config", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Keys: shown once, stored hashed, revocable.
    let (st, k) = s
        .post(
            "/api/v1/keys",
            json!({"kind": "api", "role": "viewer", "team": "t", "name": "v"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let token = k["token"].as_str().unwrap();
    assert_eq!(token.len(), "strata_".len() + 64);
    let (_, list) = s.get("/api/v1/keys").await;
    assert!(!list.to_string().contains(token), "tokens are never listed");
    let (st, _, _) = s
        .call(Method::GET, "/api/v1/experiments", Some(token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let path = format!("/api/v1/keys/{}", k["id"].as_str().unwrap());
    let (st, _, _) = s.call(Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = s
        .call(Method::GET, "/api/v1/experiments", Some(token), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    for bad in [
        json!({"kind": "root", "name": "x"}),
        json!({"kind": "api", "name": "x"}),
        json!({"kind": "api", "role": "god", "name": "x"}),
        json!({"kind": "api", "role": "experimenter", "name": "x"}),
        json!({"kind": "sdk", "name": ""}),
    ] {
        let (st, v) = s.post("/api/v1/keys", bad.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    s.finish().await;
}

#[tokio::test]
async fn rate_limit_per_token() {
    let s = TestServer::start_with(
        Db::Sqlite,
        strata_server::Settings {
            rate_limit: 5.0,
            sdk_rate_limit: 100.0,
            ..settings()
        },
    )
    .await
    .unwrap();
    let sdk = s.sdk_key().await;
    let mut limited = None;
    for _ in 0..20 {
        let (st, v, h) = s
            .call(Method::GET, "/api/v1/config", Some(ADMIN), None)
            .await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((v, h));
            break;
        }
    }
    let (v, h) = limited.expect("the 6th request within a second is limited");
    assert_eq!(v["error"]["code"], "rate_limited");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    // SDK keys have their own, separate limit.
    for _ in 0..20 {
        let (st, _, _) = s
            .call(Method::GET, "/sdk/v1/config", Some(&sdk), None)
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    // Another token has its own bucket.
    let (st, _, _) = s
        .call(Method::GET, "/api/v1/config", Some("strata_unknown"), None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, _, _) = s
        .call(Method::GET, "/api/v1/config", Some(ADMIN), None)
        .await;
    assert_eq!(st, StatusCode::OK, "the bucket refills");
    s.finish().await;
}
