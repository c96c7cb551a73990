//! Heuristic bot detection: the activity limits above which a unit is taken
//! for a bot and left out of an analysis.
//!
//! Events and exposures that the SDK or the pipeline flag `is_bot` never
//! reach an analysis. Many bots are not flagged, though: crawlers, load
//! tests, scripts replaying a session. They show themselves by activity no
//! person produces — hundreds of page views in a minute, tens of thousands a
//! day — and, being few but extremely active, they can move a count or sum
//! metric by themselves. [`BotDetection`] holds the limits, per event type
//! with a default for every type, per minute and per day; a unit of an
//! experiment that exceeds one is left out of every metric of the analysis,
//! denominators included (`docs/data-model.md`, *Bots*).
//!
//! The limits are the organisation's, so they live in the metric registry
//! document (`bot_detection`), beside the metric definitions they protect.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::ModelError;
use crate::metric::EVENT_TYPE_MAX_BYTES;

/// The default limit of events of one type in one UTC minute: five a second
/// for a whole minute, beyond any person tapping or scrolling.
pub const DEFAULT_PER_MINUTE: u64 = 300;

/// The default limit of events of one type in one UTC day: one every 4.3
/// seconds around the clock, or one every 2.9 seconds through 16 waking
/// hours, beyond the heaviest human user.
pub const DEFAULT_PER_DAY: u64 = 20_000;

/// A limit of events in a time bucket: a unit with *more* events than this
/// of one type in one bucket is taken for a bot. `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit(pub Option<u64>);

impl Limit {
    /// No limit.
    pub const NONE: Limit = Limit(None);
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// The largest limit accepted: beyond it a limit is a typo, not a setting
/// (no unit sends a trillion events of a type in a day).
const MAX_LIMIT: u64 = 1_000_000_000_000;

struct LimitVisitor;

impl<'de> Visitor<'de> for LimitVisitor {
    type Value = Limit;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number of events, at least 1, or null for no limit")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Limit, E> {
        if (1..=MAX_LIMIT).contains(&v) {
            Ok(Limit(Some(v)))
        } else {
            Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Limit, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Limit, E> {
        if v.fract() == 0.0 && (1.0..=MAX_LIMIT as f64).contains(&v) {
            Ok(Limit(Some(v as u64)))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Limit, E> {
        Ok(Limit::NONE)
    }

    fn visit_none<E: de::Error>(self) -> Result<Limit, E> {
        Ok(Limit::NONE)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Limit, D::Error> {
        d.deserialize_any(LimitVisitor)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LimitVisitor)
    }
}

/// A limit given for one event type: present (a number, or null for none)
/// overrides the default; absent inherits it.
fn some_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit>, D::Error> {
    Limit::deserialize(d).map(Some)
}

/// The limits of one event type; an absent limit is the default's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeLimits {
    /// Events of this type in one UTC minute (null: no limit).
    #[serde(
        default,
        deserialize_with = "some_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_minute: Option<Limit>,
    /// Events of this type in one UTC day (null: no limit).
    #[serde(
        default,
        deserialize_with = "some_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_day: Option<Limit>,
}

/// The heuristic bot detection of an organisation's analyses: the registry
/// document's `bot_detection`. Absent, it is on with the default limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BotDetection {
    /// Whether units are checked at all (`false` turns the detection off;
    /// events flagged `is_bot` are left out regardless).
    pub enabled: bool,
    /// The limit per UTC minute of any event type without one of its own.
    pub per_minute: Limit,
    /// The limit per UTC day of any event type without one of its own.
    pub per_day: Limit,
    /// Limits of particular event types, overriding the defaults.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub event_types: BTreeMap<String, TypeLimits>,
}

impl Default for BotDetection {
    fn default() -> Self {
        Self {
            enabled: true,
            per_minute: Limit(Some(DEFAULT_PER_MINUTE)),
            per_day: Limit(Some(DEFAULT_PER_DAY)),
            event_types: BTreeMap::new(),
        }
    }
}

impl BotDetection {
    /// No detection.
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Whether any unit can be excluded: detection on and some limit set.
    pub fn is_active(&self) -> bool {
        self.enabled
            && (self.per_minute.0.is_some()
                || self.per_day.0.is_some()
                || self
                    .event_types
                    .values()
                    .any(|t| limit_set(t.per_minute) || limit_set(t.per_day)))
    }

    /// The `(per minute, per day)` limits of `event_type`.
    pub fn limits(&self, event_type: &str) -> (Option<u64>, Option<u64>) {
        let own = self.event_types.get(event_type);
        (
            own.and_then(|t| t.per_minute).unwrap_or(self.per_minute).0,
            own.and_then(|t| t.per_day).unwrap_or(self.per_day).0,
        )
    }

    /// Checks the event type names (the limits are checked as they are
    /// read); fields are relative to `bot_detection`.
    pub fn validate(&self) -> Result<(), ModelError> {
        for name in self.event_types.keys() {
            if name.is_empty() {
                return Err(ModelError::invalid(
                    "event_types",
                    "must not have an empty event type",
                ));
            }
            if name.len() > EVENT_TYPE_MAX_BYTES {
                return Err(ModelError::TooLong {
                    field: format!("event_types.{name:?}"),
                    max: EVENT_TYPE_MAX_BYTES,
                });
            }
        }
        Ok(())
    }
}

fn limit_set(l: Option<Limit>) -> bool {
    l.is_some_and(|l| l.0.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<BotDetection, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_fields_take_the_defaults_and_types_inherit_them() {
        let d = parse(json!({"event_types": {
            "impression": {"per_minute": 2000},
            "heartbeat": {"per_minute": null, "per_day": null}
        }}))
        .unwrap();
        assert!(d.enabled && d.is_active());
        assert_eq!(d.limits("impression"), (Some(2000), Some(DEFAULT_PER_DAY)));
        assert_eq!(d.limits("heartbeat"), (None, None));
        assert_eq!(
            d.limits("purchase"),
            (Some(DEFAULT_PER_MINUTE), Some(DEFAULT_PER_DAY))
        );
        assert_eq!(parse(json!({})).unwrap(), BotDetection::default());
        // Round trip: null limits stay null, absent ones absent.
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(parse(serde_json::from_str(&text).unwrap()).unwrap(), d);
    }

    #[test]
    fn off_or_without_limits_detects_nothing() {
        assert!(!parse(json!({"enabled": false})).unwrap().is_active());
        assert!(!parse(json!({"per_minute": null, "per_day": null}))
            .unwrap()
            .is_active());
        let one = parse(json!({"per_minute": null, "per_day": null,
                               "event_types": {"page_view": {"per_day": 5000}}}))
        .unwrap();
        assert!(one.is_active());
        assert_eq!(one.limits("page_view"), (None, Some(5000)));
        assert_eq!(one.limits("click"), (None, None));
    }

    #[test]
    fn bad_limits_are_refused_in_words() {
        for (v, shown) in [
            (json!({"per_minute": 0}), "integer `0`"),
            (json!({"per_minute": -5}), "integer `-5`"),
            (json!({"per_day": 2.5}), "floating point `2.5`"),
            (json!({"per_day": "many"}), "string \"many\""),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert!(e.contains(shown), "{v}: {e}");
            assert!(
                e.contains("expected a whole number of events, at least 1, or null for no limit"),
                "{v}: {e}"
            );
        }
        let e = parse(json!({"per_hour": 10})).unwrap_err();
        assert!(
            e.starts_with("unknown field `per_hour`, expected one of"),
            "{e}"
        );
        let e = parse(json!({"event_types": {"x": {"per_week": 1}}})).unwrap_err();
        assert!(e.starts_with("unknown field `per_week`"), "{e}");
        assert_eq!(
            parse(json!({"per_day": 1e3})).unwrap().per_day,
            Limit(Some(1000))
        );
    }

    #[test]
    fn event_type_names_are_checked() {
        let e = parse(json!({"event_types": {"": {"per_day": 10}}}))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "event_types");
        assert_eq!(
            e.to_string(),
            "event_types must not have an empty event type"
        );
        let long = "x".repeat(EVENT_TYPE_MAX_BYTES + 1);
        let e = parse(json!({"event_types": {(long): {"per_day": 10}}}))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().ends_with("must be at most 128 bytes"), "{e}");
    }
}
