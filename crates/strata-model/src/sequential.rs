//! The sequential testing method an experiment pre-registers.

use serde::{Deserialize, Serialize};

/// Sequential testing of the primary metric: how often the analysis may look
/// at the data before the planned sample size without inflating the error
/// rate. The control plane records it at pre-registration; the analysis
/// applies it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequentialMethod {
    /// Fixed horizon: one look at the planned sample size.
    #[default]
    None,
    /// Lan–DeMets group-sequential looks (O'Brien–Fleming alpha spending);
    /// needs the planned sample size.
    GroupSequential,
    /// Always-valid (mSPRT) confidence sequence.
    AlwaysValid,
}

impl SequentialMethod {
    /// The name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            SequentialMethod::None => "none",
            SequentialMethod::GroupSequential => "group_sequential",
            SequentialMethod::AlwaysValid => "always_valid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_default() {
        for m in [
            SequentialMethod::None,
            SequentialMethod::GroupSequential,
            SequentialMethod::AlwaysValid,
        ] {
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(text, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<SequentialMethod>(&text).unwrap(), m);
        }
        assert_eq!(SequentialMethod::default(), SequentialMethod::None);
        assert!(serde_json::from_str::<SequentialMethod>("\"magic\"").is_err());
    }
}
