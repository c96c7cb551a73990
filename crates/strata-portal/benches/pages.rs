//! How long the server takes to render the portal's heaviest pages, against
//! the JSON API's answer for the same data (figures: `docs/performance.md`).
//!
//! ```text
//! cargo bench -p strata-portal --bench pages -- [EXPERIMENTS] [METRICS] [LOOKS] [REQUESTS]
//! ```
//!
//! Starts `strata serve`'s control plane with the portal on SQLite in a
//! temp dir (no event pipeline), creates EXPERIMENTS experiments (default
//! 3000) in process, and one running experiment with METRICS metrics
//! (default 20) and LOOKS published looks (default 300); signs in through
//! the form; then times REQUESTS (default 200) sequential requests over one
//! loopback connection of each of: the experiments page (first page, and a
//! text search), the results page, and as peers the API's list
//! (`GET /api/v1/experiments?limit=50`) and the API's latest look and
//! history of the experiment — what a client rendering the same page from
//! the API would need.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_portal::{Portal, PortalSettings};
use strata_server::auth::Perm;
use strata_server::model::ExperimentRequest;
use strata_server::service::{ActParams, Action, Actor, ExperimentService};
use strata_server::{Server, ServerConfig, Settings, StoreOptions};

const ADMIN: &str = "bench-admin-token";

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .filter(|a| !a.starts_with("--"))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn time(
    client: &reqwest::Client,
    label: &str,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let mut rb = client.get(url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let t = Instant::now();
        let resp = rb.send().await.unwrap();
        assert!(resp.status().is_success(), "{label}: {}", resp.status());
        let body = resp.bytes().await.unwrap();
        times.push(t.elapsed());
        bytes = body.len();
    }
    times.sort();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "{label:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  {:>7} bytes",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        bytes
    );
    (p50, p99, bytes)
}

fn main() {
    let experiments = arg(1, 3000);
    let metrics = arg(2, 20);
    let looks = arg(3, 300);
    let requests = arg(4, 200);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(experiments, metrics, looks, requests));
}

async fn run(experiments: usize, metrics: usize, looks: usize, requests: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let prepared = Server::prepare(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: StoreOptions {
            data_dir: tmp.path().to_path_buf(),
            database_url: None,
            max_connections: 8,
            snapshot_retention: 10,
        },
        settings: Settings {
            rate_limit: 0.0,
            sdk_rate_limit: 0.0,
            ..Settings::default()
        },
        bootstrap_admin_token: Some(ADMIN.to_owned()),
    })
    .await
    .unwrap();
    let state = prepared.state().clone();
    let portal = Portal::new(state.clone(), PortalSettings::default());
    let server = prepared.mount(Arc::new(portal)).serve().await.unwrap();
    let base = format!("http://{}", server.addr);
    let api = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let api = api.clone();
        let base = base.clone();
        async move {
            let r = api
                .post(format!("{base}{path}"))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert!(s.is_success(), "{path}: {s} {v}");
            v
        }
    };
    // The registry: METRICS metrics, and 20 layers for the experiments.
    let t = Instant::now();
    for m in 0..metrics {
        post(
            "/api/v1/metrics".into(),
            json!({"key": format!("m{m}"), "type": "binomial", "filter": {"type": format!("e{m}")}}),
        )
        .await;
    }
    for l in 0..20 {
        post(
            "/api/v1/layers".into(),
            json!({"key": format!("layer_{l}")}),
        )
        .await;
    }
    // EXPERIMENTS drafts, created in process through the service.
    let actor = Actor::system("bench").granting([Perm::ExperimentsWrite, Perm::Read]);
    let service = ExperimentService::new(state.clone());
    for i in 0..experiments {
        let req: ExperimentRequest = serde_json::from_value(json!({
            "key": format!("exp_{i:05}"), "name": format!("Experiment {i}"),
            "hypothesis": format!("change {i} improves conversion"),
            "owner_team": format!("team_{}", i % 12), "layer": format!("layer_{}", i % 20), "size": 5,
            "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
            "primary_metric": "m0", "mde": 0.02, "planned_units": 100000
        }))
        .unwrap();
        service.create(&actor, req).await.unwrap();
    }
    // One running experiment with METRICS metrics and LOOKS looks.
    let secondary: Vec<String> = (1..metrics).map(|m| format!("m{m}")).collect();
    let heavy: ExperimentRequest = serde_json::from_value(json!({
        "key": "heavy", "name": "Heavy", "hypothesis": "h", "owner_team": "bench",
        "layer": "layer_0", "size": 10, "primary_metric": "m0", "secondary_metrics": secondary,
        "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
        "mde": 0.02, "planned_units": 100000, "sequential": "group_sequential"
    }))
    .unwrap();
    service.create(&actor, heavy).await.unwrap();
    service
        .act(&actor, "heavy", Action::Submit, ActParams::default())
        .await
        .unwrap();
    let started = service
        .act(
            &actor,
            "heavy",
            Action::Start,
            ActParams {
                ramp_percent: Some(100.0),
                ..ActParams::default()
            },
        )
        .await
        .unwrap();
    let start =
        chrono::DateTime::parse_from_rfc3339(started.started_at.as_deref().unwrap()).unwrap();
    for look in 1..=looks {
        let as_of = (start + chrono::Duration::milliseconds(look as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        post(
            "/api/v1/experiments/heavy/results".into(),
            document(&as_of, &start.to_rfc3339(), metrics, look),
        )
        .await;
    }
    eprintln!(
        "seeded {experiments} experiments, {metrics} metrics, {looks} looks in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Sign in through the form, as a browser.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // `name=value` of an answer's cookie.
    let cookie_of = |r: &reqwest::Response| {
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    };
    let form = browser.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = cookie_of(&form);
    let csrf = login_cookie.split_once('=').unwrap().1.to_owned();
    let signed = browser
        .post(format!("{base}/login"))
        .header("cookie", &login_cookie)
        .form(&[("token", ADMIN), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let session = cookie_of(&signed);
    let cookie = [("cookie", session.as_str())];
    let bearer = format!("Bearer {ADMIN}");
    let auth = [("authorization", bearer.as_str())];
    println!("{experiments} experiments; results page of {metrics} metrics × {looks} looks; {requests} requests each, sequential, loopback");
    time(
        &browser,
        "portal GET /experiments",
        &format!("{base}/experiments"),
        &cookie,
        requests,
    )
    .await;
    time(
        &api,
        "  peer: API GET /api/v1/experiments?limit=50",
        &format!("{base}/api/v1/experiments?limit=50"),
        &auth,
        requests,
    )
    .await;
    time(
        &browser,
        "portal GET /experiments?q=change 2999",
        &format!("{base}/experiments?q=change+2999"),
        &cookie,
        requests,
    )
    .await;
    time(
        &browser,
        "portal GET /experiments/heavy/results",
        &format!("{base}/experiments/heavy/results"),
        &cookie,
        requests,
    )
    .await;
    time(
        &api,
        "  peer: API latest look",
        &format!("{base}/api/v1/experiments/heavy/results"),
        &auth,
        requests,
    )
    .await;
    time(
        &api,
        "  peer: API look history",
        &format!("{base}/api/v1/experiments/heavy/results/history"),
        &auth,
        requests,
    )
    .await;
    server.stop().await.unwrap();
}

/// A results document of `heavy` with `metrics` metrics, as the analysis
/// writes it.
fn document(as_of: &str, start: &str, metrics: usize, look: usize) -> Value {
    let n = 1000 * look as u64;
    let effect = |m: usize| {
        let d = 0.001 * (m as f64 + 1.0);
        json!({"variant": "treatment", "control": "control", "delta": d, "ci": [d - 0.01, d + 0.01],
               "relative": d * 10.0, "relative_ci": [d * 10.0 - 0.1, d * 10.0 + 0.1], "p_value": 0.2,
               "adjusted_p_value": if m == 0 { Value::Null } else { json!(0.4) }, "significant": false,
               "tier": "not_significant", "cuped": null,
               "sequential": if m == 0 { json!({"method": "group_sequential", "information_fraction": 0.5, "z": 1.2, "boundary": 2.9, "decision": "continue"}) } else { Value::Null },
               "warnings": []})
    };
    let variants = json!({"control": {"n": n, "mean": 0.1, "variance": 0.09},
                          "treatment": {"n": n, "mean": 0.101, "variance": 0.09}});
    let metric_docs: Vec<Value> = (0..metrics)
        .map(|m| {
            json!({"metric": format!("m{m}"), "role": if m == 0 { "primary" } else { "secondary" },
                        "type": "binomial", "direction": "increase_is_good",
                        "variants": variants, "effects": [effect(m)]})
        })
        .collect();
    json!({"experiment": "heavy", "as_of": as_of, "start": start, "analysis": "itt",
           "units": {"control": n, "treatment": n},
           "srm": {"chi2": 0.1, "df": 1, "p_value": 0.75, "flagged": false,
                   "observed": {"control": n, "treatment": n}, "expected": {"control": n as f64, "treatment": n as f64}},
           "metrics": metric_docs, "segments": {}, "novelty": null, "warnings": [],
           "health": [{"check": "srm", "status": "ok", "figures": {"p_value": 0.75}, "message": "unit counts match the weights"}],
           "decision": {"verdict": "keep_running", "reasons": ["not enough evidence yet"], "days_left": 5.0}})
}
