//! Pieces of the Prometheus text exposition format that every service of the
//! process writes the same way: latency histograms and label escaping.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A latency histogram with fixed upper bounds, updated lock-free on the
/// request path and rendered as cumulative `_bucket`, `_sum` and `_count`
/// series.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (upper bounds in seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        // `as` saturates: a negative or NaN duration counts as zero.
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the series of metric `name`; `labels` are the series' own
    /// labels already formatted (`method="GET",route="/x"`), or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, le) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        if labels.is_empty() {
            let _ = writeln!(out, "{name}_sum {sum}");
            let _ = writeln!(out, "{name}_count {count}");
        } else {
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
    }
}

/// Escapes a label value (backslash, double quote and newline), as the text
/// format requires; values such as experiment keys come from clients.
pub fn escape_label(s: &str) -> Cow<'_, str> {
    if !s.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];

    #[test]
    fn buckets_are_cumulative_and_the_overflow_counts_only_in_inf() {
        let h = Histogram::new(&BOUNDS);
        h.observe(0.0005);
        h.observe(0.005);
        h.observe(0.005);
        h.observe(3.0);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "route=\"/a\"");
        let expected = "\
x_seconds_bucket{route=\"/a\",le=\"0.001\"} 1
x_seconds_bucket{route=\"/a\",le=\"0.01\"} 3
x_seconds_bucket{route=\"/a\",le=\"0.1\"} 3
x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4
x_seconds_sum{route=\"/a\"} 3.0105
x_seconds_count{route=\"/a\"} 4
";
        assert_eq!(out, expected);
    }

    #[test]
    fn a_histogram_without_labels_renders_bare_series() {
        let h = Histogram::new(&BOUNDS);
        h.observe(0.05);
        let mut out = String::new();
        h.render(&mut out, "y", "");
        assert!(out.contains("y_bucket{le=\"0.01\"} 0\n"), "{out}");
        assert!(out.contains("y_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("y_count 1\n"), "{out}");
        assert!(out.contains("y_sum 0.05\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("plain"), "plain");
    }
}
