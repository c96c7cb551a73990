//! The test harness: a real server on an ephemeral loopback port, over SQLite
//! (temp dir) or PostgreSQL (a fresh schema per test, dropped afterwards).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use strata_server::{Server, ServerConfig, Settings, StoreOptions};

pub const ADMIN: &str = "test-admin-token";

/// The token of the helpers below: an admin of team `checkout`, the team
/// owning the example experiment (admins run only their own team's
/// experiments; `ADMIN`, the bootstrap admin, has no team).
pub const TEAM_ADMIN: &str = "test-checkout-admin-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each listed test function.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::common::TestServer::start($crate::common::Db::Sqlite).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = $crate::common::TestServer::start($crate::common::Db::Postgres).await {
                        super::$name(s).await;
                    }
                }
            )*
        }
    };
}

/// A PostgreSQL schema for one test.
pub struct PgSchema {
    pub base_url: String,
    pub schema: String,
}

impl PgSchema {
    /// Creates a fresh schema, or prints SKIPPED and returns None without
    /// `STRATA_TEST_DATABASE_URL`.
    pub async fn create() -> Option<Self> {
        let Some(base_url) = std::env::var("STRATA_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!(
                "SKIPPED: STRATA_TEST_DATABASE_URL not set (PostgreSQL tests need a database)"
            );
            return None;
        };
        let mut conn = sqlx::postgres::PgConnection::connect(&base_url)
            .await
            .expect("connect to STRATA_TEST_DATABASE_URL");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Schemas of crashed runs more than an hour old.
        let stale: Vec<(String,)> = sqlx::query_as(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'strata_t_%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        for (name,) in stale {
            let ts: Option<u64> = name.split('_').nth(2).and_then(|t| t.parse().ok());
            if ts.is_some_and(|t| t + 3600 < now) {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await;
            }
        }
        let schema = format!(
            "strata_t_{now}_{}",
            strata_server::auth::random_hex(6).unwrap()
        );
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
        Some(Self { base_url, schema })
    }

    /// The URL whose connections use the schema.
    pub fn url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.base_url, self.schema
        )
    }

    pub async fn drop_schema(&self) {
        if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&self.base_url).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
                .execute(&mut conn)
                .await;
        }
    }
}

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub client: reqwest::Client,
    _tmp: Option<tempfile::TempDir>,
    pg: Option<PgSchema>,
}

pub fn settings() -> Settings {
    Settings {
        rate_limit: 0.0,
        sdk_rate_limit: 0.0,
        keep_alive: Duration::from_secs(1),
        poll_interval: Duration::from_millis(500),
        key_refresh: Duration::from_millis(200),
        ..Settings::default()
    }
}

impl TestServer {
    pub async fn start(db: Db) -> Option<Self> {
        Self::start_with(db, settings()).await
    }

    pub async fn start_with(db: Db, settings: Settings) -> Option<Self> {
        let (tmp, pg, url) = match db {
            Db::Sqlite => (Some(tempfile::tempdir().unwrap()), None, None),
            Db::Postgres => {
                let pg = PgSchema::create().await?;
                let url = pg.url();
                (None, Some(pg), Some(url))
            }
        };
        let data_dir = tmp.as_ref().map_or_else(
            || std::path::PathBuf::from("unused"),
            |t| t.path().to_path_buf(),
        );
        Some(Self::start_on(db, data_dir, url, settings, tmp, pg).await)
    }

    /// A SQLite server keeping only the latest `retention` snapshots.
    pub async fn start_with_retention(retention: u64) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Self::start_full(dir, None, settings(), Some(tmp), None, retention).await
    }

    pub async fn start_on(
        _db: Db,
        data_dir: std::path::PathBuf,
        url: Option<String>,
        settings: Settings,
        tmp: Option<tempfile::TempDir>,
        pg: Option<PgSchema>,
    ) -> Self {
        Self::start_full(data_dir, url, settings, tmp, pg, 0).await
    }

    async fn start_full(
        data_dir: std::path::PathBuf,
        url: Option<String>,
        settings: Settings,
        tmp: Option<tempfile::TempDir>,
        pg: Option<PgSchema>,
        retention: u64,
    ) -> Self {
        let server = Server::start(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: StoreOptions {
                data_dir,
                database_url: url,
                max_connections: 4,
                snapshot_retention: retention,
            },
            settings,
            bootstrap_admin_token: Some(ADMIN.to_owned()),
        })
        .await
        .expect("server starts");
        // Seeded through the store, not the API, so that the API's request
        // counters start at zero.
        let rec = strata_server::auth::new_key_record(
            strata_server::auth::KeyKind::Api,
            strata_server::auth::Role::Admin,
            "checkout",
            "checkout-admin",
            "test",
        )
        .unwrap();
        server
            .state
            .store
            .ensure_key(&rec, &strata_server::auth::hash_token(TEAM_ADMIN))
            .await
            .unwrap();
        let base = format!("http://{}", server.addr);
        Self {
            server: Some(server),
            base,
            client: reqwest::Client::new(),
            _tmp: tmp,
            pg,
        }
    }

    pub fn state(&self) -> &strata_server::AppState {
        &self.server.as_ref().unwrap().state
    }

    pub async fn finish(mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.stop().await;
        }
        if let Some(pg) = &self.pg {
            pg.drop_schema().await;
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v, headers)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.call(Method::GET, path, Some(TEAM_ADMIN), None).await;
        (s, v)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self
            .call(Method::POST, path, Some(TEAM_ADMIN), Some(&body))
            .await;
        (s, v)
    }

    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self
            .call(Method::POST, path, Some(token), Some(&body))
            .await;
        (s, v)
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self
            .call(Method::PUT, path, Some(TEAM_ADMIN), Some(&body))
            .await;
        (s, v)
    }

    /// Creates a key and returns its token.
    pub async fn key(&self, kind: &str, role: Option<&str>, team: &str, name: &str) -> String {
        let mut body = json!({"kind": kind, "team": team, "name": name});
        if let Some(r) = role {
            body["role"] = json!(r);
        }
        let (s, v) = self.post("/api/v1/keys", body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    pub async fn sdk_key(&self) -> String {
        self.key("sdk", None, "", "sdk").await
    }

    /// Metrics (one a quantile, one the mean of the same events, which a
    /// guardrail definition can watch) and the checkout layer the example
    /// experiment needs.
    pub async fn setup_registry(&self) {
        for m in [
            json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}),
            json!({"key": "revenue", "type": "sum", "filter": {"type": "purchase", "value": {"gt": 0}}}),
            json!({"key": "page_load_p95", "type": "quantile", "quantile": 0.95, "filter": {"type": "page_load"}}),
            json!({"key": "page_load_ms", "type": "mean", "filter": {"type": "page_load"}}),
        ] {
            let (s, v) = self.post("/api/v1/metrics", m).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (s, v) = self
            .post("/api/v1/layers", json!({"key": "checkout_layer"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Creates an experiment from the example body with overrides.
    pub async fn create(&self, key: &str, overrides: Value) -> Value {
        let (s, v) = self
            .post("/api/v1/experiments", experiment(key, overrides))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn act(&self, key: &str, action: &str, body: Value) -> (StatusCode, Value) {
        self.post(&format!("/api/v1/experiments/{key}/{action}"), body)
            .await
    }

    /// Creates, submits and starts an experiment.
    pub async fn running(&self, key: &str, overrides: Value, ramp: f64) -> Value {
        self.create(key, overrides).await;
        let (s, v) = self.act(key, "submit", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = self.act(key, "start", json!({"ramp_percent": ramp})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// The snapshot SDKs get.
    pub async fn sdk_snapshot(&self, sdk: &str) -> Value {
        let (s, v, _) = self
            .call(Method::GET, "/sdk/v1/config", Some(sdk), None)
            .await;
        assert_eq!(s, StatusCode::OK);
        v
    }

    pub async fn version(&self) -> u64 {
        self.get("/api/v1/config").await.1["version"]
            .as_u64()
            .unwrap()
    }
}

/// The example experiment of the issue, with overrides merged in (null removes a field).
pub fn experiment(key: &str, overrides: Value) -> Value {
    let mut body = json!({
        "key": key, "name": "New checkout", "hypothesis": "the new checkout converts better",
        "owner_team": "checkout", "unit": "user_id", "layer": "checkout_layer", "range": [0, 400],
        "surfaces": ["checkout"],
        "targeting": {"all": [{"attr": "country", "op": "in", "values": ["US", "CA"]}]},
        "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
        "primary_metric": "conversion", "secondary_metrics": ["revenue"], "guardrails": ["page_load_p95"],
        "mde": 0.02, "planned_units": 200000, "alpha": 0.05, "sequential": "group_sequential",
        "requires_approval": false
    });
    if let (Some(o), Value::Object(over)) = (body.as_object_mut(), overrides) {
        for (k, v) in over {
            if v.is_null() {
                o.remove(&k);
            } else {
                o.insert(k, v);
            }
        }
    }
    body
}

/// A Server-Sent Events reader.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    pub async fn connect(base: &str, token: &str) -> Self {
        let resp = reqwest::Client::new()
            .get(format!("{base}/sdk/v1/stream"))
            .bearer_auth(token)
            .send()
            .await
            .expect("stream");
        assert_eq!(resp.status(), StatusCode::OK);
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The version of the next `config` event, or None by the deadline.
    pub async fn next_version(&mut self, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                for line in event.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        let v: Value = serde_json::from_str(data).ok()?;
                        return v["version"].as_u64();
                    }
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}
