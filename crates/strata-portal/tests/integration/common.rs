//! The test harness: a real server (control plane and portal) on an
//! ephemeral loopback port over SQLite in a temp dir, tokens of several
//! roles and teams, and a browser-like HTTP client that keeps its cookies
//! by hand (so the tests see every `Set-Cookie`).

use std::sync::Arc;

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use strata_model::results::Results;
use strata_portal::{Portal, PortalSettings};
use strata_server::{Server, ServerConfig, Settings, StoreOptions};

/// The bootstrap admin (no team).
pub const ADMIN: &str = "portal-test-admin";

/// A running server with the portal and tokens of each kind of person.
pub struct Env {
    pub server: Option<Server>,
    pub base: String,
    pub portal: Portal,
    /// Admin of team `checkout`.
    pub checkout_admin: String,
    /// Experimenter of team `checkout`.
    pub checkout_exp: String,
    /// Experimenter of team `search`.
    pub search_exp: String,
    /// Viewer of team `checkout`.
    pub viewer: String,
    /// Key id of `checkout_exp`.
    pub checkout_exp_id: String,
    _tmp: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(PortalSettings::default()).await
    }

    pub async fn start_with(settings: PortalSettings) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let prepared = Server::prepare(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: StoreOptions {
                data_dir: tmp.path().to_path_buf(),
                database_url: None,
                max_connections: 4,
                snapshot_retention: 0,
            },
            settings: Settings {
                rate_limit: 0.0,
                sdk_rate_limit: 0.0,
                ..Settings::default()
            },
            bootstrap_admin_token: Some(ADMIN.to_owned()),
        })
        .await
        .expect("server prepares");
        let portal = Portal::new(prepared.state().clone(), settings);
        let server = prepared
            .mount(Arc::new(portal.clone()))
            .serve()
            .await
            .expect("server starts");
        let base = format!("http://{}", server.addr);
        let mut env = Self {
            server: Some(server),
            base,
            portal,
            checkout_admin: String::new(),
            checkout_exp: String::new(),
            search_exp: String::new(),
            viewer: String::new(),
            checkout_exp_id: String::new(),
            _tmp: tmp,
        };
        env.checkout_admin = env.key("admin", "checkout").await.0;
        let (t, id) = env.key("experimenter", "checkout").await;
        env.checkout_exp = t;
        env.checkout_exp_id = id;
        env.search_exp = env.key("experimenter", "search").await.0;
        env.viewer = env.key("viewer", "checkout").await.0;
        env
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.unwrap();
        }
    }

    /// Creates an API key; returns its token and id.
    pub async fn key(&self, role: &str, team: &str) -> (String, String) {
        let (s, v) = self
            .api(
                Method::POST,
                "/api/v1/keys",
                ADMIN,
                Some(json!({"kind": "api", "role": role, "team": team, "name": format!("{team}-{role}")})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["token"].as_str().unwrap().to_owned(),
            v["id"]
                .as_str()
                .or(v["record"]["id"].as_str())
                .unwrap()
                .to_owned(),
        )
    }

    /// A JSON API call.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The metrics and layer the example experiments use.
    pub async fn setup_registry(&self) {
        for m in [
            json!({"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}}),
            json!({"key": "revenue", "type": "sum", "filter": {"type": "purchase"}}),
        ] {
            let (s, v) = self
                .api(
                    Method::POST,
                    "/api/v1/metrics",
                    &self.checkout_admin,
                    Some(m),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (s, v) = self
            .api(
                Method::POST,
                "/api/v1/layers",
                &self.checkout_admin,
                Some(json!({"key": "checkout_layer"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Creates a draft of team `team` through the API as `token`.
    pub async fn create(&self, token: &str, key: &str, team: &str, overrides: Value) -> Value {
        let mut body = json!({
            "key": key, "name": format!("Experiment {key}"),
            "hypothesis": "the new checkout converts better",
            "owner_team": team, "unit": "user_id", "layer": "checkout_layer", "size": 10,
            "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
            "primary_metric": "conversion", "secondary_metrics": ["revenue"],
            "mde": 0.02, "planned_units": 20000, "alpha": 0.05, "sequential": "group_sequential",
            "requires_approval": false
        });
        for (k, v) in overrides.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = self
            .api(Method::POST, "/api/v1/experiments", token, Some(body))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Runs a lifecycle action through the API.
    pub async fn act(&self, token: &str, key: &str, action: &str, body: Value) -> Value {
        let (s, v) = self
            .api(
                Method::POST,
                &format!("/api/v1/experiments/{key}/{action}"),
                token,
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{action}: {v}");
        v
    }

    /// Publishes `doc` as a look of `key`.
    pub async fn publish(&self, key: &str, doc: &Results) {
        let (s, v) = self
            .api(
                Method::POST,
                &format!("/api/v1/experiments/{key}/results"),
                &self.checkout_admin,
                Some(serde_json::to_value(doc).unwrap()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// A signed-out browser.
    pub fn browser(&self) -> Browser {
        Browser {
            base: self.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
        }
    }

    /// A browser signed in with `token`.
    pub async fn signed_in(&self, token: &str) -> Browser {
        let mut b = self.browser();
        let r = b.sign_in(token).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        b
    }
}

/// A page as the browser got it.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

/// An HTTP client that keeps cookies like a browser (by hand).
pub struct Browser {
    pub base: String,
    client: reqwest::Client,
    pub cookies: Vec<(String, String)>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for c in headers.get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !attrs.contains("Max-Age=0") {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
    }

    async fn send(&mut self, rb: reqwest::RequestBuilder) -> Page {
        let rb = if self.cookies.is_empty() {
            rb
        } else {
            rb.header(COOKIE, self.cookie_header())
        };
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        self.keep(&headers);
        let body = resp.text().await.unwrap();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let rb = self.client.get(format!("{}{path}", self.base));
        self.send(rb).await
    }

    /// Posts a form (fields as given: a test adds `csrf` itself).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        self.send(rb).await
    }

    /// Signs in through the form.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let form = self.get("/login").await;
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.csrf();
        self.post("/login", &[("token", token), ("csrf", &csrf)])
            .await
    }

    /// The CSRF token of this session (read off a page).
    pub async fn csrf(&mut self) -> String {
        self.get("/experiments").await.csrf()
    }
}

/// A results document of experiment `key` (variants control and treatment,
/// primary `conversion`, secondary `revenue`) as the analysis writes it:
/// `lift` is the primary relative effect, `look` the look's number (its
/// information fraction is `look / 4` of a group-sequential plan).
pub fn results(key: &str, as_of: &str, start: &str, lift: f64, look: u32, srm: bool) -> Results {
    let n = 1000 * u64::from(look);
    let base = 0.10;
    let delta = base * lift;
    let se = 0.3 / (n as f64).sqrt() * base.sqrt();
    let z = delta / se;
    let boundary = 2.0 + 1.0 / f64::from(look);
    let significant = z.abs() >= boundary;
    let effect = |metric: &str, d: f64| {
        json!({
            "variant": "treatment", "control": "control", "delta": d,
            "ci": [d - 1.96 * se, d + 1.96 * se], "relative": d / base,
            "relative_ci": [(d - 1.96 * se) / base, (d + 1.96 * se) / base],
            "p_value": 0.01, "adjusted_p_value": if metric == "conversion" { Value::Null } else { json!(0.02) },
            "significant": metric == "conversion" && significant,
            "tier": if significant { "high" } else { "not_significant" },
            "cuped": null,
            "sequential": if metric == "conversion" {
                json!({"method": "group_sequential", "information_fraction": f64::from(look) / 4.0,
                       "previous_fractions": (1..look).map(|l| f64::from(l) / 4.0).collect::<Vec<_>>(),
                       "z": z, "boundary": boundary,
                       "decision": if significant { "significant" } else { "continue" }})
            } else { Value::Null },
            "warnings": []
        })
    };
    let variants = json!({"control": {"n": n, "mean": base, "variance": 0.09},
                          "treatment": {"n": n, "mean": base + delta, "variance": 0.09}});
    let treatment_n = if srm { n * 9 / 10 } else { n };
    serde_json::from_value(json!({
        "experiment": key, "as_of": as_of, "start": start, "analysis": "itt",
        "units": {"control": n, "treatment": treatment_n},
        "srm": {"chi2": if srm { 52.6 } else { 0.1 }, "df": 1, "p_value": if srm { 4e-13 } else { 0.75 },
                "flagged": srm, "observed": {"control": n, "treatment": treatment_n},
                "expected": {"control": n as f64, "treatment": n as f64}},
        "metrics": [
            {"metric": "conversion", "role": "primary", "type": "binomial", "direction": "increase_is_good",
             "variants": variants, "effects": [effect("conversion", delta)]},
            {"metric": "revenue", "role": "secondary", "type": "sum", "direction": "increase_is_good",
             "variants": variants, "effects": [effect("revenue", -delta)]}
        ],
        "segments": {"country": {"values": {"US": {"conversion": {"control": {"n": n / 2, "mean": 0.1}, "treatment": {"n": n / 2, "mean": 0.12}}}},
                                 "simpson": {"conversion": {"treatment": {"eligible_segments": 2, "opposite_segments": 2, "flagged": true}}}}},
        "novelty": null,
        "warnings": [],
        "health": [
            {"check": "srm", "status": if srm { "fail" } else { "ok" }, "figures": {"p_value": if srm { 4e-13 } else { 0.75 }},
             "message": if srm { "the variants' unit counts do not match their weights" } else { "unit counts match the weights" }},
            {"check": "minimum_duration", "status": "warn", "figures": {"days": 3.0, "min_days": 14.0},
             "message": "3 of the 14 days planned have run"}
        ],
        "decision": {"verdict": if srm { "unhealthy" } else { "keep_running" },
                     "reasons": ["not enough evidence yet: keep the experiment running"], "days_left": 11.0}
    }))
    .unwrap()
}
