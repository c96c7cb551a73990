//! Fail open against a control plane that misbehaves on purpose: the
//! client always answers, keeps the last good snapshot, and recovers when
//! the server does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use strata_sdk::{Client, ClientBuilder, Context, Reason, SdkEvent};

use crate::common::{eventually, snapshot, ConfigMode, FakeServer, StreamMode};

const W: Duration = Duration::from_secs(5);

fn base(server: &FakeServer) -> ClientBuilder {
    Client::builder(&server.url, "sdk-key")
        .poll_interval(Duration::from_millis(100))
        .request_timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

fn v1() -> serde_json::Value {
    snapshot(1, &[("exp_a", "fa", "running")])
}

/// A unit in `exp_a` (its variant is never the default below).
fn unit() -> Context {
    Context::for_user("user-1")
}

#[tokio::test]
async fn no_config_at_all_serves_defaults() {
    // Nothing listens on the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let c = Client::builder(&url, "k")
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    assert!(!c.ready(Duration::from_millis(300)).await);
    let v = c.variant(&unit(), "fa", "fallback");
    assert_eq!((v.as_str(), v.reason()), ("fallback", Reason::NoConfig));
    assert!(c.assignments(&unit(), None).is_empty());
    assert!(c.stats().config_fetch_failures > 0);
}

#[tokio::test]
async fn a_stalled_server_times_out_and_the_client_recovers() {
    let server = FakeServer::start(v1()).await;
    server.set_mode(ConfigMode::Stall);
    server.set_stream(StreamMode::Refuse);
    let c = base(&server).build().unwrap();
    assert!(!c.ready(Duration::from_millis(500)).await);
    assert_eq!(c.variant(&unit(), "fa", "d").reason(), Reason::NoConfig);
    server.set_mode(ConfigMode::Normal);
    assert!(c.ready(W).await, "the next poll after the timeout loads it");
    assert!(!c.variant(&unit(), "fa", "d").is_default());
}

#[tokio::test]
async fn resets_and_errors_are_survived() {
    for mode in [
        ConfigMode::Reset,
        ConfigMode::Status(500),
        ConfigMode::Status(401),
    ] {
        let server = FakeServer::start(v1()).await;
        server.set_mode(mode.clone());
        server.set_stream(StreamMode::Refuse);
        let c = base(&server).build().unwrap();
        assert!(
            eventually(W, || c.stats().config_fetch_failures >= 2).await,
            "{mode:?}"
        );
        assert_eq!(c.variant(&unit(), "fa", "d"), "d", "{mode:?}");
        server.set_mode(ConfigMode::Normal);
        assert!(c.ready(W).await, "{mode:?}");
    }
}

#[tokio::test]
async fn bad_snapshots_are_rejected_and_the_last_good_one_kept() {
    let bad_bodies = vec![
        ConfigMode::TruncatedJson,
        ConfigMode::TruncatedTransfer,
        ConfigMode::Body(b"<html>502 Bad Gateway</html>".to_vec()),
        ConfigMode::Body(b"null".to_vec()),
        // Valid JSON, invalid snapshot: a zero total weight.
        ConfigMode::Body(
            json!({"version": 9, "experiments": [{"key": "e", "flag": "f", "salt": "s",
                "status": "running", "variants": [{"key": "a", "weight": 0}]}]})
            .to_string()
            .into_bytes(),
        ),
        // An older version than the one loaded.
        ConfigMode::Body(snapshot(0, &[]).to_string().into_bytes()),
        ConfigMode::Huge(3 << 20),
    ];
    for mode in bad_bodies {
        let server = FakeServer::start(v1()).await;
        server.set_stream(StreamMode::Refuse);
        let rejected = Arc::new(Mutex::new(Vec::<String>::new()));
        let r = rejected.clone();
        let c = base(&server)
            .max_config_bytes(1 << 20)
            .hooks(move |e: &SdkEvent<'_>| {
                if let SdkEvent::ConfigRejected { reason, .. } = e {
                    r.lock().unwrap().push(reason.to_string());
                }
            })
            .build()
            .unwrap();
        assert!(c.ready(W).await);
        let before = c.variant(&unit(), "fa", "d").to_string();
        assert_ne!(before, "d");
        // The server now publishes version 2 but serves something broken.
        server.set_mode(mode.clone());
        server.publish(snapshot(2, &[("exp_a", "fa", "killed")]));
        let hits = server.config_hits();
        assert!(eventually(W, || server.config_hits() >= hits + 3).await);
        assert_eq!(c.version(), 1, "{mode:?}");
        assert_eq!(c.variant(&unit(), "fa", "d").as_str(), before, "{mode:?}");
        match mode {
            ConfigMode::TruncatedTransfer => assert!(c.stats().config_fetch_failures > 0),
            ConfigMode::Body(ref b) if b.starts_with(b"{\"experiments\":[],\"version\":0") => {}
            _ => assert!(!rejected.lock().unwrap().is_empty(), "{mode:?}"),
        }
        if let ConfigMode::Huge(_) = mode {
            assert!(rejected.lock().unwrap()[0].contains("limit"));
        }
        // Healed: version 2 (the kill) arrives.
        server.set_mode(ConfigMode::Normal);
        assert!(eventually(W, || c.version() == 2).await, "{mode:?}");
        assert_eq!(c.variant(&unit(), "fa", "d").reason(), Reason::Disabled);
    }
}

#[tokio::test]
async fn an_older_version_never_replaces_a_newer_one() {
    let server = FakeServer::start(snapshot(5, &[("exp_a", "fa", "running")])).await;
    server.set_stream(StreamMode::Refuse);
    let c = base(&server).build().unwrap();
    assert!(c.ready(W).await);
    assert_eq!(c.version(), 5);
    server.set_mode(ConfigMode::Body(
        snapshot(3, &[("exp_a", "fa", "killed")])
            .to_string()
            .into_bytes(),
    ));
    let hits = server.config_hits();
    assert!(eventually(W, || server.config_hits() >= hits + 3).await);
    assert_eq!(c.version(), 5);
    assert_eq!(c.variant(&unit(), "fa", "d").reason(), Reason::Assigned);
}

#[tokio::test]
async fn a_stream_event_brings_a_kill_within_a_second() {
    let server = FakeServer::start(v1()).await;
    let c = base(&server)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert!(c.ready(W).await);
    assert!(eventually(W, || c.stats().stream_connected).await);
    assert_eq!(c.variant(&unit(), "fa", "d").reason(), Reason::Assigned);
    let t = Instant::now();
    server.publish(snapshot(2, &[("exp_a", "fa", "killed")]));
    assert!(
        eventually(Duration::from_secs(1), || c
            .variant(&unit(), "fa", "d")
            .is_default())
        .await,
        "the kill did not arrive within 1 s"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn without_a_stream_the_poll_brings_the_kill_within_an_interval() {
    let server = FakeServer::start(v1()).await;
    server.set_stream(StreamMode::Refuse);
    let c = base(&server)
        .poll_interval(Duration::from_millis(400))
        .build()
        .unwrap();
    assert!(c.ready(W).await);
    server.publish(snapshot(2, &[("exp_a", "fa", "killed")]));
    // One interval, plus the round trip.
    assert!(
        eventually(Duration::from_millis(600), || c
            .variant(&unit(), "fa", "d")
            .is_default())
        .await
    );
}

#[tokio::test]
async fn a_flooding_stream_does_not_flood_the_server() {
    let server = FakeServer::start(v1()).await;
    server.set_stream(StreamMode::Flood(20_000));
    let c = base(&server)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert!(c.ready(W).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Each stream-triggered fetch is at least 100 ms after the previous
    // one; reconnects of the flood add a few.
    let hits = server.config_hits();
    assert!(hits <= 40, "{hits} fetches in a second");
    assert_eq!(c.variant(&unit(), "fa", "d").reason(), Reason::Assigned);
}

#[tokio::test]
async fn the_last_known_good_cache_serves_when_the_server_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("strata-cache.json");
    let server = FakeServer::start(v1()).await;
    server.set_stream(StreamMode::Refuse);
    let expected = {
        let c = base(&server).cache_path(&cache).build().unwrap();
        assert!(c.ready(W).await);
        assert!(eventually(W, || cache.exists()).await);
        c.variant(&unit(), "fa", "d").to_string()
    };
    server.set_mode(ConfigMode::Status(503));
    let c = base(&server).cache_path(&cache).build().unwrap();
    assert!(c.ready(Duration::from_millis(10)).await, "loaded at build");
    assert_eq!(c.variant(&unit(), "fa", "d").as_str(), expected);
    // A corrupt cache is rejected, not fatal.
    std::fs::write(&cache, b"{\"version\": 1, \"experi").unwrap();
    let c = base(&server).cache_path(&cache).build().unwrap();
    assert!(!c.ready(Duration::from_millis(200)).await);
    assert_eq!(c.stats().configs_rejected, 1);
    assert_eq!(c.variant(&unit(), "fa", "d"), "d");
}
