//! The global holdout's impact end to end through the binary: three
//! experiments are concluded with winners of known lifts while a 5 %
//! holdout runs; then the visitors of the period are evaluated against the
//! served snapshot (strata-core, as an SDK would), log their holdout
//! exposures and convert as the shipped changes make them — everyone else
//! at the product of the three lifts over the holdout's rate. The holdout's
//! look, taken by `strata serve` itself, finds the planted cumulative lift
//! within its interval, lists the three winners with their own lifts, and
//! its contamination check passes — until held-out visitors are exposed to
//! a treatment, which fails it. A manual rotation ends the period; its
//! final look is taken and a new period starts with a new salt. (A
//! scheduled rotation is exercised by the demo's test, where days pass in
//! seconds.)

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scheduled::{post_records as post, start, until};
use crate::serve::{call, now_ms, token, Served, ADMIN};

/// The winners' planted lifts on conversion.
const LIFTS: [f64; 3] = [0.10, 0.05, 0.08];
const BASE_RATE: f64 = 0.20;
/// Units per variant of each winning experiment.
const PER_ARM: usize = 1000;
/// Visitors of the holdout phase.
const VISITORS: usize = 12_000;

fn ms(t: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_millis() as u64
}

/// Posts `rows` of `kind` in batches, below the collector's limit of
/// records per second from one address.
async fn post_all(c: &reqwest::Client, base: &str, ingest: &str, kind: &str, rows: Vec<Value>) {
    for chunk in rows.chunks(2000) {
        post(c, base, ingest, kind, chunk.to_vec()).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

async fn refresh(c: &reqwest::Client, url: String, who: &str) -> Value {
    until("a refreshed look", || async {
        let (s, v) = call(c, Method::POST, url.clone(), who, Some(json!({}))).await;
        assert!(
            s == StatusCode::CREATED || s == StatusCode::ACCEPTED,
            "refresh: {s} {v}"
        );
        (s == StatusCode::CREATED).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holdout_measures_what_the_shipped_winners_added_up_to() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let ingest = token(&dir, &["--kind", "ingest"]);
    let sdk = token(&dir, &["--kind", "sdk"]);
    let analyst = token(&dir, &["--role", "analyst"]);
    let lab = token(&dir, &["--role", "experimenter", "--team", "lab"]);
    let served = Served::start_with_in_runtime(&dir, &["--analysis-interval", "1h"]);
    let base = served.base.clone();
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{base}/api/v1/{p}");
    let metric = json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}});
    let (s, v) = call(&c, Method::POST, api("metrics"), &analyst, Some(metric)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(
        &c,
        Method::PUT,
        api("key-metrics"),
        &analyst,
        Some(json!({"metrics": ["nope"]})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("metrics[0]")),
        "{v}"
    );
    let (s, v) = call(
        &c,
        Method::PUT,
        api("key-metrics"),
        &analyst,
        Some(json!({"metrics": ["conversion"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, holdout) = call(
        &c,
        Method::PUT,
        api("holdout"),
        ADMIN,
        Some(json!({"percent": 5})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{holdout}");
    assert_eq!(holdout["period"], 1, "{holdout}");
    let period_start = ms(holdout["period_started_at"].as_str().unwrap());

    // Three experiments concluded with winners, each measured by its own
    // look at exactly its planted lift.
    for (k, lift) in LIFTS.iter().enumerate() {
        let key = format!("win_{k}");
        start(&c, &base, &lab, &key, json!({})).await;
        let (_, e) = call(
            &c,
            Method::GET,
            api(&format!("experiments/{key}")),
            &lab,
            None,
        )
        .await;
        let t0 = ms(e["started_at"].as_str().unwrap());
        let converters = |rate: f64| (rate * PER_ARM as f64).round() as usize;
        let mut exposures = Vec::new();
        let mut events = Vec::new();
        for (variant, rate) in [
            ("control", BASE_RATE),
            ("treatment", BASE_RATE * (1.0 + lift)),
        ] {
            for i in 0..PER_ARM {
                let unit = format!("{key}-{variant}-{i}");
                exposures.push(json!({"unit_id": unit, "experiment": key, "variant": variant, "ts": t0 + 1000}));
                if i < converters(rate) {
                    events.push(json!({"event_id": format!("{unit}-p"), "unit_id": unit, "type": "purchase", "ts": t0 + 2000}));
                }
            }
        }
        post_all(&c, &base, &ingest, "exposures", exposures).await;
        post_all(&c, &base, &ingest, "events", events).await;
        until("the events are in the past", || async {
            (now_ms() > t0 + 3000).then_some(())
        })
        .await;
        refresh(&c, api(&format!("experiments/{key}/results/refresh")), &lab).await;
        let (s, v) = call(
            &c,
            Method::POST,
            api(&format!("experiments/{key}/conclude")),
            &lab,
            Some(json!({"winner": "treatment"})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // An experiment still running, whose treatment a held-out visitor must
    // never see.
    start(&c, &base, &lab, "exp_leak", json!({})).await;

    // The period's visitors, evaluated as an SDK would.
    let (s, snapshot) = call(&c, Method::GET, format!("{base}/sdk/v1/config"), &sdk, None).await;
    assert_eq!(s, StatusCode::OK);
    let compiled = strata_core::CompiledSnapshot::from_json(&snapshot.to_string()).unwrap();
    let cumulative: f64 = LIFTS.iter().map(|l| 1.0 + l).product::<f64>() - 1.0;
    let mut held = Vec::new();
    let mut rest = Vec::new();
    for i in 0..VISITORS {
        let unit = format!("v{i}");
        let ctx = strata_core::Context::try_from(json!({"user_id": unit})).unwrap();
        let h = compiled.holdout_exposures(&ctx, None);
        assert_eq!(h.len(), 1, "one unit attribute");
        if h[0].held_out {
            held.push(unit);
        } else {
            rest.push(unit);
        }
    }
    let ts = period_start + 1000;
    let mut exposures = Vec::new();
    let mut events = Vec::new();
    let mut planted = |units: &[String], variant: &str, rate: f64| {
        let converters = (rate * units.len() as f64).round() as usize;
        for (i, u) in units.iter().enumerate() {
            exposures.push(
                json!({"unit_id": u, "experiment": "$holdout", "variant": variant, "ts": ts}),
            );
            if i < converters {
                events.push(json!({"event_id": format!("{u}-p"), "unit_id": u, "type": "purchase", "ts": ts + 1000}));
            }
        }
        converters as f64 / units.len() as f64
    };
    let holdout_rate = planted(&held, "holdout", BASE_RATE);
    let rest_rate = planted(&rest, "rest", BASE_RATE * (1.0 + cumulative));
    post_all(&c, &base, &ingest, "exposures", exposures).await;
    post_all(&c, &base, &ingest, "events", events).await;
    let (n_held, n_rest) = (held.len() as u64, rest.len() as u64);
    assert!((450..750).contains(&n_held), "5 % of {VISITORS}: {n_held}");

    let look = refresh(&c, api("holdout/impact/refresh"), ADMIN).await;
    assert_eq!(look, json!({"experiment": "$holdout", "seq": 1}));
    let (s, impact) = call(&c, Method::GET, api("holdout/impact"), &lab, None).await;
    assert_eq!(s, StatusCode::OK, "{impact}");
    assert_eq!(impact["key_metrics"], json!(["conversion"]));
    let period = &impact["periods"][0];
    assert_eq!(period["period"], 1);
    let l = &period["look"];
    assert_eq!(l["final_look"], false);
    let r = &l["results"];
    assert_eq!(
        r["units"],
        json!({"holdout": n_held, "rest": n_rest}),
        "{r}"
    );
    let m = &r["metrics"][0];
    assert_eq!(m["metric"], "conversion");
    for (v, rate) in [("holdout", holdout_rate), ("rest", rest_rate)] {
        let mean = m["variants"][v]["mean"].as_f64().unwrap();
        assert!((mean - rate).abs() < 1e-12, "{v}: {mean} against {rate}");
    }
    let effect = &m["effects"][0];
    assert_eq!(
        (effect["variant"].as_str(), effect["control"].as_str()),
        (Some("rest"), Some("holdout"))
    );
    let ci = effect["relative_ci"].as_array().unwrap();
    let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
    assert!(
        lo < cumulative && cumulative < hi,
        "planted {cumulative} outside [{lo}, {hi}]"
    );
    assert!(
        lo > 0.0,
        "the shipped changes' lift is detected: [{lo}, {hi}]"
    );
    assert_eq!(r["srm"]["flagged"], false, "{r}");
    let health = |r: &Value| {
        r["health"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["check"] == "holdout_contamination")
            .unwrap()
            .clone()
    };
    assert_eq!(health(r)["status"], "ok", "{r}");
    // The winners, with their own measured lifts, beside the holdout's.
    let a = &l["attribution"];
    let winners = a["winners"].as_array().unwrap();
    assert_eq!(winners.len(), 3, "{a}");
    for (k, lift) in LIFTS.iter().enumerate() {
        let w = winners
            .iter()
            .find(|w| w["experiment"] == format!("win_{k}"))
            .unwrap();
        assert_eq!(w["winner"], "treatment");
        let got = w["lifts"]["conversion"]["relative"].as_f64().unwrap();
        assert!((got - lift).abs() < 1e-9, "win_{k}: {got}");
    }
    let claimed = a["metrics"][0]["claimed_sum"].as_f64().unwrap();
    assert!((claimed - LIFTS.iter().sum::<f64>()).abs() < 1e-9, "{a}");
    assert_eq!(a["metrics"][0]["claimed_by"], 3);
    assert_eq!(a["metrics"][0]["measured"]["relative"], effect["relative"]);

    // Held-out visitors exposed to a running treatment: contamination.
    let leaked: Vec<Value> = held
        .iter()
        .take(12)
        .map(|u| json!({"unit_id": u, "experiment": "exp_leak", "variant": "treatment", "ts": ts + 500}))
        .collect();
    post(&c, &base, &ingest, "exposures", leaked).await;
    refresh(&c, api("holdout/impact/refresh"), ADMIN).await;
    let (_, impact) = call(&c, Method::GET, api("holdout/impact"), &lab, None).await;
    let l = &impact["periods"][0]["look"];
    assert_eq!(
        l["contamination"]["contaminated_units"], 12,
        "{}",
        l["contamination"]
    );
    assert_eq!(
        l["contamination"]["exposures"],
        json!([{"experiment": "exp_leak", "variant": "treatment", "units": 12}])
    );
    let check = health(&l["results"]);
    assert_eq!(check["status"], "fail", "{check}");

    // A manual rotation ends the period; the next run takes its final look
    // and the new period runs with a new salt.
    let (s, rotated) = call(
        &c,
        Method::POST,
        api("holdout/rotate"),
        ADMIN,
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["period"], 2);
    assert_ne!(rotated["salt"], holdout["salt"]);
    refresh(&c, api("holdout/impact/refresh"), ADMIN).await;
    let (_, impact) = call(&c, Method::GET, api("holdout/impact"), &lab, None).await;
    let periods = impact["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 2, "{impact}");
    let (now, old) = (&periods[0], &periods[1]);
    assert_eq!(
        (now["period"].as_u64(), now["salt"].clone()),
        (Some(2), rotated["salt"].clone())
    );
    assert!(now.get("ended_at").is_none());
    assert_eq!(old["ended_at"], rotated["period_started_at"]);
    let by = old["ended_by"].as_str().unwrap();
    assert!(
        !by.is_empty() && !by.starts_with("system:"),
        "ended by the admin: {old}"
    );
    assert_eq!(old["look"]["final_look"], true, "{old}");
    assert_eq!(old["look"]["as_of"], old["ended_at"]);
    assert_eq!(
        old["look"]["results"]["units"],
        json!({"holdout": n_held, "rest": n_rest})
    );
    // Final: a later run leaves it as it is.
    refresh(&c, api("holdout/impact/refresh"), ADMIN).await;
    let (_, again) = call(&c, Method::GET, api("holdout/impact"), &lab, None).await;
    assert_eq!(again["periods"][1], *old);
    served.terminate();
}
