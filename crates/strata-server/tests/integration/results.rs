//! Published analysis results: history, latest by `as_of`, validation, team
//! visibility and audit.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use strata_server::store::{now_ms, parse_rfc3339, rfc3339};

use crate::common::TestServer;

crate::on_both_backends!(
    results_are_kept_and_team_restricted,
    results_are_checked_against_the_experiment,
    a_look_is_retracted,
    failing_health_checks_are_audited_counted_and_pause_on_srm,
    analysis_runs_are_stored_replaced_and_pruned,
);

/// The scheduled analysis's runs: a later state of a run replaces the
/// earlier one, the latest come first, and only the last `keep` are kept.
async fn analysis_runs_are_stored_replaced_and_pruned(s: TestServer) {
    let store = &s.state().store;
    assert!(store.analysis_runs(10).await.unwrap().is_empty());
    for id in 1..=5u64 {
        let doc = json!({"id": id, "ended_at": null});
        store.save_analysis_run(id, &doc, 3).await.unwrap();
        let ended = json!({"id": id, "ended_at": "2026-12-05T00:00:00Z"});
        store.save_analysis_run(id, &ended, 3).await.unwrap();
    }
    let runs = store.analysis_runs(10).await.unwrap();
    let ids: Vec<u64> = runs.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![5, 4, 3], "{runs:?}");
    assert!(runs.iter().all(|r| r["ended_at"] == "2026-12-05T00:00:00Z"));
    assert_eq!(store.analysis_runs(1).await.unwrap().len(), 1);
    s.finish().await;
}

/// A valid results document of the example experiment (variants `control`
/// and `treatment`, primary metric `conversion`), as `strata analyze`
/// writes it; `marker` tells publications apart.
pub fn doc(exp: &str, as_of: &str, marker: u64) -> Value {
    let effect = json!({"variant": "treatment", "control": "control", "delta": 0.0,
        "ci": [-0.1, 0.1], "relative": 0.0, "relative_ci": [-1.0, 1.0], "p_value": 1.0,
        "adjusted_p_value": null, "significant": false, "tier": "not_significant",
        "cuped": null, "sequential": null, "warnings": []});
    let variant = json!({"n": marker, "mean": 0.1, "variance": 0.09});
    json!({"experiment": exp, "as_of": as_of, "start": as_of, "analysis": "itt",
        "units": {"control": marker, "treatment": marker},
        "srm": {"chi2": 0.0, "df": 1, "p_value": 1.0, "flagged": false,
                "observed": {"control": marker, "treatment": marker},
                "expected": {"control": marker as f64, "treatment": marker as f64}},
        "metrics": [{"metric": "conversion", "role": "primary", "type": "binomial",
                     "direction": "increase_is_good",
                     "variants": {"control": variant, "treatment": variant},
                     "effects": [effect]}],
        "segments": {}, "novelty": null, "warnings": []})
}

/// `started_at` of a started experiment (the answer of its `start`), plus `ms`.
pub fn after_start(started: &Value, ms: i64) -> String {
    rfc3339(parse_rfc3339(started["started_at"].as_str().expect("started_at")).unwrap() + ms)
}

async fn results_are_kept_and_team_restricted(s: TestServer) {
    s.setup_registry().await;
    let started = s.running("exp_r", json!({"range": [0, 100]}), 5.0).await;
    let (t1, t2, t3, t4) = (
        after_start(&started, 2000),
        after_start(&started, 3000),
        after_start(&started, 1000),
        after_start(&started, 4000),
    );
    let analyst = s.key("api", Some("analyst"), "", "nightly").await;
    let viewer_own = s.key("api", Some("viewer"), "checkout", "v1").await;
    let viewer_other = s.key("api", Some("viewer"), "search", "v2").await;
    let path = "/api/v1/experiments/exp_r/results";

    let (st, v, _) = s.call(Method::GET, path, Some(&analyst), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    // Published out of order: the latest as_of wins, not the latest publication.
    let (st, first) = s.post_as(&analyst, path, doc("exp_r", &t1, 1)).await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let (st, second) = s.post_as(&analyst, path, doc("exp_r", &t2, 2)).await;
    assert_eq!(st, StatusCode::CREATED, "{second}");
    let (st, third) = s.post_as(&analyst, path, doc("exp_r", &t3, 3)).await;
    assert_eq!(st, StatusCode::CREATED, "{third}");
    assert_eq!(third["as_of"], t3.as_str());
    assert_eq!(third["published_by"], "nightly");

    let (st, latest, _) = s.call(Method::GET, path, Some(&viewer_own), None).await;
    assert_eq!(st, StatusCode::OK, "{latest}");
    assert_eq!(latest["seq"], second["seq"]);
    assert_eq!(latest["results"], doc("exp_r", &t2, 2));

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
    assert_eq!(as_ofs, [t2.as_str(), t1.as_str(), t3.as_str()]);

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
    let (st, v) = s.post_as(&viewer_own, path, doc("exp_r", &t4, 4)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // Bad documents: 400 naming the field; nothing stored.
    let mut no_metrics = doc("exp_r", &t4, 5);
    no_metrics.as_object_mut().unwrap().remove("metrics");
    for (body, field) in [
        (doc("exp_other", &t4, 5), "experiment"),
        (doc("exp_r", "soon", 5), "as_of"),
        (no_metrics, "metrics"),
    ] {
        let (st, v) = s.post_as(&analyst, path, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], field);
    }
    let (st, v) = s
        .post_as(
            &analyst,
            "/api/v1/experiments/nope/results",
            doc("nope", &t4, 6),
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

async fn results_are_checked_against_the_experiment(s: TestServer) {
    s.setup_registry().await;
    let analyst = s.key("api", Some("analyst"), "", "nightly").await;
    let started = s.running("exp_c", json!({"range": [0, 100]}), 5.0).await;
    let path = "/api/v1/experiments/exp_c/results";
    let ok = after_start(&started, 1000);

    // A draft has no results to publish.
    s.create("exp_draft", json!({"range": [100, 200]})).await;
    let (st, v) = s
        .post_as(
            &analyst,
            "/api/v1/experiments/exp_draft/results",
            doc("exp_draft", &ok, 1),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "not_started");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("draft"),
        "{v}"
    );

    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = doc("exp_c", &ok, 1);
        f(&mut d);
        d
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            doc("exp_c", &rfc3339(now_ms() + 3_600_000), 1),
            "as_of",
            "in the future",
        ),
        (
            doc("exp_c", &after_start(&started, -60_000), 1),
            "as_of",
            "before the experiment started",
        ),
        (
            with(&|d| d["metrics"][0]["metric"] = json!("made_up")),
            "metrics[0].metric",
            "not a primary, secondary or guardrail metric",
        ),
        (
            with(&|d| d["units"]["mystery"] = json!(3)),
            "units.mystery",
            "not a variant",
        ),
        (
            with(&|d| d["srm"]["expected"]["v7"] = json!(1.0)),
            "srm.expected.v7",
            "not a variant",
        ),
        (
            with(&|d| d["metrics"][0]["effects"][0]["variant"] = json!("v9")),
            "metrics[0].effects[0].variant",
            "not a variant",
        ),
        (
            with(&|d| d["metrics"][0]["variants"]["control"]["n"] = json!("many")),
            "metrics[0].variants.control.n",
            "",
        ),
        (
            with(&|d| {
                d.as_object_mut().unwrap().remove("srm");
            }),
            "srm",
            "",
        ),
    ];
    for (body, field, message) in cases {
        let (st, v) = s.post_as(&analyst, path, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(message), "{v}");
        assert!(!m.contains("strata_model") && !m.contains("Results"), "{v}");
    }

    // Guardrail and secondary metrics are accepted.
    let mut d = doc("exp_c", &ok, 1);
    let primary = d["metrics"][0].clone();
    for (metric, role) in [("revenue", "secondary"), ("page_load_p95", "guardrail")] {
        let mut m = primary.clone();
        m["metric"] = json!(metric);
        m["role"] = json!(role);
        d["metrics"].as_array_mut().unwrap().push(m);
    }
    let (st, v) = s.post_as(&analyst, path, d).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, v) = s.get(&format!("{path}/history")).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    s.finish().await;
}

async fn a_look_is_retracted(s: TestServer) {
    s.setup_registry().await;
    let analyst = s.key("api", Some("analyst"), "", "nightly").await;
    let experimenter = s
        .key("api", Some("experimenter"), "checkout", "alice")
        .await;
    let started = s.running("exp_x", json!({"range": [0, 100]}), 5.0).await;
    let path = "/api/v1/experiments/exp_x/results";
    let (early, late) = (after_start(&started, 1000), after_start(&started, 2000));
    let (st, first) = s.post_as(&analyst, path, doc("exp_x", &early, 1)).await;
    assert_eq!(st, StatusCode::CREATED, "{first}");
    let (st, second) = s.post_as(&analyst, path, doc("exp_x", &late, 2)).await;
    assert_eq!(st, StatusCode::CREATED, "{second}");
    let retract = format!("{path}/{}/retract", second["seq"]);

    // The experimenter publishes its team's results but does not retract them.
    let (st, v) = s
        .post_as(&experimenter, &retract, json!({"reason": "wrong data"}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["permission"], "results:retract");
    let (st, v) = s.post_as(&analyst, &retract, json!({"reason": " "})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "reason");
    let (st, v) = s
        .post_as(
            &analyst,
            &format!("{path}/999/retract"),
            json!({"reason": "r"}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    let (st, v) = s
        .post_as(
            &analyst,
            &retract,
            json!({"reason": "events double counted"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["seq"], second["seq"]);
    assert_eq!(v["retracted_by"], "nightly");
    assert_eq!(v["retract_reason"], "events double counted");
    assert!(v["retracted_at"].is_string(), "{v}");
    let (st, v) = s
        .post_as(&analyst, &retract, json!({"reason": "again"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");

    // Hidden from the latest, marked in the history and by seq.
    let (st, latest) = s.get(path).await;
    assert_eq!(st, StatusCode::OK, "{latest}");
    assert_eq!(latest["seq"], first["seq"]);
    assert!(latest.get("retracted_at").is_none(), "{latest}");
    let (_, one) = s.get(&format!("{path}/{}", second["seq"])).await;
    assert_eq!(one["retract_reason"], "events double counted");
    assert_eq!(one["results"]["units"]["control"], 2);
    let (_, history) = s.get(&format!("{path}/history")).await;
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["seq"], second["seq"]);
    assert_eq!(items[0]["retracted_by"], "nightly");
    assert!(items[1].get("retracted_at").is_none());

    let (_, audit) = s.get("/api/v1/audit?action=results.retract").await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["entity_key"], "exp_x");
    assert!(
        items[0]["detail"]
            .as_str()
            .unwrap()
            .contains("events double counted"),
        "{audit}"
    );

    // Every look retracted: no latest.
    let (st, v) = s
        .post_as(
            &analyst,
            &format!("{path}/{}/retract", first["seq"]),
            json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s.get(path).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    s.finish().await;
}

/// `doc` with the health checks of a look, `srm` set to `srm_status`.
fn doc_with_health(exp: &str, as_of: &str, srm_status: &str) -> Value {
    let mut d = doc(exp, as_of, 7);
    let checks: Vec<Value> = strata_model::results::HEALTH_CHECKS
        .iter()
        .map(|&c| {
            let status = if c == "srm" { srm_status } else { "ok" };
            json!({"check": c, "status": status, "figures": {"p_value": 1e-9},
                   "message": format!("{c} is {status}")})
        })
        .collect();
    d["health"] = Value::from(checks);
    d["decision"] = json!({"verdict": "unhealthy", "reasons": ["srm is fail"]});
    d
}

async fn failing_health_checks_are_audited_counted_and_pause_on_srm(s: TestServer) {
    s.setup_registry().await;
    let analyst = s.key("api", Some("analyst"), "", "nightly").await;
    let paused = s
        .running(
            "exp_p",
            json!({"range": [0, 100], "srm_action": "pause"}),
            5.0,
        )
        .await;
    let alerted = s.running("exp_a", json!({"range": [100, 200]}), 5.0).await;
    assert_eq!(alerted["srm_action"], "alert", "the default");

    // A healthy look changes nothing.
    let path = "/api/v1/experiments/exp_p/results";
    let (st, v) = s
        .post_as(
            &analyst,
            path,
            doc_with_health("exp_p", &after_start(&paused, 1000), "ok"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, e) = s.get("/api/v1/experiments/exp_p").await;
    assert_eq!(e["status"], "running");

    // A failing SRM check pauses exp_p as system:srm, audited with the look.
    let (st, look) = s
        .post_as(
            &analyst,
            path,
            doc_with_health("exp_p", &after_start(&paused, 2000), "fail"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{look}");
    let (_, e) = s.get("/api/v1/experiments/exp_p").await;
    assert_eq!(e["status"], "paused", "{e}");
    let (_, audit) = s.get("/api/v1/audit?entity=experiment:exp_p").await;
    let items = audit["items"].as_array().unwrap();
    let pause = items
        .iter()
        .find(|i| i["action"] == "experiment.pause")
        .expect("pause audited");
    assert_eq!(pause["actor"], "system:srm");
    let seq = look["seq"].as_u64().unwrap();
    assert!(
        pause["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("look {seq}")),
        "{pause}"
    );
    let failed: Vec<&Value> = items
        .iter()
        .filter(|i| i["action"] == "results.check_failed")
        .collect();
    assert_eq!(failed.len(), 1, "one failing check: {audit}");
    assert_eq!(failed[0]["detail"], format!("seq {seq}: srm: srm is fail"));
    assert_eq!(failed[0]["actor"], "nightly");

    // exp_a only alerts: audited, counted, still running — and alerted once
    // per episode: a mismatch that persists look after look is raised at
    // its first look, and again only after a look without it.
    for (ms, srm) in [(1000, "fail"), (2000, "fail"), (3000, "ok"), (4000, "fail")] {
        let (st, v) = s
            .post_as(
                &analyst,
                "/api/v1/experiments/exp_a/results",
                doc_with_health("exp_a", &after_start(&alerted, ms), srm),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (_, e) = s.get("/api/v1/experiments/exp_a").await;
    assert_eq!(e["status"], "running");
    let (_, audit) = s.get("/api/v1/audit?entity=experiment:exp_a").await;
    let alerts = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "alert.health.srm")
        .count();
    assert_eq!(alerts, 2, "{audit}");
    let metrics = s.metrics_text().await;
    for line in [
        r#"strata_health_checks{experiment="exp_p",check="srm",status="ok"} 1"#,
        r#"strata_health_checks{experiment="exp_p",check="srm",status="fail"} 1"#,
        r#"strata_health_checks{experiment="exp_a",check="srm",status="fail"} 3"#,
        r#"strata_health_checks{experiment="exp_p",check="novelty",status="ok"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // The history carries each look's summary for trend charts.
    let (_, history) = s.get("/api/v1/experiments/exp_p/results/history").await;
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{history}");
    assert_eq!(items[0]["seq"], look["seq"]);
    assert_eq!(
        items[0]["summary"],
        json!({"verdict": "unhealthy", "health": "fail", "units": 14,
               "primary": [{"variant": "treatment", "delta": 0.0, "ci": [-0.1, 0.1],
                            "relative": 0.0, "p_value": 1.0, "significant": false}]})
    );
    assert_eq!(items[1]["summary"]["health"], "ok");

    // Unknown checks and decision variants are refused, naming the field.
    let mut bad = doc_with_health("exp_a", &after_start(&alerted, 2000), "ok");
    bad["health"][3]["check"] = json!("vibes");
    let (st, v) = s
        .post_as(&analyst, "/api/v1/experiments/exp_a/results", bad)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "health[3].check");
    let mut bad = doc_with_health("exp_a", &after_start(&alerted, 2000), "ok");
    bad["decision"]["variant"] = json!("nope");
    let (st, v) = s
        .post_as(&analyst, "/api/v1/experiments/exp_a/results", bad)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "decision.variant");
    s.finish().await;
}
