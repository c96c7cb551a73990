//! Analysis results of experiments: the documents the analysis writes
//! (`docs/results-schema.md`), published as looks and read by the portal.
//!
//! Results are team data (Part 13 of the design): analysts and admins read
//! every team's, experimenters and viewers only their own team's, so that a
//! competitor team cannot watch an experiment's effect before it concludes.
//! Every publication is kept (a history of looks) and audited.
//!
//! A published document is read as strata-model's results type and checked
//! against the stored experiment (its key, variants, metrics and a plausible
//! `as_of`), since one wrong look would otherwise hide every later one. A
//! look found wrong afterwards is retracted, never deleted: it stays in the
//! history, marked.

use serde::Serialize;
use serde_json::Value;
use strata_model::results::{HealthStatus, Results, HEALTH_CHECKS};
use strata_model::SrmAction;

use crate::auth::Perm;
use crate::model::{ExperimentRecord, Status};
use crate::service::alerts::{Alert, AlertService};
use crate::service::experiments::{ActParams, ExperimentService};
use crate::service::lifecycle::Action;
use crate::service::permissions::{self, authorize};
use crate::service::registry::RegistryService;
use crate::service::{Actor, ServiceError};
use crate::state::AppState;
use crate::store::{now_ms, parse_rfc3339, NewLook, ResultsMeta, StoreError};

/// How far in the future a published `as_of` may lie: the clocks of the
/// analysis job and the server may disagree by this much. A later `as_of`
/// would hide every honest look until that date.
pub const AS_OF_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// The longest accepted retraction reason, in bytes.
pub const RETRACT_REASON_MAX_BYTES: usize = 1000;

/// A results document to publish: the typed document that is checked, and
/// the document as it is stored (as published, so that a field a newer
/// analysis engine adds is kept rather than dropped).
#[derive(Debug, Clone)]
pub struct Publication {
    /// The document, read as the platform's type.
    pub results: Results,
    /// The document as stored.
    pub document: Value,
}

impl Publication {
    /// The publication of a document computed in-process.
    pub fn of(results: Results) -> Result<Self, ServiceError> {
        let document = serde_json::to_value(&results)
            .map_err(|e| ServiceError::Internal(format!("serialise results: {e}")))?;
        Ok(Self { results, document })
    }
}

/// An experiment whose results an actor may publish, from
/// [`ResultsService::target`].
#[derive(Debug)]
pub struct PublishTarget {
    experiment: ExperimentRecord,
    actor: Actor,
}

impl PublishTarget {
    /// The experiment, as stored when the target was checked.
    pub fn experiment(&self) -> &ExperimentRecord {
        &self.experiment
    }
}

/// A published results document with its publication metadata.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishedResults {
    /// The experiment.
    pub experiment: String,
    /// Publication metadata.
    #[serde(flatten)]
    pub meta: ResultsMeta,
    /// The results document, as published.
    #[schema(value_type = Object)]
    pub results: Value,
}

/// One look in an experiment's history: its publication metadata and the
/// figures a trend chart needs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryItem {
    /// Publication metadata.
    #[serde(flatten)]
    pub meta: ResultsMeta,
    /// Decision, worst health status, units and primary effects
    /// (strata-model's `LookSummary`); null for looks published before
    /// summaries were kept.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<Value>,
}

/// The latest look of an experiment, from [`ResultsService::latest_summaries`].
#[derive(Debug, Clone, PartialEq)]
pub struct LatestLook {
    /// Its `as_of`, ms since the epoch.
    pub as_of: i64,
    /// Its summary.
    pub summary: strata_model::results::LookSummary,
}

/// Publishes, retracts and reads experiments' results.
#[derive(Debug, Clone)]
pub struct ResultsService {
    state: AppState,
}

impl ResultsService {
    /// The service over a server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn store_error(&self, e: StoreError) -> ServiceError {
        self.state.service_store_error(e)
    }

    /// The experiment `key`, once `actor` may use `perm` on its team's
    /// results (the role is checked before the experiment is looked up, so
    /// a caller without the permission learns nothing of which exist).
    async fn experiment_for(
        &self,
        actor: &Actor,
        perm: Perm,
        key: &str,
    ) -> Result<ExperimentRecord, ServiceError> {
        let store = &self.state.store;
        authorize(store, actor, perm, None).await?;
        let e = store
            .experiment(key)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| ServiceError::NotFound {
                what: "experiment",
                key: key.to_owned(),
            })?;
        authorize(store, actor, perm, Some(&e.owner_team)).await?;
        Ok(e)
    }

    /// The metrics an experiment's results may report: its primary,
    /// secondary and guardrail metrics, each guardrail resolved by the model
    /// to the metric it watches (and kept as named, as the analysis of a
    /// spec file names guardrails by their metric keys).
    async fn reported_metrics(&self, e: &ExperimentRecord) -> Result<Vec<String>, ServiceError> {
        let defs = RegistryService::new(self.state.clone())
            .guardrail_definitions()
            .await?;
        // A guardrail entry that is no definition names a metric: experiments
        // were checked against the registry when defined, and a used metric
        // or definition cannot be deleted.
        let metrics: Vec<&str> = e
            .guardrails
            .iter()
            .filter(|g| !defs.iter().any(|d| &d.key == *g))
            .map(String::as_str)
            .collect();
        let resolved =
            strata_model::guardrail::resolve(&e.guardrails, &defs, &metrics).map_err(|err| {
                ServiceError::Internal(format!(
                    "stored guardrails of experiment {:?}: {err}",
                    e.key
                ))
            })?;
        let mut keys = vec![e.primary_metric.clone()];
        keys.extend(e.secondary_metrics.iter().cloned());
        keys.extend(e.guardrails.iter().cloned());
        keys.extend(resolved.into_iter().map(|g| g.metric));
        Ok(keys)
    }

    /// The first half of a publication: checks that `actor` may publish
    /// results of experiment `key` (`results:write` on its team) and that it
    /// has started. The caller then reads the document and hands both to
    /// [`ResultsService::publish`]: a caller that may not publish, or an
    /// experiment that cannot have results, is refused before the document
    /// is read.
    pub async fn target(&self, actor: &Actor, key: &str) -> Result<PublishTarget, ServiceError> {
        let experiment = self.experiment_for(actor, Perm::ResultsWrite, key).await?;
        if experiment.started_at.is_none() {
            return Err(ServiceError::NotStarted {
                key: experiment.key,
                status: experiment.status,
            });
        }
        Ok(PublishTarget {
            experiment,
            actor: actor.clone(),
        })
    }

    /// Publishes `publication` as the next look of the target's experiment,
    /// once checked against its stored definition; audited under the
    /// target's actor. Returns the look's metadata.
    pub async fn publish(
        &self,
        target: PublishTarget,
        publication: &Publication,
    ) -> Result<ResultsMeta, ServiceError> {
        let PublishTarget {
            experiment: e,
            actor,
        } = target;
        let metrics = self.reported_metrics(&e).await?;
        let doc = &publication.results;
        let as_of = check(&e, doc, &metrics, now_ms())?;
        let failed: Vec<String> = doc
            .health
            .iter()
            .filter(|c| c.status == HealthStatus::Fail)
            .map(|c| format!("{}: {}", c.check, c.message))
            .collect();
        let summary = serde_json::to_value(doc.summary())
            .map_err(|e| ServiceError::Internal(format!("serialise a look's summary: {e}")))?;
        let store = &self.state.store;
        // A mismatch is alerted once per episode: the look before this one
        // (the latest still standing) decides whether it is news.
        let srm_before = store
            .results(&e.key, None)
            .await
            .map_err(|e| self.store_error(e))?
            .is_some_and(|(_, doc)| srm_failed(&doc));
        let seq = store
            .insert_results(
                &NewLook {
                    experiment: &e.key,
                    owner_team: &e.owner_team,
                    as_of,
                    doc: &publication.document,
                    summary: &summary,
                    failed_checks: &failed,
                },
                &actor,
            )
            .await
            .map_err(|e| self.store_error(e))?;
        for c in &doc.health {
            self.state
                .metrics
                .health_check(&e.key, &c.check, c.status.as_str());
        }
        if let Some(srm) = doc
            .health
            .iter()
            .find(|c| c.check == "srm" && c.status == HealthStatus::Fail)
        {
            if !srm_before {
                AlertService::new(self.state.clone())
                    .raise(Alert {
                        event: "health.srm",
                        experiment: Some(e.key.clone()),
                        text: format!("{}: {} (look {seq})", e.key, srm.message),
                        fields: serde_json::json!({"look": seq, "check": srm}),
                    })
                    .await;
            }
            if e.srm_action == SrmAction::Pause && e.status == Status::Running {
                self.pause_for_srm(&e.key, seq).await;
            }
        }
        let (meta, _) = store
            .results(&e.key, Some(seq))
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| ServiceError::Internal("published results vanished".into()))?;
        Ok(meta)
    }

    /// Pauses experiment `key`, whose look `seq` failed its sample ratio
    /// mismatch check and whose `srm_action` is `pause`, as the system
    /// actor `system:srm`. The look is published either way: a pause that
    /// fails (the experiment changed meanwhile) is logged, not returned.
    async fn pause_for_srm(&self, key: &str, seq: u64) {
        let actor = Actor::system("srm").granting([Perm::ExperimentsWrite]);
        let params = ActParams {
            reason: Some(format!(
                "sample ratio mismatch in results look {seq} (srm_action: pause)"
            )),
            ..ActParams::default()
        };
        match ExperimentService::new(self.state.clone())
            .act(&actor, key, Action::Pause, params)
            .await
        {
            Ok(_) => {
                tracing::warn!(
                    experiment = key,
                    look = seq,
                    "paused on a sample ratio mismatch"
                );
                AlertService::new(self.state.clone())
                    .raise(Alert {
                        event: "experiment.auto_paused",
                        experiment: Some(key.to_owned()),
                        text: format!("{key} was paused: sample ratio mismatch in results look {seq} (srm_action: pause)"),
                        fields: serde_json::json!({"look": seq, "reason": "srm", "actor": "system:srm"}),
                    })
                    .await;
            }
            Err(err) => {
                tracing::error!(experiment = key, look = seq, error = %err, "could not pause on a sample ratio mismatch")
            }
        }
    }

    /// [`target`](Self::target) then [`publish`](Self::publish), for a
    /// document computed in-process.
    pub async fn publish_results(
        &self,
        actor: &Actor,
        key: &str,
        results: Results,
    ) -> Result<ResultsMeta, ServiceError> {
        let target = self.target(actor, key).await?;
        self.publish(target, &Publication::of(results)?).await
    }

    /// Retracts look `seq` of experiment `key` (`results:retract`: analysts
    /// and admins) for `reason`; audited. It stays in the history, readable
    /// by `seq` and marked, and is never the latest again.
    pub async fn retract(
        &self,
        actor: &Actor,
        key: &str,
        seq: u64,
        reason: &str,
    ) -> Result<ResultsMeta, ServiceError> {
        let e = self
            .experiment_for(actor, Perm::ResultsRetract, key)
            .await?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ServiceError::validation(
                "reason",
                "a retraction needs a reason",
            ));
        }
        if reason.len() > RETRACT_REASON_MAX_BYTES {
            return Err(ServiceError::validation(
                "reason",
                format!("longer than {RETRACT_REASON_MAX_BYTES} bytes"),
            ));
        }
        let missing = || ServiceError::NotFound {
            what: "results",
            key: format!("{key}/{seq}"),
        };
        let already =
            || ServiceError::Conflict(format!("results {key}/{seq} are already retracted"));
        let store = &self.state.store;
        let (meta, _) = store
            .results(&e.key, Some(seq))
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(missing)?;
        if meta.retracted_at.is_some() {
            return Err(already());
        }
        let done = store
            .retract_results(&e.key, seq, reason, actor)
            .await
            .map_err(|e| self.store_error(e))?;
        if !done {
            // Retracted by someone else between the read and the update.
            return Err(already());
        }
        let (meta, _) = store
            .results(&e.key, Some(seq))
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(missing)?;
        Ok(meta)
    }

    /// Look `seq` of experiment `key`, or its latest look (by `as_of`,
    /// retracted looks left out) when `seq` is none (`results:read` on its
    /// team).
    pub async fn read(
        &self,
        actor: &Actor,
        key: &str,
        seq: Option<u64>,
    ) -> Result<PublishedResults, ServiceError> {
        let e = self.experiment_for(actor, Perm::ResultsRead, key).await?;
        let (meta, results) = self
            .state
            .store
            .results(&e.key, seq)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| match seq {
                Some(seq) => ServiceError::NotFound {
                    what: "results",
                    key: format!("{key}/{seq}"),
                },
                None => ServiceError::NotFound {
                    what: "results of experiment",
                    key: key.to_owned(),
                },
            })?;
        Ok(PublishedResults {
            experiment: e.key,
            meta,
            results,
        })
    }

    /// The latest look of each of `experiments` whose results `actor` may
    /// read (`results:read` on its team; the others are left out, not
    /// refused), as its summary and `as_of`: the health and decision a list
    /// shows, the units a traffic estimate reads.
    pub async fn latest_summaries(
        &self,
        actor: &Actor,
        experiments: &[ExperimentRecord],
    ) -> Result<std::collections::HashMap<String, LatestLook>, ServiceError> {
        let readable: Vec<&str> = experiments
            .iter()
            .filter(|e| permissions::check(actor, Perm::ResultsRead, Some(&e.owner_team)).is_ok())
            .map(|e| e.key.as_str())
            .collect();
        let rows = self
            .state
            .store
            .latest_summaries(&readable)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(rows
            .into_iter()
            // A summary this build cannot read is shown as none rather
            // than failing the whole list.
            .filter_map(|(k, as_of, v)| {
                serde_json::from_value(v)
                    .ok()
                    .map(|summary| (k, LatestLook { as_of, summary }))
            })
            .collect())
    }

    /// Every look of experiment `key` with its summary, latest `as_of`
    /// first (`results:read` on its team).
    pub async fn history(
        &self,
        actor: &Actor,
        key: &str,
    ) -> Result<Vec<HistoryItem>, ServiceError> {
        let e = self.experiment_for(actor, Perm::ResultsRead, key).await?;
        let rows = self
            .state
            .store
            .results_history(&e.key)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(rows
            .into_iter()
            .map(|(meta, summary)| HistoryItem { meta, summary })
            .collect())
    }
}

/// Checks a results document against the experiment it is published for:
/// the experiment has started, and the document's key, variants, metrics
/// and `as_of` (between the start of the experiment and `now`, give or take
/// the clock skew) agree with it. Returns `as_of` in ms.
fn check(
    e: &ExperimentRecord,
    doc: &Results,
    metrics: &[String],
    now: i64,
) -> Result<i64, ServiceError> {
    let key = &e.key;
    // No data to analyse before the start, and a draft's definition may
    // still change under the results.
    let started = e
        .started_at
        .as_deref()
        .and_then(parse_rfc3339)
        .ok_or_else(|| ServiceError::NotStarted {
            key: key.clone(),
            status: e.status,
        })?;
    if &doc.experiment != key {
        return Err(ServiceError::validation(
            "experiment",
            format!(
                "the results are of experiment {:?}, not {key:?}",
                doc.experiment
            ),
        ));
    }
    let as_of = parse_rfc3339(&doc.as_of).ok_or_else(|| {
        ServiceError::validation(
            "as_of",
            format!("{:?} is not an rfc 3339 timestamp", doc.as_of),
        )
    })?;
    if as_of > now + AS_OF_CLOCK_SKEW_MS {
        return Err(ServiceError::validation(
            "as_of",
            format!("{} is in the future", doc.as_of),
        ));
    }
    if as_of < started {
        return Err(ServiceError::validation(
            "as_of",
            format!(
                "{} is before the experiment started ({})",
                doc.as_of,
                e.started_at.as_deref().unwrap_or_default()
            ),
        ));
    }
    let variant = |field: String, v: &str| -> Result<(), ServiceError> {
        if e.variants.iter().any(|d| d.key == v) {
            Ok(())
        } else {
            Err(ServiceError::validation(
                field,
                format!("{v:?} is not a variant of experiment {key:?}"),
            ))
        }
    };
    for v in doc.units.keys() {
        variant(format!("units.{v}"), v)?;
    }
    for v in doc.srm.observed.keys() {
        variant(format!("srm.observed.{v}"), v)?;
    }
    for v in doc.srm.expected.keys() {
        variant(format!("srm.expected.{v}"), v)?;
    }
    for (i, c) in doc.health.iter().enumerate() {
        if !HEALTH_CHECKS.contains(&c.check.as_str()) {
            return Err(ServiceError::validation(
                format!("health[{i}].check"),
                format!(
                    "{:?} is not a health check (one of {})",
                    c.check,
                    HEALTH_CHECKS.join(", ")
                ),
            ));
        }
    }
    if let Some(v) = doc.decision.as_ref().and_then(|d| d.variant.as_deref()) {
        variant("decision.variant".to_owned(), v)?;
    }
    for (i, m) in doc.metrics.iter().enumerate() {
        if !metrics.contains(&m.metric) {
            return Err(ServiceError::validation(
                format!("metrics[{i}].metric"),
                format!(
                    "{:?} is not a primary, secondary or guardrail metric of experiment {key:?}",
                    m.metric
                ),
            ));
        }
        for v in m.variants.keys() {
            variant(format!("metrics[{i}].variants.{v}"), v)?;
        }
        for (j, x) in m.effects.iter().enumerate() {
            variant(format!("metrics[{i}].effects[{j}].variant"), &x.variant)?;
            variant(format!("metrics[{i}].effects[{j}].control"), &x.control)?;
        }
    }
    Ok(as_of)
}

/// Whether a stored results document's sample ratio mismatch check failed.
fn srm_failed(doc: &serde_json::Value) -> bool {
    doc["health"].as_array().is_some_and(|h| {
        h.iter()
            .any(|c| c["check"] == "srm" && c["status"] == "fail")
    })
}
