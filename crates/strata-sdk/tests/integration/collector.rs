//! Shipping exposures and events to a collector that misbehaves on purpose.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use strata_sdk::{Client, ClientBuilder, Context, DropReason, Reason, SdkEvent};

use crate::common::{distinct, eventually, snapshot, users, FakeCollector, Misbehave};

const W: Duration = Duration::from_secs(20);

fn doc() -> String {
    snapshot(1, &[("exp_a", "fa", "running"), ("exp_b", "fb", "running")]).to_string()
}

/// A client with a bootstrap snapshot, no control plane, and the collector.
fn client(collector: &FakeCollector) -> ClientBuilder {
    Client::builder("http://127.0.0.1:9", "sdk-key")
        .bootstrap_json(doc())
        .streaming(false)
        .poll_interval(Duration::from_secs(3600))
        .ingest_key("ingest-key")
        .collector_url(&collector.url)
        .request_timeout(Duration::from_millis(300))
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .flush_interval(Duration::from_millis(20))
        .batch_size(50)
}

#[tokio::test]
async fn exposures_and_events_arrive_exactly_once_despite_retries() {
    let collector = FakeCollector::start(&[
        Misbehave::Status500,
        Misbehave::TooMany(1),
        Misbehave::StoreThenReset,
        Misbehave::StoreThenStall,
        Misbehave::Unavailable(1),
        Misbehave::Reset,
        Misbehave::StoreThenReset,
        Misbehave::Status500,
    ])
    .await;
    let c = client(&collector).build().unwrap();
    let units = users(200);
    let mut exposed = 0;
    // Each page is loaded three times: one exposure per unit and experiment.
    for _ in 0..3 {
        for u in &units {
            for flag in ["fa", "fb"] {
                if c.variant(u, flag, "d").reason() == Reason::Assigned {
                    exposed += 1;
                }
            }
        }
    }
    assert_eq!(exposed, 3 * 400, "everyone is in both experiments");
    let mut ids = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let props = json!({"sku": format!("sku-{i}")}).as_object().cloned();
        ids.push(c.track(u, "purchase", Some(i as f64), props).unwrap());
    }
    assert!(c.flush().await, "flush delivers everything");
    assert_eq!(collector.exposures(), 400);
    assert_eq!(collector.events(), 200);
    let st = collector.state.lock().unwrap();
    assert!(st.bad_requests.is_empty(), "{:?}", st.bad_requests);
    assert!(st.duplicates > 0, "a batch whose ack was lost was resent");
    // Stored records are the tracked ones, intact.
    let e = &st.events[&ids[7].to_string()];
    assert_eq!(
        (e["type"].as_str(), e["value"].as_f64()),
        (Some("purchase"), Some(7.0))
    );
    assert_eq!(e["properties"]["sku"], "sku-7");
    assert_eq!(e["unit_id"], "user-7");
    let x = st.exposures.values().next().unwrap();
    assert_eq!(x["variant"], x["assigned_variant"]);
    assert_eq!(x["opted_out"], false);
    assert!(x["ts"].as_str().unwrap().ends_with('Z'));
    // Retry-After was respected: the request after a 429/503 came at
    // least its delay later.
    for w in st.requests.windows(2) {
        if let Misbehave::TooMany(s) | Misbehave::Unavailable(s) = w[0].2 {
            let gap = w[1].0 - w[0].0;
            assert!(gap >= Duration::from_secs(s), "retried after {gap:?}");
        }
    }
    let s = c.stats();
    assert_eq!(s.exposures_logged, 400);
    assert_eq!(s.exposures_deduplicated, 800);
    assert_eq!((s.exposures_dropped, s.events_dropped), (0, 0));
    assert!(s.exposures_delivered >= 400 && s.events_delivered >= 200);
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_low_priority_events_first() {
    // The collector is unavailable for a long time.
    let collector = FakeCollector::start(&[Misbehave::Unavailable(60); 100]).await;
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let d = dropped.clone();
    let c = client(&collector)
        .buffer_bounds(100, Duration::from_secs(600))
        .low_priority_events(["page_view"])
        .hooks(move |e: &SdkEvent<'_>| {
            if let SdkEvent::RecordsDropped {
                kind,
                reason,
                count,
            } = e
            {
                d.lock().unwrap().push((*kind, *reason, *count));
            }
        })
        .build()
        .unwrap();
    let u = Context::for_user("user-1");
    // Wait for the first batch to be in flight, so the rest stays buffered.
    c.track(&u, "page_view", None, None);
    assert!(eventually(W, || !collector.state.lock().unwrap().requests.is_empty()).await);
    for _ in 0..60 {
        c.track(&u, "purchase", Some(1.0), None);
    }
    for _ in 0..1000 {
        c.track(&u, "page_view", None, None);
    }
    let s = c.stats();
    assert_eq!(s.buffered, 100);
    assert_eq!(s.events_dropped, 960);
    // Only page views were dropped: the purchases survived the flood, and
    // the hook heard of every drop while the flusher waited out the 503.
    assert!(
        eventually(W, || {
            dropped
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, r, _)| *r == DropReason::BufferFull)
                .map(|(_, _, n)| n)
                .sum::<u64>()
                == 960
        })
        .await
    );
    let r = c.shutdown(Duration::from_millis(100)).await;
    assert_eq!(r.dropped, 101, "the 100 buffered and the one in flight");
    assert_eq!(collector.events(), 0);
}

#[tokio::test]
async fn records_older_than_the_bound_are_dropped_and_reported() {
    let collector = FakeCollector::start(&[Misbehave::Status500; 1000]).await;
    let dropped = Arc::new(Mutex::new(0u64));
    let d = dropped.clone();
    let c = client(&collector)
        .buffer_bounds(1000, Duration::from_millis(300))
        .hooks(move |e: &SdkEvent<'_>| {
            if let SdkEvent::RecordsDropped {
                reason: DropReason::Expired,
                count,
                ..
            } = e
            {
                *d.lock().unwrap() += count;
            }
        })
        .build()
        .unwrap();
    for u in users(30) {
        c.variant(&u, "fa", "d");
    }
    assert!(eventually(W, || *dropped.lock().unwrap() == 30).await);
    assert_eq!(c.stats().exposures_dropped, 30);
    assert_eq!(collector.exposures(), 0);
}

#[tokio::test]
async fn a_refused_batch_is_dropped_not_retried() {
    let collector = FakeCollector::start(&[]).await;
    let c = client(&collector).ingest_key("wrong-key").build().unwrap();
    for u in users(10) {
        c.variant(&u, "fa", "d");
    }
    c.flush().await;
    assert!(eventually(W, || c.stats().exposures_dropped == 10).await);
    let st = collector.state.lock().unwrap();
    assert_eq!(st.requests.len(), 1, "a 400 is final");
}

#[tokio::test]
async fn without_an_ingest_key_nothing_is_sent() {
    let collector = FakeCollector::start(&[]).await;
    let c = Client::builder("http://127.0.0.1:9", "sdk-key")
        .bootstrap_json(doc())
        .streaming(false)
        .collector_url(&collector.url)
        .build()
        .unwrap();
    for u in users(10) {
        c.variant(&u, "fa", "d");
        c.track(&u, "purchase", None, None);
    }
    assert!(c.flush().await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(collector.state.lock().unwrap().requests.is_empty());
    assert_eq!(c.stats().unshipped_no_ingest_key, 20);
}

#[tokio::test]
async fn shutdown_delivers_what_is_buffered() {
    let collector = FakeCollector::start(&[Misbehave::Status500]).await;
    let c = client(&collector)
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let units = users(120);
    for u in &units {
        c.variant(u, "fb", "d");
        c.track(u, "signup", None, None);
    }
    let r = c.shutdown(Duration::from_secs(5)).await;
    assert!(r.delivered_all, "{r:?}");
    assert_eq!(collector.exposures(), 120);
    assert_eq!(collector.events(), 120);
    let ids = collector
        .state
        .lock()
        .unwrap()
        .events
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(distinct(ids), 120);
    // After shutdown nothing more is shipped, and that is counted.
    c.track(&units[0], "signup", None, None);
    assert_eq!(c.stats().events_dropped, 1);
}

/// Regression: records the collector refused only for now (shed under
/// load, `retryable`) were counted as dropped instead of sent again.
#[tokio::test]
async fn records_shed_for_now_are_sent_again_and_refused_ones_dropped() {
    let collector = FakeCollector::start(&[
        Misbehave::ShedOdd,
        Misbehave::ShedOdd,
        Misbehave::RejectFirst,
    ])
    .await;
    let c = client(&collector)
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let ids: Vec<_> = users(10)
        .iter()
        .map(|u| c.track(u, "page_view", None, None).unwrap())
        .collect();
    // 10 sent: 5 stored, 5 shed; 5 resent: 3 stored, 2 shed; 2 resent: the
    // first refused for good, the other stored.
    assert!(!c.flush().await, "one record was refused for good");
    let st = collector.state.lock().unwrap();
    assert_eq!(st.requests.len(), 3);
    assert_eq!(st.events.len(), 9);
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !st.events.contains_key(&id.to_string()))
        .collect();
    assert_eq!(missing, [&ids[3]], "the one refused on the third try");
    let s = c.stats();
    assert_eq!((s.events_delivered, s.events_dropped), (9, 1));
}

/// Regression: nested properties were sent as they were, and the collector
/// (flat string properties) rejected the whole record.
#[tokio::test]
async fn nested_properties_arrive_flattened() {
    let collector = FakeCollector::start(&[]).await;
    let c = client(&collector).build().unwrap();
    let props =
        json!({"plan": "pro", "cart": {"items": 3, "coupon": {"code": "X"}}, "tags": ["a"]});
    let id = c
        .track(
            &Context::for_user("u1"),
            "purchase",
            Some(5.0),
            props.as_object().cloned(),
        )
        .unwrap();
    assert!(c.flush().await);
    let st = collector.state.lock().unwrap();
    assert_eq!(
        st.events[&id.to_string()]["properties"],
        json!({"plan": "pro", "cart.items": 3, "cart.coupon.code": "X", "tags": "[\"a\"]"})
    );
}
