//! The store's timestamps: milliseconds since the Unix epoch in the
//! database, RFC 3339 (UTC, millisecond precision) wherever they are shown.

/// Milliseconds since the Unix epoch, on the process's calendar clock
/// (simulated under `strata demo`; see strata-clock).
pub fn now_ms() -> i64 {
    strata_clock::now_ms()
}

/// RFC 3339 (UTC, millisecond precision) of a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp to milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    Some(
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()?
            .timestamp_millis(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
