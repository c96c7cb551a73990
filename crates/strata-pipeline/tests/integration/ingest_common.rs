//! Helpers shared by the integration tests: a loopback ingestion server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use strata_pipeline::http::{Ingest, IngestConfig};
use strata_pipeline::memory::StaticAuthorizer;
use strata_pipeline::Sink;

/// The ingestion token the test servers accept.
pub const TOKEN: &str = "ingest-token";

/// A running loopback server.
pub struct Server {
    pub base: String,
    pub ingest: Ingest,
    pub handle: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Serves the ingestion routes over `sink` on an ephemeral loopback port.
pub async fn serve(sink: Arc<dyn Sink>, cfg: IngestConfig) -> Server {
    let auth = StaticAuthorizer::new()
        .with_token(TOKEN, "key-1")
        .with_token("other-token", "key-2")
        .with_forbidden("sdk-token");
    let ingest = Ingest::new(sink, Arc::new(auth), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = ingest
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        base: format!("http://{addr}"),
        ingest,
        handle,
    }
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A valid event as JSON.
pub fn event(id: &str, unit: &str, ty: &str) -> serde_json::Value {
    serde_json::json!({"event_id": id, "unit_id": unit, "type": ty, "ts": now_ms(), "value": 1.5,
                       "properties": {"plan": "pro"}})
}

/// A valid exposure as JSON.
pub fn exposure(unit: &str, experiment: &str, variant: &str) -> serde_json::Value {
    serde_json::json!({"unit_id": unit, "experiment": experiment, "variant": variant, "ts": now_ms()})
}
