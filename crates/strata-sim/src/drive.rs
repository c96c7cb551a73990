//! The driver: simulated users visiting through the real path. Each visit
//! reads the user's assignments from the in-process Rust SDK, logs the
//! exposures the SDK logs (except those a scenario's logging bug loses),
//! behaves under the effects of the variants it is served, and tracks what
//! it does as events that the SDK ships to `/collect`.
//!
//! The pace follows the process's clock (strata-clock): `visits_per_user_day`
//! visits per user per simulated day, so that under a simulated clock a day
//! of traffic passes in seconds; or a fixed number of visits per real second
//! (`rate`), as a load generator against any server.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use strata_sdk::{Client, Reason};

use crate::behaviour::{visit, Baseline, Effect};
use crate::population::{mix, Population, User};
use crate::scenario::{LoggingBug, Scenario};
use crate::SimError;

/// What to drive, where.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// The server the SDK reads its config from.
    pub server: String,
    /// Where `/collect/v1/*` is (default: the server).
    pub collector: Option<String>,
    /// The SDK key.
    pub sdk_key: String,
    /// The ingestion key.
    pub ingest_key: String,
    /// The users.
    pub population: Population,
    /// Their behaviour outside any experiment.
    pub baseline: Baseline,
    /// The experiments they meet, with the effects planted in them.
    pub scenarios: Vec<Scenario>,
    /// Visits per user per day of the process's clock.
    pub visits_per_user_day: f64,
    /// Instead: visits per real second.
    pub rate: Option<f64>,
    /// Seed of the visits (which user, what they do).
    pub seed: u64,
}

/// Counters of a drive, readable while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    visits: AtomicU64,
    events: AtomicU64,
    exposures_lost: AtomicU64,
}

impl Progress {
    /// Visits so far.
    pub fn visits(&self) -> u64 {
        self.visits.load(Ordering::Relaxed)
    }
    /// Events tracked so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    /// Exposures a planted logging bug kept from being logged.
    pub fn exposures_lost(&self) -> u64 {
        self.exposures_lost.load(Ordering::Relaxed)
    }
}

/// What a finished drive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Visits.
    pub visits: u64,
    /// Events tracked.
    pub events: u64,
    /// Exposures the SDK delivered.
    pub exposures_delivered: u64,
    /// Events the SDK delivered.
    pub events_delivered: u64,
    /// Records the SDK dropped (buffer full or too old).
    pub dropped: u64,
}

/// How often the driver catches up with the clock.
const TICK: Duration = Duration::from_millis(50);

/// At most this much real time of visits is caught up in one tick (after a
/// stall, the backlog is skipped rather than sent in one burst).
const MAX_CATCH_UP: Duration = Duration::from_secs(2);

/// Drives visits until `stop` completes, then flushes the SDK (for at most
/// ten seconds) and reports.
pub async fn drive(
    cfg: DriveConfig,
    progress: Arc<Progress>,
    stop: impl Future<Output = ()>,
) -> Result<Report, SimError> {
    let speed = strata_clock::speed();
    let mut builder = Client::builder(&cfg.server, &cfg.sdk_key)
        .ingest_key(cfg.ingest_key.clone())
        .exposure_attributes(["plan", "platform", "country"])
        // The buffer's age bound is on the process's clock: keep ten real
        // minutes of records however fast a simulated clock runs.
        .buffer_bounds(1_000_000, Duration::from_secs_f64(600.0 * speed));
    if let Some(c) = &cfg.collector {
        builder = builder.collector_url(c.clone());
    }
    let client = builder.build().map_err(SimError::Sdk)?;
    if !client.ready(Duration::from_secs(30)).await {
        return Err(SimError::NoConfig(cfg.server.clone()));
    }
    let mut sim = Visits::new(&cfg);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_sim, mut last_real) = (strata_clock::now(), Instant::now());
    let mut owed = 0.0f64;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let (now_sim, now_real) = (strata_clock::now(), Instant::now());
        let real = now_real.duration_since(last_real).min(MAX_CATCH_UP);
        let simulated = now_sim
            .duration_since(last_sim)
            .unwrap_or_default()
            .min(MAX_CATCH_UP.mul_f64(speed));
        (last_sim, last_real) = (now_sim, now_real);
        owed += match cfg.rate {
            Some(r) => r * real.as_secs_f64(),
            None => {
                f64::from(cfg.population.size()) * cfg.visits_per_user_day * simulated.as_secs_f64()
                    / 86_400.0
            }
        };
        let n = owed.floor();
        owed -= n;
        let day = days(now_sim);
        for _ in 0..n as u64 {
            sim.visit(&client, day, &progress);
        }
    }
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        client.shutdown(Duration::from_secs(10)),
    )
    .await
    .ok();
    let s = client.stats();
    Ok(Report {
        visits: progress.visits(),
        events: progress.events(),
        exposures_delivered: s.exposures_delivered,
        events_delivered: s.events_delivered,
        dropped: report.map_or(s.exposures_dropped + s.events_dropped, |r| r.dropped),
    })
}

/// Days since the epoch of a time on the process's clock.
fn days(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        / 86_400.0
}

/// The state of a drive between visits.
struct Visits {
    population: Population,
    baseline: Baseline,
    scenarios: Vec<Scenario>,
    seed: u64,
    /// Visits so far: visit `k` draws from its own stream of the seed, so
    /// the same visits happen in the same order whatever the pace.
    count: u64,
    /// Per scenario, per user: the day (on the process's clock) of the
    /// user's first exposure, or NaN.
    first_seen: Vec<Vec<f32>>,
}

impl Visits {
    fn new(cfg: &DriveConfig) -> Self {
        let users = cfg.population.size() as usize;
        Self {
            population: cfg.population,
            baseline: cfg.baseline,
            scenarios: cfg.scenarios.clone(),
            seed: cfg.seed,
            count: 0,
            first_seen: vec![vec![f32::NAN; users]; cfg.scenarios.len()],
        }
    }

    /// One visit of a user picked by activity, on day `day`.
    fn visit(&mut self, client: &Client, day: f64, progress: &Progress) {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, self.count));
        self.count += 1;
        let user = self.population.visitor(&mut rng);
        let ctx = user.context();
        let assigned = client.assignments(&ctx, None);
        let mut effect = Effect::NONE;
        for (i, s) in self.scenarios.iter().enumerate() {
            let Some(a) = assigned.get(s.key) else {
                // The app asks for the flag all the same and gets the
                // default; the SDK logs the unit's membership of the global
                // holdout (held out, or outside a ramp or targeting).
                client.variant(&ctx, s.key, "control");
                continue;
            };
            let treated = a.variant != "control";
            if lost(self.seed, i, s.logging, &user, treated) {
                progress.exposures_lost.fetch_add(1, Ordering::Relaxed);
            } else {
                // The real path: the SDK logs this exposure (once a day).
                let v = client.variant(&ctx, s.key, "control");
                if v.reason() != Reason::Assigned {
                    continue;
                }
            }
            let first = &mut self.first_seen[i][user.index as usize];
            if first.is_nan() {
                *first = day as f32;
            }
            if treated {
                effect = effect.and(&s.treatment.at(day - f64::from(*first)));
            }
        }
        let acts = visit(&self.baseline, &user, &effect, &mut rng);
        for a in &acts {
            let (kind, value) = a.event();
            client.track(&ctx, kind, value, None);
        }
        progress.visits.fetch_add(1, Ordering::Relaxed);
        progress
            .events
            .fetch_add(acts.len() as u64, Ordering::Relaxed);
    }
}

/// Whether scenario `i`'s logging bug loses `user`'s exposure: the same
/// answer for the same user every time (a bug of their setup, not of a
/// visit).
fn lost(seed: u64, i: usize, bug: LoggingBug, user: &User, treated: bool) -> bool {
    let u = (mix(seed ^ 0x5eed_1a7e, (i as u64) << 32 | u64::from(user.index)) >> 11) as f64
        / (1u64 << 53) as f64;
    match bug {
        LoggingBug::None => false,
        LoggingBug::Treatment { share } => treated && u < share,
        LoggingBug::ByPlan {
            treatment_loses,
            share,
        } => {
            let on = user.plan == treatment_loses;
            (treated == on) && u < share
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::Plan;

    #[test]
    fn a_logging_bug_hits_the_same_users_at_its_share() {
        let pop = Population::new(20_000, 4);
        let users: Vec<User> = (0..20_000).map(|i| pop.user(i)).collect();
        let share = |bug, treated, plan: Option<Plan>| {
            let hit: Vec<&User> = users
                .iter()
                .filter(|u| plan.is_none_or(|p| u.plan == p))
                .collect();
            hit.iter().filter(|u| lost(1, 2, bug, u, treated)).count() as f64 / hit.len() as f64
        };
        let t = LoggingBug::Treatment { share: 0.12 };
        assert!((share(t, true, None) - 0.12).abs() < 0.01);
        assert_eq!(share(t, false, None), 0.0);
        assert_eq!(share(LoggingBug::None, true, None), 0.0);
        let p = LoggingBug::ByPlan {
            treatment_loses: Plan::Member,
            share: 0.5,
        };
        assert!((share(p, true, Some(Plan::Member)) - 0.5).abs() < 0.02);
        assert_eq!(share(p, true, Some(Plan::Guest)), 0.0);
        assert!((share(p, false, Some(Plan::Guest)) - 0.5).abs() < 0.02);
        assert_eq!(share(p, false, Some(Plan::Member)), 0.0);
        // The same user, the same answer.
        assert!(users
            .iter()
            .all(|u| lost(1, 2, t, u, true) == lost(1, 2, t, u, true)));
    }
}
