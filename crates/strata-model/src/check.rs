//! Checks of the plain strings every definition has: keys and free text.

use crate::error::ModelError;

/// The longest key, in bytes.
pub const KEY_MAX_BYTES: usize = 128;

/// Checks a key: non-empty, at most [`KEY_MAX_BYTES`] bytes of `[A-Za-z0-9_.-]`.
///
/// Keys end up in URLs, SQL literals, file names and metric labels; the
/// narrow alphabet keeps them safe in all of them without quoting.
pub fn check_key(field: &str, key: &str) -> Result<(), ModelError> {
    if key.is_empty() {
        return Err(ModelError::Empty {
            field: field.to_owned(),
        });
    }
    if key.len() > KEY_MAX_BYTES {
        return Err(ModelError::TooLong {
            field: field.to_owned(),
            max: KEY_MAX_BYTES,
        });
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(ModelError::KeyCharacters {
            field: field.to_owned(),
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// Checks a free-text field's length in bytes.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), ModelError> {
    if value.len() > max {
        return Err(ModelError::TooLong {
            field: field.to_owned(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(check_key("key", "page_load.p95-v2"), Ok(()));
        assert_eq!(check_key("key", &"k".repeat(128)), Ok(()));
        let e = check_key("key", "").unwrap_err();
        assert_eq!(
            (e.field(), e.to_string().as_str()),
            ("key", "key must not be empty")
        );
        let e = check_key("key", &"k".repeat(129)).unwrap_err();
        assert_eq!(e.to_string(), "key must be at most 128 bytes");
        let e = check_key("metric", "has space").unwrap_err();
        assert_eq!(
            e.to_string(),
            "metric \"has space\" may contain only letters, digits, '_', '-' and '.'"
        );
    }

    #[test]
    fn text() {
        assert_eq!(check_text("description", "abc", 3), Ok(()));
        let e = check_text("description", "abcd", 3).unwrap_err();
        assert_eq!(e.to_string(), "description must be at most 3 bytes");
    }
}
