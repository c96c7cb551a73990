//! Why a definition is invalid.

/// A definition that parsed but breaks a rule of the platform vocabulary.
///
/// Every message starts with the offending field as a path relative to the
/// value validated (`filter.type`); [`ModelError::at`] prefixes the position
/// of that value in an enclosing document (`metrics[2].filter.type`).
/// Messages are lowercase, without trailing punctuation, and speak of the
/// documents' fields, never of Rust types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A string that must have content is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The field.
        field: String,
    },
    /// A string is longer than its limit.
    #[error("{field} must be at most {max} bytes")]
    TooLong {
        /// The field.
        field: String,
        /// The limit, in bytes.
        max: usize,
    },
    /// A key contains characters outside `[A-Za-z0-9_.-]`.
    #[error("{field} {key:?} may contain only letters, digits, '_', '-' and '.'")]
    KeyCharacters {
        /// The field.
        field: String,
        /// The key as given.
        key: String,
    },
    /// A key is used twice where keys are unique.
    #[error("{field}: duplicate key {key:?}")]
    DuplicateKey {
        /// The field of the second use.
        field: String,
        /// The key.
        key: String,
    },
    /// A field required in this context is absent.
    #[error("{field} is required by {by}")]
    Missing {
        /// The absent field.
        field: String,
        /// What requires it, e.g. `ratio metrics`.
        by: String,
    },
    /// A field is given where it has no meaning.
    #[error("{field} does not apply to {what}")]
    NotApplicable {
        /// The field.
        field: String,
        /// Where it does not apply, e.g. `binomial metrics`.
        what: String,
    },
    /// A number is outside its range.
    #[error("{field} must be in {range}, got {value}")]
    OutOfRange {
        /// The field.
        field: String,
        /// The allowed range, e.g. `(0, 1)`.
        range: String,
        /// The value given.
        value: f64,
    },
    /// Any other broken rule.
    #[error("{field} {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong, to be read after the field.
        reason: String,
    },
}

impl ModelError {
    /// The offending field, as a path such as `numerator.filter.type`.
    pub fn field(&self) -> &str {
        match self {
            ModelError::Empty { field }
            | ModelError::TooLong { field, .. }
            | ModelError::KeyCharacters { field, .. }
            | ModelError::DuplicateKey { field, .. }
            | ModelError::Missing { field, .. }
            | ModelError::NotApplicable { field, .. }
            | ModelError::OutOfRange { field, .. }
            | ModelError::Invalid { field, .. } => field,
        }
    }

    fn field_mut(&mut self) -> &mut String {
        match self {
            ModelError::Empty { field }
            | ModelError::TooLong { field, .. }
            | ModelError::KeyCharacters { field, .. }
            | ModelError::DuplicateKey { field, .. }
            | ModelError::Missing { field, .. }
            | ModelError::NotApplicable { field, .. }
            | ModelError::OutOfRange { field, .. }
            | ModelError::Invalid { field, .. } => field,
        }
    }

    /// The same error with its field placed under `prefix`: a field
    /// `filter.type` at `metrics[2]` becomes `metrics[2].filter.type`.
    pub fn at(mut self, prefix: &str) -> Self {
        let field = self.field_mut();
        *field = if field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{field}")
        };
        self
    }

    /// The message without its leading field, for callers that show the
    /// field separately (`must not be empty`).
    pub fn reason(&self) -> String {
        let message = self.to_string();
        match message.strip_prefix(self.field()) {
            Some(rest) => rest.trim_start_matches([':', ' ']).to_owned(),
            None => message,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixing_keeps_the_message_and_reason_drops_the_field() {
        let e = ModelError::Empty {
            field: "filter.type".into(),
        }
        .at("metrics[2]");
        assert_eq!(e.field(), "metrics[2].filter.type");
        assert_eq!(e.to_string(), "metrics[2].filter.type must not be empty");
        assert_eq!(e.reason(), "must not be empty");
        let d = ModelError::DuplicateKey {
            field: "key".into(),
            key: "c".into(),
        };
        assert_eq!(d.reason(), "duplicate key \"c\"");
    }
}
