//! The global holdout's impact: its periods and their looks
//! (`GET /api/v1/holdout/impact`), each look with the winners concluded
//! during its period beside the lift the holdout measures.
//!
//! The scheduled analysis computes a look (strata-analysis) and publishes
//! it here as `system:analysis`; the attribution is added here, from the
//! experiments and looks the control plane keeps, so it is the same
//! whoever computed the look.

use serde::Serialize;
use strata_model::holdout::{Attribution, HoldoutLook, HoldoutPeriod, Lift, ShippedWinner};
use strata_model::results::Results;

use crate::auth::Perm;
use crate::model::{HoldoutRecord, Status};
use crate::service::permissions::{self, authorize};
use crate::service::registry::RegistryService;
use crate::service::{Actor, ServiceError};
use crate::state::AppState;
use crate::store::parse_rfc3339;

/// What the holdout has measured: its setting, the key metrics and every
/// period, the latest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HoldoutImpact {
    /// The holdout; none when none was ever set.
    pub holdout: Option<HoldoutRecord>,
    /// The key metrics its looks measure (`PUT /api/v1/key-metrics`).
    pub key_metrics: Vec<String>,
    /// Its periods, the latest first, each with its latest (or final) look.
    #[schema(value_type = Vec<Object>)]
    pub periods: Vec<HoldoutPeriod>,
}

/// Reads the holdout's periods and publishes their looks.
#[derive(Debug, Clone)]
pub struct HoldoutService {
    state: AppState,
}

impl HoldoutService {
    /// The service over `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// The holdout, the key metrics and every period (anyone who may read).
    pub async fn impact(&self, actor: &Actor) -> Result<HoldoutImpact, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        let registry = RegistryService::new(self.state.clone());
        let holdout = match registry.holdout(actor).await {
            Ok(h) => Some(h),
            Err(ServiceError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let mut periods = self.periods().await?;
        // A winner's own lifts are its team's results: shown to those who
        // may read them, withheld (`lifts` empty, `withheld` true) from the
        // others. The sums per metric are the organisation's figure.
        let teams: std::collections::HashMap<String, String> = self
            .experiments()
            .await?
            .into_iter()
            .map(|e| (e.key, e.owner_team))
            .collect();
        for w in periods
            .iter_mut()
            .filter_map(|p| p.look.as_mut())
            .flat_map(|l| l.attribution.winners.iter_mut())
        {
            let team = teams.get(&w.experiment).map(String::as_str);
            if permissions::check(actor, Perm::ResultsRead, team).is_err() {
                w.lifts.clear();
                w.withheld = true;
            }
        }
        Ok(HoldoutImpact {
            holdout,
            key_metrics: registry.key_metrics().await?.metrics,
            periods,
        })
    }

    /// Every period, the latest first (for in-process callers).
    pub async fn periods(&self) -> Result<Vec<HoldoutPeriod>, ServiceError> {
        self.state
            .store
            .holdout_periods()
            .await
            .map_err(|e| self.state.service_store_error(e))
    }

    /// Every experiment that is not deleted.
    async fn experiments(&self) -> Result<Vec<crate::model::ExperimentRecord>, ServiceError> {
        self.state
            .store
            .experiments()
            .await
            .map_err(|e| self.state.service_store_error(e))
    }

    /// The treatments no held-out unit may see: every variant but the
    /// control of each experiment that respects the holdout and has
    /// started, as `(experiment, variant)`.
    pub async fn treatments(&self) -> Result<Vec<(String, String)>, ServiceError> {
        let experiments = self.experiments().await?;
        let mut out = Vec::new();
        for e in experiments
            .iter()
            .filter(|e| e.respect_holdout && e.started_at.is_some())
        {
            let control = e.control_index();
            for (i, v) in e.variants.iter().enumerate() {
                if i != control {
                    out.push((e.key.clone(), v.key.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Publishes `look` as period `period`'s latest (`holdout:write`:
    /// admins, and the scheduled analysis), with the attribution of the
    /// period added: the experiments respecting the holdout concluded with
    /// a winner other than their control during the period (up to the
    /// look's `as_of`), each with the lifts on the key metrics of its own
    /// latest look. Audited as `holdout.look`; refused once the period has
    /// its final look.
    pub async fn publish_look(
        &self,
        actor: &Actor,
        period: u64,
        mut look: HoldoutLook,
        rest: &str,
        key_metrics: &[String],
    ) -> Result<HoldoutLook, ServiceError> {
        authorize(&self.state.store, actor, Perm::HoldoutWrite, None).await?;
        let periods = self.periods().await?;
        let p =
            periods
                .iter()
                .find(|p| p.period == period)
                .ok_or_else(|| ServiceError::NotFound {
                    what: "holdout period",
                    key: period.to_string(),
                })?;
        let winners = self.winners(p, &look.as_of, key_metrics).await?;
        look.attribution = Attribution::new(winners, &look.results, rest, key_metrics);
        self.state
            .store
            .save_holdout_look(period, &look, actor)
            .await
            .map_err(|e| self.state.service_store_error(e))?;
        Ok(look)
    }

    /// The winners concluded during `p` up to `as_of`, by conclusion time.
    async fn winners(
        &self,
        p: &HoldoutPeriod,
        as_of: &str,
        key_metrics: &[String],
    ) -> Result<Vec<ShippedWinner>, ServiceError> {
        let from = parse_rfc3339(&p.started_at).unwrap_or(i64::MIN);
        let to = p
            .ended_at
            .as_deref()
            .or(Some(as_of))
            .and_then(parse_rfc3339)
            .unwrap_or(i64::MAX);
        let experiments = self.experiments().await?;
        let mut out = Vec::new();
        for e in experiments {
            let Some(winner) = e.winner.clone() else {
                continue;
            };
            let control = e.variants.get(e.control_index()).map(|v| v.key.as_str());
            let ended = e.ended_at.as_deref().and_then(parse_rfc3339);
            if e.status != Status::Concluded
                || !e.respect_holdout
                || control == Some(winner.as_str())
                || !ended.is_some_and(|t| from <= t && t <= to)
            {
                continue;
            }
            let latest = self
                .state
                .store
                .results(&e.key, None)
                .await
                .map_err(|x| self.state.service_store_error(x))?;
            let (seq, lifts) = match latest {
                Some((meta, doc)) => {
                    let lifts = serde_json::from_value::<Results>(doc)
                        .map(|r| {
                            key_metrics
                                .iter()
                                .filter_map(|k| Lift::of(&r, k, &winner).map(|l| (k.clone(), l)))
                                .collect()
                        })
                        .unwrap_or_default();
                    (Some(meta.seq), lifts)
                }
                None => (None, Default::default()),
            };
            out.push(ShippedWinner {
                experiment: e.key,
                winner,
                concluded_at: e.ended_at.unwrap_or_default(),
                seq,
                lifts,
                withheld: false,
            });
        }
        out.sort_by(|a, b| (&a.concluded_at, &a.experiment).cmp(&(&b.concluded_at, &b.experiment)));
        Ok(out)
    }
}
