//! The bucketing hash: MurmurHash3 x86 32-bit over `unit_id ++ ":" ++ salt`.
//!
//! Every implementation of Strata (this crate, SDKs in other languages, the
//! server) must produce the same bucket for the same bytes, forever: a change
//! here silently reshuffles every running experiment. The constants below are
//! therefore part of the assignment spec (`docs/assignment-spec.md`) and are
//! frozen by known-answer tests.
//!
//! The hasher is streaming so that the evaluator can hash a unit id once per
//! request ([`UnitHasher::new`]) and then finish it with each experiment's
//! precomputed `":" ++ salt` bytes ([`UnitHasher::bucket`]) without copying
//! or rehashing the unit id.

/// Murmur3 seed. Zero, as in the reference implementation's default.
pub const SEED: u32 = 0;

/// The byte placed between the unit id and the salt.
pub const SEPARATOR: u8 = b':';

/// Number of buckets: 1000 gives 0.1 % granularity for ramps, layer ranges and
/// variant weights.
pub const BUCKETS: u32 = 1000;

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
/// `UnitHasher::new(unit).bucket(&salt_suffix(salt))` equals
/// [`bucket`]`(unit, salt)`; the point is that the unit id is consumed once per
/// request, however many experiments are evaluated.
#[derive(Clone, Copy, Debug)]
pub struct UnitHasher {
    state: Murmur3,
}

impl UnitHasher {
    /// Hashes the whole 4-byte blocks of `unit_id` and keeps its tail.
    #[inline]
    pub fn new(unit_id: &str) -> Self {
        let mut state = Murmur3 {
            h1: SEED,
            tail: [0; 4],
            tail_len: 0,
            len: 0,
        };
        state.write(unit_id.as_bytes());
        Self { state }
    }

    /// The 32-bit hash of `unit_id ++ suffix`, where `suffix` is a precomputed
    /// [`salt_suffix`].
    #[inline]
    pub fn hash(&self, suffix: &[u8]) -> u32 {
        let mut state = self.state;
        state.write(suffix);
        state.finish()
    }

    /// The bucket (`0..1000`) of `unit_id ++ suffix`.
    #[inline]
    pub fn bucket(&self, suffix: &[u8]) -> u16 {
        (self.hash(suffix) % BUCKETS) as u16
    }
}

/// The bytes hashed after the unit id for `salt`: `":" ++ salt`.
pub fn salt_suffix(salt: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(salt.len() + 1);
    out.push(SEPARATOR);
    out.extend_from_slice(salt.as_bytes());
    out
}

/// The 32-bit hash of `utf8(unit_id) ++ ":" ++ utf8(salt)`.
pub fn hash(unit_id: &str, salt: &str) -> u32 {
    UnitHasher::new(unit_id).hash(&salt_suffix(salt))
}

/// `hash(unit_id, salt) % 1000`: the bucket a unit falls into for a salt.
pub fn bucket(unit_id: &str, salt: &str) -> u16 {
    (hash(unit_id, salt) % BUCKETS) as u16
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
