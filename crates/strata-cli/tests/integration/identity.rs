//! Identity changes and bots in a scheduled look, end to end through the
//! binary: visitors exposed under their device id sign in (aliases sent to
//! `/collect/v1/aliases`) and buy under their user id; one device sends
//! more events a day than the organisation's stored bot limit allows. The
//! look `strata serve` publishes by itself counts each person once, in the
//! variant of their first exposure, with their purchases, and leaves the bot
//! out — figures checked against a reference computed here from the rows
//! sent. `strata analyze --server` of the same data, with the server's
//! registry and limits, agrees with the scheduled look.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scheduled::{post_records as post, start, until};
use crate::serve::{call, now_ms, token, Served};

const DEVICES: usize = 100;
/// The device whose page views go over the stored per-day limit.
const BOT: usize = 2;
/// Page views the bot sends (the stored limit is 50 a day).
const BOT_EVENTS: usize = 60;

fn treatment(i: usize) -> bool {
    i % 2 == 1
}

fn signs_in(i: usize) -> bool {
    i % 5 != 4
}

/// A treatment visitor buys after signing in (under the user id); a
/// control visitor buys (every fourth) before, under the device id.
fn buyer_id(i: usize) -> Option<String> {
    if treatment(i) {
        signs_in(i).then(|| format!("u{i}"))
    } else {
        (i % 4 == 0).then(|| format!("d{i}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_join_a_persons_records_and_stored_bot_limits_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let ingest = token(&dir, &["--kind", "ingest"]);
    let analyst = token(&dir, &["--role", "analyst"]);
    let lab = token(&dir, &["--role", "experimenter", "--team", "lab"]);
    let served = Served::start_with(&dir, &["--analysis-interval", "2s"]);
    let base = served.base.clone();
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{base}/api/v1/{p}");
    let (s, v) = call(
        &c,
        Method::POST,
        api("metrics"),
        &analyst,
        Some(json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Far below the default (20,000 a day): only the stored limit catches
    // the bot.
    let (s, v) = call(
        &c,
        Method::PUT,
        api("bot-detection"),
        &analyst,
        Some(json!({"per_day": 50})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    start(&c, &base, &lab, "exp_signin", json!({})).await;

    let ts = now_ms();
    let variant = |i: usize| if treatment(i) { "treatment" } else { "control" };
    let mut exposures: Vec<Value> = (0..DEVICES)
        .map(|i| json!({"unit_id": format!("d{i}"), "experiment": "exp_signin", "variant": variant(i), "ts": ts}))
        .collect();
    // Visitor 3 (treatment) is evaluated again once signed in and lands in
    // control: the first exposure keeps them in treatment.
    exposures.push(
        json!({"unit_id": "u3", "experiment": "exp_signin", "variant": "control", "ts": ts + 3000}),
    );
    post(&c, &base, &ingest, "exposures", exposures).await;
    let aliases: Vec<Value> = (0..DEVICES)
        .filter(|&i| signs_in(i))
        .map(|i| json!({"anonymous_id": format!("d{i}"), "user_id": format!("u{i}"), "ts": ts + 1000}))
        .collect();
    post(&c, &base, &ingest, "aliases", aliases).await;
    let mut events: Vec<Value> = (0..DEVICES)
        .filter_map(|i| {
            let id = buyer_id(i)?;
            Some(json!({"event_id": format!("p{i}"), "unit_id": id, "type": "purchase", "ts": ts + 2000}))
        })
        .collect();
    events.extend((0..BOT_EVENTS).map(|j| {
        json!({"event_id": format!("bot-{j}"), "unit_id": format!("d{BOT}"), "type": "page_view", "ts": ts + 500})
    }));
    post(&c, &base, &ingest, "events", events).await;

    // The reference, from the rows sent: every device is one person in the
    // variant of its first exposure; the bot is left out.
    let people: Vec<usize> = (0..DEVICES).filter(|&i| i != BOT).collect();
    let count = |t: bool| people.iter().filter(|&&i| treatment(i) == t).count() as u64;
    let rate = |t: bool| {
        let of: Vec<&usize> = people.iter().filter(|&&i| treatment(i) == t).collect();
        of.iter().filter(|&&&i| buyer_id(i).is_some()).count() as f64 / of.len() as f64
    };
    let (n_control, n_treatment) = (count(false), count(true));
    assert_eq!((n_control, n_treatment), (49, 50));

    let look = until("a look with every record", || async {
        let (s, v) = call(
            &c,
            Method::GET,
            api("experiments/exp_signin/results"),
            &lab,
            None,
        )
        .await;
        let r = &v["results"];
        (s == StatusCode::OK
            && r["units"]["control"].as_u64() == Some(n_control)
            && r["units"]["treatment"].as_u64() == Some(n_treatment)
            && r["metrics"][0]["variants"]["treatment"]["mean"].as_f64() > Some(0.0))
        .then_some(v)
    })
    .await;
    let r = &look["results"];
    let mean = |v: &str| r["metrics"][0]["variants"][v]["mean"].as_f64().unwrap();
    assert!((mean("treatment") - rate(true)).abs() < 1e-12, "{r}");
    assert!((mean("control") - rate(false)).abs() < 1e-12, "{r}");
    // Without the aliases the signed-in purchases would belong to no
    // exposed unit, and u3 would be a control unit of its own.
    assert!(rate(true) > 0.5);
    assert_eq!(
        r["bot_exclusion"]["excluded"],
        json!({"control": 1, "treatment": 0}),
        "{r}"
    );

    // A manual look from the stored definition, registry and limits is
    // the scheduled one.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(["analyze", "--server", &base, "--token", &analyst])
        .args(["--experiment", "exp_signin", "--data"])
        .arg(&dir);
    let out = tokio::task::block_in_place(|| cmd.output().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manual: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manual["units"], r["units"]);
    assert_eq!(manual["bot_exclusion"], r["bot_exclusion"]);
    assert_eq!(
        manual["metrics"][0]["variants"]["treatment"]["mean"],
        r["metrics"][0]["variants"]["treatment"]["mean"]
    );
    served.terminate();
}
