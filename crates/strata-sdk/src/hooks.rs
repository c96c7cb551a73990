//! The metrics and logging hook, and the client's counters.
//!
//! The SDK has no logging or metrics dependency of its own: it reports what
//! happens (config applied or rejected, stream up or down, batches sent or
//! failed, records dropped) to one [`Hooks`] implementation the host
//! provides, and keeps plain atomic counters readable with
//! [`crate::Client::stats`]. Hooks run on the SDK's background tasks, never
//! on the caller's thread of `variant`/`track`, so a slow hook cannot slow a
//! request; a panicking hook is caught and ignored.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where a snapshot came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigSource {
    /// The bootstrap file or string given to the builder.
    Bootstrap,
    /// The on-disk last-known-good cache.
    Cache,
    /// `GET /sdk/v1/config`.
    Server,
}

/// The kind of a buffered record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// An exposure (`/collect/v1/exposures`).
    Exposure,
    /// A behavioural event (`/collect/v1/events`).
    Event,
    /// An anonymous id signing in as a user id (`/collect/v1/aliases`),
    /// sent by [`crate::Client::identify`].
    Alias,
}

/// Why records were dropped instead of delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The buffer was full; the oldest lowest-priority record made room.
    BufferFull,
    /// The record waited longer than the buffer's age bound.
    Expired,
    /// The collector refused the batch for good (a 4xx other than 408/429).
    RejectedBatch,
    /// The collector accepted the batch but rejected these records.
    RejectedRecord,
    /// `shutdown` reached its deadline before they were delivered.
    Shutdown,
    /// An event whose context has no unit id.
    NoUnit,
}

/// Something the SDK reports to the host's [`Hooks`].
#[derive(Debug)]
#[non_exhaustive]
pub enum SdkEvent<'a> {
    /// A snapshot became the current one.
    ConfigApplied {
        /// Its version.
        version: u64,
        /// Where it came from.
        source: ConfigSource,
    },
    /// A snapshot was unusable (unparseable, invalid, too large); the
    /// previous one stays current.
    ConfigRejected {
        /// Where it came from.
        source: ConfigSource,
        /// Why.
        reason: &'a str,
    },
    /// A snapshot not newer than the current one was ignored.
    StaleConfigIgnored {
        /// Its version.
        version: u64,
        /// The current version.
        current: u64,
    },
    /// `GET /sdk/v1/config` failed (network, timeout, unexpected status).
    ConfigFetchFailed {
        /// Why.
        error: &'a str,
    },
    /// Writing the last-known-good cache failed.
    CacheWriteFailed {
        /// Why.
        error: &'a str,
    },
    /// The stream connected.
    StreamConnected,
    /// The stream ended or could not connect; it reconnects after `retry_in`.
    StreamDisconnected {
        /// Why.
        error: &'a str,
        /// The jittered delay before the next attempt.
        retry_in: Duration,
    },
    /// A batch was acknowledged by the collector.
    BatchSent {
        /// Exposures or events.
        kind: RecordKind,
        /// Records in the batch.
        records: usize,
        /// Records the collector stored.
        accepted: u64,
        /// Records it already had (a retried batch).
        duplicates: u64,
        /// Records it rejected.
        rejected: u64,
    },
    /// Sending a batch failed; it is retried after `retry_in`.
    BatchFailed {
        /// Exposures or events.
        kind: RecordKind,
        /// Why.
        error: &'a str,
        /// Attempts so far.
        attempt: u32,
        /// The delay before the next attempt.
        retry_in: Duration,
    },
    /// Records were dropped.
    RecordsDropped {
        /// Exposures or events.
        kind: RecordKind,
        /// Why.
        reason: DropReason,
        /// How many (since the previous report of this kind and reason).
        count: u64,
    },
    /// An evaluation panicked and was answered with the default. Should
    /// never happen; please report it.
    EvaluationPanicked,
}

/// The host's metrics and logging hook. Called from the SDK's background
/// tasks; implementations should be quick and must not block for long.
pub trait Hooks: Send + Sync + 'static {
    /// Called for each [`SdkEvent`].
    fn on_event(&self, event: &SdkEvent<'_>);
}

impl<F> Hooks for F
where
    F: Fn(&SdkEvent<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &SdkEvent<'_>) {
        self(event)
    }
}

/// Calls a hook, swallowing a panic: a broken hook must not take the SDK's
/// background tasks down with it.
pub(crate) fn emit(hooks: Option<&dyn Hooks>, event: &SdkEvent<'_>) {
    if let Some(h) = hooks {
        let _ = catch_unwind(AssertUnwindSafe(|| h.on_event(event)));
    }
}

/// A point-in-time copy of the client's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Version of the current snapshot; 0 when none is loaded.
    pub config_version: u64,
    /// Snapshots applied (bootstrap, cache and server).
    pub configs_applied: u64,
    /// Snapshots rejected as unusable.
    pub configs_rejected: u64,
    /// Failed config fetches.
    pub config_fetch_failures: u64,
    /// Whether the stream is connected now.
    pub stream_connected: bool,
    /// Exposures buffered for shipping.
    pub exposures_logged: u64,
    /// Exposures not logged again (same unit and experiment today).
    pub exposures_deduplicated: u64,
    /// Exposures acknowledged by the collector (accepted or duplicate).
    pub exposures_delivered: u64,
    /// Events buffered for shipping.
    pub events_tracked: u64,
    /// Events acknowledged by the collector (accepted or duplicate).
    pub events_delivered: u64,
    /// Exposures dropped, whatever the reason.
    pub exposures_dropped: u64,
    /// Events dropped, whatever the reason.
    pub events_dropped: u64,
    /// Aliases buffered for shipping by `identify`.
    pub aliases_sent: u64,
    /// Aliases acknowledged by the collector (accepted or duplicate).
    pub aliases_delivered: u64,
    /// Aliases dropped, whatever the reason.
    pub aliases_dropped: u64,
    /// Records not shipped because the client has no ingest key.
    pub unshipped_no_ingest_key: u64,
    /// Evaluations that panicked and were answered with the default.
    pub evaluation_panics: u64,
    /// Evaluations answered with the default because the context's user
    /// agent is a known bot's.
    pub bots_served_default: u64,
    /// Sticky-store operations that failed or timed out (the evaluation
    /// went on without them) or were dropped because too many waited.
    pub sticky_store_failures: u64,
    /// Units whose kept sticky assignments are cached now.
    pub sticky_cached_units: u64,
    /// Records waiting in the buffer now.
    pub buffered: u64,
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter that many threads increment on the hot path: one cache line
/// per stripe, so that concurrent callers do not bounce one line between
/// cores.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter([Padded; STRIPES]);

const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// This thread's stripe, assigned round-robin on first use.
fn stripe() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static STRIPE: usize = (NEXT.fetch_add(1, Ordering::Relaxed) as usize) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

impl StripedCounter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        if let Some(p) = self.0.get(stripe()) {
            p.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}

/// The client's counters. Drops are counted per kind and reason; the
/// background flusher reports their increase through the hook.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub configs_applied: Counter,
    pub configs_rejected: Counter,
    pub config_fetch_failures: Counter,
    /// Incremented on the caller's thread for each new exposure.
    pub exposures_logged: StripedCounter,
    /// Incremented on nearly every `variant()` call of a warm client.
    pub exposures_deduplicated: StripedCounter,
    pub exposures_delivered: Counter,
    pub events_tracked: Counter,
    pub events_delivered: Counter,
    pub aliases_sent: Counter,
    pub aliases_delivered: Counter,
    pub unshipped_no_ingest_key: StripedCounter,
    pub evaluation_panics: Counter,
    pub bots_served_default: Counter,
    pub sticky_store_failures: Counter,
    /// `[kind][reason]`, in the order of [`KINDS`] and [`REASONS`].
    pub dropped: [[Counter; 6]; 3],
}

/// Record kinds in the order of [`Counters::dropped`].
pub(crate) const KINDS: [RecordKind; 3] =
    [RecordKind::Exposure, RecordKind::Event, RecordKind::Alias];
/// Drop reasons in the order of [`Counters::dropped`].
pub(crate) const REASONS: [DropReason; 6] = [
    DropReason::BufferFull,
    DropReason::Expired,
    DropReason::RejectedBatch,
    DropReason::RejectedRecord,
    DropReason::Shutdown,
    DropReason::NoUnit,
];

impl Counters {
    /// Counts `n` dropped records.
    #[inline]
    pub(crate) fn drop_records(&self, kind: RecordKind, reason: DropReason, n: u64) {
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let r = REASONS.iter().position(|x| *x == reason).unwrap_or(0);
        if let Some(c) = self.dropped.get(k).and_then(|row| row.get(r)) {
            c.add(n);
        }
    }

    /// All drops of one kind.
    pub(crate) fn dropped_total(&self, kind: RecordKind) -> u64 {
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        self.dropped
            .get(k)
            .map_or(0, |row| row.iter().map(Counter::get).sum())
    }

    /// Records dropped, of every kind, for every reason.
    pub(crate) fn dropped_all(&self) -> u64 {
        KINDS.iter().map(|k| self.dropped_total(*k)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn drops_are_counted_per_kind_and_reason() {
        let c = Counters::default();
        c.drop_records(RecordKind::Event, DropReason::BufferFull, 3);
        c.drop_records(RecordKind::Event, DropReason::Expired, 2);
        c.drop_records(RecordKind::Exposure, DropReason::Shutdown, 1);
        assert_eq!(c.dropped_total(RecordKind::Event), 5);
        assert_eq!(c.dropped_total(RecordKind::Exposure), 1);
        assert_eq!(c.dropped[1][1].get(), 2);
    }

    #[test]
    fn a_striped_counter_sums_its_stripes() {
        let c = Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(), 8000);
    }

    #[test]
    fn a_panicking_hook_is_contained() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let hook = move |_: &SdkEvent<'_>| {
            s.fetch_add(1, Ordering::Relaxed);
            panic!("broken hook");
        };
        emit(Some(&hook), &SdkEvent::StreamConnected);
        emit(Some(&hook), &SdkEvent::StreamConnected);
        assert_eq!(seen.load(Ordering::Relaxed), 2);
    }
}
