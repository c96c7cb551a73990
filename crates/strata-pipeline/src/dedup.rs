//! Deduplication state: which records are already durable.
//!
//! A record's key is a 128-bit XXH3 hash of its identity — an event's
//! `event_id`; an exposure's (unit, experiment, UTC day of `ts`); an
//! alias's (anonymous id, user id) — with a different seed per kind so the
//! key spaces never meet. At 128 bits
//! the chance that two distinct keys collide among 10¹² is about 10⁻¹⁵, so a
//! hash stands for its key.
//!
//! The index maps a key to the UTC day its record was received
//! (`received_at`); a key is forgotten once that day is older than the
//! window (default 7 days), so memory is bounded by the keys received within
//! the window. Each entry costs 24 bytes (16 of hash, 4 of day, padding)
//! plus one control byte of the hash table, at a load factor between 7/16
//! and 7/8: **29 to 57 bytes per key**, about 45 MB per million keys at worst.
//!
//! Crash consistency: only the single log writer reads and updates the
//! index, and only after the group's `fdatasync` succeeded, so a key is
//! present exactly when its record is durable. At start-up the index is
//! rebuilt from the un-compacted segments plus the key files written by
//! compaction (`dedup/<first>-<last>.keys`, one per compacted segment range,
//! written atomically before the segments are deleted).

use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::error::{Result, StoreError};
use crate::log::sync_dir;
use crate::record::{utc_day, Record, RecordRef};

/// Seed of event keys (`event_id`): ASCII "STRATA-E".
pub const EVENT_KEY_SEED: u64 = 0x5354_5241_5441_2d45;
/// Seed of exposure keys (unit, experiment, day): ASCII "STRATA-X".
pub const EXPOSURE_KEY_SEED: u64 = 0x5354_5241_5441_2d58;
/// Seed of alias keys (anonymous id, user id): ASCII "STRATA-A".
pub const ALIAS_KEY_SEED: u64 = 0x5354_5241_5441_2d41;

/// A record's deduplication key (a 128-bit hash of its identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(pub u64, pub u64);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The key is already a uniform hash: feed one word through.
        state.write_u64(self.0);
    }
}

/// A pass-through hasher for [`Key`]s.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The identity of an exposure for deduplication: its unit, experiment and
/// UTC day of `ts`. Length prefixes keep ("ab", "c") and ("a", "bc") apart,
/// so no id can forge a separator.
pub fn exposure_key_bytes(unit_id: &str, experiment: &str, ts: i64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(unit_id.len() + experiment.len() + 24);
    for field in [unit_id.as_bytes(), experiment.as_bytes()] {
        buf.extend_from_slice(&(field.len() as u64).to_le_bytes());
        buf.extend_from_slice(field);
    }
    buf.extend_from_slice(&utc_day(ts).to_le_bytes());
    buf
}

/// The identity of an alias for deduplication: the pair of ids, whatever
/// its time (the analysis reads the earliest alias of an anonymous id, so
/// a repeat adds nothing). Length-prefixed as [`exposure_key_bytes`].
pub fn alias_key_bytes(anonymous_id: &str, user_id: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(anonymous_id.len() + user_id.len() + 16);
    for field in [anonymous_id.as_bytes(), user_id.as_bytes()] {
        buf.extend_from_slice(&(field.len() as u64).to_le_bytes());
        buf.extend_from_slice(field);
    }
    buf
}

/// The key of `record` and the UTC day it was received.
pub fn key_of(record: &Record) -> (Key, i32) {
    key_of_ref(&record.view())
}

/// [`key_of`] a borrowed record.
pub fn key_of_ref(record: &RecordRef<'_>) -> (Key, i32) {
    let h = match record {
        RecordRef::Event(e) => xxh3_128_with_seed(e.event_id.as_bytes(), EVENT_KEY_SEED),
        RecordRef::Exposure(x) => xxh3_128_with_seed(
            &exposure_key_bytes(x.unit_id, x.experiment, x.ts),
            EXPOSURE_KEY_SEED,
        ),
        RecordRef::Alias(a) => {
            xxh3_128_with_seed(&alias_key_bytes(a.anonymous_id, a.user_id), ALIAS_KEY_SEED)
        }
    };
    (Key((h >> 64) as u64, h as u64), day32(record.received_at()))
}

fn day32(micros: i64) -> i32 {
    utc_day(micros).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Shards of the [`Index`]. A hash table grows by moving every entry into a
/// table twice the size, whose fresh pages the kernel must fault in and
/// zero; on the virtual machines measured that costs about 40 ms per 100,000
/// keys, a pause of the single log writer that every acknowledgement waits
/// for. With 1,024 shards grown one at a time by [`Index::grow_ahead`], a
/// growth moves 1/1,024 of the keys (a few milliseconds at 20 million).
const INDEX_SHARDS: usize = 1024;

/// Shards [`Index::grow_ahead`] looks at per call: every shard is looked at
/// every 64 group commits, well before it fills from one threshold to the
/// next.
const GROW_CHECKS: usize = 16;

/// The set of durable keys within the window.
#[derive(Debug)]
pub struct Index {
    shards: Vec<HashMap<Key, i32, BuildHasherDefault<KeyHasher>>>,
    /// The shard [`Index::grow_ahead`] looks at next.
    next: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..INDEX_SHARDS).map(|_| HashMap::default()).collect(),
            next: 0,
        }
    }
}

impl Index {
    /// The shard of `key`: top bits of the word the table does not hash.
    fn shard(key: &Key) -> usize {
        (key.1 >> (64 - INDEX_SHARDS.trailing_zeros())) as usize
    }

    /// Whether `key` is durable.
    pub fn contains(&self, key: &Key) -> bool {
        self.shards[Self::shard(key)].contains_key(key)
    }

    /// Records `key` as durable, received on `day` (the latest day wins).
    pub fn insert(&mut self, key: Key, day: i32) {
        let d = self.shards[Self::shard(&key)].entry(key).or_insert(day);
        *d = (*d).max(day);
    }

    /// Looks at the next `GROW_CHECKS` shards (in turn) and doubles the
    /// first that is fuller than its own threshold. Uniform keys fill every
    /// shard at the same pace, so left alone all of them would grow within a
    /// few commits of each other; the thresholds are spread from 40 % to
    /// 85 % (below the table's own 7/8) so that the growths spread over
    /// most of the time between doublings, at most one per call. Called once
    /// per group commit.
    pub fn grow_ahead(&mut self) {
        for _ in 0..GROW_CHECKS {
            let shard = self.next;
            self.next = (shard + 1) % INDEX_SHARDS;
            let map = &mut self.shards[shard];
            let threshold_permille = 400 + 450 * shard / INDEX_SHARDS;
            if map.len() * 1000 > map.capacity() * threshold_permille {
                // One more than the capacity: the next size up, twice this.
                map.reserve(map.capacity() - map.len() + 1);
                return;
            }
        }
    }

    /// Forgets keys received before `first_day`.
    pub fn expire(&mut self, first_day: i32) {
        for map in &mut self.shards {
            map.retain(|_, d| *d >= first_day);
            map.shrink_to_fit();
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    /// The most keys one shard holds.
    #[cfg(test)]
    fn largest_shard(&self) -> usize {
        self.shards.iter().map(HashMap::len).max().unwrap_or(0)
    }

    /// Approximate bytes held (entries and control bytes of the table).
    pub fn memory_bytes(&self) -> usize {
        // hashbrown keeps its buckets at most 7/8 full.
        let capacity: usize = self.shards.iter().map(HashMap::capacity).sum();
        capacity * 8 / 7 * (std::mem::size_of::<(Key, i32)>() + 1)
    }
}

const KEYS_MAGIC: &[u8; 8] = b"STRKEYS1";
const KEY_ENTRY_LEN: usize = 20;

/// The key file of the compacted segment range `first..=last`.
pub fn keys_path(dir: &Path, first: u64, last: u64) -> PathBuf {
    dir.join(format!("{first:020}-{last:020}.keys"))
}

/// The segment ranges that have a key file in `dir`, ascending.
pub fn list_key_files(dir: &Path) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("list dedup directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("list dedup directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((a, b)) = name.strip_suffix(".keys").and_then(|s| s.split_once('-')) {
            if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                out.push((a, b));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes the key file of a compacted range atomically (temporary file,
/// fsync, rename, fsync of the directory). Its presence commits the
/// compaction of `first..=last`.
pub fn write_key_file(dir: &Path, first: u64, last: u64, keys: &[(Key, i32)]) -> Result<()> {
    let path = keys_path(dir, first, last);
    let tmp = dir.join(format!(".{first:020}-{last:020}.keys.tmp"));
    let mut body = Vec::with_capacity(KEYS_MAGIC.len() + 12 + keys.len() * KEY_ENTRY_LEN);
    body.extend_from_slice(KEYS_MAGIC);
    body.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    let start = body.len();
    for (k, d) in keys {
        body.extend_from_slice(&k.0.to_le_bytes());
        body.extend_from_slice(&k.1.to_le_bytes());
        body.extend_from_slice(&d.to_le_bytes());
    }
    let crc = crc32fast::hash(&body[start..]);
    body.extend_from_slice(&crc.to_le_bytes());
    let mut f = fs::File::create(&tmp).map_err(|e| StoreError::io("create key file", &tmp, e))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .map_err(|e| StoreError::io("write key file", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename key file", &path, e))?;
    sync_dir(dir)
}

/// Reads a key file written by [`write_key_file`].
pub fn read_key_file(path: &Path) -> Result<Vec<(Key, i32)>> {
    let bytes = fs::read(path).map_err(|e| StoreError::io("read key file", path, e))?;
    let corrupt = |reason: &str| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < KEYS_MAGIC.len() + 12 || &bytes[..KEYS_MAGIC.len()] != KEYS_MAGIC {
        return Err(corrupt("bad key file header"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[8..16]);
    let n = u64::from_le_bytes(n) as usize;
    let body_len = n
        .checked_mul(KEY_ENTRY_LEN)
        .filter(|&l| l + 20 == bytes.len())
        .ok_or_else(|| corrupt("key count does not match the file length"))?;
    let body = &bytes[16..16 + body_len];
    let mut c = [0u8; 4];
    c.copy_from_slice(&bytes[16 + body_len..]);
    if crc32fast::hash(body) != u32::from_le_bytes(c) {
        return Err(corrupt("key file checksum mismatch"));
    }
    Ok(body
        .chunks_exact(KEY_ENTRY_LEN)
        .map(|e| {
            let w = |r: std::ops::Range<usize>| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&e[r]);
                u64::from_le_bytes(a)
            };
            let mut d = [0u8; 4];
            d.copy_from_slice(&e[16..20]);
            (Key(w(0..8), w(8..16)), i32::from_le_bytes(d))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Exposure, MICROS_PER_DAY};
    use std::collections::BTreeMap;

    fn exposure(unit: &str, exp: &str, ts: i64) -> Record {
        Record::Exposure(Exposure {
            unit_id: unit.into(),
            experiment: exp.into(),
            variant: "a".into(),
            assigned_variant: "a".into(),
            opted_out: false,
            ts,
            received_at: ts,
            attributes: BTreeMap::new(),
            is_bot: false,
        })
    }

    #[test]
    fn exposure_key_is_unit_experiment_and_day() {
        let day = 20_000 * MICROS_PER_DAY;
        let k = |u, e, t| key_of(&exposure(u, e, t)).0;
        assert_eq!(k("u", "e", day), k("u", "e", day + 3_600_000_000));
        assert_ne!(k("u", "e", day), k("u", "e", day + MICROS_PER_DAY));
        assert_ne!(k("ab", "c", day), k("a", "bc", day));
        assert_ne!(k("u", "e", day), k("u", "f", day));
    }

    #[test]
    fn index_expires_by_received_day() {
        let mut idx = Index::default();
        idx.insert(Key(1, 1), 10);
        idx.insert(Key(2, 2), 12);
        idx.expire(11);
        assert!(!idx.contains(&Key(1, 1)));
        assert!(idx.contains(&Key(2, 2)));
        assert_eq!(std::mem::size_of::<(Key, i32)>(), 24);
    }

    #[test]
    fn sharded_index_is_one_set_spread_evenly() {
        let mut idx = Index::default();
        let keys: Vec<Key> = (0..256_000u64)
            .map(|i| {
                let h = xxh3_128_with_seed(&i.to_le_bytes(), EVENT_KEY_SEED);
                Key((h >> 64) as u64, h as u64)
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            idx.insert(*k, (i % 3) as i32);
        }
        idx.insert(keys[0], 5);
        for _ in 0..INDEX_SHARDS * INDEX_SHARDS {
            idx.grow_ahead();
        }
        // Grown ahead: every shard is at most 85 % full, the first at most
        // 40 %.
        assert!(idx
            .shards
            .iter()
            .all(|m| m.len() * 100 <= m.capacity() * 85));
        assert!(idx.shards[0].len() * 100 <= idx.shards[0].capacity() * 40);
        assert_eq!(idx.len(), keys.len());
        assert!(keys.iter().all(|k| idx.contains(k)));
        assert!(!idx.contains(&Key(7, 7)));
        // 250 keys per shard on average; uniform hashes keep each within
        // about ±30 % (seven standard deviations are ±44 %).
        assert!(idx.largest_shard() < 360, "{}", idx.largest_shard());
        idx.expire(1);
        assert!(idx.contains(&keys[0]), "the latest day of a key wins");
        assert_eq!(idx.len(), keys.len() - keys.len().div_ceil(3) + 1);
    }

    #[test]
    fn key_files_round_trip_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![(Key(1, 2), 3), (Key(u64::MAX, 0), -1)];
        write_key_file(dir.path(), 4, 9, &keys).unwrap();
        assert_eq!(list_key_files(dir.path()).unwrap(), vec![(4, 9)]);
        let p = keys_path(dir.path(), 4, 9);
        assert_eq!(read_key_file(&p).unwrap(), keys);
        let mut bytes = fs::read(&p).unwrap();
        bytes[20] ^= 1;
        fs::write(&p, &bytes).unwrap();
        assert!(matches!(read_key_file(&p), Err(StoreError::Corrupt { .. })));
        fs::write(&p, &bytes[..30]).unwrap();
        assert!(read_key_file(&p).is_err());
    }
}
