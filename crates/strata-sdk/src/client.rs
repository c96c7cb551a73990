//! The client: the hot path (`variant`, `assignments`, `track`) and the
//! lifecycle (`ready`, `flush`, `shutdown`).
//!
//! The hot path reads the current snapshot through an atomic pointer
//! (`arc-swap`), evaluates in memory, checks the lock-free exposure dedup
//! table and at most hands a new exposure to a lock-free queue; it never
//! touches the network and never waits for the background tasks. It takes
//! no lock, except a read lock of the sticky cache (held while evaluating
//! in memory) when the experiment is sticky. Every entry point runs under `catch_unwind`, so
//! a bug surfaces as the caller's default and a counter, not a crash.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use strata_core::{Assignment, CompiledSnapshot, Context, StickyAssignment};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::buffer::{utc_day, Alias, Buffer, Event, Exposure, Intake};
use crate::builder::{ClientBuilder, Options};
use crate::dedup::{pair_hash, Dedup};
use crate::error::BuildError;
use crate::hooks::{emit, Counters, DropReason, RecordKind, SdkEvent, Stats};
use crate::state::Loaded;
use crate::sticky::{self, Cache};
use crate::variant::{Reason, Variant};
use crate::{config, ship};

/// State shared by the client handles and the background tasks.
pub(crate) struct Shared {
    pub state: ArcSwap<Loaded>,
    pub opts: Options,
    pub counters: Counters,
    pub buffer: Buffer,
    /// New exposures on their way from callers to `buffer`.
    pub intake: Intake,
    /// The pairs exposed recently, checked on the caller's thread.
    pub recent: Dedup,
    /// The pairs exposed today, checked in the background.
    pub dedup: Dedup,
    pub http: reqwest::Client,
    /// True once a snapshot is loaded.
    pub loaded: watch::Sender<bool>,
    /// Wakes the poller for an immediate fetch (a stream event).
    pub fetch_now: Notify,
    /// Wakes the flusher (a full batch, a flush request).
    pub flush_wake: Notify,
    /// Callers of `flush` waiting for an empty buffer.
    pub flush_waiters: Mutex<Vec<oneshot::Sender<()>>>,
    /// `Some(deadline)` once the client stops: tasks end, the flusher
    /// delivers what it can before the deadline.
    pub stop: watch::Sender<Option<Instant>>,
    pub stream_connected: AtomicBool,
    /// Drop counts already reported through the hook.
    pub reported_drops: Mutex<[[u64; 6]; 2]>,
    /// Whether the flusher runs (an ingest key was given and the client
    /// has not shut down).
    pub shipping: AtomicBool,
    /// Kept assignments of sticky experiments, for evaluation.
    pub sticky: Cache,
    /// Work for the sticky store, done in the background.
    pub sticky_jobs: Mutex<Vec<StickyJob>>,
    pub sticky_wake: Notify,
}

/// Work the sticky saver does off the caller's thread.
pub(crate) enum StickyJob {
    /// Keep these entries (where nothing is kept).
    Save(Vec<StickyAssignment>),
    /// Keep the entries of the unit `from` for the unit `to` (identify).
    Move {
        from: (String, String),
        to: (String, String),
    },
}

/// Sticky jobs waiting at most; past this a job is dropped and counted.
const MAX_STICKY_JOBS: usize = 10_000;

impl Shared {
    /// Queues `job` for the sticky saver; counts a failure when the queue
    /// is full (the store is far behind or down).
    fn sticky_job(&self, job: StickyJob) {
        let mut jobs = self
            .sticky_jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if jobs.len() >= MAX_STICKY_JOBS {
            self.counters.sticky_store_failures.add(1);
            return;
        }
        jobs.push(job);
        drop(jobs);
        self.sticky_wake.notify_one();
    }

    /// Evaluates `snapshot` for `ctx`, keeping sticky experiments' kept
    /// assignments and caching (and queueing for the store) the new ones.
    fn evaluate<'a>(
        &self,
        snapshot: &'a CompiledSnapshot,
        ctx: &Context,
        surface: Option<&str>,
        out: &mut Vec<Assignment<'a>>,
    ) {
        if !snapshot.has_sticky() {
            snapshot.evaluate_into(ctx, surface, out);
            return;
        }
        let e = self
            .sticky
            .with_lookup(|l| snapshot.evaluate_sticky(ctx, surface, l));
        out.extend(e.assignments);
        if !e.new_entries.is_empty() {
            let entries: Vec<StickyAssignment> =
                e.new_entries.iter().map(|x| x.to_owned()).collect();
            self.sticky.insert(&entries);
            self.sticky_job(StickyJob::Save(entries));
        }
    }
}

/// Does the sticky store's work queued by callers, until the client stops
/// and the queue is empty. A store error or timeout is counted; the
/// evaluation already went on without it.
async fn run_sticky_saver(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    loop {
        let jobs = std::mem::take(
            &mut *shared
                .sticky_jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if jobs.is_empty() {
            if stop.borrow().is_some() {
                return;
            }
            tokio::select! {
                _ = shared.sticky_wake.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let store = shared.opts.sticky_store.clone();
        let timeout = shared.opts.request_timeout;
        for job in jobs {
            let done = tokio::time::timeout(timeout, async {
                match job {
                    StickyJob::Save(entries) => store.save(&entries).await,
                    StickyJob::Move { from, to } => {
                        let kept = store.load(std::slice::from_ref(&from)).await?;
                        let moved = sticky::moved(&kept, (&to.0, &to.1));
                        store.save(&moved).await
                    }
                }
            })
            .await;
            if !matches!(done, Ok(Ok(()))) {
                shared.counters.sticky_store_failures.add(1);
            }
        }
    }
}

impl Shared {
    pub fn hooks(&self) -> Option<&dyn crate::hooks::Hooks> {
        self.opts.hooks.as_deref()
    }

    pub fn emit(&self, event: &SdkEvent<'_>) {
        emit(self.hooks(), event);
    }

    /// Moves the exposures handed over by callers into the buffer; returns
    /// the number of exposures waiting there.
    pub fn absorb(&self) -> usize {
        self.intake
            .absorb(&self.buffer, &self.dedup, &self.counters)
    }
}

/// Pairs the caller-side dedup table holds (512 KiB: it stays in cache).
const RECENT_PAIRS: usize = 32_768;

/// How often handed-over exposures are moved into the buffer.
const INTAKE_EVERY: Duration = Duration::from_millis(10);

/// Moves handed-over exposures into the buffer every few milliseconds and
/// wakes the flusher when a batch is full, until the client stops.
async fn run_intake(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut tick = tokio::time::interval(INTAKE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if shared.absorb() >= shared.opts.batch_size {
            shared.flush_wake.notify_one();
        }
        if stop.borrow().is_some() {
            return;
        }
    }
}

/// Stops the background tasks when the last handle goes.
struct Handle {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    sticky_saver: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(Instant::now());
                true
            } else {
                false
            }
        });
    }
}

/// The SDK client. Cheap to clone (one `Arc`); share one per process.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Handle>,
}

/// One experiment of [`Client::assignments`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssignedExperiment {
    /// The opaque client-facing flag.
    pub flag: String,
    /// The experiment key.
    pub experiment: String,
    /// The variant to serve.
    pub variant: String,
    /// The variant assigned (differs for opted-out units).
    pub assigned: String,
    /// Whether serving it is an exposure (false for a concluded rollout).
    pub log_exposure: bool,
}

/// The experiments that apply to one request, in snapshot order. Reading
/// them logs no exposure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignments {
    version: u64,
    items: Vec<AssignedExperiment>,
}

impl Assignments {
    /// The snapshot version they come from (0: none loaded).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The assignment of a flag or experiment key.
    pub fn get(&self, flag_or_key: &str) -> Option<&AssignedExperiment> {
        self.items
            .iter()
            .find(|a| a.flag == flag_or_key)
            .or_else(|| self.items.iter().find(|a| a.experiment == flag_or_key))
    }

    /// All of them.
    pub fn iter(&self) -> std::slice::Iter<'_, AssignedExperiment> {
        self.items.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none applies.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What [`Client::shutdown`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether every buffered record was delivered before the deadline.
    pub delivered_all: bool,
    /// Records dropped at the deadline.
    pub dropped: u64,
}

/// A segment attribute's value as text: strings, numbers and booleans.
fn attribute_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
thread_local! {
    /// Makes evaluation panic on this thread, to test that it is caught.
    static FAIL_EVALUATION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Client {
    /// Starts building a client for the server at `server_url` with an SDK
    /// key (kind `sdk`).
    pub fn builder(server_url: &str, sdk_key: &str) -> ClientBuilder {
        ClientBuilder::new(server_url, sdk_key)
    }

    pub(crate) fn start(opts: Options, rt: &tokio::runtime::Handle) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(opts.request_timeout)
            .build()
            .map_err(|e| BuildError::Http(e.to_string()))?;
        let shipping = opts.ingest_auth.is_some();
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(Loaded::none()),
            counters: Counters::default(),
            buffer: Buffer::new(opts.buffer_capacity),
            intake: Intake::new(),
            recent: Dedup::new(RECENT_PAIRS),
            dedup: Dedup::new(opts.dedup_capacity),
            http,
            loaded: watch::Sender::new(false),
            fetch_now: Notify::new(),
            flush_wake: Notify::new(),
            flush_waiters: Mutex::new(Vec::new()),
            stop: watch::Sender::new(None),
            stream_connected: AtomicBool::new(false),
            reported_drops: Mutex::new([[0; 6]; 2]),
            shipping: AtomicBool::new(shipping),
            sticky: Cache::new(opts.sticky_cache_units),
            sticky_jobs: Mutex::new(Vec::new()),
            sticky_wake: Notify::new(),
            opts,
        });
        config::load_local(&shared);
        rt.spawn(config::run_poller(shared.clone()));
        if shared.opts.streaming {
            rt.spawn(config::run_stream(shared.clone()));
        }
        if shipping {
            rt.spawn(run_intake(shared.clone()));
        }
        let sticky_saver = rt.spawn(run_sticky_saver(shared.clone()));
        let flusher = shipping.then(|| rt.spawn(ship::run(shared.clone())));
        Ok(Self {
            inner: Arc::new(Handle {
                shared,
                flusher: Mutex::new(flusher),
                sticky_saver: Mutex::new(Some(sticky_saver)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Waits until a snapshot is loaded (bootstrap, cache or server), at
    /// most `timeout`; returns whether one is. The client works either way:
    /// without a snapshot it serves defaults.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.shared().loaded.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|loaded| *loaded))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The version of the current snapshot (0 when none is loaded).
    pub fn version(&self) -> u64 {
        self.shared().state.load().version
    }

    /// The variant of `flag_or_key` (the experiment's opaque flag, or its
    /// key) to serve to the unit of `ctx`, or `default` when the unit is not
    /// in the experiment or anything at all goes wrong. Logs one exposure
    /// per unit and experiment per day when the unit is really in the
    /// experiment (not for a concluded rollout), carrying the assigned and
    /// the served variant. Never blocks on the network; never panics.
    pub fn variant<'d>(&self, ctx: &Context, flag_or_key: &str, default: &'d str) -> Variant<'d> {
        let shared = self.shared();
        match catch_unwind(AssertUnwindSafe(|| {
            evaluate_flag(shared, ctx, flag_or_key, default)
        })) {
            Ok(v) => v,
            Err(_) => {
                shared.counters.evaluation_panics.add(1);
                Variant::default_for(default, Reason::Error)
            }
        }
    }

    /// Every experiment applying to `ctx` on `surface` (`None`: every
    /// surface), without logging exposures: for passing assignments on to
    /// a client-side renderer or a log line. Empty when nothing is loaded
    /// or anything goes wrong.
    pub fn assignments(&self, ctx: &Context, surface: Option<&str>) -> Assignments {
        let shared = self.shared();
        catch_unwind(AssertUnwindSafe(|| {
            let state = shared.state.load();
            let mut assigned = Vec::new();
            shared.evaluate(&state.compiled, ctx, surface, &mut assigned);
            let items = assigned
                .into_iter()
                .map(|a| AssignedExperiment {
                    flag: a.flag.to_owned(),
                    experiment: a.experiment.to_owned(),
                    variant: a.variant.to_owned(),
                    assigned: a.assigned.to_owned(),
                    log_exposure: a.log_exposure,
                })
                .collect();
            Assignments {
                version: state.version,
                items,
            }
        }))
        .unwrap_or_else(|_| {
            shared.counters.evaluation_panics.add(1);
            Assignments::default()
        })
    }

    /// Copies the kept assignments of the units of `ctx` (the unit and
    /// fallback attributes of the current snapshot's sticky experiments)
    /// from the sticky store into the client's cache, at most the request
    /// timeout; returns whether the store answered. Call it where a
    /// session starts, before evaluating: an evaluation of a unit that is
    /// not cached assigns it afresh by hash. What the store holds replaces
    /// what the cache holds. A failure is counted and changes nothing.
    pub async fn load_sticky(&self, ctx: &Context) -> bool {
        let shared = self.shared();
        let units: Vec<(String, String)> = {
            let state = shared.state.load();
            state
                .compiled
                .sticky_attributes()
                .into_iter()
                .filter_map(|a| {
                    Some((
                        a.to_owned(),
                        strata_core::unit_text(ctx.get(a)?)?.into_owned(),
                    ))
                })
                .collect()
        };
        if units.is_empty() {
            return true;
        }
        let store = shared.opts.sticky_store.clone();
        match tokio::time::timeout(shared.opts.request_timeout, store.load(&units)).await {
            Ok(Ok(kept)) => {
                shared.sticky.replace(&kept);
                true
            }
            _ => {
                shared.counters.sticky_store_failures.add(1);
                false
            }
        }
    }

    /// Records that the anonymous visitor `anonymous_id` (the attribute
    /// set by [`ClientBuilder::identity_attributes`], default `device_id`)
    /// signed in as `user_id` (default attribute `user_id`): the sticky
    /// assignments kept for the anonymous id are kept for the user id too,
    /// where the user has none, in the cache at once and in the store in
    /// the background. It also sends an alias record
    /// (`/collect/v1/aliases`), so the analysis counts the records of both
    /// ids as one unit's. Never blocks on the network.
    pub fn identify(&self, anonymous_id: &str, user_id: &str) {
        let shared = self.shared();
        let (anon_attr, user_attr) = (&shared.opts.anonymous_attr, &shared.opts.user_attr);
        if anonymous_id.is_empty() || user_id.is_empty() || anonymous_id == user_id {
            return;
        }
        if !shared.shipping.load(Ordering::Relaxed) {
            if shared.opts.ingest_auth.is_some() {
                shared
                    .counters
                    .drop_records(RecordKind::Alias, DropReason::Shutdown, 1);
            } else {
                shared.counters.unshipped_no_ingest_key.add(1);
            }
        } else {
            shared.buffer.push_alias(
                Alias {
                    anonymous_id: anonymous_id.to_owned(),
                    user_id: user_id.to_owned(),
                    at: strata_clock::now(),
                },
                &shared.counters,
            );
            shared.counters.aliases_sent.add(1);
            // Rare and small: shipped with the next flush, not batched up.
            shared.flush_wake.notify_one();
        }
        let kept = shared.sticky.unit(anon_attr, anonymous_id);
        shared
            .sticky
            .insert(&sticky::moved(&kept, (user_attr, user_id)));
        shared.sticky_job(StickyJob::Move {
            from: (anon_attr.clone(), anonymous_id.to_owned()),
            to: (user_attr.clone(), user_id.to_owned()),
        });
    }

    /// Records a behavioural event of the unit of `ctx` (its
    /// `event_unit_attribute`, default `user_id`) with a client-generated
    /// `event_id` (UUID v7, so retries never count twice) and the client's
    /// clock. Returns the id, or `None` when the context has no unit id.
    /// Never blocks on the network.
    pub fn track(
        &self,
        ctx: &Context,
        event_type: &str,
        value: Option<f64>,
        properties: Option<Map<String, Value>>,
    ) -> Option<Uuid> {
        let shared = self.shared();
        catch_unwind(AssertUnwindSafe(|| {
            let Some(unit_id) = ctx
                .get(&shared.opts.event_unit_attr)
                .and_then(strata_core::unit_text)
                .map(std::borrow::Cow::into_owned)
            else {
                shared
                    .counters
                    .drop_records(RecordKind::Event, DropReason::NoUnit, 1);
                return None;
            };
            let event_id = Uuid::now_v7();
            if !shared.shipping.load(Ordering::Relaxed) {
                if shared.opts.ingest_auth.is_some() {
                    shared
                        .counters
                        .drop_records(RecordKind::Event, DropReason::Shutdown, 1);
                } else {
                    shared.counters.unshipped_no_ingest_key.add(1);
                }
                return Some(event_id);
            }
            let low = shared.opts.low_priority_events.contains(event_type);
            let waiting = shared.buffer.push_event(
                Event {
                    event_id,
                    unit_id,
                    kind: event_type.to_owned(),
                    // JSON has no NaN or infinity; such a value is left out.
                    value: value.filter(|v| v.is_finite()),
                    properties,
                    at: strata_clock::now(),
                },
                low,
                &shared.counters,
            );
            shared.counters.events_tracked.add(1);
            if waiting % shared.opts.batch_size == 0 {
                shared.flush_wake.notify_one();
            }
            Some(event_id)
        }))
        .unwrap_or(None)
    }

    /// Delivers everything buffered now, retrying as usual, and returns once
    /// the buffer is empty: true when nothing was dropped meanwhile. A
    /// record is retried at most until it is older than the buffer's age
    /// bound, so this ends; wrap it in a timeout to wait less, or use
    /// [`shutdown`](Self::shutdown) with a deadline. Without an ingest key
    /// there is nothing to deliver.
    pub async fn flush(&self) -> bool {
        let shared = self.shared();
        if !shared.shipping.load(Ordering::Relaxed) {
            return shared.buffer.len() == 0;
        }
        let dropped = || shared.counters.dropped_all();
        let before = dropped();
        let (tx, rx) = oneshot::channel();
        shared
            .flush_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        shared.flush_wake.notify_one();
        rx.await.is_ok() && dropped() == before
    }

    /// Stops the background tasks, delivering buffered records until
    /// `deadline` from now; what is left then is dropped and counted.
    /// Evaluation keeps working afterwards; records logged after it are
    /// not shipped (counted as dropped).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let shared = self.shared();
        let before = shared.counters.dropped_all();
        shared.stop.send_replace(Some(Instant::now() + deadline));
        let flusher = self
            .inner
            .flusher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = flusher {
            // The flusher ends by the deadline; the margin covers a request
            // that ignores its timeout.
            let _ = tokio::time::timeout(deadline + Duration::from_secs(1), task).await;
        }
        // The sticky saver ends once its queue is empty: what this process
        // assigned is in the store before shutdown returns (or the deadline
        // passed).
        let saver = self
            .inner
            .sticky_saver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = saver {
            let _ = tokio::time::timeout(deadline, task).await;
        }
        shared.shipping.store(false, Ordering::Relaxed);
        shared.absorb();
        let left = shared.buffer.len() as u64;
        shared.buffer.clear(DropReason::Shutdown, &shared.counters);
        let after = shared.counters.dropped_all();
        ShutdownReport {
            delivered_all: after == before && left == 0,
            dropped: after - before,
        }
    }

    /// The client's counters now.
    pub fn stats(&self) -> Stats {
        let s = self.shared();
        s.absorb();
        let c = &s.counters;
        Stats {
            config_version: s.state.load().version,
            configs_applied: c.configs_applied.get(),
            configs_rejected: c.configs_rejected.get(),
            config_fetch_failures: c.config_fetch_failures.get(),
            stream_connected: s.stream_connected.load(Ordering::Relaxed),
            exposures_logged: c.exposures_logged.get(),
            exposures_deduplicated: c.exposures_deduplicated.get(),
            exposures_delivered: c.exposures_delivered.get(),
            events_tracked: c.events_tracked.get(),
            events_delivered: c.events_delivered.get(),
            exposures_dropped: c.dropped_total(RecordKind::Exposure),
            events_dropped: c.dropped_total(RecordKind::Event),
            aliases_sent: c.aliases_sent.get(),
            aliases_delivered: c.aliases_delivered.get(),
            aliases_dropped: c.dropped_total(RecordKind::Alias),
            unshipped_no_ingest_key: c.unshipped_no_ingest_key.get(),
            evaluation_panics: c.evaluation_panics.get(),
            sticky_store_failures: c.sticky_store_failures.get(),
            sticky_cached_units: s.sticky.len() as u64,
            bots_served_default: c.bots_served_default.get(),
            buffered: s.buffer.len() as u64,
        }
    }
}

/// The body of `variant`, run under `catch_unwind`.
fn evaluate_flag<'d>(shared: &Shared, ctx: &Context, flag: &str, default: &'d str) -> Variant<'d> {
    #[cfg(test)]
    if FAIL_EVALUATION.with(std::cell::Cell::get) {
        panic!("injected evaluation failure");
    }
    let state = shared.state.load();
    if !state.present {
        return Variant::default_for(default, Reason::NoConfig);
    }
    let Some(entry) = state.flag(flag) else {
        return Variant::default_for(default, Reason::UnknownFlag);
    };
    let Some(single) = &entry.snapshot else {
        return Variant::default_for(default, Reason::Disabled);
    };
    let mut out = Vec::new();
    shared.evaluate(single, ctx, None, &mut out);
    log_holdout(shared, ctx, single);
    let Some(a) = out.first() else {
        // Telling a bot apart costs a second look at the user agent, paid
        // only by contexts that have one and got the default.
        if single.excludes_bots() && strata_core::bots::is_bot(ctx) {
            shared.counters.bots_served_default.add(1);
            return Variant::default_for(default, Reason::Bot);
        }
        return Variant::default_for(default, Reason::NotAssigned);
    };
    if a.log_exposure {
        log_exposure(shared, ctx, a);
        Variant::served(a.variant, Reason::Assigned)
    } else {
        Variant::served(a.variant, Reason::Rollout)
    }
}

/// Hands the exposure of `a` to the background unless this unit was exposed
/// to this experiment recently today. No lock, one allocation; the day's
/// full table is consulted in the background, off this thread.
fn log_exposure(shared: &Shared, ctx: &Context, a: &Assignment<'_>) {
    let Some(unit) = ctx.get(a.unit_attr) else {
        return;
    };
    let Some(unit_id) = strata_core::unit_text(unit) else {
        return;
    };
    offer_exposure(
        shared,
        ctx,
        &unit_id,
        (a.experiment, a.experiment),
        a.variant,
        a.assigned,
    );
}

/// Logs the holdout exposures of `ctx` for the flag evaluated in `single`
/// (assignment spec section 11; none without a global holdout): once per
/// unit and day, like any exposure, so the holdout can be compared with
/// everyone else. Held-out units log these and nothing else.
fn log_holdout(shared: &Shared, ctx: &Context, single: &CompiledSnapshot) {
    let exposures = single.holdout_exposures(ctx, None);
    if exposures.is_empty() {
        return;
    }
    // Once per unit and day within one holdout: a new salt or size starts
    // a new period, which must see the unit's membership the same day. The
    // holdout's key (`salt:permille`) has a ':', which no experiment key
    // has, so it is a scope of its own, computed when the snapshot was
    // compiled rather than on this path.
    let scope = single
        .holdout_key()
        .unwrap_or(strata_core::HOLDOUT_EXPERIMENT);
    for h in exposures {
        let variant = h.variant();
        offer_exposure(
            shared,
            ctx,
            &h.unit_id,
            (strata_core::HOLDOUT_EXPERIMENT, scope),
            variant,
            variant,
        );
    }
}

/// The common path of an exposure of `experiment.0`: skipped when this
/// unit was exposed to it recently today (within scope `experiment.1`: the
/// experiment's key, or the holdout's period), else handed to the
/// background.
fn offer_exposure(
    shared: &Shared,
    ctx: &Context,
    unit_id: &str,
    (experiment, scope): (&str, &str),
    variant: &str,
    assigned: &str,
) {
    let now = strata_clock::now();
    let day = utc_day(now);
    let pair = pair_hash(unit_id, scope);
    if !shared.recent.first_today(pair, day) {
        shared.counters.exposures_deduplicated.add(1);
        return;
    }
    if !shared.shipping.load(Ordering::Relaxed) {
        // Nothing is shipped: the day's table decides here, so that the
        // counts stay exact.
        if !shared.dedup.first_today(pair, day) {
            shared.counters.exposures_deduplicated.add(1);
        } else if shared.opts.ingest_auth.is_some() {
            shared
                .counters
                .drop_records(RecordKind::Exposure, DropReason::Shutdown, 1);
        } else {
            shared.counters.unshipped_no_ingest_key.add(1);
        }
        return;
    }
    let mut exposure = Exposure::with_pair(
        unit_id,
        experiment,
        variant,
        assigned,
        ctx.opted_out(),
        now,
        pair,
    );
    if !shared.opts.exposure_attrs.is_empty() {
        let attrs: Box<[(String, String)]> = shared
            .opts
            .exposure_attrs
            .iter()
            .filter_map(|name| Some((name.clone(), attribute_text(ctx.get(name)?)?)))
            .collect();
        exposure.attributes = (!attrs.is_empty()).then_some(attrs);
    }
    if !shared.intake.offer(exposure) {
        shared
            .counters
            .drop_records(RecordKind::Exposure, DropReason::BufferFull, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"version": 3, "experiments": [
        {"key": "exp_a", "flag": "fa", "salt": "sa", "status": "running",
         "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}]},
        {"key": "exp_w", "flag": "fw", "salt": "sw", "status": "concluded", "winner": "big",
         "variants": [{"key": "small", "weight": 1}, {"key": "big", "weight": 1}]},
        {"key": "exp_p", "flag": "fp", "salt": "sp", "status": "paused",
         "variants": [{"key": "control", "weight": 1}]}]}"#;

    async fn client(ingest: bool) -> Client {
        // Port 9 (discard) on loopback: nothing answers, which is the point.
        let mut b = Client::builder("http://127.0.0.1:9", "k")
            .bootstrap_json(DOC)
            .streaming(false)
            .poll_interval(Duration::from_secs(3600))
            .flush_interval(Duration::from_secs(3600));
        if ingest {
            b = b.ingest_key("i");
        }
        b.build().unwrap()
    }

    #[tokio::test]
    async fn a_panic_in_evaluation_becomes_the_default() {
        let c = client(true).await;
        let ctx = Context::for_user("u1");
        assert!(!c.variant(&ctx, "fa", "dflt").is_default());
        FAIL_EVALUATION.with(|f| f.set(true));
        let v = c.variant(&ctx, "fa", "dflt");
        FAIL_EVALUATION.with(|f| f.set(false));
        assert_eq!(v, "dflt");
        assert_eq!(v.reason(), Reason::Error);
        assert_eq!(c.stats().evaluation_panics, 1);
    }

    #[tokio::test]
    async fn reasons_and_exposures() {
        let c = client(true).await;
        assert!(c.ready(Duration::from_millis(10)).await);
        let ctx = Context::for_user("u1");
        let v = c.variant(&ctx, "fa", "dflt");
        assert_eq!(v.reason(), Reason::Assigned);
        // The key works as well as the flag, and a second look is not a
        // second exposure.
        assert_eq!(c.variant(&ctx, "exp_a", "dflt").as_str(), v.as_str());
        let w = c.variant(&ctx, "fw", "dflt");
        assert_eq!((w.as_str(), w.reason()), ("big", Reason::Rollout));
        assert_eq!(c.variant(&ctx, "fp", "dflt").reason(), Reason::Disabled);
        assert_eq!(
            c.variant(&ctx, "nope", "dflt").reason(),
            Reason::UnknownFlag
        );
        assert_eq!(
            c.variant(&Context::new(), "fa", "dflt").reason(),
            Reason::NotAssigned
        );
        let s = c.stats();
        assert_eq!((s.exposures_logged, s.exposures_deduplicated), (1, 1));
        assert_eq!(s.buffered, 1);
        let e = c.shared().buffer.take_exposures(10);
        assert_eq!(e[0].experiment(), "exp_a");
        assert_eq!(e[0].variant(), v.as_str());
    }

    #[tokio::test]
    async fn opted_out_units_are_served_control_and_logged_with_their_assignment() {
        let c = client(true).await;
        // A unit assigned to the treatment (reading assignments logs nothing).
        let unit = (0..1000)
            .map(|i| format!("u{i}"))
            .find(|u| {
                c.assignments(&Context::for_user(u.as_str()), None)
                    .get("fa")
                    .is_some_and(|a| a.variant == "treatment")
            })
            .unwrap();
        let mut ctx = Context::for_user(unit);
        ctx.insert("opted_out", true);
        assert_eq!(c.variant(&ctx, "fa", "d"), "control");
        c.shared().absorb();
        let e = c.shared().buffer.take_exposures(10);
        assert_eq!(
            (e[0].variant(), e[0].assigned(), e[0].opted_out),
            ("control", "treatment", true)
        );
    }

    #[tokio::test]
    async fn every_evaluated_unit_logs_its_holdout_membership_once_a_day() {
        let doc = r#"{"version": 1, "holdout": {"salt": "h-2026", "permille": 300},
            "experiments": [
            {"key": "exp_a", "flag": "fa", "salt": "sa", "status": "running",
             "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}]},
            {"key": "exp_free", "flag": "ff", "salt": "sf", "status": "running", "respect_holdout": false,
             "variants": [{"key": "control", "weight": 1}]}]}"#;
        let c = Client::builder("http://127.0.0.1:9", "k")
            .bootstrap_json(doc)
            .streaming(false)
            .poll_interval(Duration::from_secs(3600))
            .flush_interval(Duration::from_secs(3600))
            .ingest_key("i")
            .build()
            .unwrap();
        let units: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
        for _ in 0..3 {
            for u in &units {
                let ctx = Context::for_user(u.as_str());
                c.variant(&ctx, "fa", "d");
                // An experiment that ignores the holdout logs no membership.
                c.variant(&ctx, "ff", "d");
            }
        }
        let held = |u: &str| strata_core::hash::bucket(u, "h-2026") < 300;
        // The holdout exposures buffered so far, sorted.
        let logged = || {
            c.shared().absorb();
            let mut v: Vec<(String, String)> = c
                .shared()
                .buffer
                .take_exposures(1000)
                .iter()
                .filter(|e| e.experiment() == strata_core::HOLDOUT_EXPERIMENT)
                .map(|e| (e.unit_id().to_owned(), e.variant().to_owned()))
                .collect();
            v.sort();
            v
        };
        let holdout = logged();
        let mut want: Vec<(String, String)> = units
            .iter()
            .map(|u| {
                let v = if held(u) { "holdout" } else { "rest" };
                (u.clone(), v.to_owned())
            })
            .collect();
        want.sort();
        assert_eq!(holdout, want, "each unit once, with its membership");
        assert!(units.iter().any(|u| held(u)) && units.iter().any(|u| !held(u)));
        // A rotated salt starts a new period: each unit's membership under
        // it is logged the same day, once.
        let rotated = doc
            .replace("\"version\": 1", "\"version\": 2")
            .replace("h-2026", "h-2027");
        let loaded = crate::state::Loaded::from_slice(rotated.as_bytes(), None).unwrap();
        c.shared().state.store(std::sync::Arc::new(loaded));
        for _ in 0..2 {
            for u in &units {
                c.variant(&Context::for_user(u.as_str()), "fa", "d");
            }
        }
        let again = logged();
        let held = |u: &str| strata_core::hash::bucket(u, "h-2027") < 300;
        let mut want: Vec<(String, String)> = units
            .iter()
            .map(|u| {
                (
                    u.clone(),
                    if held(u) { "holdout" } else { "rest" }.to_owned(),
                )
            })
            .collect();
        want.sort();
        assert_eq!(again, want, "each unit once more, under the new salt");
    }

    #[tokio::test]
    async fn exposures_carry_the_chosen_context_attributes() {
        let c = Client::builder("http://127.0.0.1:9", "k")
            .bootstrap_json(DOC)
            .streaming(false)
            .poll_interval(Duration::from_secs(3600))
            .flush_interval(Duration::from_secs(3600))
            .ingest_key("i")
            .exposure_attributes(["country", "platform", "age", "beta", "missing"])
            .build()
            .unwrap();
        let mut ctx = Context::for_user("u1");
        ctx.insert("country", "de");
        ctx.insert("platform", "mobile");
        ctx.insert("age", 41);
        ctx.insert("beta", true);
        ctx.insert("email", "not@copied");
        c.variant(&ctx, "fa", "d");
        c.variant(&Context::for_user("u2"), "fa", "d");
        c.shared().absorb();
        let e = c.shared().buffer.take_exposures(10);
        let attrs: Vec<(String, String)> = e[0].attributes.as_deref().unwrap().to_vec();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
        };
        assert_eq!(
            attrs,
            pairs(&[
                ("country", "de"),
                ("platform", "mobile"),
                ("age", "41"),
                ("beta", "true")
            ])
        );
        // A context with none of them sends no attributes at all.
        assert!(e[1].attributes.is_none());
    }

    #[tokio::test]
    async fn without_an_ingest_key_nothing_is_buffered_but_it_is_counted() {
        let c = client(false).await;
        let ctx = Context::for_user("u1");
        c.variant(&ctx, "fa", "d");
        assert!(c.track(&ctx, "purchase", Some(3.0), None).is_some());
        assert!(c.track(&Context::new(), "purchase", None, None).is_none());
        let s = c.stats();
        assert_eq!(s.unshipped_no_ingest_key, 2);
        assert_eq!(s.buffered, 0);
        assert_eq!(s.events_dropped, 1, "the event without a unit");
        assert!(c.flush().await);
    }

    #[tokio::test]
    async fn a_pair_the_small_table_forgot_is_not_logged_twice() {
        let c = client(true).await;
        let units = 40_000; // more than the caller-side table holds
        for round in 0..2 {
            for i in 0..units {
                let v = c.variant(&Context::for_user(format!("u{i}")), "fa", "d");
                assert_eq!(v.reason(), Reason::Assigned);
                if i % 10_000 == 0 {
                    c.shared().absorb(); // the intake task's job, done inline
                }
            }
            let s = c.stats();
            assert_eq!(s.exposures_logged, units, "round {round}");
            assert_eq!(s.exposures_deduplicated, units * round);
        }
        assert_eq!(c.stats().exposures_dropped, 0);
    }

    #[tokio::test]
    async fn assignments_log_nothing() {
        let c = client(true).await;
        let a = c.assignments(&Context::for_user("u9"), None);
        assert_eq!(a.version(), 3);
        assert_eq!(a.len(), 2);
        assert_eq!(a.get("fw").unwrap().variant, "big");
        assert!(a.get("exp_a").is_some());
        assert_eq!(c.stats().exposures_logged, 0);
    }

    #[tokio::test]
    async fn shutdown_drops_what_cannot_be_delivered_and_says_so() {
        let c = client(true).await;
        c.track(&Context::for_user("u1"), "purchase", None, None);
        let r = c.shutdown(Duration::from_millis(50)).await;
        assert!(!r.delivered_all);
        assert_eq!(r.dropped, 1);
        // Still answers afterwards.
        assert!(!c.variant(&Context::for_user("u1"), "fa", "d").is_default());
    }
}
