//! Ingestion through NATS JetStream from the binary: an ingest node
//! (`--role control,ingest`) and a jobs node (`--role jobs`) on one
//! PostgreSQL and one stream of the machine's NATS server. Four clients send
//! to the ingest node while both nodes are killed with SIGKILL in turn —
//! the jobs node while it compacts the stream — and restarted; each client
//! resends a batch until it is acknowledged. After the jobs node compacts
//! what is left, every acknowledged record is in its Parquet exactly once,
//! nothing never sent is, the stream holds no compacted message, and a
//! batch sent again is a duplicate.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::crash::{Rng, Shared, SEED};
use crate::leader::fresh_database;
use crate::serve::{call, now_ms, started_experiment_in, token, Served, ADMIN};

/// The NATS server of `STRATA_TEST_NATS_URL`, or none (said loudly).
fn nats_url() -> Option<String> {
    let url = std::env::var("STRATA_TEST_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!(
            "SKIPPED: STRATA_TEST_NATS_URL not set; the JetStream ingestion tests did not run"
        );
    }
    url
}

/// A stream of its own, deleted when this is dropped.
struct TestStream {
    url: String,
    name: String,
    prefix: String,
}

impl TestStream {
    fn new(url: &str) -> Self {
        let unique = format!("{}_{}", std::process::id(), now_ms());
        Self {
            url: url.to_owned(),
            name: format!("STRATA_BIN_{unique}"),
            prefix: format!("strata_bin_{unique}"),
        }
    }

    fn args<'a>(&'a self, db: &'a str) -> Vec<&'a str> {
        vec![
            "--database-url",
            db,
            "--ingest",
            &self.url,
            "--nats-stream",
            &self.name,
            "--nats-subject-prefix",
            &self.prefix,
        ]
    }

    async fn messages(&self) -> u64 {
        let client = async_nats::connect(&self.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(&self.name).await.unwrap();
        stream.get_info().await.unwrap().state.messages
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Its own runtime: drop may run inside or outside the test's.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) = async_nats::connect(&url).await {
                    let _ = async_nats::jetstream::new(c).delete_stream(&name).await;
                }
            });
        })
        .join();
    }
}

async fn metric(c: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// The records the node at `base` has compacted from the stream.
async fn compacted(c: &reqwest::Client, base: &str) -> f64 {
    metric(c, base, "strata_jetstream_records_compacted_total")
        .await
        .unwrap_or(0.0)
}

/// `POST /api/v1/pipeline/compact` on the node at `base`, which must
/// answer 200.
async fn compact_on(c: &reqwest::Client, base: &str) {
    let (s, v) = call(
        c,
        Method::POST,
        format!("{base}/api/v1/pipeline/compact"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Waits until the node at `base` compacts the stream (it holds the jobs
/// lease and has opened the compactor).
async fn until_compacting(c: &reqwest::Client, base: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while metric(c, base, "strata_jetstream_compacting").await != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the jobs node never compacted the stream"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_killed_ingest_and_compaction_nodes_exactly_once() {
    let (Some(fresh), Some(url)) = (fresh_database(), nats_url()) else {
        return;
    };
    let db = fresh.url.clone();
    let stream = TestStream::new(&url);
    let tmp = tempfile::tempdir().unwrap();
    let (ingest_dir, jobs_dir) = (tmp.path().join("ingest"), tmp.path().join("jobs"));
    let common = stream.args(&db);
    let ingest_args = [common.as_slice(), &["--role", "control,ingest"]].concat();
    let jobs_args = [
        common.as_slice(),
        &["--role", "jobs", "--no-analysis", "--no-guardrails"],
    ]
    .concat();
    let start_ingest = || Served::start_with_in_runtime(&ingest_dir, &ingest_args);
    let start_jobs = || Served::start_with_in_runtime(&jobs_dir, &jobs_args);
    let mut ingest = start_ingest();
    let mut jobs = start_jobs();
    let c = reqwest::Client::new();
    let key = token(
        &ingest_dir,
        &["--database-url", &db, "--kind", "ingest", "--name", "js"],
    );
    started_experiment_in(
        &ingest.base,
        &ingest_dir,
        &["--database-url", &db],
        "exp_crash",
        &["control", "treatment"],
    )
    .await;
    // The ingest node has no pipeline operations to offer over JetStream
    // but collection; the jobs node collects nothing.
    let (s, _) = call(
        &c,
        Method::POST,
        format!("{}/collect/v1/events", jobs.base),
        &key,
        Some(json!([])),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let shared = Shared::new(&ingest.base, key.clone());
    let clients = shared.clients();
    let mut rng = Rng(SEED ^ 0x15);
    const CYCLES: usize = 3;
    for _ in 0..CYCLES {
        // The jobs node, while it compacts under load.
        until_compacting(&c, &jobs.base).await;
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        tokio::task::block_in_place(|| jobs.kill());
        jobs = start_jobs();
        // The ingest node, while the stream has no compactor.
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1000))).await;
        tokio::task::block_in_place(|| ingest.kill());
        ingest = start_ingest();
        *shared.base.lock().unwrap() = ingest.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.stop(clients).await;

    // The last records are compacted on the jobs node.
    until_compacting(&c, &jobs.base).await;
    compact_on(&c, &jobs.base).await;
    assert!(
        compacted(&c, &jobs.base).await > 0.0,
        "the jobs node compacted nothing"
    );
    // Each ingest node's SIGKILL interrupted the clients.
    let root = jobs_dir.join("pipeline/parquet");
    shared.verify(&root, CYCLES);
    assert_eq!(
        stream.messages().await,
        0,
        "compacted messages are purged from the stream"
    );

    // A retry after the purge is still a duplicate (JetStream's window).
    let now = now_ms();
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"event_id": format!("again-{i}"), "unit_id": format!("again-unit-{i}"), "type": "purchase", "ts": now}))
        .collect();
    let url = format!("{}/collect/v1/events", ingest.base);
    let (s, v) = call(&c, Method::POST, url.clone(), &key, Some(json!(batch))).await;
    assert_eq!(
        (s, v["accepted"].as_u64()),
        (StatusCode::OK, Some(20)),
        "{v}"
    );
    compact_on(&c, &jobs.base).await;
    let again = |events: Vec<String>| events.iter().filter(|e| e.starts_with("again-")).count();
    assert_eq!(again(crate::crash::stored(&root).0), 20);
    assert_eq!(stream.messages().await, 0);
    let (s, v) = call(&c, Method::POST, url, &key, Some(json!(batch))).await;
    assert_eq!(
        (s, v["duplicates"].as_u64()),
        (StatusCode::OK, Some(20)),
        "{v}"
    );
    compact_on(&c, &jobs.base).await;
    assert_eq!(again(crate::crash::stored(&root).0), 20, "stored once");

    // Deletion and compaction are the compacting node's: the ingest node
    // refuses them, naming why.
    let (s, v) = call(
        &c,
        Method::DELETE,
        format!("{}/api/v1/units/again-unit-1/data", ingest.base),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("jobs leader"),
        "{v}"
    );
    let (s, v) = call(
        &c,
        Method::DELETE,
        format!("{}/api/v1/units/again-unit-1/data", jobs.base),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["events_removed"].as_u64(), Some(1), "{v}");
    assert_eq!(again(crate::crash::stored(&root).0), 19);
    tokio::task::block_in_place(|| {
        jobs.terminate();
        ingest.terminate();
    });
}

/// Fail-over of the compacting node: an ingest node and two jobs nodes
/// storing the tree at `storage` (their environment `env`), clients
/// sending all along. One jobs node compacts, never both; once it has
/// compacted it is killed (`grace` into its next batches); the other takes
/// the jobs lease over and compacts, the clients stop and it compacts what
/// is left. Returns the clients' ledger, to be checked against the tree.
async fn compacting_node_killed(
    storage: &str,
    env: &[(&str, &str)],
    grace: Duration,
) -> Option<std::sync::Arc<Shared>> {
    let (Some(fresh), Some(url)) = (fresh_database(), nats_url()) else {
        return None;
    };
    let db = fresh.url.clone();
    let stream = TestStream::new(&url);
    let tmp = tempfile::tempdir().unwrap();
    let common = stream.args(&db);
    let ingest_dir = tmp.path().join("ingest");
    let ingest_args = [common.as_slice(), &["--role", "control,ingest"]].concat();
    let jobs_args = [
        common.as_slice(),
        &[
            "--role",
            "jobs",
            "--no-analysis",
            "--no-guardrails",
            "--storage",
            storage,
        ],
    ]
    .concat();
    let ingest = Served::start_with_in_runtime(&ingest_dir, &ingest_args);
    let mut jobs: Vec<Option<Served>> = (0..2)
        .map(|i| {
            let dir = tmp.path().join(format!("jobs-{i}"));
            Some(tokio::task::block_in_place(|| {
                Served::start_with_env(&dir, &jobs_args, env)
            }))
        })
        .collect();
    let bases: Vec<String> = jobs
        .iter()
        .map(|j| j.as_ref().unwrap().base.clone())
        .collect();
    let c = reqwest::Client::new();
    let key = token(&ingest_dir, &["--database-url", &db, "--kind", "ingest"]);
    started_experiment_in(
        &ingest.base,
        &ingest_dir,
        &["--database-url", &db],
        "exp_crash",
        &["control", "treatment"],
    )
    .await;
    let shared = Shared::new(&ingest.base, key);
    let clients = shared.clients();

    // One leader compacts; the other does not.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let leader = loop {
        let mut compacting = Vec::new();
        for (i, b) in bases.iter().enumerate() {
            if metric(&c, b, "strata_jetstream_compacting").await == Some(1.0) {
                compacting.push(i);
            }
        }
        assert!(compacting.len() <= 1, "two nodes compact: {compacting:?}");
        if let [i] = compacting[..] {
            break i;
        }
        assert!(std::time::Instant::now() < deadline, "no node compacts");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let other = 1 - leader;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while compacted(&c, &bases[leader]).await == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader compacted nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        metric(&c, &bases[other], "strata_jetstream_compacting").await,
        Some(0.0)
    );
    tokio::time::sleep(grace).await;
    tokio::task::block_in_place(|| jobs[leader].take().unwrap().kill());

    // The other takes over within the lease's time and goes on.
    until_compacting(&c, &bases[other]).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    shared.stop(clients).await;
    compact_on(&c, &bases[other]).await;
    assert!(
        compacted(&c, &bases[other]).await > 0.0,
        "the new leader compacted nothing"
    );
    tokio::task::block_in_place(|| {
        jobs[other].take().unwrap().terminate();
        ingest.terminate();
    });
    Some(shared)
}

/// Two jobs nodes share the Parquet tree (`--storage file://…`, a volume
/// both mount): the leader compacts into it, the other does not; when the
/// leader is killed the other takes the jobs lease and the tree's writer
/// lock over and compacts into the same tree, so the tree holds every
/// acknowledged record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_jobs_node_compacts_into_the_shared_tree_when_the_leader_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("shared-parquet");
    let storage = format!("file://{}", tree.display());
    if let Some(shared) = compacting_node_killed(&storage, &[], Duration::ZERO).await {
        shared.verify(&tree, 0);
    }
}

/// A local S3-compatible endpoint (moto's server) on a free loopback port,
/// stopped when this is dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Moto {
    /// Starts it when `STRATA_TEST_S3=moto` (`.ci/run` installs moto and
    /// sets it), else none, said loudly.
    fn start() -> Option<Self> {
        if std::env::var("STRATA_TEST_S3").ok().as_deref() != Some("moto") {
            eprintln!("SKIPPED: STRATA_TEST_S3 is not `moto`; the object-store tests did not run");
            return None;
        }
        let port = crate::serve::free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto's server (pip install 'moto[server]')");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Self { child, endpoint })
    }

    fn env(&self) -> [(&'static str, &str); 5] {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", &self.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ]
    }

    fn store(&self, bucket: &str) -> std::sync::Arc<dyn object_store::ObjectStore> {
        std::sync::Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_region("us-east-1")
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_bucket_name(bucket)
                .build()
                .unwrap(),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Parquet tree on an S3-compatible store (`--storage s3://…`): two
/// jobs nodes with data directories of their own. The leader compacts
/// under load, pushing each batch to the bucket before acknowledging it,
/// and is killed in the middle of it; the other pulls the tree from the
/// bucket, finishes what the dead one left and goes on. The bucket then
/// holds every acknowledged record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parquet_tree_on_an_s3_store_survives_a_compacting_node_killed_mid_batch() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let bucket = "strata-test";
    let s = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .unwrap()
        .status();
    assert!(s.is_success(), "create bucket: {s}");
    let storage = format!("s3://{bucket}/events/tree");
    let Some(shared) =
        compacting_node_killed(&storage, &moto.env(), Duration::from_millis(700)).await
    else {
        return;
    };
    // What the bucket holds, read back through a fresh working copy.
    let copy = tempfile::tempdir().unwrap();
    let mirror =
        strata_pipeline::Mirror::new(moto.store(bucket), "events/tree", &storage, copy.path());
    let pulled = mirror.pull().await.unwrap();
    assert!(pulled.copied > 0, "{pulled:?}");
    shared.verify(copy.path(), 0);
}
