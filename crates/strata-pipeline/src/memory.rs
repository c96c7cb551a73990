//! An in-memory [`Sink`] and a fixed-token [`Authorizer`], for tests, the
//! load generator's peer measurements and embedding without storage.
//!
//! [`MemorySink`] deduplicates like the durable sinks (events by `event_id`,
//! exposures by unit, experiment and UTC day) but keeps nothing across
//! restarts; its pressure can be forced to exercise backpressure.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::record::{utc_day, Record};
use crate::{
    AuthDenied, Authorizer, Batch, BoxFuture, Outcome, Pressure, Principal, Sink, SinkError,
};

#[derive(Default)]
struct State {
    records: Vec<Record>,
    event_ids: HashSet<String>,
    exposure_keys: HashSet<(String, String, i64)>,
    alias_keys: HashSet<(String, String)>,
    pressure: Pressure,
    fail: Option<String>,
}

/// Records kept in memory, deduplicated.
#[derive(Default, Clone)]
pub struct MemorySink {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySink").finish_non_exhaustive()
    }
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every stored record, in arrival order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Number of stored records.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forces the load figures [`Sink::pressure`] reports.
    pub fn set_pressure(&self, pressure: Pressure) {
        self.lock().pressure = pressure;
    }

    /// Makes every append fail with [`SinkError::Io`] (`Some`), or succeed
    /// again (`None`).
    pub fn set_failure(&self, failure: Option<String>) {
        self.lock().fail = failure;
    }
}

impl Sink for MemorySink {
    fn append(&self, records: Batch) -> BoxFuture<'_, Result<Vec<Outcome>, SinkError>> {
        Box::pin(async move {
            let records = records
                .to_records()
                .map_err(|e| SinkError::Io(format!("batch record does not decode: {e}")))?;
            let mut s = self.lock();
            if let Some(why) = &s.fail {
                return Err(SinkError::Io(why.clone()));
            }
            let mut outcomes = Vec::with_capacity(records.len());
            for r in records {
                let fresh = match &r {
                    Record::Event(e) => s.event_ids.insert(e.event_id.clone()),
                    Record::Exposure(x) => s.exposure_keys.insert((
                        x.unit_id.clone(),
                        x.experiment.clone(),
                        utc_day(x.ts),
                    )),
                    Record::Alias(a) => s
                        .alias_keys
                        .insert((a.anonymous_id.clone(), a.user_id.clone())),
                };
                if fresh {
                    s.records.push(r);
                    outcomes.push(Outcome::Accepted);
                } else {
                    outcomes.push(Outcome::Duplicate);
                }
            }
            Ok(outcomes)
        })
    }

    fn pressure(&self) -> Pressure {
        self.lock().pressure
    }
}

/// Accepts a fixed set of tokens, each with its key id; tokens in the
/// forbidden set are valid but may not ingest (403).
#[derive(Debug, Default, Clone)]
pub struct StaticAuthorizer {
    tokens: HashMap<String, String>,
    forbidden: HashSet<String>,
}

impl StaticAuthorizer {
    /// No tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` as the key `key_id`.
    pub fn with_token(mut self, token: &str, key_id: &str) -> Self {
        self.tokens.insert(token.to_owned(), key_id.to_owned());
        self
    }

    /// Knows `token` but refuses it with 403.
    pub fn with_forbidden(mut self, token: &str) -> Self {
        self.forbidden.insert(token.to_owned());
        self
    }
}

impl Authorizer for StaticAuthorizer {
    fn authorize<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthDenied>> {
        Box::pin(async move {
            if self.forbidden.contains(token) {
                return Err(AuthDenied::Forbidden("not an ingestion key".to_owned()));
            }
            self.tokens
                .get(token)
                .map(|key_id| Principal {
                    key_id: key_id.clone(),
                })
                .ok_or(AuthDenied::Unauthenticated)
        })
    }
}
