//! `strata serve`: the process assembled by `strata-app` (the control plane,
//! the event pipeline, the scheduled analysis, the guardrail monitor and
//! the portal), and
//! `strata token create`: a key created directly in the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use strata_app::{AnalysisConfig, GuardrailConfig, PipelineConfig, ServeConfig};
use strata_server::auth::{hash_token, new_key_record, new_token, KeyKind, Role};
use strata_server::store::Actor;
use strata_server::{ConfigStore, ServerConfig, Settings, StoreOptions};

/// Where the store is.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite store (used when no database URL is given).
    #[arg(long, value_name = "DIR", default_value = "./strata-data")]
    data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://user@host:5432/db`); also read from
    /// `STRATA_DATABASE_URL`.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Published snapshots kept for rollback: the latest N versions (0 = all).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    snapshot_retention: u64,
}

impl StoreArgs {
    pub(crate) fn options(&self) -> StoreOptions {
        StoreOptions {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone().or_else(|| {
                std::env::var("STRATA_DATABASE_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
            }),
            max_connections: 8,
            snapshot_retention: self.snapshot_retention,
        }
    }
}

/// What a node of `strata serve` does (`--role`, combinable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRole {
    /// Everything in one process.
    All,
    /// The API, the portal and the SDK distribution (`/api`, `/`, `/sdk`, `/ofrep`).
    Control,
    /// Collection (`/collect`) into this node's pipeline.
    Ingest,
    /// The scheduled analysis and the guardrail monitor over this node's
    /// pipeline, on the one node holding the jobs lease.
    Jobs,
}

/// Arguments of `strata serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// What this node does: all, or any of control, ingest, jobs
    /// (comma-separated, e.g. `control,ingest`). Nodes of any roles share
    /// one PostgreSQL (`--database-url`).
    #[arg(
        long,
        value_name = "ROLES",
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    role: Vec<NodeRole>,
    #[command(flatten)]
    store: StoreArgs,
    /// Requests per second allowed per API token (0 = unlimited); over it: 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 100.0)]
    rate_limit: f64,
    /// Requests per second allowed per SDK or ingest token (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 10_000.0)]
    sdk_rate_limit: f64,
    /// Days before the range of an ended experiment returns to its layer's pool.
    #[arg(long, value_name = "DAYS", default_value_t = 7.0)]
    range_cooldown_days: f64,
    /// Largest accepted request body in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seconds between SSE keep-alive comments.
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    keep_alive_secs: u64,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Do not mount the event pipeline (`/collect/v1/*`, under DATA_DIR/pipeline)
    /// nor the scheduled analysis, which reads its data.
    #[arg(long)]
    no_pipeline: bool,
    /// Where acknowledged records go: `local` (the embedded log under
    /// DATA_DIR/pipeline) or a NATS JetStream server, `nats://host:4222`,
    /// shared by every ingest node and compacted into Parquet by the jobs
    /// leader.
    #[arg(long, value_name = "local|URL", default_value = "local")]
    ingest: String,
    #[command(flatten)]
    nats: NatsArgs,
    /// Where the Parquet tree is, with `--ingest nats://…`: `file:///PATH`
    /// on a volume every jobs node mounts, or `s3://bucket/prefix` (S3 or a
    /// compatible store; credentials, region and endpoint from AWS_*), so
    /// whichever node leads the jobs compacts into and analyses the same
    /// tree (default DATA_DIR/pipeline/parquet).
    #[arg(long, value_name = "URL")]
    storage: Option<String>,
    /// Time between scheduled analysis runs: 30s, 5m, 1h, 1d.
    #[arg(long, value_name = "INTERVAL", default_value = "1h", value_parser = strata_app::analysis::parse_interval)]
    analysis_interval: Duration,
    /// Time between full recomputations of the scheduled analysis's kept
    /// rollup (DATA_DIR/analysis-rollup), each checking the days a run
    /// kept against it: 1h, 1d.
    #[arg(long, value_name = "INTERVAL", default_value = "1d", value_parser = strata_app::analysis::parse_interval)]
    full_recompute_interval: Duration,
    /// Memory limit of the scheduled analysis's query engine in MiB
    /// (default: none); larger aggregations spill to disk.
    #[arg(long, value_name = "MIB")]
    analysis_memory_limit_mb: Option<usize>,
    /// Time between the global holdout's looks (taken by the scheduled
    /// analysis's runs): 1h, 1d.
    #[arg(long, value_name = "INTERVAL", default_value = "1d", value_parser = strata_app::analysis::parse_interval)]
    holdout_interval: Duration,
    /// Do not run the scheduled analysis of running experiments.
    #[arg(long)]
    no_analysis: bool,
    /// Run the scheduled analyses on an Apache Ballista cluster: its scheduler,
    /// `df://host:port` (`strata ballista-scheduler`; needs a build with
    /// `--features ballista`). Every executor must read the Parquet tree at the
    /// same path as this node.
    #[arg(long, value_name = "df://HOST:PORT")]
    ballista: Option<String>,
    /// With --ballista: a directory the Ballista scheduler and every executor see at
    /// this same path, for the tables an analysis passes between its stages
    /// (default DATA_DIR/analysis-scratch).
    #[arg(long, value_name = "DIR", requires = "ballista")]
    ballista_scratch: Option<PathBuf>,
    /// Time between guardrail monitor cycles: 10s, 1m, 5m.
    #[arg(long, value_name = "INTERVAL", default_value = "5m", value_parser = strata_app::analysis::parse_interval)]
    guardrail_interval: Duration,
    /// Each experiment's error budget for automatic kills over its whole
    /// life, split across its guardrails and treatments.
    #[arg(long, value_name = "ALPHA", default_value_t = 0.01)]
    guardrail_alpha: f64,
    /// Do not run the guardrail monitor.
    #[arg(long)]
    no_guardrails: bool,
    /// Do not serve the web portal at `/`.
    #[arg(long)]
    no_portal: bool,
    /// How long a portal sign-in lasts: 30m, 12h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = strata_app::analysis::parse_interval)]
    portal_session_ttl: Duration,
    /// Mark the portal's cookies Secure even without `X-Forwarded-Proto: https`
    /// (the process itself is reached over TLS).
    #[arg(long)]
    portal_secure_cookies: bool,
}

/// The JetStream stream of `--ingest nats://…`; every node of a
/// deployment gives the same.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// Stream name (created if missing).
    #[arg(long, value_name = "NAME", default_value = "STRATA")]
    nats_stream: String,
    /// Subject prefix: the stream takes `PREFIX.>`.
    #[arg(long, value_name = "PREFIX", default_value = "strata")]
    nats_subject_prefix: String,
    /// Durable consumer of the compactor.
    #[arg(long, value_name = "NAME", default_value = "strata-compactor")]
    nats_consumer: String,
    /// JetStream's duplicate window: a record retried within it is
    /// acknowledged as a duplicate and stored once (30m, 1h, 1d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = strata_app::analysis::parse_interval)]
    nats_duplicate_window: Duration,
}

/// The tree of `--storage file:///PATH | s3://bucket/prefix`.
fn storage(url: &str) -> Result<strata_app::StorageLocation> {
    if let Some(rest) = url.strip_prefix("s3://") {
        if rest.split('/').next().is_none_or(str::is_empty) {
            bail!("--storage must name a bucket (s3://bucket/prefix), got {url:?}");
        }
        return Ok(strata_app::StorageLocation::S3(url.to_owned()));
    }
    let Some(path) = url.strip_prefix("file://") else {
        bail!("--storage must be file:///PATH or s3://bucket/prefix, got {url:?}");
    };
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        bail!("--storage must name an absolute path (file:///srv/strata/parquet), got {url:?}");
    }
    Ok(strata_app::StorageLocation::Dir(path))
}

/// The ingestion of `--ingest`.
fn ingestion(ingest: &str, nats: &NatsArgs) -> Result<strata_app::Ingestion> {
    if ingest == "local" {
        return Ok(strata_app::Ingestion::Local);
    }
    if !(ingest.starts_with("nats://") || ingest.starts_with("tls://")) {
        bail!(
            "--ingest must be `local` or a NATS URL such as nats://127.0.0.1:4222, got {ingest:?}"
        );
    }
    for (flag, v) in [
        ("--nats-stream", &nats.nats_stream),
        ("--nats-subject-prefix", &nats.nats_subject_prefix),
        ("--nats-consumer", &nats.nats_consumer),
    ] {
        if v.is_empty() || v.contains(|c: char| c.is_whitespace() || matches!(c, '*' | '>' | '.')) {
            bail!("{flag} must be a non-empty name without spaces, dots, `*` or `>`, got {v:?}");
        }
    }
    Ok(strata_app::Ingestion::JetStream {
        url: ingest.to_owned(),
        nats: strata_pipeline::nats::NatsOptions {
            stream: nats.nats_stream.clone(),
            subject_prefix: nats.nats_subject_prefix.clone(),
            durable: nats.nats_consumer.clone(),
            duplicate_window: nats.nats_duplicate_window,
            ..strata_pipeline::nats::NatsOptions::default()
        },
    })
}

pub(crate) fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    b.enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs `strata serve` until SIGINT or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cluster = args
        .ballista
        .as_ref()
        .map(|scheduler| strata_analysis::Cluster {
            scheduler: scheduler.clone(),
            scratch: args
                .ballista_scratch
                .clone()
                .unwrap_or_else(|| args.store.data_dir.join("analysis-scratch")),
        });
    if let Some(cluster) = &cluster {
        if !strata_analysis::cluster::SUPPORTED {
            bail!(
                "option `ballista`: {}",
                strata_analysis::cluster::NOT_SUPPORTED
            );
        }
        cluster.check()?;
    }
    if !(args.range_cooldown_days.is_finite() && args.range_cooldown_days >= 0.0) {
        bail!("--range-cooldown-days must be a non-negative number");
    }
    if !(args.rate_limit.is_finite() && args.rate_limit >= 0.0) {
        bail!("--rate-limit must be a non-negative number");
    }
    if !(args.sdk_rate_limit.is_finite() && args.sdk_rate_limit >= 0.0) {
        bail!("--sdk-rate-limit must be a non-negative number");
    }
    if !(args.guardrail_alpha > 0.0 && args.guardrail_alpha < 0.5) {
        bail!(
            "--guardrail-alpha must be above 0 and below 0.5, got {}",
            args.guardrail_alpha
        );
    }
    let ingestion = ingestion(&args.ingest, &args.nats)?;
    let storage = args.storage.as_deref().map(storage).transpose()?;
    if storage.is_some() && matches!(ingestion, strata_app::Ingestion::Local) {
        bail!("--storage needs --ingest nats://…: the embedded log keeps its Parquet in DATA_DIR/pipeline");
    }
    let has = |r: NodeRole| args.role.contains(&NodeRole::All) || args.role.contains(&r);
    let (control, ingest, jobs) = (
        has(NodeRole::Control),
        has(NodeRole::Ingest),
        has(NodeRole::Jobs),
    );
    let cfg = ServerConfig {
        listen: args.listen,
        store: args.store.options(),
        settings: Settings {
            serve_control: control,
            range_cooldown: Duration::from_secs_f64(args.range_cooldown_days * 86_400.0),
            rate_limit: args.rate_limit,
            sdk_rate_limit: args.sdk_rate_limit,
            max_body_bytes: args.max_body_bytes,
            keep_alive: Duration::from_secs(args.keep_alive_secs.max(1)),
            ..Settings::default()
        },
        bootstrap_admin_token: std::env::var("STRATA_BOOTSTRAP_ADMIN_TOKEN").ok(),
    };
    let cfg = ServeConfig {
        server: cfg,
        // The jobs read the pipeline's data: a jobs node opens it, and
        // serves `/collect` only with the ingest role.
        pipeline: (!args.no_pipeline && (ingest || jobs)).then(|| PipelineConfig {
            collect: ingest,
            ingestion,
            storage,
            compact: jobs,
            ..PipelineConfig::under(&args.store.data_dir)
        }),
        analysis: (!args.no_analysis && jobs).then(|| AnalysisConfig {
            holdout_interval: args.holdout_interval,
            cluster: cluster.clone(),
            rollup_dir: Some(args.store.data_dir.join("analysis-rollup")),
            full_recompute_interval: args.full_recompute_interval,
            memory_limit: args.analysis_memory_limit_mb.map(|m| m << 20),
            ..AnalysisConfig::every(args.analysis_interval)
        }),
        guardrails: (!args.no_guardrails && jobs).then(|| GuardrailConfig {
            budget: args.guardrail_alpha,
            ..GuardrailConfig::every(args.guardrail_interval)
        }),
        portal: (!args.no_portal && control).then(|| strata_app::PortalSettings {
            session_ttl: args.portal_session_ttl,
            secure_cookies: args.portal_secure_cookies,
            ..strata_app::PortalSettings::default()
        }),
    };
    runtime(args.threads)?.block_on(async move {
        let server = strata_app::start(cfg).await?;
        let stop = shutdown_signal();
        eprintln!("strata serve: listening on http://{}", server.addr);
        server.run_until(stop).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal sent as soon as
/// the caller announces itself (a supervisor, a test) is never met by the
/// default action. Call it inside the runtime.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(int) => {},
                () = wait(term) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `strata token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token in the store and print it (shown once).
    Create(TokenArgs),
}

/// Arguments of `strata token create`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Role of an API token: admin, experimenter, analyst or viewer.
    #[arg(long, value_name = "ROLE", default_value = "viewer")]
    role: String,
    /// Kind of token: api, sdk or ingest.
    #[arg(long, value_name = "KIND", default_value = "api")]
    kind: String,
    /// Team (required for experimenters).
    #[arg(long, value_name = "TEAM", default_value = "")]
    team: String,
    /// Display name (default: "<kind>-<role>").
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `strata token create`: prints the token on stdout, its id on stderr.
pub fn token(cmd: &TokenCommand) -> Result<()> {
    let TokenCommand::Create(args) = cmd;
    let kind = KeyKind::parse(&args.kind).with_context(|| {
        format!(
            "unknown token kind {:?}; expected api, sdk or ingest",
            args.kind
        )
    })?;
    let role = Role::parse(&args.role).with_context(|| {
        format!(
            "unknown role {:?}; expected admin, experimenter, analyst or viewer",
            args.role
        )
    })?;
    if kind == KeyKind::Api && role == Role::Experimenter && args.team.is_empty() {
        bail!("an experimenter token needs --team");
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", kind.as_str(), role.as_str()));
    let opts = args.store.options();
    runtime(Some(1))?.block_on(async move {
        let store = ConfigStore::open(&opts)
            .await
            .context("cannot open the config store")?;
        let token = new_token().map_err(|e| anyhow::anyhow!(e.message))?;
        let rec = new_key_record(kind, role, &args.team, &name, "cli")
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let actor = Actor::system("cli");
        store
            .insert_key(&rec, &hash_token(&token), &actor)
            .await
            .context("cannot store the token")?;
        println!("{token}");
        eprintln!(
            "created {} token {} (role {}, team {:?})",
            kind.as_str(),
            rec.id,
            role.as_str(),
            args.team
        );
        Ok(())
    })
}

/// Arguments of `strata compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The data directory of `strata serve` (its event log is DATA_DIR/pipeline).
    #[arg(long, value_name = "DIR", default_value = "./strata-data")]
    data_dir: PathBuf,
}

/// Runs `strata compact`: recovers the log, compacts everything durable into
/// Parquet, merges small files and prints the report as JSON. Refuses while a server holds the
/// directory (use `POST /api/v1/pipeline/compact` then).
pub fn compact(args: &CompactArgs) -> Result<()> {
    let cfg = PipelineConfig::under(&args.data_dir);
    let _lock = strata_pipeline::lock_dir(&cfg.dir)?;
    let opts = strata_pipeline::StoreOptions {
        background_compaction: false,
        ..cfg.store.clone()
    };
    runtime(Some(1))?.block_on(async move {
        let store = strata_pipeline::LocalStore::open(&cfg.dir, opts)
            .await
            .with_context(|| format!("cannot open the event log in {}", cfg.dir.display()))?;
        let r = store.compact_now().await.context("compaction failed")?;
        let merged = store
            .merge_now()
            .await
            .context("merging small files failed")?;
        store.shutdown().await;
        let mut out = serde_json::to_value(&r).context("cannot encode the report")?;
        out["merged"] = serde_json::to_value(&merged).context("cannot encode the report")?;
        out["parquet"] = serde_json::json!(cfg.dir.join("parquet"));
        println!("{out}");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats() -> NatsArgs {
        NatsArgs {
            nats_stream: "STRATA".into(),
            nats_subject_prefix: "strata".into(),
            nats_consumer: "strata-compactor".into(),
            nats_duplicate_window: Duration::from_secs(3600),
        }
    }

    #[test]
    fn ingest_is_local_or_a_nats_url_with_plain_names() {
        assert!(matches!(
            ingestion("local", &nats()).unwrap(),
            strata_app::Ingestion::Local
        ));
        let strata_app::Ingestion::JetStream { url, nats: opts } =
            ingestion("nats://10.0.0.5:4222", &nats()).unwrap()
        else {
            panic!("not jetstream");
        };
        assert_eq!(url, "nats://10.0.0.5:4222");
        assert_eq!(
            (opts.stream.as_str(), opts.subject_prefix.as_str()),
            ("STRATA", "strata")
        );
        let e = ingestion("kafka://x", &nats()).unwrap_err().to_string();
        assert!(e.contains("--ingest must be `local` or a NATS URL"), "{e}");
        for bad in ["", "a.b", "a b", "x>"] {
            let args = NatsArgs {
                nats_stream: bad.into(),
                ..nats()
            };
            let e = ingestion("nats://h:4222", &args).unwrap_err().to_string();
            assert!(e.starts_with("--nats-stream must be"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn storage_is_an_absolute_file_url_or_an_s3_prefix() {
        assert_eq!(
            storage("file:///srv/strata/parquet").unwrap(),
            strata_app::StorageLocation::Dir(PathBuf::from("/srv/strata/parquet"))
        );
        assert_eq!(
            storage("s3://bucket/a/b").unwrap(),
            strata_app::StorageLocation::S3("s3://bucket/a/b".into())
        );
        for bad in ["s3:///prefix", "gs://bucket", "/srv/x", "file://relative/x"] {
            let e = storage(bad).unwrap_err().to_string();
            assert!(e.starts_with("--storage must"), "{bad}: {e}");
        }
    }
}
