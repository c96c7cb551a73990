//! `strata analyze --server`: the experiment as it was pre-registered on a
//! running server, and its results published back as a look.
//!
//! The stored definition (`GET /api/v1/experiments/{key}`), the metric
//! registry (`GET /api/v1/metrics`), the bot detection limits
//! (`GET /api/v1/bot-detection`) and the guardrail definitions
//! (`GET /api/v1/guardrails`) make the analysis spec, so an analysis of a
//! stored experiment is exactly what was pre-registered, and what the
//! server's own scheduled look computes.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use strata_analysis::metrics::MetricRegistry;
use strata_analysis::spec::AnalysisSpec;
use strata_analysis::Results;
use strata_model::{ExperimentDefinition, GuardrailDef};

/// A server and the experiment analysed on it.
#[derive(Debug)]
pub struct Server {
    base: String,
    token: String,
    key: String,
    http: reqwest::Client,
}

impl Server {
    /// `url` with the token given, else `STRATA_TOKEN`.
    pub fn new(url: &str, token: Option<String>, key: &str) -> Result<Self> {
        let token = token
            .or_else(|| std::env::var("STRATA_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!("option `token`: --server needs an API token (--token or STRATA_TOKEN)")
            })?;
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("option `server`: {url:?} is not an http:// or https:// URL");
        }
        Ok(Self {
            base,
            token,
            key: key.to_owned(),
            http: reqwest::Client::new(),
        })
    }

    /// `GET path`: its URL and the answer, whatever its status.
    async fn send(&self, path: &str) -> Result<(String, reqwest::Response)> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {url}"))?;
        Ok((url, resp))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let (url, resp) = self.send(path).await?;
        answer(&url, resp).await
    }

    /// The spec and registry of the experiment as pre-registered, for a
    /// look at `as_of`.
    pub async fn pre_registered(
        &self,
        as_of: DateTime<Utc>,
    ) -> Result<(AnalysisSpec, MetricRegistry)> {
        let def: ExperimentDefinition = serde_json::from_value(
            self.get(&format!("/api/v1/experiments/{}", self.key))
                .await?,
        )
        .with_context(|| format!("the server's definition of experiment {}", self.key))?;
        let metrics = definitions(self.get("/api/v1/metrics").await?);
        let bots = self.get("/api/v1/bot-detection").await?;
        let registry_text =
            serde_json::json!({ "metrics": metrics, "bot_detection": bots["limits"] }).to_string();
        let registry = MetricRegistry::from_str_named(
            &registry_text,
            Path::new(&format!("{}/api/v1/metrics", self.base)),
        )?;
        let guardrails: Vec<GuardrailDef> =
            serde_json::from_value(definitions(self.get("/api/v1/guardrails").await?))
                .context("the server's guardrail definitions")?;
        let spec = AnalysisSpec::pre_registered(&def, &registry, &guardrails, as_of)?.spec;
        Ok((spec, registry))
    }

    /// The information fractions of the experiment's looks so far, from its
    /// latest published look (none before the first): the next look's
    /// group-sequential boundary accounts for them, as a scheduled look's does.
    pub async fn previous_fractions(&self) -> Result<Vec<f64>> {
        let (url, resp) = self
            .send(&format!("/api/v1/experiments/{}/results", self.key))
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            // No look yet; an unknown experiment was refused before.
            if v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("results"))
            {
                return Ok(Vec::new());
            }
            bail!("{url}: 404 Not Found: {v}");
        }
        let v = answer(&url, resp).await?;
        let latest: Results = serde_json::from_value(v["results"].clone())
            .with_context(|| format!("{url}: the latest look"))?;
        Ok(latest.sequential_fractions())
    }

    /// Publishes `results` as the experiment's next look; returns its number.
    pub async fn publish(&self, results: &Results) -> Result<u64> {
        let url = format!("{}/api/v1/experiments/{}/results", self.base, self.key);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(results)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {url}"))?;
        let v = answer(&url, resp).await?;
        v["seq"]
            .as_u64()
            .ok_or_else(|| anyhow!("{url}: the answer names no look number: {v}"))
    }
}

/// The definitions of a listing (`{"items": [...]}`) without the fields the
/// server stores beside each ([`strata_server::api::registry::definition_of`]).
fn definitions(listing: Value) -> Value {
    let items = match listing {
        Value::Object(mut o) => o.remove("items").unwrap_or(Value::Null),
        _ => Value::Null,
    };
    match items {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(o) => strata_server::api::registry::definition_of(o),
                other => other,
            })
            .collect(),
        other => other,
    }
}

/// The JSON of a successful answer, or the server's error message.
async fn answer(url: &str, resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(v);
    }
    match v["error"]["message"].as_str() {
        Some(m) => bail!("{url}: {status}: {m}"),
        None => bail!("{url}: {status}"),
    }
}
