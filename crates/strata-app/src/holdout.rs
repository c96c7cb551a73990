//! The global holdout's part of a scheduled analysis run: what everything
//! shipped adds up to, measured without anyone running it.
//!
//! In every run, after the experiments:
//!
//! 1. **Rotation.** When the running period's scheduled rotation is due
//!    (`rotate_every_days`), the salt is rotated through the control
//!    plane's `RegistryService` as `system:holdout` (audited as
//!    `holdout.rotate`), which ends the period and starts the next.
//! 2. **Final looks.** Each ended period without its final look gets one,
//!    over all of the period — whether it ended by schedule or by hand, so
//!    a manual rotation closes its period the same way.
//! 3. **The running period.** A look when the latest is older than
//!    `--holdout-interval` (default a day), at a rotation, or when asked
//!    (`POST /api/v1/holdout/impact/refresh`, served by the scheduler's
//!    mount).
//!
//! Looks are computed by strata-analysis ([`strata_analysis::holdout`])
//! and published through the control plane's `HoldoutService` as
//! `system:analysis`, which adds the winners concluded during the period.
//! Without key metrics (`PUT /api/v1/key-metrics`) there is nothing to
//! measure: the step waits, and an ended period takes its final look once
//! they are set.

use chrono::{DateTime, Utc};
use strata_analysis::holdout::{look, HoldoutLookInput};
use strata_core::{HOLDOUT_EXPERIMENT, HOLDOUT_VARIANT, REST_VARIANT};
use strata_model::holdout::{HoldoutLook, HoldoutPeriod};
use strata_server::auth::Perm;
use strata_server::service::{Actor, HoldoutService, RegistryService};

use crate::analysis::{rfc3339, AnalysisRun, Inputs, RunFailure, RunLook, Scheduler};

impl Scheduler {
    /// The holdout's part of run `run` as of `started` (see the module);
    /// with `force`, the running period is looked at whatever its last
    /// look's age. Published looks are listed in the run as experiment
    /// `$holdout` with the period's number, failures likewise.
    pub(crate) async fn holdout(
        &self,
        inputs: &Inputs,
        started: DateTime<Utc>,
        force: bool,
        run: &mut AnalysisRun,
    ) {
        let fail = |run: &mut AnalysisRun, error: String| {
            tracing::warn!(run = run.id, error = %error, "holdout look failed");
            run.failures.push(RunFailure {
                experiment: HOLDOUT_EXPERIMENT.to_owned(),
                error,
            });
        };
        let rotator = Actor::system("holdout").granting([Perm::HoldoutWrite]);
        let rotated = match RegistryService::new(self.state.clone())
            .maintain_holdout(&rotator)
            .await
        {
            Ok(None) => return,
            Ok(Some((_, changed))) => changed,
            Err(e) => return fail(run, format!("cannot rotate the holdout: {e}")),
        };
        let service = HoldoutService::new(self.state.clone());
        let key_metrics = match RegistryService::new(self.state.clone()).key_metrics().await {
            Ok(k) => k.metrics,
            Err(e) => return fail(run, format!("cannot read the key metrics: {e}")),
        };
        if key_metrics.is_empty() {
            if force {
                fail(
                    run,
                    "no key metrics are set (PUT /api/v1/key-metrics): the holdout has nothing to measure"
                        .to_owned(),
                );
            }
            return;
        }
        let periods = match service.periods().await {
            Ok(p) => p,
            Err(e) => return fail(run, format!("cannot read the holdout's periods: {e}")),
        };
        let treatments = match service.treatments().await {
            Ok(t) => t,
            Err(e) => return fail(run, format!("cannot list the experiments: {e}")),
        };
        // Oldest first, so a period's final look precedes the next one's.
        for p in periods.iter().rev() {
            let due = if p.ended_at.is_some() {
                p.awaits_final_look()
            } else {
                // A period that started during this run (a rotation now)
                // has nothing to look at before the run's time.
                let begun =
                    strata_analysis::spec::parse_time(&p.started_at).is_some_and(|t| t < started);
                begun && (force || rotated || self.look_is_old(p, started))
            };
            if !due || p.percent <= 0.0 {
                continue;
            }
            match self
                .holdout_look(inputs, p, started, &key_metrics, &treatments)
                .await
            {
                Ok(look) => {
                    let actor =
                        Actor::system("analysis").granting([Perm::HoldoutWrite, Perm::Read]);
                    match service
                        .publish_look(&actor, p.period, look, REST_VARIANT, &key_metrics)
                        .await
                    {
                        Ok(_) => run.published.push(RunLook {
                            experiment: HOLDOUT_EXPERIMENT.to_owned(),
                            seq: p.period,
                        }),
                        Err(e) => fail(
                            run,
                            format!(
                                "cannot publish the look at holdout period {}: {e}",
                                p.period
                            ),
                        ),
                    }
                }
                Err(e) => fail(run, format!("holdout period {}: {e}", p.period)),
            }
        }
    }

    /// Whether the running period `p`'s latest look is older than the
    /// holdout interval at `now` (or it has none).
    fn look_is_old(&self, p: &HoldoutPeriod, now: DateTime<Utc>) -> bool {
        let last = p
            .look
            .as_ref()
            .and_then(|l| strata_analysis::spec::parse_time(&l.as_of));
        let interval =
            chrono::Duration::from_std(self.cfg.holdout_interval).unwrap_or(chrono::Duration::MAX);
        last.is_none_or(|t| t + interval <= now)
    }

    /// Computes the look at period `p`: all of it once ended, else up to
    /// `as_of`.
    async fn holdout_look(
        &self,
        inputs: &Inputs,
        p: &HoldoutPeriod,
        as_of: DateTime<Utc>,
        key_metrics: &[String],
        treatments: &[(String, String)],
    ) -> Result<HoldoutLook, String> {
        let time = |t: &str| {
            strata_analysis::spec::parse_time(t)
                .ok_or_else(|| format!("the stored time {t:?} is not RFC 3339"))
        };
        let start = time(&p.started_at)?;
        let end = match &p.ended_at {
            Some(t) => time(t)?,
            None => as_of,
        };
        if end <= start {
            return Err("the period has no time to look at yet".to_owned());
        }
        let input = HoldoutLookInput {
            experiment: HOLDOUT_EXPERIMENT.to_owned(),
            holdout: HOLDOUT_VARIANT.to_owned(),
            rest: REST_VARIANT.to_owned(),
            percent: p.percent,
            key_metrics: key_metrics.to_vec(),
            start,
            end,
            treatments: treatments.to_vec(),
        };
        let (results, contamination) = look(
            &input,
            &inputs.registry,
            &self.pipeline.data_source(),
            self.engine_options(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(HoldoutLook {
            as_of: rfc3339(end),
            final_look: p.ended_at.is_some(),
            results,
            contamination,
            attribution: Default::default(),
        })
    }
}
