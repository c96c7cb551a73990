//! The bounded in-memory buffer of exposures, events and aliases awaiting
//! shipment, and the lock-free hand-off that feeds it exposures.
//!
//! `variant()` hands a new exposure over through a bounded lock-free queue
//! (one allocation and one atomic claim on the caller's thread); a
//! background task moves what arrived into the buffer every few
//! milliseconds. `track()` appends its event under a short lock. Neither
//! waits for anything else: when
//! the buffer is full the oldest record of the lowest priority is dropped
//! (low-priority events such as `page_view` first, then other events, then
//! exposures, which are the experiment's denominator, and aliases, which
//! join a person's records, last) and counted. The
//! flusher takes batches from the front and drops records older than the
//! age bound.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::dedup::Dedup;
use crate::hooks::{Counters, DropReason, RecordKind};

/// Days since the Unix epoch, UTC.
pub(crate) fn utc_day(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// Exposures handed over and not yet absorbed into the buffer, at most.
/// Absorbed every few milliseconds, the queue fills only when the process
/// logs millions of new exposures a second or the runtime is starved; then
/// the newest exposure is dropped and counted as [`DropReason::BufferFull`].
const INTAKE_BOUND: usize = 16_384;

/// One exposure. Its four strings share one allocation, so that logging it
/// costs the caller one allocation and touches no shared reference count.
#[derive(Clone, Debug)]
pub(crate) struct Exposure {
    text: Box<str>,
    /// Where the unit id, the experiment and the variant end in `text`.
    ends: [usize; 3],
    pub opted_out: bool,
    pub at: SystemTime,
    /// [`crate::dedup::pair_hash`] of the unit and the experiment.
    pub pair: u64,
    /// Segment attributes (name, value), when the client copies any.
    pub attributes: Option<Box<[(String, String)]>>,
}

impl Exposure {
    /// An exposure of `unit` to `experiment`, served `variant` and
    /// assigned `assigned`.
    #[cfg(test)]
    pub fn new(
        unit: &str,
        experiment: &str,
        variant: &str,
        assigned: &str,
        opted_out: bool,
        at: SystemTime,
    ) -> Self {
        Self::with_pair(
            unit,
            experiment,
            variant,
            assigned,
            opted_out,
            at,
            crate::dedup::pair_hash(unit, experiment),
        )
    }

    /// [`Exposure::new`] with the pair's hash already computed.
    pub fn with_pair(
        unit: &str,
        experiment: &str,
        variant: &str,
        assigned: &str,
        opted_out: bool,
        at: SystemTime,
        pair: u64,
    ) -> Self {
        let mut text =
            String::with_capacity(unit.len() + experiment.len() + variant.len() + assigned.len());
        let mut ends = [0; 3];
        for (end, part) in ends.iter_mut().zip([unit, experiment, variant]) {
            text.push_str(part);
            *end = text.len();
        }
        text.push_str(assigned);
        Self {
            text: text.into_boxed_str(),
            ends,
            opted_out,
            at,
            pair,
            attributes: None,
        }
    }

    fn part(&self, from: usize, to: usize) -> &str {
        self.text.get(from..to).unwrap_or_default()
    }

    /// The unit id.
    pub fn unit_id(&self) -> &str {
        self.part(0, self.ends[0])
    }

    /// The experiment key.
    pub fn experiment(&self) -> &str {
        self.part(self.ends[0], self.ends[1])
    }

    /// The variant served.
    pub fn variant(&self) -> &str {
        self.part(self.ends[1], self.ends[2])
    }

    /// The variant assigned (differs from the served one when opted out).
    pub fn assigned(&self) -> &str {
        self.part(self.ends[2], self.text.len())
    }
}

/// The hand-off of exposures from callers to the background: a bounded
/// queue (std's lock-free array channel) that callers only ever `try_send`
/// to, drained into the [`Buffer`] by whoever holds the receiver's lock.
pub(crate) struct Intake {
    tx: SyncSender<Exposure>,
    rx: Mutex<Receiver<Exposure>>,
}

impl Intake {
    pub fn new() -> Self {
        let (tx, rx) = sync_channel(INTAKE_BOUND);
        Self {
            tx,
            rx: Mutex::new(rx),
        }
    }

    /// Hands an exposure over without blocking; false when the queue is full.
    #[inline]
    pub fn offer(&self, e: Exposure) -> bool {
        self.tx.try_send(e).is_ok()
    }

    /// Moves every exposure handed over into `buffer`, except those `seen`
    /// already has for their day; returns the number of exposures now
    /// waiting there.
    pub fn absorb(&self, buffer: &Buffer, seen: &Dedup, counters: &Counters) -> usize {
        let arrived: Vec<Exposure> = {
            let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.try_iter().collect()
        };
        let fresh: Vec<Exposure> = arrived
            .into_iter()
            .filter(|e| {
                let first = seen.first_today(e.pair, utc_day(e.at));
                if first {
                    counters.exposures_logged.add(1);
                } else {
                    counters.exposures_deduplicated.add(1);
                }
                first
            })
            .collect();
        buffer.push_exposures(fresh, counters)
    }
}

/// One behavioural event.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub event_id: Uuid,
    pub unit_id: String,
    pub kind: String,
    pub value: Option<f64>,
    pub properties: Option<Map<String, Value>>,
    pub at: SystemTime,
}

/// An anonymous id that signed in as a user id.
#[derive(Clone, Debug)]
pub(crate) struct Alias {
    pub anonymous_id: String,
    pub user_id: String,
    pub at: SystemTime,
}

#[derive(Default)]
struct Queues {
    exposures: VecDeque<Exposure>,
    events: VecDeque<Event>,
    low: VecDeque<Event>,
    aliases: VecDeque<Alias>,
}

impl Queues {
    fn len(&self) -> usize {
        self.exposures.len() + self.events.len() + self.low.len() + self.aliases.len()
    }

    /// Drops the oldest record of the lowest priority present.
    fn evict_one(&mut self, counters: &Counters) {
        let kind = if self.low.pop_front().is_some() || self.events.pop_front().is_some() {
            RecordKind::Event
        } else if self.exposures.pop_front().is_some() {
            RecordKind::Exposure
        } else if self.aliases.pop_front().is_some() {
            RecordKind::Alias
        } else {
            return;
        };
        counters.drop_records(kind, DropReason::BufferFull, 1);
    }
}

/// The buffer shared by callers and the flusher.
pub(crate) struct Buffer {
    queues: Mutex<Queues>,
    capacity: usize,
}

impl Buffer {
    /// A buffer of at most `capacity` records (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            queues: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends exposures; returns the number of exposures now waiting.
    pub fn push_exposures(&self, es: Vec<Exposure>, counters: &Counters) -> usize {
        let mut q = self.lock();
        for e in es {
            if q.len() >= self.capacity {
                q.evict_one(counters);
            }
            q.exposures.push_back(e);
        }
        q.exposures.len()
    }

    /// Appends an event; returns the number of events now waiting.
    pub fn push_event(&self, e: Event, low_priority: bool, counters: &Counters) -> usize {
        let mut q = self.lock();
        if q.len() >= self.capacity {
            q.evict_one(counters);
        }
        if low_priority {
            q.low.push_back(e);
        } else {
            q.events.push_back(e);
        }
        q.events.len() + q.low.len()
    }

    /// Appends an alias; returns the number of aliases now waiting.
    pub fn push_alias(&self, a: Alias, counters: &Counters) -> usize {
        let mut q = self.lock();
        if q.len() >= self.capacity {
            q.evict_one(counters);
        }
        q.aliases.push_back(a);
        q.aliases.len()
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Takes up to `n` exposures from the front.
    pub fn take_exposures(&self, n: usize) -> Vec<Exposure> {
        let mut q = self.lock();
        let n = n.min(q.exposures.len());
        q.exposures.drain(..n).collect()
    }

    /// Takes up to `n` aliases from the front.
    pub fn take_aliases(&self, n: usize) -> Vec<Alias> {
        let mut q = self.lock();
        let n = n.min(q.aliases.len());
        q.aliases.drain(..n).collect()
    }

    /// Takes up to `n` events from the front, normal priority first.
    pub fn take_events(&self, n: usize) -> Vec<Event> {
        let mut q = self.lock();
        let from_normal = n.min(q.events.len());
        let mut out: Vec<Event> = q.events.drain(..from_normal).collect();
        let from_low = (n - from_normal).min(q.low.len());
        out.extend(q.low.drain(..from_low));
        out
    }

    /// Drops records recorded before `now - max_age`, counting them.
    pub fn expire(&self, now: SystemTime, max_age: Duration, counters: &Counters) {
        let Some(cutoff) = now.checked_sub(max_age) else {
            return;
        };
        let mut q = self.lock();
        let mut n = 0;
        while q.exposures.front().is_some_and(|e| e.at < cutoff) {
            q.exposures.pop_front();
            n += 1;
        }
        counters.drop_records(RecordKind::Exposure, DropReason::Expired, n);
        let mut n = 0;
        while q.events.front().is_some_and(|e| e.at < cutoff) {
            q.events.pop_front();
            n += 1;
        }
        while q.low.front().is_some_and(|e| e.at < cutoff) {
            q.low.pop_front();
            n += 1;
        }
        counters.drop_records(RecordKind::Event, DropReason::Expired, n);
        let mut n = 0;
        while q.aliases.front().is_some_and(|a| a.at < cutoff) {
            q.aliases.pop_front();
            n += 1;
        }
        counters.drop_records(RecordKind::Alias, DropReason::Expired, n);
    }

    /// Drops everything, counting it under `reason`.
    pub fn clear(&self, reason: DropReason, counters: &Counters) {
        let mut q = self.lock();
        counters.drop_records(RecordKind::Exposure, reason, q.exposures.len() as u64);
        counters.drop_records(
            RecordKind::Event,
            reason,
            (q.events.len() + q.low.len()) as u64,
        );
        counters.drop_records(RecordKind::Alias, reason, q.aliases.len() as u64);
        *q = Queues::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure(unit: &str, at: SystemTime) -> Exposure {
        Exposure::new(unit, "e", "a", "a", false, at)
    }

    impl Buffer {
        fn push_exposure(&self, e: Exposure, c: &Counters) -> usize {
            self.push_exposures(vec![e], c)
        }
    }

    #[test]
    fn an_exposure_keeps_its_four_strings_apart() {
        let e = Exposure::new("ü1", "exp", "", "treatment", true, SystemTime::UNIX_EPOCH);
        assert_eq!(
            (e.unit_id(), e.experiment(), e.variant(), e.assigned()),
            ("ü1", "exp", "", "treatment")
        );
    }

    #[test]
    fn the_intake_hands_exposures_to_the_buffer_in_order() {
        let c = Counters::default();
        let b = Buffer::new(3);
        let i = Intake::new();
        let seen = Dedup::new(100);
        let now = SystemTime::now();
        for u in ["a", "b", "a", "c", "d"] {
            assert!(i.offer(exposure(u, now)));
        }
        // The repeated "a" was known to the day's table and stays out.
        assert_eq!(i.absorb(&b, &seen, &c), 3);
        assert_eq!(c.dropped_total(RecordKind::Exposure), 1);
        assert_eq!(
            (c.exposures_logged.get(), c.exposures_deduplicated.get()),
            (4, 1)
        );
        let units: Vec<String> = b
            .take_exposures(10)
            .iter()
            .map(|e| e.unit_id().to_owned())
            .collect();
        assert_eq!(units, ["b", "c", "d"]);
        // A full queue refuses rather than blocks.
        for n in 0..INTAKE_BOUND {
            assert!(i.offer(exposure(&format!("x{n}"), now)));
        }
        assert!(!i.offer(exposure("y", now)));
        let big = Dedup::new(2 * INTAKE_BOUND);
        assert_eq!(i.absorb(&Buffer::new(INTAKE_BOUND), &big, &c), INTAKE_BOUND);
    }

    fn event(kind: &str, at: SystemTime) -> Event {
        Event {
            event_id: Uuid::now_v7(),
            unit_id: "u".to_owned(),
            kind: kind.to_owned(),
            value: None,
            properties: None,
            at,
        }
    }

    #[test]
    fn a_full_buffer_drops_low_priority_events_then_events_then_exposures() {
        let c = Counters::default();
        let b = Buffer::new(4);
        let now = SystemTime::now();
        b.push_exposure(exposure("x1", now), &c);
        b.push_event(event("purchase", now), false, &c);
        b.push_event(event("page_view", now), true, &c);
        b.push_event(event("page_view", now), true, &c);
        assert_eq!(b.len(), 4);
        b.push_exposure(exposure("x2", now), &c);
        b.push_exposure(exposure("x3", now), &c);
        // Both page views went first.
        assert_eq!(c.dropped_total(RecordKind::Event), 2);
        b.push_exposure(exposure("x4", now), &c);
        // Then the purchase.
        assert_eq!(c.dropped_total(RecordKind::Event), 3);
        assert_eq!(c.dropped_total(RecordKind::Exposure), 0);
        b.push_exposure(exposure("x5", now), &c);
        // Then the oldest exposure.
        assert_eq!(c.dropped_total(RecordKind::Exposure), 1);
        let units: Vec<String> = b
            .take_exposures(10)
            .into_iter()
            .map(|e| e.unit_id().to_owned())
            .collect();
        assert_eq!(units, ["x2", "x3", "x4", "x5"]);
        assert_eq!(b.len(), 0);
    }

    fn alias(anonymous_id: &str, at: SystemTime) -> Alias {
        Alias {
            anonymous_id: anonymous_id.to_owned(),
            user_id: "u".to_owned(),
            at,
        }
    }

    #[test]
    fn aliases_are_dropped_last_and_expire_like_the_rest() {
        let c = Counters::default();
        let b = Buffer::new(2);
        let now = SystemTime::now();
        b.push_alias(alias("d1", now), &c);
        b.push_exposure(exposure("x1", now), &c);
        // Full: the exposure goes before the alias.
        b.push_alias(alias("d2", now), &c);
        assert_eq!(c.dropped_total(RecordKind::Exposure), 1);
        // Only aliases left: the oldest goes.
        b.push_alias(alias("d3", now), &c);
        assert_eq!(c.dropped_total(RecordKind::Alias), 1);
        let ids: Vec<String> = b
            .take_aliases(10)
            .into_iter()
            .map(|a| a.anonymous_id)
            .collect();
        assert_eq!(ids, ["d2", "d3"]);
        b.push_alias(alias("old", now - Duration::from_secs(700)), &c);
        b.push_alias(alias("new", now), &c);
        b.expire(now, Duration::from_secs(600), &c);
        assert_eq!(c.dropped_total(RecordKind::Alias), 2);
        b.clear(DropReason::Shutdown, &c);
        assert_eq!(c.dropped_all(), 4);
    }

    #[test]
    fn old_records_expire() {
        let c = Counters::default();
        let b = Buffer::new(100);
        let now = SystemTime::now();
        let old = now - Duration::from_secs(700);
        b.push_exposure(exposure("old", old), &c);
        b.push_exposure(exposure("new", now), &c);
        b.push_event(event("page_view", old), true, &c);
        b.push_event(event("purchase", now), false, &c);
        b.expire(now, Duration::from_secs(600), &c);
        assert_eq!(c.dropped_total(RecordKind::Exposure), 1);
        assert_eq!(c.dropped_total(RecordKind::Event), 1);
        assert_eq!(b.len(), 2);
        assert_eq!(b.take_events(10)[0].kind, "purchase");
    }

    #[test]
    fn batches_come_from_the_front_normal_events_first() {
        let c = Counters::default();
        let b = Buffer::new(100);
        let now = SystemTime::now();
        b.push_event(event("page_view", now), true, &c);
        b.push_event(event("purchase", now), false, &c);
        b.push_event(event("signup", now), false, &c);
        let first: Vec<String> = b.take_events(2).into_iter().map(|e| e.kind).collect();
        assert_eq!(first, ["purchase", "signup"]);
        assert_eq!(b.take_events(2)[0].kind, "page_view");
        b.push_exposure(exposure("a", now), &c);
        b.clear(DropReason::Shutdown, &c);
        assert_eq!(c.dropped_total(RecordKind::Exposure), 1);
    }
}
