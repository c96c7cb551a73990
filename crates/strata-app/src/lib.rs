//! The composition root of `strata serve`.
//!
//! The process is assembled here, not inside any one plane: the control
//! plane (strata-server) opens its store and builds its state; the parts
//! served beside it — the event pipeline's collection endpoints and admin
//! operations ([`pipeline`]), and the process's background jobs (the
//! scheduled analysis, [`analysis`]; the guardrail monitor,
//! [`guardrails`], both on the one node that holds the jobs lease,
//! [`leader`]; the sender of alerts, [`alerts`]) and the web portal
//! (strata-portal) — are built
//! over that state and registered through [`strata_server::Mount`], each
//! contributing routes, tasks, `/metrics` text and OpenAPI paths; the
//! server then serves them all and shuts them down in order.
//!
//! Architecture invariant: this is the only crate that links the control
//! plane, the data-collection plane and the analysis engine together;
//! strata-server knows its mounts only through the `Mount` trait.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod alerts;
pub mod analysis;
pub mod catalog;
pub mod guardrails;
pub mod holdout;
pub mod leader;
pub mod pipeline;

use std::sync::Arc;

use strata_portal::Portal;
use strata_server::{Server, ServerConfig, ServerError};

pub use alerts::{AlertsConfig, AlertsMount};
pub use analysis::{AnalysisConfig, AnalysisMount};
pub use guardrails::{GuardrailConfig, GuardrailMount};
pub use leader::{LeaderMount, Leadership};
pub use pipeline::{
    Ingestion, PipelineConfig, PipelineMount, Storage, StorageError, StorageLocation,
};
pub use strata_portal::PortalSettings;

/// What `strata serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The control plane.
    pub server: ServerConfig,
    /// The event pipeline mounted at `/collect/v1/*` (none: not mounted).
    pub pipeline: Option<PipelineConfig>,
    /// The scheduled analysis of the pipeline's data (none: off; it needs
    /// the pipeline).
    pub analysis: Option<AnalysisConfig>,
    /// The guardrail monitor of the pipeline's data (none: off; it needs
    /// the pipeline). Its partition count is the pipeline's.
    pub guardrails: Option<GuardrailConfig>,
    /// The web portal at `/` (none: not served). Its results pages say how
    /// often the scheduled analysis runs, from `analysis`.
    pub portal: Option<PortalSettings>,
}

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The control plane could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The event pipeline could not be opened.
    #[error("event pipeline: {0}")]
    Pipeline(String),
    /// The alert sender could not be built.
    #[error("alerts: {0}")]
    Alerts(String),
}

/// Opens the control plane, mounts the configured parts over its state and
/// starts serving. [`Server::stop`] stops them all.
pub async fn start(cfg: ServeConfig) -> Result<Server, StartError> {
    let mut prepared = Server::prepare(cfg.server).await?;
    let mut next_analysis = None;
    let alerts =
        AlertsMount::new(prepared.state(), AlertsConfig::default()).map_err(StartError::Alerts)?;
    prepared = prepared.mount(Arc::new(alerts));
    if let Some(p) = &cfg.pipeline {
        // The jobs run on one node of those sharing the store; over
        // JetStream, compacting the stream is one of them.
        let leadership = Leadership::new(prepared.state());
        let compacts_stream = p.compact && matches!(p.ingestion, Ingestion::JetStream { .. });
        let gate: strata_pipeline::CompactGate = if compacts_stream {
            let l = leadership.clone();
            Arc::new(move || l.is_leader())
        } else {
            Arc::new(|| false)
        };
        let mount = PipelineMount::open(p, prepared.state(), gate)
            .await
            .map_err(StartError::Pipeline)?;
        if cfg.analysis.is_some() || cfg.guardrails.is_some() || compacts_stream {
            let keeper = LeaderMount::new(prepared.state(), leadership.clone());
            prepared = prepared.mount(Arc::new(keeper));
        }
        if let Some(a) = &cfg.analysis {
            let scheduler = AnalysisMount::new(
                prepared.state(),
                mount.pipeline().clone(),
                a.clone(),
                leadership.clone(),
            );
            next_analysis = Some(strata_portal::NextRun::new(
                scheduler.scheduler().next_run(),
            ));
            prepared = prepared.mount(Arc::new(scheduler));
        }
        if let Some(g) = &cfg.guardrails {
            let g = GuardrailConfig {
                partitions: p.store.partitions,
                ..g.clone()
            };
            let monitor = GuardrailMount::new(
                prepared.state(),
                mount.pipeline().clone(),
                g,
                leadership.clone(),
            );
            prepared = prepared.mount(Arc::new(monitor));
        }
        prepared = prepared.mount(Arc::new(mount));
    }
    if let Some(settings) = &cfg.portal {
        let analysis_interval = cfg
            .analysis
            .as_ref()
            .filter(|_| cfg.pipeline.is_some())
            .map(|a| a.interval);
        let portal = Portal::new(
            prepared.state().clone(),
            PortalSettings {
                analysis_interval,
                next_analysis,
                ..settings.clone()
            },
        );
        prepared = prepared.mount(Arc::new(portal));
    }
    Ok(prepared.serve().await?)
}
