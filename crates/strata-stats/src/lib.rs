//! Strata's statistics engine.
//!
//! `strata-stats` turns per-variant **sufficient statistics** into effects,
//! confidence intervals, tests and warnings. It exists so that every number
//! the platform shows about an experiment comes from one small, pure,
//! reference-checked library: the platform's promise is to prevent wrong
//! conclusions, not to declare winners.
//!
//! # Architecture invariants
//! * **Sufficient statistics only.** The library never sees events. The
//!   analysis engine reduces events to the mergeable statistics of
//!   [`moments`] (and, for quantile metrics, [`quantile::QuantileSample`]);
//!   this crate does not care where they came from.
//! * **Pure.** No I/O, no async, no clock, no randomness: the same input gives
//!   the same output, bit for bit.
//! * **No panics on data.** Degenerate data (no units, one unit, zero
//!   variance) yields results marked `insufficient_data`; invalid input
//!   (NaN, infinities, inconsistent lengths or parameters) yields a typed
//!   [`Error`].
//! * **Reference-checked.** Every formula is compared with scipy/statsmodels
//!   on committed fixtures (`tests/reference/`), and the inferential
//!   guarantees (false-positive rates under peeking, interval coverage) are
//!   checked by simulation.
//!
//! # Modules
//! * [`moments`]: numerically stable, mergeable sufficient statistics.
//! * [`effect`]: Welch's t-test, relative lift, ratio metrics (delta method).
//! * [`cuped`]: variance reduction with a pre-experiment covariate.
//! * [`srm`]: sample ratio mismatch check.
//! * [`multiple`]: Bonferroni, Holm, Benjamini–Hochberg.
//! * [`novelty`]: novelty decay test (early versus late effect).
//! * [`sequential`]: group-sequential (Lan–DeMets) and always-valid tests.
//! * [`guardrail`]: always-valid one-sided test of harm beyond a threshold.
//! * [`power`]: sample size, minimum detectable effect, duration.
//! * [`quantile`]: quantiles with distribution-free intervals and differences.
//! * [`bayes`]: optional Bayesian summary.
//! * [`decision`]: display tiers, warnings, Simpson's paradox check.
//! * [`analysis`]: a whole experiment in one call.
//! * [`dist`]: the distribution functions underneath.
//!
//! `docs/statistics.md` in the repository describes the methods for users.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// `!(x > 0.0)` is used on purpose throughout: unlike `x <= 0.0` it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod analysis;
pub mod bayes;
pub mod cuped;
pub mod decision;
pub mod dist;
pub mod effect;
pub mod error;
pub mod guardrail;
pub mod moments;
pub mod multiple;
pub mod novelty;
pub mod power;
pub mod quantile;
pub mod sequential;
pub mod srm;

pub use analysis::{
    analyze, AnalysisConfig, ExperimentReport, MetricData, MetricInput, MetricRole, VariantInput,
};
pub use effect::{Comparison, InsufficientData, Interval, Sample};
pub use error::{Error, Result};
pub use moments::{CupedStats, MeanStats, RatioStats};
