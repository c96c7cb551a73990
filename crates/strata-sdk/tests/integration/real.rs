//! Against the real control plane (`strata_server::Server`, the server of
//! `strata serve`) on a loopback port over SQLite.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use strata_sdk::{Client, ClientBuilder, Context, Reason};
use tokio::sync::watch;

use crate::common::{eventually, users};

pub const ADMIN: &str = "test-admin-token";
const W: Duration = Duration::from_secs(10);

/// A running server with an SDK key and an ingest key.
pub struct Real {
    pub server: Option<strata_server::Server>,
    pub url: String,
    pub sdk_key: String,
    pub ingest_key: String,
    /// An experimenter of the `checkout` team, which owns the experiments.
    pub team_key: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Real {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// With `pipeline`, the event pipeline is mounted as `strata serve`
    /// mounts it (`/collect/v1/*`, a durable log under DATA_DIR/pipeline).
    pub async fn start_with(pipeline: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = strata_server::Settings {
            rate_limit: 0.0,
            sdk_rate_limit: 0.0,
            keep_alive: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            key_refresh: Duration::from_millis(200),
            ..strata_server::Settings::default()
        };
        let server = strata_app::start(strata_app::ServeConfig {
            server: strata_server::ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                store: strata_server::StoreOptions {
                    data_dir: dir.path().to_path_buf(),
                    database_url: None,
                    max_connections: 4,
                    snapshot_retention: 0,
                },
                settings,
                bootstrap_admin_token: Some(ADMIN.to_owned()),
            },
            pipeline: pipeline.then(|| strata_app::PipelineConfig::under(dir.path())),
            analysis: None,
            guardrails: None,
            portal: None,
        })
        .await
        .expect("server starts");
        let url = format!("http://{}", server.addr);
        let mut real = Self {
            server: Some(server),
            url,
            sdk_key: String::new(),
            ingest_key: String::new(),
            team_key: String::new(),
            http: reqwest::Client::new(),
            dir,
        };
        real.sdk_key = real.key("sdk").await;
        real.ingest_key = real.key("ingest").await;
        // Experiments belong to a team, and only that team runs them.
        let v = real
            .post(
                "/api/v1/keys",
                json!({"kind": "api", "role": "experimenter", "team": "checkout", "name": "checkout"}),
            )
            .await;
        real.team_key = v["token"].as_str().unwrap().to_owned();
        for m in [json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}})]
        {
            real.post("/api/v1/metrics", m).await;
        }
        real.post("/api/v1/layers", json!({"key": "checkout_layer"}))
            .await;
        real
    }

    /// POST as the platform admin (layers, metrics, keys, pipeline).
    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.post_as(ADMIN, path, body).await
    }

    /// POST as `token`.
    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn key(&self, kind: &str) -> String {
        let v = self
            .post(
                "/api/v1/keys",
                json!({"kind": kind, "team": "", "name": kind}),
            )
            .await;
        v["token"].as_str().unwrap().to_owned()
    }

    /// Creates and starts an experiment (no targeting, no layer, every
    /// surface unless overridden) and returns its flag.
    pub async fn running(&self, key: &str, overrides: Value, ramp: f64) -> String {
        let mut body = json!({
            "key": key, "name": key, "hypothesis": "it converts better", "owner_team": "checkout",
            "unit": "user_id",
            "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
            "primary_metric": "conversion", "secondary_metrics": [], "guardrails": [],
            "mde": 0.02, "planned_units": 200000, "alpha": 0.05, "sequential": "group_sequential",
            "requires_approval": false
        });
        if let (Some(o), Value::Object(over)) = (body.as_object_mut(), overrides) {
            o.extend(over);
        }
        let created = self
            .post_as(&self.team_key, "/api/v1/experiments", body)
            .await;
        self.act(key, "submit", json!({})).await;
        self.act(key, "start", json!({"ramp_percent": ramp})).await;
        created["flag"].as_str().unwrap().to_owned()
    }

    pub async fn act(&self, key: &str, action: &str, body: Value) -> Value {
        self.post_as(
            &self.team_key,
            &format!("/api/v1/experiments/{key}/{action}"),
            body,
        )
        .await
    }

    /// The snapshot SDKs get, as raw bytes.
    pub async fn snapshot(&self) -> Vec<u8> {
        let resp = self
            .http
            .get(format!("{}/sdk/v1/config", self.url))
            .bearer_auth(&self.sdk_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap().to_vec()
    }

    pub fn client(&self, url: &str) -> ClientBuilder {
        Client::builder(url, &self.sdk_key)
            .request_timeout(Duration::from_secs(2))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.stop().await;
        }
    }
}

/// A reverse proxy in front of the server whose stream can be cut: the
/// open streams end and new ones are refused, while `/sdk/v1/config`
/// still passes.
struct Proxy {
    url: String,
    cut: watch::Sender<bool>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    cut: watch::Receiver<bool>,
    http: reqwest::Client,
}

async fn proxy_config(State(p): State<ProxyState>, headers: HeaderMap) -> Response {
    let mut req = p.http.get(format!("{}/sdk/v1/config", p.upstream));
    for name in ["authorization", "if-none-match"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v.clone());
        }
    }
    let Ok(resp) = req.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let etag = resp.headers().get("etag").cloned();
    let body = resp.bytes().await.unwrap_or_default();
    let mut r = (status, body).into_response();
    if let Some(e) = etag {
        r.headers_mut().insert("etag", e);
    }
    r
}

async fn proxy_stream(State(p): State<ProxyState>, headers: HeaderMap) -> Response {
    if *p.cut.borrow() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut req = p.http.get(format!("{}/sdk/v1/stream", p.upstream));
    if let Some(v) = headers.get("authorization") {
        req = req.header("authorization", v.clone());
    }
    let Ok(resp) = req.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let chunks = futures_util::stream::unfold((resp, p.cut), |(mut resp, mut cut)| async move {
        let next = tokio::select! {
            c = resp.chunk() => c.ok().flatten(),
            _ = cut.wait_for(|c| *c) => None,
        };
        next.map(|bytes| (Ok::<_, Infallible>(bytes), (resp, cut)))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(chunks))
        .unwrap()
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let (cut, rx) = watch::channel(false);
        let state = ProxyState {
            upstream: upstream.to_owned(),
            cut: rx,
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new()
            .route("/sdk/v1/config", axum::routing::get(proxy_config))
            .route("/sdk/v1/stream", axum::routing::get(proxy_stream))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, cut }
    }
}

/// Units of `units` in the experiment of `flag` (served a variant).
fn in_experiment(c: &Client, units: &[Context], flag: &str) -> usize {
    units
        .iter()
        .filter(|u| c.variant(u, flag, "default").reason() == Reason::Assigned)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_and_kill_reach_the_sdk_through_the_stream() {
    let real = Real::start().await;
    let flag = real.running("exp_ramp", json!({}), 10.0).await;
    let c = real
        .client(&real.url)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert!(c.ready(W).await);
    assert!(eventually(W, || c.stats().stream_connected).await);
    let units = users(2000);
    let at_10 = in_experiment(&c, &units, &flag);
    assert!(
        (120..=280).contains(&at_10),
        "{at_10} of 2000 at a 10% ramp"
    );
    // Ramp to 50%: the SDK sees it without polling (the poll is an hour).
    real.act("exp_ramp", "ramp", json!({"ramp_percent": 50}))
        .await;
    assert!(
        eventually(W, || {
            let n = in_experiment(&c, &units, &flag);
            (850..=1150).contains(&n)
        })
        .await
    );
    // The client names itself on its config requests: the server counts
    // the ramp's version as applied by the one instance there is.
    let activation: Value = real
        .http
        .get(format!(
            "{}/api/v1/experiments/exp_ramp/activation",
            real.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(activation["state"], "active", "{activation}");
    assert_eq!(activation["instances"], 1, "{activation}");
    assert_eq!(activation["applied"], 1, "{activation}");
    // Ramping keeps the units already in: a ramp only adds.
    // Kill: the default within one second of the commit.
    let unit = units
        .iter()
        .find(|u| c.variant(u, &flag, "default").reason() == Reason::Assigned)
        .unwrap()
        .clone();
    real.act("exp_ramp", "kill", json!({"reason": "test"}))
        .await;
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || c
            .variant(&unit, &flag, "default")
            .is_default())
        .await,
        "kill not seen within 1 s"
    );
    // The server leaves killed experiments out of the snapshot.
    assert!(matches!(
        c.variant(&unit, &flag, "default").reason(),
        Reason::Disabled | Reason::UnknownFlag
    ));
    eprintln!("kill reached the SDK after {:?}", t.elapsed());
    real.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_stream_cut_the_poll_brings_the_kill_within_an_interval() {
    let real = Real::start().await;
    let flag = real.running("exp_cut", json!({}), 100.0).await;
    let proxy = Proxy::start(&real.url).await;
    let poll = Duration::from_millis(700);
    let c = real.client(&proxy.url).poll_interval(poll).build().unwrap();
    assert!(c.ready(W).await);
    assert!(eventually(W, || c.stats().stream_connected).await);
    proxy.cut.send_replace(true);
    assert!(eventually(W, || !c.stats().stream_connected).await);
    let unit = Context::for_user("user-1");
    assert_eq!(c.variant(&unit, &flag, "d").reason(), Reason::Assigned);
    real.act("exp_cut", "kill", json!({"reason": "test"})).await;
    // One poll interval, plus a round trip and the server's own commit.
    assert!(
        eventually(poll + Duration::from_millis(300), || c
            .variant(&unit, &flag, "d")
            .is_default())
        .await,
        "the poll did not bring the kill within one interval"
    );
    // The stream comes back once the cut heals.
    proxy.cut.send_replace(false);
    assert!(eventually(W, || c.stats().stream_connected).await);
    real.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_down_at_start_the_bootstrap_file_assigns() {
    let real = Real::start().await;
    let flag = real
        .running(
            "exp_boot",
            json!({"targeting": {"attr": "country", "op": "in", "values": ["US"]}}),
            60.0,
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootstrap.json");
    let snapshot = real.snapshot().await;
    std::fs::write(&file, &snapshot).unwrap();
    let url = real.url.clone();
    real.stop().await;

    let c = Client::builder(&url, "sdk-key")
        .bootstrap_file(&file)
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    assert!(c.ready(Duration::from_millis(50)).await);
    let compiled = strata_core::CompiledSnapshot::from_slice(&snapshot).unwrap();
    let mut assigned = 0;
    for (i, mut u) in users(3000).into_iter().enumerate() {
        u.insert("country", if i % 3 == 0 { "FR" } else { "US" });
        let expected = compiled
            .evaluate(&u, None)
            .into_iter()
            .find(|a| a.flag == flag)
            .map(|a| a.variant.to_owned());
        let got = c.variant(&u, &flag, "default");
        assert_eq!(expected.as_deref().unwrap_or("default"), got.as_str());
        assigned += usize::from(expected.is_some());
    }
    assert!((1000..1400).contains(&assigned), "{assigned}");
    assert!(eventually(W, || c.stats().config_fetch_failures > 0).await);
}
