//! Published analysis results: history, latest by `as_of`, validation, team
//! visibility and audit.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::TestServer;

crate::on_both_backends!(results_are_kept_and_team_restricted);

fn doc(exp: &str, as_of: &str, marker: u64) -> Value {
    json!({"experiment": exp, "as_of": as_of, "units": {"control": marker},
           "metrics": [{"metric": "conversion", "role": "primary"}], "warnings": []})
}

async fn results_are_kept_and_team_restricted(s: TestServer) {
    s.setup_registry().await;
    s.running("exp_r", json!({"range": [0, 100]}), 5.0).await;
    let analyst = s.key("api", Some("analyst"), "", "nightly").await;
    let viewer_own = s.key("api", Some("viewer"), "checkout", "v1").await;
    let viewer_other = s.key("api", Some("viewer"), "search", "v2").await;
    let path = "/api/v1/experiments/exp_r/results";

    let (st, v, _) = s.call(Method::GET, path, Some(&analyst), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    // Published out of order: the latest as_of wins, not the latest publication.
    let (st, first) = s
        .post_as(&analyst, path, doc("exp_r", "2026-01-08T00:00:00Z", 1))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let (st, second) = s
        .post_as(&analyst, path, doc("exp_r", "2026-01-15T00:00:00Z", 2))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{second}");
    let (st, third) = s
        .post_as(&analyst, path, doc("exp_r", "2026-01-01T00:00:00Z", 3))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{third}");
    assert_eq!(third["as_of"], "2026-01-01T00:00:00.000Z");
    assert_eq!(third["published_by"], "nightly");

    let (st, latest, _) = s.call(Method::GET, path, Some(&viewer_own), None).await;
    assert_eq!(st, StatusCode::OK, "{latest}");
    assert_eq!(latest["seq"], second["seq"]);
    assert_eq!(latest["results"], doc("exp_r", "2026-01-15T00:00:00Z", 2));

    let one = format!("{path}/{}", first["seq"]);
    let (st, v, _) = s.call(Method::GET, &one, Some(&viewer_own), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["results"]["units"]["control"], 1);
    let (st, v, _) = s
        .call(Method::GET, &format!("{path}/999"), Some(&analyst), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    let (st, v, _) = s
        .call(
            Method::GET,
            &format!("{path}/history"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let as_ofs: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["as_of"].as_str().unwrap())
        .collect();
    assert_eq!(
        as_ofs,
        [
            "2026-01-15T00:00:00.000Z",
            "2026-01-08T00:00:00.000Z",
            "2026-01-01T00:00:00.000Z"
        ]
    );

    for who in [&viewer_other] {
        let (st, v, _) = s.call(Method::GET, path, Some(who), None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"]["permission"], "results:read");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("checkout"),
            "{v}"
        );
    }
    // Viewers never publish, even for their own team.
    let (st, v) = s
        .post_as(&viewer_own, path, doc("exp_r", "2026-01-20T00:00:00Z", 4))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // Bad documents: 400 naming the field; nothing stored.
    for (body, field) in [
        (doc("exp_other", "2026-01-20T00:00:00Z", 5), "experiment"),
        (
            json!({"experiment": "exp_r", "as_of": "soon", "metrics": []}),
            "as_of",
        ),
        (
            json!({"experiment": "exp_r", "as_of": "2026-01-20T00:00:00Z"}),
            "metrics",
        ),
    ] {
        let (st, v) = s.post_as(&analyst, path, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], field);
    }
    let (st, v) = s
        .post_as(
            &analyst,
            "/api/v1/experiments/nope/results",
            doc("nope", "2026-01-20T00:00:00Z", 6),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (_, v) = s.get(&format!("{path}/history")).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 3);

    let (_, audit) = s.get("/api/v1/audit?action=results.publish").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 3);
    assert_eq!(audit["items"][0]["entity_key"], "exp_r");
    s.finish().await;
}
