//! The bucketing hash: MurmurHash3 x86 32-bit over `unit_id ++ ":" ++ salt`.
//!
//! Every implementation of Strata (this crate, SDKs in other languages, the
//! server) must produce the same bucket for the same bytes, forever: a change
//! here silently reshuffles every running experiment. The constants below are
//! therefore part of the assignment spec (`docs/assignment-spec.md`) and are
//! frozen by known-answer tests.
//!
//! The evaluator hashes a unit id's whole blocks once per request
//! ([`UnitHasher::new`]) and finishes the hash with each experiment's
//! [`SaltKey`]: the `":" ++ salt` bytes pre-split into murmur3 blocks when the
//! snapshot is compiled ([`UnitHasher::bucket`]).

/// Murmur3 seed. Zero, as in the reference implementation's default.
pub const SEED: u32 = 0;

/// The byte placed between the unit id and the salt.
pub const SEPARATOR: u8 = b':';

/// Number of buckets: 1000 gives 0.1 % granularity for ramps, layer ranges and
/// variant weights. A bucket is in `0..BUCKETS`, and a layer's experiments own
/// half-open ranges of `0..BUCKETS`. A `u16`, like the buckets, ranges and
/// permilles it bounds, so that callers compare without casts.
pub const BUCKETS: u16 = 1000;

/// Appended to an experiment's salt to derive its ramp salt, so that the ramp
/// bucket is independent of the variant bucket.
pub const RAMP_SUFFIX: &str = ":ramp";

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix_k1(mut k1: u32) -> u32 {
    k1 = k1.wrapping_mul(C1);
    k1 = k1.rotate_left(15);
    k1.wrapping_mul(C2)
}

#[inline(always)]
fn mix_h1(mut h1: u32, k1: u32) -> u32 {
    h1 ^= mix_k1(k1);
    h1 = h1.rotate_left(13);
    h1.wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// MurmurHash3 x86 32-bit of `data` with `seed`.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    let mut state = Murmur3 {
        h1: seed,
        tail: [0; 4],
        tail_len: 0,
        len: 0,
    };
    state.write(data);
    state.finish()
}

/// Incremental MurmurHash3 x86 32-bit state. Cheap to copy, so a prefix can be
/// hashed once and finished with many different suffixes.
#[derive(Clone, Copy, Debug)]
struct Murmur3 {
    h1: u32,
    tail: [u8; 4],
    tail_len: usize,
    len: usize,
}

impl Murmur3 {
    #[inline]
    fn write(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len());
        if self.tail_len > 0 {
            while self.tail_len < 4 {
                let Some((&b, rest)) = data.split_first() else {
                    return;
                };
                self.tail[self.tail_len] = b;
                self.tail_len += 1;
                data = rest;
            }
            self.h1 = mix_h1(self.h1, u32::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut blocks = data.chunks_exact(4);
        for block in &mut blocks {
            let k1 = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
            self.h1 = mix_h1(self.h1, k1);
        }
        let rest = blocks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    #[inline]
    fn finish(self) -> u32 {
        let mut h1 = self.h1;
        if self.tail_len > 0 {
            let mut k1 = 0u32;
            for (i, &b) in self.tail[..self.tail_len].iter().enumerate() {
                k1 ^= u32::from(b) << (8 * i);
            }
            h1 ^= mix_k1(k1);
        }
        // The reference algorithm mixes in the length as a 32-bit value.
        h1 ^= self.len as u32;
        fmix32(h1)
    }
}

/// The hash state of one unit id, ready to be finished with any salt.
///
/// `UnitHasher::new(unit).bucket(&SaltKey::new(salt))` equals
/// [`bucket`]`(unit, salt)`; the point is that the unit id is consumed once per
/// request, however many experiments are evaluated.
#[derive(Clone, Copy, Debug)]
pub struct UnitHasher {
    /// State after the unit id's whole 4-byte blocks.
    h1: u32,
    /// The unit id's last `len % 4` bytes, packed little-endian.
    tail: u32,
    len: usize,
}

impl UnitHasher {
    /// Hashes the whole 4-byte blocks of `unit_id` and keeps its tail.
    #[inline]
    pub fn new(unit_id: &str) -> Self {
        let bytes = unit_id.as_bytes();
        let mut h1 = SEED;
        let mut blocks = bytes.chunks_exact(4);
        for block in &mut blocks {
            h1 = mix_h1(
                h1,
                u32::from_le_bytes([block[0], block[1], block[2], block[3]]),
            );
        }
        Self {
            h1,
            tail: pack(blocks.remainder()),
            len: bytes.len(),
        }
    }

    /// The 32-bit hash of `unit_id ++ ":" ++ salt` for a precomputed [`SaltKey`].
    #[inline]
    pub fn hash(&self, key: &SaltKey) -> u32 {
        let shift = self.len & 3;
        let plan = &key.plans[shift];
        let mut h1 = self.h1;
        let last = if plan.fills_block {
            // Complete the unit's partial block with the salt's first bytes.
            h1 = mix_h1(h1, self.tail | (plan.lead << (8 * shift)));
            plan.last
        } else {
            self.tail | (plan.lead << (8 * shift)) | plan.last
        };
        for &word in &plan.words {
            h1 = mix_h1(h1, word);
        }
        // mix_k1(0) == 0, so an absent tail needs no special case.
        h1 ^= mix_k1(last);
        // The reference algorithm mixes in the length as a 32-bit value.
        h1 ^= self.len.wrapping_add(key.len) as u32;
        fmix32(h1)
    }

    /// The bucket (`0..1000`) of `unit_id ++ ":" ++ salt`.
    #[inline]
    pub fn bucket(&self, key: &SaltKey) -> u16 {
        (self.hash(key) % u32::from(BUCKETS)) as u16
    }
}

/// Packs up to 4 bytes little-endian, as murmur3 reads its blocks and tail.
fn pack(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &b)| acc | u32::from(b) << (8 * i))
}

/// The bytes `":" ++ salt`, pre-split into murmur3 blocks for each of the
/// four alignments a unit id can leave, so that finishing a unit's hash with
/// a salt is a handful of block mixes and no byte shuffling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaltKey {
    len: usize,
    plans: [Plan; 4],
}

/// How to hash the suffix after a unit id that left `shift` tail bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Plan {
    /// The suffix bytes that complete the unit's partial block, packed.
    lead: u32,
    /// Whether `lead` completes a block (false when `shift` is 0, or when the
    /// suffix is too short, in which case `lead` is all of it and `words` is
    /// empty).
    fills_block: bool,
    /// Whole blocks after the lead.
    words: Vec<u32>,
    /// The final partial block after `words`, packed (0 if none).
    last: u32,
}

impl SaltKey {
    /// Precomputes the hashing plan of `":" ++ salt`.
    pub fn new(salt: &str) -> Self {
        Self::from_suffix(&[&[SEPARATOR], salt.as_bytes()].concat())
    }

    fn from_suffix(suffix: &[u8]) -> Self {
        let plans = [0usize, 1, 2, 3].map(|shift| {
            let need = if shift == 0 { 0 } else { 4 - shift };
            if suffix.len() < need {
                return Plan {
                    lead: pack(suffix),
                    ..Plan::default()
                };
            }
            let (lead, rest) = suffix.split_at(need);
            let mut blocks = rest.chunks_exact(4);
            let words = (&mut blocks).map(pack).collect();
            Plan {
                lead: pack(lead),
                fills_block: need > 0,
                words,
                last: pack(blocks.remainder()),
            }
        });
        Self {
            len: suffix.len(),
            plans,
        }
    }
}

/// The 32-bit hash of `utf8(unit_id) ++ ":" ++ utf8(salt)`.
pub fn hash(unit_id: &str, salt: &str) -> u32 {
    let bytes = [unit_id.as_bytes(), &[SEPARATOR], salt.as_bytes()].concat();
    murmur3_x86_32(&bytes, SEED)
}

/// `hash(unit_id, salt) % 1000`: the bucket a unit falls into for a salt.
pub fn bucket(unit_id: &str, salt: &str) -> u16 {
    (hash(unit_id, salt) % u32::from(BUCKETS)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published vectors of the reference implementation (SMHasher's
    /// `MurmurHash3_x86_32`), as reproduced by most ports.
    #[test]
    fn reference_vectors() {
        let cases: &[(&[u8], u32, u32)] = &[
            (b"", 0, 0),
            (b"", 1, 0x514e_28b7),
            (b"", 0xffff_ffff, 0x81f1_6f39),
            (b"\xff\xff\xff\xff", 0, 0x7629_3b50),
            (b"\x21\x43\x65\x87", 0, 0xf55b_516b),
            (b"\x21\x43\x65\x87", 0x5082_edee, 0x2362_f9de),
            (b"\x21\x43\x65", 0, 0x7e4a_8634),
            (b"\x21\x43", 0, 0xa0f7_b07a),
            (b"\x21", 0, 0x7266_1cf4),
            (b"\x00\x00\x00\x00", 0, 0x2362_f9de),
            (b"\x00\x00\x00", 0, 0x85f0_b427),
            (b"\x00\x00", 0, 0x30f4_c306),
            (b"\x00", 0, 0x514e_28b7),
            (b"Hello, world!", 1234, 0xfaf6_cdb3),
            (
                b"The quick brown fox jumps over the lazy dog",
                0,
                0x2e4f_f723,
            ),
        ];
        for &(data, seed, want) in cases {
            assert_eq!(
                murmur3_x86_32(data, seed),
                want,
                "data {data:?} seed {seed}"
            );
        }
    }

    #[test]
    fn streaming_matches_one_shot_for_every_split() {
        let data = "añb€c😀d:e:f\u{0301}שלום".as_bytes();
        let whole = murmur3_x86_32(data, SEED);
        for split in 0..=data.len() {
            let mut state = Murmur3 {
                h1: SEED,
                tail: [0; 4],
                tail_len: 0,
                len: 0,
            };
            state.write(&data[..split]);
            for chunk in data[split..].chunks(3) {
                state.write(chunk);
            }
            assert_eq!(state.finish(), whole, "split at {split}");
        }
    }

    #[test]
    fn unit_hasher_matches_concatenation() {
        for unit in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "user:42",
            "日本語",
            "🦀🦀",
        ] {
            for salt in ["", "s", "a7f3b2c1", "salt:ramp"] {
                let bytes = [unit.as_bytes(), b":", salt.as_bytes()].concat();
                assert_eq!(hash(unit, salt), murmur3_x86_32(&bytes, SEED));
                assert_eq!(
                    u32::from(bucket(unit, salt)),
                    murmur3_x86_32(&bytes, SEED) % 1000
                );
            }
        }
    }
}
