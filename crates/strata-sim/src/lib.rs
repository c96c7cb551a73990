//! Strata's simulator: a seeded population whose behaviour carries planted
//! effects, driven through the platform's real path — the Rust SDK in
//! process for assignments and exposures, `/collect` for events.
//!
//! `strata demo` runs it against its own server on a simulated clock
//! (strata-clock) so that days of the demo's scenarios pass in minutes;
//! `strata simulate` runs it against any server as a load generator.
//!
//! * [`population`]: users with segment attributes (plan, platform, country) and
//!   an activity level, the same for the same seed.
//! * [`behaviour`]: what a visit does (page views, load times, errors,
//!   purchases) and how a variant's [`behaviour::Effect`] changes it,
//!   novelty included.
//! * [`scenario`]: the demo's experiments, their planted effects and
//!   logging bugs, the metric registry and guardrails.
//! * [`seed`]: creating that world on a server through its API.
//! * [`drive`]: visits paced by the clock, through the SDK.
//! * [`watch`]: where each scenario stands, read off the API.
//! * [`dataset`]: the same users and behaviour written offline as the
//!   pipeline's Parquet files, for benchmarks of the analysis.
//!
//! It knows the server only through its public HTTP API and the SDK; the
//! offline data sets are the pipeline's records, written with its writer.

pub mod behaviour;
pub mod dataset;
pub mod drive;
pub mod population;
pub mod scenario;
pub mod seed;
pub mod watch;

/// What went wrong while seeding or driving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A request could not be sent or its answer read.
    #[error("{what}: {source}")]
    Request {
        /// The request.
        what: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The server refused a request.
    #[error("{what} answered {status}: {body}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// The SDK client could not be built.
    #[error("cannot start the sdk client: {0}")]
    Sdk(strata_sdk::BuildError),
    /// A data set's directory could not be created.
    #[error("cannot create {}: {source}", path.display())]
    Io {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The pipeline's writer could not write a data set's file.
    #[error(transparent)]
    Store(#[from] strata_pipeline::StoreError),
    /// The SDK got no config from the server in time.
    #[error("no config from {0} within 30 s: is the server up, and the sdk key valid?")]
    NoConfig(String),
}
