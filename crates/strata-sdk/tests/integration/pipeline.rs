//! Against the real ingestion service of strata-pipeline, behind a proxy
//! that loses acknowledgements: exposures and events arrive exactly once
//! despite retries — over its routes with a deduplicating in-memory sink
//! whose store fails at first, and through `strata serve` itself (its
//! durable log, compaction and Parquet files).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_pipeline::http::{Ingest, IngestConfig};
use strata_pipeline::memory::{MemorySink, StaticAuthorizer};
use strata_pipeline::Record;
use strata_sdk::{Client, Reason, SdkEvent};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{read_request, reset, respond, snapshot, users};
use crate::real::Real;

/// What the proxy does with the collector's next acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    /// Passes it on.
    Deliver,
    /// Forwards the request, then resets the connection: stored, but the
    /// acknowledgement is lost.
    LoseAck,
}

async fn proxy_one(mut s: TcpStream, upstream: String, script: Arc<Mutex<Vec<Fate>>>) {
    let Some(req) = read_request(&mut s).await else {
        return;
    };
    let mut fwd = reqwest::Client::new().post(format!("{upstream}{}", req.path));
    for h in ["authorization", "content-type", "content-encoding"] {
        if let Some(v) = req.headers.get(h) {
            fwd = fwd.header(h, v.as_str());
        }
    }
    let Ok(resp) = fwd.body(req.body).send().await else {
        return reset(s);
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.bytes().await.unwrap_or_default();
    // Only acknowledgements are lost; the collector's errors pass.
    let fate = if (200..300).contains(&status) {
        script.lock().unwrap().pop().unwrap_or(Fate::Deliver)
    } else {
        Fate::Deliver
    };
    match fate {
        Fate::LoseAck => reset(s),
        Fate::Deliver => {
            let headers: Vec<(&str, String)> = retry_after
                .into_iter()
                .map(|v| ("retry-after", v))
                .collect();
            respond(&mut s, status, &headers, &body).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposures_arrive_at_the_collector_exactly_once_despite_retries() {
    // The collector: strata-pipeline's routes on a loopback port.
    let sink = Arc::new(MemorySink::new());
    let auth = StaticAuthorizer::new().with_token("ingest-key", "key-1");
    let ingest = Ingest::new(sink.clone(), Arc::new(auth), IngestConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let app = ingest
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // The proxy: the first acknowledgements are lost (popped from the end).
    let script = Arc::new(Mutex::new(vec![
        Fate::Deliver,
        Fate::LoseAck,
        Fate::Deliver,
        Fate::LoseAck,
        Fate::LoseAck,
    ]));
    let proxy_url = lossy_proxy(upstream.clone(), script.clone()).await;
    // The store fails at first: the collector answers with an error.
    sink.set_failure(Some("disk unavailable".to_owned()));

    let duplicates = Arc::new(Mutex::new(0u64));
    let d = duplicates.clone();
    let doc = snapshot(1, &[("exp_a", "fa", "running"), ("exp_b", "fb", "running")]);
    let c = Client::builder("http://127.0.0.1:9", "sdk-key")
        .bootstrap_json(doc.to_string())
        .streaming(false)
        .poll_interval(Duration::from_secs(3600))
        .ingest_key("ingest-key")
        .collector_url(&proxy_url)
        .request_timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .batch_size(100)
        .hooks(move |e: &SdkEvent<'_>| {
            if let SdkEvent::BatchSent { duplicates, .. } = e {
                *d.lock().unwrap() += duplicates;
            }
        })
        .build()
        .unwrap();
    let units = users(200);
    for _ in 0..3 {
        for u in &units {
            for flag in ["fa", "fb"] {
                assert_eq!(c.variant(u, flag, "d").reason(), Reason::Assigned);
            }
        }
    }
    for u in &units {
        c.track(u, "purchase", Some(2.5), None);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.set_failure(None);
    assert!(c.flush().await, "{:?}", c.stats());

    let records = sink.records();
    let exposures: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Exposure(x) => Some((x.unit_id.clone(), x.experiment.clone())),
            _ => None,
        })
        .collect();
    let events = records.len() - exposures.len();
    assert_eq!(exposures.len(), 400, "each unit once per experiment");
    assert_eq!(crate::common::distinct(exposures), 400);
    assert_eq!(events, 200);
    assert!(
        script.lock().unwrap().is_empty(),
        "every lost ack was played"
    );
    assert!(
        *duplicates.lock().unwrap() > 0,
        "a batch whose ack was lost was resent and recognised"
    );
    let s = c.stats();
    assert_eq!((s.exposures_dropped, s.events_dropped), (0, 0));
}

/// A proxy in front of `upstream` that loses the acknowledgements `script`
/// says (popped from the end); returns its URL.
async fn lossy_proxy(upstream: String, script: Arc<Mutex<Vec<Fate>>>) -> String {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", proxy.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((s, _)) = proxy.accept().await {
            tokio::spawn(proxy_one(s, upstream.clone(), script.clone()));
        }
    });
    url
}

/// The (unit, experiment) pairs of the exposures and the `event_id`s of the
/// events in the Parquet files under `root`.
fn stored(root: &std::path::Path) -> (Vec<(String, String)>, Vec<String>) {
    use strata_pipeline::parquet::{list_parquet_files, read_file, string_column};
    let (mut exposures, mut events) = (Vec::new(), Vec::new());
    for kind in ["exposures", "events"] {
        for path in list_parquet_files(&root.join(format!("kind={kind}"))).unwrap() {
            let (_, batches) = read_file(&path).unwrap();
            for b in &batches {
                let units = string_column(b, "unit_id", &path).unwrap();
                if b.column_by_name("experiment").is_some() {
                    let exps = string_column(b, "experiment", &path).unwrap();
                    for i in 0..b.num_rows() {
                        exposures.push((units.value(i).to_owned(), exps.value(i).to_owned()));
                    }
                } else {
                    let ids = string_column(b, "event_id", &path).unwrap();
                    events.extend((0..b.num_rows()).map(|i| ids.value(i).to_owned()));
                }
            }
        }
    }
    (exposures, events)
}

/// The (anonymous id, user id) pairs of the aliases in the Parquet files
/// under `root`.
fn stored_aliases(root: &std::path::Path) -> Vec<(String, String)> {
    use strata_pipeline::parquet::{list_parquet_files, read_file, string_column};
    let mut out = Vec::new();
    for path in list_parquet_files(&root.join("kind=aliases")).unwrap() {
        for b in &read_file(&path).unwrap().1 {
            let anonymous = string_column(b, "anonymous_id", &path).unwrap();
            let users = string_column(b, "user_id", &path).unwrap();
            for i in 0..b.num_rows() {
                out.push((anonymous.value(i).to_owned(), users.value(i).to_owned()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_strata_serve_each_exposure_is_stored_once_in_parquet() {
    let real = Real::start_with(true).await;
    let fa = real.running("exp_a", serde_json::json!({}), 100.0).await;
    let fb = real.running("exp_b", serde_json::json!({}), 100.0).await;
    let script = Arc::new(Mutex::new(vec![
        Fate::Deliver,
        Fate::LoseAck,
        Fate::LoseAck,
        Fate::Deliver,
        Fate::LoseAck,
    ]));
    let proxy_url = lossy_proxy(real.url.clone(), script.clone()).await;
    let c = real
        .client(&real.url)
        .streaming(false)
        .ingest_key(&real.ingest_key)
        .collector_url(&proxy_url)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .batch_size(150)
        .build()
        .unwrap();
    assert!(c.ready(Duration::from_secs(10)).await);
    let units = users(300);
    let mut exposed = std::collections::HashSet::new();
    for _ in 0..3 {
        for (i, u) in units.iter().enumerate() {
            for (key, flag) in [("exp_a", &fa), ("exp_b", &fb)] {
                if c.variant(u, flag, "d").reason() == Reason::Assigned {
                    exposed.insert((format!("user-{i}"), key.to_owned()));
                }
            }
        }
    }
    assert!(exposed.len() > 500, "{} exposed", exposed.len());
    let mut tracked = std::collections::HashSet::new();
    for u in &units {
        tracked.insert(c.track(u, "purchase", Some(2.5), None).unwrap().to_string());
    }
    // Sign-ins: each sends an alias record (twice for some: a repeat).
    let mut signed_in = Vec::new();
    for i in 0..40 {
        let (device, user) = (format!("device-{i}"), format!("user-{i}"));
        c.identify(&device, &user);
        if i % 4 == 0 {
            c.identify(&device, &user);
        }
        signed_in.push((device, user));
    }
    assert!(c.flush().await, "{:?}", c.stats());
    assert!(
        script.lock().unwrap().is_empty(),
        "every lost ack was played"
    );
    // Compact everything durable now, as `strata compact` would.
    real.post("/api/v1/pipeline/compact", serde_json::json!({}))
        .await;
    let (exposures, events) = stored(&real.dir.path().join("pipeline").join("parquet"));
    assert_eq!(exposures.len(), exposed.len(), "no exposure twice");
    let got: std::collections::HashSet<_> = exposures.into_iter().collect();
    assert_eq!(got, exposed);
    assert_eq!(events.len(), tracked.len(), "no event twice");
    assert_eq!(
        events.into_iter().collect::<std::collections::HashSet<_>>(),
        tracked
    );
    signed_in.sort();
    let root = real.dir.path().join("pipeline").join("parquet");
    assert_eq!(stored_aliases(&root), signed_in, "each sign-in once");
    let s = c.stats();
    assert_eq!((s.exposures_dropped, s.events_dropped), (0, 0));
    assert_eq!(
        (s.aliases_sent, s.aliases_delivered, s.aliases_dropped),
        (50, 50, 0)
    );
    real.stop().await;
}
