//! Where an analysis runs its plans: in this process, or on an Apache
//! Ballista cluster.
//!
//! On a cluster the same SQL is planned by DataFusion here, sent to
//! Ballista's scheduler and executed by its executors; only the few rows of
//! each stage's result come back. Two things differ from the in-process
//! engine, and both keep the results the same:
//!
//! * **Tables between stages are files.** The engine materializes a stage's
//!   result (the exposed units, their per-unit values) and the next stage
//!   reads it. In process that is an in-memory table; Ballista cannot ship
//!   one to its executors, so on a cluster it is written as Parquet under
//!   [`Cluster::scratch`], a directory the scheduler and every executor see
//!   at the same path, and read back as a listing table.
//! * **Only DataFusion's own functions.** An executor knows DataFusion's
//!   built-in functions, not the fused `strata_parts` aggregate, whose
//!   state depends on the experiment; on a cluster the per-unit parts are
//!   computed by its portable SQL twin, one `FILTER` aggregate per part
//!   (`EngineOptions::unfused_parts`), which gives the same values.
//!
//! The inputs are read by the executors too, so their paths (or object
//! store URLs) must be the same on every node. Ballista support is compiled
//! with the `ballista` feature; without it, asking for a cluster is an
//! error that says so.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};

/// Whether this build can run analyses on a Ballista cluster (the
/// `ballista` feature).
pub const SUPPORTED: bool = cfg!(feature = "ballista");

/// What a build without the `ballista` feature says when asked for a cluster.
pub const NOT_SUPPORTED: &str =
    "this build of Strata has no Ballista support; build it with `--features ballista`";

/// The scheduler's port when its address gives none (Ballista's default).
const DEFAULT_PORT: u16 = 50050;

/// A Ballista cluster to run an analysis on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The scheduler: `df://host:port` (port 50050 when left out).
    pub scheduler: String,
    /// A directory the scheduler and every executor read at this same path
    /// (a shared volume; on one machine, any directory): the tables an
    /// analysis materializes between its stages are written here, each
    /// analysis in a directory of its own that it removes when done.
    pub scratch: PathBuf,
}

impl Cluster {
    /// Checks the scheduler's address: `df://host[:port]`.
    pub fn check(&self) -> Result<()> {
        self.address().map(|_| ())
    }

    /// The scheduler's host and port (the default port when none is given),
    /// or why its address is not `df://host[:port]`.
    fn address(&self) -> Result<(&str, u16)> {
        let invalid = |reason: String| Error::Option {
            option: "ballista",
            reason,
        };
        let rest = self.scheduler.strip_prefix("df://").ok_or_else(|| {
            invalid(format!(
                "`{}` is not a Ballista scheduler address; expected df://host:port",
                self.scheduler
            ))
        })?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if host.is_empty() || host.contains('/') {
            return Err(invalid(format!(
                "`{}` names no host; expected df://host:port",
                self.scheduler
            )));
        }
        let port =
            match port {
                None => DEFAULT_PORT,
                Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
                    invalid(format!("`{p}` in `{}` is not a port", self.scheduler))
                })?,
            };
        Ok((host, port))
    }
}

/// The analysis session: in process, or a client of `cluster`.
pub(crate) async fn session(
    cluster: Option<&Cluster>,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionContext> {
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    match cluster {
        None => Ok(SessionContext::new_with_state(state)),
        Some(c) => remote(c, state).await,
    }
}

#[cfg(feature = "ballista")]
async fn remote(
    cluster: &Cluster,
    state: datafusion::execution::SessionState,
) -> Result<SessionContext> {
    use ballista::prelude::SessionContextExt;
    // The client connects at its first query, where a refused connection
    // would read as a failed query: try the scheduler's port first.
    let (host, port) = cluster.address()?;
    let reach = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await;
    let unreachable = match reach {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer in 10 s".to_string()),
    };
    if let Some(why) = unreachable {
        return Err(Error::Option {
            option: "ballista",
            reason: format!("cannot reach the scheduler {}: {why}", cluster.scheduler),
        });
    }
    let ctx = SessionContext::remote_with_state(&cluster.scheduler, state)
        .await
        .map_err(|e| Error::Option {
            option: "ballista",
            reason: format!("cannot reach the scheduler {}: {e}", cluster.scheduler),
        })?;
    // Ballista 55's adaptive planner re-plans a stage's tasks unevenly: a
    // stage whose tasks report different operators is never completed by
    // its scheduler (their metrics cannot be merged), and the query hangs.
    // The static distributed planner runs the same plans to the end.
    ctx.sql("SET ballista.planner.adaptive.enabled = false")
        .await?
        .collect()
        .await?;
    Ok(ctx)
}

#[cfg(not(feature = "ballista"))]
async fn remote(
    cluster: &Cluster,
    _state: datafusion::execution::SessionState,
) -> Result<SessionContext> {
    cluster.check()?;
    Err(Error::Option {
        option: "ballista",
        reason: NOT_SUPPORTED.into(),
    })
}

/// Where an analysis keeps the tables it materializes between stages: in
/// memory, or, on a cluster, as Parquet files in a directory of its own
/// under [`Cluster::scratch`], removed when the analysis is dropped.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    dir: Option<PathBuf>,
    written: AtomicU64,
}

/// Distinguishes the scratch directories of analyses in one process.
static RUNS: AtomicU64 = AtomicU64::new(0);

impl Tables {
    /// Tables for an analysis on `cluster` (files), or in process (memory).
    pub(crate) fn new(cluster: Option<&Cluster>) -> Result<Self> {
        let Some(c) = cluster else {
            return Ok(Self::default());
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = c.scratch.join(format!(
            "strata-{}-{nanos}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        // Executors resolve the path themselves: it must not depend on our
        // working directory.
        let dir = std::fs::canonicalize(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir: Some(dir),
            written: AtomicU64::new(0),
        })
    }

    /// Registers `batches` as the table `name`, replacing any table of
    /// that name.
    pub(crate) async fn register(
        &self,
        ctx: &SessionContext,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        ctx.deregister_table(name)?;
        let Some(root) = &self.dir else {
            let table = MemTable::try_new(schema, vec![batches])?;
            ctx.register_table(name, Arc::new(table))?;
            return Ok(());
        };
        // A new directory each time: a table replaced under its name must
        // not be read from a file a running query still lists.
        let n = self.written.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{name}.{n}"));
        write_parquet(&dir, schema.clone(), &batches)?;
        let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema);
        ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
        Ok(())
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            // Left behind only if the process dies first; nothing reads it.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes `batches` as one Parquet file in the new directory `dir`.
fn write_parquet(dir: &Path, schema: SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    use datafusion::parquet::arrow::ArrowWriter;
    let io = |source: std::io::Error| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = std::fs::File::create(dir.join("part-0.parquet")).map_err(io)?;
    let mut writer = ArrowWriter::try_new(file, schema, None)
        .map_err(datafusion::error::DataFusionError::from)?;
    for b in batches {
        writer
            .write(b)
            .map_err(datafusion::error::DataFusionError::from)?;
    }
    writer
        .close()
        .map_err(datafusion::error::DataFusionError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn cluster(scheduler: &str, scratch: &Path) -> Cluster {
        Cluster {
            scheduler: scheduler.into(),
            scratch: scratch.into(),
        }
    }

    #[test]
    fn scheduler_addresses_are_checked() {
        let dir = Path::new("/tmp");
        for ok in ["df://localhost:50050", "df://10.0.0.7", "df://sched:1"] {
            assert!(cluster(ok, dir).check().is_ok(), "{ok}");
        }
        assert_eq!(
            cluster("df://10.0.0.7", dir).address().unwrap(),
            ("10.0.0.7", 50050)
        );
        assert_eq!(
            cluster("df://sched:1", dir).address().unwrap(),
            ("sched", 1)
        );
        for (bad, says) in [
            ("http://localhost:50050", "expected df://host:port"),
            ("df://:50050", "names no host"),
            ("df://host:0", "is not a port"),
            ("df://host:http", "is not a port"),
            ("df://host/path", "names no host"),
        ] {
            let e = cluster(bad, dir).check().unwrap_err().to_string();
            assert!(e.starts_with("option `ballista`: "), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// Without the feature a cluster is refused by name; with it, a
    /// scheduler nothing listens for is an error naming it, at once.
    #[tokio::test]
    async fn a_cluster_this_build_cannot_reach_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = cluster(&format!("df://127.0.0.1:{port}"), dir.path());
        let e = match session(
            Some(&c),
            SessionConfig::new(),
            Arc::new(RuntimeEnv::default()),
        )
        .await
        {
            Ok(_) => panic!("a session on a scheduler nothing listens for"),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with("option `ballista`: "), "{e}");
        if SUPPORTED {
            assert!(
                e.contains(&format!("cannot reach the scheduler df://127.0.0.1:{port}")),
                "{e}"
            );
        } else {
            assert!(e.contains("--features ballista"), "{e}");
        }
    }

    /// Tables written as files read back as the same rows, a replaced
    /// table reads its new rows, and the directory goes with the tables.
    #[tokio::test]
    async fn file_tables_read_back_what_was_registered() {
        let scratch = tempfile::tempdir().unwrap();
        let c = cluster("df://localhost:50050", scratch.path());
        let tables = Tables::new(Some(&c)).unwrap();
        let ctx = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("unit", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = |units: &[&str], n: &[i64]| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(units.to_vec())),
                    Arc::new(Int64Array::from(n.to_vec())),
                ],
            )
            .unwrap()
        };
        let sum = |ctx: SessionContext| async move {
            let b = ctx
                .sql("SELECT count(*) AS c, sum(n) AS s FROM t")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let c = b[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0);
            let s = b[0].column(1).as_any().downcast_ref::<Int64Array>();
            (c, s.filter(|a| a.is_valid(0)).map(|a| a.value(0)))
        };
        let two = vec![batch(&["a", "b"], &[1, 2]), batch(&["c"], &[4])];
        tables
            .register(&ctx, "t", schema.clone(), two)
            .await
            .unwrap();
        assert_eq!(sum(ctx.clone()).await, (3, Some(7)));
        tables
            .register(&ctx, "t", schema.clone(), vec![batch(&["z"], &[10])])
            .await
            .unwrap();
        assert_eq!(sum(ctx.clone()).await, (1, Some(10)));
        // No rows at all is a table with the schema and no rows.
        tables
            .register(&ctx, "t", schema.clone(), vec![])
            .await
            .unwrap();
        assert_eq!(sum(ctx.clone()).await, (0, None));
        let dir = tables.dir.clone().unwrap();
        assert!(dir.starts_with(std::fs::canonicalize(scratch.path()).unwrap()));
        assert!(dir.join("t.0/part-0.parquet").is_file());
        drop(tables);
        assert!(!dir.exists(), "the analysis' scratch directory is removed");
    }
}
