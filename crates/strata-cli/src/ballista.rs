//! `strata ballista-scheduler` and `strata ballista-executor`: the two
//! processes of an Apache Ballista cluster, built on the same DataFusion as
//! Strata's analysis, for `strata analyze --ballista` and the scheduler's
//! `--ballista` to run their plans on.
//!
//! They are Ballista's own scheduler and executor (the `ballista-scheduler`
//! and `ballista-executor` crates) started with Strata's defaults; the
//! analysis sends them DataFusion's functions only (see
//! `strata_analysis::cluster`), so no Strata code runs inside them. They
//! are compiled with the `ballista` feature; without it the commands say
//! how to get them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// Arguments of `strata ballista-scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on for clients and executors (gRPC).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50050")]
    pub listen: SocketAddr,
    /// Host name executors and clients reach this scheduler by.
    #[arg(long, value_name = "HOST", default_value = "localhost")]
    pub external_host: String,
}

/// Arguments of `strata ballista-executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler to register with: `host:port`.
    #[arg(long, value_name = "HOST:PORT", default_value = "localhost:50050")]
    pub scheduler: String,
    /// Address to serve results and shuffle data on (Arrow Flight).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Port of the executor's own gRPC service (task launches from the scheduler).
    #[arg(long, value_name = "PORT", default_value_t = 50052)]
    pub grpc_port: u16,
    /// Host name the scheduler, clients and other executors reach this executor by
    /// (default: the --listen address).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// Tasks run at once (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub concurrent_tasks: usize,
    /// Directory for shuffle files (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Memory limit of the executor's query engine in MiB; larger aggregations
    /// spill to the work directory.
    #[arg(long, value_name = "MIB")]
    pub memory_limit_mb: Option<u64>,
}

/// Splits `host:port` (the port required).
fn host_port(option: &str, text: &str) -> Result<(String, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("option `{option}`: `{text}` is not host:port"))?;
    let port =
        port.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
            anyhow::anyhow!("option `{option}`: `{port}` in `{text}` is not a port")
        })?;
    Ok((host.to_string(), port))
}

#[cfg_attr(not(feature = "ballista"), allow(dead_code))]
fn runtime() -> Result<tokio::runtime::Runtime> {
    // Ballista's planner recurses deeply on large plans; its own binaries
    // run on 32 MiB stacks.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 << 20)
        .build()?)
}

/// Runs `strata ballista-scheduler` until the process is stopped.
#[cfg(feature = "ballista")]
pub fn scheduler(args: &SchedulerArgs) -> Result<()> {
    use std::sync::Arc;

    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    use ballista_scheduler::scheduler_process::start_server;

    crate::init_logging();
    let config = SchedulerConfig {
        bind_host: args.listen.ip().to_string(),
        bind_port: args.listen.port(),
        external_host: args.external_host.clone(),
        ..SchedulerConfig::default()
    };
    runtime()?.block_on(async {
        let cluster = BallistaCluster::new_from_config(&config)
            .await
            .map_err(|e| anyhow::anyhow!("ballista scheduler: {e}"))?;
        eprintln!("ballista scheduler listening on {}", args.listen);
        start_server(cluster, args.listen, Arc::new(config))
            .await
            .map_err(|e| anyhow::anyhow!("ballista scheduler on {}: {e}", args.listen))
    })
}

/// Runs `strata ballista-executor` until SIGTERM or Ctrl-C.
#[cfg(feature = "ballista")]
pub fn executor(args: &ExecutorArgs) -> Result<()> {
    use std::sync::Arc;

    use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};

    crate::init_logging();
    let (scheduler_host, scheduler_port) = host_port("scheduler", &args.scheduler)?;
    if let Some(dir) = &args.work_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("option `work-dir`: {}: {e}", dir.display()))?;
    }
    let config = ExecutorProcessConfig {
        bind_host: args.listen.ip().to_string(),
        external_host: Some(
            args.external_host
                .clone()
                .unwrap_or_else(|| args.listen.ip().to_string()),
        ),
        port: args.listen.port(),
        grpc_port: args.grpc_port,
        scheduler_host,
        scheduler_port,
        // Executors started with the scheduler wait for it rather than fail.
        scheduler_connect_timeout_seconds: 30,
        vcores: args.concurrent_tasks,
        work_dir: args.work_dir.as_ref().map(|d| d.display().to_string()),
        memory_pool_size: args.memory_limit_mb.map(|m| m << 20),
        print_thread_info: false,
        ..ExecutorProcessConfig::default()
    };
    runtime()?.block_on(async {
        eprintln!(
            "ballista executor on {} registering with {}",
            args.listen, args.scheduler
        );
        start_executor_process(Arc::new(config))
            .await
            .map_err(|e| anyhow::anyhow!("ballista executor on {}: {e}", args.listen))
    })
}

#[cfg(not(feature = "ballista"))]
fn not_built(command: &str) -> Result<()> {
    anyhow::bail!(
        "`strata {command}` is not in this build of Strata; build it with `cargo build --release -p strata-cli --features ballista`"
    )
}

/// Runs `strata ballista-scheduler` (not in this build).
#[cfg(not(feature = "ballista"))]
pub fn scheduler(_: &SchedulerArgs) -> Result<()> {
    not_built("ballista-scheduler")
}

/// Runs `strata ballista-executor` (not in this build).
#[cfg(not(feature = "ballista"))]
pub fn executor(args: &ExecutorArgs) -> Result<()> {
    host_port("scheduler", &args.scheduler)?;
    not_built("ballista-executor")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_need_a_host_and_a_port() {
        assert_eq!(
            host_port("scheduler", "sched.internal:50050").unwrap(),
            ("sched.internal".to_string(), 50050)
        );
        for (bad, says) in [
            ("localhost", "is not host:port"),
            (":50050", "is not host:port"),
            ("localhost:0", "is not a port"),
            ("localhost:x", "is not a port"),
        ] {
            let e = host_port("scheduler", bad).unwrap_err().to_string();
            assert!(e.starts_with("option `scheduler`: "), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
