//! The records the pipeline stores: exposures and behavioural events, as
//! described in `docs/data-model.md` (the contract with strata-analysis).
//!
//! Timestamps are integer microseconds since the Unix epoch, UTC, so that a
//! record round-trips through the log and Parquet without loss.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which stream a record belongs to; also the top-level Parquet partition
/// (`kind=exposures`, `kind=events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A unit was shown a variant.
    Exposure,
    /// A unit did something.
    Event,
}

impl Kind {
    /// The partition directory value (`exposures` / `events`).
    pub fn dir_name(self) -> &'static str {
        match self {
            Kind::Exposure => "exposures",
            Kind::Event => "events",
        }
    }
}

/// A unit was exposed to a variant of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// The randomisation unit.
    pub unit_id: String,
    /// Experiment key.
    pub experiment: String,
    /// Variant served.
    pub variant: String,
    /// Variant originally assigned (intent-to-treat); equals `variant` unless
    /// the unit opted out or was overridden.
    pub assigned_variant: String,
    /// The unit opted out and was served the default.
    pub opted_out: bool,
    /// Exposure time (server clock), µs since the epoch.
    pub ts: i64,
    /// When the pipeline received it, µs since the epoch.
    pub received_at: i64,
    /// Segment attributes (`country`, `platform`, …).
    pub attributes: BTreeMap<String, String>,
}

/// A behavioural event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id chosen by the client; the deduplication key.
    pub event_id: String,
    /// The unit that did it.
    pub unit_id: String,
    /// Event type, matched by metric filters.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Client timestamp, µs since the epoch.
    pub ts: i64,
    /// When the pipeline received it, µs since the epoch.
    pub received_at: i64,
    /// Purchase amount, latency, …
    pub value: Option<f64>,
    /// Free-form properties; values are kept as strings (numbers and booleans
    /// in their JSON text) so the Parquet column is one `map<string, string>`.
    pub properties: BTreeMap<String, String>,
    /// Bot traffic (excluded by the analysis).
    pub is_bot: bool,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// An exposure.
    Exposure(Exposure),
    /// An event.
    Event(Event),
}

impl Record {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Record::Exposure(_) => Kind::Exposure,
            Record::Event(_) => Kind::Event,
        }
    }

    /// Its unit.
    pub fn unit_id(&self) -> &str {
        match self {
            Record::Exposure(e) => &e.unit_id,
            Record::Event(e) => &e.unit_id,
        }
    }

    /// Its timestamp, µs since the epoch (exposure: server clock; event:
    /// client clock). Dates partitions.
    pub fn ts(&self) -> i64 {
        match self {
            Record::Exposure(e) => e.ts,
            Record::Event(e) => e.ts,
        }
    }
}

/// Microseconds in a UTC day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The UTC day number (days since 1970-01-01) of a µs timestamp.
pub fn utc_day(ts_micros: i64) -> i64 {
    ts_micros.div_euclid(MICROS_PER_DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_day_floors_negative_timestamps() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(MICROS_PER_DAY - 1), 0);
        assert_eq!(utc_day(MICROS_PER_DAY), 1);
        assert_eq!(utc_day(-1), -1);
    }
}
