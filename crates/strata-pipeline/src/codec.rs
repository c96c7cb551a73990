//! The compact binary encoding of a [`Record`] inside a log frame.
//!
//! The log must absorb hundreds of thousands of records per second on two
//! cores, so a record is not stored as JSON: strings are length-prefixed
//! bytes, integers are zig-zag varints, flags share one byte, and an
//! exposure whose assigned variant equals the served one stores it once.
//! A 500-byte JSON event encodes to roughly 300 bytes.
//!
//! Layout (version 1; the segment header carries the version):
//!
//! ```text
//! exposure: 0x01 str(unit_id) str(experiment) str(variant) flags
//!           [str(assigned_variant) unless flags&2] ivar(ts) ivar(received_at) map(attributes)
//! event:    0x02 str(event_id) str(unit_id) str(type) flags
//!           ivar(ts) ivar(received_at) [f64 LE value if flags&2] map(properties)
//! alias:    0x03 str(anonymous_id) str(user_id) ivar(ts) ivar(received_at)
//! str = uvar(len) bytes (UTF-8)      map = uvar(n) n × (str str)
//! exposure flags: 1 opted_out, 2 assigned_variant == variant, 4 is_bot
//! event flags:    1 is_bot, 2 has value, 4 opted_out
//! ```
//!
//! Flags 4 were added without a version change: a frame written before
//! them has the bit clear, which decodes as `false`, the value such a
//! record was accepted with. The alias tag was added without a version
//! change too: a log written before it simply holds none.
//!
//! Decoding is total: any byte string either decodes to a record or yields a
//! [`DecodeError`]; it never panics and never allocates more than the input
//! length justifies.

use crate::record::{AliasRef, EventRef, ExposureRef, MapRef, Record, RecordRef};

const TAG_EXPOSURE: u8 = 1;
const TAG_EVENT: u8 = 2;
const TAG_ALIAS: u8 = 3;

/// Why a payload is not a valid encoded record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload ends inside a field.
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    /// Unknown record tag.
    #[error("unknown record tag {0}")]
    Tag(u8),
    /// A string field is not UTF-8.
    #[error("string at byte {0} is not utf-8")]
    Utf8(usize),
    /// A varint is longer than 64 bits.
    #[error("varint at byte {0} overflows")]
    Varint(usize),
    /// Map keys out of order or repeated.
    #[error("map key at byte {0} is not greater than the one before")]
    MapOrder(usize),
    /// Bytes left after the record.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

/// Appends the encoding of `record` to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    encode_ref(&record.view(), out);
}

/// Appends the encoding of a borrowed record to `out`; the same bytes as
/// [`encode`] of the owned record.
pub fn encode_ref(record: &RecordRef<'_>, out: &mut Vec<u8>) {
    match *record {
        RecordRef::Exposure(x) => {
            out.push(TAG_EXPOSURE);
            put_str(out, x.unit_id);
            put_str(out, x.experiment);
            put_str(out, x.variant);
            let same = x.assigned_variant == x.variant;
            out.push(u8::from(x.opted_out) | (u8::from(same) << 1) | (u8::from(x.is_bot) << 2));
            if !same {
                put_str(out, x.assigned_variant);
            }
            put_ivar(out, x.ts);
            put_ivar(out, x.received_at);
            put_map(out, x.attributes);
        }
        RecordRef::Event(e) => {
            out.push(TAG_EVENT);
            put_str(out, e.event_id);
            put_str(out, e.unit_id);
            put_str(out, e.event_type);
            out.push(
                u8::from(e.is_bot)
                    | (u8::from(e.value.is_some()) << 1)
                    | (u8::from(e.opted_out) << 2),
            );
            put_ivar(out, e.ts);
            put_ivar(out, e.received_at);
            if let Some(v) = e.value {
                out.extend_from_slice(&v.to_le_bytes());
            }
            put_map(out, e.properties);
        }
        RecordRef::Alias(a) => {
            out.push(TAG_ALIAS);
            put_str(out, a.anonymous_id);
            put_str(out, a.user_id);
            put_ivar(out, a.ts);
            put_ivar(out, a.received_at);
        }
    }
}

/// Decodes one record that must fill `buf` exactly.
pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    decode_ref(buf).map(|r| r.to_record())
}

/// Decodes one record that must fill `buf` exactly, borrowing its strings
/// from `buf`. Validates everything [`decode`] does, and that map keys are
/// strictly ascending (as [`encode`] writes them), so the map of a
/// [`RecordRef`] has the entries the owned map would.
pub fn decode_ref(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let record = match r.byte()? {
        TAG_EXPOSURE => {
            let unit_id = r.str()?;
            let experiment = r.str()?;
            let variant = r.str()?;
            let flags = r.byte()?;
            let assigned_variant = if flags & 2 != 0 { variant } else { r.str()? };
            let ts = r.ivar()?;
            let received_at = r.ivar()?;
            let attributes = r.map()?;
            RecordRef::Exposure(ExposureRef {
                unit_id,
                experiment,
                variant,
                assigned_variant,
                opted_out: flags & 1 != 0,
                ts,
                received_at,
                attributes,
                is_bot: flags & 4 != 0,
            })
        }
        TAG_EVENT => {
            let event_id = r.str()?;
            let unit_id = r.str()?;
            let event_type = r.str()?;
            let flags = r.byte()?;
            let ts = r.ivar()?;
            let received_at = r.ivar()?;
            let value = if flags & 2 != 0 {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Some(f64::from_le_bytes(a))
            } else {
                None
            };
            let properties = r.map()?;
            RecordRef::Event(EventRef {
                event_id,
                unit_id,
                event_type,
                ts,
                received_at,
                value,
                properties,
                is_bot: flags & 1 != 0,
                opted_out: flags & 4 != 0,
            })
        }
        TAG_ALIAS => RecordRef::Alias(AliasRef {
            anonymous_id: r.str()?,
            user_id: r.str()?,
            ts: r.ivar()?,
            received_at: r.ivar()?,
        }),
        tag => return Err(DecodeError::Tag(tag)),
    };
    if r.pos != buf.len() {
        return Err(DecodeError::Trailing(buf.len() - r.pos));
    }
    Ok(record)
}

/// The entries of an encoded map that [`decode_ref`] validated, as bytes.
/// Stops early (it cannot, on validated bytes) rather than panic on bad ones.
pub(crate) fn map_entries_raw(bytes: &[u8], n: usize) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut r = Reader { buf: bytes, pos: 0 };
    (0..n).map_while(move |_| Some((r.bytes().ok()?, r.bytes().ok()?)))
}

fn put_uvar(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_ivar(out: &mut Vec<u8>, v: i64) {
    put_uvar(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvar(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_map(out: &mut Vec<u8>, m: MapRef<'_>) {
    put_uvar(out, m.len() as u64);
    for (k, v) in m.iter_bytes() {
        put_uvar(out, k.len() as u64);
        out.extend_from_slice(k);
        put_uvar(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uvar(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint(start))
    }

    fn ivar(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvar()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        // A length beyond the input is a truncation, caught by `take` before
        // anything is allocated.
        let len = usize::try_from(self.uvar()?).map_err(|_| DecodeError::Truncated(at))?;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::Utf8(at))
    }

    fn map(&mut self) -> Result<MapRef<'a>, DecodeError> {
        let n = self.uvar()?;
        let start = self.pos;
        let mut last: Option<&str> = None;
        let mut count = 0usize;
        for _ in 0..n {
            // Each entry takes at least two bytes, so a huge count fails on
            // truncation after at most input-length steps.
            let at = self.pos;
            let k = self.str()?;
            self.str()?;
            if last.is_some_and(|l| l >= k) {
                return Err(DecodeError::MapOrder(at));
            }
            last = Some(k);
            count += 1;
        }
        Ok(MapRef::encoded(&self.buf[start..self.pos], count))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::record::{Alias, Event, Exposure};
    use proptest::prelude::*;

    pub(crate) fn sample_event(i: u64) -> Record {
        let mut properties = BTreeMap::new();
        properties.insert("page".to_string(), format!("/p/{i}"));
        properties.insert("country".to_string(), "DE".to_string());
        Record::Event(Event {
            event_id: format!("ev-{i}"),
            unit_id: format!("u{}", i % 97),
            event_type: "purchase".into(),
            ts: 1_767_225_600_000_000 + i as i64,
            received_at: 1_767_225_600_000_000 + i as i64 + 5,
            value: if i % 2 == 0 {
                Some(i as f64 * 0.5)
            } else {
                None
            },
            properties,
            is_bot: i % 7 == 0,
            opted_out: i % 11 == 0,
        })
    }

    #[test]
    fn aliases_round_trip_with_their_literal_bytes() {
        let rec = Record::Alias(Alias {
            anonymous_id: "d1".into(),
            user_id: "u".into(),
            ts: 1,
            received_at: -1,
        });
        let mut buf = Vec::new();
        encode(&rec, &mut buf);
        // Kept literally: an encoder change must not move stored aliases.
        assert_eq!(buf, [3, 2, b'd', b'1', 1, b'u', 2, 1]);
        assert_eq!(decode(&buf), Ok(rec));
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "prefix {cut} decoded");
        }
    }

    #[test]
    fn round_trips_both_kinds() {
        let mut attributes = BTreeMap::new();
        attributes.insert("platform".to_string(), "ios".to_string());
        for rec in [
            sample_event(1),
            sample_event(2),
            Record::Exposure(Exposure {
                unit_id: "u1".into(),
                experiment: "exp".into(),
                variant: "b".into(),
                assigned_variant: "a".into(),
                opted_out: true,
                ts: -5,
                received_at: i64::MAX,
                attributes,
                is_bot: true,
            }),
            Record::Exposure(Exposure {
                unit_id: String::new(),
                experiment: "e".into(),
                variant: "a".into(),
                assigned_variant: "a".into(),
                opted_out: false,
                ts: i64::MIN,
                received_at: 0,
                attributes: BTreeMap::new(),
                is_bot: false,
            }),
        ] {
            let mut buf = Vec::new();
            encode(&rec, &mut buf);
            assert_eq!(decode(&buf), Ok(rec));
        }
    }

    #[test]
    fn frames_written_before_the_bot_and_opt_out_flags_decode_as_false() {
        // Bytes of an exposure and an event as written before flag 4
        // existed (exposure flags 2: assigned == served; event flags 2:
        // has a value), kept literally so an encoder change cannot hide
        // an incompatibility.
        let exposure: &[u8] = &[1, 1, b'u', 1, b'e', 1, b'a', 2, 2, 4, 0];
        let RecordRef::Exposure(x) = decode_ref(exposure).unwrap() else {
            panic!("not an exposure")
        };
        assert_eq!((x.unit_id, x.variant, x.assigned_variant), ("u", "a", "a"));
        assert!(!x.is_bot && !x.opted_out);
        let mut event = vec![2, 1, b'i', 1, b'u', 1, b't', 3, 2, 4];
        event.extend_from_slice(&1.5f64.to_le_bytes());
        event.push(0);
        let RecordRef::Event(e) = decode_ref(&event).unwrap() else {
            panic!("not an event")
        };
        assert_eq!((e.ts, e.received_at, e.value), (1, 2, Some(1.5)));
        assert!(e.is_bot && !e.opted_out);
        // And the new flags round-trip on both kinds.
        let mut bot = decode(exposure).unwrap();
        let Record::Exposure(x) = &mut bot else {
            unreachable!()
        };
        x.is_bot = true;
        let mut opted = decode(&event).unwrap();
        let Record::Event(e) = &mut opted else {
            unreachable!()
        };
        e.opted_out = true;
        for rec in [bot, opted] {
            let mut buf = Vec::new();
            encode(&rec, &mut buf);
            assert_eq!(decode(&buf), Ok(rec));
        }
    }

    #[test]
    fn rejects_trailing_and_truncated() {
        let mut buf = Vec::new();
        encode(&sample_event(3), &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "prefix {cut} decoded");
        }
        buf.push(0);
        assert_eq!(decode(&buf), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn borrowed_maps_match_owned_ones() {
        let rec = sample_event(4);
        let mut buf = Vec::new();
        encode(&rec, &mut buf);
        let RecordRef::Event(e) = decode_ref(&buf).unwrap() else {
            panic!("not an event")
        };
        let entries: Vec<_> = e.properties.iter().collect();
        assert_eq!(entries, [("country", "DE"), ("page", "/p/4")]);
        assert_eq!(e.event_id, "ev-4");
        assert_eq!(decode_ref(&buf).unwrap().to_record(), rec);
    }

    #[test]
    fn rejects_unsorted_or_repeated_map_keys() {
        // An exposure with no attributes, then its map rewritten by hand.
        let x = Record::Exposure(Exposure {
            unit_id: "u".into(),
            experiment: "e".into(),
            variant: "a".into(),
            assigned_variant: "a".into(),
            opted_out: false,
            ts: 0,
            received_at: 0,
            attributes: BTreeMap::new(),
            is_bot: false,
        });
        let mut base = Vec::new();
        encode(&x, &mut base);
        assert_eq!(base.pop(), Some(0), "empty map is one zero byte");
        for (keys, ok) in [(["a", "b"], true), (["b", "a"], false), (["a", "a"], false)] {
            let mut buf = base.clone();
            put_uvar(&mut buf, 2);
            for k in keys {
                put_str(&mut buf, k);
                put_str(&mut buf, "v");
            }
            assert_eq!(decode(&buf).is_ok(), ok, "{keys:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn events_round_trip(id in ".{0,20}", unit in ".{0,20}", ts in any::<i64>(), v in proptest::option::of(any::<f64>()), bot in any::<bool>(), opted in any::<bool>()) {
            let rec = Record::Event(Event {
                event_id: id, unit_id: unit, event_type: "t".into(), ts, received_at: ts.wrapping_add(1),
                value: v, properties: BTreeMap::new(), is_bot: bot, opted_out: opted,
            });
            let mut buf = Vec::new();
            encode(&rec, &mut buf);
            let back = decode(&buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // NaN != NaN, so compare the encodings.
            let mut again = Vec::new();
            encode(&back, &mut again);
            prop_assert_eq!(buf, again);
        }
    }
}
