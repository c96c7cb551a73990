//! `strata demo`: the whole platform at work in one command, and
//! `strata simulate`: the demo's simulated users against any server.
//!
//! The demo installs a simulated clock (strata-clock) running `--speed`
//! times faster than real time, starts the process `strata serve` runs on
//! the embedded defaults, seeds it through its API (strata-sim's
//! `seed`) and drives simulated users through the in-process SDK and
//! `/collect`. The pipeline, compaction, the scheduled analysis and the
//! guardrail monitor run unmodified on that data; only their schedules are
//! set so that they come round once per simulated day and hour.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use strata_app::{AnalysisConfig, GuardrailConfig, PipelineConfig, PortalSettings, ServeConfig};
use strata_pipeline::limits::Rate;
use strata_server::{ServerConfig, Settings, StoreOptions};
use strata_sim::behaviour::Baseline;
use strata_sim::drive::{drive, DriveConfig, Progress};
use strata_sim::population::Population;
use strata_sim::scenario::{self, Scenario};
use strata_sim::watch::{see, standing, Standing};

use crate::serve::{runtime, shutdown_signal};

/// Arguments of `strata demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the demo's store and data (default: a fresh temporary
    /// directory, removed at exit).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Simulated seconds per real second (8640: a simulated day every 10 s).
    #[arg(long, value_name = "N", default_value_t = 8640.0)]
    speed: f64,
    /// The admin token to sign in to the portal with (default: a new random one).
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
    /// Simulated users.
    #[arg(long, value_name = "N", default_value_t = 40_000)]
    users: u32,
    /// Visits per user per simulated day.
    #[arg(long, value_name = "N", default_value_t = 0.3)]
    visits_per_day: f64,
    /// Seed of the population and its behaviour.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Stop once every scenario shows its outcome (exit status 1 if one
    /// shows what it never should), e.g. to time the demo.
    #[arg(long)]
    until_outcomes: bool,
}

/// Arguments of `strata simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The server's base URL (config and collection).
    #[arg(long, value_name = "URL")]
    server: String,
    /// Where `/collect/v1/*` is, when not on the server.
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// An SDK key of the server.
    #[arg(long, value_name = "KEY")]
    sdk_key: String,
    /// An ingestion key of the server.
    #[arg(long, value_name = "KEY")]
    ingest_key: String,
    /// Simulated users.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    users: u32,
    /// Visits per second (each a few events and the exposures of the
    /// experiments the user meets).
    #[arg(long, value_name = "R", default_value_t = 100.0)]
    rate: f64,
    /// The scenarios whose planted effects and logging bugs to apply, by
    /// experiment key (repeatable; default all of them). Experiments the
    /// server does not have are simply not met.
    #[arg(long = "scenario", value_name = "KEY")]
    scenarios: Vec<String>,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long, value_name = "SECS")]
    seconds: Option<u64>,
    /// Seed of the population and its behaviour.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
}

/// How often the scheduled analysis and the guardrail monitor come round
/// in simulated time, and their bounds in real time.
const ANALYSIS_EVERY: Duration = Duration::from_secs(86_400);
const ANALYSIS_BOUNDS: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3600));
const GUARDRAILS_EVERY: Duration = Duration::from_secs(3600);
const GUARDRAILS_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
/// The guardrail monitor's allowance for delivery, real time.
const DELIVERY_ALLOWANCE: Duration = Duration::from_secs(4);

/// The file in the demo's data directory that keeps its simulated time (ms
/// since the Unix epoch) across restarts.
const CLOCK_FILE: &str = "demo-clock";

/// The simulated time a demo's data directory reached (the epoch if none).
fn read_clock(path: &std::path::Path) -> Result<SystemTime> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let ms: u64 = text.trim().parse().with_context(|| {
                format!("{}: expected milliseconds since the epoch", path.display())
            })?;
            Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SystemTime::UNIX_EPOCH),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Records the simulated time now in `path`.
fn write_clock(path: &std::path::Path) {
    let ms = strata_clock::now_ms().max(0);
    if let Err(e) = std::fs::write(path, format!("{ms}\n")) {
        eprintln!(
            "strata demo: cannot record the simulated time in {}: {e}",
            path.display()
        );
    }
}

/// `every` of simulated time in real time, within `bounds`.
fn real(every: Duration, speed: f64, bounds: (Duration, Duration)) -> Duration {
    every.div_f64(speed).clamp(bounds.0, bounds.1)
}

fn scenarios(keys: &[String]) -> Result<Vec<Scenario>> {
    if keys.is_empty() {
        return Ok(scenario::all());
    }
    keys.iter()
        .map(|k| {
            scenario::by_key(k).with_context(|| {
                let known: Vec<&str> = scenario::all().iter().map(|s| s.key).collect();
                format!("--scenario {k:?} is not one of {}", known.join(", "))
            })
        })
        .collect()
}

/// Runs `strata demo` until SIGINT or SIGTERM.
pub fn run(args: &DemoArgs) -> Result<()> {
    crate::init_logging();
    if !(args.visits_per_day.is_finite() && args.visits_per_day > 0.0) {
        bail!("--visits-per-day must be a positive number");
    }
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    let temp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("strata-demo-")
                .tempdir()
                .context("cannot create a temporary data directory")?;
            temp.path().to_path_buf()
        }
    };
    // A demo restarted on its data directory goes on from its simulated
    // time, never back before what it stored.
    let clock_file = dir.join(CLOCK_FILE);
    let origin = read_clock(&clock_file)?.max(SystemTime::now());
    let clock = strata_clock::Simulated::new(origin, args.speed)
        .map_err(|e| anyhow::anyhow!("--speed: {e}"))?;
    strata_clock::simulate(clock).map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = match &args.admin_token {
        Some(t) if !t.trim().is_empty() => t.clone(),
        Some(_) => bail!("--admin-token must not be empty"),
        None => strata_server::auth::new_token()
            .map_err(|e| anyhow::anyhow!("cannot make an admin token: {e}"))?,
    };
    let mut pipeline = PipelineConfig::under(&dir);
    // The simulated users all come from this process's loopback address.
    pipeline.ingest.ip_rate = Rate::unlimited();
    let cfg = ServeConfig {
        server: ServerConfig {
            listen: args.listen,
            store: StoreOptions {
                data_dir: dir.clone(),
                database_url: None,
                max_connections: 8,
                snapshot_retention: 1000,
            },
            settings: Settings::default(),
            bootstrap_admin_token: Some(admin.clone()),
        },
        pipeline: Some(pipeline),
        analysis: Some(AnalysisConfig::every(real(
            ANALYSIS_EVERY,
            args.speed,
            ANALYSIS_BOUNDS,
        ))),
        guardrails: Some(GuardrailConfig {
            // The in-process SDK flushes every 100 ms and the compactor
            // runs every second or so: a few seconds cover delivery.
            delivery_allowance: DELIVERY_ALLOWANCE,
            ..GuardrailConfig::every(real(GUARDRAILS_EVERY, args.speed, GUARDRAILS_BOUNDS))
        }),
        portal: Some(PortalSettings::default()),
    };
    let scenarios = scenario::all();
    let population = Population::new(args.users, args.seed);
    let speed = args.speed;
    let visits_per_day = args.visits_per_day;
    let seed = args.seed;
    let until_outcomes = args.until_outcomes;
    runtime(args.threads)?.block_on(async move {
        let server = strata_app::start(cfg).await?;
        let base = format!("http://{}", server.addr);
        let keys = strata_sim::seed::seed(&base, &admin, population.size(), seed, &scenarios)
            .await
            .context("cannot seed the demo")?;
        println!("Strata demo: {} simulated users on a clock {speed}× real time (a simulated day every {:.1} s)", population.size(), 86_400.0 / speed);
        println!();
        println!("  portal       {base}/");
        println!("  admin token  {admin}");
        println!("  data         {}", dir.display());
        println!();
        for s in &scenarios {
            println!("  {:<15} {}", s.key, s.expect);
        }
        println!();
        println!("Results appear after the first simulated day; Ctrl-C stops.");
        let progress = Arc::new(Progress::default());
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let driver = tokio::spawn(drive(
            DriveConfig {
                server: base.clone(),
                collector: None,
                sdk_key: keys.sdk_key,
                ingest_key: keys.ingest_key,
                population,
                baseline: Baseline::default(),
                scenarios,
                visits_per_user_day: visits_per_day,
                rate: None,
                seed,
            },
            progress.clone(),
            async move {
                let _ = stop_rx.changed().await;
            },
        ));
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(watch(base.clone(), admin.clone(), scenario::all(), done_tx));
        let until = until_outcomes;
        let wrong = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let wrong_in = wrong.clone();
        let ticker = {
            let progress = progress.clone();
            let clock_file = clock_file.clone();
            tokio::spawn(async move {
                let start = strata_clock::now();
                let mut every = tokio::time::interval(Duration::from_secs(10));
                every.tick().await;
                loop {
                    every.tick().await;
                    let days = strata_clock::now()
                        .duration_since(start)
                        .unwrap_or_default()
                        .as_secs_f64()
                        / 86_400.0;
                    println!(
                        "day {days:5.1}: {} visits, {} events",
                        progress.visits(),
                        progress.events()
                    );
                    write_clock(&clock_file);
                }
            })
        };
        server
            .run_until(async move {
                tokio::select! {
                    () = shutdown_signal() => {},
                    all = &mut done_rx, if until => {
                        wrong_in.store(all != Ok(true), std::sync::atomic::Ordering::Relaxed);
                    }
                }
                watcher.abort();
                ticker.abort();
                write_clock(&clock_file);
                let _ = stop_tx.send(true);
                match driver.await {
                    Ok(Ok(r)) => eprintln!(
                        "strata demo: {} visits, {} events; the sdk delivered {} exposures and {} events, dropped {}",
                        r.visits, r.events, r.exposures_delivered, r.events_delivered, r.dropped
                    ),
                    Ok(Err(e)) => eprintln!("strata demo: the simulated users stopped: {e}"),
                    Err(e) => eprintln!("strata demo: the simulated users stopped: {e}"),
                }
            })
            .await?;
        if wrong.load(std::sync::atomic::Ordering::Relaxed) {
            bail!("a scenario showed what it never should (see above)");
        }
        Ok(())
    })
}

/// How often the demo reads where its scenarios stand.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Prints each scenario's outcome when the API first shows it, and says on
/// `done` whether all were reached (true) or one went wrong (false).
async fn watch(
    base: String,
    token: String,
    scenarios: Vec<Scenario>,
    done: tokio::sync::oneshot::Sender<bool>,
) {
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let sim_start = strata_clock::now();
    let mut left = scenarios;
    let mut every = tokio::time::interval(WATCH_EVERY);
    loop {
        every.tick().await;
        let mut still = Vec::new();
        for s in left {
            match standing(&s, &see(&http, &base, &token, s.key).await) {
                Standing::Waiting => still.push(s),
                Standing::Reached(what) => {
                    let day = strata_clock::now()
                        .duration_since(sim_start)
                        .unwrap_or_default()
                        .as_secs_f64()
                        / 86_400.0;
                    println!(
                        "  ✓ {:<15} after {:>4.0} s (day {day:4.1}): {what}",
                        s.key,
                        started.elapsed().as_secs_f64()
                    );
                }
                Standing::Wrong(what) => {
                    println!("  ✗ {:<15} {what}", s.key);
                    let _ = done.send(false);
                    return;
                }
            }
        }
        if still.is_empty() {
            println!(
                "Every scenario shows its outcome, {:.0} s after the start.",
                started.elapsed().as_secs_f64()
            );
            let _ = done.send(true);
            return;
        }
        left = still;
    }
}

/// Runs `strata simulate` until Ctrl-C or `--seconds`.
pub fn simulate(args: &SimulateArgs) -> Result<()> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of visits per second");
    }
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    let cfg = DriveConfig {
        server: args.server.clone(),
        collector: args.collector.clone(),
        sdk_key: args.sdk_key.clone(),
        ingest_key: args.ingest_key.clone(),
        population: Population::new(args.users, args.seed),
        baseline: Baseline::default(),
        scenarios: scenarios(&args.scenarios)?,
        visits_per_user_day: 1.0,
        rate: Some(args.rate),
        seed: args.seed,
    };
    let seconds = args.seconds;
    runtime(None)?.block_on(async move {
        let progress = Arc::new(Progress::default());
        let stop = async move {
            match seconds {
                Some(s) => {
                    tokio::select! {
                        () = shutdown_signal() => {},
                        () = tokio::time::sleep(Duration::from_secs(s)) => {},
                    }
                }
                None => shutdown_signal().await,
            }
        };
        let r = drive(cfg, progress, stop).await?;
        println!(
            "{} visits, {} events; delivered {} exposures and {} events, dropped {}",
            r.visits, r.events, r.exposures_delivered, r.events_delivered, r.dropped
        );
        if r.dropped > 0 {
            bail!("{} records were dropped", r.dropped);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_the_simulated_day_within_bounds() {
        for (every, speed, bounds, want) in [
            (ANALYSIS_EVERY, 8640.0, ANALYSIS_BOUNDS, 10),
            (ANALYSIS_EVERY, 1.0, ANALYSIS_BOUNDS, 3600),
            (ANALYSIS_EVERY, 1e6, ANALYSIS_BOUNDS, 5),
            (GUARDRAILS_EVERY, 8640.0, GUARDRAILS_BOUNDS, 1),
            (GUARDRAILS_EVERY, 1.0, GUARDRAILS_BOUNDS, 300),
        ] {
            assert_eq!(
                real(every, speed, bounds),
                Duration::from_secs(want),
                "{speed}"
            );
        }
    }

    #[test]
    fn the_simulated_time_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(CLOCK_FILE);
        assert_eq!(read_clock(&f).unwrap(), SystemTime::UNIX_EPOCH);
        write_clock(&f);
        let t = read_clock(&f).unwrap();
        let now = SystemTime::now();
        assert!(t <= now && now.duration_since(t).unwrap() < Duration::from_secs(5));
        std::fs::write(&f, "soon").unwrap();
        let e = read_clock(&f).unwrap_err();
        assert!(format!("{e:#}").contains("expected milliseconds"), "{e:#}");
    }

    #[test]
    fn unknown_scenarios_are_named() {
        assert_eq!(scenarios(&[]).unwrap().len(), 7);
        let e = scenarios(&["demo_aa".into(), "demo_nope".into()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"demo_nope\" is not one of demo_winner"),
            "{e}"
        );
    }
}
