//! Parsing and validation of ingestion batches.
//!
//! A batch is a JSON array or NDJSON (one object per line), optionally gzip
//! compressed. Whole-batch problems (too large, too many records, malformed
//! JSON array, bad gzip) are [`BatchError`]s and reject the request with a
//! 4xx; problems of one record are [`Rejection`]s and reject only that record,
//! so a batch with a few bad records still stores the good ones.
//!
//! Records are deserialized straight into typed fields through a lenient
//! visitor: a field of the wrong JSON type becomes a per-record rejection
//! instead of aborting the whole array, and no intermediate
//! `serde_json::Value` tree is built (the ingestion hot path parses hundreds
//! of megabytes per second). Strings are borrowed from the body (unless they
//! hold escapes) and each valid record is encoded at once into the
//! [`Batch`] of log frames the sink stores, so no owned record is built.
//!
//! `ts` is an RFC 3339 string with an offset (`2026-11-24T10:00:00.123Z`) or
//! an integer number of milliseconds since the Unix epoch (what JavaScript's
//! `Date.now()` gives); it is stored in microseconds.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::batch::Batch;
use crate::catalog::Experiments;
use crate::record::{AliasRef, EventRef, ExposureRef, Kind, MapRef, RecordRef};

/// Limits applied to one batch and its records.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseLimits {
    /// Largest body, in bytes, both as sent and after gzip decompression
    /// (default 5 MiB). Above: 413.
    pub max_body_bytes: usize,
    /// Most records in one batch (default 10,000). Above: 413.
    pub max_records: usize,
    /// Longest identifier (`unit_id`, `event_id`, `experiment`, `variant`,
    /// `assigned_variant`, `type`), in bytes (default 256).
    pub max_id_bytes: usize,
    /// Most entries in `properties` / `attributes` (default 64).
    pub max_map_entries: usize,
    /// Longest key of `properties` / `attributes`, in bytes (default 128).
    pub max_map_key_bytes: usize,
    /// Longest value of `properties` / `attributes`, in bytes (default 1,024).
    pub max_map_value_bytes: usize,
    /// How far `ts` may lie ahead of the server clock (default 7 days).
    pub max_future: Duration,
    /// How far `ts` may lie behind the server clock; older records would be
    /// dropped by retention anyway (default 90 days, the events retention).
    pub max_age: Duration,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 5 * 1024 * 1024,
            max_records: 10_000,
            max_id_bytes: 256,
            max_map_entries: 64,
            max_map_key_bytes: 128,
            max_map_value_bytes: 1024,
            max_future: Duration::from_secs(7 * 86_400),
            max_age: Duration::from_secs(90 * 86_400),
        }
    }
}

/// The framing of a batch body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON array of objects (`application/json`, the default).
    JsonArray,
    /// One JSON object per line (`application/x-ndjson`).
    Ndjson,
}

impl BodyFormat {
    /// The format named by a `Content-Type` header value (parameters such as
    /// `charset` are ignored); anything but NDJSON is read as a JSON array.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        let essence = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|s| s.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
                Self::Ndjson
            }
            _ => Self::JsonArray,
        }
    }
}

/// Why a whole batch was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The body (as sent or decompressed) exceeds `max_body_bytes`: 413.
    #[error("request body exceeds {limit} bytes{}", if *.decompressed { " after decompression" } else { "" })]
    BodyTooLarge {
        /// The limit.
        limit: usize,
        /// Whether the limit was hit while decompressing.
        decompressed: bool,
    },
    /// More than `max_records` records: 413.
    #[error("batch holds more than {limit} records")]
    TooManyRecords {
        /// The limit.
        limit: usize,
    },
    /// The gzip stream is corrupt: 400.
    #[error("gzip body: {0}")]
    Gzip(String),
    /// Unsupported `Content-Encoding`: 415.
    #[error("unsupported content encoding {0:?}, only gzip and identity are accepted")]
    UnsupportedEncoding(String),
    /// The body is not a JSON array of records: 400.
    #[error("body is not a json array of records: {0}")]
    Json(String),
    /// The body holds no record at all: 400.
    #[error("batch is empty")]
    Empty,
}

/// One rejected record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// Position of the record in the batch, from 0 (for NDJSON: the
    /// position among non-blank lines).
    pub index: usize,
    /// Why, lowercase.
    pub reason: String,
    /// The offending field (`ts`, `properties.plan`), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Set when the record was refused only for now (shed under load):
    /// sending it again later may succeed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
}

impl Rejection {
    /// A permanent rejection of record `index`.
    pub fn new(index: usize, reason: impl Into<String>, field: Option<&str>) -> Self {
        Self {
            index,
            reason: reason.into(),
            field: field.map(str::to_owned),
            retryable: false,
        }
    }
}

/// The outcome of parsing a batch: valid records with their batch index,
/// and rejections, both in batch order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParsedBatch {
    /// Valid records, encoded as log frames.
    pub records: Batch,
    /// The index in the batch of each of `records`.
    pub indices: Vec<usize>,
    /// Rejected records.
    pub rejected: Vec<Rejection>,
}

impl ParsedBatch {
    /// Records in the batch, valid or not.
    pub fn len(&self) -> usize {
        self.records.len() + self.rejected.len()
    }

    /// Whether the batch held no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decompresses `body` if `content_encoding` says gzip, never producing more
/// than `limit` bytes (a gzip bomb fails with [`BatchError::BodyTooLarge`]
/// after reading at most `limit + 1` bytes of output).
pub fn decode_body<'a>(
    body: &'a [u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Cow<'a, [u8]>, BatchError> {
    if body.len() > limit {
        return Err(BatchError::BodyTooLarge {
            limit,
            decompressed: false,
        });
    }
    let encoding = content_encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(Cow::Borrowed(body)),
        Some("gzip" | "x-gzip") => {
            let decoder = flate2::read::MultiGzDecoder::new(body);
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| BatchError::Gzip(e.to_string().to_lowercase()))?;
            if out.len() > limit {
                return Err(BatchError::BodyTooLarge {
                    limit,
                    decompressed: true,
                });
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => Err(BatchError::UnsupportedEncoding(other.to_owned())),
    }
}

/// Parses and validates a decoded batch of `kind` records, received at
/// `now_micros` (server clock, µs since the epoch).
pub fn parse_batch(
    body: &[u8],
    format: BodyFormat,
    kind: Kind,
    now_micros: i64,
    limits: &ParseLimits,
) -> Result<ParsedBatch, BatchError> {
    parse_batch_in(body, format, kind, now_micros, limits, None)
}

/// [`parse_batch`], with exposures checked against `catalog` when given:
/// an exposure naming an unknown experiment or variant is rejected, and one
/// naming an experiment by its flag is stored under the experiment's key.
pub fn parse_batch_in(
    body: &[u8],
    format: BodyFormat,
    kind: Kind,
    now_micros: i64,
    limits: &ParseLimits,
    catalog: Option<&Experiments>,
) -> Result<ParsedBatch, BatchError> {
    let ctx = Ctx {
        kind,
        now: now_micros,
        limits,
        catalog,
    };
    let mut batch = ParsedBatch {
        // The encoding is smaller than the JSON it came from.
        records: Batch::with_capacity(0, body.len()),
        ..ParsedBatch::default()
    };
    match format {
        BodyFormat::JsonArray => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let mut too_many = false;
            let seed = BatchSeed {
                ctx: &ctx,
                out: &mut batch,
                too_many: &mut too_many,
            };
            let res = seed.deserialize(&mut de).and_then(|()| de.end());
            if too_many {
                return Err(BatchError::TooManyRecords {
                    limit: limits.max_records,
                });
            }
            res.map_err(|e| BatchError::Json(e.to_string()))?;
        }
        BodyFormat::Ndjson => {
            let mut index = 0;
            for line in body.split(|&b| b == b'\n') {
                let line = trim_ascii(line);
                if line.is_empty() {
                    continue;
                }
                if index >= limits.max_records {
                    return Err(BatchError::TooManyRecords {
                        limit: limits.max_records,
                    });
                }
                let mut de = serde_json::Deserializer::from_slice(line);
                let parsed = RawRecord::deserialize(&mut de).and_then(|raw| {
                    de.end()?;
                    Ok(raw)
                });
                match parsed {
                    Ok(raw) => ctx.push(index, raw, &mut batch),
                    Err(e) => batch.rejected.push(Rejection::new(
                        index,
                        format!("line is not a json object: {e}"),
                        None,
                    )),
                }
                index += 1;
            }
        }
    }
    if batch.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(batch)
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

struct Ctx<'a> {
    kind: Kind,
    now: i64,
    limits: &'a ParseLimits,
    catalog: Option<&'a Experiments>,
}

impl Ctx<'_> {
    fn push<'de>(&self, index: usize, raw: RawRecord<'de>, out: &mut ParsedBatch) {
        match self.validate(raw, &mut out.records) {
            Ok(()) => out.indices.push(index),
            Err((reason, field)) => out.rejected.push(Rejection {
                index,
                reason,
                field: (!field.is_empty()).then_some(field),
                retryable: false,
            }),
        }
    }

    /// Checks one record and, if it is valid, encodes it into `out`; its
    /// strings are borrowed from the body unless they held escapes.
    fn validate<'de>(&self, raw: RawRecord<'de>, out: &mut Batch) -> Result<(), (String, String)> {
        if let Some((field, reason)) = raw.problem {
            return Err((reason, field));
        }
        match self.kind {
            Kind::Event => {
                let event_id = self.id("event_id", raw.event_id)?;
                let unit_id = self.id("unit_id", raw.unit_id)?;
                let event_type = self.id("type", raw.event_type)?;
                let ts = self.timestamp(raw.ts)?;
                let value = match raw.value {
                    None | Some(Loose::Null) => None,
                    Some(Loose::Num(v)) => Some(v),
                    // A JSON integer is a number too (`"value": 12`).
                    Some(Loose::Int(v)) => Some(v as f64),
                    Some(other) => return Err(wrong_type("value", "a number", &other)),
                };
                let is_bot = self.flag("is_bot", raw.is_bot)?;
                let opted_out = self.flag("opted_out", raw.opted_out)?;
                let properties = self.map("properties", raw.map_props)?;
                out.push(&RecordRef::Event(EventRef {
                    event_id: &event_id,
                    unit_id: &unit_id,
                    event_type: &event_type,
                    ts,
                    received_at: self.now,
                    value,
                    properties: MapRef::entries(&properties),
                    is_bot,
                    opted_out,
                }));
            }
            Kind::Exposure => {
                let unit_id = self.id("unit_id", raw.unit_id)?;
                let experiment = self.id("experiment", raw.experiment)?;
                let variant = self.id("variant", raw.variant)?;
                let ts = self.timestamp(raw.ts)?;
                let assigned_variant = match raw.assigned_variant {
                    None | Some(Loose::Null) => None,
                    some => Some(self.id("assigned_variant", some)?),
                };
                let opted_out = self.flag("opted_out", raw.opted_out)?;
                let is_bot = self.flag("is_bot", raw.is_bot)?;
                let attributes = self.map("attributes", raw.map_attrs)?;
                let experiment = match self.catalog {
                    None => experiment,
                    Some(c) => {
                        match c.resolve(&experiment, &variant, assigned_variant.as_deref()) {
                            // Named by its key: the body's string is stored as is.
                            Ok(e) if e.key == *experiment => experiment,
                            // Named by its flag: the key is stored.
                            Ok(e) => Cow::Owned(e.key.clone()),
                            Err(unknown) => return Err((unknown.reason, unknown.field.into())),
                        }
                    }
                };
                out.push(&RecordRef::Exposure(ExposureRef {
                    unit_id: &unit_id,
                    experiment: &experiment,
                    variant: &variant,
                    assigned_variant: assigned_variant.as_deref().unwrap_or(&variant),
                    opted_out,
                    ts,
                    received_at: self.now,
                    attributes: MapRef::entries(&attributes),
                    is_bot,
                }));
            }
            Kind::Alias => {
                let anonymous_id = self.id("anonymous_id", raw.anonymous_id)?;
                let user_id = self.id("user_id", raw.user_id)?;
                if anonymous_id == user_id {
                    return Err((
                        "user_id equals anonymous_id: an alias joins two different ids".into(),
                        "user_id".into(),
                    ));
                }
                let ts = self.timestamp(raw.ts)?;
                out.push(&RecordRef::Alias(AliasRef {
                    anonymous_id: &anonymous_id,
                    user_id: &user_id,
                    ts,
                    received_at: self.now,
                }));
            }
        }
        Ok(())
    }

    fn id<'de>(
        &self,
        field: &str,
        v: Option<Loose<'de>>,
    ) -> Result<Cow<'de, str>, (String, String)> {
        let s = match v {
            None | Some(Loose::Null) => return Err((format!("{field} is required"), field.into())),
            Some(Loose::Str(s)) => s,
            // The data model accepts integer unit ids, whichever field
            // names one.
            Some(Loose::Int(i)) if matches!(field, "unit_id" | "anonymous_id" | "user_id") => {
                Cow::Owned(i.to_string())
            }
            Some(other) => return Err(wrong_type(field, "a string", &other)),
        };
        if s.is_empty() {
            return Err((format!("{field} is empty"), field.into()));
        }
        if s.len() > self.limits.max_id_bytes {
            return Err((
                format!(
                    "{field} is {} bytes long, the limit is {}",
                    s.len(),
                    self.limits.max_id_bytes
                ),
                field.into(),
            ));
        }
        // Identifiers end up in file names of nothing, but in NATS headers
        // (`Nats-Msg-Id`) and log lines: control characters are refused.
        if s.chars().any(char::is_control) {
            return Err((
                format!("{field} contains a control character"),
                field.into(),
            ));
        }
        Ok(s)
    }

    fn flag(&self, field: &str, v: Option<Loose<'_>>) -> Result<bool, (String, String)> {
        match v {
            None | Some(Loose::Null) => Ok(false),
            Some(Loose::Bool(b)) => Ok(b),
            Some(other) => Err(wrong_type(field, "a boolean", &other)),
        }
    }

    /// The entries of a property or attribute map, keys strictly ascending;
    /// of a repeated key the last value counts, as in a map insert.
    fn map<'de>(
        &self,
        field: &str,
        v: Option<LooseEntries<'de>>,
    ) -> Result<Vec<Entry<'de>>, (String, String)> {
        let entries = match v {
            None => return Ok(Vec::new()),
            Some(Err(found)) => {
                return Err((
                    format!("{field} must be an object, found {found}"),
                    field.into(),
                ))
            }
            Some(Ok(entries)) => entries,
        };
        if entries.len() > self.limits.max_map_entries {
            return Err((
                format!(
                    "{field} has {} entries, the limit is {}",
                    entries.len(),
                    self.limits.max_map_entries
                ),
                field.into(),
            ));
        }
        let mut map = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let name = || format!("{field}.{key}");
            if key.len() > self.limits.max_map_key_bytes {
                return Err((
                    format!(
                        "{field} key is {} bytes long, the limit is {}",
                        key.len(),
                        self.limits.max_map_key_bytes
                    ),
                    name(),
                ));
            }
            let text = match value {
                // A null property is the same as an absent one.
                Loose::Null => continue,
                Loose::Str(s) => s,
                Loose::Bool(b) => Cow::Owned(b.to_string()),
                Loose::Int(i) => Cow::Owned(i.to_string()),
                Loose::Num(n) => Cow::Owned(n.to_string()),
                Loose::Other(found) => {
                    return Err((
                        format!(
                            "{field} values must be strings, numbers or booleans, found {found}"
                        ),
                        name(),
                    ))
                }
            };
            if text.len() > self.limits.max_map_value_bytes {
                return Err((
                    format!(
                        "{field} value is {} bytes long, the limit is {}",
                        text.len(),
                        self.limits.max_map_value_bytes
                    ),
                    name(),
                ));
            }
            map.push((key, text));
        }
        // Stable, so repeated keys stay in the order sent; `dedup_by` then
        // moves the later value into the entry it keeps.
        map.sort_by(|a, b| a.0.cmp(&b.0));
        map.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        Ok(map)
    }

    fn timestamp(&self, v: Option<Loose<'_>>) -> Result<i64, (String, String)> {
        let micros = match v {
            None | Some(Loose::Null) => return Err(("ts is required".into(), "ts".into())),
            Some(Loose::Str(s)) => parse_rfc3339_micros(&s).ok_or_else(|| {
                (
                    format!("ts {s:?} is not an rfc 3339 timestamp with an offset"),
                    "ts".to_owned(),
                )
            })?,
            Some(Loose::Int(ms)) => ms
                .checked_mul(1000)
                .ok_or_else(|| ("ts is out of range".to_owned(), "ts".to_owned()))?,
            Some(other) => {
                return Err(wrong_type(
                    "ts",
                    "an rfc 3339 string or integer epoch milliseconds",
                    &other,
                ))
            }
        };
        let future = duration_micros(self.limits.max_future);
        let age = duration_micros(self.limits.max_age);
        if micros > self.now.saturating_add(future) {
            return Err((
                format!(
                    "ts lies more than {} s in the future",
                    self.limits.max_future.as_secs()
                ),
                "ts".into(),
            ));
        }
        if micros < self.now.saturating_sub(age) {
            return Err((
                format!(
                    "ts is older than the retention of {} s",
                    self.limits.max_age.as_secs()
                ),
                "ts".into(),
            ));
        }
        Ok(micros)
    }
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn wrong_type(field: &str, expected: &str, found: &Loose<'_>) -> (String, String) {
    (
        format!("{field} must be {expected}, found {}", found.describe()),
        field.to_owned(),
    )
}

/// Parses an RFC 3339 timestamp with an offset into µs since the epoch.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    Some(
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()?
            .timestamp_micros(),
    )
}

/// A JSON value read leniently: scalars are kept, arrays and objects are
/// skipped and remembered only as "wrong type". Strings are borrowed from
/// the body unless they hold escapes.
#[derive(Debug, Clone, PartialEq)]
enum Loose<'de> {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(Cow<'de, str>),
    Other(&'static str),
}

impl Loose<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Loose::Null => "null",
            Loose::Bool(_) => "a boolean",
            Loose::Int(_) | Loose::Num(_) => "a number",
            Loose::Str(_) => "a string",
            Loose::Other(what) => what,
        }
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any json value")
            }
            fn visit_unit<E>(self) -> Result<Loose<'de>, E> {
                Ok(Loose::Null)
            }
            fn visit_none<E>(self) -> Result<Loose<'de>, E> {
                Ok(Loose::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Loose<'de>, E> {
                Ok(Loose::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Loose<'de>, E> {
                Ok(Loose::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Loose<'de>, E> {
                Ok(i64::try_from(v).map_or(Loose::Num(v as f64), Loose::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Loose<'de>, E> {
                Ok(Loose::Num(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Loose<'de>, E> {
                Ok(Loose::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Loose<'de>, E> {
                Ok(Loose::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Loose<'de>, E> {
                Ok(Loose::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A validated map entry, its value as text.
type Entry<'de> = (Cow<'de, str>, Cow<'de, str>);

/// The entries of an object of scalars, or what was found instead.
type LooseEntries<'de> = Result<Vec<(Cow<'de, str>, Loose<'de>)>, &'static str>;

/// An object of scalars, or what was found instead.
struct LooseMap<'de>(LooseEntries<'de>);

impl<'de> Deserialize<'de> for LooseMap<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LooseMap<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LooseMap<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some((k, v)) = map.next_entry::<Text<'de>, Loose<'de>>()? {
                    out.push((k.0, v));
                }
                Ok(LooseMap(Ok(out)))
            }
            fn visit_unit<E>(self) -> Result<LooseMap<'de>, E> {
                Ok(LooseMap(Ok(Vec::new())))
            }
            fn visit_none<E>(self) -> Result<LooseMap<'de>, E> {
                Ok(LooseMap(Ok(Vec::new())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<LooseMap<'de>, E> {
                Ok(LooseMap(Err("a boolean")))
            }
            fn visit_i64<E>(self, _: i64) -> Result<LooseMap<'de>, E> {
                Ok(LooseMap(Err("a number")))
            }
            fn visit_u64<E>(self, _: u64) -> Result<LooseMap<'de>, E> {
                Ok(LooseMap(Err("a number")))
            }
            fn visit_f64<E>(self, _: f64) -> Result<LooseMap<'de>, E> {
                Ok(LooseMap(Err("a number")))
            }
            fn visit_str<E>(self, _: &str) -> Result<LooseMap<'de>, E> {
                Ok(LooseMap(Err("a string")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LooseMap<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LooseMap(Err("an array")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string borrowed from the body unless it holds escapes: keys of
/// records and of property maps, without an allocation each.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The fields of one record as sent, before validation. Unknown fields are
/// ignored (clients may send more than this version reads); `received_at`
/// is always set by the server.
#[derive(Default)]
struct RawRecord<'de> {
    unit_id: Option<Loose<'de>>,
    ts: Option<Loose<'de>>,
    event_id: Option<Loose<'de>>,
    event_type: Option<Loose<'de>>,
    value: Option<Loose<'de>>,
    is_bot: Option<Loose<'de>>,
    map_props: Option<LooseEntries<'de>>,
    experiment: Option<Loose<'de>>,
    variant: Option<Loose<'de>>,
    assigned_variant: Option<Loose<'de>>,
    opted_out: Option<Loose<'de>>,
    map_attrs: Option<LooseEntries<'de>>,
    anonymous_id: Option<Loose<'de>>,
    user_id: Option<Loose<'de>>,
    /// The first structural problem (field, reason): a duplicate field, or
    /// a record that is not an object.
    problem: Option<(String, String)>,
}

impl<'de> Deserialize<'de> for RawRecord<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRecord<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a record object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRecord<'de>, A::Error> {
                let mut r = RawRecord::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    let slot = match key.as_ref() {
                        "unit_id" => &mut r.unit_id,
                        "ts" => &mut r.ts,
                        "event_id" => &mut r.event_id,
                        "type" => &mut r.event_type,
                        "value" => &mut r.value,
                        "is_bot" => &mut r.is_bot,
                        "experiment" => &mut r.experiment,
                        "variant" => &mut r.variant,
                        "assigned_variant" => &mut r.assigned_variant,
                        "opted_out" => &mut r.opted_out,
                        "anonymous_id" => &mut r.anonymous_id,
                        "user_id" => &mut r.user_id,
                        "properties" | "attributes" => {
                            let m = map.next_value::<LooseMap>()?.0;
                            let slot = if key == "properties" {
                                &mut r.map_props
                            } else {
                                &mut r.map_attrs
                            };
                            if slot.is_some() && r.problem.is_none() {
                                r.problem =
                                    Some((key.to_string(), format!("duplicate field {key}")));
                            }
                            *slot = Some(m);
                            continue;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value = map.next_value::<Loose>()?;
                    if slot.is_some() && r.problem.is_none() {
                        r.problem = Some((key.to_string(), format!("duplicate field {key}")));
                    }
                    *slot = Some(value);
                }
                Ok(r)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRecord<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawRecord::not_object("an array"))
            }
            fn visit_unit<E>(self) -> Result<RawRecord<'de>, E> {
                Ok(RawRecord::not_object("null"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<RawRecord<'de>, E> {
                Ok(RawRecord::not_object("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<RawRecord<'de>, E> {
                Ok(RawRecord::not_object("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<RawRecord<'de>, E> {
                Ok(RawRecord::not_object("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<RawRecord<'de>, E> {
                Ok(RawRecord::not_object("a number"))
            }
            fn visit_str<E>(self, _: &str) -> Result<RawRecord<'de>, E> {
                Ok(RawRecord::not_object("a string"))
            }
        }
        d.deserialize_any(V)
    }
}

impl RawRecord<'_> {
    fn not_object(found: &str) -> Self {
        Self {
            problem: Some((
                String::new(),
                format!("record must be an object, found {found}"),
            )),
            ..Self::default()
        }
    }
}

/// Deserializes the top-level array element by element, validating each
/// record as it comes and stopping at `max_records`.
struct BatchSeed<'a, 'b> {
    ctx: &'a Ctx<'a>,
    out: &'b mut ParsedBatch,
    too_many: &'b mut bool,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a json array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(raw) = seq.next_element::<RawRecord<'de>>()? {
            if index >= self.ctx.limits.max_records {
                *self.too_many = true;
                return Err(de::Error::custom("too many records"));
            }
            self.ctx.push(index, raw, self.out);
            index += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use std::collections::BTreeMap;

    use super::*;
    use crate::record::Record;

    const NOW: i64 = 1_790_000_000_000_000; // 2026-09-21, µs

    /// The valid records of `b`, owned, with their batch index.
    fn owned(b: &ParsedBatch) -> Vec<(usize, Record)> {
        assert_eq!(b.records.len(), b.indices.len());
        b.indices
            .iter()
            .copied()
            .zip(b.records.to_records().unwrap())
            .collect()
    }

    fn events(body: &str) -> Result<ParsedBatch, BatchError> {
        parse_batch(
            body.as_bytes(),
            BodyFormat::JsonArray,
            Kind::Event,
            NOW,
            &ParseLimits::default(),
        )
    }

    fn exposures(body: &str) -> Result<ParsedBatch, BatchError> {
        parse_batch(
            body.as_bytes(),
            BodyFormat::JsonArray,
            Kind::Exposure,
            NOW,
            &ParseLimits::default(),
        )
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn an_integer_value_is_a_number() {
        let ms = NOW / 1000 - 5_000;
        let body = format!(
            r#"[{{"event_id":"e1","unit_id":"u1","type":"purchase","ts":{ms},"value":12}},
               {{"event_id":"e2","unit_id":"u1","type":"purchase","ts":{ms},"value":-3}}]"#
        );
        let b = events(&body).unwrap();
        assert!(b.rejected.is_empty(), "{:?}", b.rejected);
        let values: Vec<Option<f64>> = owned(&b)
            .into_iter()
            .map(|(_, r)| match r {
                Record::Event(e) => e.value,
                _ => None,
            })
            .collect();
        assert_eq!(values, [Some(12.0), Some(-3.0)]);
    }

    #[test]
    fn parses_a_full_event_with_millisecond_and_rfc3339_timestamps() {
        let ms = NOW / 1000 - 5_000;
        let body = format!(
            r#"[{{"event_id":"e1","unit_id":"u1","type":"purchase","ts":{ms},"value":12.5,
                 "properties":{{"plan":"pro","items":3,"gift":true,"none":null}},"is_bot":false,"extra":[1,2]}},
               {{"event_id":"e2","unit_id":42,"type":"page_view","ts":"2026-09-21T10:00:00.5+02:00"}}]"#
        );
        let b = events(&body).unwrap();
        assert!(b.rejected.is_empty(), "{:?}", b.rejected);
        let Record::Event(e) = &owned(&b)[0].1 else {
            panic!()
        };
        assert_eq!(e.ts, ms * 1000);
        assert_eq!(e.received_at, NOW);
        assert_eq!(e.value, Some(12.5));
        assert_eq!(e.properties.len(), 3);
        assert_eq!(e.properties["items"], "3");
        assert_eq!(e.properties["gift"], "true");
        let Record::Event(e2) = &owned(&b)[1].1 else {
            panic!()
        };
        assert_eq!(e2.unit_id, "42");
        // 08:00:00.5 UTC
        assert_eq!(
            e2.ts,
            parse_rfc3339_micros("2026-09-21T08:00:00.500Z").unwrap()
        );
        assert_eq!(e2.ts % 1_000_000, 500_000);
        assert!(!e2.is_bot);
    }

    #[test]
    fn escaped_strings_and_repeated_property_keys_read_as_a_map_insert_would() {
        let ms = NOW / 1000;
        let body = format!(
            r#"[{{"event_id":"e\"1","unit\u005fid":"u\u00e9","type":"t","ts":{ms},
                 "properties":{{"z":"1","a\u0062":"x","z":"2","m":null,"ab":"last","b":7}}}}]"#
        );
        let b = events(&body).unwrap();
        assert!(b.rejected.is_empty(), "{:?}", b.rejected);
        let Record::Event(e) = &owned(&b)[0].1 else {
            panic!()
        };
        assert_eq!(
            (e.event_id.as_str(), e.unit_id.as_str()),
            ("e\"1", "u\u{e9}")
        );
        let expected: BTreeMap<String, String> = [("ab", "last"), ("b", "7"), ("z", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(e.properties, expected);
    }

    #[test]
    fn aliases_need_two_different_ids_and_a_timestamp() {
        let ts = NOW / 1000;
        let body = format!(
            r#"[{{"anonymous_id":"d1","user_id":"u1","ts":{ts}}},
               {{"anonymous_id":7,"user_id":"u2","ts":{ts},"unit_id":"ignored"}},
               {{"anonymous_id":"d3","user_id":"d3","ts":{ts}}},
               {{"anonymous_id":"d4","ts":{ts}}},
               {{"anonymous_id":"d5","user_id":"u5"}}]"#
        );
        let b = parse_batch(
            body.as_bytes(),
            BodyFormat::JsonArray,
            Kind::Alias,
            NOW,
            &ParseLimits::default(),
        )
        .unwrap();
        let got: Vec<(usize, String, String, i64)> = owned(&b)
            .into_iter()
            .map(|(i, r)| match r {
                Record::Alias(a) => (i, a.anonymous_id, a.user_id, a.ts),
                other => panic!("not an alias: {other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, "d1".into(), "u1".into(), NOW / 1000 * 1000),
                (1, "7".into(), "u2".into(), NOW / 1000 * 1000)
            ]
        );
        let rejected: Vec<(usize, Option<&str>)> = b
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_deref()))
            .collect();
        assert_eq!(
            rejected,
            [(2, Some("user_id")), (3, Some("user_id")), (4, Some("ts"))]
        );
    }

    #[test]
    fn with_a_catalog_exposures_name_known_experiments_and_variants_by_key_or_flag() {
        use crate::catalog::{CatalogEntry, Experiments};
        let catalog = Experiments::new([CatalogEntry {
            key: "checkout".into(),
            flag: "f-7c1".into(),
            variants: vec!["control".into(), "treatment".into()],
        }]);
        let ts = NOW / 1000;
        let body = format!(
            r#"[{{"unit_id":"u1","experiment":"checkout","variant":"control","ts":{ts}}},
               {{"unit_id":"u2","experiment":"f-7c1","variant":"treatment","ts":{ts}}},
               {{"unit_id":"u3","experiment":"ghost","variant":"control","ts":{ts}}},
               {{"unit_id":"u4","experiment":"checkout","variant":"b","ts":{ts}}},
               {{"unit_id":"u5","experiment":"checkout","variant":"control","assigned_variant":"z","ts":{ts}}}]"#
        );
        let b = parse_batch_in(
            body.as_bytes(),
            BodyFormat::JsonArray,
            Kind::Exposure,
            NOW,
            &ParseLimits::default(),
            Some(&catalog),
        )
        .unwrap();
        let stored: Vec<(usize, String, String)> = owned(&b)
            .into_iter()
            .map(|(i, r)| match r {
                Record::Exposure(x) => (i, x.experiment, x.unit_id),
                other => panic!("not an exposure: {other:?}"),
            })
            .collect();
        assert_eq!(
            stored,
            [
                (0, "checkout".into(), "u1".into()),
                (1, "checkout".into(), "u2".into())
            ],
            "the flag is stored as the experiment's key"
        );
        let rejected: Vec<(usize, Option<&str>, &str)> = b
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_deref(), r.reason.as_str()))
            .collect();
        assert_eq!(rejected.len(), 3, "{rejected:?}");
        assert_eq!(rejected[0].0, 2);
        assert_eq!(rejected[0].1, Some("experiment"));
        assert!(
            rejected[0].2.contains("\"ghost\" does not exist"),
            "{rejected:?}"
        );
        assert_eq!(
            (rejected[1].0, rejected[1].1, rejected[1].2),
            (
                3,
                Some("variant"),
                "experiment \"checkout\" has no variant \"b\"; its variants are control, treatment"
            )
        );
        assert_eq!(
            (rejected[2].0, rejected[2].1),
            (4, Some("assigned_variant"))
        );
        // Without a catalog the same batch is stored whole, as before.
        let unchecked = exposures(&body).unwrap();
        assert!(unchecked.rejected.is_empty(), "{:?}", unchecked.rejected);
    }

    #[test]
    fn assigned_variant_defaults_to_variant() {
        let ts = NOW / 1000;
        let b = exposures(&format!(
            r#"[{{"unit_id":"u","experiment":"x","variant":"b","ts":{ts},"attributes":{{"country":"DE"}}}},
               {{"unit_id":"u","experiment":"x","variant":"a","assigned_variant":"b","opted_out":true,"ts":{ts}}}]"#
        ))
        .unwrap();
        let Record::Exposure(x) = &owned(&b)[0].1 else {
            panic!()
        };
        assert_eq!(x.assigned_variant, "b");
        assert_eq!(x.attributes["country"], "DE");
        assert!(!x.opted_out);
        let Record::Exposure(y) = &owned(&b)[1].1 else {
            panic!()
        };
        assert_eq!(
            (y.variant.as_str(), y.assigned_variant.as_str(), y.opted_out),
            ("a", "b", true)
        );
    }

    #[test]
    fn bot_exposures_and_opted_out_events_keep_their_flags() {
        let ts = NOW / 1000;
        let x = exposures(&format!(
            r#"[{{"unit_id":"u","experiment":"x","variant":"a","ts":{ts},"is_bot":true}},
               {{"unit_id":"v","experiment":"x","variant":"a","ts":{ts},"is_bot":false}}]"#
        ))
        .unwrap();
        let bots: Vec<bool> = owned(&x)
            .into_iter()
            .map(|(_, r)| matches!(r, Record::Exposure(x) if x.is_bot))
            .collect();
        assert_eq!(bots, [true, false]);
        let e = events(&format!(
            r#"[{{"event_id":"1","unit_id":"u","type":"t","ts":{ts},"opted_out":true}},
               {{"event_id":"2","unit_id":"u","type":"t","ts":{ts}}},
               {{"event_id":"3","unit_id":"u","type":"t","ts":{ts},"opted_out":"no"}}]"#
        ))
        .unwrap();
        let opted: Vec<bool> = owned(&e)
            .into_iter()
            .map(|(_, r)| matches!(r, Record::Event(e) if e.opted_out))
            .collect();
        assert_eq!(opted, [true, false]);
        assert_eq!(e.rejected.len(), 1);
        assert_eq!(e.rejected[0].field.as_deref(), Some("opted_out"));
    }

    #[test]
    fn bad_records_are_rejected_one_by_one_with_index_and_field() {
        let ms = NOW / 1000;
        let far_future = ms + 8 * 86_400_000;
        let too_old = ms - 91 * 86_400_000;
        let long = "x".repeat(257);
        let body = format!(
            r#"[{{"event_id":"ok","unit_id":"u","type":"t","ts":{ms}}},
               {{"event_id":"a","type":"t","ts":{ms}}},
               {{"event_id":"b","unit_id":"u","type":"t","ts":{far_future}}},
               {{"event_id":"c","unit_id":"u","type":"t","ts":{too_old}}},
               {{"event_id":"d","unit_id":"u","type":"t","ts":"yesterday"}},
               {{"event_id":"e","unit_id":"{long}","type":"t","ts":{ms}}},
               {{"event_id":"f","unit_id":"u","type":"t","ts":{ms},"value":"12"}},
               {{"event_id":"g","unit_id":"u","type":"t","ts":{ms},"properties":{{"k":{{"nested":1}}}}}},
               {{"event_id":"h","unit_id":"u","type":"t","ts":{ms},"properties":[1]}},
               17,
               {{"event_id":"i","unit_id":"","type":"t","ts":{ms}}},
               {{"event_id":"j","unit_id":"u","unit_id":"v","type":"t","ts":{ms}}},
               {{"event_id":"k","unit_id":"u\n","type":"t","ts":{ms}}},
               {{"event_id":"l","unit_id":"u","type":"t","ts":1.5}},
               {{"event_id":"m","unit_id":"u","type":"t","ts":{ms},"is_bot":"yes"}}]"#
        );
        let b = events(&body).unwrap();
        assert_eq!(b.records.len(), 1);
        assert_eq!(b.indices, [0]);
        let got: Vec<(usize, Option<&str>)> = b
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Some("unit_id")),
                (2, Some("ts")),
                (3, Some("ts")),
                (4, Some("ts")),
                (5, Some("unit_id")),
                (6, Some("value")),
                (7, Some("properties.k")),
                (8, Some("properties")),
                (9, None),
                (10, Some("unit_id")),
                (11, Some("unit_id")),
                (12, Some("unit_id")),
                (13, Some("ts")),
                (14, Some("is_bot")),
            ]
        );
        assert!(
            b.rejected[0].reason.contains("required"),
            "{:?}",
            b.rejected[0]
        );
        assert!(
            b.rejected[1].reason.contains("future"),
            "{:?}",
            b.rejected[1]
        );
        assert!(
            b.rejected[2].reason.contains("retention"),
            "{:?}",
            b.rejected[2]
        );
    }

    #[test]
    fn map_limits_apply_to_properties_and_attributes() {
        let ms = NOW / 1000;
        let many: Vec<String> = (0..65).map(|i| format!("\"k{i}\":1")).collect();
        let body = format!(
            r#"[{{"unit_id":"u","experiment":"x","variant":"a","ts":{ms},"attributes":{{{}}}}},
               {{"unit_id":"u","experiment":"x","variant":"a","ts":{ms},"attributes":{{"k":"{}"}}}},
               {{"unit_id":"u","experiment":"x","variant":"a","ts":{ms},"attributes":{{"{}":"v"}}}}]"#,
            many.join(","),
            "v".repeat(1025),
            "k".repeat(129)
        );
        let b = exposures(&body).unwrap();
        assert!(b.records.is_empty());
        let fields: Vec<_> = b
            .rejected
            .iter()
            .map(|r| r.field.clone().unwrap())
            .collect();
        assert_eq!(fields[0], "attributes");
        assert_eq!(fields[1], "attributes.k");
        assert!(fields[2].starts_with("attributes.kkk"));
    }

    #[test]
    fn ndjson_rejects_bad_lines_and_keeps_good_ones() {
        let ms = NOW / 1000;
        let body = format!(
            "{{\"event_id\":\"a\",\"unit_id\":\"u\",\"type\":\"t\",\"ts\":{ms}}}\n\n{{not json\r\n  {{\"event_id\":\"b\",\"unit_id\":\"u\",\"type\":\"t\",\"ts\":{ms}}}  \n[1]\n"
        );
        let b = parse_batch(
            body.as_bytes(),
            BodyFormat::Ndjson,
            Kind::Event,
            NOW,
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(b.indices.clone(), vec![0, 2]);
        assert_eq!(
            b.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn whole_batch_errors() {
        assert!(matches!(events("{\"a\":1}"), Err(BatchError::Json(_))));
        assert!(matches!(events("[{\"a\":1}"), Err(BatchError::Json(_))));
        assert!(matches!(events("[] x"), Err(BatchError::Json(_))));
        assert_eq!(events("[]"), Err(BatchError::Empty));
        assert_eq!(
            parse_batch(
                b" \n\n",
                BodyFormat::Ndjson,
                Kind::Event,
                NOW,
                &ParseLimits::default()
            ),
            Err(BatchError::Empty)
        );
        let limits = ParseLimits {
            max_records: 2,
            ..ParseLimits::default()
        };
        let three = "[{},{},{}]";
        assert_eq!(
            parse_batch(
                three.as_bytes(),
                BodyFormat::JsonArray,
                Kind::Event,
                NOW,
                &limits
            ),
            Err(BatchError::TooManyRecords { limit: 2 })
        );
        assert_eq!(
            parse_batch(b"{}\n{}\n{}", BodyFormat::Ndjson, Kind::Event, NOW, &limits),
            Err(BatchError::TooManyRecords { limit: 2 })
        );
        assert!(parse_batch(b"[{},{}]", BodyFormat::JsonArray, Kind::Event, NOW, &limits).is_ok());
    }

    #[test]
    fn gzip_is_decoded_and_bombs_stop_at_the_limit() {
        let data = b"[1,2,3]".repeat(10);
        let z = gzip(&data);
        assert_eq!(
            decode_body(&z, Some("gzip"), 1000).unwrap().as_ref(),
            &data[..]
        );
        assert_eq!(decode_body(&data, None, 1000).unwrap().as_ref(), &data[..]);
        // 64 MiB of zeros compress to ~64 KiB; decoding stops after 1 MiB.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        assert_eq!(
            decode_body(&bomb, Some("gzip"), 1 << 20),
            Err(BatchError::BodyTooLarge {
                limit: 1 << 20,
                decompressed: true
            })
        );
        assert!(matches!(
            decode_body(b"not gzip", Some("gzip"), 1000),
            Err(BatchError::Gzip(_))
        ));
        assert!(matches!(
            decode_body(b"x", Some("br"), 1000),
            Err(BatchError::UnsupportedEncoding(_))
        ));
        assert_eq!(
            decode_body(&[0; 11], None, 10),
            Err(BatchError::BodyTooLarge {
                limit: 10,
                decompressed: false
            })
        );
    }

    #[test]
    fn content_type_selects_the_framing() {
        assert_eq!(
            BodyFormat::from_content_type(Some("application/x-ndjson; charset=utf-8")),
            BodyFormat::Ndjson
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json")),
            BodyFormat::JsonArray
        );
        assert_eq!(BodyFormat::from_content_type(None), BodyFormat::JsonArray);
    }

    fn check_total(bytes: &[u8], format: BodyFormat, kind: Kind) {
        let limits = ParseLimits {
            max_records: 50,
            ..ParseLimits::default()
        };
        match parse_batch(bytes, format, kind, NOW, &limits) {
            Ok(b) => {
                assert!(!b.is_empty());
                // Every index appears exactly once, as a record or a rejection.
                assert_eq!(b.records.len(), b.indices.len());
                let mut idx: Vec<usize> = b
                    .indices
                    .iter()
                    .copied()
                    .chain(b.rejected.iter().map(|r| r.index))
                    .collect();
                idx.sort_unstable();
                assert_eq!(idx, (0..b.len()).collect::<Vec<_>>());
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }

    fn json_scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            "[a-z0-9\\\\\"\\n ]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("[1,{}]".to_owned()),
            Just("{\"k\":[]}".to_owned()),
        ]
    }

    fn json_record() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            Just("unit_id"),
            Just("event_id"),
            Just("type"),
            Just("ts"),
            Just("value"),
            Just("properties"),
            Just("attributes"),
            Just("experiment"),
            Just("variant"),
            Just("assigned_variant"),
            Just("opted_out"),
            Just("is_bot"),
            Just("other"),
        ];
        proptest::collection::vec((field, json_scalar()), 0..8).prop_map(|fields| {
            let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", inner.join(","))
        })
    }

    proptest! {
        #[test]
        fn property_maps_are_what_inserting_each_entry_in_order_gives(
            entries in proptest::collection::vec(
                ("[a-c\\\\\"]{1,2}", proptest::option::of("[a-z\"é]{0,3}")),
                0..12,
            ),
        ) {
            let ms = NOW / 1000;
            let props: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!(
                    "{}:{}",
                    serde_json::to_string(k).unwrap(),
                    v.as_ref().map_or("null".to_owned(), |v| serde_json::to_string(v).unwrap()),
                ))
                .collect();
            let body = format!(
                r#"[{{"event_id":"e","unit_id":"u","type":"t","ts":{ms},"properties":{{{}}}}}]"#,
                props.join(",")
            );
            let b = events(&body).unwrap();
            prop_assert!(b.rejected.is_empty(), "{:?}", b.rejected);
            let mut expected = BTreeMap::new();
            for (k, v) in &entries {
                if let Some(v) = v {
                    expected.insert(k.clone(), v.clone());
                }
            }
            let Record::Event(e) = &owned(&b)[0].1 else { unreachable!() };
            prop_assert_eq!(&e.properties, &expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for format in [BodyFormat::JsonArray, BodyFormat::Ndjson] {
                for kind in Kind::ALL {
                    check_total(&bytes, format, kind);
                }
            }
            let _ = decode_body(&bytes, Some("gzip"), 4096);
        }

        #[test]
        fn structured_records_never_panic_and_every_index_is_answered(
            records in proptest::collection::vec(json_record(), 1..20),
        ) {
            let array = format!("[{}]", records.join(","));
            let ndjson = records.join("\n");
            for kind in Kind::ALL {
                check_total(array.as_bytes(), BodyFormat::JsonArray, kind);
                check_total(ndjson.as_bytes(), BodyFormat::Ndjson, kind);
                let b = parse_batch(array.as_bytes(), BodyFormat::JsonArray, kind, NOW, &ParseLimits::default());
                // Structurally valid JSON arrays never fail as a whole.
                prop_assert!(b.is_ok(), "{:?}", b);
            }
        }

        #[test]
        fn valid_events_round_trip(
            ids in proptest::collection::vec("[a-zA-Z0-9_-]{1,40}", 1..30),
            offset_ms in -86_400_000i64..86_400_000,
        ) {
            let ms = NOW / 1000 + offset_ms;
            let recs: Vec<String> = ids.iter().map(|id| format!(
                r#"{{"event_id":"{id}","unit_id":"u-{id}","type":"t","ts":{ms}}}"#)).collect();
            let b = events(&format!("[{}]", recs.join(","))).unwrap();
            prop_assert!(b.rejected.is_empty());
            for ((i, r), id) in owned(&b).iter().zip(&ids) {
                let Record::Event(e) = r else { unreachable!() };
                prop_assert_eq!(&e.event_id, id);
                prop_assert_eq!(e.ts, ms * 1000);
                prop_assert!(*i < ids.len());
            }
        }
    }
}
