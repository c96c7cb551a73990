//! `strata analyze --ballista`: the analysis run on an Apache Ballista
//! cluster of one scheduler and two executors, separate processes on
//! loopback (`strata ballista-scheduler`, `strata ballista-executor`), gives
//! the results of the single-node engine on the same data.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_sim::dataset::{write_parquet, DatasetConfig, Variant};

use crate::serve::free_port;

fn wait_listening(port: u16, what: &str, child: &mut Child) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        assert!(Instant::now() < deadline, "{what} not listening on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Ballista cluster: a scheduler and `executors` executors, each with
/// its own work directory under `dir`.
struct Cluster {
    scheduler: u16,
    work_dirs: Vec<PathBuf>,
    _procs: Vec<Proc>,
}

impl Cluster {
    fn start(dir: &Path, executors: usize) -> Self {
        let scheduler = free_port();
        let mut procs = Vec::new();
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                "ballista-scheduler",
                "--listen",
                &format!("127.0.0.1:{scheduler}"),
                "--external-host",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("strata ballista-scheduler");
        wait_listening(scheduler, "the scheduler", &mut child);
        procs.push(Proc(child));
        let mut work_dirs = Vec::new();
        for i in 0..executors {
            let (flight, grpc) = (free_port(), free_port());
            let work = dir.join(format!("executor-{i}"));
            let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
                .args([
                    "ballista-executor",
                    "--scheduler",
                    &format!("127.0.0.1:{scheduler}"),
                    "--listen",
                    &format!("127.0.0.1:{flight}"),
                    "--grpc-port",
                    &grpc.to_string(),
                    "--concurrent-tasks",
                    "2",
                    "--work-dir",
                ])
                .arg(&work)
                .stdout(Stdio::null())
                .spawn()
                .expect("strata ballista-executor");
            wait_listening(flight, "an executor", &mut child);
            procs.push(Proc(child));
            work_dirs.push(work);
        }
        Self {
            scheduler,
            work_dirs,
            _procs: procs,
        }
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.scheduler)
    }
}

fn analyze(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("analyze")
        .args(args)
        .output()
        .expect("strata analyze");
    assert!(
        out.status.success(),
        "strata analyze {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a results document")
}

/// Two results documents are the same: the same fields, the same strings
/// and counts, numbers equal up to the order of floating-point sums (the
/// cluster adds per-partition sums in another order).
fn assert_same(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * (1.0 + x.abs()),
                "{path}: {x} != {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_same(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in x {
                assert_same(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

const METRICS: &str = r#"{"metrics": [
  {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
  {"key": "purchases", "type": "count", "filter": {"type": "purchase"}},
  {"key": "revenue", "type": "sum", "filter": {"type": "purchase"}, "winsorize": 0.99},
  {"key": "order_value", "type": "mean", "filter": {"type": "purchase"}},
  {"key": "aov", "type": "ratio", "numerator": {"type": "sum", "filter": {"type": "purchase"}},
                                  "denominator": {"type": "count", "filter": {"type": "purchase"}}},
  {"key": "load_p90", "type": "quantile", "quantile": 0.9, "filter": {"type": "page_load"}, "direction": "increase_is_bad"},
  {"key": "us_purchases", "type": "count", "filter": {"type": "purchase", "properties": {"country": {"in": ["US"]}}}}
]}"#;

const SPEC: &str = r#"{"key": "exp", "control": "control",
  "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}],
  "start": "2026-01-01T00:00:00Z", "end": "2026-01-15T00:00:00Z",
  "primary": "revenue", "secondary": ["purchases", "conversion", "aov", "order_value", "us_purchases"],
  "guardrails": ["load_p90"], "cuped": {"pre_period_days": 7}, "novelty_days": 2,
  "segments": ["country"], "sequential": "group_sequential", "planned_units": 20000}"#;

#[test]
fn an_analysis_on_a_ballista_cluster_gives_the_single_node_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = DatasetConfig {
        experiment: "exp".into(),
        salt: "exp".into(),
        variants: Variant::control_and_treatment(0.05),
        units: 20_000,
        visits_per_unit: 3.0,
        duplicate_rate: 0.05,
        seed: 7,
        ..DatasetConfig::default()
    };
    let written = write_parquet(&cfg, &data, 8).unwrap();
    assert!(written.events > 50_000, "{written:?}");
    let (spec, metrics) = (
        dir.path().join("spec.json"),
        dir.path().join("metrics.json"),
    );
    std::fs::write(&spec, SPEC).unwrap();
    std::fs::write(&metrics, METRICS).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let cluster = Cluster::start(dir.path(), 2);
    let url = cluster.url();
    let (spec, metrics) = (spec.display().to_string(), metrics.display().to_string());
    let exposures = data.join("exposures").display().to_string();
    let events = data.join("events").display().to_string();
    let input = [
        "--spec",
        spec.as_str(),
        "--metrics",
        metrics.as_str(),
        "--exposures",
        exposures.as_str(),
        "--events",
        events.as_str(),
    ];
    let looks = "--looks=2026-01-06T00:00:00Z,2026-01-10T00:00:00Z,2026-01-15T00:00:00Z";
    let scratch_arg = format!("--ballista-scratch={}", scratch.display());
    let on_cluster = [
        "--ballista",
        url.as_str(),
        scratch_arg.as_str(),
        "--target-partitions=4",
    ];
    for extra in [&[looks][..], &["--assume-unique-event-ids"][..]] {
        let single = analyze(&[&input[..], extra].concat());
        let distributed = analyze(&[&input[..], extra, &on_cluster[..]].concat());
        assert_same(&single, &distributed, &format!("{extra:?}"));
    }
    // The check above could pass with nothing run remotely; the shuffle
    // files of its jobs are in both executors' work directories.
    for work in &cluster.work_dirs {
        let jobs = std::fs::read_dir(work).map_or(0, |d| d.count());
        assert!(jobs > 0, "no job ran on {}", work.display());
    }
    // Each analysis removed its tables between stages.
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

#[test]
fn an_unreachable_scheduler_is_an_error_naming_it() {
    let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/analysis");
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "analyze",
            "--spec",
            &format!("{ex}/experiment.yaml"),
            "--metrics",
            &format!("{ex}/metrics.yaml"),
            "--exposures",
            &format!("{ex}/data/exposures"),
            "--events",
            &format!("{ex}/data/events"),
            "--ballista",
            &format!("df://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// `strata serve --ballista`: the scheduled analysis runs its looks on the
/// cluster, and they count what was collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_looks_run_on_the_ballista_cluster() {
    use crate::scheduled::{create_conversion, look_with, send, start};
    use crate::serve::{token, Served};
    use serde_json::json;

    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(tmp.path(), 2);
    let dir = tmp.path().join("strata-data");
    let scratch = tmp.path().join("scratch");
    let ingest = token(&dir, &["--kind", "ingest"]);
    let analyst = token(&dir, &["--role", "analyst"]);
    let lab = token(&dir, &["--role", "experimenter", "--team", "lab"]);
    let url = cluster.url();
    let served = Served::start_with(
        &dir,
        &[
            "--analysis-interval",
            "2s",
            "--ballista",
            &url,
            "--ballista-scratch",
            scratch.to_str().unwrap(),
        ],
    );
    let base = served.base.clone();
    let c = reqwest::Client::new();
    create_conversion(&c, &base, &analyst).await;
    start(&c, &base, &lab, "exp_dist", json!({})).await;
    send(&c, &base, &ingest, "exp_dist", 0, 300, 3).await;
    let look = look_with(&c, &base, &lab, "exp_dist", 0, 300).await;
    let r = &look["results"];
    assert_eq!(look["published_by"], "system:analysis", "{look}");
    assert_eq!(r["units"]["treatment"], 100, "{r}");
    assert_eq!(r["units"]["control"], 200, "{r}");
    // Units 0, 3, 6, … are the treatment and each bought; no control unit
    // did.
    let variants = &r["metrics"][0]["variants"];
    assert_eq!(variants["treatment"]["mean"], 1.0, "{variants}");
    assert_eq!(variants["control"]["mean"], 0.0, "{variants}");
    let ran: usize = cluster
        .work_dirs
        .iter()
        .map(|w| std::fs::read_dir(w).map_or(0, |d| d.count()))
        .sum();
    assert!(ran > 0, "no job of the scheduled look ran on the cluster");
}
