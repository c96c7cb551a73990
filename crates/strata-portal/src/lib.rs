//! Strata's web portal: the pages people run experiments from, served by
//! `strata serve` at `/` beside the JSON API at `/api/v1`.
//!
//! Server-rendered HTML (maud templates, compiled into the binary) with a
//! stylesheet and a few lines of script embedded too: nothing is loaded
//! from elsewhere, no Node runs, and every page reads and works without
//! JavaScript. Charts are inline SVG drawn on the server ([`plot`]).
//!
//! The portal is a room of its own over the control plane's services: a
//! page calls the same service method the API's handler calls
//! (`ExperimentService::list`, `ResultsService::history`, …) with the
//! signed-in person's token as the actor, so permissions, validation, the
//! lifecycle and the audit log are exactly the API's. It never calls its
//! own HTTP API and copies no handler logic.
//!
//! Pieces: [`session`] (sign-in, the session cookie, the CSRF guard of
//! every form), [`page`] (the frame, shared pieces, the error page),
//! `login`, `experiments` (list, experiment, lifecycle), `results` (a
//! look's numbers, plots, health, decision and guardrail timeline),
//! `lookup` (which experiments a unit is in, and why), `wizard` (a new
//! experiment, with the power calculator), `platform` (layers, metric
//! registry, guardrails, audit log, keys, alerts), `holdout` (the global
//! holdout and what everything shipped adds up to),
//! [`plot`] and [`assets`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod assets;
mod experiments;
mod holdout;
mod login;
mod lookup;
pub mod page;
mod platform;
pub mod plot;
mod results;
pub mod session;
mod wizard;

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use strata_server::{AppState, Mount};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::session::Sessions;

/// How the portal runs.
#[derive(Debug, Clone)]
pub struct PortalSettings {
    /// How long a sign-in lasts (absolute, not extended by use).
    pub session_ttl: Duration,
    /// Mark cookies `Secure` even without `X-Forwarded-Proto: https` (the
    /// process itself is behind TLS).
    pub secure_cookies: bool,
    /// How often the scheduled analysis publishes looks (none: it is off),
    /// for what a results page without looks says.
    pub analysis_interval: Option<Duration>,
    /// When the scheduled analysis runs next, as its scheduler sets it.
    pub next_analysis: Option<NextRun>,
}

/// When a scheduled job runs next: set by the job, read by the pages. The
/// composition root hands the scheduler's cell to the portal, so neither
/// knows the other.
#[derive(Debug, Clone, Default)]
pub struct NextRun(Arc<AtomicI64>);

impl NextRun {
    /// A cell the job updates (milliseconds since the epoch; 0: not known).
    pub fn new(cell: Arc<AtomicI64>) -> Self {
        Self(cell)
    }

    /// Records the next run.
    pub fn set(&self, at: SystemTime) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.0.store(ms, Ordering::Relaxed);
    }

    /// The next run, once the job has said.
    pub fn get(&self) -> Option<SystemTime> {
        let ms = self.0.load(Ordering::Relaxed);
        (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()))
    }
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            analysis_interval: None,
            next_analysis: None,
        }
    }
}

/// What every portal handler shares.
#[derive(Clone)]
pub struct PortalState {
    /// The control plane's state, over which services are built.
    pub app: AppState,
    /// Live sessions.
    pub sessions: Arc<Sessions>,
    /// Tunables.
    pub settings: Arc<PortalSettings>,
}

impl fmt::Debug for PortalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalState")
            .field("sessions", &self.sessions.len())
            .field("settings", &self.settings)
            .finish()
    }
}

/// The portal, mounted beside the control plane by the composition root.
#[derive(Debug, Clone)]
pub struct Portal {
    state: PortalState,
}

impl Portal {
    /// The portal over a control plane's state.
    pub fn new(app: AppState, settings: PortalSettings) -> Self {
        Self {
            state: PortalState {
                app,
                sessions: Arc::new(Sessions::default()),
                settings: Arc::new(settings),
            },
        }
    }

    /// Live sessions (tests end them to check what revocation does).
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.state.sessions
    }

    /// The portal's routes, with its state and CSRF guard applied.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(|| async { Redirect::to("/experiments") }))
            .route("/login", get(login::form).post(login::submit))
            .route("/logout", post(login::logout))
            .route(assets::CSS_PATH, get(assets::css))
            .route(assets::JS_PATH, get(assets::js))
            .route("/experiments", get(experiments::list))
            .route("/experiments/new", get(wizard::form).post(wizard::submit))
            .route("/experiments/{key}", get(experiments::show))
            .route("/experiments/{key}/kill", get(experiments::confirm_kill))
            .route(
                "/experiments/{key}/actions/{action}",
                post(experiments::act),
            )
            .route("/experiments/{key}/results", get(results::show))
            .route(
                "/experiments/{key}/results/{seq}/retract",
                post(results::retract),
            )
            .route(
                "/experiments/{key}/guardrails/{guardrail}/confirm",
                post(results::confirm),
            )
            .route(
                "/experiments/{key}/guardrails/{guardrail}/dismiss",
                post(results::dismiss),
            )
            .route("/lookup", get(lookup::show))
            .route(
                "/layers",
                get(platform::layers).post(platform::create_layer),
            )
            .route(
                "/registry",
                get(platform::metrics).post(platform::create_metric),
            )
            .route("/registry/bot-detection", post(platform::set_bot_detection))
            .route("/registry/{key}/delete", post(platform::delete_metric))
            .route(
                "/registry/{key}/edit",
                get(platform::edit_metric).post(platform::update_metric),
            )
            .route(
                "/guardrails",
                get(platform::guardrails).post(platform::create_guardrail),
            )
            .route("/guardrails/{key}/delete", post(platform::delete_guardrail))
            .route("/holdout", get(holdout::holdout).post(holdout::set_holdout))
            .route("/holdout/key-metrics", post(holdout::set_key_metrics))
            .route("/audit", get(platform::audit))
            .route("/keys", get(platform::keys).post(platform::create_key))
            .route("/keys/{id}/revoke", post(platform::revoke_key))
            .route(
                "/alerts",
                get(platform::alerts).post(platform::create_webhook),
            )
            .route("/alerts/{id}/delete", post(platform::delete_webhook))
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                session::guard,
            ))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self.state.clone())
    }
}

/// Headers of every portal response: no framing by other sites, no
/// content-type sniffing, nothing loaded from elsewhere.
async fn security_headers(res: axum::response::Response) -> impl IntoResponse {
    with_security_headers(res)
}

fn with_security_headers(mut res: axum::response::Response) -> axum::response::Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    res
}

impl Mount for Portal {
    fn name(&self) -> &'static str {
        "portal"
    }

    fn page_not_found(&self) -> Option<axum::response::Response> {
        use axum::response::IntoResponse;
        Some(with_security_headers(
            page::PortalError::NotFound.into_response(),
        ))
    }

    fn routes(&self) -> Router {
        self.router()
    }

    /// Drops expired sessions every minute.
    fn spawn(&self, mut shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let sessions = self.state.sessions.clone();
        vec![tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => { sessions.prune(); }
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
        })]
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(
            "# HELP strata_portal_sessions Signed-in portal sessions.\n# TYPE strata_portal_sessions gauge\n",
        );
        out.push_str(&format!(
            "strata_portal_sessions {}\n",
            self.state.sessions.len()
        ));
    }
}
