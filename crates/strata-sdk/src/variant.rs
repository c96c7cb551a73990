//! The answer of [`crate::Client::variant`].
//!
//! A [`Variant`] owns its text without sharing anything with the snapshot:
//! the snapshot may be swapped the next instant, and sharing an `Arc` across
//! threads would make every call bounce one reference count between cores.
//! Variant keys are short, so they are copied inline (no allocation); the
//! caller's default is borrowed.

use std::fmt;
use std::ops::Deref;

/// Bytes of a variant key stored without allocating.
const INLINE: usize = 46;

/// Why `variant` answered what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The unit is in the experiment; an exposure was logged.
    Assigned,
    /// A concluded experiment's winner, served to every targeted unit; no
    /// exposure (it is no longer an experiment).
    Rollout,
    /// The experiment exists but does not include this unit (targeting,
    /// layer range, ramp, holdout, or no unit id in the context): the default.
    NotAssigned,
    /// The experiment is paused, killed or concluded without a winner: the default.
    Disabled,
    /// No experiment has this flag or key in the current snapshot: the default.
    UnknownFlag,
    /// No snapshot has been loaded yet: the default.
    NoConfig,
    /// Evaluation failed unexpectedly (a caught panic): the default.
    Error,
    /// The context's `user_agent` is a known bot's and the experiment does
    /// not include bots: the default, and no exposure.
    Bot,
}

#[derive(Clone)]
enum Repr<'d> {
    Default(&'d str),
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<str>),
}

/// The variant to serve: deref to `&str`. Compare with a string directly
/// (`v == "treatment"`) or read [`Variant::reason`].
#[derive(Clone)]
pub struct Variant<'d> {
    repr: Repr<'d>,
    reason: Reason,
}

impl<'d> Variant<'d> {
    /// The caller's default, for `reason`.
    #[inline]
    pub(crate) fn default_for(default: &'d str, reason: Reason) -> Self {
        Self {
            repr: Repr::Default(default),
            reason,
        }
    }

    /// A variant of the snapshot, copied out of it.
    #[inline]
    pub(crate) fn served(key: &str, reason: Reason) -> Self {
        let repr = if key.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..key.len()].copy_from_slice(key.as_bytes());
            Repr::Inline {
                len: key.len() as u8,
                buf,
            }
        } else {
            Repr::Heap(key.into())
        };
        Self { repr, reason }
    }

    /// The variant key.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.repr {
            Repr::Default(s) => s,
            // The bytes were copied from a `str` at a char boundary, so this
            // never fails; the fallback only keeps the code panic-free.
            Repr::Inline { len, buf } => {
                std::str::from_utf8(buf.get(..usize::from(*len)).unwrap_or_default())
                    .unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }

    /// Why this variant.
    #[inline]
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Whether this is the caller's default rather than a variant of the
    /// snapshot.
    #[inline]
    pub fn is_default(&self) -> bool {
        matches!(self.repr, Repr::Default(_))
    }
}

impl Deref for Variant<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Variant<'_> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for Variant<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Variant<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Variant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Variant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Variant")
            .field("value", &self.as_str())
            .field("reason", &self.reason)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_inline_long_keys_on_the_heap() {
        let short = Variant::served("treatment_a", Reason::Assigned);
        assert!(matches!(short.repr, Repr::Inline { .. }));
        assert_eq!(short, "treatment_a");
        let long_key = "é".repeat(40);
        let long = Variant::served(&long_key, Reason::Assigned);
        assert!(matches!(long.repr, Repr::Heap(_)));
        assert_eq!(long.as_str(), long_key);
        let edge = "x".repeat(INLINE);
        assert_eq!(Variant::served(&edge, Reason::Rollout).as_str(), edge);
    }

    #[test]
    fn defaults_are_borrowed_and_flagged() {
        let v = Variant::default_for("control", Reason::NoConfig);
        assert!(v.is_default());
        assert_eq!(v.reason(), Reason::NoConfig);
        assert_eq!(v.to_string(), "control");
        assert!(!Variant::served("control", Reason::Assigned).is_default());
    }
}
