//! Config freshness: the local start (bootstrap, last-known-good cache),
//! the pull loop (`GET /sdk/v1/config` with `If-None-Match`) and the push
//! loop (`GET /sdk/v1/stream`).
//!
//! Only the poller applies snapshots, one at a time, and only versions
//! higher than the current one: a replayed or out-of-order response can
//! never roll the client back. The stream only says "version N exists"; the
//! poller then fetches at once, so a kill reaches `variant()` within a
//! round trip of the commit while the stream is healthy, and within one
//! poll interval when it is not.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, IF_NONE_MATCH};

/// The header naming the SDK instance on config requests.
const INSTANCE_HEADER: &str = "x-strata-instance";
use reqwest::StatusCode;

use crate::backoff::full_jitter;
use crate::builder::Bootstrap;
use crate::client::Shared;
use crate::hooks::{ConfigSource, SdkEvent};
use crate::sse::SseParser;
use crate::state::Loaded;

/// Stream-triggered fetches are at least this far apart, so a flooding
/// stream costs at most a few requests a second.
const MIN_FETCH_GAP: Duration = Duration::from_millis(100);
/// Longest SSE line accepted.
const MAX_SSE_LINE: usize = 64 * 1024;

/// Makes `loaded` current if it is newer; returns whether it was applied.
fn apply(shared: &Shared, loaded: Loaded, source: ConfigSource) -> bool {
    let current = shared.state.load();
    if current.present && loaded.version <= current.version {
        shared.emit(&SdkEvent::StaleConfigIgnored {
            version: loaded.version,
            current: current.version,
        });
        return false;
    }
    let version = loaded.version;
    shared.state.store(Arc::new(loaded));
    shared.counters.configs_applied.add(1);
    shared.loaded.send_replace(true);
    shared.emit(&SdkEvent::ConfigApplied { version, source });
    true
}

fn reject(shared: &Shared, source: ConfigSource, reason: &str) {
    shared.counters.configs_rejected.add(1);
    shared.emit(&SdkEvent::ConfigRejected { source, reason });
}

/// Loads the bootstrap and the cache, whichever is newer wins. Failures are
/// reported and otherwise ignored: the server may still answer.
pub(crate) fn load_local(shared: &Shared) {
    let surfaces = shared.opts.surfaces.as_ref();
    match &shared.opts.bootstrap {
        None => {}
        Some(b) => {
            let bytes = match b {
                Bootstrap::Json(s) => Ok(s.clone().into_bytes()),
                Bootstrap::File(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())),
            };
            match bytes.and_then(|b| Loaded::from_slice(&b, surfaces).map_err(|e| e.to_string())) {
                Ok(l) => {
                    apply(shared, l, ConfigSource::Bootstrap);
                }
                Err(e) => reject(shared, ConfigSource::Bootstrap, &e),
            }
        }
    }
    if let Some(path) = &shared.opts.cache_path {
        match std::fs::read(path) {
            Ok(bytes) => match Loaded::from_slice(&bytes, surfaces) {
                Ok(l) => {
                    apply(shared, l, ConfigSource::Cache);
                }
                Err(e) => reject(shared, ConfigSource::Cache, &e.to_string()),
            },
            // No cache yet is the normal first start.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => reject(
                shared,
                ConfigSource::Cache,
                &format!("{}: {e}", path.display()),
            ),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, synced, then renamed over the target.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a response body of at most `limit` bytes.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Fetched, String> {
    let declared = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Ok(Fetched::TooLarge(format!(
            "the snapshot exceeds the {limit}-byte limit"
        )))
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
    {
        if body.len() + chunk.len() > limit {
            return too_large();
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched::Body(body))
}

enum Fetched {
    NotModified,
    Body(Vec<u8>),
    /// A body over the size limit: a bad snapshot, not a network failure.
    TooLarge(String),
}

async fn fetch(shared: &Shared) -> Result<Fetched, String> {
    let current = shared.state.load();
    let mut req = shared
        .http
        .get(format!("{}/sdk/v1/config", shared.opts.server_url))
        .header(AUTHORIZATION, shared.opts.sdk_auth.clone())
        .header(INSTANCE_HEADER, shared.opts.instance.clone())
        .timeout(shared.opts.request_timeout);
    if current.present {
        req = req.header(IF_NONE_MATCH, format!("\"{}\"", current.version));
    }
    drop(current);
    let resp = req.send().await.map_err(|e| e.to_string())?;
    match resp.status() {
        StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
        StatusCode::OK => read_limited(resp, shared.opts.max_config_bytes).await,
        s => Err(format!("status {s}")),
    }
}

/// One pull: fetch, validate off the async threads, apply if newer, cache.
async fn fetch_once(shared: &Arc<Shared>) {
    let body = match fetch(shared).await {
        Ok(Fetched::NotModified) => return,
        Ok(Fetched::Body(b)) => b,
        Ok(Fetched::TooLarge(e)) => return reject(shared, ConfigSource::Server, &e),
        Err(e) => {
            shared.counters.config_fetch_failures.add(1);
            shared.emit(&SdkEvent::ConfigFetchFailed { error: &e });
            return;
        }
    };
    let s = shared.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        let loaded = Loaded::from_slice(&body, s.opts.surfaces.as_ref());
        (loaded, body)
    })
    .await;
    let (loaded, body) = match parsed {
        Ok(p) => p,
        Err(_) => return reject(shared, ConfigSource::Server, "validation panicked"),
    };
    match loaded {
        Ok(l) => {
            if apply(shared, l, ConfigSource::Server) {
                if let Some(path) = shared.opts.cache_path.clone() {
                    let written =
                        tokio::task::spawn_blocking(move || write_atomically(&path, &body)).await;
                    let error = match written {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("the cache writer panicked".to_owned()),
                    };
                    if let Some(error) = error {
                        shared.emit(&SdkEvent::CacheWriteFailed { error: &error });
                    }
                }
            }
        }
        Err(e) => reject(shared, ConfigSource::Server, &e.to_string()),
    }
}

/// The pull loop: fetch now, then every poll interval or when the stream
/// says a new version exists.
pub(crate) async fn run_poller(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        if stop.borrow_and_update().is_some() {
            return;
        }
        let started = Instant::now();
        tokio::select! {
            () = fetch_once(&shared) => {}
            _ = stop.changed() => return,
        }
        let woken = tokio::select! {
            () = tokio::time::sleep(shared.opts.poll_interval) => false,
            () = shared.fetch_now.notified() => true,
            _ = stop.changed() => return,
        };
        if woken {
            let gap = MIN_FETCH_GAP.saturating_sub(started.elapsed());
            tokio::select! {
                () = tokio::time::sleep(gap) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// One stream connection; returns why it ended.
async fn stream_once(shared: &Shared, attempt: &mut u32) -> String {
    let req = shared
        .http
        .get(format!("{}/sdk/v1/stream", shared.opts.server_url))
        .header(AUTHORIZATION, shared.opts.sdk_auth.clone())
        .header(INSTANCE_HEADER, shared.opts.instance.clone())
        .header(ACCEPT, "text/event-stream")
        .send();
    let mut resp = match tokio::time::timeout(shared.opts.request_timeout, req).await {
        Err(_) => return "connect timed out".to_owned(),
        Ok(Err(e)) => return e.to_string(),
        Ok(Ok(r)) if r.status() != StatusCode::OK => return format!("status {}", r.status()),
        Ok(Ok(r)) => r,
    };
    shared.stream_connected.store(true, Ordering::Relaxed);
    shared.emit(&SdkEvent::StreamConnected);
    let mut parser = SseParser::new(MAX_SSE_LINE);
    let mut events = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(shared.opts.stream_idle_timeout, resp.chunk()).await
        {
            Err(_) => return "no data or keep-alive within the idle timeout".to_owned(),
            Ok(Err(e)) => return e.to_string(),
            Ok(Ok(None)) => return "closed by the server".to_owned(),
            Ok(Ok(Some(c))) => c,
        };
        if parser.push(&chunk, &mut events).is_err() {
            return "an event line exceeds the limit".to_owned();
        }
        for ev in events.drain(..) {
            // A stream that delivers events is healthy: the next outage
            // starts the backoff afresh.
            *attempt = 0;
            if !(ev.event.is_empty() || ev.event == "config") {
                continue;
            }
            let announced = serde_json::from_str::<serde_json::Value>(&ev.data)
                .ok()
                .and_then(|v| v.get("version")?.as_u64());
            let current = shared.state.load();
            // Unreadable data still means "something changed": fetch.
            if announced.is_some_and(|v| current.present && v <= current.version) {
                continue;
            }
            shared.fetch_now.notify_one();
        }
    }
}

/// The push loop: keep a stream open, reconnecting with exponential backoff
/// and full jitter.
pub(crate) async fn run_stream(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut attempt = 0u32;
    loop {
        if stop.borrow_and_update().is_some() {
            return;
        }
        let error = tokio::select! {
            e = stream_once(&shared, &mut attempt) => e,
            _ = stop.changed() => return,
        };
        shared.stream_connected.store(false, Ordering::Relaxed);
        attempt = attempt.saturating_add(1);
        let delay = full_jitter(
            shared.opts.reconnect_base,
            shared.opts.reconnect_cap,
            attempt,
        );
        shared.emit(&SdkEvent::StreamDisconnected {
            error: &error,
            retry_in: delay,
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        write_atomically(&path, b"{\"version\": 1}").unwrap();
        write_atomically(&path, b"{\"version\": 2}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"version\": 2}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        assert!(write_atomically(&dir.path().join("missing/dir/x"), b"{}").is_err());
    }
}
