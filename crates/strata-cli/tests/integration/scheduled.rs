//! Scheduled analysis end to end through the binary: records sent to
//! `/collect`, and looks that appear with no manual step — compacted,
//! analysed and published by `strata serve` itself, with health checks and a
//! decision; a failing experiment does not stop the others; a planted SRM
//! pauses an experiment with `srm_action: pause`; a refresh publishes a
//! look now; a restart continues the group-sequential sequence.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::serve::{call, now_ms, token, Served};

/// Creates and starts experiment `key` of team `lab` (control and
/// treatment, `conversion` on `purchase`) with `extra` fields.
pub(crate) async fn start(c: &reqwest::Client, base: &str, lab: &str, key: &str, extra: Value) {
    let api = |p: &str| format!("{base}/api/v1/{p}");
    let mut exp = json!({
        "key": key, "name": key, "owner_team": "lab", "unit": "user_id",
        "variants": [{"key": "control", "weight": 1, "control": true},
                     {"key": "treatment", "weight": 1}],
        "primary_metric": "conversion", "mde": 0.05, "planned_units": 600,
        "requires_approval": false
    });
    for (k, v) in extra.as_object().unwrap() {
        exp[k] = v.clone();
    }
    let (s, v) = call(c, Method::POST, api("experiments"), lab, Some(exp)).await;
    assert_eq!(s, StatusCode::CREATED, "create {key}: {v}");
    for action in ["submit", "start"] {
        let (s, v) = call(
            c,
            Method::POST,
            api(&format!("experiments/{key}/{action}")),
            lab,
            Some(json!({})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{action} {key}: {v}");
    }
}

/// Registers the metric `conversion`: a `purchase` event, per unit.
pub(crate) async fn create_conversion(c: &reqwest::Client, base: &str, analyst: &str) {
    let metric = json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}});
    let (s, v) = call(
        c,
        Method::POST,
        format!("{base}/api/v1/metrics"),
        analyst,
        Some(metric),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Sends `n` exposures of `key` from unit `from` on (`treatment` for every
/// `every`-th unit, else `control`) and a purchase for each treatment unit
/// and every third control unit.
pub(crate) async fn send(
    c: &reqwest::Client,
    base: &str,
    ingest: &str,
    key: &str,
    from: usize,
    n: usize,
    every: usize,
) {
    // After the start: events before it never count.
    let ts = now_ms();
    let variant = |i: usize| {
        if i % every == 0 {
            "treatment"
        } else {
            "control"
        }
    };
    let exposures: Vec<Value> = (from..from + n)
        .map(|i| json!({"unit_id": format!("{key}-u{i}"), "experiment": key, "variant": variant(i), "ts": ts}))
        .collect();
    let events: Vec<Value> = (from..from + n)
        .filter(|&i| variant(i) == "treatment" || i % 3 == 0)
        .map(|i| {
            json!({"event_id": format!("{key}-p{i}"), "unit_id": format!("{key}-u{i}"),
                        "type": "purchase", "ts": ts + 1000})
        })
        .collect();
    for (kind, body) in [("exposures", exposures), ("events", events)] {
        post_records(c, base, ingest, kind, body).await;
    }
}

/// Sends `body` to `/collect/v1/{kind}` and checks every record was
/// accepted.
pub(crate) async fn post_records(
    c: &reqwest::Client,
    base: &str,
    ingest: &str,
    kind: &str,
    body: Vec<Value>,
) {
    let n = body.len();
    let (s, v) = call(
        c,
        Method::POST,
        format!("{base}/collect/v1/{kind}"),
        ingest,
        Some(Value::from(body)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{kind}: {v}");
    assert_eq!(v["accepted"], n, "{kind}: {v}");
}

/// Waits until `check` returns a value (polling every 200 ms, at most 90 s).
pub(crate) async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    until_within(Duration::from_secs(90), what, check).await
}

/// [`until`] with a limit of `limit`.
pub(crate) async fn until_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The latest look of `key` whose seq is above `after`.
async fn look_after(c: &reqwest::Client, base: &str, tok: &str, key: &str, after: u64) -> Value {
    look_with(c, base, tok, key, after, 0).await
}

/// The latest look of `key` after look `after` that counts `units` units
/// and the purchases sent for them (the data is sent in two requests, so a
/// run may fall between them).
pub(crate) async fn look_with(
    c: &reqwest::Client,
    base: &str,
    tok: &str,
    key: &str,
    after: u64,
    units: u64,
) -> Value {
    until(
        &format!("a look of {key} after {after} with {units} units"),
        || async {
            let (s, v) = call(
                c,
                Method::GET,
                format!("{base}/api/v1/experiments/{key}/results"),
                tok,
                None,
            )
            .await;
            let r = &v["results"];
            let n: u64 = ["control", "treatment"]
                .iter()
                .filter_map(|k| r["units"][k].as_u64())
                .sum();
            let converted = r["metrics"][0]["variants"]["treatment"]["mean"].as_f64() > Some(0.0);
            (s == StatusCode::OK
                && v["seq"].as_u64() > Some(after)
                && (units == 0 || (n == units && converted)))
                .then_some(v)
        },
    )
    .await
}

fn primary_sequential(look: &Value) -> &Value {
    &look["results"]["metrics"][0]["effects"][0]["sequential"]
}

/// One request a webhook receiver got: its headers (lowercase names) and body.
pub(crate) type Received = (Vec<(String, String)>, String);

/// A webhook receiver on loopback: answers `500` to the first request (so
/// the sender must retry) and `200` to the next ones, and hands every
/// request to the returned channel.
pub(crate) async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let mut r = BufReader::new(stream);
            let mut headers = Vec::new();
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).await.unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            r.read_exact(&mut body).await.unwrap();
            n += 1;
            let status = if n == 1 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let answer =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            r.get_mut().write_all(answer.as_bytes()).await.unwrap();
            let _ = tx.send((headers, String::from_utf8(body).unwrap()));
        }
    });
    (url, rx)
}

/// A portal page as `token`'s holder sees it, signed in through the form.
async fn portal_page(base: &str, token: &str, path: &str) -> String {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = c.get(format!("{base}/login")).send().await.unwrap();
    let login = form.headers()["set-cookie"].to_str().unwrap();
    let login = login.split(';').next().unwrap().to_owned();
    let csrf = login.split_once('=').unwrap().1.to_owned();
    let signed = c
        .post(format!("{base}/login"))
        .header("cookie", &login)
        .form(&[("token", token), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let session = signed.headers()["set-cookie"].to_str().unwrap();
    let session = session.split(';').next().unwrap().to_owned();
    let page = c
        .get(format!("{base}{path}"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    page.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looks_are_published_on_a_schedule_with_health_and_a_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let ingest = token(&dir, &["--kind", "ingest"]);
    let analyst = token(&dir, &["--role", "analyst"]);
    let lab = token(&dir, &["--role", "experimenter", "--team", "lab"]);
    let admin = token(&dir, &["--role", "admin"]);
    // Under a memory limit, as a production server runs.
    let served = Served::start_with(
        &dir,
        &[
            "--analysis-interval",
            "2s",
            "--analysis-memory-limit-mb",
            "256",
        ],
    );
    let base = served.base.clone();
    let c = reqwest::Client::new();
    // Alerts of SRM and automatic pauses go to a webhook.
    let (hook_url, mut hook) = receiver().await;
    const SECRET: &str = "a-shared-secret-of-some-length";
    let (s, v) = call(
        &c,
        Method::POST,
        format!("{base}/api/v1/alerts/webhooks"),
        &admin,
        Some(json!({"url": hook_url, "secret": SECRET,
            "events": ["health.srm", "experiment.auto_paused", "analysis.failed"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v.get("secret").is_none(), "{v}");
    create_conversion(&c, &base, &analyst).await;
    start(
        &c,
        &base,
        &lab,
        "exp_seq",
        json!({"sequential": "group_sequential"}),
    )
    .await;
    start(&c, &base, &lab, "exp_srm", json!({"srm_action": "pause"})).await;
    // Started, but no exposure ever arrives: its analysis fails every run.
    start(&c, &base, &lab, "exp_silent", json!({})).await;

    // exp_seq: 200 units split evenly; exp_srm: 3 control units per treatment one.
    send(&c, &base, &ingest, "exp_seq", 0, 200, 2).await;
    send(&c, &base, &ingest, "exp_srm", 0, 400, 4).await;

    let first = look_with(&c, &base, &lab, "exp_seq", 0, 200).await;
    assert_eq!(first["published_by"], "system:analysis", "{first}");
    let r = &first["results"];
    assert_eq!(
        r["units"]["control"].as_u64().unwrap() + r["units"]["treatment"].as_u64().unwrap(),
        200,
        "every acknowledged exposure is in the look: {r}"
    );
    let checks: Vec<&str> = r["health"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, strata_model::results::HEALTH_CHECKS);
    // The experiment started moments ago: far from its minimum duration.
    assert_eq!(r["health"][4]["status"], "warn", "{}", r["health"]);
    assert!(
        ["keep_running", "roll_back"].contains(&r["decision"]["verdict"].as_str().unwrap()),
        "{}",
        r["decision"]
    );
    let seq = primary_sequential(&first);
    assert_eq!(seq["method"], "group_sequential");
    let f1 = seq["information_fraction"].as_f64().unwrap();
    assert!((f1 - 200.0 / 600.0).abs() < 1e-9, "{seq}");

    // The planted SRM fails its check and pauses exp_srm.
    let srm = look_with(&c, &base, &analyst, "exp_srm", 0, 400).await;
    assert_eq!(
        srm["results"]["health"][0]["status"], "fail",
        "{}",
        srm["results"]["health"]
    );
    assert_eq!(srm["results"]["decision"]["verdict"], "unhealthy");
    let paused = until("exp_srm paused", || async {
        let (_, e) = call(
            &c,
            Method::GET,
            format!("{base}/api/v1/experiments/exp_srm"),
            &lab,
            None,
        )
        .await;
        (e["status"] == "paused").then_some(e)
    })
    .await;
    assert_eq!(paused["status"], "paused");

    // The webhook received the alerts, signed; the first attempt (answered
    // 500) was retried.
    let mut events = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(events.contains("health.srm") && events.contains("experiment.auto_paused")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (headers, body) = tokio::time::timeout(left, hook.recv())
            .await
            .unwrap_or_else(|_| panic!("alerts received so far: {events:?}"))
            .unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            header("x-strata-signature"),
            strata_server::service::alerts::signature(SECRET, &body),
            "{body}"
        );
        let alert: Value = serde_json::from_str(&body).unwrap();
        assert!(
            alert["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{alert}"
        );
        assert_eq!(alert["event"].as_str().unwrap(), header("x-strata-event"));
        if alert["experiment"] == "exp_srm" {
            events.insert(alert["event"].as_str().unwrap().to_owned());
        }
    }
    until("a delivery retried once, then delivered", || async {
        let (s, d) = call(
            &c,
            Method::GET,
            format!("{base}/api/v1/alerts/deliveries"),
            &admin,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{d}");
        d["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["status"] == "delivered" && i["attempts"] == 2)
            .then_some(())
    })
    .await;
    let (s, _) = call(
        &c,
        Method::GET,
        format!("{base}/api/v1/alerts/deliveries"),
        &lab,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // exp_silent fails, the others are published; its health says why.
    let h = until("the failure of exp_silent", || async {
        let (s, h) = call(
            &c,
            Method::GET,
            format!("{base}/api/v1/experiments/exp_silent/health"),
            &lab,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{h}");
        (!h["analysis_error"].is_null()).then_some(h)
    })
    .await;
    assert!(h["seq"].is_null(), "{h}");
    // The portal of the same process says when the next scheduled run is.
    let page = portal_page(&base, &lab, "/experiments/exp_silent/results").await;
    assert!(
        (page.contains("no looks yet: the next scheduled analysis runs at")
            || page.contains("no looks yet: a scheduled analysis is due now"))
            && page.contains("then every 2 s"),
        "{page}"
    );
    let (s, runs) = call(
        &c,
        Method::GET,
        format!("{base}/api/v1/analysis/runs"),
        &lab,
        None,
    )
    .await;
    let error = h["analysis_error"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("exp_silent"), "{h} {runs}");
    assert_eq!(s, StatusCode::OK, "{runs}");
    let run = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["published"].as_array().is_some_and(|p| !p.is_empty()) && !r["ended_at"].is_null()
        })
        .expect("a finished run that published");
    assert!(
        run["failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["experiment"] == "exp_silent"),
        "{run}"
    );
    // The health of a published experiment is its latest look's.
    let (_, h) = call(
        &c,
        Method::GET,
        format!("{base}/api/v1/experiments/exp_seq/health"),
        &lab,
        None,
    )
    .await;
    assert_eq!(
        h["health"].as_array().unwrap().len(),
        strata_model::results::HEALTH_CHECKS.len(),
        "{h}"
    );
    assert!(h["analysis_error"].is_null(), "{h}");

    // A refresh publishes a look now and answers with it.
    let (s, v) = call(
        &c,
        Method::POST,
        format!("{base}/api/v1/experiments/exp_seq/results/refresh"),
        &lab,
        None,
    )
    .await;
    assert!(
        s == StatusCode::CREATED || s == StatusCode::ACCEPTED,
        "{s} {v}"
    );
    // Viewers may not ask for one.
    let viewer = token(&dir, &["--role", "viewer", "--team", "lab"]);
    let (s, v) = call(
        &c,
        Method::POST,
        format!("{base}/api/v1/experiments/exp_seq/results/refresh"),
        &viewer,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // A restart continues the sequence: 200 more units, then the next look
    // boundary accounts for the looks before it.
    let last = look_after(&c, &base, &lab, "exp_seq", 0).await["seq"]
        .as_u64()
        .unwrap();
    let (_, runs) = call(
        &c,
        Method::GET,
        format!("{base}/api/v1/analysis/runs"),
        &lab,
        None,
    )
    .await;
    let ids = |runs: &Value| -> Vec<u64> {
        runs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !r["ended_at"].is_null())
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    };
    let before = ids(&runs);
    // Each run with experiments refreshed the kept shared rollup: the
    // first in full, later ones keeping what had not changed (the full
    // recomputation is a day apart), never finding a kept day wrong.
    let refreshes: Vec<&Value> = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["ended_at"].is_null())
        .filter_map(|r| r.get("rollup"))
        .collect();
    assert!(refreshes.len() >= 2, "{runs}");
    assert!(refreshes.iter().any(|r| r["full"] == true), "{runs}");
    assert!(refreshes.iter().any(|r| r["full"] == false), "{runs}");
    assert!(
        refreshes
            .iter()
            .all(|r| r["mismatched"] == serde_json::json!([])
                && r["recomputed"].as_u64() <= r["days"].as_u64()),
        "{runs}"
    );
    tokio::task::block_in_place(|| served.terminate());
    let served = Served::start_with_in_runtime(&dir, &["--analysis-interval", "2s"]);
    let base = served.base.clone();
    // The runs and exp_silent's failure outlive the restart (once the
    // scheduler has taken them up); run numbers go on after the last.
    until("the stored runs after the restart", || async {
        let (_, runs) = call(
            &c,
            Method::GET,
            format!("{base}/api/v1/analysis/runs"),
            &lab,
            None,
        )
        .await;
        let after = ids(&runs);
        before.iter().all(|id| after.contains(id)).then_some(())
    })
    .await;
    let (_, h) = call(
        &c,
        Method::GET,
        format!("{base}/api/v1/experiments/exp_silent/health"),
        &lab,
        None,
    )
    .await;
    assert!(
        h["analysis_error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("exp_silent")),
        "{h}"
    );
    let newest = until("a run after the restart", || async {
        let (_, runs) = call(
            &c,
            Method::GET,
            format!("{base}/api/v1/analysis/runs"),
            &lab,
            None,
        )
        .await;
        ids(&runs).into_iter().find(|id| !before.contains(id))
    })
    .await;
    assert!(before.iter().all(|&id| id < newest), "{before:?} {newest}");
    send(&c, &base, &ingest, "exp_seq", 200, 200, 2).await;
    let next = look_with(&c, &base, &lab, "exp_seq", last, 400).await;
    let seq = primary_sequential(&next);
    let f2 = seq["information_fraction"].as_f64().unwrap();
    assert!((f2 - 400.0 / 600.0).abs() < 1e-9, "{seq}");
    let previous: Vec<f64> = seq["previous_fractions"]
        .as_array()
        .unwrap_or_else(|| panic!("previous looks in {seq}"))
        .iter()
        .map(|f| f.as_f64().unwrap())
        .collect();
    assert_eq!(previous.len(), 1, "{seq}");
    assert!((previous[0] - f1).abs() < 1e-9, "{seq}");
    tokio::task::block_in_place(|| served.terminate());
}
