//! The bounded in-memory buffer of exposures and events awaiting shipment.
//!
//! Callers append under a short lock and never wait for anything else: when
//! the buffer is full the oldest record of the lowest priority is dropped
//! (low-priority events such as `page_view` first, then other events, then
//! exposures, which are the experiment's denominator) and counted. The
//! flusher takes batches from the front and drops records older than the
//! age bound.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::hooks::{Counters, DropReason, RecordKind};

/// One exposure.
#[derive(Clone, Debug)]
pub(crate) struct Exposure {
    pub unit_id: String,
    pub experiment: Arc<str>,
    pub variant: Arc<str>,
    pub assigned: Arc<str>,
    pub opted_out: bool,
    pub at: SystemTime,
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

#[derive(Default)]
struct Queues {
    exposures: VecDeque<Exposure>,
    events: VecDeque<Event>,
    low: VecDeque<Event>,
}

impl Queues {
    fn len(&self) -> usize {
        self.exposures.len() + self.events.len() + self.low.len()
    }

    /// Drops the oldest record of the lowest priority present.
    fn evict_one(&mut self, counters: &Counters) {
        let kind = if self.low.pop_front().is_some() || self.events.pop_front().is_some() {
            RecordKind::Event
        } else if self.exposures.pop_front().is_some() {
            RecordKind::Exposure
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

    /// Appends an exposure; returns the number of exposures now waiting.
    pub fn push_exposure(&self, e: Exposure, counters: &Counters) -> usize {
        let mut q = self.lock();
        if q.len() >= self.capacity {
            q.evict_one(counters);
        }
        q.exposures.push_back(e);
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
        *q = Queues::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure(unit: &str, at: SystemTime) -> Exposure {
        Exposure {
            unit_id: unit.to_owned(),
            experiment: Arc::from("e"),
            variant: Arc::from("a"),
            assigned: Arc::from("a"),
            opted_out: false,
            at,
        }
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
            .map(|e| e.unit_id)
            .collect();
        assert_eq!(units, ["x2", "x3", "x4", "x5"]);
        assert_eq!(b.len(), 0);
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
