//! The client's options and their defaults.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;

use crate::blocking::BlockingClient;
use crate::client::Client;
use crate::error::BuildError;
use crate::hooks::Hooks;
use crate::sticky::{MemoryStickyStore, StickyStore};

/// Where the bootstrap snapshot comes from.
#[derive(Clone, Debug)]
pub(crate) enum Bootstrap {
    File(PathBuf),
    Json(String),
}

/// Everything a built client needs; validated by [`ClientBuilder::build`].
pub(crate) struct Options {
    pub server_url: String,
    pub sdk_auth: HeaderValue,
    pub collector_url: String,
    pub ingest_auth: Option<HeaderValue>,
    pub poll_interval: Duration,
    pub streaming: bool,
    pub request_timeout: Duration,
    pub flush_interval: Duration,
    pub batch_size: usize,
    pub buffer_capacity: usize,
    pub buffer_max_age: Duration,
    pub bootstrap: Option<Bootstrap>,
    pub cache_path: Option<PathBuf>,
    pub surfaces: Option<HashSet<String>>,
    pub hooks: Option<Arc<dyn Hooks>>,
    pub low_priority_events: HashSet<String>,
    pub event_unit_attr: String,
    /// Context attributes copied onto each exposure (segments).
    pub exposure_attrs: Arc<[String]>,
    pub max_config_bytes: usize,
    pub stream_idle_timeout: Duration,
    pub reconnect_base: Duration,
    pub reconnect_cap: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub dedup_capacity: usize,
    /// Sent as `X-Strata-Instance` with every config request, so the
    /// server knows which version each SDK instance has applied.
    pub instance: HeaderValue,
    /// Where sticky assignments are kept between processes.
    pub sticky_store: Arc<dyn StickyStore>,
    /// Units whose kept assignments the client caches.
    pub sticky_cache_units: usize,
    /// `identify`'s attributes: the anonymous id's and the user id's.
    pub anonymous_attr: String,
    pub user_attr: String,
}

/// Builds a [`Client`]: `Client::builder(server_url, sdk_key)…build()`.
///
/// Defaults: poll every 30 s, streaming on, 5 s request timeout, flush every
/// 100 ms in batches of 500, a buffer of 100,000 records kept at most 10
/// minutes, snapshots up to 64 MiB, no ingest key (nothing is shipped).
#[must_use]
pub struct ClientBuilder {
    server_url: String,
    sdk_key: String,
    ingest_key: Option<String>,
    collector_url: Option<String>,
    instance_id: Option<String>,
    opts: Options,
}

/// Longest accepted instance id, in bytes.
pub const MAX_INSTANCE_ID_BYTES: usize = 128;

fn header(key: &str, field: &'static str) -> Result<HeaderValue, BuildError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| BuildError::InvalidKey { field })?;
    v.set_sensitive(true);
    Ok(v)
}

fn base_url(url: &str, field: &'static str) -> Result<String, BuildError> {
    let invalid = |reason: String| BuildError::InvalidUrl {
        field,
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".to_owned()));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl ClientBuilder {
    pub(crate) fn new(server_url: &str, sdk_key: &str) -> Self {
        Self {
            server_url: server_url.to_owned(),
            sdk_key: sdk_key.to_owned(),
            ingest_key: None,
            collector_url: None,
            instance_id: None,
            opts: Options {
                server_url: String::new(),
                sdk_auth: HeaderValue::from_static(""),
                collector_url: String::new(),
                ingest_auth: None,
                poll_interval: Duration::from_secs(30),
                streaming: true,
                request_timeout: Duration::from_secs(5),
                flush_interval: Duration::from_millis(100),
                batch_size: 500,
                buffer_capacity: 100_000,
                buffer_max_age: Duration::from_secs(600),
                bootstrap: None,
                cache_path: None,
                surfaces: None,
                hooks: None,
                low_priority_events: HashSet::new(),
                event_unit_attr: "user_id".to_owned(),
                exposure_attrs: Arc::from([]),
                max_config_bytes: 64 << 20,
                stream_idle_timeout: Duration::from_secs(60),
                reconnect_base: Duration::from_millis(500),
                reconnect_cap: Duration::from_secs(30),
                retry_base: Duration::from_millis(200),
                retry_cap: Duration::from_secs(30),
                dedup_capacity: 1_000_000,
                instance: HeaderValue::from_static(""),
                sticky_store: Arc::new(MemoryStickyStore::new()),
                sticky_cache_units: 100_000,
                anonymous_attr: "device_id".to_owned(),
                user_attr: "user_id".to_owned(),
            },
        }
    }

    /// The ingestion key (kind `ingest`) for shipping exposures and events.
    /// Without one nothing is shipped; what would have been is counted in
    /// [`crate::Stats::unshipped_no_ingest_key`].
    pub fn ingest_key(mut self, key: impl Into<String>) -> Self {
        self.ingest_key = Some(key.into());
        self
    }

    /// The collector's base url, when it is not the server's.
    pub fn collector_url(mut self, url: impl Into<String>) -> Self {
        self.collector_url = Some(url.into());
        self
    }

    /// How often to pull the config (default 30 s). Polling goes on while
    /// the stream is up, and is the only path while it is down.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.opts.poll_interval = every;
        self
    }

    /// Where sticky experiments' assignments are kept between processes
    /// (default: this process's memory). Use
    /// [`crate::RedisStickyStore`] to share them between instances.
    pub fn sticky_store(mut self, store: impl StickyStore) -> Self {
        self.opts.sticky_store = Arc::new(store);
        self
    }

    /// How many units' kept assignments the client caches in memory
    /// (default 100,000; the oldest unit cached is forgotten first and
    /// found again by [`Client::load_sticky`]).
    pub fn sticky_cache_units(mut self, units: usize) -> Self {
        self.opts.sticky_cache_units = units;
        self
    }

    /// The context attributes of [`Client::identify`]: the anonymous id's
    /// (default `device_id`) and the signed-in user's (default `user_id`).
    pub fn identity_attributes(
        mut self,
        anonymous: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        self.opts.anonymous_attr = anonymous.into();
        self.opts.user_attr = user.into();
        self
    }

    /// The id this client reports to the server with its config requests
    /// (`X-Strata-Instance`), so the server knows which config version each
    /// instance has applied before it counts a started experiment as active
    /// (default: random per client; set it to a stable name such as the
    /// host and process to follow an instance across restarts).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Whether to listen on `/sdk/v1/stream` for new versions (default on).
    pub fn streaming(mut self, on: bool) -> Self {
        self.opts.streaming = on;
        self
    }

    /// Timeout of each config fetch and collector request, and of
    /// connecting the stream (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.opts.request_timeout = timeout;
        self
    }

    /// How often buffered records are flushed (default 100 ms); a full
    /// batch is flushed at once.
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.opts.flush_interval = every;
        self
    }

    /// Records per request to the collector (default 500).
    pub fn batch_size(mut self, records: usize) -> Self {
        self.opts.batch_size = records;
        self
    }

    /// The buffer's bounds: at most `records` waiting, none older than
    /// `max_age` (defaults 100,000 and 10 minutes).
    pub fn buffer_bounds(mut self, records: usize, max_age: Duration) -> Self {
        self.opts.buffer_capacity = records;
        self.opts.buffer_max_age = max_age;
        self
    }

    /// A snapshot file to start from when the server cannot be reached.
    pub fn bootstrap_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.bootstrap = Some(Bootstrap::File(path.into()));
        self
    }

    /// A snapshot (JSON text) to start from when the server cannot be reached.
    pub fn bootstrap_json(mut self, json: impl Into<String>) -> Self {
        self.opts.bootstrap = Some(Bootstrap::Json(json.into()));
        self
    }

    /// The last-known-good cache: each snapshot applied from the server is
    /// written there atomically, and read back at start-up.
    pub fn cache_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.cache_path = Some(path.into());
        self
    }

    /// The surfaces this host serves: `variant` then indexes only the
    /// experiments that apply on one of them (and those that apply
    /// everywhere), which saves memory on hosts serving a few surfaces.
    pub fn surfaces<I, S>(mut self, surfaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.opts.surfaces = Some(surfaces.into_iter().map(Into::into).collect());
        self
    }

    /// The metrics and logging hook.
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.opts.hooks = Some(Arc::new(hooks));
        self
    }

    /// Event types dropped first when the buffer is full (e.g. `page_view`).
    pub fn low_priority_events<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.opts.low_priority_events = types.into_iter().map(Into::into).collect();
        self
    }

    /// The context attribute that identifies the unit of tracked events
    /// (default `user_id`).
    pub fn event_unit_attribute(mut self, attr: impl Into<String>) -> Self {
        self.opts.event_unit_attr = attr.into();
        self
    }

    /// Context attributes copied onto every exposure as its `attributes`
    /// (default none), so that results can be broken down by them
    /// (an experiment's `segments`): e.g. `["country", "platform"]`. A
    /// string, number or boolean is sent as text; an attribute the context
    /// lacks is left out. Segments are those of a unit's first exposure.
    pub fn exposure_attributes<I, S>(mut self, attrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.opts.exposure_attrs = attrs.into_iter().map(Into::into).collect();
        self
    }

    /// The largest snapshot accepted from the server (default 64 MiB).
    pub fn max_config_bytes(mut self, bytes: usize) -> Self {
        self.opts.max_config_bytes = bytes;
        self
    }

    /// How long the stream may stay silent (not even a keep-alive) before
    /// it is reconnected (default 60 s; the server sends one every 15 s).
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.opts.stream_idle_timeout = timeout;
        self
    }

    /// Backoff of stream reconnects: first ceiling and cap (defaults 500 ms
    /// and 30 s), with full jitter.
    pub fn reconnect_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.opts.reconnect_base = base;
        self.opts.reconnect_cap = cap;
        self
    }

    /// Backoff of collector retries: first ceiling and cap (defaults 200 ms
    /// and 30 s), with full jitter; a `Retry-After` is a floor.
    pub fn retry_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.opts.retry_base = base;
        self.opts.retry_cap = cap;
        self
    }

    fn validate(mut self) -> Result<Options, BuildError> {
        let o = &mut self.opts;
        o.server_url = base_url(&self.server_url, "server_url")?;
        o.collector_url = match &self.collector_url {
            Some(u) => base_url(u, "collector_url")?,
            None => o.server_url.clone(),
        };
        o.sdk_auth = header(&self.sdk_key, "sdk_key")?;
        let instance = self
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{:016x}", crate::backoff::random_u64()));
        o.instance = HeaderValue::from_str(&instance)
            .ok()
            .filter(|_| !instance.is_empty() && instance.len() <= MAX_INSTANCE_ID_BYTES)
            .ok_or(BuildError::InvalidOption {
                option: "instance_id",
                reason: "must be 1 to 128 visible ASCII characters",
            })?;
        o.ingest_auth = match &self.ingest_key {
            Some(k) => Some(header(k, "ingest_key")?),
            None => None,
        };
        let positive = |d: Duration, option: &'static str| {
            if d.is_zero() {
                Err(BuildError::InvalidOption {
                    option,
                    reason: "must be positive",
                })
            } else {
                Ok(())
            }
        };
        positive(o.poll_interval, "poll_interval")?;
        positive(o.request_timeout, "request_timeout")?;
        positive(o.flush_interval, "flush_interval")?;
        positive(o.stream_idle_timeout, "stream_idle_timeout")?;
        positive(o.reconnect_base, "reconnect_backoff")?;
        positive(o.retry_base, "retry_backoff")?;
        if o.batch_size == 0 {
            return Err(BuildError::InvalidOption {
                option: "batch_size",
                reason: "must be positive",
            });
        }
        if o.buffer_capacity == 0 {
            return Err(BuildError::InvalidOption {
                option: "buffer_bounds",
                reason: "must hold at least one record",
            });
        }
        Ok(self.opts)
    }

    /// Builds the client and starts its background tasks. Must be called
    /// inside a tokio runtime. Never fails because the server is down or the
    /// bootstrap is unusable: those are reported through the hook, and the
    /// client serves defaults until a snapshot arrives.
    pub fn build(self) -> Result<Client, BuildError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let opts = self.validate()?;
        Client::start(opts, &handle)
    }

    /// Builds a [`BlockingClient`], which owns a runtime thread, for hosts
    /// without an async runtime.
    pub fn build_blocking(self) -> Result<BlockingClient, BuildError> {
        BlockingClient::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys_are_validated() {
        let e = ClientBuilder::new("ftp://x", "k").validate().err().unwrap();
        assert!(e.to_string().contains("server_url"), "{e}");
        assert!(ClientBuilder::new("not a url", "k").validate().is_err());
        let e = ClientBuilder::new("http://x", "k\n")
            .validate()
            .err()
            .unwrap();
        assert!(e.to_string().contains("sdk_key"), "{e}");
        let o = ClientBuilder::new("http://x:1/", "k").validate().unwrap();
        assert_eq!(o.server_url, "http://x:1");
        assert_eq!(o.collector_url, "http://x:1");
        assert!(o.ingest_auth.is_none());
    }

    #[test]
    fn options_are_checked() {
        let e = ClientBuilder::new("http://x", "k")
            .batch_size(0)
            .validate()
            .err()
            .unwrap();
        assert!(e.to_string().contains("batch_size"), "{e}");
        assert!(ClientBuilder::new("http://x", "k")
            .poll_interval(Duration::ZERO)
            .validate()
            .is_err());
    }

    #[test]
    fn build_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            ClientBuilder::new("http://127.0.0.1:9", "k").build(),
            Err(BuildError::NoRuntime)
        ));
    }
}
