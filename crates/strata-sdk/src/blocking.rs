//! The blocking facade, for hosts without an async runtime.
//!
//! A [`BlockingClient`] owns a one-thread tokio runtime on which the
//! client's background tasks (poll, stream, flush) run; the hot path
//! (`variant`, `assignments`, `track`) is synchronous anyway and runs on the
//! caller's thread. Only `ready`, `flush` and `shutdown` wait, and called
//! from inside an async runtime (where blocking would panic) they do not
//! wait but answer at once.

use std::time::Duration;

use serde_json::{Map, Value};
use strata_core::Context;
use uuid::Uuid;

use crate::builder::ClientBuilder;
use crate::client::{Assignments, Client, ShutdownReport};
use crate::error::BuildError;
use crate::hooks::Stats;
use crate::variant::Variant;

/// A [`Client`] with its own runtime thread. Build it with
/// [`ClientBuilder::build_blocking`].
pub struct BlockingClient {
    client: Client,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Whether the current thread is inside a tokio runtime, where blocking
/// would panic.
fn in_async_context() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

impl BlockingClient {
    pub(crate) fn new(builder: ClientBuilder) -> Result<Self, BuildError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strata-sdk")
            .enable_all()
            .build()
            .map_err(|e| BuildError::Runtime(e.to_string()))?;
        let client = {
            let _entered = runtime.enter();
            builder.build()?
        };
        Ok(Self {
            client,
            runtime: Some(runtime),
        })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        if in_async_context() {
            return None;
        }
        self.runtime.as_ref().map(|rt| rt.block_on(f))
    }

    /// The async client inside, for code that has a runtime after all.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// See [`Client::ready`].
    pub fn ready(&self, timeout: Duration) -> bool {
        self.block_on(self.client.ready(timeout))
            .unwrap_or_else(|| self.client.version() > 0)
    }

    /// See [`Client::variant`].
    pub fn variant<'d>(&self, ctx: &Context, flag_or_key: &str, default: &'d str) -> Variant<'d> {
        self.client.variant(ctx, flag_or_key, default)
    }

    /// See [`Client::assignments`].
    pub fn assignments(&self, ctx: &Context, surface: Option<&str>) -> Assignments {
        self.client.assignments(ctx, surface)
    }

    /// See [`Client::track`].
    pub fn track(
        &self,
        ctx: &Context,
        event_type: &str,
        value: Option<f64>,
        properties: Option<Map<String, Value>>,
    ) -> Option<Uuid> {
        self.client.track(ctx, event_type, value, properties)
    }

    /// See [`Client::flush`].
    pub fn flush(&self) -> bool {
        self.block_on(self.client.flush()).unwrap_or(false)
    }

    /// See [`Client::shutdown`]; also stops the runtime thread.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let report = self.block_on(self.client.shutdown(deadline));
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        report.unwrap_or(ShutdownReport {
            delivered_all: false,
            dropped: 0,
        })
    }

    /// See [`Client::stats`].
    pub fn stats(&self) -> Stats {
        self.client.stats()
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime;
        // shutting it down in the background never does.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn works_without_a_runtime_of_the_host() {
        let doc = r#"{"version": 2, "experiments": [{"key": "e", "flag": "f", "salt": "s",
            "status": "running", "variants": [{"key": "only", "weight": 1}]}]}"#;
        let c = Client::builder("http://127.0.0.1:9", "k")
            .bootstrap_json(doc)
            .streaming(false)
            .build_blocking()
            .unwrap();
        assert!(c.ready(Duration::from_millis(100)));
        assert_eq!(c.variant(&Context::for_user("u"), "f", "d"), "only");
        assert_eq!(c.assignments(&Context::for_user("u"), None).len(), 1);
        assert!(c.flush(), "nothing to ship without an ingest key");
        let r = c.shutdown(Duration::from_millis(10));
        assert!(r.delivered_all);
    }
}
