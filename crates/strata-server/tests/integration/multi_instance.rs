//! Several instances on one PostgreSQL: a kill on A reaches an SSE subscriber of B within 1 s.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{settings, Db, PgSchema, Sse, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_on_one_instance_reaches_subscribers_of_another() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let url = pg.url();
    let a = TestServer::start_on(
        Db::Postgres,
        "unused".into(),
        Some(url.clone()),
        settings(),
        None,
        Some(pg),
    )
    .await;
    let b = TestServer::start_on(
        Db::Postgres,
        "unused".into(),
        Some(url),
        settings(),
        None,
        None,
    )
    .await;
    a.setup_registry().await;
    let sdk = a.sdk_key().await;
    let started = a.running("exp_multi", json!({}), 50.0).await["version"]
        .as_u64()
        .unwrap();

    // B learns of A's versions (the token, too, is read from the shared store).
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.sdk_snapshot(&sdk).await["version"].as_u64().unwrap() < started {
        assert!(Instant::now() < deadline, "B did not catch up with A");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = Sse::connect(&b.base, &sdk).await;
    assert_eq!(
        stream.next_version(Duration::from_secs(2)).await,
        Some(started)
    );

    let (st, v) = a
        .act("exp_multi", "kill", json!({"reason": "incident"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let t = Instant::now();
    let got = stream.next_version(Duration::from_secs(1)).await;
    let took = t.elapsed();
    eprintln!("kill on A reached a subscriber of B after {took:?}");
    assert_eq!(
        got,
        v["version"].as_u64(),
        "the kill did not reach B within 1 s"
    );
    let snap = b.sdk_snapshot(&sdk).await;
    assert!(snap["experiments"].as_array().unwrap().is_empty());

    // A key revoked on A stops working on B (which had it cached) within a second.
    let (st, _, _) = b
        .call(reqwest::Method::GET, "/sdk/v1/config", Some(&sdk), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, keys) = a.get("/api/v1/keys").await;
    let id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "sdk")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _, _) = a
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(crate::common::ADMIN),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (st, _, _) = b
            .call(reqwest::Method::GET, "/sdk/v1/config", Some(&sdk), None)
            .await;
        if st == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked key still works on B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Writes on both instances keep one monotonic version sequence.
    let (r1, r2) = tokio::join!(
        a.post("/api/v1/layers", json!({"key": "la"})),
        b.post("/api/v1/layers", json!({"key": "lb"}))
    );
    assert_eq!((r1.0, r2.0), (StatusCode::CREATED, StatusCode::CREATED));
    b.finish().await;
    a.finish().await;
}

#[tokio::test]
async fn postgres_tests_say_when_they_are_skipped() {
    if std::env::var("STRATA_TEST_DATABASE_URL").map_or(true, |u| u.is_empty()) {
        eprintln!("SKIPPED: STRATA_TEST_DATABASE_URL not set; the postgres:: tests and the two-instance test did not run");
    }
}
