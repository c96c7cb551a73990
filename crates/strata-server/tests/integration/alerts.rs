//! Alert webhooks: registration (admins, validated, audited, the secret
//! never read back), the outbox of deliveries an alert creates, and their
//! outcomes.

use reqwest::{Method, StatusCode};
use serde_json::json;
use strata_server::service::{Alert, AlertService};
use strata_server::store::Attempt;

use crate::common::{TestServer, TEAM_ADMIN};

crate::on_both_backends!(
    webhooks_are_registered_by_admins_and_receive_their_events,
    the_fifth_change_within_an_hour_raises_a_change_anomaly,
);

/// Seed Part 13: an experiment changed five times within an hour raises one
/// alert per burst.
async fn the_fifth_change_within_an_hour_raises_a_change_anomaly(s: TestServer) {
    let hook = json!({"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef",
        "events": ["experiment.change_anomaly"]});
    let (st, w) = s.post("/api/v1/alerts/webhooks", hook).await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    let anomalies = || async {
        let (_, d) = s.get("/api/v1/alerts/deliveries").await;
        d["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["event"] == "experiment.change_anomaly")
            .cloned()
            .collect::<Vec<_>>()
    };
    s.setup_registry().await;
    // create, submit, start: three changes.
    s.running("exp_c", json!({"range": [0, 100]}), 5.0).await;
    let (st, v) = s.act("exp_c", "pause", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(anomalies().await.is_empty());
    let (st, v) = s.act("exp_c", "resume", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let found = anomalies().await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["experiment"], "exp_c");
    // The burst goes on: no second alert for it.
    let (st, v) = s.act("exp_c", "pause", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(anomalies().await.len(), 1);
    s.finish().await;
}

async fn webhooks_are_registered_by_admins_and_receive_their_events(s: TestServer) {
    let path = "/api/v1/alerts/webhooks";
    let hook = json!({"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef",
        "events": ["health.srm", "analysis.failed", "health.srm"]});
    let (st, w) = s.post(path, hook.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    assert!(w.get("secret").is_none(), "{w}");
    assert_eq!(w["events"], json!(["health.srm", "analysis.failed"]));
    // Answered as stored: listing it shows the same record.
    let (_, list) = s.get(path).await;
    assert_eq!(list["items"][0], w, "{list}");
    assert!(
        w["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{w}"
    );
    let id = w["id"].as_str().unwrap().to_owned();

    // Bad input names the field; only admins manage webhooks.
    for (body, field) in [
        (
            json!({"url": "ftp://x", "secret": "0123456789abcdef", "events": ["health.srm"]}),
            "url",
        ),
        (
            json!({"url": "http://x", "secret": "short", "events": ["health.srm"]}),
            "secret",
        ),
        (
            json!({"url": "http://x", "secret": "0123456789abcdef", "events": []}),
            "events",
        ),
        (
            json!({"url": "http://x", "secret": "0123456789abcdef", "events": ["health.srm", "nope"]}),
            "events[1]",
        ),
    ] {
        let (st, v) = s.post(path, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let analyst = s.key("api", Some("analyst"), "", "ana").await;
    let (st, v) = s.post_as(&analyst, path, hook).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v, _) = s
        .call(
            Method::GET,
            "/api/v1/alerts/deliveries",
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // An alert becomes one pending delivery per subscribed webhook.
    let alerts = AlertService::new(s.state().clone());
    let raise = |event: &'static str| Alert {
        event,
        experiment: Some("exp_x".into()),
        text: format!("exp_x: {event}"),
        fields: json!({"n": 1}),
    };
    alerts.raise(raise("health.srm")).await;
    alerts.raise(raise("guardrail.breach")).await;
    let (st, d) = s.get("/api/v1/alerts/deliveries").await;
    assert_eq!(st, StatusCode::OK, "{d}");
    let items = d["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{d}");
    assert_eq!(items[0]["event"], "health.srm");
    assert_eq!(items[0]["status"], "pending");
    assert_eq!(items[0]["webhook_id"], id.as_str());
    let store = &s.state().store;
    let due = store.due_deliveries(i64::MAX, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&due[0].body).unwrap();
    assert_eq!(body["text"], "exp_x: health.srm");
    assert_eq!(body["link"], "/api/v1/experiments/exp_x");

    // A failed attempt waits for its retry; a delivered one is done.
    let retry_at = strata_server::store::now_ms() + 60_000;
    let failed = Attempt::Failed {
        status: Some(500),
        error: "the receiver answered 500".into(),
        next_at: Some(retry_at),
    };
    store.record_attempt(&due[0].id, &failed).await.unwrap();
    assert!(store
        .due_deliveries(strata_server::store::now_ms(), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.due_deliveries(retry_at, 10).await.unwrap().len(), 1);
    store
        .record_attempt(&due[0].id, &Attempt::Delivered { status: 204 })
        .await
        .unwrap();
    let (_, d) = s.get("/api/v1/alerts/deliveries").await;
    assert_eq!(d["items"][0]["status"], "delivered", "{d}");
    assert_eq!(d["items"][0]["attempts"], 2, "{d}");
    assert_eq!(d["items"][0]["last_status_code"], 204, "{d}");
    assert!(s
        .metrics_text()
        .await
        .contains("strata_alerts_total{event=\"health.srm\"} 1"));

    // Removing the webhook drops what it still had pending; audited.
    alerts.raise(raise("analysis.failed")).await;
    let (st, _, _) = s
        .call(
            Method::DELETE,
            &format!("{path}/{id}"),
            Some(TEAM_ADMIN),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = s
        .call(
            Method::DELETE,
            &format!("{path}/{id}"),
            Some(TEAM_ADMIN),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, d) = s.get("/api/v1/alerts/deliveries").await;
    assert_eq!(d["items"][0]["event"], "analysis.failed", "{d}");
    assert_eq!(d["items"][0]["status"], "failed", "{d}");
    let (_, audit) = s.get("/api/v1/audit?entity_type=webhook").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["alerts.webhook.delete", "alerts.webhook.create"],
        "{audit}"
    );
    s.finish().await;
}
