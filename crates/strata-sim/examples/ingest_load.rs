//! Load generator for the ingestion endpoints (`bench/ingest/run.sh`).
//!
//! `run --mode local|nats|memory` starts this binary again as a child
//! process serving `/collect/v1/events` over the chosen sink on loopback,
//! then sends 500-byte events in batches of 500 from 64 concurrent
//! connections for the given time and reports events/s, ack latency
//! percentiles, the server's CPU per million events (from
//! `/proc/<pid>/stat`, so the client's own CPU is not counted) and, after
//! compaction, Parquet bytes on disk per event.
//!
//! The events are the simulator's: each batch is whole visits
//! (`strata_sim::behaviour::session`: page views, load times, clicks,
//! searches, carts, purchases with their values, …) of visitors of a
//! population of a million users, padded to the event size with a `path`
//! property. Every event has a unique `event_id`, and each visit is
//! re-attributed to a fresh visitor (drawn by activity) at every send, so
//! neither deduplication nor the per-unit limit hides work; the ids are
//! patched into a per-connection template so the client spends its CPU on
//! HTTP rather than on formatting JSON.
//!
//! `--merge off` runs the local store without merging its small Parquet
//! files, to tell compaction's cost from the merges'.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::io::{BufRead, BufReader, Write};
use strata_pipeline::http::{Ingest, IngestConfig};
use strata_pipeline::limits::Rate;
use strata_pipeline::memory::{MemorySink, StaticAuthorizer};
use strata_pipeline::nats::{CompactorOptions, JetStreamSink, NatsCompactor, NatsOptions};
use strata_pipeline::store::{LocalStore, StoreOptions};
use strata_pipeline::Sink;
use strata_sim::behaviour::{session, Baseline, Effect, Interactions};
use strata_sim::population::Population;

use rand::rngs::StdRng;
use rand::SeedableRng;

/// The allocator of the `strata` binary, so that the server measured here
/// allocates as `strata serve` does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "bench-token";

/// The users the load's visits are attributed to.
const USERS: u32 = 1_000_000;
/// The population's seed.
const SEED: u64 = 7;
/// Digits of a user's index in its id (`sim-<seed>-<index>`).
const INDEX_DIGITS: usize = 7;

#[derive(Clone)]
struct Args {
    cmd: String,
    mode: String,
    data: PathBuf,
    nats_url: String,
    url: String,
    seconds: u64,
    connections: usize,
    batch: usize,
    event_bytes: usize,
    /// Events per second to pace the load at (open loop); 0: as fast as
    /// acknowledgements come back (closed loop).
    rate: f64,
    /// Whether the local store merges its small Parquet files (`--merge
    /// off` measures compaction alone).
    merge: bool,
    /// Seconds of the same load sent before the measured run (`run` only),
    /// so start-up (first connections, first segment, first table growth)
    /// is reported apart from the sustained rate.
    warmup: u64,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        cmd: it.next().unwrap_or_else(|| "run".into()),
        mode: "local".into(),
        data: std::env::temp_dir().join("strata-ingest-bench"),
        nats_url: std::env::var("STRATA_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        url: String::new(),
        seconds: 60,
        connections: 64,
        batch: 500,
        event_bytes: 500,
        rate: 0.0,
        merge: true,
        warmup: 0,
    };
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => a.mode = v,
            "--merge" => a.merge = v != "off",
            "--data" => a.data = v.into(),
            "--nats-url" => a.nats_url = v,
            "--url" => a.url = v,
            "--seconds" => a.seconds = v.parse().expect("--seconds"),
            "--connections" => a.connections = v.parse().expect("--connections"),
            "--batch" => a.batch = v.parse().expect("--batch"),
            "--event-bytes" => a.event_bytes = v.parse().expect("--event-bytes"),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--warmup" => a.warmup = v.parse().expect("--warmup"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.cmd.as_str() {
        "serve" => rt.block_on(serve(args)),
        "load" => {
            let r = rt.block_on(load(&args.url, &args, 0));
            println!("{r}");
        }
        "run" => rt.block_on(run(args)),
        other => panic!("unknown command {other} (serve, load, run)"),
    }
}

/// Serves the ingestion routes; prints `listening <addr>` and then waits
/// for `compact` (prints `compacted`) or `quit` on stdin.
async fn serve(args: Args) {
    let cfg = IngestConfig {
        // One client, one key, one address: only the per-unit limit stays.
        key_rate: Rate::unlimited(),
        ip_rate: Rate::unlimited(),
        ..IngestConfig::default()
    };
    let auth = Arc::new(StaticAuthorizer::new().with_token(TOKEN, "bench"));
    let mut store = None;
    let mut compactor = None;
    let stop = Arc::new(tokio::sync::Notify::new());
    let sink: Arc<dyn Sink> = match args.mode.as_str() {
        "memory" => Arc::new(MemorySink::new()),
        "local" => {
            let opts = StoreOptions {
                merge: if args.merge {
                    StoreOptions::default().merge
                } else {
                    None
                },
                ..StoreOptions::default()
            };
            let s = LocalStore::open(&args.data, opts)
                .await
                .expect("open store");
            store = Some(s.clone());
            s
        }
        "nats" => {
            let opts = NatsOptions {
                stream: format!("BENCH_{}", std::process::id()),
                subject_prefix: format!("bench{}", std::process::id()),
                durable: "bench-compactor".into(),
                ..NatsOptions::default()
            };
            let sink = JetStreamSink::connect(&args.nats_url, opts.clone())
                .await
                .expect("connect nats");
            let c = NatsCompactor::open(
                &args.nats_url,
                &args.data.join("parquet"),
                opts,
                CompactorOptions::default(),
            )
            .await
            .expect("open compactor");
            let stop = stop.clone();
            compactor = Some(tokio::spawn(c.run(async move { stop.notified().await })));
            Arc::new(sink)
        }
        other => panic!("unknown mode {other}"),
    };
    let ingest = Ingest::new(sink.clone(), auth, cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = ingest
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    println!("listening {addr}");
    // The sink's backlog and compaction lag, sampled ten times a second:
    // the peaks show whether compaction kept up during the load, not only
    // how long the final drain took.
    let peaks = Arc::new(std::sync::Mutex::new((0u64, Duration::ZERO)));
    {
        let (peaks, sink) = (peaks.clone(), sink.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let p = sink.pressure();
                let mut peak = peaks.lock().expect("peaks");
                peak.0 = peak.0.max(p.backlog_bytes);
                peak.1 = peak.1.max(p.compaction_lag.unwrap_or_default());
            }
        });
    }
    // Commands arrive on stdin, read by a plain thread (no tokio io-std).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        match line.trim() {
            "reset" => {
                *peaks.lock().expect("peaks") = (0, Duration::ZERO);
                println!("reset");
            }
            "compact" => {
                let (backlog, lag) = *peaks.lock().expect("peaks");
                if let Some(s) = &store {
                    s.compact_now().await.expect("compact");
                }
                if compactor.is_some() {
                    // Wait until the consumer has drained the stream: the
                    // backlog (polled once a second) is zero three times in
                    // a row.
                    let mut zero = 0;
                    while zero < 3 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        zero = if sink.pressure().backlog_bytes == 0 {
                            zero + 1
                        } else {
                            0
                        };
                    }
                }
                println!("compacted {backlog} {}", lag.as_secs_f64());
            }
            _ => break,
        }
    }
    stop.notify_waiters();
    if let Some(s) = store {
        s.shutdown().await;
    }
    if let Some(c) = compactor {
        c.abort();
        // The stream is this run's alone; left behind, every run would
        // leave gigabytes in nats-server's store.
        let stream = format!("BENCH_{}", std::process::id());
        match async_nats::connect(&args.nats_url).await {
            Ok(client) => {
                if let Err(e) = async_nats::jetstream::new(client)
                    .delete_stream(&stream)
                    .await
                {
                    eprintln!("could not delete stream {stream}: {e}");
                }
            }
            Err(e) => eprintln!("could not delete stream {stream}: {e}"),
        }
    }
}

#[derive(Default)]
struct LoadReport {
    events: u64,
    /// Records refused one by one in acknowledged batches (shed under load).
    shed: u64,
    requests: u64,
    errors: u64,
    seconds: f64,
    events_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Seconds of the run (from its start) in which an acknowledgement took
    /// over 50 ms, with the number of such requests: where the tail is.
    slow_seconds: Vec<(u64, usize)>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events acknowledged in {:.1} s = {:.0} events/s ({} more shed); {} requests, {} refused or failed; ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.events, self.seconds, self.events_per_second, self.shed, self.requests, self.errors, self.p50_ms, self.p99_ms, self.max_ms
        )?;
        let slow: usize = self.slow_seconds.iter().map(|s| s.1).sum();
        write!(f, "\n  requests over 50 ms: {slow}")?;
        if !self.slow_seconds.is_empty() {
            let at: Vec<String> = self
                .slow_seconds
                .iter()
                .map(|(s, n)| format!("{n} in second {s}"))
                .collect();
            write!(f, " ({})", at.join(", "))?;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A batch template: whole simulated visits, `batch` events of about
/// `event_bytes` each, with a 16-hex-digit slot for each event id and a
/// slot for the user index of each visit's unit ids.
struct Template {
    body: Vec<u8>,
    id_slots: Vec<usize>,
    /// Per visit, the offsets of its events' user-index digits.
    visits: Vec<Vec<usize>>,
}

fn template(batch: usize, event_bytes: usize, population: &Population, seed: u64) -> Template {
    let ts = now_ms();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut body = Vec::with_capacity(batch * (event_bytes + 1) + 2);
    let mut id_slots = Vec::new();
    let mut visits = Vec::new();
    body.push(b'[');
    while id_slots.len() < batch {
        let user = population.visitor(&mut rng);
        let (base, interactions) = (Baseline::default(), Interactions::default());
        let events = session(&base, &interactions, &user, &Effect::NONE, &mut rng);
        let prefix = &user.id[..user.id.len() - INDEX_DIGITS];
        let mut slots = Vec::new();
        for (ty, value) in events.into_iter().take(batch - id_slots.len()) {
            if !id_slots.is_empty() {
                body.push(b',');
            }
            let start = body.len();
            body.extend_from_slice(b"{\"event_id\":\"");
            id_slots.push(body.len());
            body.extend_from_slice(b"0000000000000000\",\"unit_id\":\"");
            body.extend_from_slice(prefix.as_bytes());
            slots.push(body.len());
            body.extend_from_slice(&[b'0'; INDEX_DIGITS]);
            body.extend_from_slice(format!("\",\"type\":\"{ty}\",\"ts\":{ts}").as_bytes());
            if let Some(v) = value {
                body.extend_from_slice(format!(",\"value\":{v}").as_bytes());
            }
            body.extend_from_slice(b",\"properties\":{\"path\":\"");
            // Pad the path so the event is `event_bytes` long.
            let used = body.len() - start + 3;
            body.extend(std::iter::repeat_n(b'x', event_bytes.saturating_sub(used)));
            body.extend_from_slice(b"\"}}");
        }
        visits.push(slots);
    }
    body.push(b']');
    Template {
        body,
        id_slots,
        visits,
    }
}

fn put_hex(buf: &mut [u8], at: usize, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..16 {
        buf[at + i] = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

fn put_index(buf: &mut [u8], at: usize, mut v: u32) {
    for i in (0..INDEX_DIGITS).rev() {
        buf[at + i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Sends the load; `phase` keeps the event ids of successive loads on one
/// server distinct (a repeated id would be acknowledged as a duplicate).
async fn load(url: &str, args: &Args, phase: u64) -> LoadReport {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()
        .expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    // Built before the clock starts: with a paced load, a connection still
    // formatting its batch at its first intended send time would count that
    // as acknowledgement latency.
    let population = Population::new(USERS, SEED);
    let mut templates = (0..args.connections)
        .map(|conn| template(args.batch, args.event_bytes, &population, conn as u64))
        .collect::<Vec<_>>()
        .into_iter();
    let started = Instant::now();
    // Paced: each connection sends a batch every `interval`, staggered, and
    // latency counts from the intended send time (a late answer delays the
    // next send, and that delay counts).
    let interval = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(args.connections as f64 * args.batch as f64 / args.rate));
    let mut tasks = Vec::new();
    let args_connections = args.connections;
    for conn in 0..args.connections {
        let client = client.clone();
        let stop = stop.clone();
        let events = events.clone();
        let errors = errors.clone();
        let shed = shed.clone();
        let url = format!("{url}/collect/v1/events");
        let mut t = templates.next().expect("one template per connection");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut seq: u64 = (phase << 56) | ((conn as u64) << 40);
            let mut rng = StdRng::seed_from_u64((phase << 32) ^ (conn as u64 + 1));
            let mut k: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                let intended = interval
                    .map(|i| started + i.mul_f64(conn as f64 / args_connections as f64) + i * k);
                k += 1;
                if let Some(at) = intended {
                    tokio::time::sleep_until(at.into()).await;
                }
                for &at in &t.id_slots {
                    seq += 1;
                    put_hex(&mut t.body, at, seq);
                }
                for visit in &t.visits {
                    let user = population.visitor(&mut rng).index;
                    for &at in visit {
                        put_index(&mut t.body, at, user);
                    }
                }
                let sent = intended.unwrap_or_else(Instant::now);
                let resp = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(t.body.clone())
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        latencies.push((sent.saturating_duration_since(started), sent.elapsed()));
                        events.fetch_add(body["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                        let refused = body["rejected"].as_array().map_or(0, Vec::len);
                        shed.fetch_add(refused as u64, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let status = r.status();
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                        if errors.load(Ordering::Relaxed) < 5 {
                            eprintln!("status {status}: {}", r.text().await.unwrap_or_default());
                        }
                        tokio::time::sleep(Duration::from_secs(retry.unwrap_or(1))).await;
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("request failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut slow_seconds = std::collections::BTreeMap::<u64, usize>::new();
    for (at, l) in &lat {
        if *l > Duration::from_millis(50) {
            *slow_seconds.entry(at.as_secs()).or_default() += 1;
        }
    }
    let mut lat: Vec<Duration> = lat.into_iter().map(|(_, l)| l).collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let events = events.load(Ordering::Relaxed);
    LoadReport {
        events,
        shed: shed.load(Ordering::Relaxed),
        requests: lat.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        events_per_second: events as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        slow_seconds: slow_seconds.into_iter().collect(),
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

async fn run(args: Args) {
    let _ = std::fs::remove_dir_all(&args.data);
    std::fs::create_dir_all(&args.data).expect("data dir");
    let exe = std::env::current_exe().expect("current exe");
    // The allocator setting `docs/operations.md` recommends for ingestion
    // servers, unless the caller chose one (`MIMALLOC_PURGE_DELAY=10` is
    // mimalloc's default).
    let purge_delay = std::env::var("MIMALLOC_PURGE_DELAY").unwrap_or_else(|_| "-1".into());
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--mode", &args.mode, "--merge"])
        .arg(if args.merge { "on" } else { "off" })
        .arg("--data")
        .arg(&args.data)
        .args(["--nats-url", &args.nats_url])
        .env("MIMALLOC_PURGE_DELAY", &purge_delay)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let pid = child.id();
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    let line = line_rx.recv().expect("server exited");
    let addr = line
        .strip_prefix("listening ")
        .expect("listening line")
        .to_owned();
    let url = format!("http://{addr}");
    let warm = if args.warmup > 0 {
        let r = load(
            &url,
            &Args {
                seconds: args.warmup,
                ..args.clone()
            },
            1,
        )
        .await;
        println!("warm-up: {r}");
        r.events
    } else {
        0
    };
    stdin.write_all(b"reset\n").expect("stdin");
    stdin.flush().expect("stdin");
    assert_eq!(line_rx.recv().ok().as_deref(), Some("reset"));
    let cpu0 = cpu_seconds(pid);
    let report = load(&url, &args, 0).await;
    let cpu_load = cpu_seconds(pid) - cpu0;
    let t = Instant::now();
    stdin.write_all(b"compact\n").expect("stdin");
    stdin.flush().expect("stdin");
    let done = tokio::task::spawn_blocking(move || line_rx.recv().ok())
        .await
        .expect("join");
    let done = done.unwrap_or_default();
    let peaks: Vec<f64> = match done.strip_prefix("compacted ") {
        Some(rest) => rest.split(' ').filter_map(|v| v.parse().ok()).collect(),
        None => panic!("expected the compacted line, got {done:?}"),
    };
    let drain = t.elapsed();
    let cpu_total = cpu_seconds(pid) - cpu0;
    let peak_rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let _ = stdin.write_all(b"quit\n");
    drop(stdin);
    let _ = child.wait();
    let parquet = dir_bytes(&args.data.join("parquet"));
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("mode: {}, MIMALLOC_PURGE_DELAY={purge_delay}", args.mode);
    println!("{report}");
    println!(
        "server cpu: {cpu_load:.1} s during load ({:.2} cores), {:.1} s per million events; {:.1} s per million events including the final compaction",
        cpu_load / report.seconds,
        cpu_load / report.events as f64 * 1e6,
        cpu_total / report.events as f64 * 1e6
    );
    println!(
        "final compaction / drain after load: {:.1} s",
        drain.as_secs_f64()
    );
    if let [backlog, lag] = peaks[..] {
        println!(
            "during load: peak un-compacted backlog {:.1} MiB, peak compaction lag {lag:.1} s",
            backlog / 1_048_576.0
        );
    }
    println!(
        "parquet: {parquet} bytes, {:.1} bytes per event (warm-up included)",
        parquet as f64 / (report.events + warm).max(1) as f64
    );
    println!("server peak rss: {peak_rss}");
    println!("loadavg: {}", loadavg.trim());
}
