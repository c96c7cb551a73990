//! The process's calendar clock: the time that goes into records, audit
//! entries, experiment starts and ends, looks and guardrail checks.
//!
//! By default it is the system clock. A process may instead install, once
//! and before anything reads it, a **simulated clock** ([`simulate`]) that
//! starts at a given instant and runs `speed` times faster than real time:
//! `strata demo` lets days of an experiment pass in minutes this way, while
//! the pipeline, compaction, the scheduled analysis and the guardrail
//! monitor run unmodified on the data it dates.
//!
//! What reads this clock is calendar time. What measures the process's own
//! work — timeouts, rate limits, intervals between jobs, the pipeline's lag,
//! sessions — uses [`std::time::Instant`] or the system clock and stays in
//! real time, so a simulated clock never makes the platform think it is
//! slow. Under a simulated clock every duration measured between two
//! calendar times (an experiment's age, a ramp stage's hours, a metric's
//! window) is simulated time.
//!
//! The clock is process-wide rather than passed around because every plane
//! reads it, down to the SDK's record timestamps; it is installed once, so a
//! reader never sees it change kind.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A clock that starts at `origin` when created and runs `speed` times
/// faster than real time.
#[derive(Debug, Clone, Copy)]
pub struct Simulated {
    origin: SystemTime,
    started: Instant,
    speed: f64,
}

impl Simulated {
    /// A clock reading `origin` now and advancing `speed` simulated seconds
    /// per real second. `speed` must be finite and at least 1.
    pub fn new(origin: SystemTime, speed: f64) -> Result<Self, ClockError> {
        if !speed.is_finite() || speed < 1.0 {
            return Err(ClockError::Speed(speed));
        }
        Ok(Self {
            origin,
            started: Instant::now(),
            speed,
        })
    }

    /// The simulated present.
    pub fn now(&self) -> SystemTime {
        self.at(self.started.elapsed())
    }

    /// The simulated time `real` after the clock was created.
    pub fn at(&self, real: Duration) -> SystemTime {
        // Duration::mul_f64 panics on overflow; a year of simulated time
        // per real second for a century still fits, so saturate instead.
        let secs = real.as_secs_f64() * self.speed;
        let scaled = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
        self.origin.checked_add(scaled).unwrap_or(self.origin)
    }

    /// Simulated seconds per real second.
    pub fn speed(&self) -> f64 {
        self.speed
    }
}

/// Why a clock could not be installed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// The speed is not a finite number of at least 1.
    #[error("speed {0} must be a finite number of at least 1")]
    Speed(f64),
    /// A simulated clock is already installed in this process.
    #[error("a simulated clock is already running in this process")]
    AlreadyInstalled,
}

static CLOCK: OnceLock<Simulated> = OnceLock::new();

/// Installs a simulated clock for the rest of the process. Call it before
/// anything reads the clock: times read before it are real.
pub fn simulate(clock: Simulated) -> Result<(), ClockError> {
    CLOCK.set(clock).map_err(|_| ClockError::AlreadyInstalled)
}

/// The simulated clock, when one is installed.
pub fn simulated() -> Option<&'static Simulated> {
    CLOCK.get()
}

/// The present on the process's clock.
pub fn now() -> SystemTime {
    match CLOCK.get() {
        Some(c) => c.now(),
        None => SystemTime::now(),
    }
}

/// The present, µs since the Unix epoch.
pub fn now_micros() -> i64 {
    since_epoch(now())
        .as_micros()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// The present, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    since_epoch(now())
        .as_millis()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// Simulated seconds per real second: 1 unless a simulated clock runs.
pub fn speed() -> f64 {
    CLOCK.get().map_or(1.0, Simulated::speed)
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_runs_speed_times_faster() {
        let origin = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let c = Simulated::new(origin, 3600.0).unwrap();
        assert_eq!(c.at(Duration::ZERO), origin);
        assert_eq!(
            c.at(Duration::from_secs(2)),
            origin + Duration::from_secs(7200)
        );
        assert_eq!(
            c.at(Duration::from_millis(250)),
            origin + Duration::from_secs(900)
        );
        let now = c.now();
        assert!(now >= origin && now < origin + Duration::from_secs(3600 * 60));
    }

    #[test]
    fn speeds_below_one_or_not_finite_are_refused() {
        for s in [0.0, 0.5, -2.0, f64::NAN, f64::INFINITY] {
            let e = Simulated::new(SystemTime::now(), s).unwrap_err();
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let c = Simulated::new(UNIX_EPOCH, 1e300).unwrap();
        // Far beyond any representable time: stays put rather than panic.
        let _ = c.at(Duration::from_secs(10));
    }

    #[test]
    fn the_default_clock_is_the_systems() {
        // No test in this crate installs a clock.
        let before = SystemTime::now();
        let t = now();
        assert!(t >= before && t <= SystemTime::now());
        assert_eq!(speed(), 1.0);
        let ms = now_ms();
        let us = now_micros();
        assert!((us / 1000 - ms).abs() < 1000);
    }
}
