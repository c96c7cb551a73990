//! Activation: which config version the SDK instances have applied.
//!
//! A started or ramped experiment does not act on users the moment it is
//! published: every SDK instance must first fetch the new snapshot. Until
//! most of them have, its early data is thin and lopsided (the design's
//! Part 9 incident: a guardrail judged a 13-minute-old launch on events
//! still in flight). SDKs name themselves on every config request
//! (`X-Strata-Instance`); the server records, per instance, the version it
//! last answered it with (a `304` confirms the version the SDK holds, a
//! `200` hands it the current one) and when. An experiment is `activating`
//! until at least [`ACTIVE_SHARE`] of the instances seen within
//! [`SEEN_WITHIN`] are at or past the version that started (or last
//! changed) it, or until the activation timeout passes (then `active`, with
//! a warning). The record is in memory: each server instance knows the SDKs
//! that poll it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::{ExperimentRecord, Status};
use crate::store::{now_ms, parse_rfc3339};

/// Share of recently seen instances that must hold a version.
pub const ACTIVE_SHARE: f64 = 0.95;

/// An instance counts if it asked for the config this recently.
pub const SEEN_WITHIN: Duration = Duration::from_secs(300);

/// Instances remembered at most; past this, those not seen within
/// [`SEEN_WITHIN`] are forgotten first.
const MAX_INSTANCES: usize = 100_000;

/// Longest accepted instance id, in bytes.
pub const MAX_INSTANCE_ID_BYTES: usize = 128;

/// The SDK instances seen and the version each holds.
#[derive(Debug, Default)]
pub struct Instances {
    map: Mutex<HashMap<String, (u64, Instant)>>,
}

/// How far a config version has reached the SDK instances.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reach {
    /// The version.
    pub version: u64,
    /// Instances seen within the last five minutes.
    pub instances: u64,
    /// Of them, those at or past the version.
    pub applied: u64,
}

impl Reach {
    /// Whether at least [`ACTIVE_SHARE`] of the instances hold the version
    /// (vacuously, when none were seen).
    pub fn is_active(&self) -> bool {
        self.applied as f64 >= ACTIVE_SHARE * self.instances as f64
    }
}

/// How far a running experiment's config has reached the SDK instances.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Activation {
    /// The experiment.
    pub experiment: String,
    /// Its status.
    pub status: Status,
    /// `activating` (a running experiment whose version fewer than 95 % of
    /// the SDK instances seen in the last five minutes hold, within the
    /// activation timeout), `active` (a running experiment past that), or
    /// `inactive` (not running).
    pub state: &'static str,
    /// The config version of its last change, which the SDKs must apply.
    pub version: u64,
    /// When that change was made (RFC 3339): activation counts from here.
    pub since: String,
    /// SDK instances seen in the last five minutes, and of them those at or
    /// past `version`.
    pub instances: u64,
    /// See `instances`.
    pub applied: u64,
    /// Whether it became active by the timeout rather than by the SDKs.
    pub timed_out: bool,
}

impl Activation {
    /// The activation of experiment `e` now: the SDK instances' reach of
    /// the version of its last change, or `timeout` after that change.
    pub fn of(e: &ExperimentRecord, instances: &Instances, timeout: Duration) -> Self {
        let reach = instances.reach(e.version, Instant::now());
        let age_ms = parse_rfc3339(&e.updated_at).map_or(i64::MAX, |t| now_ms().saturating_sub(t));
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let running = e.status == Status::Running;
        let timed_out = running && !reach.is_active() && age_ms >= timeout_ms;
        let state = match (running, reach.is_active() || timed_out) {
            (false, _) => "inactive",
            (true, false) => "activating",
            (true, true) => "active",
        };
        Activation {
            experiment: e.key.clone(),
            status: e.status,
            state,
            version: e.version,
            since: e.updated_at.clone(),
            instances: reach.instances,
            applied: reach.applied,
            timed_out,
        }
    }
}

impl Instances {
    /// Records that instance `id` holds `version` now. Ids longer than
    /// [`MAX_INSTANCE_ID_BYTES`] are ignored.
    pub fn seen(&self, id: &str, version: u64, now: Instant) {
        if id.is_empty() || id.len() > MAX_INSTANCE_ID_BYTES {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_INSTANCES && !map.contains_key(id) {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < SEEN_WITHIN);
            if map.len() >= MAX_INSTANCES {
                return;
            }
        }
        let e = map.entry(id.to_owned()).or_insert((version, now));
        // A late answer to an older request must not move it back.
        e.0 = e.0.max(version);
        e.1 = now;
    }

    /// How far `version` has reached the instances seen within
    /// [`SEEN_WITHIN`] of `now`.
    pub fn reach(&self, version: u64, now: Instant) -> Reach {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut r = Reach {
            version,
            instances: 0,
            applied: 0,
        };
        for (v, at) in map.values() {
            if now.saturating_duration_since(*at) < SEEN_WITHIN {
                r.instances += 1;
                r.applied += u64::from(*v >= version);
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_counts_recent_instances_at_or_past_a_version() {
        let i = Instances::default();
        let t0 = Instant::now();
        assert!(
            i.reach(5, t0).is_active(),
            "no instance: nothing to wait for"
        );
        for n in 0..19 {
            i.seen(&format!("i{n}"), 5, t0);
        }
        i.seen("late", 4, t0);
        let r = i.reach(5, t0);
        assert_eq!((r.instances, r.applied), (20, 19));
        assert!(r.is_active(), "19 of 20 is 95 %");
        i.seen("later", 3, t0);
        assert!(!i.reach(5, t0).is_active(), "19 of 21");
        // An older answer does not move an instance back.
        i.seen("i0", 2, t0);
        assert_eq!(i.reach(5, t0).applied, 19);
        // Instances not seen for five minutes stop counting.
        let t1 = t0 + SEEN_WITHIN + Duration::from_secs(1);
        i.seen("i0", 6, t1);
        assert_eq!(
            i.reach(5, t1),
            Reach {
                version: 5,
                instances: 1,
                applied: 1
            }
        );
    }
}
