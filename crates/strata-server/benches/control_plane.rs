//! Control-plane benchmarks, run by hand against a `strata serve` on loopback
//! (commands and figures: `docs/operations.md`, `docs/performance.md`).
//!
//! ```text
//! cargo bench -p strata-server --bench control_plane -- serve ADDR DATA_DIR ADMIN_TOKEN
//! cargo bench -p strata-server --bench control_plane -- apply [EXPERIMENTS]
//! cargo bench -p strata-server --bench control_plane -- seed BASE ADMIN_TOKEN [EXPERIMENTS]
//! cargo bench -p strata-server --bench control_plane -- fanout BASE ADMIN_TOKEN SDK_TOKEN EXPERIMENT [SUBSCRIBERS]
//! cargo bench -p strata-server --bench control_plane -- rate BASE SDK_TOKEN [RPS] [SECONDS] [CONNECTIONS]
//! ```
//!
//! `serve` runs the server of `strata serve` (SQLite store, request rate
//! limits off, no event pipeline) in a release build without the analysis
//! engine, so the HTTP figures need no DataFusion build; `apply` times
//! parse + compile + swap of a snapshot in process; `seed` creates metrics, 50 layers and running experiments through the API and
//! prints an SDK token; `fanout` opens SSE subscribers, kills an experiment
//! and reports, per subscriber, the time from the kill's response to the
//! event's arrival; `rate` sends `POST /sdk/v1/evaluate` at a fixed rate
//! (open loop, latency from each request's intended send time).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A snapshot shaped like the seeded one: 50 layers, `n` experiments over 100 surfaces.
fn synthetic_snapshot(n: usize) -> strata_core::Snapshot {
    let layers = (0..50)
        .map(|l| strata_core::Layer {
            key: format!("layer_{l}"),
            salt: format!("L-{l:016x}"),
        })
        .collect();
    let experiments = (0..n)
        .map(|i| {
            let slot = (i / 50) as u16 % 62;
            strata_core::Experiment {
                key: format!("exp_{i}"),
                flag: format!("f_{i:012x}"),
                salt: format!("{:016x}", i * 7919),
                status: strata_core::Status::Running,
                unit: "user_id".into(),
                fallback_unit: None,
                sticky: false,
                include_bots: false,
                layer: Some(format!("layer_{}", i % 50)),
                range: Some([slot * 16, slot * 16 + 16]),
                ramp_permille: 1000,
                surfaces: vec![format!("s{}", i % 100)],
                targeting: (i % 2 == 0).then(
                    || json!({"all": [{"attr": "country", "op": "in", "values": ["US", "CA"]}]}),
                ),
                variants: vec![
                    strata_core::Variant {
                        key: "control".into(),
                        weight: 50,
                    },
                    strata_core::Variant {
                        key: "treatment".into(),
                        weight: 50,
                    },
                ],
                respect_holdout: true,
                winner: None,
            }
        })
        .collect();
    strata_core::Snapshot {
        version: 1,
        holdout: Some(strata_core::Holdout {
            salt: "H-bench".into(),
            permille: 20,
        }),
        layers,
        experiments,
    }
}

fn apply(n: usize) {
    let shared = strata_server::live::SharedConfig::new();
    let mut snapshot = synthetic_snapshot(n);
    let mut times = Vec::new();
    let mut bytes = 0;
    for round in 0..30u64 {
        snapshot.version = round + 1;
        let body = serde_json::to_string(&snapshot).unwrap();
        bytes = body.len();
        let t = Instant::now();
        let live = strata_server::live::LiveConfig::from_stored(&body, "{}").unwrap();
        assert!(shared.install(live));
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "apply {n}-experiment snapshot ({} KiB): parse+compile+swap median {:?}, p90 {:?}, max {:?} over {} rounds",
        bytes / 1024,
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        times[times.len() - 1],
        times.len()
    );
    // Peer: strata-core evaluation alone, one surface, for the evaluate benchmark.
    let live = shared.load();
    let ctx =
        strata_core::Context::try_from(json!({"user_id": "user-42", "country": "US"})).unwrap();
    let iters = 200_000;
    let t = Instant::now();
    let mut hits = 0;
    for i in 0..iters {
        let surface = format!("s{}", i % 100);
        hits += live.compiled.evaluate(&ctx, Some(&surface)).len();
    }
    let per = t.elapsed() / iters;
    println!("peer: strata-core evaluate, one surface of {n} experiments: {per:?} per request ({hits} assignments)");
}

async fn post(client: &reqwest::Client, base: &str, token: &str, path: &str, body: Value) -> Value {
    let r = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn seed(base: &str, admin: &str, n: usize) {
    let c = reqwest::Client::new();
    post(
        &c,
        base,
        admin,
        "/api/v1/metrics",
        json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}),
    )
    .await;
    for l in 0..50 {
        post(
            &c,
            base,
            admin,
            "/api/v1/layers",
            json!({"key": format!("layer_{l}")}),
        )
        .await;
    }
    // An admin runs the platform, not the teams' experiments: the
    // experiments are created and run by an admin key of their team.
    let team = post(
        &c,
        base,
        admin,
        "/api/v1/keys",
        json!({"kind": "api", "role": "admin", "team": "bench", "name": "bench-team"}),
    )
    .await;
    let team = team["token"].as_str().expect("a token for team bench");
    let t = Instant::now();
    for i in 0..n {
        let slot = (i / 50) % 62;
        let key = format!("exp_{i}");
        let mut body = json!({
            "key": key, "name": format!("bench {i}"), "owner_team": "bench",
            "layer": format!("layer_{}", i % 50), "range": [slot * 16, slot * 16 + 16],
            "surfaces": [format!("s{}", i % 100)],
            "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
            "primary_metric": "conversion", "mde": 0.02, "planned_units": 100000
        });
        if i % 2 == 0 {
            body["targeting"] =
                json!({"all": [{"attr": "country", "op": "in", "values": ["US", "CA"]}]});
        }
        post(&c, base, team, "/api/v1/experiments", body).await;
        post(
            &c,
            base,
            team,
            &format!("/api/v1/experiments/{key}/submit"),
            json!({}),
        )
        .await;
        post(
            &c,
            base,
            team,
            &format!("/api/v1/experiments/{key}/start"),
            json!({"ramp_percent": 100}),
        )
        .await;
        if (i + 1) % 500 == 0 {
            eprintln!("seeded {} experiments in {:?}", i + 1, t.elapsed());
        }
    }
    let key = post(
        &c,
        base,
        admin,
        "/api/v1/keys",
        json!({"kind": "sdk", "name": "bench"}),
    )
    .await;
    eprintln!("seeded {n} experiments in {:?}", t.elapsed());
    println!("{}", key["token"].as_str().unwrap());
}

/// Reads SSE events from a raw connection, sending (subscriber, version, arrival) for each.
async fn subscriber(
    id: usize,
    addr: String,
    host: String,
    token: String,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, u64, Instant)>,
) {
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return;
    };
    let req = format!(
        "GET /sdk/v1/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 4096];
    let mut pending = String::new();
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        const DATA: &str = "data: {\"version\":";
        while let Some(i) = pending.find(DATA) {
            let rest = &pending[i + DATA.len()..];
            let Some(end) = rest.find('}') else { break };
            if let Ok(v) = rest[..end].parse::<u64>() {
                let _ = tx.send((id, v, now));
            }
            pending = rest[end..].to_owned();
        }
        if pending.len() > 8192 {
            pending.clear();
        }
    }
}

async fn fanout(base: &str, admin: &str, sdk: &str, experiment: &str, n: usize) {
    let addr = base.trim_start_matches("http://").to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t = Instant::now();
    for id in 0..n {
        tokio::spawn(subscriber(
            id,
            addr.clone(),
            addr.clone(),
            sdk.to_owned(),
            tx.clone(),
        ));
        if id % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    let mut connected = vec![false; n];
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some((id, _, _))) if !connected[id] => {
                connected[id] = true;
                count += 1;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    eprintln!("{count} of {n} subscribers connected in {:?}", t.elapsed());
    let c = reqwest::Client::new();
    let v = post(
        &c,
        base,
        admin,
        &format!("/api/v1/experiments/{experiment}/kill"),
        json!({"reason": "bench"}),
    )
    .await;
    let t0 = Instant::now();
    let version = v["version"].as_u64().unwrap();
    let mut lat = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    let deadline = t0 + Duration::from_secs(10);
    while lat.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((id, v, at))) if v >= version && !seen[id] => {
                seen[id] = true;
                lat.push(at.saturating_duration_since(t0));
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    lat.sort();
    println!(
        "kill fan-out to {} of {count} SSE subscribers (version {version}): p50 {:?}, p99 {:?}, max {:?} after the kill response",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
}

/// One keep-alive connection sending `POST /sdk/v1/evaluate` at fixed
/// intended times. Returns, per request, the latency from the intended time
/// (no coordinated omission: a slow answer delays the next send, and that
/// delay counts) and from the actual send. The generator runs on one thread
/// and spins only for the last millisecond before a send, so it takes at
/// most one core from the server it measures.
async fn paced_connection(
    addr: String,
    token: String,
    interval: Duration,
    start: Instant,
    end: Instant,
    offset: Duration,
    seed: usize,
) -> Vec<(Duration, Duration)> {
    let mut lat = Vec::new();
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return lat;
    };
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    let mut k: u32 = 0;
    loop {
        let intended = start + offset + interval * k;
        if intended >= end {
            break;
        }
        // tokio's timer fires up to a millisecond late: sleep to within
        // 1 ms, then yield until the intended time.
        let slack = Duration::from_millis(1);
        if intended > Instant::now() + slack {
            tokio::time::sleep_until((intended - slack).into()).await;
        }
        while Instant::now() < intended {
            tokio::task::yield_now().await;
        }
        let i = seed.wrapping_mul(31).wrapping_add(k as usize);
        let body = format!(
            "{{\"context\":{{\"user_id\":\"user-{}\",\"country\":\"{}\"}},\"surface\":\"s{}\"}}",
            i.wrapping_mul(7919) % 1_000_000,
            if i % 3 == 0 { "FR" } else { "US" },
            i % 100
        );
        let req = format!(
            "POST /sdk/v1/evaluate HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = Instant::now();
        if s.write_all(req.as_bytes()).await.is_err() {
            break;
        }
        // Read one response: headers, then Content-Length bytes.
        let mut have = 0usize;
        let done = loop {
            match s.read(&mut buf[have..]).await {
                Ok(0) | Err(_) => break false,
                Ok(n) => have += n,
            }
            let text = &buf[..have];
            if let Some(h) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&text[..h]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if have >= h + 4 + len {
                    break true;
                }
            }
            if have == buf.len() {
                break false;
            }
        };
        if !done {
            break;
        }
        let now = Instant::now();
        lat.push((
            now.saturating_duration_since(intended),
            now.saturating_duration_since(sent),
        ));
        k += 1;
    }
    lat
}

async fn rate(base: &str, sdk: &str, rps: f64, seconds: f64, conns: usize) {
    let addr = base.trim_start_matches("http://").to_owned();
    let interval = Duration::from_secs_f64(conns as f64 / rps);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let offset = interval.mul_f64(c as f64 / conns as f64);
        tasks.push(tokio::spawn(paced_connection(
            addr.clone(),
            sdk.to_owned(),
            interval,
            start,
            end,
            offset,
            c * 1_000_003,
        )));
    }
    let (mut lat, mut service) = (Vec::new(), Vec::new());
    for t in tasks {
        for (from_intended, from_send) in t.await.unwrap() {
            lat.push(from_intended);
            service.push(from_send);
        }
    }
    lat.sort();
    service.sort();
    let expected = (rps * seconds) as usize;
    println!(
        "evaluate at {rps} req/s intended for {seconds} s over {conns} connections: {} of {expected} sent, achieved {:.0} req/s",
        lat.len(),
        lat.len() as f64 / seconds,
    );
    for (what, l) in [
        ("from the intended send time", &lat),
        ("from the actual send", &service),
    ] {
        println!(
            "  latency {what}: p50 {:?}, p90 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            percentile(l, 0.999),
            l.last().copied().unwrap_or_default()
        );
    }
}

/// The server as `strata serve --rate-limit 0 --sdk-rate-limit 0
/// --snapshot-retention 100 --no-pipeline` runs it, until Ctrl-C.
async fn serve(addr: &str, data_dir: &str, admin_token: &str) {
    let cfg = strata_server::ServerConfig {
        listen: addr.parse().expect("listen address"),
        store: strata_server::StoreOptions {
            data_dir: data_dir.into(),
            database_url: None,
            max_connections: 8,
            snapshot_retention: 100,
        },
        settings: strata_server::Settings {
            rate_limit: 0.0,
            sdk_rate_limit: 0.0,
            ..strata_server::Settings::default()
        },
        bootstrap_admin_token: Some(admin_token.to_owned()),
    };
    let server = strata_server::Server::start(cfg).await.expect("start");
    eprintln!("serving on {}", server.addr);
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    // The load generator takes one core's worth at most, leaving the other
    // to the server it measures on a 2-core machine.
    let threads = if args.first().map(String::as_str) == Some("rate") {
        1
    } else {
        2
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("serve") => rt.block_on(serve(&args[1], &args[2], &args[3])),
        Some("apply") => apply(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(3000)),
        Some("seed") => rt.block_on(seed(
            &args[1],
            &args[2],
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(3000),
        )),
        Some("rate") => rt.block_on(rate(
            &args[1],
            &args[2],
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(50_000.0),
            args.get(4).and_then(|n| n.parse().ok()).unwrap_or(10.0),
            args.get(5).and_then(|n| n.parse().ok()).unwrap_or(64),
        )),
        Some("fanout") => rt.block_on(fanout(
            &args[1],
            &args[2],
            &args[3],
            &args[4],
            args.get(5).and_then(|n| n.parse().ok()).unwrap_or(10_000),
        )),
        _ => {
            // `cargo bench` without a mode: the in-process figure only.
            apply(3000);
        }
    }
}
