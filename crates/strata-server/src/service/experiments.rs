//! Experiments as a service: create and edit drafts, read them, and move
//! them through the lifecycle.
//!
//! [`ExperimentService::act`] is the one implementation of submit, approve,
//! start, ramp, pause, resume, kill, conclude and archive, and
//! [`ExperimentService::create`] and [`ExperimentService::update`] those of
//! creating and editing, whether the caller is a token holder over HTTP or a
//! job inside the process.

use serde_json::Value;

use crate::auth::{random_hex, Perm};
use crate::model::{
    check_percent, ExperimentRecord, ExperimentRequest, LayerRecord, Status, VariantDef,
    DEFAULT_LAYER,
};
use crate::service::alerts::{Alert, AlertService};
use crate::service::layers::{find_free, occupied, overlapping};
use crate::service::lifecycle::{self, Action};
use crate::service::permissions::{authorize, deny};
use crate::service::registry::definition_of;
use crate::service::{Actor, ServiceError};
use crate::state::AppState;
use crate::store::{
    now_ms, parse_rfc3339, rfc3339, AuditQuery, ExperimentSelect, StoreError, WriteTx,
};

/// The longest kill reason, bytes.
const MAX_REASON_BYTES: usize = 2000;

/// The inputs of a lifecycle action beyond its name; those an action does
/// not use are ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActParams {
    /// The revision last read: the action is refused if the experiment has
    /// changed since (none: not checked).
    pub revision: Option<i64>,
    /// `start` (default: the ramp plan's first stage, else 1) and `ramp`
    /// (required): the percentage of the experiment's range that is
    /// assigned.
    pub ramp_percent: Option<f64>,
    /// `kill` (required), `pause` and `ramp` (optional): why; audited.
    pub reason: Option<String>,
    /// `conclude`: the variant rolled out to every targeted unit, or none to
    /// revert.
    pub winner: Option<String>,
}

/// The inputs an action needs, checked.
struct Checked {
    ramp: Option<f64>,
    reason: Option<String>,
}

fn check_params(action: Action, params: &ActParams) -> Result<Checked, ServiceError> {
    let mut checked = Checked {
        ramp: None,
        reason: None,
    };
    match action {
        Action::Start | Action::Ramp => {
            let p = match (params.ramp_percent, action) {
                (Some(p), _) => p,
                // The ramp plan's first stage, or 1 %: decided by `act`.
                (None, Action::Start) => return Ok(checked),
                (None, _) => {
                    return Err(ServiceError::validation(
                        "ramp_percent",
                        "ramp_percent is required",
                    ))
                }
            };
            check_percent("ramp_percent", p).map_err(|e| {
                ServiceError::validation(
                    e.field.unwrap_or_else(|| "ramp_percent".into()),
                    e.message,
                )
            })?;
            checked.ramp = Some(p);
            // A ramp may say why (the guardrail monitor's ramp plan does).
            if let Some(r) = params
                .reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
            {
                if r.len() > MAX_REASON_BYTES {
                    return Err(ServiceError::validation(
                        "reason",
                        "reason must be at most 2000 bytes",
                    ));
                }
                checked.reason = Some(r.to_owned());
            }
        }
        Action::Kill | Action::Pause => {
            let r = params.reason.as_deref().unwrap_or("").trim();
            if r.is_empty() {
                if action == Action::Pause {
                    return Ok(checked);
                }
                return Err(ServiceError::validation(
                    "reason",
                    "reason must not be empty",
                ));
            }
            if r.len() > MAX_REASON_BYTES {
                return Err(ServiceError::validation(
                    "reason",
                    "reason must be at most 2000 bytes",
                ));
            }
            checked.reason = Some(r.to_owned());
        }
        _ => {}
    }
    Ok(checked)
}

fn to_value(e: &ExperimentRecord) -> Value {
    serde_json::to_value(e).unwrap_or(Value::Null)
}

/// Checks the metric and guardrail references of a request against the registry.
async fn check_references(tx: &mut WriteTx, req: &ExperimentRequest) -> Result<(), ServiceError> {
    if tx
        .definition::<Value>("metric", &req.primary_metric)
        .await?
        .is_none()
    {
        return Err(ServiceError::validation(
            "primary_metric",
            format!(
                "primary_metric {:?} is not in the metric registry",
                req.primary_metric
            ),
        ));
    }
    for (i, m) in req.secondary_metrics.iter().enumerate() {
        if tx.definition::<Value>("metric", m).await?.is_none() {
            return Err(ServiceError::validation(
                format!("secondary_metrics[{i}]"),
                format!("secondary metric {m:?} is not in the metric registry"),
            ));
        }
    }
    // Entries name guardrail definitions or metrics; the model resolves
    // them to the metrics watched and refuses unknown and ambiguous names.
    let mut defs = Vec::new();
    let mut metrics = Vec::new();
    for g in &req.guardrails {
        if let Some(Value::Object(doc)) = tx.definition::<Value>("guardrail", g).await? {
            let def: strata_model::GuardrailDef = serde_json::from_value(definition_of(doc))
                .map_err(|e| ServiceError::Internal(format!("stored guardrail {g:?}: {e}")))?;
            defs.push(def);
        }
        if tx.definition::<Value>("metric", g).await?.is_some() {
            metrics.push(g.as_str());
        }
    }
    strata_model::guardrail::resolve(&req.guardrails, &defs, &metrics)
        .map_err(|e| ServiceError::validation(e.field(), e.to_string()))?;
    Ok(())
}

/// `base` with the definition fields of a validated request (the fields a
/// draft may change); identity, lifecycle and audit fields stay those of
/// `base`.
fn with_definition(
    base: ExperimentRecord,
    req: ExperimentRequest,
    layer: Option<String>,
    range: Option<[u16; 2]>,
    variants: Vec<VariantDef>,
) -> ExperimentRecord {
    ExperimentRecord {
        name: req.name,
        hypothesis: req.hypothesis,
        description: req.description,
        owner_team: req.owner_team,
        unit: req.unit,
        fallback_unit: req.fallback_unit,
        sticky: req.sticky,
        include_bots: req.include_bots,
        layer,
        range,
        surfaces: req.surfaces,
        targeting: req.targeting.filter(|t| !t.is_null()),
        variants,
        primary_metric: req.primary_metric,
        secondary_metrics: req.secondary_metrics,
        guardrails: req.guardrails,
        mde: req.mde,
        planned_units: req.planned_units,
        alpha: req.alpha,
        sequential: req.sequential,
        analysis: req.analysis,
        multiple_testing: req.multiple_testing,
        cuped: req.cuped,
        segments: req.segments,
        min_duration_days: req.min_duration_days,
        bayesian: req.bayesian,
        srm_action: req.srm_action,
        requires_approval: req.requires_approval,
        respect_holdout: req.respect_holdout,
        ramp_plan: req.ramp_plan,
        ..base
    }
}

/// What [`ExperimentService::explain`] found for one context.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Lookup {
    /// The config version evaluated.
    pub version: u64,
    /// Every experiment of the served config, in its order.
    pub experiments: Vec<LookupRow>,
}

/// One experiment's outcome for a context.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LookupRow {
    /// The experiment.
    pub experiment: String,
    /// Its layer.
    pub layer: Option<String>,
    /// The variant served, when assigned.
    pub variant: Option<String>,
    /// `assigned`, or why not: `not_servable`, `not_on_surface`,
    /// `no_unit`, `held_out`, `outside_layer_range`, `targeting_not_met`,
    /// `not_in_ramp`.
    pub outcome: String,
    /// The outcome in a sentence.
    pub message: String,
    /// The outcome with its figures (buckets, range, ramp, the failed rule).
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// The largest page [`ExperimentService::list`] returns.
pub const MAX_PAGE: usize = 500;

/// Which experiments [`ExperimentService::list`] returns; every field set
/// must match (none set: all of them).
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentFilter {
    /// Any of these statuses.
    pub statuses: Option<Vec<Status>>,
    /// In this layer.
    pub layer: Option<String>,
    /// Owned by this team.
    pub owner_team: Option<String>,
    /// Running on this surface (an experiment without surfaces runs on all).
    pub surface: Option<String>,
    /// Case-insensitive text in the key, name, hypothesis or description.
    pub text: Option<String>,
    /// Created at or after, ms since the epoch.
    pub created_after: Option<i64>,
    /// Created before, ms since the epoch.
    pub created_before: Option<i64>,
    /// Page size, 1 to [`MAX_PAGE`].
    pub limit: usize,
    /// Matching experiments skipped before the page.
    pub offset: usize,
}

impl Default for ExperimentFilter {
    fn default() -> Self {
        Self {
            statuses: None,
            layer: None,
            owner_team: None,
            surface: None,
            text: None,
            created_after: None,
            created_before: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// A page of experiments from [`ExperimentService::list`].
#[derive(Debug, Clone)]
pub struct ExperimentPage {
    /// The page, in creation order.
    pub items: Vec<ExperimentRecord>,
    /// How many experiments match the filter in all.
    pub total: usize,
}

/// Reads experiments and runs their lifecycle.
#[derive(Debug, Clone)]
pub struct ExperimentService {
    state: AppState,
}

impl ExperimentService {
    /// The service over a server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Counts a store failure and wraps it.
    fn store_error(&self, e: StoreError) -> ServiceError {
        self.state.service_store_error(e)
    }

    /// Resolves layer and range (allocating one for `size`), checking overlaps.
    async fn resolve_range(
        &self,
        tx: &mut WriteTx,
        req: &ExperimentRequest,
    ) -> Result<(Option<String>, Option<[u16; 2]>), ServiceError> {
        let layer = match (&req.layer, req.range.is_some() || req.size.is_some()) {
            (Some(l), true) => l.clone(),
            (None, true) => DEFAULT_LAYER.to_owned(),
            (Some(_), false) => {
                return Err(ServiceError::validation(
                    "range",
                    "an experiment in a layer needs a range or a size",
                ))
            }
            (None, false) => return Ok((None, None)),
        };
        if tx
            .definition::<LayerRecord>("layer", &layer)
            .await?
            .is_none()
        {
            return Err(ServiceError::validation(
                "layer",
                format!("layer {layer:?} does not exist"),
            ));
        }
        let taken = occupied(
            &tx.experiments_in_layer(&layer).await?,
            tx.now,
            self.state.settings.range_cooldown,
            Some(&req.key),
        );
        let range = if let Some([s, e]) = req.range {
            // validate() checked 0 <= s < e <= 1000.
            let r = [s as u16, e as u16];
            let overlaps = overlapping(&taken, r);
            if !overlaps.is_empty() {
                return Err(ServiceError::RangeOverlap {
                    layer,
                    range: r,
                    overlaps,
                });
            }
            r
        } else {
            let size = req.size.unwrap_or(0) as u16;
            find_free(&taken, size).ok_or_else(|| {
                ServiceError::validation(
                    "size",
                    format!("layer {layer:?} has no free range of size {size}"),
                )
            })?
        };
        Ok((Some(layer), Some(range)))
    }

    /// Creates a draft from `req` for `actor` (needs `experiments:write` on
    /// the owning team); audited as `experiment.create`.
    pub async fn create(
        &self,
        actor: &Actor,
        req: ExperimentRequest,
    ) -> Result<ExperimentRecord, ServiceError> {
        let store = &self.state.store;
        authorize(store, actor, Perm::ExperimentsWrite, Some(&req.owner_team)).await?;
        let variants = req.validate().map_err(ServiceError::from_request)?;
        if req.revision.is_some() {
            return Err(ServiceError::validation(
                "revision",
                "revision is only for updates",
            ));
        }
        let mut tx = store
            .begin_write(actor)
            .await
            .map_err(|e| self.store_error(e))?;
        if tx.experiment_key_taken(&req.key).await? {
            return Err(ServiceError::AlreadyExists {
                what: "experiment",
                key: req.key.clone(),
            });
        }
        check_references(&mut tx, &req).await?;
        let (layer, range) = self.resolve_range(&mut tx, &req).await?;
        let now = rfc3339(tx.now);
        let hex = |n| random_hex(n).map_err(|e| ServiceError::Internal(e.message));
        let base = ExperimentRecord {
            key: req.key.clone(),
            status: Status::Draft,
            revision: 1,
            flag: format!("f_{}", hex(6)?),
            salt: match &req.salt {
                Some(s) => s.clone(),
                None => hex(8)?,
            },
            created_by: actor.audit_name().to_owned(),
            created_by_key: actor.audit_key().to_owned(),
            created_at: now.clone(),
            updated_at: now,
            version: tx.version,
            ..ExperimentRecord::default()
        };
        let rec = with_definition(base, req, layer, range, variants);
        tx.insert_experiment(&rec).await?;
        tx.audit(
            "experiment.create",
            "experiment",
            &rec.key,
            None,
            Some(&to_value(&rec)),
            None,
        )
        .await?;
        self.state
            .publish(tx, &format!("create experiment {}", rec.key))
            .await?;
        Ok(rec)
    }

    /// Replaces the definition of draft `key` with `req`, whose `revision`
    /// must be the current one (needs `experiments:write` on the owning
    /// team, and on the new one if it changes); audited as
    /// `experiment.update`.
    pub async fn update(
        &self,
        actor: &Actor,
        key: &str,
        req: ExperimentRequest,
    ) -> Result<ExperimentRecord, ServiceError> {
        let store = &self.state.store;
        authorize(store, actor, Perm::ExperimentsWrite, None).await?;
        let variants = req.validate().map_err(ServiceError::from_request)?;
        if req.key != key {
            return Err(ServiceError::validation(
                "key",
                "the key of an experiment cannot change",
            ));
        }
        let Some(revision) = req.revision else {
            return Err(ServiceError::validation(
                "revision",
                "revision is required on update (the revision last read)",
            ));
        };
        let not_found = || ServiceError::NotFound {
            what: "experiment",
            key: key.to_owned(),
        };
        let pre = store
            .experiment(key)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(not_found)?;
        authorize(store, actor, Perm::ExperimentsWrite, Some(&pre.owner_team)).await?;
        if req.owner_team != pre.owner_team {
            authorize(store, actor, Perm::ExperimentsWrite, Some(&req.owner_team)).await?;
        }
        let mut tx = store
            .begin_write(actor)
            .await
            .map_err(|e| self.store_error(e))?;
        let old = tx.experiment(key).await?.ok_or_else(not_found)?;
        if old.owner_team != pre.owner_team {
            return Err(ServiceError::Concurrent {
                what: "experiment",
                key: key.to_owned(),
            });
        }
        if old.revision != revision {
            return Err(ServiceError::StaleRevision {
                expected: revision,
                actual: old.revision,
            });
        }
        if old.status != Status::Draft {
            return Err(ServiceError::Frozen {
                key: key.to_owned(),
                status: old.status,
            });
        }
        if req.salt.as_ref().is_some_and(|s| *s != old.salt) {
            return Err(ServiceError::validation(
                "salt",
                "the salt is set when the experiment is created and never changes",
            ));
        }
        check_references(&mut tx, &req).await?;
        let (layer, range) = self.resolve_range(&mut tx, &req).await?;
        let base = ExperimentRecord {
            revision: old.revision + 1,
            updated_at: rfc3339(tx.now),
            version: tx.version,
            ..old.clone()
        };
        let rec = with_definition(base, req, layer, range, variants);
        tx.update_experiment(&rec, false).await?;
        tx.audit(
            "experiment.update",
            "experiment",
            key,
            Some(&to_value(&old)),
            Some(&to_value(&rec)),
            None,
        )
        .await?;
        self.state
            .publish(tx, &format!("update experiment {key}"))
            .await?;
        self.watch_changes(key).await;
        Ok(rec)
    }

    /// The experiments matching `filter`, one page of them in creation
    /// order, with how many match in all (needs `config:read`). The API's
    /// `GET /api/v1/experiments` and the portal's list are both this.
    pub async fn list(
        &self,
        actor: &Actor,
        filter: &ExperimentFilter,
    ) -> Result<ExperimentPage, ServiceError> {
        let store = &self.state.store;
        authorize(store, actor, Perm::Read, None).await?;
        if filter.limit == 0 || filter.limit > MAX_PAGE {
            return Err(ServiceError::validation(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        let text = filter.text.as_ref().map(|t| t.to_lowercase());
        let mut select = ExperimentSelect {
            statuses: filter
                .statuses
                .as_ref()
                .map(|s| s.iter().map(|st| st.as_str().to_owned()).collect()),
            layer: filter.layer.clone(),
            owner_team: filter.owner_team.clone(),
            created_after: filter.created_after,
            created_before: filter.created_before,
            contains: None,
        };
        // Filters on indexed columns only: the store reads the page alone.
        if text.is_none() && filter.surface.is_none() {
            let (items, total) = store
                .select_experiments(&select, Some((filter.offset, filter.limit)))
                .await
                .map_err(|e| self.store_error(e))?;
            return Ok(ExperimentPage { items, total });
        }
        // Text the stored JSON holds verbatim narrows the documents read
        // (JSON escapes quotes, backslashes and control characters, and the
        // databases lowercase only ASCII alike); the fields are checked
        // here either way.
        select.contains = text.clone().filter(|t| {
            t.chars()
                .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\')
        });
        let (candidates, _) = store
            .select_experiments(&select, None)
            .await
            .map_err(|e| self.store_error(e))?;
        let mut total = 0;
        let mut items = Vec::new();
        for e in candidates {
            let matches = filter
                .surface
                .as_ref()
                // An experiment without surfaces runs on every surface.
                .is_none_or(|s| e.surfaces.is_empty() || e.surfaces.contains(s))
                && text.as_ref().is_none_or(|t| {
                    [&e.key, &e.name, &e.hypothesis, &e.description]
                        .iter()
                        .any(|f| f.to_lowercase().contains(t.as_str()))
                });
            if matches {
                if total >= filter.offset && items.len() < filter.limit {
                    items.push(e);
                }
                total += 1;
            }
        }
        Ok(ExperimentPage { items, total })
    }

    /// Which experiments of the served config assign the unit of
    /// `context` on `surface`, and why every other one does not (needs
    /// `config:read`): strata-core's explain mode over the live compiled
    /// snapshot, the same evaluation the SDKs run.
    pub async fn explain(
        &self,
        actor: &Actor,
        context: &strata_core::Context,
        surface: Option<&str>,
    ) -> Result<Lookup, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        let live = self.state.live.load();
        let experiments = live
            .compiled
            .explain(context, surface)
            .into_iter()
            .map(|x| {
                let detail = serde_json::to_value(&x.outcome)
                    .map_err(|e| ServiceError::Internal(format!("explain: {e}")))?;
                let variant = match &x.outcome {
                    strata_core::Outcome::Assigned { variant, .. } => Some((*variant).to_owned()),
                    _ => None,
                };
                Ok(LookupRow {
                    experiment: x.experiment.to_owned(),
                    layer: x.layer.map(str::to_owned),
                    variant,
                    outcome: detail
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("unexplained")
                        .to_owned(),
                    message: x.outcome.message(),
                    detail,
                })
            })
            .collect::<Result<_, ServiceError>>()?;
        Ok(Lookup {
            version: live.version,
            experiments,
        })
    }

    /// The audit trail of experiment `key`, newest first, at most `limit`
    /// entries (needs `config:read`, as the experiment itself).
    pub async fn audit(
        &self,
        actor: &Actor,
        key: &str,
        limit: i64,
    ) -> Result<Vec<crate::store::AuditEntry>, ServiceError> {
        let store = &self.state.store;
        authorize(store, actor, Perm::Read, None).await?;
        store
            .audit(&AuditQuery {
                entity_type: Some("experiment".into()),
                entity_key: Some(key.to_owned()),
                limit,
                ..AuditQuery::default()
            })
            .await
            .map_err(|e| self.store_error(e))
    }

    /// The experiment `key` (needs `config:read`).
    pub async fn get(&self, actor: &Actor, key: &str) -> Result<ExperimentRecord, ServiceError> {
        let store = &self.state.store;
        authorize(store, actor, crate::auth::Perm::Read, None).await?;
        store
            .experiment(key)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| ServiceError::NotFound {
                what: "experiment",
                key: key.to_owned(),
            })
    }

    /// Applies `action` to experiment `key` for `actor`: checks the inputs,
    /// the permission (on the owning team), the transition and its
    /// preconditions, then writes, audits as `experiment.<action>` under the
    /// actor's name and publishes the new snapshot. Returns the experiment
    /// as changed.
    pub async fn act(
        &self,
        actor: &Actor,
        key: &str,
        action: Action,
        params: ActParams,
    ) -> Result<ExperimentRecord, ServiceError> {
        let checked = check_params(action, &params)?;
        let store = &self.state.store;
        let perm = action.permission();
        let not_found = || ServiceError::NotFound {
            what: "experiment",
            key: key.to_owned(),
        };
        // Permission checks before the write transaction: a denial is
        // audited, which needs the writer lock the transaction would hold.
        authorize(store, actor, perm, None).await?;
        let pre = store
            .experiment(key)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(not_found)?;
        authorize(store, actor, perm, Some(&pre.owner_team)).await?;
        if action == Action::Approve
            && pre.status == Status::Submitted
            && pre.requires_approval
            && actor.key_id() == Some(pre.created_by_key.as_str())
        {
            return Err(deny(
                store,
                actor,
                perm,
                Some("the approver must not be the author".to_owned()),
            )
            .await);
        }

        let mut tx = store
            .begin_write(actor)
            .await
            .map_err(|e| self.store_error(e))?;
        let old = tx
            .experiment(key)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(not_found)?;
        if old.owner_team != pre.owner_team {
            return Err(ServiceError::Concurrent {
                what: "experiment",
                key: key.to_owned(),
            });
        }
        if let Some(r) = params.revision {
            if r != old.revision {
                return Err(ServiceError::StaleRevision {
                    expected: r,
                    actual: old.revision,
                });
            }
        }
        let to = lifecycle::next(old.status, old.requires_approval, action).ok_or_else(|| {
            ServiceError::IllegalTransition {
                action,
                status: old.status,
                allowed: lifecycle::allowed_next(old.status, old.requires_approval),
            }
        })?;
        let mut e = old.clone();
        let now = rfc3339(tx.now);
        match action {
            Action::Approve => e.approved_by = Some(actor.audit_name().to_owned()),
            Action::Start => {
                e.ramp_percent = checked
                    .ramp
                    .or(e.ramp_plan.first().map(|s| s.percent))
                    .unwrap_or(1.0);
                e.started_at = Some(now.clone());
            }
            Action::Ramp => {
                let p = checked.ramp.unwrap_or(e.ramp_percent);
                if p < e.ramp_percent {
                    return Err(ServiceError::RampDown {
                        from: e.ramp_percent,
                        to: p,
                    });
                }
                e.ramp_percent = p;
            }
            Action::Kill => {
                e.kill_reason = checked.reason.clone();
                e.ended_at = Some(now.clone());
            }
            Action::Conclude => {
                if let Some(w) = &params.winner {
                    if !e.variants.iter().any(|v| &v.key == w) {
                        return Err(ServiceError::validation(
                            "winner",
                            format!("winner {w:?} is not a variant of {key:?}"),
                        ));
                    }
                }
                e.winner = params.winner.clone();
                e.ended_at.get_or_insert_with(|| now.clone());
            }
            Action::Archive => {
                e.ended_at.get_or_insert_with(|| now.clone());
            }
            Action::Submit | Action::Pause | Action::Resume => {}
        }
        e.status = to;
        e.revision += 1;
        e.updated_at = now;
        e.version = tx.version;
        tx.update_experiment(&e, false)
            .await
            .map_err(|e| self.store_error(e))?;
        tx.audit(
            &format!("experiment.{}", action.as_str()),
            "experiment",
            key,
            Some(&to_value(&old)),
            Some(&to_value(&e)),
            checked.reason.as_deref(),
        )
        .await
        .map_err(|e| self.store_error(e))?;
        self.state
            .publish(tx, &format!("{} experiment {key}", action.as_str()))
            .await?;
        self.watch_changes(key).await;
        Ok(e)
    }

    /// Raises `experiment.change_anomaly` at an experiment's
    /// [`CHANGE_ANOMALY_CHANGES`]th change within an hour (seed Part 13: an
    /// experiment changed that often is being fiddled with, or fought
    /// over). Once per burst: the next alert needs the count to drop below
    /// and reach it again.
    async fn watch_changes(&self, key: &str) {
        let q = AuditQuery {
            entity_type: Some("experiment".into()),
            entity_key: Some(key.into()),
            action: None,
            before_seq: None,
            limit: 50,
        };
        let entries = match self.state.store.audit(&q).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(experiment = key, error = %e, "cannot count an experiment's changes");
                return;
            }
        };
        let since = now_ms() - 3_600_000;
        let changes: Vec<_> = entries
            .iter()
            .filter(|e| e.action.starts_with("experiment."))
            .filter(|e| parse_rfc3339(&e.at).is_some_and(|t| t >= since))
            .collect();
        if changes.len() != CHANGE_ANOMALY_CHANGES {
            return;
        }
        let actions: Vec<&str> = changes.iter().rev().map(|e| e.action.as_str()).collect();
        let actors: std::collections::BTreeSet<&str> =
            changes.iter().map(|e| e.actor.as_str()).collect();
        AlertService::new(self.state.clone())
            .raise(Alert {
                event: "experiment.change_anomaly",
                experiment: Some(key.to_owned()),
                text: format!(
                    "{key} changed {CHANGE_ANOMALY_CHANGES} times within an hour ({}) by {}",
                    actions.join(", "),
                    actors.into_iter().collect::<Vec<_>>().join(", ")
                ),
                fields: serde_json::json!({"changes": actions, "window_minutes": 60}),
            })
            .await;
    }
}

/// Changes to one experiment within an hour that raise
/// `experiment.change_anomaly`.
pub const CHANGE_ANOMALY_CHANGES: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked_per_action() {
        let p = |ramp, reason: Option<&str>| ActParams {
            ramp_percent: ramp,
            reason: reason.map(str::to_owned),
            ..ActParams::default()
        };
        // A start without a percentage takes the ramp plan's first stage
        // (or 1 %), which `act` knows.
        assert_eq!(
            check_params(Action::Start, &p(None, None)).unwrap().ramp,
            None
        );
        let ramp = check_params(Action::Ramp, &p(Some(5.0), Some(" stage 2 "))).unwrap();
        assert_eq!(
            (ramp.ramp, ramp.reason.as_deref()),
            (Some(5.0), Some("stage 2"))
        );
        let field = |r: Result<Checked, ServiceError>| match r {
            Err(ServiceError::Validation { field, .. }) => field,
            _ => String::new(),
        };
        assert_eq!(
            field(check_params(Action::Ramp, &p(None, None))),
            "ramp_percent"
        );
        assert_eq!(
            field(check_params(Action::Ramp, &p(Some(101.0), None))),
            "ramp_percent"
        );
        assert_eq!(field(check_params(Action::Kill, &p(None, None))), "reason");
        assert_eq!(
            field(check_params(Action::Kill, &p(None, Some("  ")))),
            "reason"
        );
        let long = "x".repeat(2001);
        assert_eq!(
            field(check_params(Action::Kill, &p(None, Some(&long)))),
            "reason"
        );
        assert_eq!(
            check_params(Action::Kill, &p(None, Some(" errors ")))
                .unwrap()
                .reason
                .as_deref(),
            Some("errors")
        );
        assert!(check_params(Action::Pause, &p(None, None)).is_ok());
    }
}
