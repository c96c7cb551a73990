//! Seeds a server with the demo's world through its HTTP API, as an admin
//! would: keys, a layer, the metric registry, organisation-wide guardrails
//! and the scenario experiments, created, submitted and started by a team's
//! experimenter. Seeding a server seeded before leaves what exists as it is
//! (a restarted demo on the same data directory goes on where it was).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::scenario::{self, Scenario};
use crate::SimError;

/// The team that owns the demo's experiments.
pub const TEAM: &str = "growth";

/// The keys seeding created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// An experimenter's API token of team [`TEAM`].
    pub experimenter: String,
    /// An SDK key.
    pub sdk_key: String,
    /// An ingestion key.
    pub ingest_key: String,
}

struct Api<'a> {
    http: reqwest::Client,
    base: &'a str,
}

impl Api<'_> {
    /// Calls the API; `Ok(None)` for a 409 (it exists already).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, SimError> {
        let url = format!("{}/api/v1/{path}", self.base.trim_end_matches('/'));
        let mut req = self.http.request(method.clone(), &url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| SimError::Request {
            what: format!("{method} {url}"),
            source: e,
        })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if status == StatusCode::CONFLICT {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(SimError::Refused {
                what: format!("{method} {url}"),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn token(&self, admin: &str, body: Value) -> Result<String, SimError> {
        let v = self.call(Method::POST, "keys", admin, Some(&body)).await?;
        v.as_ref()
            .and_then(|v| v["token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| SimError::Refused {
                what: "POST /api/v1/keys".into(),
                status: 200,
                body: format!("no token in the answer: {v:?}"),
            })
    }
}

/// Seeds the server at `base` (e.g. `http://127.0.0.1:8080`) with the admin
/// token `admin`, for a population of `users` drawn from `seed`: creates
/// the keys, the layer, the registry, the guardrails and the `scenarios`,
/// and starts them.
pub async fn seed(
    base: &str,
    admin: &str,
    users: u32,
    seed: u64,
    scenarios: &[Scenario],
) -> Result<Seeded, SimError> {
    let api = Api {
        http: reqwest::Client::new(),
        base,
    };
    let experimenter = api
        .token(
            admin,
            json!({"kind": "api", "role": "experimenter", "team": TEAM, "name": "demo experimenter"}),
        )
        .await?;
    let sdk_key = api
        .token(admin, json!({"kind": "sdk", "name": "demo sdk"}))
        .await?;
    let ingest_key = api
        .token(admin, json!({"kind": "ingest", "name": "demo ingest"}))
        .await?;
    for l in scenario::layers() {
        api.call(Method::POST, "layers", admin, Some(&l)).await?;
    }
    for m in scenario::metrics() {
        api.call(Method::POST, "metrics", admin, Some(&m)).await?;
    }
    for g in scenario::guardrails() {
        api.call(Method::POST, "guardrails", admin, Some(&g))
            .await?;
    }
    for s in scenarios {
        let key = s.key;
        api.call(
            Method::POST,
            "experiments",
            &experimenter,
            Some(&s.definition(TEAM, users, seed)),
        )
        .await?;
        let status = api
            .call(
                Method::GET,
                &format!("experiments/{key}"),
                &experimenter,
                None,
            )
            .await?
            .and_then(|v| v["status"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if status == "draft" {
            api.call(
                Method::POST,
                &format!("experiments/{key}/submit"),
                &experimenter,
                Some(&json!({})),
            )
            .await?;
        }
        if matches!(status.as_str(), "draft" | "submitted" | "approved") {
            api.call(
                Method::POST,
                &format!("experiments/{key}/start"),
                &experimenter,
                Some(&s.start()),
            )
            .await?;
        }
    }
    Ok(Seeded {
        experimenter,
        sdk_key,
        ingest_key,
    })
}
