//! End-to-end benchmark of the guardrail monitor against its target:
//!
//! > 300 running experiments × 3 guardrails while ingestion runs at
//! > 300 k events/s: one monitor cycle ≤ 30 s, data seen by the monitor
//! > ≤ 60 s after acknowledgement, from breach decision to the kill reaching
//! > 10,000 stream subscribers p99 ≤ 250 ms.
//!
//! Why: the monitor, the ingestion path and the SDK stream share one
//! process; their unit tests and the integration test
//! (`tests/integration/guardrails.rs`) check that the monitor decides
//! right, not how fast it does so under the load it is meant for. This
//! tool runs `strata serve` as a child process (its CPU measured on its
//! own) and drives all three at once:
//!
//! 1. tokens (`strata token create`), the server (`--no-analysis`, the
//!    request rate limits off, `--guardrail-interval`);
//! 2. metrics, organisation-wide guardrails (`"applies_to": "all"`:
//!    errors, conversion, revenue; one-minute windows, no age gate) and N
//!    running 50/50 experiments of team `lab`, one of which, `bench_bad`,
//!    has a 5× error rate in its treatment (the others are A/A);
//! 3. SSE subscribers of `/sdk/v1/stream`, each noting the wall-clock time
//!    at which it first sees each config version;
//! 4. paced open-loop ingestion (keep-alive connections posting batches to
//!    `/collect/v1/exposures` and `/collect/v1/events` at fixed intended
//!    send times; latency counted from the intended time, so a slow server
//!    is not hidden by a slowed-down client);
//! 5. every cycle of the monitor (`GET /api/v1/guardrail-monitor`);
//! 6. the kill of `bench_bad`: from the recorded breach decision (the
//!    evaluation's `at`) to its arrival at every subscriber;
//! 7. a summary in Markdown tables.
//!
//! The collector limits each source address to 10,000 records/s and each
//! ingestion key to 100,000 records/s (`strata_pipeline::http::IngestConfig`),
//! and `strata serve` has no flag for either. So that a loopback load
//! generator stands for many clients, each connection binds its own
//! loopback source address (127.0.1.x; `--single-source` turns that off)
//! and the connections share several ingestion keys (`--ingest-keys`,
//! default: one per 50,000 records/s).
//!
//! ```text
//! cargo build --release -p strata-cli --bin strata
//! cargo run --release --manifest-path bench/guardrails/Cargo.toml -- \
//!     --experiments 300 --guardrails 3 --rate 300000 --seconds 180 \
//!     --subscribers 10000 --interval 30s --exposures-per-unit 3
//! bench/guardrails/run.sh [ARGS]            (the same, with the machine printed first)
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The planted regression.
const BAD: &str = "bench_bad";

/// End-to-end benchmark of the guardrail monitor (see the file's documentation).
#[derive(Debug, Parser)]
#[command(name = "guardrail_bench")]
struct Opts {
    /// The `strata` binary (default: $CARGO_TARGET_DIR/release/strata or target/release/strata).
    #[arg(long, value_name = "PATH")]
    strata: Option<PathBuf>,
    /// Running experiments (one of them is `bench_bad`).
    #[arg(long, default_value_t = 300)]
    experiments: usize,
    /// Organisation-wide guardrail definitions (errors, conversion, revenue, then repeats).
    #[arg(long, default_value_t = 3)]
    guardrails: usize,
    /// Records per second sent, exposures and events together.
    #[arg(long, default_value_t = 300_000.0)]
    rate: f64,
    /// Seconds of ingestion.
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// SSE subscribers of the SDK stream.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// The monitor's interval (`--guardrail-interval` of `strata serve`): 10s, 30s, 1m.
    #[arg(long, default_value = "30s")]
    interval: String,
    /// Experiments each new unit is exposed to.
    #[arg(long, default_value_t = 3)]
    exposures_per_unit: usize,
    /// Page views each new unit sends (besides its purchase and error
    /// draws): 1 makes the load mostly exposures, more makes it mostly
    /// events from fewer units.
    #[arg(long, default_value_t = 1)]
    page_views_per_unit: u16,
    /// Keep-alive ingestion connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Records per ingestion request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Ingestion keys the connections share (default: one per 50,000 records/s).
    #[arg(long)]
    ingest_keys: Option<usize>,
    /// Send every connection from 127.0.0.1 (then the collector's
    /// 10,000 records/s per source address applies to the whole load).
    #[arg(long)]
    single_source: bool,
    /// Worker threads of this load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Parent of the temporary data directory (default: the system's temp dir).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the data directory (and the server's log) afterwards.
    #[arg(long)]
    keep: bool,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    if opts.experiments == 0 || opts.batch == 0 || opts.connections == 0 || opts.rate <= 0.0 {
        bail!("--experiments, --batch, --connections and --rate must be positive");
    }
    if opts.connections > 60_000 {
        bail!("--connections: at most 60,000");
    }
    let interval = parse_interval(&opts.interval)?;
    let bin = strata_binary(opts.strata.as_deref())?;
    let parent = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = parent.join(format!(
        "strata-guardrail-bench-{}-{}",
        std::process::id(),
        now_ms()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = bench(&opts, &bin, &dir, interval);
    if opts.keep {
        eprintln!("== data directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Everything but the data directory's lifetime.
fn bench(opts: &Opts, bin: &Path, dir: &Path, interval: Duration) -> Result<()> {
    let machine = Machine::now();
    eprintln!(
        "== {} cores, load average {}; strata at {}; data in {}",
        machine.cores,
        machine.load,
        bin.display(),
        dir.display()
    );
    check_fd_limit(opts);
    let data = dir.join("data");
    let keys = opts
        .ingest_keys
        .unwrap_or_else(|| (opts.rate / 50_000.0).ceil() as usize)
        .max(1);
    let tokens = Tokens {
        admin: token(bin, &data, &["--role", "admin", "--name", "bench-admin"])?,
        lab: token(bin, &data, &["--role", "experimenter", "--team", "lab"])?,
        sdk: token(bin, &data, &["--kind", "sdk", "--name", "bench-sdk"])?,
        ingest: (0..keys)
            .map(|i| {
                token(
                    bin,
                    &data,
                    &["--kind", "ingest", "--name", &format!("bench-ingest-{i}")],
                )
            })
            .collect::<Result<_>>()?,
    };
    let mut server = Server::start(bin, &data, &opts.interval, &dir.join("server.log"))?;
    eprintln!("== strata serve (pid {}) at {}", server.pid, server.base);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let measured = rt.block_on(run(opts, &server, &tokens, interval));
    // Closing the subscribers' connections lets the server stop gracefully.
    rt.shutdown_timeout(Duration::from_secs(5));
    let cpu_total = proc_cpu_seconds(server.pid);
    let stopped = server.terminate();
    let report = measured?;
    print_report(opts, &machine, &report, cpu_total, &stopped, keys);
    Ok(())
}

// ---------------------------------------------------------------------------
// The server process and its tokens
// ---------------------------------------------------------------------------

fn strata_binary(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"));
            target.join("release").join("strata")
        }
    };
    if !path.is_file() {
        bail!(
            "no strata binary at {} (build it: cargo build --release -p strata-cli --bin strata, or pass --strata PATH)",
            path.display()
        );
    }
    Ok(path)
}

struct Tokens {
    admin: String,
    lab: String,
    sdk: String,
    ingest: Vec<String>,
}

/// `strata token create ARGS --data-dir DIR`: the token it prints.
fn token(bin: &Path, data: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(["token", "create"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .context("cannot run strata token create")?;
    if !out.status.success() {
        bail!(
            "strata token create {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `strata serve` as a child process; killed if dropped while running.
struct Server {
    child: Child,
    pid: u32,
    base: String,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &Path, data: &Path, interval: &str, log: &Path) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
            .args(["--sdk-rate-limit", "0", "--no-analysis"])
            .args(["--guardrail-interval", interval])
            .arg("--data-dir")
            .arg(data)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start strata serve")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut file = std::fs::File::create(log).context("cannot create the server log")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps draining stderr (into the log) so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let pid = child.id();
        let base = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "strata serve did not print its address; its log: {}",
                    log.display()
                );
            }
        };
        let addr = base
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("unexpected address {base:?}"))?;
        Ok(Self {
            child,
            pid,
            base,
            addr,
        })
    }

    /// SIGTERM, then waits up to 30 s (then SIGKILL). Says how it ended.
    fn terminate(&mut self) -> String {
        let t = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return format!(
                    "stopped by SIGTERM in {:.1} s ({s})",
                    t.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "ignored SIGTERM for 30 s, killed".to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// The machine and the processes' CPU
// ---------------------------------------------------------------------------

struct Machine {
    cores: usize,
    load: String,
}

impl Machine {
    fn now() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load: load_average(),
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`, else 100).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of process `pid` in seconds (`pid` 0: this process).
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let path = if pid == 0 {
        "/proc/self/stat".to_owned()
    } else {
        format!("/proc/{pid}/stat")
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Warns when the open-file limit cannot hold the subscribers.
fn check_fd_limit(opts: &Opts) {
    let need = opts.subscribers + opts.connections + 256;
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft.filter(|s| *s < need) {
        eprintln!(
            "== WARNING: open-file limit {soft} < {need} needed for {} subscribers (raise it: ulimit -n)",
            opts.subscribers
        );
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `30s`, `5m`, `1h`, or a number of seconds.
fn parse_interval(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (n, unit) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = n
        .parse()
        .with_context(|| format!("--interval {s:?}: expected e.g. 30s, 5m"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => bail!("--interval {s:?}: unknown unit {unit:?}"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// SplitMix64: the generator's hash of units and experiments.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) from hash `h`.
fn uniform(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The `p` quantile of sorted `v` (nearest rank).
fn quantile(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// One API call; an error unless it succeeds.
async fn api(
    c: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut r = c
        .request(method.clone(), format!("{base}/api/v1/{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.with_context(|| format!("{method} {path}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{method} {path}: {status} {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// What the run measured.
struct Report {
    setup_seconds: f64,
    experiments: usize,
    subscribers_connected: usize,
    subscribers_seconds: f64,
    ingest: IngestTotals,
    /// Every cycle seen, by start.
    cycles: Vec<Value>,
    ingest_started_ms: u64,
    ingest_ended_ms: u64,
    cpu_ingest: Option<f64>,
    cpu_self_ingest: Option<f64>,
    kill: Option<Kill>,
    /// (experiment, outcome or gate, count) of the evaluations read at the end.
    outcomes: Vec<(String, String, usize)>,
    final_status: String,
    waited_for_last_cycle: bool,
}

/// The kill of `bench_bad` and its fan-out.
struct Kill {
    guardrail: String,
    evaluation: String,
    decided_ms: i64,
    ended_ms: Option<i64>,
    version: u64,
    /// Subscribers holding an older version when it was published.
    eligible: usize,
    /// From the decision to each arrival, µs (sorted).
    from_decision: Vec<u64>,
    /// From `ended_at` to each arrival, µs (sorted).
    from_ended: Vec<u64>,
    reason: String,
}

async fn run(opts: &Opts, server: &Server, tokens: &Tokens, interval: Duration) -> Result<Report> {
    let c = reqwest::Client::new();
    let base = server.base.clone();

    // 2. Metrics, guardrails, experiments.
    let t = Instant::now();
    let names = setup(&c, &base, tokens, opts).await?;
    let setup_seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "== {} experiments and {} guardrails set up in {setup_seconds:.1} s",
        names.len(),
        opts.guardrails
    );

    // 3. Subscribers.
    let subs = Subscribers::new(opts.subscribers);
    let t = Instant::now();
    let handles = subs.connect(server.addr, &tokens.sdk).await;
    let subscribers_connected = subs.wait_connected(Duration::from_secs(120)).await;
    let subscribers_seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "== {subscribers_connected} of {} subscribers connected in {subscribers_seconds:.1} s",
        opts.subscribers
    );

    // 5. and 6. The monitor's cycles and the kill, watched while ingestion runs.
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(Mutex::new(BTreeMap::<String, Value>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_cycles(
        c.clone(),
        base.clone(),
        tokens.admin.clone(),
        cycles.clone(),
        stop.clone(),
    ));
    let watcher = tokio::spawn(watch_kill(
        c.clone(),
        base.clone(),
        tokens.admin.clone(),
        killed.clone(),
        stop.clone(),
    ));

    // 4. Ingestion.
    let cpu0 = proc_cpu_seconds(server.pid);
    let self0 = proc_cpu_seconds(0);
    let ingest_started_ms = now_ms();
    let ingest = ingest(
        opts,
        &base,
        tokens,
        Arc::new(names),
        killed.clone(),
        &cycles,
    )
    .await;
    let ingest_ended_ms = now_ms();
    let cpu_ingest = cpu0.zip(proc_cpu_seconds(server.pid)).map(|(a, b)| b - a);
    let cpu_self_ingest = self0.zip(proc_cpu_seconds(0)).map(|(a, b)| b - a);
    eprintln!(
        "== ingestion done: {} records acknowledged in {:.1} s",
        ingest.acked, ingest.elapsed
    );

    // 7. One more cycle, started after the end of ingestion.
    let wait = interval + Duration::from_secs(120) + max_cycle(&cycles).mul_f64(2.0);
    eprintln!(
        "== waiting for a cycle that starts after ingestion (at most {:.0} s)",
        wait.as_secs_f64()
    );
    let deadline = Instant::now() + wait;
    let mut waited_for_last_cycle = false;
    while Instant::now() < deadline {
        let done = lock(&cycles)
            .values()
            .any(|c| c["started_at"].as_str().and_then(rfc3339_ms) > Some(ingest_ended_ms as i64));
        if done {
            waited_for_last_cycle = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The last cycles, read once more.
    if let Ok(v) = api(
        &c,
        &base,
        Method::GET,
        "guardrail-monitor",
        &tokens.admin,
        None,
    )
    .await
    {
        merge_cycles(&cycles, &v);
    }

    let exp = api(
        &c,
        &base,
        Method::GET,
        &format!("experiments/{BAD}"),
        &tokens.admin,
        None,
    )
    .await?;
    let final_status = exp["status"].as_str().unwrap_or("?").to_owned();
    let kill = if final_status == "killed" {
        Some(kill_figures(&c, &base, tokens, &exp, &subs).await?)
    } else {
        None
    };
    let mut outcomes = Vec::new();
    let aa = names_aa(opts.experiments);
    for key in [Some(BAD.to_owned()), aa].into_iter().flatten() {
        if let Ok(v) = api(
            &c,
            &base,
            Method::GET,
            &format!("experiments/{key}/guardrails"),
            &tokens.admin,
            None,
        )
        .await
        {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for e in v["history"].as_array().into_iter().flatten() {
                let what = match e["doc"]["evaluation"]["skipped_by"].as_str() {
                    // A failed read is a fault of the monitor, not a state
                    // of the data: say what failed.
                    Some(gate @ "data") => {
                        let detail = e["doc"]["evaluation"]["gates"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|g| g["gate"] == gate)
                            .and_then(|g| g["detail"].as_str())
                            .unwrap_or("?");
                        format!("skipped by {gate}: {detail}")
                    }
                    Some(gate) => format!("skipped by {gate}"),
                    None => e["outcome"].as_str().unwrap_or("?").to_owned(),
                };
                *counts.entry(what).or_default() += 1;
            }
            outcomes.extend(counts.into_iter().map(|(w, n)| (key.clone(), w, n)));
        }
    }

    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.abort();
    }
    let _ = poller.await;
    let _ = watcher.await;
    let cycles = lock(&cycles).values().cloned().collect();
    Ok(Report {
        setup_seconds,
        experiments: opts.experiments,
        subscribers_connected,
        subscribers_seconds,
        ingest,
        cycles,
        ingest_started_ms,
        ingest_ended_ms,
        cpu_ingest,
        cpu_self_ingest,
        kill,
        outcomes,
        final_status,
        waited_for_last_cycle,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key of an A/A experiment (the first one), if any.
fn names_aa(n: usize) -> Option<String> {
    (n > 1).then(|| experiment_name(1))
}

fn experiment_name(i: usize) -> String {
    if i == 0 {
        BAD.to_owned()
    } else {
        format!("bench_aa_{i:04}")
    }
}

/// Creates the metrics, the guardrails and the running experiments;
/// returns the experiments' keys (`bench_bad` first).
async fn setup(
    c: &reqwest::Client,
    base: &str,
    tokens: &Tokens,
    opts: &Opts,
) -> Result<Vec<String>> {
    let admin = &tokens.admin;
    for m in [
        json!({"key": "errors", "type": "binomial", "filter": {"type": "error"}}),
        json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}),
        json!({"key": "revenue", "type": "sum", "filter": {"type": "purchase"}}),
        json!({"key": "page_views", "type": "count", "filter": {"type": "page_view"}}),
    ] {
        api(c, base, Method::POST, "metrics", admin, Some(m)).await?;
    }
    let templates = [
        json!({"metric": "errors", "direction": "increase_is_bad", "threshold": 0.01}),
        json!({"metric": "conversion", "direction": "decrease_is_bad", "threshold": 0.05}),
        json!({"metric": "revenue", "direction": "decrease_is_bad", "threshold": 0.02, "relative": true}),
    ];
    for i in 0..opts.guardrails {
        let mut g = templates[i % templates.len()].clone();
        let metric = g["metric"].as_str().unwrap_or_default().to_owned();
        let key = if i < templates.len() {
            format!("{metric}_guard")
        } else {
            format!("{metric}_guard_{i}")
        };
        for (k, v) in [
            ("key", json!(key)),
            ("window_minutes", json!(1)),
            ("min_age_minutes", json!(0)),
            ("min_samples", json!(200)),
            ("auto_action", json!("kill")),
            ("applies_to", json!("all")),
        ] {
            g[k] = v;
        }
        api(c, base, Method::POST, "guardrails", admin, Some(g)).await?;
    }
    let names: Vec<String> = (0..opts.experiments).map(experiment_name).collect();
    // A few at a time: each start publishes a config version.
    for chunk in names.chunks(8) {
        let mut set = tokio::task::JoinSet::new();
        for key in chunk {
            let (c, base, lab, key) = (c.clone(), base.to_owned(), tokens.lab.clone(), key.clone());
            set.spawn(async move {
                let exp = json!({
                    "key": key, "name": key, "owner_team": "lab", "unit": "user_id",
                    "hypothesis": "guardrail benchmark",
                    "variants": [{"key": "control", "weight": 50, "control": true},
                                 {"key": "treatment", "weight": 50}],
                    "primary_metric": "page_views",
                    "mde": 0.05, "planned_units": 100000, "requires_approval": false
                });
                api(&c, &base, Method::POST, "experiments", &lab, Some(exp)).await?;
                for (action, body) in [
                    ("submit", json!({})),
                    ("start", json!({"ramp_percent": 100})),
                ] {
                    api(
                        &c,
                        &base,
                        Method::POST,
                        &format!("experiments/{key}/{action}"),
                        &lab,
                        Some(body),
                    )
                    .await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = set.join_next().await {
            r.context("setup task")??;
        }
    }
    Ok(names)
}

// ---------------------------------------------------------------------------
// SSE subscribers
// ---------------------------------------------------------------------------

/// Per subscriber: each config version it saw and when (µs since the epoch).
type Seen = Arc<Mutex<Vec<Vec<(u64, u64)>>>>;

/// The SSE subscribers and what they saw.
struct Subscribers {
    seen: Seen,
    disconnected: Arc<AtomicUsize>,
    n: usize,
}

impl Subscribers {
    fn new(n: usize) -> Self {
        Self {
            seen: Arc::new(Mutex::new(vec![Vec::new(); n])),
            disconnected: Arc::new(AtomicUsize::new(0)),
            n,
        }
    }

    /// Starts the subscribers (at most 256 connecting at once).
    async fn connect(&self, addr: SocketAddr, token: &str) -> Vec<tokio::task::JoinHandle<()>> {
        let gate = Arc::new(tokio::sync::Semaphore::new(256));
        let req: Arc<[u8]> = format!(
            "GET /sdk/v1/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .into_bytes()
        .into();
        let mut handles = Vec::with_capacity(self.n);
        for id in 0..self.n {
            handles.push(tokio::spawn(subscriber(
                id,
                addr,
                req.clone(),
                gate.clone(),
                self.seen.clone(),
                self.disconnected.clone(),
            )));
            if id % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        handles
    }

    fn connected(&self) -> usize {
        lock(&self.seen).iter().filter(|v| !v.is_empty()).count()
    }

    /// Waits until every subscriber has its first version (or `limit`).
    async fn wait_connected(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.connected();
            let gone = self.disconnected.load(Ordering::Relaxed);
            if n + gone >= self.n || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One SSE connection, read raw: notes the arrival of every `data: {"version":N}`.
async fn subscriber(
    id: usize,
    addr: SocketAddr,
    req: Arc<[u8]>,
    gate: Arc<tokio::sync::Semaphore>,
    seen: Seen,
    disconnected: Arc<AtomicUsize>,
) {
    let gone = || {
        disconnected.fetch_add(1, Ordering::Relaxed);
    };
    let permit = gate.acquire_owned().await.ok();
    let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
        return gone();
    };
    let mut off = 0;
    while off < req.len() {
        if s.writable().await.is_err() {
            return gone();
        }
        match s.try_write(&req[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return gone(),
        }
    }
    let mut permit = permit;
    let mut buf = vec![0u8; 4096];
    let mut pending = String::new();
    const DATA: &str = "data: {\"version\":";
    loop {
        if s.readable().await.is_err() {
            return gone();
        }
        let n = match s.try_read(&mut buf) {
            Ok(0) => return gone(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return gone(),
        };
        let at = now_us();
        permit.take();
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(i) = pending.find(DATA) {
            let rest = &pending[i + DATA.len()..];
            let Some(end) = rest.find('}') else { break };
            if let Ok(v) = rest[..end].trim().parse::<u64>() {
                let mut seen = lock(&seen);
                let mine = &mut seen[id];
                if mine.last().is_none_or(|(last, _)| v > *last) {
                    mine.push((v, at));
                }
            }
            pending = rest[end..].to_owned();
        }
        if pending.len() > 16_384 {
            pending.drain(..pending.len() - 64);
        }
    }
}

// ---------------------------------------------------------------------------
// The monitor's cycles and the kill
// ---------------------------------------------------------------------------

fn merge_cycles(cycles: &Mutex<BTreeMap<String, Value>>, v: &Value) {
    let mut map = lock(cycles);
    for c in v["items"].as_array().into_iter().flatten() {
        if let Some(start) = c["started_at"].as_str() {
            map.insert(start.to_owned(), c.clone());
        }
    }
}

fn max_cycle(cycles: &Mutex<BTreeMap<String, Value>>) -> Duration {
    let secs = lock(cycles)
        .values()
        .filter_map(|c| c["seconds"].as_f64())
        .fold(0.0, f64::max);
    Duration::from_secs_f64(secs)
}

/// Keeps every cycle of `GET /api/v1/guardrail-monitor` (it lists the last 50).
async fn poll_cycles(
    c: reqwest::Client,
    base: String,
    token: String,
    cycles: Arc<Mutex<BTreeMap<String, Value>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match api(&c, &base, Method::GET, "guardrail-monitor", &token, None).await {
            Ok(v) => merge_cycles(&cycles, &v),
            Err(e) => eprintln!("   guardrail-monitor: {e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Polls `bench_bad` until it is no longer running; then the generator
/// stops exposing units to it (SDKs serve the default).
async fn watch_kill(
    c: reqwest::Client,
    base: String,
    token: String,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok(v) = api(
            &c,
            &base,
            Method::GET,
            &format!("experiments/{BAD}"),
            &token,
            None,
        )
        .await
        {
            let status = v["status"].as_str().unwrap_or("running");
            if status != "running" {
                eprintln!(
                    "   {BAD} is {status} ({})",
                    v["kill_reason"].as_str().unwrap_or("")
                );
                killed.store(true, Ordering::Relaxed);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The kill's decision (its evaluation), version and fan-out.
async fn kill_figures(
    c: &reqwest::Client,
    base: &str,
    tokens: &Tokens,
    exp: &Value,
    subs: &Subscribers,
) -> Result<Kill> {
    let history = api(
        c,
        base,
        Method::GET,
        &format!("experiments/{BAD}/guardrails"),
        &tokens.admin,
        None,
    )
    .await?;
    let items = history["history"].as_array().cloned().unwrap_or_default();
    let eval = items
        .iter()
        .find(|e| e["action"] == "kill" && e["taken"] == "killed")
        .or_else(|| items.iter().find(|e| e["action"] == "kill"))
        .cloned()
        .context("bench_bad is killed but no evaluation called for the kill")?;
    let decided_ms = eval["at"]
        .as_str()
        .and_then(rfc3339_ms)
        .context("the evaluation has no time")?;
    let ended_ms = exp["ended_at"].as_str().and_then(rfc3339_ms);
    let version = exp["version"]
        .as_u64()
        .context("the experiment has no version")?;
    // Those connected before the kill was published, once they all have it (or 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (eligible, arrivals) = loop {
        let (eligible, arrivals): (usize, Vec<u64>) = {
            let seen = lock(&subs.seen);
            let before: Vec<&Vec<(u64, u64)>> = seen
                .iter()
                .filter(|s| s.first().is_some_and(|(v, _)| *v < version))
                .collect();
            let arrivals = before
                .iter()
                .filter_map(|s| s.iter().find(|(v, _)| *v >= version).map(|(_, at)| *at))
                .collect();
            (before.len(), arrivals)
        };
        if arrivals.len() >= eligible || Instant::now() >= deadline {
            break (eligible, arrivals);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let since = |t_ms: i64| -> Vec<u64> {
        let mut v: Vec<u64> = arrivals
            .iter()
            .map(|at| at.saturating_sub((t_ms.max(0) as u64) * 1000))
            .collect();
        v.sort_unstable();
        v
    };
    Ok(Kill {
        guardrail: eval["guardrail"].as_str().unwrap_or("?").to_owned(),
        evaluation: eval["id"].as_str().unwrap_or("?").to_owned(),
        decided_ms,
        ended_ms,
        version,
        eligible,
        from_decision: since(decided_ms),
        from_ended: ended_ms.map(since).unwrap_or_default(),
        reason: exp["kill_reason"].as_str().unwrap_or("").to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Ingestion
// ---------------------------------------------------------------------------

/// The records of new units, formatted as JSON without a `Value` tree.
struct Generator {
    conn: u64,
    seq: u64,
    names: Arc<Vec<String>>,
    per_unit: usize,
    page_views: u16,
    killed: Arc<AtomicBool>,
    /// (unit, experiment, treatment, ts ms).
    exposures: VecDeque<(u64, u32, bool, u64)>,
    /// (unit, 0 page_view | 1 purchase | 2 error, index among its kind).
    events: VecDeque<(u64, u8, u16)>,
    chosen: Vec<usize>,
}

impl Generator {
    fn new(
        conn: usize,
        names: Arc<Vec<String>>,
        per_unit: usize,
        page_views: u16,
        killed: Arc<AtomicBool>,
    ) -> Self {
        Self {
            conn: conn as u64,
            seq: 0,
            names,
            per_unit,
            page_views: page_views.max(1),
            killed,
            exposures: VecDeque::new(),
            events: VecDeque::new(),
            chosen: Vec::new(),
        }
    }

    /// A new unit: exposed to `per_unit` experiments picked by its hash
    /// (those open to it: all but `bench_bad` once it is killed), variant
    /// by the hash of unit and experiment; `page_views` page views, a purchase with
    /// p = 0.1, an error with p = 0.02 (0.10 in `bench_bad`'s treatment).
    fn unit(&mut self, ts: u64) {
        let seq = self.seq;
        self.seq += 1;
        let h = mix((self.conn << 40) ^ seq);
        let n = self.names.len();
        let first = usize::from(self.killed.load(Ordering::Relaxed) && n > 0);
        let open = n - first;
        let k = self.per_unit.min(open);
        self.chosen.clear();
        if k == open {
            self.chosen.extend(first..n);
        } else {
            let mut i = 0u64;
            while self.chosen.len() < k {
                let idx = first + (mix(h.wrapping_add(i)) % open as u64) as usize;
                i += 1;
                if !self.chosen.contains(&idx) {
                    self.chosen.push(idx);
                }
            }
        }
        let mut bad_treatment = false;
        for &idx in &self.chosen {
            let treatment = mix(h ^ mix(idx as u64 + 1)) & 1 == 1;
            bad_treatment |= idx == 0 && treatment;
            self.exposures.push_back((seq, idx as u32, treatment, ts));
        }
        for i in 0..self.page_views {
            self.events.push_back((seq, 0, i));
        }
        if uniform(mix(h ^ 0x5055_5243_4841_5345)) < 0.1 {
            self.events.push_back((seq, 1, 0));
        }
        let p_error = if bad_treatment { 0.10 } else { 0.02 };
        if uniform(mix(h ^ 0x4552_524F_5253_0000)) < p_error {
            self.events.push_back((seq, 2, 0));
        }
    }

    /// The next batch of `size` records into `body`: events when that many
    /// are waiting, otherwise exposures of new units. Returns the path.
    fn batch(&mut self, size: usize, body: &mut String) -> &'static str {
        let now = now_ms();
        let events = self.events.len() >= size || self.names.is_empty();
        body.clear();
        body.push('[');
        if events {
            while self.events.len() < size {
                self.unit(now);
            }
            for i in 0..size {
                let (seq, kind, n) = self.events.pop_front().unwrap_or((0, 0, 0));
                if i > 0 {
                    body.push(',');
                }
                let conn = self.conn;
                let (ty, value) = match kind {
                    0 => ("page_view", ""),
                    1 => ("purchase", ",\"value\":10"),
                    _ => ("error", ""),
                };
                let _ = write!(
                    body,
                    "{{\"event_id\":\"u{conn}-{seq}-{kind}-{n}\",\"unit_id\":\"u{conn}-{seq}\",\"type\":\"{ty}\",\"ts\":{now}{value}}}"
                );
            }
        } else {
            while self.exposures.len() < size {
                self.unit(now);
            }
            for i in 0..size {
                let (seq, idx, treatment, ts) = self.exposures.pop_front().unwrap_or_default();
                if i > 0 {
                    body.push(',');
                }
                let conn = self.conn;
                let variant = if treatment { "treatment" } else { "control" };
                let name = &self.names[idx as usize];
                let _ = write!(
                    body,
                    "{{\"unit_id\":\"u{conn}-{seq}\",\"experiment\":\"{name}\",\"variant\":\"{variant}\",\"ts\":{ts}}}"
                );
            }
        }
        body.push(']');
        if events {
            "/collect/v1/events"
        } else {
            "/collect/v1/exposures"
        }
    }
}

/// What the connections did, summed.
#[derive(Debug, Default)]
struct IngestTotals {
    /// Ack latencies from the intended send time, µs (sorted).
    latency_us: Vec<u64>,
    intended_records: u64,
    sent_records: u64,
    acked: u64,
    duplicates: u64,
    /// Records shed one by one under load (retryable rejections).
    shed: u64,
    /// Other per-record rejections.
    rejected: u64,
    /// Records of requests refused whole with 503.
    refused_503: u64,
    /// Records of requests refused whole with 429.
    throttled_429: u64,
    /// Records of requests that failed otherwise.
    errors: u64,
    /// Records never sent: the connection was over 30 s behind at the end.
    not_sent: u64,
    exposures: u64,
    events: u64,
    first_errors: Vec<String>,
    /// Seconds from the first intended send to the last answer.
    elapsed: f64,
    connections: usize,
    keys: usize,
    sources: usize,
}

impl IngestTotals {
    fn add(&mut self, o: IngestTotals) {
        self.latency_us.extend(o.latency_us);
        self.intended_records += o.intended_records;
        self.sent_records += o.sent_records;
        self.acked += o.acked;
        self.duplicates += o.duplicates;
        self.shed += o.shed;
        self.rejected += o.rejected;
        self.refused_503 += o.refused_503;
        self.throttled_429 += o.throttled_429;
        self.errors += o.errors;
        self.not_sent += o.not_sent;
        self.exposures += o.exposures;
        self.events += o.events;
        for e in o.first_errors {
            if self.first_errors.len() < 5 && !self.first_errors.contains(&e) {
                self.first_errors.push(e);
            }
        }
    }
}

/// Counters for the progress lines.
#[derive(Default)]
struct Live {
    acked: AtomicU64,
    shed: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

/// A connection's share of the load.
struct Pace {
    start: Instant,
    offset: Duration,
    every: Duration,
    batches: u64,
    end: Instant,
}

/// Runs the paced load for `--seconds`, printing progress every 10 s.
async fn ingest(
    opts: &Opts,
    base: &str,
    tokens: &Tokens,
    names: Arc<Vec<String>>,
    killed: Arc<AtomicBool>,
    cycles: &Mutex<BTreeMap<String, Value>>,
) -> IngestTotals {
    let conns = opts.connections;
    // Each connection sends `batch` records every `every`.
    let every = Duration::from_secs_f64(opts.batch as f64 * conns as f64 / opts.rate);
    let duration = Duration::from_secs(opts.seconds);
    let start = Instant::now() + Duration::from_millis(200);
    let live = Arc::new(Live::default());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..conns {
        let offset = every.mul_f64(i as f64 / conns as f64);
        let batches = if offset < duration {
            ((duration - offset).as_secs_f64() / every.as_secs_f64()).ceil() as u64
        } else {
            0
        };
        let pace = Pace {
            start,
            offset,
            every,
            batches,
            end: start + duration,
        };
        let source = (!opts.single_source).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                1 + (i / 250) as u8,
                1 + (i % 250) as u8,
            ))
        });
        let token = tokens.ingest[i % tokens.ingest.len()].clone();
        let gen = Generator::new(
            i,
            names.clone(),
            opts.exposures_per_unit,
            opts.page_views_per_unit,
            killed.clone(),
        );
        set.spawn(connection(
            base.to_owned(),
            token,
            source,
            gen,
            opts.batch,
            pace,
            live.clone(),
        ));
    }
    // Progress.
    let mut last = (Instant::now(), 0u64);
    let mut totals = IngestTotals::default();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                Some(Ok(t)) => totals.add(t),
                Some(Err(e)) => totals.first_errors.push(format!("connection task: {e}")),
                None => break,
            },
            _ = tick.tick() => {
                let acked = live.acked.load(Ordering::Relaxed);
                let rate = (acked - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), acked);
                let n = lock(cycles).len();
                eprintln!(
                    "   +{:>4.0} s: {acked} acknowledged ({:.0}/s), shed {}, 503 {}, errors {}; {n} cycles; {BAD} {}",
                    start.elapsed().as_secs_f64(),
                    rate,
                    live.shed.load(Ordering::Relaxed),
                    live.refused.load(Ordering::Relaxed),
                    live.errors.load(Ordering::Relaxed),
                    if killed.load(Ordering::Relaxed) { "killed" } else { "running" },
                );
            }
        }
    }
    totals.elapsed = start.elapsed().as_secs_f64();
    totals.latency_us.sort_unstable();
    totals.connections = conns;
    totals.keys = tokens.ingest.len();
    totals.sources = if opts.single_source { 1 } else { conns };
    totals
}

/// One keep-alive connection: a batch at each intended time (late ones go
/// at once; their latency counts from the intended time).
async fn connection(
    base: String,
    token: String,
    source: Option<IpAddr>,
    mut gen: Generator,
    size: usize,
    pace: Pace,
    live: Arc<Live>,
) -> IngestTotals {
    let mut out = IngestTotals::default();
    let client = match reqwest::Client::builder()
        .local_address(source)
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            out.first_errors.push(format!("client: {e}"));
            return out;
        }
    };
    let auth = format!("Bearer {token}");
    let mut body = String::with_capacity(size * 128);
    out.latency_us.reserve(pace.batches as usize);
    for k in 0..pace.batches {
        let intended = pace.start + pace.offset + pace.every.mul_f64(k as f64);
        out.intended_records += size as u64;
        if Instant::now() > pace.end + Duration::from_secs(30) {
            out.not_sent += size as u64;
            continue;
        }
        tokio::time::sleep_until(intended.into()).await;
        let path = gen.batch(size, &mut body);
        out.sent_records += size as u64;
        if path.ends_with("events") {
            out.events += size as u64;
        } else {
            out.exposures += size as u64;
        }
        let sent = client
            .post(format!("{base}{path}"))
            .header(reqwest::header::AUTHORIZATION, &auth)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let answer = match sent {
            Ok(r) => {
                let status = r.status();
                r.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        out.latency_us
            .push(intended.elapsed().as_micros().min(u128::from(u64::MAX)) as u64);
        let n = size as u64;
        match answer {
            Ok((StatusCode::OK, b)) => {
                let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                let acked = v["accepted"].as_u64().unwrap_or(0);
                out.acked += acked;
                live.acked.fetch_add(acked, Ordering::Relaxed);
                out.duplicates += v["duplicates"].as_u64().unwrap_or(0);
                for r in v["rejected"].as_array().into_iter().flatten() {
                    if r["retryable"] == true {
                        out.shed += 1;
                        live.shed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        out.rejected += 1;
                        if out.first_errors.len() < 3 {
                            out.first_errors.push(format!("rejected: {r}"));
                        }
                    }
                }
            }
            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {
                out.refused_503 += n;
                live.refused.fetch_add(n, Ordering::Relaxed);
            }
            Ok((StatusCode::TOO_MANY_REQUESTS, b)) => {
                out.throttled_429 += n;
                live.errors.fetch_add(n, Ordering::Relaxed);
                if out.first_errors.len() < 3 {
                    out.first_errors
                        .push(format!("429: {}", String::from_utf8_lossy(&b)));
                }
            }
            Ok((status, b)) => {
                out.errors += n;
                live.errors.fetch_add(n, Ordering::Relaxed);
                if out.first_errors.len() < 3 {
                    out.first_errors
                        .push(format!("{status}: {}", String::from_utf8_lossy(&b)));
                }
            }
            Err(e) => {
                out.errors += n;
                live.errors.fetch_add(n, Ordering::Relaxed);
                if out.first_errors.len() < 3 {
                    out.first_errors.push(format!("request: {e}"));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

fn yes(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

fn hms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| "?".to_owned())
}

fn print_report(
    opts: &Opts,
    machine: &Machine,
    r: &Report,
    cpu_total: Option<f64>,
    stopped: &str,
    keys: usize,
) {
    let i = &r.ingest;
    let secs = i.elapsed.max(1e-9);
    let mut o = String::new();
    let _ = writeln!(o, "\n## Guardrail monitor benchmark\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(
        o,
        "| machine | {} cores, load average {} at start, {} at end |",
        machine.cores,
        machine.load,
        load_average()
    );
    let _ = writeln!(
        o,
        "| parameters | {} experiments × {} guardrails (applies_to all, 1-minute windows, min 200 samples), {} records/s for {} s, {} subscribers, interval {}, {} exposures and {} page views per unit, {} connections × {} records, ingestion keys: {}, source addresses: {} |",
        opts.experiments,
        opts.guardrails,
        opts.rate,
        opts.seconds,
        opts.subscribers,
        opts.interval,
        opts.exposures_per_unit,
        opts.page_views_per_unit,
        i.connections,
        opts.batch,
        keys,
        i.sources
    );
    let _ = writeln!(
        o,
        "| setup | {} experiments started in {:.1} s; {} of {} subscribers connected in {:.1} s |",
        r.experiments,
        r.setup_seconds,
        r.subscribers_connected,
        opts.subscribers,
        r.subscribers_seconds
    );
    let _ = writeln!(o, "| server stop | {stopped} |");

    let _ = writeln!(o, "\n### Ingestion\n");
    let _ = writeln!(o, "| measure | value |\n|---|---|");
    let _ = writeln!(
        o,
        "| records intended | {} ({:.0}/s) |",
        i.intended_records,
        i.intended_records as f64 / opts.seconds.max(1) as f64
    );
    let _ = writeln!(
        o,
        "| records sent | {} ({} exposures, {} events) |",
        i.sent_records, i.exposures, i.events
    );
    let _ = writeln!(
        o,
        "| acknowledged | {} (**{:.0}/s** over {:.1} s) |",
        i.acked,
        i.acked as f64 / secs,
        secs
    );
    let _ = writeln!(o, "| duplicates | {} |", i.duplicates);
    let _ = writeln!(o, "| shed (per record, retryable) | {} |", i.shed);
    let _ = writeln!(o, "| refused with 503 (records) | {} |", i.refused_503);
    let _ = writeln!(o, "| refused with 429 (records) | {} |", i.throttled_429);
    let _ = writeln!(o, "| rejected otherwise | {} |", i.rejected);
    let _ = writeln!(o, "| failed requests (records) | {} |", i.errors);
    let _ = writeln!(o, "| not sent (generator > 30 s behind) | {} |", i.not_sent);
    let lat = &i.latency_us;
    let _ = writeln!(
        o,
        "| ack latency from intended send, ms | p50 {} · p99 {} · max {} ({} requests) |",
        ms(quantile(lat, 0.5)),
        ms(quantile(lat, 0.99)),
        ms(lat.last().copied().unwrap_or(0)),
        lat.len()
    );
    let cpu = |v: Option<f64>| {
        v.map_or("?".to_owned(), |c| {
            format!("{c:.1} s ({:.2} cores)", c / secs)
        })
    };
    let _ = writeln!(o, "| server CPU during ingestion | {} |", cpu(r.cpu_ingest));
    let _ = writeln!(
        o,
        "| load generator CPU during ingestion | {} |",
        cpu(r.cpu_self_ingest)
    );
    let _ = writeln!(
        o,
        "| server CPU, whole run | {} |",
        cpu_total.map_or("?".to_owned(), |c| format!("{c:.1} s"))
    );
    for e in &i.first_errors {
        let _ = writeln!(o, "| first errors | {} |", e.replace('|', "\\|"));
    }

    let _ = writeln!(o, "\n### Monitor cycles\n");
    let _ = writeln!(
        o,
        "| # | started | +s from ingestion start | seconds | of which freshness / data | experiments | evaluations | skipped | breaches | actions | pipeline lag s | errors |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut max_secs: f64 = 0.0;
    let mut max_lag: f64 = 0.0;
    let mut loaded_secs: f64 = 0.0;
    let mut loaded_lag: f64 = 0.0;
    for (n, c) in r.cycles.iter().enumerate() {
        let started = c["started_at"].as_str().and_then(rfc3339_ms).unwrap_or(0);
        let secs = c["seconds"].as_f64().unwrap_or(0.0);
        let lag = c["pipeline_lag_seconds"].as_f64().unwrap_or(0.0);
        max_secs = max_secs.max(secs);
        max_lag = max_lag.max(lag);
        if started >= r.ingest_started_ms as i64 && started <= r.ingest_ended_ms as i64 {
            loaded_secs = loaded_secs.max(secs);
            loaded_lag = loaded_lag.max(lag);
        }
        let errors = c["errors"].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            o,
            "| {} | {} | {:+.0} | {secs:.2} | {:.2} / {:.2} | {} | {} | {} | {} | {} | {lag:.1} | {errors} |",
            n + 1,
            hms(started),
            (started - r.ingest_started_ms as i64) as f64 / 1000.0,
            c["freshness_seconds"].as_f64().unwrap_or(0.0),
            c["data_seconds"].as_f64().unwrap_or(0.0),
            c["experiments"],
            c["evaluations"],
            c["skipped"],
            c["breaches"],
            c["actions"],
        );
    }
    if !r.waited_for_last_cycle {
        let _ = writeln!(o, "\n(no cycle started after ingestion within the wait)");
    }
    for c in &r.cycles {
        for e in c["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "\ncycle {} error: {e}", c["started_at"]);
        }
    }

    let _ = writeln!(
        o,
        "\n### Evaluations read at the end (latest 200 per experiment)\n"
    );
    let _ = writeln!(o, "| experiment | outcome | count |\n|---|---|---|");
    for (e, w, n) in &r.outcomes {
        let _ = writeln!(o, "| {e} | {w} | {n} |");
    }

    let _ = writeln!(o, "\n### Kill of {BAD}\n");
    let p = |v: &[u64]| {
        format!(
            "p50 {} · p99 {} · max {}",
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.99)),
            ms(v.last().copied().unwrap_or(0))
        )
    };
    match &r.kill {
        None => {
            let _ = writeln!(
                o,
                "not killed (status {}); the first possible kill comes about 90 s (the 1-minute window and the 30 s delivery allowance) plus up to one interval after ingestion starts — raise --seconds",
                r.final_status
            );
        }
        Some(k) => {
            let _ = writeln!(o, "| measure | value |\n|---|---|");
            let _ = writeln!(
                o,
                "| decision | {} by {} (evaluation {}), {:.1} s after ingestion started |",
                hms(k.decided_ms),
                k.guardrail,
                k.evaluation,
                (k.decided_ms - r.ingest_started_ms as i64) as f64 / 1000.0
            );
            if let Some(e) = k.ended_ms {
                let _ = writeln!(
                    o,
                    "| decision → status killed (ended_at) | {} ms |",
                    e - k.decided_ms
                );
            }
            let _ = writeln!(o, "| config version of the kill | {} |", k.version);
            let _ = writeln!(
                o,
                "| subscribers that got it | {} of {} connected before it ({} requested) |",
                k.from_decision.len(),
                k.eligible,
                opts.subscribers
            );
            let _ = writeln!(o, "| decision → arrival, ms | {} |", p(&k.from_decision));
            if k.ended_ms.is_some() {
                let _ = writeln!(o, "| ended_at → arrival, ms | {} |", p(&k.from_ended));
            }
            let _ = writeln!(o, "| reason | {} |", k.reason.replace('|', "\\|"));
        }
    }

    let _ = writeln!(o, "\n### Against the target\n");
    let _ = writeln!(
        o,
        "| requirement | target | measured | met |\n|---|---|---|---|"
    );
    let rate = i.acked as f64 / secs;
    let _ = writeln!(
        o,
        "| ingestion acknowledged | {} records/s | {rate:.0} records/s | {} |",
        opts.rate,
        yes(rate >= 0.99 * opts.rate)
    );
    let _ = writeln!(
        o,
        "| one monitor cycle ({} experiments × {} guardrails) | ≤ 30 s | max {max_secs:.2} s (during ingestion {loaded_secs:.2} s) | {} |",
        opts.experiments,
        opts.guardrails,
        yes(!r.cycles.is_empty() && max_secs <= 30.0)
    );
    let seen = max_lag + 30.0;
    let _ = writeln!(
        o,
        "| data seen by the monitor after acknowledgement (max pipeline lag {max_lag:.1} s, during ingestion {loaded_lag:.1} s, + 30 s delivery allowance) | ≤ 60 s | ≤ {seen:.1} s | {} |",
        yes(!r.cycles.is_empty() && seen <= 60.0)
    );
    match &r.kill {
        Some(k) => {
            let p99 = quantile(&k.from_decision, 0.99);
            let all = k.from_decision.len() >= opts.subscribers;
            let _ = writeln!(
                o,
                "| breach decision → kill at {} subscribers, p99 | ≤ 250 ms | {} ms ({} of {} got it) | {} |",
                opts.subscribers,
                ms(p99),
                k.from_decision.len(),
                opts.subscribers,
                yes(all && p99 <= 250_000)
            );
        }
        None => {
            let _ = writeln!(
                o,
                "| breach decision → kill at {} subscribers, p99 | ≤ 250 ms | no kill | **no** |",
                opts.subscribers
            );
        }
    }
    print!("{o}");
}
