//! Sticky assignments: kept across sign-in and snapshot changes, shared
//! between instances through the real Redis, and failing open.

use std::time::Duration;

use serde_json::{json, Value};
use strata_sdk::{
    sticky::BoxFuture, Client, ClientBuilder, Context, MemoryStickyStore, Reason, RedisStickyStore,
    StickyAssignment, StickyStore, StickyStoreError,
};

/// A snapshot of one sticky experiment identified by `user_id`, falling
/// back to `device_id`, with the given weights of control and treatment.
fn snapshot(version: u64, weights: [u32; 2]) -> String {
    json!({"version": version, "experiments": [{
        "key": "exp_checkout", "flag": "f_checkout", "salt": "checkout-sticky",
        "status": "running", "unit": "user_id", "fallback_unit": "device_id", "sticky": true,
        "variants": [{"key": "control", "weight": weights[0]}, {"key": "treatment", "weight": weights[1]}]
    }]})
    .to_string()
}

fn client(doc: String) -> ClientBuilder {
    Client::builder("http://127.0.0.1:9", "sdk-key")
        .bootstrap_json(doc)
        .streaming(false)
        .poll_interval(Duration::from_secs(3600))
        .request_timeout(Duration::from_millis(500))
}

fn ctx(v: Value) -> Context {
    Context::try_from(v).unwrap()
}

/// A device and a user whose own hashes give different variants at 50/50.
fn device_and_user() -> (String, String) {
    let one = strata_core::CompiledSnapshot::from_json(&snapshot(1, [1, 1])).unwrap();
    let variant = |c: Value| one.evaluate(&ctx(c), None)[0].variant.to_owned();
    (0..1000)
        .map(|i| (format!("dev-{i}"), format!("user-{i}")))
        .find(|(d, u)| variant(json!({"device_id": d})) != variant(json!({"user_id": u})))
        .unwrap()
}

#[tokio::test]
async fn identify_keeps_the_devices_variant_for_the_user() {
    let c = client(snapshot(1, [1, 1])).build().unwrap();
    assert!(c.ready(Duration::from_secs(5)).await);
    let (device, user) = device_and_user();
    let as_device = c.variant(&ctx(json!({"device_id": device})), "f_checkout", "x");
    assert_eq!(as_device.reason(), Reason::Assigned);
    c.identify(&device, &user);
    for _ in 0..3 {
        let v = c.variant(&ctx(json!({"user_id": user})), "f_checkout", "x");
        assert_eq!(
            v.as_str(),
            as_device.as_str(),
            "the user keeps the device's variant"
        );
    }
    // Without identify, a context with both ids moves the assignment too.
    let (device2, user2) = (format!("{device}-b"), format!("{user}-b"));
    let d2 = c.variant(&ctx(json!({"device_id": device2})), "f_checkout", "x");
    let both = c.variant(
        &ctx(json!({"user_id": user2, "device_id": device2})),
        "f_checkout",
        "x",
    );
    assert_eq!(both.as_str(), d2.as_str());
    assert_eq!(c.stats().sticky_store_failures, 0);
    assert!(c.stats().sticky_cached_units >= 3);
}

#[tokio::test]
async fn a_kept_variant_survives_a_weight_change_through_the_shared_store() {
    let store = std::sync::Arc::new(MemoryStickyStore::new());
    let first = client(snapshot(1, [1, 0]))
        .sticky_store(SharedStore(store.clone()))
        .build()
        .unwrap();
    assert!(first.ready(Duration::from_secs(5)).await);
    let unit = json!({"user_id": "kept-user"});
    assert_eq!(
        first
            .variant(&ctx(unit.clone()), "f_checkout", "x")
            .as_str(),
        "control"
    );
    first.shutdown(Duration::from_secs(2)).await;
    // Another instance, on a snapshot that now sends everyone to treatment.
    let second = client(snapshot(2, [0, 1]))
        .sticky_store(SharedStore(store))
        .build()
        .unwrap();
    assert!(second.ready(Duration::from_secs(5)).await);
    assert_eq!(
        second
            .variant(&ctx(json!({"user_id": "fresh-user"})), "f_checkout", "x")
            .as_str(),
        "treatment"
    );
    assert!(second.load_sticky(&ctx(unit.clone())).await);
    assert_eq!(
        second.variant(&ctx(unit), "f_checkout", "x").as_str(),
        "control"
    );
}

/// A store shared by two clients of one test.
struct SharedStore(std::sync::Arc<MemoryStickyStore>);

impl StickyStore for SharedStore {
    fn load<'a>(
        &'a self,
        units: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<StickyAssignment>, StickyStoreError>> {
        self.0.load(units)
    }
    fn save<'a>(
        &'a self,
        e: &'a [StickyAssignment],
    ) -> BoxFuture<'a, Result<(), StickyStoreError>> {
        self.0.save(e)
    }
}

/// A store that is down.
struct DownStore;

impl StickyStore for DownStore {
    fn load<'a>(
        &'a self,
        _: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<StickyAssignment>, StickyStoreError>> {
        Box::pin(async { Err(StickyStoreError::Unavailable("connection refused".into())) })
    }
    fn save<'a>(
        &'a self,
        _: &'a [StickyAssignment],
    ) -> BoxFuture<'a, Result<(), StickyStoreError>> {
        Box::pin(async { Err(StickyStoreError::Unavailable("connection refused".into())) })
    }
}

#[tokio::test]
async fn a_store_that_is_down_changes_nothing_but_a_counter() {
    let c = client(snapshot(1, [1, 1]))
        .sticky_store(DownStore)
        .build()
        .unwrap();
    assert!(c.ready(Duration::from_secs(5)).await);
    let unit = ctx(json!({"user_id": "u-down"}));
    assert!(!c.load_sticky(&unit).await);
    let v = c.variant(&unit, "f_checkout", "x");
    assert_eq!(v.reason(), Reason::Assigned);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.stats().sticky_store_failures < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.stats().sticky_store_failures, 2, "the load and the save");
    // The process still keeps what it assigned.
    assert_eq!(c.variant(&unit, "f_checkout", "x").as_str(), v.as_str());
}

#[tokio::test]
async fn known_bots_get_the_default_and_no_exposure() {
    let c = client(snapshot(1, [1, 1])).build().unwrap();
    assert!(c.ready(Duration::from_secs(5)).await);
    let bot = ctx(
        json!({"user_id": "u1", "user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}),
    );
    let v = c.variant(&bot, "f_checkout", "default");
    assert_eq!((v.as_str(), v.reason()), ("default", Reason::Bot));
    let human = ctx(
        json!({"user_id": "u1", "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"}),
    );
    assert_eq!(
        c.variant(&human, "f_checkout", "default").reason(),
        Reason::Assigned
    );
    // One exposure, the human's (this client ships nothing: no ingest key).
    let s = c.stats();
    assert_eq!((s.bots_served_default, s.unshipped_no_ingest_key), (1, 1));
}

/// `STRATA_TEST_REDIS_URL`, or a loud skip.
fn redis_url() -> Option<String> {
    let url = std::env::var("STRATA_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!(
            "SKIPPED: STRATA_TEST_REDIS_URL not set (the Redis sticky store test needs Redis)"
        );
    }
    url
}

#[tokio::test]
async fn instances_share_sticky_assignments_through_redis() {
    let Some(url) = redis_url() else { return };
    let prefix = format!("strata-test:{}:", uuid::Uuid::now_v7());
    let connect = || RedisStickyStore::connect(&url, &prefix);
    let (device, user) = device_and_user();

    let a = client(snapshot(1, [1, 1]))
        .sticky_store(connect().await.unwrap())
        .build()
        .unwrap();
    assert!(a.ready(Duration::from_secs(5)).await);
    let kept = a
        .variant(&ctx(json!({"device_id": device})), "f_checkout", "x")
        .as_str()
        .to_owned();
    a.identify(&device, &user);
    // The saver writes in the background: wait until Redis has both.
    let store = connect().await.unwrap();
    let units = [
        ("device_id".to_owned(), device.clone()),
        ("user_id".to_owned(), user.clone()),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut found = Vec::new();
    while found.len() < 2 && std::time::Instant::now() < deadline {
        found = store.load(&units).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found
        .iter()
        .all(|e| e.variant == kept && e.experiment == "exp_checkout"));

    // Another instance, whose snapshot now sends everyone to the other
    // variant, serves the user what the device was assigned.
    let other = if kept == "control" { [0, 1] } else { [1, 0] };
    let b = client(snapshot(2, other))
        .sticky_store(connect().await.unwrap())
        .build()
        .unwrap();
    assert!(b.ready(Duration::from_secs(5)).await);
    let signed_in = ctx(json!({"user_id": user}));
    assert_ne!(
        b.variant(&ctx(json!({"user_id": "someone-else"})), "f_checkout", "x")
            .as_str(),
        kept
    );
    assert!(b.load_sticky(&signed_in).await);
    assert_eq!(b.variant(&signed_in, "f_checkout", "x").as_str(), kept);
    // The first assignment kept wins: a second save changes nothing.
    store
        .save(&[StickyAssignment {
            unit_attr: "user_id".into(),
            unit_id: user.clone(),
            experiment: "exp_checkout".into(),
            variant: "someone else's".into(),
        }])
        .await
        .unwrap();
    let again = store.load(&units[1..]).await.unwrap();
    assert_eq!(again[0].variant, kept);
    assert_eq!(b.stats().sticky_store_failures, 0);
}

#[tokio::test]
async fn an_unreachable_redis_fails_to_connect_with_a_message() {
    let Err(e) = RedisStickyStore::connect("redis://127.0.0.1:9/", "x:").await else {
        panic!("connected to a closed port");
    };
    assert!(e.to_string().starts_with("sticky store unavailable"), "{e}");
}
