//! What a process mounts beside the control plane.
//!
//! `strata serve` is assembled outside this crate (strata-app): the control
//! plane is one part, the event pipeline's collection endpoints and its
//! retention task another, and any background job of the process would be
//! one more. Each registers its
//! routes, its background tasks, its `/metrics` text and its OpenAPI paths
//! through [`Mount`], and is shut down by the server in order: stop taking
//! requests, signal the tasks and wait for them, then let each mount drain.
//!
//! The control plane knows its mounts only through this trait, so it depends
//! on none of them.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A boxed future, as returned by [`Mount::shutdown`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A part of the process served beside the control plane.
///
/// Every method has a default doing nothing, so a mount implements only
/// what it has.
pub trait Mount: Send + Sync + Debug + 'static {
    /// A short name for logs (`pipeline`, `scheduler`, …).
    fn name(&self) -> &'static str;

    /// Routes merged into the server's router, with their state applied.
    /// They get the server's middleware: body limit, panic catching and
    /// request metrics.
    fn routes(&self) -> Router {
        Router::new()
    }

    /// Paths and schemas merged into `/api/v1/openapi.json`.
    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        None
    }

    /// Starts the mount's background tasks once the server listens; each
    /// must return soon after `shutdown` turns true.
    fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let _ = shutdown;
        Vec::new()
    }

    /// Appends the mount's series to the Prometheus text of `/metrics`.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }

    /// The page a browser gets for a path no route serves (a request that
    /// accepts HTML, outside the API's prefixes); `None` leaves it to the
    /// API's JSON answer. The portal answers its own page.
    fn page_not_found(&self) -> Option<axum::response::Response> {
        None
    }

    /// Drains the mount after the HTTP server stopped and its tasks ended
    /// (for example, flushes a log writer).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
