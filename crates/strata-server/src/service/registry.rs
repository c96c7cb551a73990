//! The metric registry, guardrail definitions, the bot detection limits and
//! the global holdout: the definitions experiments and analyses refer to.
//!
//! A definition is stored with a revision beside its own fields
//! ([`STORED_FIELDS`]) and deleted softly: its key is never reused, so a
//! look published under an old definition cannot be confused with a new
//! one. A metric or guardrail definition still used by an experiment that is
//! not archived is not deleted ([`ServiceError::InUse`]); the check and the
//! deletion happen in one write, so no experiment can start using it in
//! between.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use strata_model::{BotDetection, MetricRegistry, MetricType};

use crate::auth::{random_hex, Perm};
use crate::model::{
    check_percent, BotDetectionRecord, ExperimentRecord, GuardrailDef, HoldoutRecord,
    KeyMetricsRecord, MetricDef, Status,
};
use crate::service::permissions::authorize;
use crate::service::{Actor, ServiceError};
use crate::state::AppState;
use crate::store::{parse_rfc3339, rfc3339, StoreError, WriteTx};
use strata_model::holdout::HoldoutPeriod;

/// The longest schedule of holdout rotations, in days (ten years).
pub const MAX_ROTATION_DAYS: u32 = 3650;

/// A change of the global holdout ([`RegistryService::set_holdout`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HoldoutChange {
    /// The share held out, percent; none keeps it (required to create it).
    pub percent: Option<f64>,
    /// Replace the salt: another set of units is held out.
    pub rotate: bool,
    /// Days from a period's start to its scheduled rotation; 0 stops
    /// scheduled rotation; none keeps the setting.
    pub rotate_every_days: Option<u32>,
}

/// Whether the holdout needs the scheduled analysis's care at `now_ms`: a
/// running period whose scheduled rotation is due, or a holdout with units
/// held out and no period (set before periods were kept).
pub fn holdout_due(h: &HoldoutRecord, now_ms: i64) -> bool {
    if h.percent <= 0.0 {
        return false;
    }
    if h.period == 0 {
        return true;
    }
    h.next_rotation_at
        .as_deref()
        .and_then(parse_rfc3339)
        .is_some_and(|at| at <= now_ms)
}

/// The fields a stored registry entry carries beside the definition's own
/// ([`Stored`]); served with it, they are not part of the definition format.
pub const STORED_FIELDS: [&str; 2] = ["revision", "created_at"];

/// A stored registry entry (as stored and served) without [`STORED_FIELDS`]:
/// the definition, ready to read with strata-model's types.
pub fn definition_of(mut stored: serde_json::Map<String, Value>) -> Value {
    for f in STORED_FIELDS {
        stored.remove(f);
    }
    Value::Object(stored)
}

/// Stored form of a registry entry: the definition plus its revision
/// (the fields named in [`STORED_FIELDS`]).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Stored<T> {
    #[serde(flatten)]
    def: T,
    revision: i64,
    created_at: String,
}

/// The kinds of definitions kept here, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A metric of the registry.
    Metric,
    /// A guardrail definition.
    Guardrail,
}

impl Kind {
    /// The stored kind and the word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Metric => "metric",
            Kind::Guardrail => "guardrail",
        }
    }
}

/// The API requires a non-empty `filter` on every metric but a ratio, and
/// on both parts of a ratio (`docs/api.md`), although the registry format
/// (and the analysis) reads an absent filter as "every event": a metric
/// defined over the API states which events it counts.
pub fn require_filter(def: &MetricDef) -> Result<(), ServiceError> {
    let parts = [
        ("numerator", &def.numerator),
        ("denominator", &def.denominator),
    ];
    let missing = if def.kind == MetricType::Ratio {
        parts
            .into_iter()
            .find(|(_, p)| p.as_ref().is_some_and(|p| p.filter.is_empty()))
            .map(|(name, _)| format!("{name}.filter"))
    } else {
        def.filter.is_empty().then(|| "filter".to_owned())
    };
    match missing {
        Some(field) => Err(ServiceError::validation(
            field.clone(),
            format!("{field} is required for this metric type"),
        )),
        None => Ok(()),
    }
}

fn model(e: strata_model::ModelError) -> ServiceError {
    ServiceError::validation(e.field(), e.to_string())
}

/// Whether experiment `e` uses `key` of `kind`: a metric as its primary,
/// secondary or guardrail metric (directly or through one of `guardrails`
/// watching it), a guardrail definition in its guardrails.
fn uses(e: &ExperimentRecord, kind: Kind, key: &str, guardrails: &[Value]) -> bool {
    match kind {
        Kind::Metric => {
            let watches = |g: &String| {
                g == key
                    || guardrails
                        .iter()
                        .any(|d| d["key"] == g.as_str() && d["metric"] == key)
            };
            e.primary_metric == key
                || e.secondary_metrics.iter().any(|m| m == key)
                || e.guardrails.iter().any(watches)
        }
        Kind::Guardrail => e.guardrails.iter().any(|g| g == key),
    }
}

/// The experiments that are not archived and use definition `key` of
/// `kind` (a metric directly or through a guardrail), read in the change's
/// transaction.
async fn users(tx: &mut WriteTx, kind: Kind, key: &str) -> Result<Vec<String>, ServiceError> {
    let guardrails: Vec<Value> = tx.definitions(Kind::Guardrail.as_str()).await?;
    let mut by: Vec<String> = tx
        .experiments()
        .await?
        .into_iter()
        .filter(|e| e.status != Status::Archived && uses(e, kind, key, &guardrails))
        .map(|e| e.key)
        .collect();
    // The global holdout's looks measure the key metrics.
    let key_metrics: Option<KeyMetricsRecord> = tx.definition("key_metrics", "global").await?;
    if kind == Kind::Metric && key_metrics.is_some_and(|k| k.metrics.iter().any(|m| m == key)) {
        by.push("(key metrics)".to_owned());
    }
    Ok(by)
}

/// Refuses a change of definition `key` while `by` rely on it.
fn unused(what: &'static str, key: &str, by: Vec<String>) -> Result<(), ServiceError> {
    if by.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::InUse {
            what,
            key: key.to_owned(),
            by,
        })
    }
}

/// Reads and changes the registry, the guardrail definitions and the holdout.
#[derive(Debug, Clone)]
pub struct RegistryService {
    state: AppState,
}

impl RegistryService {
    /// The service over a server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn store_error(&self, e: StoreError) -> ServiceError {
        self.state.service_store_error(e)
    }

    async fn begin(&self, actor: &Actor) -> Result<WriteTx, ServiceError> {
        self.state
            .store
            .begin_write(actor)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Stores a new definition (revision 1) and audits `KIND.create`.
    async fn create<T: Serialize + DeserializeOwned>(
        &self,
        mut tx: WriteTx,
        kind: Kind,
        key: &str,
        def: T,
    ) -> Result<Value, ServiceError> {
        let kind = kind.as_str();
        if tx.definition_key_taken(kind, key).await? {
            return Err(ServiceError::AlreadyExists {
                what: kind,
                key: key.to_owned(),
            });
        }
        let stored = Stored {
            def,
            revision: 1,
            created_at: rfc3339(tx.now),
        };
        let after = serde_json::to_value(&stored)
            .map_err(|e| ServiceError::Internal(format!("serialise {kind} {key:?}: {e}")))?;
        tx.put_definition(kind, key, &stored, 1, false).await?;
        tx.audit(
            &format!("{kind}.create"),
            kind,
            key,
            None,
            Some(&after),
            None,
        )
        .await?;
        self.state
            .publish(tx, &format!("create {kind} {key}"))
            .await?;
        Ok(after)
    }

    /// Every stored definition of `kind` (with [`STORED_FIELDS`]), oldest
    /// first; readable by every role.
    pub async fn list(&self, actor: &Actor, kind: Kind) -> Result<Vec<Value>, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        self.state
            .store
            .definitions(kind.as_str())
            .await
            .map_err(|e| self.store_error(e))
    }

    /// One stored definition of `kind`.
    pub async fn get(&self, actor: &Actor, kind: Kind, key: &str) -> Result<Value, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        self.state
            .store
            .definition(kind.as_str(), key)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| ServiceError::NotFound {
                what: kind.as_str(),
                key: key.to_owned(),
            })
    }

    /// Soft-deletes a definition of `kind` (`metrics:write` for a metric,
    /// `guardrails:write` for a guardrail definition), unless an experiment
    /// that is not archived uses it; audited as `KIND.delete`.
    pub async fn delete(&self, actor: &Actor, kind: Kind, key: &str) -> Result<(), ServiceError> {
        let perm = match kind {
            Kind::Metric => Perm::MetricsWrite,
            Kind::Guardrail => Perm::GuardrailsWrite,
        };
        authorize(&self.state.store, actor, perm, None).await?;
        let mut tx = self.begin(actor).await?;
        let name = kind.as_str();
        let old: Stored<Value> =
            tx.definition(name, key)
                .await?
                .ok_or_else(|| ServiceError::NotFound {
                    what: name,
                    key: key.to_owned(),
                })?;
        let by = users(&mut tx, kind, key).await?;
        unused(name, key, by)?;
        let before = serde_json::to_value(&old).unwrap_or(Value::Null);
        let new = Stored {
            revision: old.revision + 1,
            ..old
        };
        tx.put_definition(name, key, &new, new.revision, true)
            .await?;
        tx.audit(
            &format!("{name}.delete"),
            name,
            key,
            Some(&before),
            None,
            None,
        )
        .await?;
        self.state
            .publish(tx, &format!("delete {name} {key}"))
            .await?;
        Ok(())
    }

    /// Adds a metric to the registry (`metrics:write`: analysts and
    /// admins); audited as `metric.create`.
    pub async fn create_metric(
        &self,
        actor: &Actor,
        def: MetricDef,
    ) -> Result<Value, ServiceError> {
        authorize(&self.state.store, actor, Perm::MetricsWrite, None).await?;
        def.validate().map_err(model)?;
        require_filter(&def)?;
        let key = def.key.clone();
        let tx = self.begin(actor).await?;
        self.create(tx, Kind::Metric, &key, def).await
    }

    /// Replaces metric `key`'s definition (`metrics:write`: analysts and
    /// admins), unless something relies on its meaning: an experiment that
    /// is not archived (directly or through a guardrail), or a guardrail
    /// definition watching it — their looks and evaluations would change
    /// meaning under them; audited as `metric.update` with both versions.
    pub async fn update_metric(
        &self,
        actor: &Actor,
        key: &str,
        def: MetricDef,
    ) -> Result<Value, ServiceError> {
        authorize(&self.state.store, actor, Perm::MetricsWrite, None).await?;
        if def.key != key {
            return Err(ServiceError::validation(
                "key",
                format!(
                    "the definition is of metric {:?}, not {key:?}; a metric's key never changes",
                    def.key
                ),
            ));
        }
        def.validate().map_err(model)?;
        require_filter(&def)?;
        let mut tx = self.begin(actor).await?;
        let name = Kind::Metric.as_str();
        let old: Stored<Value> =
            tx.definition(name, key)
                .await?
                .ok_or_else(|| ServiceError::NotFound {
                    what: name,
                    key: key.to_owned(),
                })?;
        let guardrails: Vec<Value> = tx.definitions(Kind::Guardrail.as_str()).await?;
        let mut by = users(&mut tx, Kind::Metric, key).await?;
        by.extend(
            guardrails
                .iter()
                .filter(|g| g["metric"] == key)
                .filter_map(|g| g["key"].as_str().map(|k| format!("(guardrail {k})"))),
        );
        unused(name, key, by)?;
        let before = serde_json::to_value(&old).unwrap_or(Value::Null);
        let new = Stored {
            def,
            revision: old.revision + 1,
            created_at: old.created_at,
        };
        let after = serde_json::to_value(&new)
            .map_err(|e| ServiceError::Internal(format!("serialise metric {key:?}: {e}")))?;
        tx.put_definition(name, key, &new, new.revision, false)
            .await?;
        tx.audit(
            "metric.update",
            name,
            key,
            Some(&before),
            Some(&after),
            None,
        )
        .await?;
        self.state
            .publish(tx, &format!("update metric {key}"))
            .await?;
        Ok(after)
    }

    /// Adds a guardrail definition (`guardrails:write`: admins) watching a
    /// metric of the registry; audited as `guardrail.create`.
    pub async fn create_guardrail(
        &self,
        actor: &Actor,
        def: GuardrailDef,
    ) -> Result<Value, ServiceError> {
        authorize(&self.state.store, actor, Perm::GuardrailsWrite, None).await?;
        def.validate().map_err(model)?;
        let mut tx = self.begin(actor).await?;
        // Checked in the write, so the metric cannot be deleted in between.
        let Some(metric) = tx
            .definition::<Value>(Kind::Metric.as_str(), &def.metric)
            .await?
        else {
            return Err(ServiceError::validation(
                "metric",
                format!("metric {:?} is not in the metric registry", def.metric),
            ));
        };
        if metric["type"] == "quantile" {
            return Err(ServiceError::validation(
                "metric",
                format!(
                    "metric {:?} is a quantile: the guardrail monitor's sequential test compares means of per-unit values, so watch a mean, sum, count, binomial or ratio metric (for latency, the mean load time); to see the quantile in an experiment's looks, name it among the experiment's guardrails",
                    def.metric
                ),
            ));
        }
        let key = def.key.clone();
        self.create(tx, Kind::Guardrail, &key, def).await
    }

    /// The metric registry as the platform's type, for in-process callers
    /// (an analysis of a stored experiment).
    pub async fn registry(&self) -> Result<MetricRegistry, ServiceError> {
        let stored: Vec<serde_json::Map<String, Value>> = self
            .state
            .store
            .definitions(Kind::Metric.as_str())
            .await
            .map_err(|e| self.store_error(e))?;
        let metrics = stored
            .into_iter()
            .map(|m| {
                serde_json::from_value(definition_of(m))
                    .map_err(|e| ServiceError::Internal(format!("stored metric: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(MetricRegistry { metrics })
    }

    /// Every guardrail definition as the platform's type.
    pub async fn guardrail_definitions(&self) -> Result<Vec<GuardrailDef>, ServiceError> {
        let stored: Vec<serde_json::Map<String, Value>> = self
            .state
            .store
            .definitions(Kind::Guardrail.as_str())
            .await
            .map_err(|e| self.store_error(e))?;
        stored
            .into_iter()
            .map(|g| {
                serde_json::from_value(definition_of(g))
                    .map_err(|e| ServiceError::Internal(format!("stored guardrail: {e}")))
            })
            .collect()
    }

    /// The bot detection limits every analysis applies, for in-process
    /// callers (the scheduled analysis, the guardrail monitor): the stored
    /// ones, or the defaults when never set.
    pub async fn bot_detection(&self) -> Result<BotDetectionRecord, ServiceError> {
        let stored: Option<BotDetectionRecord> = self.global("bot_detection").await?;
        Ok(stored.unwrap_or(BotDetectionRecord {
            limits: BotDetection::default(),
            revision: 0,
            updated_at: None,
        }))
    }

    /// [`RegistryService::bot_detection`] for a caller who may read.
    pub async fn get_bot_detection(
        &self,
        actor: &Actor,
    ) -> Result<BotDetectionRecord, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        self.bot_detection().await
    }

    /// Replaces the bot detection limits (`metrics:write`: analysts,
    /// admins); audited as `bot_detection.set` with both versions. The next
    /// analysis of every experiment applies them.
    pub async fn set_bot_detection(
        &self,
        actor: &Actor,
        limits: BotDetection,
    ) -> Result<BotDetectionRecord, ServiceError> {
        authorize(&self.state.store, actor, Perm::MetricsWrite, None).await?;
        limits.validate().map_err(model)?;
        let mut tx = self.begin(actor).await?;
        let old: Option<BotDetectionRecord> = tx.definition("bot_detection", "global").await?;
        let rec = BotDetectionRecord {
            limits,
            revision: old.as_ref().map_or(0, |o| o.revision) + 1,
            updated_at: Some(rfc3339(tx.now)),
        };
        self.put_global(
            tx,
            "bot_detection",
            old.as_ref(),
            &rec,
            rec.revision,
            "bot_detection.set",
        )
        .await?;
        Ok(rec)
    }

    /// The global holdout, if one is set.
    pub async fn holdout(&self, actor: &Actor) -> Result<HoldoutRecord, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        self.global("holdout")
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "holdout",
                key: "global".to_owned(),
            })
    }

    /// Sets the holdout (`holdout:write`: admins): `percent` if given (it is
    /// required when there is no holdout yet), a new salt on creation and
    /// when `rotate`, the schedule of rotations if given; audited as
    /// `holdout.set` or `holdout.rotate`. A new salt or size ends the
    /// running period of the holdout and starts the next (a size of 0
    /// starts none): who is held out changes, so the comparison does.
    pub async fn set_holdout(
        &self,
        actor: &Actor,
        change: HoldoutChange,
    ) -> Result<HoldoutRecord, ServiceError> {
        authorize(&self.state.store, actor, Perm::HoldoutWrite, None).await?;
        if let Some(p) = change.percent {
            check_percent("percent", p)
                .map_err(|e| ServiceError::validation("percent", e.message))?;
        }
        if let Some(d) = change.rotate_every_days {
            if d > MAX_ROTATION_DAYS {
                return Err(ServiceError::validation(
                    "rotate_every_days",
                    format!("rotate_every_days must be at most {MAX_ROTATION_DAYS} (0 stops scheduled rotation), got {d}"),
                ));
            }
        }
        let tx = self.begin(actor).await?;
        // Without `only_if_due` the change is always made.
        self.change_holdout(tx, change, false)
            .await?
            .ok_or_else(|| ServiceError::Internal("the holdout change was not made".to_owned()))
    }

    /// What the scheduled analysis does for the holdout before its look,
    /// as `actor` (a system actor granted `holdout:write`): rotates the
    /// salt when the running period's scheduled rotation is due (audited
    /// as `holdout.rotate`), and starts the first period of a holdout set
    /// before periods were kept. Returns the holdout (none when none is
    /// set) and whether it changed.
    pub async fn maintain_holdout(
        &self,
        actor: &Actor,
    ) -> Result<Option<(HoldoutRecord, bool)>, ServiceError> {
        authorize(&self.state.store, actor, Perm::HoldoutWrite, None).await?;
        let stored: Option<HoldoutRecord> = self.global("holdout").await?;
        let Some(h) = stored else {
            return Ok(None);
        };
        if !holdout_due(&h, strata_clock::now_ms()) {
            return Ok(Some((h, false)));
        }
        let tx = self.begin(actor).await?;
        let change = HoldoutChange {
            percent: None,
            rotate: h.period != 0,
            rotate_every_days: None,
        };
        // Decided again inside the change: another instance may have
        // rotated since.
        match self.change_holdout(tx, change, true).await? {
            Some(rec) => Ok(Some((rec, true))),
            None => Ok(Some((h, false))),
        }
    }

    /// The change of the holdout in `tx`; with `only_if_due`, made only
    /// when [`holdout_due`] still holds (none otherwise).
    async fn change_holdout(
        &self,
        mut tx: WriteTx,
        change: HoldoutChange,
        only_if_due: bool,
    ) -> Result<Option<HoldoutRecord>, ServiceError> {
        let salt = || {
            random_hex(8)
                .map(|h| format!("H-{h}"))
                .map_err(|e| ServiceError::Internal(e.message))
        };
        let old: Option<HoldoutRecord> = tx.definition("holdout", "global").await?;
        if only_if_due && !old.as_ref().is_some_and(|h| holdout_due(h, tx.now)) {
            return Ok(None);
        }
        let now = rfc3339(tx.now);
        let mut rec = match &old {
            Some(o) => HoldoutRecord {
                salt: if change.rotate {
                    salt()?
                } else {
                    o.salt.clone()
                },
                percent: change.percent.unwrap_or(o.percent),
                revision: o.revision + 1,
                updated_at: now.clone(),
                ..o.clone()
            },
            None => HoldoutRecord {
                salt: salt()?,
                percent: change.percent.ok_or_else(|| ServiceError::NotFound {
                    what: "holdout",
                    key: "global".to_owned(),
                })?,
                revision: 1,
                updated_at: now.clone(),
                rotate_every_days: None,
                period: 0,
                period_started_at: None,
                next_rotation_at: None,
            },
        };
        if let Some(d) = change.rotate_every_days {
            rec.rotate_every_days = (d > 0).then_some(d);
        }
        let moved = match &old {
            None => true,
            Some(o) => o.salt != rec.salt || o.percent != rec.percent,
        };
        if moved || (rec.period == 0 && rec.percent > 0.0) {
            let latest = tx.latest_holdout_period().await?;
            let next = latest.as_ref().map_or(1, |p| p.period + 1);
            if let Some(mut p) = latest.filter(|p| p.ended_at.is_none()) {
                p.ended_at = Some(now.clone());
                p.ended_by = Some(tx.actor().audit_name().to_owned());
                tx.put_holdout_period(&p).await?;
            }
            if rec.percent > 0.0 {
                tx.put_holdout_period(&HoldoutPeriod {
                    period: next,
                    salt: rec.salt.clone(),
                    percent: rec.percent,
                    started_at: now.clone(),
                    ended_at: None,
                    ended_by: None,
                    look: None,
                })
                .await?;
                rec.period = next;
                rec.period_started_at = Some(now.clone());
            } else {
                rec.period = 0;
                rec.period_started_at = None;
            }
        }
        rec.next_rotation_at = match (rec.rotate_every_days, &rec.period_started_at) {
            (Some(days), Some(start)) => {
                parse_rfc3339(start).map(|ms| rfc3339(ms + i64::from(days) * 86_400_000))
            }
            _ => None,
        };
        let action = if change.rotate && old.is_some() {
            "holdout.rotate"
        } else {
            "holdout.set"
        };
        self.put_global(tx, "holdout", old.as_ref(), &rec, rec.revision, action)
            .await?;
        Ok(Some(rec))
    }

    /// The organisation's key metrics, for in-process callers (the
    /// scheduled analysis): the stored list, or none.
    pub async fn key_metrics(&self) -> Result<KeyMetricsRecord, ServiceError> {
        let stored: Option<KeyMetricsRecord> = self.global("key_metrics").await?;
        Ok(stored.unwrap_or(KeyMetricsRecord {
            metrics: Vec::new(),
            revision: 0,
            updated_at: None,
        }))
    }

    /// [`RegistryService::key_metrics`] for a caller who may read.
    pub async fn get_key_metrics(&self, actor: &Actor) -> Result<KeyMetricsRecord, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        self.key_metrics().await
    }

    /// Replaces the key metrics (`metrics:write`: analysts, admins):
    /// metrics of the registry, at least one, each once; audited as
    /// `key_metrics.set`. A key metric is in use: it is not edited or
    /// deleted while listed.
    pub async fn set_key_metrics(
        &self,
        actor: &Actor,
        metrics: Vec<String>,
    ) -> Result<KeyMetricsRecord, ServiceError> {
        authorize(&self.state.store, actor, Perm::MetricsWrite, None).await?;
        let mut tx = self.begin(actor).await?;
        let defs: Vec<Stored<Value>> = tx.definitions(Kind::Metric.as_str()).await?;
        let known: Vec<&str> = defs.iter().filter_map(|d| d.def["key"].as_str()).collect();
        let list = strata_model::KeyMetrics { metrics };
        list.validate(&known).map_err(model)?;
        let old: Option<KeyMetricsRecord> = tx.definition("key_metrics", "global").await?;
        let rec = KeyMetricsRecord {
            metrics: list.metrics,
            revision: old.as_ref().map_or(0, |o| o.revision) + 1,
            updated_at: Some(rfc3339(tx.now)),
        };
        self.put_global(
            tx,
            "key_metrics",
            old.as_ref(),
            &rec,
            rec.revision,
            "key_metrics.set",
        )
        .await?;
        Ok(rec)
    }

    /// The organisation's one definition of `kind` (key `global`), if set.
    async fn global<T: DeserializeOwned>(&self, kind: &str) -> Result<Option<T>, ServiceError> {
        self.state
            .store
            .definition(kind, "global")
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Stores `rec` as the organisation's one definition of `kind` (key
    /// `global`) at `revision`, audited as `action` with the version it
    /// replaces, and publishes the change.
    async fn put_global<T: Serialize + Sync>(
        &self,
        mut tx: WriteTx,
        kind: &str,
        old: Option<&T>,
        rec: &T,
        revision: i64,
        action: &str,
    ) -> Result<(), ServiceError> {
        tx.put_definition(kind, "global", rec, revision, false)
            .await?;
        tx.audit(
            action,
            kind,
            "global",
            old.and_then(|o| serde_json::to_value(o).ok()).as_ref(),
            serde_json::to_value(rec).ok().as_ref(),
            None,
        )
        .await?;
        self.state.publish(tx, action).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holdout(percent: f64, period: u64, next: Option<&str>) -> HoldoutRecord {
        HoldoutRecord {
            salt: "H-1".into(),
            percent,
            revision: 1,
            updated_at: "2026-01-01T00:00:00.000Z".into(),
            rotate_every_days: next.map(|_| 30),
            period,
            period_started_at: Some("2026-01-01T00:00:00.000Z".into()),
            next_rotation_at: next.map(str::to_owned),
        }
    }

    #[test]
    fn a_holdout_is_due_when_its_rotation_time_came_or_it_has_no_period() {
        let at = |t: &str| parse_rfc3339(t).unwrap();
        let scheduled = holdout(5.0, 3, Some("2026-01-31T00:00:00.000Z"));
        assert!(!holdout_due(&scheduled, at("2026-01-30T23:59:59.999Z")));
        assert!(holdout_due(&scheduled, at("2026-01-31T00:00:00.000Z")));
        assert!(
            !holdout_due(&holdout(5.0, 3, None), at("2030-01-01T00:00:00Z")),
            "by hand only"
        );
        assert!(
            holdout_due(&holdout(5.0, 0, None), at("2026-01-01T00:00:00Z")),
            "no period yet"
        );
        assert!(
            !holdout_due(
                &holdout(0.0, 0, Some("2026-01-02T00:00:00Z")),
                at("2027-01-01T00:00:00Z")
            ),
            "nothing held out"
        );
    }
}
