//! `strata demo` as a process at high speed: every scenario reaches its
//! outcome through the real pipeline, scheduled analysis and guardrail
//! monitor, read back through the API as a user would.
//!
//! The demo runs as the README starts it (its default population and
//! seed: each visit draws from its own stream of the seed, so the same
//! visits happen whatever the pace) on a clock at 10,800× (a simulated day
//! every eight seconds, a little slower than the default so that a debug
//! build keeps up on two cores); the scenarios take about two weeks of
//! simulated time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::serve::call;

const ADMIN: &str = "demo-test-admin-token";

/// The longest the scenarios may take to reach their outcomes.
const DEADLINE: Duration = Duration::from_secs(600);

struct Demo {
    child: Child,
    base: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Demo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["demo", "--listen", "127.0.0.1:0", "--speed", "10800"])
        .args(["--admin-token", ADMIN])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn strata demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("demo | {line}");
            if let Some(url) = line.trim().strip_prefix("portal") {
                let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("strata demo prints the portal's address");
    Demo { child, base }
}

/// What one scenario shows now.
enum Outcome {
    /// Its outcome, as seen.
    Reached(String),
    /// Not yet, and what is seen.
    NotYet(String),
    /// Something it must never show.
    Broken(String),
}

async fn get(c: &reqwest::Client, base: &str, path: &str) -> Option<Value> {
    let (s, v) = call(c, Method::GET, format!("{base}/api/v1/{path}"), ADMIN, None).await;
    (s == StatusCode::OK).then_some(v)
}

fn check<'a>(health: &'a Value, name: &str) -> Option<&'a str> {
    health["health"]
        .as_array()?
        .iter()
        .find(|h| h["check"] == name)?["status"]
        .as_str()
}

async fn outcome(c: &reqwest::Client, base: &str, key: &str) -> Outcome {
    let Some(exp) = get(c, base, &format!("experiments/{key}")).await else {
        return Outcome::NotYet("no experiment".into());
    };
    let status = exp["status"].as_str().unwrap_or_default().to_owned();
    let health = get(c, base, &format!("experiments/{key}/health"))
        .await
        .unwrap_or(Value::Null);
    let verdict = health["decision"]["verdict"]
        .as_str()
        .unwrap_or("none")
        .to_owned();
    let seen = format!("status {status}, verdict {verdict}, look {}", health["seq"]);
    let ok = match key {
        "demo_winner" => verdict == "ship",
        "demo_guardrail" => {
            let g = get(c, base, &format!("experiments/{key}/guardrails"))
                .await
                .unwrap_or(Value::Null);
            let breached = g["history"].as_array().is_some_and(|h| {
                h.iter()
                    .any(|e| e["doc"]["outcome"] == "breach" || e["outcome"] == "breach")
            });
            status == "killed" && breached
        }
        "demo_srm" => {
            status == "paused" && check(&health, "srm") == Some("fail") && verdict == "unhealthy"
        }
        "demo_simpson" => {
            check(&health, "simpsons_paradox").is_some_and(|s| matches!(s, "warn" | "fail"))
        }
        "demo_novelty" => check(&health, "novelty").is_some_and(|s| matches!(s, "warn" | "fail")),
        "demo_ramp" => exp["ramp_percent"].as_f64().is_some_and(|p| p >= 50.0),
        // Judged after its minimum duration: never killed or paused, its
        // primary metric (sequential) never significant.
        "demo_aa" => {
            let look = get(c, base, &format!("experiments/{key}/results"))
                .await
                .unwrap_or(Value::Null);
            let significant = look["results"]["metrics"].as_array().is_some_and(|m| {
                m.iter().filter(|m| m["role"] == "primary").any(|m| {
                    m["effects"]
                        .as_array()
                        .is_some_and(|es| es.iter().any(|e| e["significant"] == true))
                })
            });
            if status != "running" || significant {
                return Outcome::Broken(format!("{seen}; significant: {significant}"));
            }
            // Judged once it has run its minimum duration.
            check(&health, "minimum_duration") == Some("ok")
        }
        _ => return Outcome::Broken(format!("the test checks no outcome for {key}")),
    };
    if ok {
        Outcome::Reached(seen)
    } else {
        Outcome::NotYet(seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_reaches_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let demo = tokio::task::block_in_place(|| start(dir.path()));
    let c = reqwest::Client::new();
    // A global holdout rotated every two simulated days, as an admin sets
    // it: by the end the scheduled analysis has rotated it several times.
    let api = |p: &str| format!("{}/api/v1/{p}", demo.base);
    let key_metrics = serde_json::json!({"metrics": ["conversion", "revenue"]});
    let (s, v) = call(
        &c,
        Method::PUT,
        api("key-metrics"),
        ADMIN,
        Some(key_metrics),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let holdout = serde_json::json!({"percent": 5, "rotate_every_days": 2});
    let (s, v) = call(&c, Method::PUT, api("holdout"), ADMIN, Some(holdout)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let keys: Vec<&str> = strata_sim::scenario::all().iter().map(|s| s.key).collect();
    let started = Instant::now();
    let mut reached: Vec<Option<(Duration, String)>> = vec![None; keys.len()];
    loop {
        let mut last = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            // The A/A scenario must hold all along, not only once.
            if reached[i].is_some() && *key != "demo_aa" {
                continue;
            }
            match outcome(&c, &demo.base, key).await {
                Outcome::Reached(seen) => {
                    if reached[i].is_none() {
                        eprintln!("{key}: reached after {:?}: {seen}", started.elapsed());
                        reached[i] = Some((started.elapsed(), seen));
                    }
                }
                Outcome::NotYet(seen) => last.push(format!("{key}: {seen}")),
                Outcome::Broken(seen) => panic!("{key}: {seen}"),
            }
        }
        if reached.iter().all(Option::is_some) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "not reached within {DEADLINE:?}:\n{}",
            last.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    scheduled_rotations(&c, &demo.base).await;
    drop(demo);
}

/// The holdout's periods after the scenarios' two weeks: each ended by the
/// scheduled rotation (`system:holdout`, audited) at the first run of the
/// scheduled analysis after it was due (two simulated days after it
/// started), with its final look over both the holdout and the rest, and
/// the next period under a new salt.
async fn scheduled_rotations(c: &reqwest::Client, base: &str) {
    let (s, impact) = call(
        c,
        Method::GET,
        format!("{base}/api/v1/holdout/impact"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{impact}");
    let periods = impact["periods"].as_array().unwrap();
    let ended: Vec<&Value> = periods
        .iter()
        .filter(|p| p.get("ended_at").is_some())
        .collect();
    assert!(ended.len() >= 2, "rotated at least twice: {impact}");
    let time =
        |p: &Value, f: &str| chrono::DateTime::parse_from_rfc3339(p[f].as_str().unwrap()).unwrap();
    let (s, runs) = call(
        c,
        Method::GET,
        format!("{base}/api/v1/analysis/runs"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{runs}");
    let runs = runs["items"].as_array().unwrap();
    for p in &ended {
        assert_eq!(p["ended_by"], "system:holdout", "{p}");
        let (started, ended_at) = (time(p, "started_at"), time(p, "ended_at"));
        let days = (ended_at - started).num_seconds() as f64 / 86_400.0;
        assert!(days >= 2.0, "period {} lasted {days} days", p["period"]);
        // Rotated by the first run after it was due: no run that started
        // after the due time ended before the rotation. (How long that
        // takes in simulated days depends on the machine's load.)
        let due = started + chrono::Duration::days(2);
        let missed: Vec<&Value> = runs
            .iter()
            .filter(|r| r["trigger"] == "schedule" && r["ended_at"].is_string())
            .filter(|r| time(r, "started_at") >= due && time(r, "ended_at") < ended_at)
            .collect();
        assert!(
            missed.is_empty(),
            "period {} (due {due}) outlived runs {missed:?}",
            p["period"]
        );
        let final_look = p["look"]["final_look"].as_bool().unwrap_or(false);
        assert!(
            final_look || p["period"] == ended[0]["period"],
            "final look of {p}"
        );
        if final_look {
            let units = &p["look"]["results"]["units"];
            assert!(
                units["holdout"].as_u64() > Some(0) && units["rest"].as_u64() > Some(0),
                "{units}"
            );
        }
    }
    for w in periods.windows(2) {
        assert_ne!(w[0]["salt"], w[1]["salt"], "each period has its own salt");
        assert_eq!(w[0]["started_at"], w[1]["ended_at"]);
    }
    let (_, audit) = call(
        c,
        Method::GET,
        format!("{base}/api/v1/audit?action=holdout.rotate"),
        ADMIN,
        None,
    )
    .await;
    let rotations = audit["items"].as_array().unwrap();
    assert!(rotations.len() >= ended.len(), "{audit}");
    assert!(
        rotations.iter().all(|e| e["actor"] == "system:holdout"),
        "{audit}"
    );
}

/// `strata simulate` against a plain `strata serve`: the demo's A/A
/// experiment seeded through the API, then a few seconds of visits at a
/// fixed rate, delivered in full and analysed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_drives_users_against_any_server() {
    let dir = tempfile::tempdir().unwrap();
    let served = crate::serve::Served::start_in_runtime(dir.path());
    let base = served.base.clone();
    let aa = strata_sim::scenario::by_key("demo_aa").unwrap();
    let keys = strata_sim::seed::seed(&base, crate::serve::ADMIN, 400, 1, &[aa])
        .await
        .expect("seed the server");
    let out = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["simulate", "--server", &base, "--sdk-key", &keys.sdk_key])
            .args(["--ingest-key", &keys.ingest_key, "--users", "400"])
            .args(["--rate", "150", "--seconds", "3", "--scenario", "demo_aa"])
            .output()
            .expect("run strata simulate")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "N visits, M events; delivered X exposures and Y events, dropped 0"
    let n = |word: &str| -> u64 {
        let words: Vec<&str> = stdout.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| w.trim_end_matches([',', ';']) == word)
            .unwrap_or_else(|| panic!("no {word:?} in {stdout}"));
        words[i - 1].parse().unwrap()
    };
    let visits = n("visits");
    // 3 s at 150 visits/s, give or take the ticks at either end.
    assert!((300..=500).contains(&visits), "{stdout}");
    assert!(stdout.trim_end().ends_with("dropped 0"), "{stdout}");
    let events: u64 = stdout
        .split("delivered ")
        .nth(1)
        .and_then(|s| s.split(" exposures and ").nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no delivered events in {stdout}"));
    assert_eq!(
        events,
        n("events"),
        "every tracked event delivered: {stdout}"
    );

    // What it sent is what the platform analyses.
    let c = reqwest::Client::new();
    let (s, v) = call(
        &c,
        Method::POST,
        format!("{base}/api/v1/experiments/demo_aa/results/refresh"),
        &keys.experimenter,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, look) = call(
        &c,
        Method::GET,
        format!("{base}/api/v1/experiments/demo_aa/results"),
        &keys.experimenter,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{look}");
    let units: u64 = look["results"]["units"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let exposures = stdout
        .split("delivered ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap();
    // One exposure per unit and day: every unit exposed once (the 400
    // users' visits all fall on one or two days).
    assert!(
        units > 150 && units <= 400 && units <= exposures,
        "{units} units, {stdout}"
    );
    drop(served);
}
