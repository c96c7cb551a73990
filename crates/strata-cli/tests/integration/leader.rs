//! One node runs the jobs: three `strata serve` on one PostgreSQL, each
//! with its own data directory. Exactly one holds the jobs lease and runs
//! the scheduled analysis and the guardrail monitor; a refresh asked of
//! another node is refused, naming why. When the leader is killed, another
//! node takes the lease over within the lease's time and goes on — its runs
//! numbered after the dead leader's, and no two runs ever overlapping.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scheduled::{start, until_within};
use crate::serve::{call, token, Served, ADMIN};

/// A fresh database on the machine's PostgreSQL, dropped when this is
/// (even after a failure).
pub(crate) struct FreshDb {
    admin: String,
    name: String,
    /// Its URL.
    pub(crate) url: String,
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql")
}

/// A fresh database, or none (said loudly) without
/// `STRATA_TEST_DATABASE_URL`.
pub(crate) fn fresh_database() -> Option<FreshDb> {
    let Some(admin) = std::env::var("STRATA_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("SKIPPED: STRATA_TEST_DATABASE_URL not set; the multi-node tests did not run");
        return None;
    };
    // Tests of one process may ask at the same millisecond.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "strata_nodes_{}_{}_{}",
        std::process::id(),
        crate::serve::now_ms(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let out = psql(&admin, &format!("CREATE DATABASE {name}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");
    Some(FreshDb { admin, name, url })
}

async fn leads(c: &reqwest::Client, base: &str) -> bool {
    let Ok(r) = c.get(format!("{base}/metrics")).send().await else {
        return false;
    };
    r.text()
        .await
        .unwrap_or_default()
        .contains("strata_jobs_leader 1")
}

async fn runs(c: &reqwest::Client, base: &str) -> Vec<Value> {
    let (s, v) = call(
        c,
        Method::GET,
        format!("{base}/api/v1/analysis/runs"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_runs_the_jobs_and_another_takes_over_when_it_dies() {
    let Some(fresh) = fresh_database() else {
        return;
    };
    let db = fresh.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("node-{i}")))
        .collect();
    let args = [
        "--database-url",
        db.as_str(),
        "--analysis-interval",
        "2s",
        "--guardrail-interval",
        "2s",
    ];
    let mut nodes: Vec<Option<Served>> = dirs
        .iter()
        .map(|d| Some(Served::start_with_in_runtime(d, &args)))
        .collect();
    let bases: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().base.clone())
        .collect();
    let c = reqwest::Client::new();
    let lab = token(
        &dirs[0],
        &[
            "--database-url",
            &db,
            "--role",
            "experimenter",
            "--team",
            "lab",
        ],
    );
    let analyst = token(&dirs[0], &["--database-url", &db, "--role", "analyst"]);
    let metric = json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}});
    let (s, v) = call(
        &c,
        Method::POST,
        format!("{}/api/v1/metrics", bases[1]),
        &analyst,
        Some(metric),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    start(&c, &bases[2], &lab, "exp_lead", json!({})).await;

    // Exactly one leader.
    let leader = until_within(Duration::from_secs(40), "one leader", || async {
        let mut found = Vec::new();
        for (i, b) in bases.iter().enumerate() {
            if leads(&c, b).await {
                found.push(i);
            }
        }
        (found.len() == 1).then(|| found[0])
    })
    .await;
    let first = until_within(Duration::from_secs(30), "runs on the leader", || async {
        let r = runs(&c, &bases[leader]).await;
        (r.len() >= 2 && r.iter().all(|x| x["ended_at"].is_string())).then_some(r)
    })
    .await;
    for (i, b) in bases.iter().enumerate().filter(|(i, _)| *i != leader) {
        assert!(runs(&c, b).await.is_empty(), "node {i} ran no job");
        let (s, v) = call(
            &c,
            Method::GET,
            format!("{b}/api/v1/guardrail-monitor"),
            ADMIN,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            v["items"].as_array().map(Vec::len),
            Some(0),
            "node {i}: {v}"
        );
        let (s, v) = call(
            &c,
            Method::POST,
            format!("{b}/api/v1/experiments/exp_lead/results/refresh"),
            &lab,
            Some(json!({})),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert_eq!(v["error"]["code"], "not_jobs_leader", "{v}");
    }
    let (_, cycles) = call(
        &c,
        Method::GET,
        format!("{}/api/v1/guardrail-monitor", bases[leader]),
        ADMIN,
        None,
    )
    .await;
    assert!(
        !cycles["items"].as_array().unwrap().is_empty(),
        "the leader's monitor cycles: {cycles}"
    );

    // The leader dies; another node takes over within the lease's time.
    let last_id = first[0]["id"].as_u64().unwrap();
    nodes[leader].take().unwrap().kill();
    let killed = std::time::Instant::now();
    let alive: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let next = until_within(Duration::from_secs(40), "a new leader", || async {
        let mut found = Vec::new();
        for &i in &alive {
            if leads(&c, &bases[i]).await {
                found.push(i);
            }
        }
        (found.len() == 1).then(|| found[0])
    })
    .await;
    eprintln!(
        "node {next} runs the jobs {:?} after node {leader} was killed",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() <= Duration::from_secs(30),
        "fail-over within 30 s"
    );
    let all = until_within(
        Duration::from_secs(30),
        "runs on the new leader",
        || async {
            let r = runs(&c, &bases[next]).await;
            r.iter()
                .any(|x| x["id"].as_u64() > Some(last_id) && x["ended_at"].is_string())
                .then_some(r)
        },
    )
    .await;
    // The new leader took up the dead one's runs and numbered its own
    // after them; no two runs overlapped.
    assert!(
        all.iter().any(|x| x["id"].as_u64() == Some(last_id)),
        "{all:?}"
    );
    let mut spans: Vec<(u64, String, String)> = all
        .iter()
        .filter(|x| x["ended_at"].is_string())
        .map(|x| {
            let t = |f: &str| x[f].as_str().unwrap().to_owned();
            (x["id"].as_u64().unwrap(), t("started_at"), t("ended_at"))
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].0 < w[1].0);
        assert!(
            w[0].2 <= w[1].1,
            "run {} overlaps run {}: {spans:?}",
            w[0].0,
            w[1].0
        );
    }
    // The new leader's guardrail monitor runs too.
    until_within(
        Duration::from_secs(30),
        "monitor cycles on the new leader",
        || async {
            let (_, v) = call(
                &c,
                Method::GET,
                format!("{}/api/v1/guardrail-monitor", bases[next]),
                ADMIN,
                None,
            )
            .await;
            v["items"]
                .as_array()
                .is_some_and(|i| !i.is_empty())
                .then_some(())
        },
    )
    .await;
    // A clean stop hands the lease over at once, not at its expiry.
    nodes[next].take().unwrap().terminate();
    let stopped = std::time::Instant::now();
    let last = alive.into_iter().find(|&i| i != next).unwrap();
    until_within(Duration::from_secs(30), "the last node leads", || async {
        leads(&c, &bases[last]).await.then_some(())
    })
    .await;
    eprintln!(
        "node {last} runs the jobs {:?} after node {next} stopped",
        stopped.elapsed()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(12),
        "handed over before the lease's 15 s ran out"
    );
    for n in nodes.into_iter().flatten() {
        n.terminate();
    }
}
