//! `strata serve` and `strata token create` as processes: the README's main
//! job on the embedded store, driven over HTTP, stopped by SIGTERM and
//! restarted on the same data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

pub(crate) const ADMIN: &str = "e2e-admin-token";

/// A `strata serve` child process; killed if dropped while running.
pub(crate) struct Served {
    child: Child,
    pub(crate) base: String,
}

impl Served {
    /// [`Served::start`] from inside a multi-threaded tokio test.
    pub(crate) fn start_in_runtime(dir: &Path) -> Self {
        tokio::task::block_in_place(|| Self::start(dir))
    }

    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`Served::start_with`] from inside a multi-threaded tokio test.
    pub(crate) fn start_with_in_runtime(dir: &Path, args: &[&str]) -> Self {
        tokio::task::block_in_place(|| Self::start_with(dir, args))
    }

    /// [`Served::start`] with more arguments of `strata serve`.
    pub(crate) fn start_with(dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(dir, args, &[])
    }

    /// [`Served::start_with`] with these environment variables too.
    pub(crate) fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
            .args(["--sdk-rate-limit", "0"])
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env("STRATA_BOOTSTRAP_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("strata serve prints its address");
        Self { child, base }
    }

    /// SIGKILL, then waits: the crash of the machine's power cord.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL strata serve");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits: a graceful stop exits 0.
    pub(crate) fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                assert!(s.success(), "strata serve exited with {s}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "strata serve ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `strata` with `args`, asserts that it succeeds (printing its
/// stderr if not) and returns its stdout.
pub(crate) fn strata_ok<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub(crate) fn token(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["token", "create"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run strata token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(t.starts_with("strata_") && t.len() == 7 + 64, "{t}");
    t
}

pub(crate) async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

fn analyze_example() -> Value {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/analysis");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("analyze")
        .arg("--spec")
        .arg(ex.join("experiment.yaml"))
        .arg("--metrics")
        .arg(ex.join("metrics.yaml"))
        .arg("--exposures")
        .arg(ex.join("data/exposures"))
        .arg("--events")
        .arg(ex.join("data/events"))
        .output()
        .expect("run strata analyze");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("results json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_tokens_lifecycle_results_and_restart() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let served = Served::start(&dir);
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1/{p}", served.base);

    let (s, v) = call(&c, Method::GET, format!("{}/readyz", served.base), "", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Tokens created by the CLI in the store of the running server work at once.
    let checkout = token(&dir, &["--role", "experimenter", "--team", "checkout"]);
    let search = token(&dir, &["--role", "experimenter", "--team", "search"]);
    let analyst = token(&dir, &["--role", "analyst", "--name", "nightly-analysis"]);
    let sdk = token(&dir, &["--kind", "sdk"]);
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["token", "create", "--role", "experimenter", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--team"));

    for m in [
        json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}),
        json!({"key": "revenue", "type": "sum", "filter": {"type": "purchase"}}),
        json!({"key": "purchases", "type": "count", "filter": {"type": "purchase"}}),
        json!({"key": "aov", "type": "ratio", "numerator": {"type": "sum", "filter": {"type": "purchase"}},
               "denominator": {"type": "count", "filter": {"type": "purchase"}}}),
        json!({"key": "page_load_p95", "type": "quantile", "quantile": 0.95,
               "filter": {"type": "page_load"}, "direction": "increase_is_bad"}),
    ] {
        let (s, v) = call(&c, Method::POST, api("metrics"), &analyst, Some(m)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let exp = json!({
        "key": "exp_checkout_v2", "name": "New checkout", "hypothesis": "fewer steps convert better",
        "owner_team": "checkout", "unit": "user_id", "size": 400, "surfaces": ["checkout"],
        "targeting": {"all": [{"attr": "country", "op": "in", "values": ["US", "CA"]}]},
        "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
        "primary_metric": "conversion", "secondary_metrics": ["revenue", "purchases", "aov"],
        "guardrails": ["page_load_p95"],
        "mde": 0.02, "planned_units": 200000, "alpha": 0.05, "sequential": "group_sequential",
        "requires_approval": false
    });
    let (s, v) = call(
        &c,
        Method::POST,
        api("experiments"),
        &search,
        Some(exp.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = call(&c, Method::POST, api("experiments"), &checkout, Some(exp)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let flag = v["flag"].as_str().expect("flag").to_owned();
    for (action, body) in [
        ("submit", json!({})),
        ("start", json!({"ramp_percent": 50})),
    ] {
        let (s, v) = call(
            &c,
            Method::POST,
            api(&format!("experiments/exp_checkout_v2/{action}")),
            &checkout,
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{action}: {v}");
    }
    let (s, v) = call(
        &c,
        Method::GET,
        format!("{}/sdk/v1/config", served.base),
        &sdk,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let version = v["version"].as_u64().expect("version");
    assert!(v.to_string().contains(&flag));
    assert!(!v.to_string().contains("New checkout"));

    // Results: published by the analyst, readable by the owning team only.
    // The example data predates the experiment just started here; the server
    // refuses an `as_of` before `started_at`, so the look is dated now.
    let mut doc = analyze_example();
    doc["as_of"] = json!(strata_server::store::rfc3339(strata_server::store::now_ms()));
    let (s, v) = call(
        &c,
        Method::POST,
        api("experiments/exp_checkout_v2/results"),
        &search,
        Some(doc.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");
    let (s, v) = call(
        &c,
        Method::POST,
        api("experiments/exp_checkout_v2/results"),
        &analyst,
        Some(doc.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["published_by"], "nightly-analysis");
    let seq = v["seq"].as_u64().expect("seq");
    let (s, v) = call(
        &c,
        Method::GET,
        api("experiments/exp_checkout_v2/results"),
        &checkout,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["seq"].as_u64(), Some(seq));
    assert_eq!(v["results"], doc);
    let (s, v) = call(
        &c,
        Method::GET,
        api("experiments/exp_checkout_v2/results"),
        &search,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("results:read"));

    // SIGTERM stops it cleanly; a restart on the same directory serves the same state.
    served.terminate();
    let served = Served::start(&dir);
    let (s, v) = call(
        &c,
        Method::GET,
        format!("{}/sdk/v1/config", served.base),
        &sdk,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"].as_u64(), Some(version));
    let (s, v) = call(
        &c,
        Method::GET,
        format!(
            "{}/api/v1/experiments/exp_checkout_v2/results/history",
            served.base
        ),
        &analyst,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1));
    served.terminate();
}

#[test]
fn serve_refuses_a_bad_database_url_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "mysql://root:hunter2@127.0.0.1/test",
        ])
        .output()
        .expect("run strata serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_collects_events_compacts_and_deletes_a_unit() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let served = Served::start(&dir);
    let c = reqwest::Client::new();
    let ingest = token(&dir, &["--kind", "ingest", "--name", "web-collector"]);
    let sdk = token(&dir, &["--kind", "sdk"]);
    let now = now_ms();
    let events: Vec<Value> = (0..20)
        .map(|i| {
            json!({"event_id": format!("ev-{i}"), "unit_id": format!("u{}", i % 4),
                        "type": "purchase", "ts": now, "value": i})
        })
        .collect();
    let url = format!("{}/collect/v1/events", served.base);
    let (s, v) = call(&c, Method::POST, url.clone(), &sdk, Some(json!(events))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an sdk key cannot ingest: {v}");
    let (s, v) = call(&c, Method::POST, url.clone(), &ingest, Some(json!(events))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 20, "{v}");
    // A retried batch is stored once.
    let (s, v) = call(&c, Method::POST, url, &ingest, Some(json!(events))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(20)),
        "{v}"
    );

    // The running server owns the log: the CLI refuses to compact it.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["compact", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let api = |p: &str| format!("{}/api/v1/{p}", served.base);
    let (s, v) = call(&c, Method::POST, api("pipeline/compact"), &ingest, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = call(&c, Method::POST, api("pipeline/compact"), ADMIN, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let parquet = dir.join("pipeline/parquet/kind=events");
    assert!(parquet.is_dir(), "compaction writes {}", parquet.display());

    let (s, v) = call(&c, Method::DELETE, api("units/u1/data"), ADMIN, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["events_removed"], 5, "{v}");
    let (s, v) = call(
        &c,
        Method::GET,
        api("audit?action=unit.delete_data"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"][0]["entity_key"], "u1", "{v}");

    let metrics = c
        .get(format!("{}/metrics", served.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("strata_pipeline_"), "{metrics}");
    served.terminate();

    // Stopped: the CLI may compact now (nothing left to compact).
    let out = strata_ok([Path::new("compact"), Path::new("--data-dir"), &dir]);
    let report: Value = serde_json::from_slice(&out).expect("json report");
    assert_eq!(report["events"], 0, "{report}");
}

/// Now, in epoch milliseconds (a timestamp form the collector accepts).
/// A loopback port nothing listens on (for a child process to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Creates and starts, on the server at `base` with data directory `dir`,
/// an experiment `key` of team `lab` with these variants (the first is the
/// control) and a `purchase` conversion metric, as a team would; returns
/// the experiment as the API answers it. The collection endpoints accept
/// exposures only to experiments that started.
pub(crate) async fn started_experiment(
    base: &str,
    dir: &Path,
    key: &str,
    variants: &[&str],
) -> Value {
    started_experiment_in(base, dir, &[], key, variants).await
}

/// [`started_experiment`], its tokens created in the store that `store`
/// (arguments of `strata token create`, e.g. `--database-url`) names.
pub(crate) async fn started_experiment_in(
    base: &str,
    dir: &Path,
    store: &[&str],
    key: &str,
    variants: &[&str],
) -> Value {
    use reqwest::Method;
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{base}/api/v1/{p}");
    let mut args = store.to_vec();
    args.extend(["--role", "analyst"]);
    let analyst = token(dir, &args);
    args.truncate(store.len());
    args.extend(["--role", "experimenter", "--team", "lab"]);
    let lab = token(dir, &args);
    let metric = json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}});
    let (s, v) = call(&c, Method::POST, api("metrics"), &analyst, Some(metric)).await;
    assert!(
        s == StatusCode::CREATED || s == StatusCode::CONFLICT,
        "metric: {s} {v}"
    );
    let variants: Vec<Value> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"key": v, "weight": 1, "control": i == 0}))
        .collect();
    let exp = json!({
        "key": key, "name": key, "owner_team": "lab", "unit": "user_id",
        "variants": variants, "primary_metric": "conversion",
        "mde": 0.05, "planned_units": 10000, "requires_approval": false
    });
    let (s, v) = call(&c, Method::POST, api("experiments"), &lab, Some(exp)).await;
    assert_eq!(s, StatusCode::CREATED, "create: {v}");
    let mut last = v;
    for action in ["submit", "start"] {
        let (s, v) = call(
            &c,
            Method::POST,
            api(&format!("experiments/{key}/{action}")),
            &lab,
            Some(json!({})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{action}: {v}");
        last = v;
    }
    last
}

/// Exposures name an experiment that started and one of its variants; the
/// experiment's flag stands for its key (OFREP and remote-evaluation
/// clients know only the flag) and the key is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_exposures_to_unknown_experiments_and_stores_a_flag_as_its_key() {
    use reqwest::Method;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("strata-data");
    let served = Served::start_in_runtime(&dir);
    let c = reqwest::Client::new();
    let ingest = token(&dir, &["--kind", "ingest"]);
    let now = now_ms();
    let url = format!("{}/collect/v1/exposures", served.base);
    // Before the experiment exists, its exposures are refused one by one.
    let early =
        json!([{"unit_id": "u0", "experiment": "exp_flagged", "variant": "control", "ts": now}]);
    let (s, v) = call(&c, Method::POST, url.clone(), &ingest, Some(early)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 0, "{v}");
    assert_eq!(v["rejected"][0]["field"], "experiment", "{v}");
    // Holdout exposures (assignment spec section 11) are always accepted,
    // with their two variants only.
    let holdout = json!([
        {"unit_id": "u9", "experiment": "$holdout", "variant": "holdout", "ts": now},
        {"unit_id": "u8", "experiment": "$holdout", "variant": "rest", "ts": now},
        {"unit_id": "u7", "experiment": "$holdout", "variant": "treatment", "ts": now}
    ]);
    let (s, v) = call(&c, Method::POST, url.clone(), &ingest, Some(holdout)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(
        (&v["rejected"][0]["index"], &v["rejected"][0]["field"]),
        (&json!(2), &json!("variant")),
        "{v}"
    );

    let exp =
        started_experiment(&served.base, &dir, "exp_flagged", &["control", "treatment"]).await;
    let flag = exp["flag"].as_str().expect("flag").to_owned();
    assert_ne!(flag, "exp_flagged");
    let batch = json!([
        {"unit_id": "u1", "experiment": "exp_flagged", "variant": "control", "ts": now},
        {"unit_id": "u2", "experiment": flag, "variant": "treatment", "ts": now},
        {"unit_id": "u3", "experiment": "exp_never", "variant": "control", "ts": now},
        {"unit_id": "u4", "experiment": "exp_flagged", "variant": "blue", "ts": now},
    ]);
    let (s, v) = call(&c, Method::POST, url, &ingest, Some(batch)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 2, "{v}");
    let rejected = v["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 2, "{v}");
    assert_eq!(
        (&rejected[0]["index"], &rejected[0]["field"]),
        (&json!(2), &json!("experiment")),
        "{v}"
    );
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("\"exp_never\" does not exist"),
        "{v}"
    );
    assert_eq!(
        (&rejected[1]["index"], &rejected[1]["field"]),
        (&json!(3), &json!("variant")),
        "{v}"
    );
    assert_eq!(
        rejected[1]["reason"],
        "experiment \"exp_flagged\" has no variant \"blue\"; its variants are control, treatment"
    );

    // Killed: late exposures are still data about it.
    let lab = token(&dir, &["--role", "experimenter", "--team", "lab"]);
    let api = |p: &str| format!("{}/api/v1/{p}", served.base);
    let (s, v) = call(
        &c,
        Method::POST,
        api("experiments/exp_flagged/kill"),
        &lab,
        Some(json!({"reason": "enough"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let late =
        json!([{"unit_id": "u5", "experiment": "exp_flagged", "variant": "treatment", "ts": now}]);
    let (s, v) = call(
        &c,
        Method::POST,
        format!("{}/collect/v1/exposures", served.base),
        &ingest,
        Some(late),
    )
    .await;
    assert_eq!((s, &v["accepted"]), (StatusCode::OK, &json!(1)), "{v}");

    let (s, v) = call(&c, Method::POST, api("pipeline/compact"), ADMIN, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    tokio::task::block_in_place(|| served.terminate());
    let mut stored = Vec::new();
    for f in strata_pipeline::parquet::list_parquet_files(&dir.join("pipeline/parquet"))
        .unwrap()
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("kind=exposures"))
    {
        let (_, batches) = strata_pipeline::parquet::read_file(&f).unwrap();
        for b in &batches {
            let units = strata_pipeline::parquet::string_column(b, "unit_id", &f).unwrap();
            let exps = strata_pipeline::parquet::string_column(b, "experiment", &f).unwrap();
            for (u, e) in units.iter().zip(exps.iter()) {
                stored.push((u.unwrap().to_owned(), e.unwrap().to_owned()));
            }
        }
    }
    stored.sort();
    assert_eq!(
        stored,
        [
            ("u1".to_owned(), "exp_flagged".to_owned()),
            ("u2".to_owned(), "exp_flagged".to_owned()),
            ("u5".to_owned(), "exp_flagged".to_owned()),
            ("u8".to_owned(), "$holdout".to_owned()),
            ("u9".to_owned(), "$holdout".to_owned()),
        ]
    );
}
