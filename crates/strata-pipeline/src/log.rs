//! The segment log: append-only files of checksummed frames, the durable
//! home of a record from its acknowledgement until compaction.
//!
//! A segment `log/<id, 20 digits>.seg` is an 8-byte header
//! ([`SEGMENT_MAGIC`], which carries the format version) followed by frames:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 (IEEE) of the payload | payload
//! ```
//!
//! one frame per record, the payload being [`crate::codec`]. Only one writer
//! appends, to the newest segment; a group of appends is made durable by one
//! `fdatasync`. A crash can leave the newest segment with a torn tail (a
//! partial frame, or a frame whose bytes never reached the disk): [`scan`]
//! stops at the first frame that is incomplete or fails its checksum, so
//! recovery keeps every complete record and nothing after the damage.
//! Segment ids only grow and are never reused, so a name identifies its
//! contents for ever (compaction relies on it).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::{Result, StoreError};
use crate::record::{Record, RecordRef};

/// First bytes of every segment: name and format version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"STRLOG01";
/// Bytes of the segment header.
pub const HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;
/// Bytes of a frame header (length + CRC).
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload accepted when reading: a corrupted length field must not
/// make recovery allocate gigabytes.
pub const MAX_FRAME_LEN: u32 = 16 << 20;

/// The file of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The segment ids in `dir`, ascending. Other names are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("list log directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list log directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_suffix(".seg")
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Appends the frame of `record` (header and encoded payload) to `out`.
pub fn encode_frame(record: &Record, out: &mut Vec<u8>) {
    encode_frame_ref(&record.view(), out);
}

/// Appends the frame of a borrowed record to `out`; the same bytes as
/// [`encode_frame`] of the owned record.
pub fn encode_frame_ref(record: &RecordRef<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    codec::encode_ref(record, out);
    let payload = &out[start + FRAME_HEADER_LEN..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What reading a segment found: owned records, or [`RecordRef`]s
/// borrowing the segment's bytes ([`scan_refs`]).
#[derive(Debug)]
pub struct Scan<R = Record> {
    /// Every complete, checksummed record, in order.
    pub records: Vec<R>,
    /// Length of the valid prefix (header and complete frames).
    pub valid_len: u64,
    /// Why reading stopped before the end of the bytes, if it did.
    pub damage: Option<String>,
}

impl<R> Default for Scan<R> {
    fn default() -> Self {
        Scan {
            records: Vec::new(),
            valid_len: 0,
            damage: None,
        }
    }
}

/// Reads the records of a segment's bytes: a pure function, total on any
/// input. Stops at the first incomplete or corrupt frame.
pub fn scan(bytes: &[u8]) -> Scan {
    scan_with(bytes, codec::decode)
}

/// [`scan`], borrowing every record's strings from `bytes`.
pub fn scan_refs(bytes: &[u8]) -> Scan<RecordRef<'_>> {
    scan_with(bytes, codec::decode_ref)
}

/// Fewest payload bytes of an encoded record (a tag, three empty strings,
/// flags, two one-byte timestamps, an empty map).
const MIN_PAYLOAD: usize = 8;

/// The number of frames in `bytes` whose header is plausible (a payload of
/// at least `MIN_PAYLOAD` (8) bytes that fits): an upper bound of the records
/// [`scan`] returns, found without reading the payloads, and never more than
/// one per 16 bytes even for garbage, so it can size a buffer.
pub fn frame_count(bytes: &[u8]) -> usize {
    let mut pos = SEGMENT_MAGIC.len();
    let mut n = 0;
    while let Some(h) = bytes.get(pos..pos + FRAME_HEADER_LEN) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let end = pos + FRAME_HEADER_LEN + len;
        if len < MIN_PAYLOAD || end > bytes.len() {
            break;
        }
        n += 1;
        pos = end;
    }
    n
}

fn scan_with<'a, R>(
    bytes: &'a [u8],
    decode: impl Fn(&'a [u8]) -> std::result::Result<R, codec::DecodeError>,
) -> Scan<R> {
    let mut out = Scan {
        records: Vec::with_capacity(frame_count(bytes)),
        ..Scan::default()
    };
    if bytes.len() < SEGMENT_MAGIC.len() {
        if !bytes.is_empty() {
            out.damage = Some(format!("torn header ({} bytes)", bytes.len()));
        } else {
            out.damage = Some("empty file".into());
        }
        return out;
    }
    if &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        out.damage = Some("bad magic (not a segment, or another format version)".into());
        return out;
    }
    let mut pos = SEGMENT_MAGIC.len();
    out.valid_len = pos as u64;
    let mut index = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < FRAME_HEADER_LEN {
            out.damage = Some(format!("torn frame header at byte {pos} (record {index})"));
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_FRAME_LEN {
            out.damage = Some(format!(
                "frame length {len} too large at byte {pos} (record {index})"
            ));
            break;
        }
        let end = FRAME_HEADER_LEN + len as usize;
        if rest.len() < end {
            out.damage = Some(format!("torn frame at byte {pos} (record {index})"));
            break;
        }
        let payload = &rest[FRAME_HEADER_LEN..end];
        if crc32fast::hash(payload) != crc {
            out.damage = Some(format!("checksum mismatch at byte {pos} (record {index})"));
            break;
        }
        match decode(payload) {
            Ok(r) => out.records.push(r),
            Err(e) => {
                out.damage = Some(format!(
                    "undecodable record at byte {pos} (record {index}): {e}"
                ));
                break;
            }
        }
        pos += end;
        index += 1;
        out.valid_len = pos as u64;
    }
    out
}

/// Reads the segment file at `path` (to be [`scan_refs`]ed).
pub fn read_segment_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_segment_into(path, &mut buf)?;
    Ok(buf)
}

/// Reads the segment file at `path` into `buf`, replacing its contents and
/// reusing its capacity.
pub fn read_segment_into(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map_err(|e| StoreError::io("read segment", path, e))?;
    Ok(())
}

/// Reads and scans the segment file at `path`.
pub fn read_segment(path: &Path) -> Result<Scan> {
    Ok(scan(&read_segment_bytes(path)?))
}

/// Cuts the file at `path` to `len` bytes and makes the cut durable.
pub fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("open segment for truncation", path, e))?;
    f.set_len(len)
        .map_err(|e| StoreError::io("truncate segment", path, e))?;
    f.sync_all()
        .map_err(|e| StoreError::io("fsync truncated segment", path, e))
}

/// Makes the entries of directory `dir` (creations, renames, deletions)
/// durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// The segment being appended to.
#[derive(Debug)]
pub struct ActiveSegment {
    /// Its id.
    pub id: u64,
    /// Its path.
    pub path: PathBuf,
    file: File,
    /// Bytes written so far (header included).
    pub len: u64,
}

impl ActiveSegment {
    /// Creates segment `id` in `dir` with its header, durably (file and
    /// directory entry).
    pub fn create(dir: &Path, id: u64) -> Result<Self> {
        let path = segment_path(dir, id);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("create segment", &path, e))?;
        file.write_all(SEGMENT_MAGIC)
            .map_err(|e| StoreError::io("write segment header", &path, e))?;
        file.sync_all()
            .map_err(|e| StoreError::io("fsync segment", &path, e))?;
        sync_dir(dir)?;
        Ok(ActiveSegment {
            id,
            path,
            file,
            len: HEADER_LEN,
        })
    }

    /// Writes `frames` and makes them durable with one `fdatasync`. On
    /// failure the segment is cut back to its previous length so that
    /// nothing of the group can surface later; if even that fails the
    /// segment is unusable and the error says so.
    pub fn append_durable(&mut self, frames: &[u8]) -> Result<(), AppendFailure> {
        let before = self.len;
        let res = self
            .file
            .write_all(frames)
            .map_err(|e| StoreError::io("write segment", &self.path, e))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| StoreError::io("fdatasync segment", &self.path, e))
            });
        match res {
            Ok(()) => {
                self.len += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                let rolled_back = self
                    .file
                    .set_len(before)
                    .and_then(|()| self.file.sync_all())
                    .is_ok();
                Err(AppendFailure {
                    error: e,
                    rolled_back,
                })
            }
        }
    }
}

/// A failed durable append.
#[derive(Debug)]
pub struct AppendFailure {
    /// The cause.
    pub error: StoreError,
    /// Whether the segment was cut back to its length before the append.
    pub rolled_back: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::sample_event;
    use proptest::prelude::*;

    fn segment_bytes(n: u64) -> (Vec<u8>, Vec<Record>) {
        let records: Vec<Record> = (0..n).map(sample_event).collect();
        let mut bytes = SEGMENT_MAGIC.to_vec();
        for r in &records {
            encode_frame(r, &mut bytes);
        }
        (bytes, records)
    }

    #[test]
    fn scan_reads_every_frame() {
        let (bytes, records) = segment_bytes(20);
        let s = scan(&bytes);
        assert_eq!(s.records, records);
        assert_eq!(s.valid_len, bytes.len() as u64);
        assert!(s.damage.is_none());
    }

    #[test]
    fn torn_tail_keeps_complete_records() {
        let (bytes, records) = segment_bytes(10);
        // Frame boundaries, to know how many records each cut keeps.
        let mut ends = vec![HEADER_LEN as usize];
        let mut pos = HEADER_LEN as usize;
        while pos < bytes.len() {
            let len =
                u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
            pos += FRAME_HEADER_LEN + len as usize;
            ends.push(pos);
        }
        for cut in HEADER_LEN as usize..bytes.len() {
            let s = scan(&bytes[..cut]);
            let complete = ends.iter().filter(|&&e| e <= cut).count() - 1;
            assert_eq!(s.records, records[..complete], "cut at {cut}");
            assert_eq!(s.valid_len as usize, ends[complete]);
            assert!(frame_count(&bytes[..cut]) >= complete, "cut at {cut}");
            let r = scan_refs(&bytes[..cut]);
            let owned: Vec<Record> = r.records.iter().map(RecordRef::to_record).collect();
            assert_eq!(owned, s.records, "borrowed scan, cut at {cut}");
            assert_eq!((r.valid_len, r.damage), (s.valid_len, s.damage));
        }
    }

    #[test]
    fn frame_count_is_bounded_on_garbage() {
        let (mut bytes, _) = segment_bytes(3);
        assert_eq!(frame_count(&bytes), 3);
        // A tail of zeros (a crash artefact on some file systems) adds
        // nothing: a zero length is no frame.
        bytes.resize(bytes.len() + (1 << 20), 0);
        assert_eq!(frame_count(&bytes), 3);
        assert_eq!(scan(&bytes).records.len(), 3);
        assert_eq!(frame_count(&[0xff; 4096]), 0);
        // The smallest records count.
        let empty = crate::codec::decode(&[1, 0, 0, 0, 2, 0, 0, 0]).unwrap();
        let mut bytes = SEGMENT_MAGIC.to_vec();
        encode_frame(&empty, &mut bytes);
        encode_frame(
            &crate::codec::decode(&[2, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            &mut bytes,
        );
        assert_eq!(
            bytes.len(),
            SEGMENT_MAGIC.len() + 2 * (FRAME_HEADER_LEN + MIN_PAYLOAD)
        );
        assert_eq!(frame_count(&bytes), 2);
    }

    #[test]
    fn active_segment_appends_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = ActiveSegment::create(dir.path(), 7).unwrap();
        let (bytes, records) = segment_bytes(5);
        seg.append_durable(&bytes[HEADER_LEN as usize..]).unwrap();
        assert_eq!(seg.len, bytes.len() as u64);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![7]);
        let s = read_segment(&segment_path(dir.path(), 7)).unwrap();
        assert_eq!(s.records, records);
        // Ids are never reused: creating an existing segment fails.
        assert!(ActiveSegment::create(dir.path(), 7).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever happens to a segment's bytes — truncation, flipped
        /// bytes, garbage appended — recovery never panics and returns only
        /// records that were written, in order, as a prefix.
        #[test]
        fn recovery_returns_a_prefix_of_what_was_written(
            n in 0u64..30,
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (mut bytes, records) = segment_bytes(n);
            bytes.extend_from_slice(&garbage);
            let len = cut.index(bytes.len() + 1);
            bytes.truncate(len);
            if !bytes.is_empty() {
                for (at, x) in &flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= x;
                }
            }
            let s = scan(&bytes);
            prop_assert!(s.records.len() <= records.len());
            prop_assert_eq!(&s.records[..], &records[..s.records.len()]);
            prop_assert!(s.valid_len as usize <= bytes.len());
        }
    }
}
