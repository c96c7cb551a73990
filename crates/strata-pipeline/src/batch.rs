//! A batch of records on its way from the parser to a [`crate::Sink`],
//! already encoded as log frames.
//!
//! At a few hundred thousand records per second, building an owned
//! [`Record`] per request record (a `String` per field, a map per property
//! set) and then encoding it for the log cost more than the parsing itself.
//! The parser therefore encodes each valid record straight into one buffer
//! of [`crate::log`] frames, borrowing its strings from the request body;
//! the local store hands that buffer to the log writer as it is, and other
//! sinks read the records back as [`RecordRef`] views. What the request path
//! needs of every record (its kind, deduplication key and unit hash) is
//! computed once, while encoding, so neither the HTTP handler nor the store
//! decodes the frames again.

use std::fmt;

use crate::codec::{self, DecodeError};
use crate::dedup::{self, Key};
use crate::limits::RateLimiter;
use crate::log::{self, FRAME_HEADER_LEN};
use crate::record::{Kind, Record, RecordRef};

/// Records encoded as log frames, back to back.
#[derive(Clone, Default, PartialEq)]
pub struct Batch {
    frames: Vec<u8>,
    /// `ends[i]` is the end of frame `i` in `frames`.
    ends: Vec<usize>,
    /// Per record: what the request path needs without decoding it again.
    meta: Vec<Meta>,
}

/// What [`Batch::push`] remembers of a record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Meta {
    pub(crate) kind: Kind,
    /// [`dedup::key_of_ref`].
    pub(crate) key: (Key, i32),
    /// [`RateLimiter::key_hash`] of the unit id.
    pub(crate) unit_hash: u64,
}

impl Batch {
    /// An empty batch with room for `records` records of `bytes` bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Batch {
            frames: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
            meta: Vec::with_capacity(records),
        }
    }

    /// Appends a record.
    pub fn push(&mut self, record: &RecordRef<'_>) {
        log::encode_frame_ref(record, &mut self.frames);
        self.ends.push(self.frames.len());
        self.meta.push(Meta {
            kind: record.kind(),
            key: dedup::key_of_ref(record),
            unit_hash: RateLimiter::key_hash(record.unit_id().as_bytes()),
        });
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The frames, back to back, as the log stores them.
    pub fn frames(&self) -> &[u8] {
        &self.frames
    }

    /// What was remembered of each record, in order.
    pub(crate) fn meta(&self) -> &[Meta] {
        &self.meta
    }

    /// Frame `i`, header included.
    pub(crate) fn frame(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.frames[start..self.ends[i]]
    }

    /// The encoding of record `i`, without its frame header.
    fn payload(&self, i: usize) -> &[u8] {
        &self.frame(i)[FRAME_HEADER_LEN..]
    }

    /// The records, in order. A batch holds only frames [`Batch::push`]
    /// encoded, so decoding fails only if that encoder and the decoder
    /// disagree; callers turn such an error into a refused batch.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Result<RecordRef<'_>, DecodeError>> {
        self.payloads().map(codec::decode_ref)
    }

    /// Each record's encoding ([`crate::codec`]), without its frame header.
    pub fn payloads(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.payload(i))
    }

    /// Record `i`, if there is one; see [`Batch::iter`] for the error.
    pub fn get(&self, i: usize) -> Option<Result<RecordRef<'_>, DecodeError>> {
        (i < self.len()).then(|| codec::decode_ref(self.payload(i)))
    }

    /// The batch of the records whose index `keep` accepts, in order.
    pub fn select(&self, mut keep: impl FnMut(usize) -> bool) -> Batch {
        let mut out = Batch::with_capacity(self.len(), self.frames.len());
        for i in 0..self.len() {
            if keep(i) {
                out.frames.extend_from_slice(self.frame(i));
                out.ends.push(out.frames.len());
                out.meta.push(self.meta[i]);
            }
        }
        out
    }

    /// The owned records.
    pub fn to_records(&self) -> Result<Vec<Record>, DecodeError> {
        self.iter().map(|r| r.map(|r| r.to_record())).collect()
    }
}

impl From<&[Record]> for Batch {
    fn from(records: &[Record]) -> Self {
        let mut batch = Batch::with_capacity(records.len(), records.len() * 256);
        for r in records {
            batch.push(&r.view());
        }
        batch
    }
}

impl From<Vec<Record>> for Batch {
    fn from(records: Vec<Record>) -> Self {
        Batch::from(records.as_slice())
    }
}

impl FromIterator<Record> for Batch {
    fn from_iter<I: IntoIterator<Item = Record>>(iter: I) -> Self {
        let mut batch = Batch::default();
        for r in iter {
            batch.push(&r.view());
        }
        batch
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::sample_event;

    #[test]
    fn frames_are_the_logs_and_records_round_trip() {
        let records: Vec<Record> = (0..5).map(sample_event).collect();
        let batch = Batch::from(records.as_slice());
        assert_eq!(batch.len(), 5);
        assert_eq!(batch.to_records().unwrap(), records);
        let mut frames = Vec::new();
        for r in &records {
            log::encode_frame(r, &mut frames);
        }
        assert_eq!(batch.frames(), frames.as_slice());
        let segment = [log::SEGMENT_MAGIC.as_slice(), batch.frames()].concat();
        let scan = log::scan(&segment);
        assert_eq!((scan.records, scan.damage), (records, None));
    }

    #[test]
    fn remembered_keys_and_unit_hashes_are_those_of_the_decoded_records() {
        let mut records: Vec<Record> = (0..4).map(sample_event).collect();
        records.push(Record::Exposure(crate::record::Exposure {
            unit_id: "u7".into(),
            experiment: "exp".into(),
            variant: "b".into(),
            assigned_variant: "a".into(),
            opted_out: false,
            ts: 1_767_225_600_000_000,
            received_at: 1_767_225_600_000_001,
            attributes: Default::default(),
            is_bot: false,
        }));
        let batch = Batch::from(records.as_slice()).select(|i| i != 1);
        assert_eq!(batch.meta().len(), 4);
        for (r, m) in batch.iter().zip(batch.meta()) {
            let r = r.unwrap();
            assert_eq!(m.kind, r.kind());
            assert_eq!(m.key, dedup::key_of_ref(&r));
            assert_eq!(m.unit_hash, RateLimiter::key_hash(r.unit_id().as_bytes()));
        }
    }

    #[test]
    fn select_keeps_the_chosen_records_in_order() {
        let records: Vec<Record> = (0..6).map(sample_event).collect();
        let batch: Batch = records.iter().cloned().collect();
        let odd = batch.select(|i| i % 2 == 1);
        assert_eq!(
            odd.to_records().unwrap(),
            vec![records[1].clone(), records[3].clone(), records[5].clone()]
        );
        assert!(batch.select(|_| false).is_empty());
        assert_eq!(batch.select(|_| true), batch);
    }
}
