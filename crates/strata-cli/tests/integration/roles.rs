//! Roles of one binary: a `control` node (API, portal, SDK distribution)
//! and an `ingest,jobs` node (collection and the jobs over its pipeline)
//! on one PostgreSQL. Each answers only what its roles serve; records sent
//! to the ingest node are analysed there and the look is read on the
//! control node.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::leader::fresh_database;
use crate::scheduled::{post_records as post, start, until};
use crate::serve::{call, now_ms, token, Served, ADMIN};

async fn status(c: &reqwest::Client, method: Method, url: String, who: &str) -> StatusCode {
    let body = (method == Method::POST).then(|| json!([]));
    call(c, method, url, who, body).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_node_and_an_ingest_and_jobs_node_share_one_database() {
    let Some(fresh) = fresh_database() else {
        return;
    };
    let db = fresh.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let (da, db_dir) = (tmp.path().join("control"), tmp.path().join("data"));
    let control = Served::start_with_in_runtime(&da, &["--database-url", &db, "--role", "control"]);
    let data = Served::start_with_in_runtime(
        &db_dir,
        &[
            "--database-url",
            &db,
            "--role",
            "ingest,jobs",
            "--analysis-interval",
            "2s",
        ],
    );
    let (a, b) = (control.base.clone(), data.base.clone());
    let c = reqwest::Client::new();
    let lab = token(
        &da,
        &[
            "--database-url",
            &db,
            "--role",
            "experimenter",
            "--team",
            "lab",
        ],
    );
    let analyst = token(&da, &["--database-url", &db, "--role", "analyst"]);
    let ingest = token(&da, &["--database-url", &db, "--kind", "ingest"]);
    let sdk = token(&da, &["--database-url", &db, "--kind", "sdk"]);
    let metric = json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}});
    let (s, v) = call(
        &c,
        Method::POST,
        format!("{a}/api/v1/metrics"),
        &analyst,
        Some(metric),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    start(&c, &a, &lab, "exp_roles", json!({})).await;

    // What each node serves.
    assert_eq!(
        status(&c, Method::GET, format!("{a}/sdk/v1/config"), &sdk).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&c, Method::POST, format!("{a}/collect/v1/events"), &ingest).await,
        StatusCode::NOT_FOUND
    );
    for path in [
        "/api/v1/experiments",
        "/sdk/v1/config",
        "/api/v1/openapi.json",
    ] {
        assert_eq!(
            status(&c, Method::GET, format!("{b}{path}"), ADMIN).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let portal = c
        .get(format!("{a}/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(portal.status(), StatusCode::OK);
    let no_portal = c
        .get(format!("{b}/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(no_portal.status(), StatusCode::NOT_FOUND);
    let metrics = |base: String| {
        let c = c.clone();
        async move {
            c.get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(
        !metrics(a.clone()).await.contains("strata_jobs_leader"),
        "no jobs on the control node"
    );

    // Records collected by the data node, analysed there, read on the
    // control node.
    let ts = now_ms();
    let exposures: Vec<Value> = (0..40)
        .map(|i| {
            json!({"unit_id": format!("u{i}"), "experiment": "exp_roles",
                        "variant": if i % 2 == 0 { "control" } else { "treatment" }, "ts": ts})
        })
        .collect();
    let events: Vec<Value> = (0..40)
        .filter(|i| i % 3 == 0)
        .map(|i| json!({"event_id": format!("p{i}"), "unit_id": format!("u{i}"), "type": "purchase", "ts": ts + 500}))
        .collect();
    post(&c, &b, &ingest, "exposures", exposures).await;
    post(&c, &b, &ingest, "events", events).await;
    let look = until("a look published by the data node", || async {
        let (s, v) = call(
            &c,
            Method::GET,
            format!("{a}/api/v1/experiments/exp_roles/results"),
            &lab,
            None,
        )
        .await;
        (s == StatusCode::OK
            && v["results"]["units"]["control"].as_u64() == Some(20)
            && v["results"]["metrics"][0]["variants"]["control"]["mean"].as_f64() > Some(0.0))
        .then_some(v)
    })
    .await;
    assert_eq!(look["results"]["units"]["treatment"], 20);
    assert_eq!(look["published_by"], "system:analysis", "{look}");
    assert!(metrics(b.clone()).await.contains("strata_jobs_leader 1"));
    control.terminate();
    data.terminate();
}
