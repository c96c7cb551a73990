//! Malformed, oversized and absurd input: a clear 4xx, the store untouched.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestServer, ADMIN, TEAM_ADMIN};

crate::on_both_backends!(bad_bodies_leave_the_store_untouched);

async fn bad_bodies_leave_the_store_untouched(s: TestServer) {
    s.setup_registry().await;
    let version = s.version().await;
    let valid = crate::common::experiment("exp_z", json!({})).to_string();
    let huge = {
        let mut v = crate::common::experiment("exp_z", json!({}));
        v["description"] = json!("x".repeat(2 << 20));
        v.to_string().into_bytes()
    };
    let mut invalid_utf8 = valid.clone().into_bytes();
    let pos = valid.find("New checkout").unwrap();
    invalid_utf8[pos] = 0xff;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (huge, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        (invalid_utf8, StatusCode::BAD_REQUEST, "invalid_json"),
        (b"".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            b"{\"key\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (b"[1, 2]".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (b"null".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (deep.into_bytes(), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            valid.replace("0.02", "1e400").into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            valid
                .replace("200000", "99999999999999999999999")
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            valid.replace("200000", "-5").into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            valid
                .replace("\"weight\":50", "\"weight\":4294967296")
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            valid.replace("0.02", "1e300").into_bytes(),
            StatusCode::BAD_REQUEST,
            "validation",
        ),
        (
            valid.replace("\"mde\"", "\"mde\": 1, \"mde\"").into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (body, status, code) in cases {
        let preview = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (st, v) = s
            .raw(Method::POST, "/api/v1/experiments", TEAM_ADMIN, body)
            .await;
        assert_eq!(st, status, "{preview}: {v}");
        assert_eq!(v["error"]["code"], code, "{preview}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // Same for lifecycle bodies and OFREP.
    s.create("exp_z", json!({})).await;
    let (st, v) = s
        .raw(
            Method::POST,
            "/api/v1/experiments/exp_z/submit",
            ADMIN,
            b"{\"x\": 1}".to_vec(),
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("x"))
    );
    let (st, _) = s
        .raw(
            Method::POST,
            "/api/v1/experiments/exp_z/kill",
            ADMIN,
            b"not json".to_vec(),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let sdk = s.sdk_key().await;
    let (st, v) = s
        .raw(
            Method::POST,
            "/ofrep/v1/evaluate/flags",
            &sdk,
            b"{oops".to_vec(),
        )
        .await;
    assert_eq!(
        (st, v["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PARSE_ERROR"))
    );
    let (st, v) = s
        .raw(Method::GET, "/api/v1/experiments?limit=abc", ADMIN, vec![])
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let (st, _) = s
        .raw(
            Method::GET,
            "/api/v1/experiments?status=bogus",
            ADMIN,
            vec![],
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Only the one valid create and the key changed anything.
    let (_, list) = s.get("/api/v1/experiments").await;
    assert_eq!(list["total"], 1);
    assert_eq!(s.version().await, version + 1);
    s.finish().await;
}

#[tokio::test]
async fn list_filters_and_paging() {
    let s = TestServer::start(crate::common::Db::Sqlite).await.unwrap();
    s.setup_registry().await;
    // Admins run only their own team's experiments.
    let search = s.key("api", Some("admin"), "search", "search-admin").await;
    for i in 0..7u32 {
        let team = if i % 2 == 0 { "checkout" } else { "search" };
        let surfaces = if i < 3 {
            json!(["checkout"])
        } else {
            json!(["search"])
        };
        let body = crate::common::experiment(
            &format!("exp_{i}"),
            json!({"range": [i * 10, i * 10 + 10], "owner_team": team, "surfaces": surfaces, "name": format!("Experiment number {i}")}),
        );
        let token = if team == "search" {
            search.as_str()
        } else {
            TEAM_ADMIN
        };
        let (st, v) = s.post_as(token, "/api/v1/experiments", body).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, _) = s
        .post_as(&search, "/api/v1/experiments/exp_1/submit", json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let count = |v: &serde_json::Value| v["total"].as_u64().unwrap();
    assert_eq!(count(&s.get("/api/v1/experiments").await.1), 7);
    assert_eq!(
        count(&s.get("/api/v1/experiments?owner_team=checkout").await.1),
        4
    );
    assert_eq!(
        count(&s.get("/api/v1/experiments?status=submitted").await.1),
        1
    );
    assert_eq!(
        count(&s.get("/api/v1/experiments?status=draft,submitted").await.1),
        7
    );
    assert_eq!(
        count(&s.get("/api/v1/experiments?surface=search").await.1),
        4
    );
    assert_eq!(
        count(&s.get("/api/v1/experiments?layer=checkout_layer").await.1),
        7
    );
    assert_eq!(count(&s.get("/api/v1/experiments?q=NUMBER%205").await.1), 1);
    assert_eq!(
        count(
            &s.get("/api/v1/experiments?created_after=2000-01-01T00:00:00Z")
                .await
                .1
        ),
        7
    );
    assert_eq!(
        count(
            &s.get("/api/v1/experiments?created_before=2000-01-01T00:00:00Z")
                .await
                .1
        ),
        0
    );
    let (_, page) = s.get("/api/v1/experiments?limit=3&offset=5").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["key"], "exp_5");
    let (st, _) = s.get("/api/v1/experiments?created_after=yesterday").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.finish().await;
}

/// Words of Rust's and serde's vocabulary that no error message may contain.
const RUST_WORDS: [&str; 20] = [
    "u8",
    "u16",
    "u32",
    "u64",
    "i32",
    "i64",
    "f32",
    "f64",
    "usize",
    "struct ",
    "enum ",
    "Vec",
    "Option",
    "String",
    "sequence",
    "newtype",
    "unit value",
    "tuple",
    "identifier",
    "variant ",
];

#[tokio::test]
async fn malformed_bodies_are_explained_in_the_api_language() {
    let s = TestServer::start(crate::common::Db::Sqlite).await.unwrap();
    s.setup_registry().await;
    let exp = |over: serde_json::Value| crate::common::experiment("exp_m", over);
    let sdk = s.sdk_key().await;
    let cases: Vec<(Method, &str, serde_json::Value)> = vec![
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"planned_units": "x"})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"planned_units": -5})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"planned_units": 1.5})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"mde": "big"})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"alpha": true})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"variants": {"a": 1}})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"variants": [1, 2]})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(
                json!({"variants": [{"key": "a", "weight": "x"}, {"key": "b", "weight": 4294967296u64}]}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"sequential": "foo"})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"sequential": 3})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"range": [1]})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"range": "0-10"})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"guardrails": "g"})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"requires_approval": "no"})),
        ),
        (
            Method::POST,
            "/api/v1/experiments",
            exp(json!({"surfaces": [1]})),
        ),
        (Method::POST, "/api/v1/experiments", json!("x")),
        (Method::POST, "/api/v1/experiments", json!(7)),
        (Method::POST, "/api/v1/layers", json!({"key": 5})),
        (Method::POST, "/api/v1/layers", json!("checkout_layer")),
        (
            Method::POST,
            "/api/v1/metrics",
            json!({"key": "m", "type": "binomial", "filter": "purchase"}),
        ),
        (
            Method::POST,
            "/api/v1/metrics",
            json!({"key": "m", "type": "nope", "filter": {"type": "p"}}),
        ),
        (
            Method::POST,
            "/api/v1/metrics",
            json!({"key": "m", "type": "quantile", "quantile": "high", "filter": {"type": "p"}}),
        ),
        (
            Method::POST,
            "/api/v1/metrics",
            json!({"key": "m", "type": "sum", "filter": {"type": "p", "value": {"gt": "x"}}}),
        ),
        (
            Method::POST,
            "/api/v1/metrics",
            json!({"key": "m", "type": "binomial", "filter": {"type": 5}}),
        ),
        (Method::POST, "/api/v1/metrics", json!([])),
        (
            Method::POST,
            "/api/v1/guardrails",
            json!({"key": "g", "metric": "conversion", "threshold": "x", "direction": "increase_is_bad", "window_minutes": 5, "auto_action": "kill"}),
        ),
        (
            Method::POST,
            "/api/v1/guardrails",
            json!({"key": "g", "metric": "conversion", "threshold": 1, "direction": "up", "window_minutes": 5, "auto_action": "kill"}),
        ),
        (
            Method::POST,
            "/api/v1/guardrails",
            json!({"key": "g", "metric": "conversion", "threshold": 1, "direction": "increase_is_bad", "window_minutes": -5, "auto_action": "kill"}),
        ),
        (
            Method::POST,
            "/api/v1/guardrails",
            json!({"key": "g", "metric": "conversion", "threshold": 1, "direction": "increase_is_bad", "window_minutes": 5, "auto_action": ["kill"]}),
        ),
        (Method::PUT, "/api/v1/holdout", json!({"percent": "x"})),
        (Method::PUT, "/api/v1/holdout", json!([])),
        (Method::PUT, "/api/v1/holdout", json!([1])),
        (Method::PUT, "/api/v1/holdout", json!("x")),
        (Method::POST, "/api/v1/keys", json!({"kind": 1})),
        (
            Method::POST,
            "/api/v1/keys",
            json!({"kind": "api", "role": ["admin"]}),
        ),
        (Method::POST, "/api/v1/keys", json!(true)),
        (
            Method::POST,
            "/sdk/v1/evaluate",
            json!({"context": {}, "surface": 1}),
        ),
        (
            Method::POST,
            "/sdk/v1/evaluate",
            json!({"context": {}, "surface": {}}),
        ),
        (Method::POST, "/sdk/v1/evaluate", json!(null)),
    ];
    for (method, path, body) in cases {
        let token = if path.starts_with("/sdk") {
            sdk.as_str()
        } else {
            crate::common::ADMIN
        };
        let (st, v) = s
            .raw(method, path, token, body.to_string().into_bytes())
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        for word in RUST_WORDS {
            assert!(
                !msg.contains(word),
                "{path} {body}: {msg:?} contains {word:?}"
            );
        }
    }
    let exact = [
        (
            json!({"planned_units": "x"}),
            "planned_units",
            r#"planned_units must be a whole number ≥ 0, got the string "x""#,
        ),
        (
            json!({"variants": {"a": 1}}),
            "variants",
            "variants must be a list, got an object",
        ),
        (
            json!({"sequential": "foo"}),
            "sequential",
            r#"sequential must be one of none, group_sequential, always_valid, got "foo""#,
        ),
        (
            json!({"owner_team": 5}),
            "owner_team",
            "owner_team must be a string, got the number 5",
        ),
    ];
    for (over, field, message) in exact {
        let (st, v) = s.post("/api/v1/experiments", exp(over.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{over}: {v}");
        assert_eq!(v["error"]["field"], field, "{over}: {v}");
        assert_eq!(v["error"]["message"], message, "{over}: {v}");
    }
    let (st, v) = s
        .post(
            "/api/v1/metrics",
            json!({"key": "m", "type": "binomial", "filter": "purchase"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "filter", "{v}");
    assert_eq!(
        v["error"]["message"], "filter must be an object, got the string \"purchase\"",
        "{v}"
    );
    s.finish().await;
}
