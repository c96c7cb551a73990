//! The records the pipeline stores: exposures, behavioural events and
//! aliases (an anonymous id signing in as a user id), as described in
//! `docs/data-model.md` (the contract with strata-analysis).
//!
//! Timestamps are integer microseconds since the Unix epoch, UTC, so that a
//! record round-trips through the log and Parquet without loss.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which stream a record belongs to; also the top-level Parquet partition
/// (`kind=exposures`, `kind=events`, `kind=aliases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A unit was shown a variant.
    Exposure,
    /// A unit did something.
    Event,
    /// An anonymous id became a user id.
    Alias,
}

impl Kind {
    /// Every kind, in the order of their partition directories' listing.
    pub const ALL: [Kind; 3] = [Kind::Exposure, Kind::Event, Kind::Alias];

    /// The partition directory value (`exposures` / `events` / `aliases`).
    pub fn dir_name(self) -> &'static str {
        match self {
            Kind::Exposure => "exposures",
            Kind::Event => "events",
            Kind::Alias => "aliases",
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
    /// Bot traffic: the analysis leaves the exposure out, as it does a bot's
    /// events.
    #[serde(default)]
    pub is_bot: bool,
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
    /// The unit had opted out of experimentation: under per-protocol
    /// analysis the unit is dropped, as for an opted-out exposure.
    #[serde(default)]
    pub opted_out: bool,
}

/// An anonymous id (a device, a cookie) signed in as a user id: from then
/// on the analysis counts the records of both ids as one unit's
/// (`docs/data-model.md`, "Aliases"). Stored once per pair within the
/// deduplication window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    /// The id the unit had before (assigned and exposed under it).
    pub anonymous_id: String,
    /// The id it has now.
    pub user_id: String,
    /// When the identity changed (client clock), µs since the epoch.
    pub ts: i64,
    /// When the pipeline received it, µs since the epoch.
    pub received_at: i64,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// An exposure.
    Exposure(Exposure),
    /// An event.
    Event(Event),
    /// An alias.
    Alias(Alias),
}

impl Record {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        self.view().kind()
    }

    /// Its unit: an alias's anonymous id (which chooses its user partition).
    pub fn unit_id(&self) -> &str {
        match self {
            Record::Exposure(e) => &e.unit_id,
            Record::Event(e) => &e.unit_id,
            Record::Alias(a) => &a.anonymous_id,
        }
    }

    /// Its timestamp, µs since the epoch (exposure: server clock; event:
    /// client clock). Dates partitions.
    pub fn ts(&self) -> i64 {
        match self {
            Record::Exposure(e) => e.ts,
            Record::Event(e) => e.ts,
            Record::Alias(a) => a.ts,
        }
    }
}

/// A borrowed view of a [`Record`]: its strings point into a log frame (or
/// into an owned record), so compaction turns a segment into Arrow columns
/// without allocating a `String` or a map per record.
#[derive(Debug, Clone, Copy)]
pub enum RecordRef<'a> {
    /// An exposure.
    Exposure(ExposureRef<'a>),
    /// An event.
    Event(EventRef<'a>),
    /// An alias.
    Alias(AliasRef<'a>),
}

/// A borrowed [`Exposure`].
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)] // the fields of `Exposure`
pub struct ExposureRef<'a> {
    pub unit_id: &'a str,
    pub experiment: &'a str,
    pub variant: &'a str,
    pub assigned_variant: &'a str,
    pub opted_out: bool,
    pub ts: i64,
    pub received_at: i64,
    pub attributes: MapRef<'a>,
    pub is_bot: bool,
}

/// A borrowed [`Event`].
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)] // the fields of `Event`
pub struct EventRef<'a> {
    pub event_id: &'a str,
    pub unit_id: &'a str,
    pub event_type: &'a str,
    pub ts: i64,
    pub received_at: i64,
    pub value: Option<f64>,
    pub properties: MapRef<'a>,
    pub is_bot: bool,
    pub opted_out: bool,
}

/// A borrowed [`Alias`].
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)] // the fields of `Alias`
pub struct AliasRef<'a> {
    pub anonymous_id: &'a str,
    pub user_id: &'a str,
    pub ts: i64,
    pub received_at: i64,
}

/// A borrowed string map: the encoded entries of a log frame (checked by
/// [`crate::codec::decode_ref`], which alone makes this form), the sorted
/// entries of a record being parsed, or an owned map.
#[derive(Debug, Clone, Copy)]
pub struct MapRef<'a>(MapRepr<'a>);

#[derive(Debug, Clone, Copy)]
enum MapRepr<'a> {
    /// `n` encoded entries, keys strictly ascending, all UTF-8.
    Encoded {
        bytes: &'a [u8],
        n: usize,
    },
    /// Keys strictly ascending.
    Entries(&'a [(Cow<'a, str>, Cow<'a, str>)]),
    Owned(&'a BTreeMap<String, String>),
}

impl<'a> MapRef<'a> {
    /// The view of an owned map.
    pub fn owned(map: &'a BTreeMap<String, String>) -> Self {
        MapRef(MapRepr::Owned(map))
    }

    /// `n` entries as [`crate::codec`] encodes them, already checked.
    pub(crate) fn encoded(bytes: &'a [u8], n: usize) -> Self {
        MapRef(MapRepr::Encoded { bytes, n })
    }

    /// Entries whose keys are strictly ascending (the parser sorts them and
    /// keeps the last of repeated keys, as a map insert would).
    pub(crate) fn entries(entries: &'a [(Cow<'a, str>, Cow<'a, str>)]) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        MapRef(MapRepr::Entries(entries))
    }

    /// Number of entries.
    pub fn len(self) -> usize {
        match self.0 {
            MapRepr::Encoded { n, .. } => n,
            MapRepr::Entries(e) => e.len(),
            MapRepr::Owned(m) => m.len(),
        }
    }

    /// Whether the map has no entry.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The entries in ascending key order.
    pub fn iter(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        // Encoded entries were checked when decoded, and owned ones are
        // strings: the checks here never fail.
        self.iter_bytes()
            .map_while(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
    }

    /// The entries as bytes, without checking again that they are UTF-8
    /// (they were, when decoded): for writers that check a whole column at
    /// once.
    pub(crate) fn iter_bytes(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let (encoded, entries, owned) = match self.0 {
            MapRepr::Encoded { bytes, n } => {
                (Some(crate::codec::map_entries_raw(bytes, n)), None, None)
            }
            MapRepr::Entries(e) => (
                None,
                Some(e.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))),
                None,
            ),
            MapRepr::Owned(m) => (
                None,
                None,
                Some(m.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))),
            ),
        };
        encoded
            .into_iter()
            .flatten()
            .chain(entries.into_iter().flatten())
            .chain(owned.into_iter().flatten())
    }

    /// The owned map.
    pub fn to_map(self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl<'a> RecordRef<'a> {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            RecordRef::Exposure(_) => Kind::Exposure,
            RecordRef::Event(_) => Kind::Event,
            RecordRef::Alias(_) => Kind::Alias,
        }
    }

    /// Its unit, as [`Record::unit_id`].
    pub fn unit_id(&self) -> &'a str {
        match self {
            RecordRef::Exposure(e) => e.unit_id,
            RecordRef::Event(e) => e.unit_id,
            RecordRef::Alias(a) => a.anonymous_id,
        }
    }

    /// Its timestamp, as [`Record::ts`].
    pub fn ts(&self) -> i64 {
        match self {
            RecordRef::Exposure(e) => e.ts,
            RecordRef::Event(e) => e.ts,
            RecordRef::Alias(a) => a.ts,
        }
    }

    /// When the pipeline received it, µs since the epoch.
    pub fn received_at(&self) -> i64 {
        match self {
            RecordRef::Exposure(e) => e.received_at,
            RecordRef::Event(e) => e.received_at,
            RecordRef::Alias(a) => a.received_at,
        }
    }

    /// The owned record.
    pub fn to_record(&self) -> Record {
        match *self {
            RecordRef::Exposure(x) => Record::Exposure(Exposure {
                unit_id: x.unit_id.to_owned(),
                experiment: x.experiment.to_owned(),
                variant: x.variant.to_owned(),
                assigned_variant: x.assigned_variant.to_owned(),
                opted_out: x.opted_out,
                ts: x.ts,
                received_at: x.received_at,
                attributes: x.attributes.to_map(),
                is_bot: x.is_bot,
            }),
            RecordRef::Event(e) => Record::Event(Event {
                event_id: e.event_id.to_owned(),
                unit_id: e.unit_id.to_owned(),
                event_type: e.event_type.to_owned(),
                ts: e.ts,
                received_at: e.received_at,
                value: e.value,
                properties: e.properties.to_map(),
                is_bot: e.is_bot,
                opted_out: e.opted_out,
            }),
            RecordRef::Alias(a) => Record::Alias(Alias {
                anonymous_id: a.anonymous_id.to_owned(),
                user_id: a.user_id.to_owned(),
                ts: a.ts,
                received_at: a.received_at,
            }),
        }
    }
}

impl Record {
    /// The borrowed view.
    pub fn view(&self) -> RecordRef<'_> {
        match self {
            Record::Exposure(x) => RecordRef::Exposure(ExposureRef {
                unit_id: &x.unit_id,
                experiment: &x.experiment,
                variant: &x.variant,
                assigned_variant: &x.assigned_variant,
                opted_out: x.opted_out,
                ts: x.ts,
                received_at: x.received_at,
                attributes: MapRef::owned(&x.attributes),
                is_bot: x.is_bot,
            }),
            Record::Event(e) => RecordRef::Event(EventRef {
                event_id: &e.event_id,
                unit_id: &e.unit_id,
                event_type: &e.event_type,
                ts: e.ts,
                received_at: e.received_at,
                value: e.value,
                properties: MapRef::owned(&e.properties),
                is_bot: e.is_bot,
                opted_out: e.opted_out,
            }),
            Record::Alias(a) => RecordRef::Alias(AliasRef {
                anonymous_id: &a.anonymous_id,
                user_id: &a.user_id,
                ts: a.ts,
                received_at: a.received_at,
            }),
        }
    }
}

/// The present, µs since the epoch, on the process's calendar clock: the
/// `received_at` of what arrives now, and the day deduplication windows
/// expire on.
pub fn now_micros() -> i64 {
    strata_clock::now_micros()
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
