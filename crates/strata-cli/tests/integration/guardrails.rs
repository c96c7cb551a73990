//! The guardrail monitor end to end through the binary, with real
//! ingestion and a one-minute guardrail window, replaying the design's
//! incidents:
//!
//! * a real 5× error-rate regression is killed at the first evaluation
//!   after its gates open; the webhook receives the breach and the kill,
//!   signed; an SDK on the stream serves the default within a second; the
//!   evaluation replays to the same decision;
//! * an A/A experiment checked every two seconds all along is never killed
//!   (the budget over a simulated day of checks is the unit test
//!   `a_day_of_a_a_checks_stays_within_the_budget`);
//! * an experiment that requires approval is alerted, not killed, and
//!   killed when a person confirms;
//! * a young experiment (the age gate) and one whose treatment events have
//!   not arrived (the volume gate) are never killed, and their skips name
//!   the gate;
//! * one user partition 30 minutes behind holds a revenue guardrail's kill
//!   (a recorded skip naming the gate, a `data.stale` alert) until the
//!   partition catches up;
//! * a ramp plan holds while its guardrail cannot be judged, advances once
//!   it is green and a healthy look was taken since the stage began
//!   (audited as the monitor), and waits out a stage's hours.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scheduled::{receiver, until, until_within, Received};
use crate::serve::{call, now_ms, token, Served, ADMIN};

const SECRET: &str = "a-guardrail-webhook-secret";

/// How long a unit's one-minute window, the monitor's 30 s delivery
/// allowance and a cycle or two may take.
const MATURE: Duration = Duration::from_secs(240);

struct Env {
    c: reqwest::Client,
    base: String,
    ingest: String,
    lab: String,
}

impl Env {
    fn api(&self, p: &str) -> String {
        format!("{}/api/v1/{p}", self.base)
    }

    async fn ok(&self, method: Method, path: &str, tok: &str, body: Value) -> Value {
        let (s, v) = call(&self.c, method, self.api(path), tok, Some(body)).await;
        assert!(s.is_success(), "{path}: {s} {v}");
        v
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = call(&self.c, Method::GET, self.api(path), &self.lab, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        v
    }

    /// Creates experiment `key` of team `lab` (50/50) watching `guardrails`
    /// and starts it at 100 %; one that requires approval is approved by
    /// the admin first.
    async fn start(&self, key: &str, guardrails: &[&str], requires_approval: bool) -> Value {
        let extra = json!({"guardrails": guardrails, "requires_approval": requires_approval});
        self.start_with(key, extra, json!({"ramp_percent": 100}))
            .await
    }

    /// [`Env::start`] with `extra` fields of the experiment and `start` as
    /// the body of the start action.
    async fn start_with(&self, key: &str, extra: Value, start: Value) -> Value {
        let mut exp = json!({
            "key": key, "name": key, "owner_team": "lab", "unit": "user_id",
            "variants": [{"key": "control", "weight": 1, "control": true},
                         {"key": "treatment", "weight": 1}],
            "primary_metric": "errors",
            "mde": 0.05, "planned_units": 2000, "requires_approval": false
        });
        for (k, v) in extra.as_object().unwrap() {
            exp[k] = v.clone();
        }
        let requires_approval = exp["requires_approval"] == true;
        self.ok(Method::POST, "experiments", &self.lab, exp).await;
        self.ok(
            Method::POST,
            &format!("experiments/{key}/submit"),
            &self.lab,
            json!({}),
        )
        .await;
        if requires_approval {
            self.ok(
                Method::POST,
                &format!("experiments/{key}/approve"),
                ADMIN,
                json!({}),
            )
            .await;
        }
        self.ok(
            Method::POST,
            &format!("experiments/{key}/start"),
            &self.lab,
            start,
        )
        .await
    }

    async fn collect(&self, kind: &str, body: Vec<Value>) {
        for chunk in body.chunks(2000) {
            let (s, v) = call(
                &self.c,
                Method::POST,
                format!("{}/collect/v1/{kind}", self.base),
                &self.ingest,
                Some(Value::from(chunk.to_vec())),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(v["accepted"], chunk.len(), "{v}");
            // Under the collector's 10,000 records per second per address.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Sends `n` units per variant of `key` exposed now, each with a page
    /// view; `errors[v]` of variant v's units (the first ones) have an error
    /// and `purchases[v]` a purchase of value 10. Variants with `silent[v]`
    /// send no events at all (they have not arrived); the events of the
    /// units `held` holds back are returned instead of sent.
    async fn traffic(
        &self,
        key: &str,
        n: usize,
        errors: [usize; 2],
        purchases: [usize; 2],
        silent: [bool; 2],
        held: &dyn Fn(&str) -> bool,
    ) -> Vec<Value> {
        let ts = now_ms();
        let mut exposures = Vec::new();
        let mut events = Vec::new();
        let mut later = Vec::new();
        for (vi, variant) in ["control", "treatment"].iter().enumerate() {
            for i in 0..n {
                let unit = format!("{key}-{variant}-{i}");
                exposures.push(
                    json!({"unit_id": unit, "experiment": key, "variant": variant, "ts": ts}),
                );
                if silent[vi] {
                    continue;
                }
                let events = if held(&unit) { &mut later } else { &mut events };
                let mut event = |kind: &str, value: Option<f64>| {
                    let mut e = json!({"event_id": format!("{unit}-{kind}"), "unit_id": unit,
                        "type": kind, "ts": ts + 500});
                    if let Some(v) = value {
                        e["value"] = json!(v);
                    }
                    events.push(e);
                };
                event("page_view", None);
                if i < errors[vi] {
                    event("error", None);
                }
                if i < purchases[vi] {
                    event("purchase", Some(10.0));
                }
            }
        }
        self.collect("exposures", exposures).await;
        self.collect("events", events).await;
        later
    }

    async fn guardrails(&self, key: &str) -> Value {
        self.get(&format!("experiments/{key}/guardrails")).await
    }

    /// Waits until experiment `key` has an evaluation with `activated_at`
    /// set (data sent after it counts).
    async fn activated(&self, key: &str) {
        until(&format!("{key} active for the monitor"), || async {
            let v = self.guardrails(key).await;
            v["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| !e["doc"]["input"]["activated_at"].is_null())
                .then_some(())
        })
        .await;
    }

    /// The latest evaluation of `guardrail` on `key` matching `pred`.
    async fn evaluation(
        &self,
        key: &str,
        guardrail: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        until_within(MATURE, &format!("{what} ({key}, {guardrail})"), || async {
            let v = self.guardrails(key).await;
            v["history"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["guardrail"] == guardrail && pred(e))
                .cloned()
        })
        .await
    }

    async fn status(&self, key: &str) -> String {
        self.get(&format!("experiments/{key}")).await["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// Tokens, the server (guardrail cycle every 2 s), a webhook and the
/// metrics and guardrail definitions the tests share.
async fn setup(
    dir: &std::path::Path,
    events: &[&str],
    analysis: &[&str],
) -> (Env, Served, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let ingest = token(dir, &["--kind", "ingest"]);
    let lab = token(dir, &["--role", "experimenter", "--team", "lab"]);
    let mut args = vec!["--guardrail-interval", "2s"];
    args.extend_from_slice(analysis);
    let served = Served::start_with_in_runtime(dir, &args);
    let env = Env {
        c: reqwest::Client::new(),
        base: served.base.clone(),
        ingest,
        lab,
    };
    let (hook_url, hook) = receiver().await;
    env.ok(
        Method::POST,
        "alerts/webhooks",
        ADMIN,
        json!({"url": hook_url, "secret": SECRET, "events": events}),
    )
    .await;
    for m in [
        json!({"key": "errors", "type": "binomial", "filter": {"type": "error"}}),
        json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}),
        json!({"key": "revenue", "type": "sum", "filter": {"type": "purchase"}}),
    ] {
        env.ok(Method::POST, "metrics", ADMIN, m).await;
    }
    let guard = |key: &str, metric: &str, extra: Value| {
        let mut g = json!({"key": key, "metric": metric, "threshold": 0.01,
            "direction": "increase_is_bad", "window_minutes": 1, "min_samples": 200,
            "min_age_minutes": 0, "auto_action": "kill"});
        for (k, v) in extra.as_object().unwrap() {
            g[k] = v.clone();
        }
        g
    };
    for g in [
        guard("errors_guard", "errors", json!({})),
        // The default age gate: two hours after activation.
        guard(
            "errors_guard_aged",
            "errors",
            json!({"min_age_minutes": null}),
        ),
        guard(
            "conversion_guard",
            "conversion",
            json!({"direction": "decrease_is_bad", "threshold": 0.05}),
        ),
        guard(
            "revenue_guard",
            "revenue",
            json!({"direction": "decrease_is_bad", "relative": true, "threshold": 0.02, "min_samples": 100}),
        ),
    ] {
        let g = if g["min_age_minutes"].is_null() {
            let mut g = g;
            g.as_object_mut().unwrap().remove("min_age_minutes");
            g
        } else {
            g
        };
        env.ok(Method::POST, "guardrails", ADMIN, g).await;
    }
    (env, served, hook)
}

/// Waits for signed alerts until `want` is satisfied; returns them.
async fn alerts(
    hook: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
    got: &mut Vec<Value>,
    want: impl Fn(&[Value]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want(got) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (headers, body) = tokio::time::timeout(left, hook.recv())
            .await
            .unwrap_or_else(|_| panic!("alerts so far: {got:?}"))
            .unwrap();
        let sig = headers
            .iter()
            .find(|(k, _)| k == "x-strata-signature")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert_eq!(
            sig,
            strata_server::service::alerts::signature(SECRET, &body)
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        // The receiver answers the first request 500: it comes twice.
        if !got.contains(&v) {
            got.push(v);
        }
    }
}

/// Page views of new units every second, leaving out those `skip` names
/// (their partition's consumer is stuck), until aborted.
fn live_traffic(
    env: &Env,
    prefix: &'static str,
    skip: fn(&str) -> bool,
) -> tokio::task::JoinHandle<()> {
    let (base, ingest, c) = (env.base.clone(), env.ingest.clone(), env.c.clone());
    tokio::spawn(async move {
        for round in 0u64.. {
            let ts = now_ms();
            let batch: Vec<Value> = (0..40)
                .map(|i| format!("{prefix}-{round}-{i}"))
                .filter(|u| !skip(u))
                .map(|u| json!({"event_id": u, "unit_id": u, "type": "page_view", "ts": ts}))
                .collect();
            let _ = call(
                &c,
                Method::POST,
                format!("{base}/collect/v1/events"),
                &ingest,
                Some(Value::from(batch)),
            )
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// The latest ramp decision of the monitor's cycles about `key` matching
/// `pred` (waiting at most [`MATURE`]; the panic shows the last decision).
async fn ramp_decision(env: &Env, key: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + MATURE;
    loop {
        let cycles = env.get("guardrail-monitor").await;
        let mut decisions = cycles["items"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ramps"].as_array().unwrap().iter())
            .filter(|d| d["experiment"] == key);
        let latest = decisions.clone().next().cloned();
        if let Some(d) = decisions.find(|d| pred(d)) {
            return d.clone();
        }
        if Instant::now() >= deadline {
            let runs = env.get("analysis/runs").await;
            panic!(
                "no matching ramp decision of {key}; the latest: {latest:?}; analysis runs: {runs}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has(alerts: &[Value], event: &str, experiment: &str) -> bool {
    alerts
        .iter()
        .any(|a| a["event"] == event && a["experiment"] == experiment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_is_killed_and_incomplete_or_approved_experiments_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (env, served, mut hook) = setup(
        &dir,
        &["guardrail.breach", "experiment.auto_killed"],
        &["--no-analysis"],
    )
    .await;
    let bad = env.start("exp_bad", &["errors_guard"], false).await;
    env.start("exp_aa", &["errors_guard"], false).await;
    env.start("exp_approval", &["errors_guard"], true).await;
    env.start("exp_young", &["errors_guard_aged"], false).await;
    env.start("exp_missing", &["conversion_guard"], false).await;

    // An SDK on the stream, holding a treatment unit of exp_bad.
    let sdk_key = env
        .ok(
            Method::POST,
            "keys",
            ADMIN,
            json!({"kind": "sdk", "team": "", "name": "sdk"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sdk = strata_sdk::Client::builder(&env.base, &sdk_key)
        .instance_id("guardrail-e2e")
        .build()
        .unwrap();
    assert!(sdk.ready(Duration::from_secs(10)).await);
    let flag = bad["flag"].as_str().unwrap();
    let unit = (0..200)
        .map(|i| strata_sdk::Context::for_user(format!("sdk-u{i}")))
        .find(|ctx| sdk.variant(ctx, flag, "default") == "treatment")
        .expect("a treatment unit");

    for key in [
        "exp_bad",
        "exp_aa",
        "exp_approval",
        "exp_young",
        "exp_missing",
    ] {
        env.activated(key).await;
    }
    // 1,000 units per arm: errors 2 % in control, 10 % in treatment (5×).
    env.traffic("exp_bad", 1000, [20, 100], [0, 0], [false, false], &|_| {
        false
    })
    .await;
    env.traffic("exp_aa", 1000, [50, 50], [0, 0], [false, false], &|_| false)
        .await;
    env.traffic(
        "exp_approval",
        1000,
        [20, 100],
        [0, 0],
        [false, false],
        &|_| false,
    )
    .await;
    env.traffic(
        "exp_young",
        1000,
        [20, 100],
        [0, 0],
        [false, false],
        &|_| false,
    )
    .await;
    // Control converts at 30 %; the treatment's events have not arrived.
    env.traffic(
        "exp_missing",
        1000,
        [0, 0],
        [300, 0],
        [false, true],
        &|_| false,
    )
    .await;

    // Killed once the one-minute windows have elapsed; the SDK serves the
    // default within a second of the kill.
    let deadline = Instant::now() + MATURE;
    while sdk.variant(&unit, flag, "default") == "treatment" {
        assert!(Instant::now() < deadline, "exp_bad was not killed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let served_default_at = chrono::Utc::now();
    let killed = env.get("experiments/exp_bad").await;
    assert_eq!(killed["status"], "killed", "{killed}");
    assert_eq!(
        killed["kill_reason"].as_str().unwrap().split(':').next(),
        Some("guardrail errors_guard breached")
    );
    let reason = killed["kill_reason"].as_str().unwrap();
    for part in [
        "treatment",
        "errors",
        "lower bound",
        "threshold 0.01",
        "1-minute windows",
    ] {
        assert!(reason.contains(part), "{reason}");
    }
    let ended = chrono::DateTime::parse_from_rfc3339(killed["ended_at"].as_str().unwrap()).unwrap();
    let lag = served_default_at.signed_duration_since(ended);
    assert!(
        lag < chrono::Duration::milliseconds(1000),
        "SDK served the default {lag} after the kill"
    );

    // The kill is the first breach; gates all passed; it replays the same.
    let kill = env
        .evaluation("exp_bad", "errors_guard", "the kill", |e| {
            e["taken"] == "killed"
        })
        .await;
    let gates = kill["doc"]["evaluation"]["gates"].as_array().unwrap();
    assert!(gates.iter().all(|g| g["passed"] == true), "{kill}");
    let history = env.guardrails("exp_bad").await["history"].clone();
    assert_eq!(
        history
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "breach")
            .count(),
        1,
        "{history}"
    );
    let id = kill["id"].as_str().unwrap();
    let replay = env
        .ok(
            Method::POST,
            &format!("experiments/exp_bad/guardrails/evaluations/{id}/replay"),
            &env.lab,
            json!({}),
        )
        .await;
    assert_eq!(replay["same"], true, "{replay}");
    assert_eq!(replay["replayed"]["action"], "kill");
    let variants = &kill["doc"]["input"]["variants"];
    assert_eq!(variants[0]["n"], 1000, "{variants}");
    assert!((variants[1]["mean"].as_f64().unwrap() - 0.10).abs() < 1e-12);

    // The requires-approval experiment breached: alerted, still running.
    let pending = env
        .evaluation(
            "exp_approval",
            "errors_guard",
            "a breach awaiting approval",
            |e| e["review"] == "pending",
        )
        .await;
    assert_eq!(pending["action"], "await_approval", "{pending}");
    assert_eq!(env.status("exp_approval").await, "running");
    let mut got = Vec::new();
    alerts(&mut hook, &mut got, |a| {
        has(a, "guardrail.breach", "exp_bad")
            && has(a, "experiment.auto_killed", "exp_bad")
            && has(a, "guardrail.breach", "exp_approval")
    })
    .await;
    let breach = got
        .iter()
        .find(|a| a["event"] == "guardrail.breach" && a["experiment"] == "exp_bad")
        .unwrap();
    assert_eq!(breach["fields"]["guardrail"], "errors_guard");
    assert_eq!(breach["fields"]["treatment"], "treatment");
    assert!(
        breach["fields"]["lower_bound"].as_f64().unwrap() > 0.01,
        "{breach}"
    );
    assert!(!has(&got, "experiment.auto_killed", "exp_approval"));
    // A viewer of another team cannot confirm; the team can.
    let other = env
        .ok(
            Method::POST,
            "keys",
            ADMIN,
            json!({"kind": "api", "role": "experimenter", "team": "other", "name": "o"}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = call(
        &env.c,
        Method::POST,
        env.api("experiments/exp_approval/guardrails/errors_guard/confirm"),
        &other,
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let review = env
        .ok(
            Method::POST,
            "experiments/exp_approval/guardrails/errors_guard/confirm",
            &env.lab,
            json!({}),
        )
        .await;
    assert_eq!(review["status"], "killed", "{review}");
    assert_eq!(env.status("exp_approval").await, "killed");
    let audit = env.get("experiments/exp_approval/audit").await;
    assert!(audit.to_string().contains("guardrail.confirm"), "{audit}");
    let (s, v) = call(
        &env.c,
        Method::POST,
        env.api("experiments/exp_approval/guardrails/errors_guard/confirm"),
        &env.lab,
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "nothing left to confirm: {v}");

    // The young experiment is held by the age gate, the one with missing
    // treatment events by the volume gate: skipped, never killed.
    let young = env
        .evaluation("exp_young", "errors_guard_aged", "a mature skip", |e| {
            e["doc"]["input"]["variants"][0]["n"] == 1000
        })
        .await;
    assert_eq!(young["doc"]["evaluation"]["skipped_by"], "age", "{young}");
    let missing = env
        .evaluation("exp_missing", "conversion_guard", "a mature skip", |e| {
            e["doc"]["input"]["variants"][0]["n"] == 1000
        })
        .await;
    assert_eq!(
        missing["doc"]["evaluation"]["skipped_by"], "event_volume",
        "{missing}"
    );
    // The A/A experiment, checked every two seconds all along.
    let aa = env.guardrails("exp_aa").await;
    let checked = aa["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "no_breach")
        .count();
    assert!(checked >= 1, "{aa}");
    assert!(!aa.to_string().contains("\"breach\""), "{aa}");
    for key in ["exp_aa", "exp_young", "exp_missing"] {
        assert_eq!(env.status(key).await, "running", "{key}");
    }
    let metrics = reqwest::get(format!("{}/metrics", env.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("strata_guardrail_actions_total{action=\"kill\"} 1"),
        "{metrics}"
    );
    sdk.shutdown(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| served.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_behind_holds_the_kill_until_it_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (env, served, mut hook) = setup(
        &dir,
        &["data.stale", "experiment.auto_killed"],
        &["--analysis-interval", "5s"],
    )
    .await;
    env.start("exp_price", &["revenue_guard"], false).await;
    // Ramp plans: one advances once its guardrail is green and a look since
    // its stage began is healthy; one waits for its stage's 24 hours.
    let plan = |hours: f64| json!([{"percent": 10, "min_hours": hours}, {"percent": 50}]);
    let ramped = env
        .start_with(
            "exp_ramp",
            json!({"guardrails": ["revenue_guard"], "primary_metric": "conversion", "ramp_plan": plan(0.0)}),
            json!({}),
        )
        .await;
    assert_eq!(ramped["ramp_percent"], 10.0, "{ramped}");
    env.start_with(
        "exp_ramp_slow",
        json!({"primary_metric": "revenue", "ramp_plan": plan(24.0)}),
        json!({}),
    )
    .await;
    env.activated("exp_price").await;
    env.activated("exp_ramp").await;
    // Background traffic over the last hour on every user partition but
    // 07, whose events stopped 30 minutes ago (its consumer is stuck).
    fn behind(u: &str) -> bool {
        strata_pipeline::user_partition(u, 16) == 7
    }
    let now = now_ms();
    let mut history = Vec::new();
    for i in 0..4000u64 {
        let unit = format!("bg-{i}");
        let ts = now - 3_600_000 + i * 900;
        if behind(&unit) && ts > now - 1_800_000 {
            continue;
        }
        history.push(
            json!({"event_id": format!("bg-{i}"), "unit_id": unit, "type": "page_view", "ts": ts}),
        );
    }
    env.collect("events", history).await;
    // Traffic goes on on the other partitions while the test runs.
    let live = live_traffic(&env, "live", behind);
    // A real revenue drop of 50 % (it would be killed on complete data);
    // partition 07's events of it are held up too.
    let held = env
        .traffic(
            "exp_price",
            400,
            [0, 0],
            [200, 100],
            [false, false],
            &behind,
        )
        .await;
    assert!(!held.is_empty());
    // An A/A revenue experiment on its ramp plan.
    let held_ramp = env
        .traffic("exp_ramp", 400, [0, 0], [200, 200], [false, false], &behind)
        .await;
    // (Its partition-07 units' events stay held up for good.)
    env.traffic(
        "exp_ramp_slow",
        100,
        [0, 0],
        [50, 50],
        [false, false],
        &behind,
    )
    .await;
    let skip = env
        .evaluation("exp_price", "revenue_guard", "a mature skip", |e| {
            e["doc"]["input"]["variants"][0]["n"] == 400
        })
        .await;
    assert_eq!(
        skip["doc"]["evaluation"]["skipped_by"], "partitions",
        "{skip}"
    );
    let detail = skip["doc"]["evaluation"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "partitions")
        .unwrap()["detail"]
        .clone();
    assert!(detail.as_str().unwrap().contains("07 (silent"), "{detail}");
    assert_eq!(env.status("exp_price").await, "running");
    // While the partition is behind, the ramp plan holds.
    let hold = ramp_decision(&env, "exp_ramp", |d| {
        d["reason"].as_str().unwrap().contains("guardrail")
    })
    .await;
    assert!(hold["to"].is_null(), "{hold}");
    assert_eq!(env.get("experiments/exp_ramp").await["ramp_percent"], 10.0);
    let mut got = Vec::new();
    alerts(&mut hook, &mut got, |a| {
        a.iter().any(|x| x["event"] == "data.stale")
    })
    .await;

    // Partition 07 catches up: its delayed events arrive, and it keeps up.
    let now = now_ms();
    let delayed: Vec<Value> = (0..4000u64)
        .map(|i| (format!("bg-{i}"), now - 3_600_000 + i * 900))
        .filter(|(u, ts)| behind(u) && *ts > now - 1_800_000)
        .map(|(u, ts)| json!({"event_id": u, "unit_id": u, "type": "page_view", "ts": ts}))
        .collect();
    env.collect("events", delayed).await;
    env.collect("events", held).await;
    env.collect("events", held_ramp).await;
    live.abort();
    let live = live_traffic(&env, "all", |_| false);
    let kill = env
        .evaluation("exp_price", "revenue_guard", "the kill", |e| {
            e["taken"] == "killed"
        })
        .await;
    assert!(kill["doc"]["evaluation"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["passed"] == true));
    assert_eq!(env.status("exp_price").await, "killed");
    // Complete data again: exp_ramp's guardrail is green and it advances,
    // audited by the monitor; exp_ramp_slow still waits for its hours.
    let advanced = ramp_decision(&env, "exp_ramp", |d| !d["to"].is_null()).await;
    assert_eq!(advanced["to"], 50.0, "{advanced}");
    let e = env.get("experiments/exp_ramp").await;
    assert_eq!(
        (e["status"].as_str(), e["ramp_percent"].as_f64()),
        (Some("running"), Some(50.0)),
        "{e}"
    );
    let audit = env.get("experiments/exp_ramp/audit").await.to_string();
    assert!(
        audit.contains("system:guardrails") && audit.contains("ramp plan stage 2 of 2"),
        "{audit}"
    );
    let last = ramp_decision(&env, "exp_ramp", |d| {
        d["reason"] == "at the plan's last stage"
    })
    .await;
    assert_eq!(last["stage"], 2);
    let slow = ramp_decision(&env, "exp_ramp_slow", |_| true).await;
    assert!(
        slow["reason"]
            .as_str()
            .unwrap()
            .contains("of the stage's 24 hours"),
        "{slow}"
    );
    assert_eq!(slow["stage"], 1);
    live.abort();
    tokio::task::block_in_place(|| served.terminate());
}
