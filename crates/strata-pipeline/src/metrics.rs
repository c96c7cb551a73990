//! Ingestion metrics in the Prometheus text format.
//!
//! Counters are atomics updated on the request path; the per-variant
//! exposure counts, which let an operator watch each variant's traffic
//! split live (an early sign of sample-ratio mismatch before the analysis
//! tests it), are kept per (experiment, variant) with a cap on
//! the number of series so a client sending random experiment keys cannot
//! grow `/metrics` without bound.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use strata_http::prometheus::{escape_label, Histogram};

use crate::record::Kind;
use crate::Pressure;

/// Upper bounds (seconds) of the ingest latency histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Why a whole request was refused, for the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// 401/403.
    Auth,
    /// 413.
    TooLarge,
    /// 400/415: malformed body.
    Malformed,
    /// 429 for the key.
    KeyRateLimit,
    /// 429 for the source IP.
    IpRateLimit,
    /// 503: backpressure or sink unavailable.
    Overloaded,
    /// 500: the sink failed.
    SinkError,
    /// 422: an all-or-nothing batch had rejected records.
    AllOrNothing,
}

impl RefusalReason {
    const ALL: [RefusalReason; 8] = [
        RefusalReason::Auth,
        RefusalReason::TooLarge,
        RefusalReason::Malformed,
        RefusalReason::KeyRateLimit,
        RefusalReason::IpRateLimit,
        RefusalReason::Overloaded,
        RefusalReason::SinkError,
        RefusalReason::AllOrNothing,
    ];

    fn label(self) -> &'static str {
        match self {
            RefusalReason::Auth => "auth",
            RefusalReason::TooLarge => "too_large",
            RefusalReason::Malformed => "malformed",
            RefusalReason::KeyRateLimit => "key_rate_limit",
            RefusalReason::IpRateLimit => "ip_rate_limit",
            RefusalReason::Overloaded => "overloaded",
            RefusalReason::SinkError => "sink_error",
            RefusalReason::AllOrNothing => "all_or_nothing",
        }
    }
}

#[derive(Default)]
struct PerKind {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected_invalid: AtomicU64,
    rejected_unit_rate: AtomicU64,
    shed: AtomicU64,
    batches: AtomicU64,
}

#[derive(Default)]
struct VariantCounts {
    by_experiment: HashMap<String, HashMap<String, u64>>,
    series: usize,
}

/// The ingestion counters.
pub struct IngestMetrics {
    events: PerKind,
    exposures: PerKind,
    aliases: PerKind,
    refused: [AtomicU64; RefusalReason::ALL.len()],
    latency: Histogram,
    variants: Mutex<VariantCounts>,
    max_variant_series: usize,
    variants_dropped: AtomicU64,
}

impl std::fmt::Debug for IngestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestMetrics").finish_non_exhaustive()
    }
}

impl IngestMetrics {
    /// Empty counters keeping at most `max_variant_series` (experiment,
    /// variant) exposure series.
    pub fn new(max_variant_series: usize) -> Self {
        Self {
            events: PerKind::default(),
            exposures: PerKind::default(),
            aliases: PerKind::default(),
            refused: Default::default(),
            latency: Histogram::new(&LATENCY_BUCKETS),
            variants: Mutex::new(VariantCounts::default()),
            max_variant_series,
            variants_dropped: AtomicU64::new(0),
        }
    }

    fn kind(&self, kind: Kind) -> &PerKind {
        match kind {
            Kind::Event => &self.events,
            Kind::Exposure => &self.exposures,
            Kind::Alias => &self.aliases,
        }
    }

    /// Counts one answered batch of `kind`.
    pub fn batch(
        &self,
        kind: Kind,
        accepted: u64,
        duplicates: u64,
        invalid: u64,
        unit_rate: u64,
        shed: u64,
    ) {
        let k = self.kind(kind);
        k.batches.fetch_add(1, Ordering::Relaxed);
        k.accepted.fetch_add(accepted, Ordering::Relaxed);
        k.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        k.rejected_invalid.fetch_add(invalid, Ordering::Relaxed);
        k.rejected_unit_rate.fetch_add(unit_rate, Ordering::Relaxed);
        k.shed.fetch_add(shed, Ordering::Relaxed);
    }

    /// Counts a refused request.
    pub fn refused(&self, reason: RefusalReason) {
        let i = RefusalReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the latency of one request, from arrival to answer.
    pub fn observe_latency(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    /// Counts accepted (not duplicate) exposures per (experiment, variant).
    pub fn exposures<'a>(&self, accepted: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut map = self
            .variants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (experiment, variant) in accepted {
            // Nested maps so the common case (a known series) is looked up by
            // reference and allocates nothing.
            if let Some(n) = map
                .by_experiment
                .get_mut(experiment)
                .and_then(|v| v.get_mut(variant))
            {
                *n += 1;
            } else if map.series < self.max_variant_series {
                map.series += 1;
                map.by_experiment
                    .entry(experiment.to_owned())
                    .or_default()
                    .insert(variant.to_owned(), 1);
            } else {
                self.variants_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends the metrics, and the sink's `pressure`, as Prometheus text.
    pub fn render(&self, out: &mut String, pressure: Option<Pressure>) {
        let kinds = [Kind::Event, Kind::Exposure, Kind::Alias].map(|k| (k, k.dir_name()));
        let counter = |out: &mut String, name: &str, help: &str, get: &dyn Fn(&PerKind) -> u64| {
            let _ = writeln!(out, "# HELP strata_pipeline_{name} {help}");
            let _ = writeln!(out, "# TYPE strata_pipeline_{name} counter");
            for (kind, label) in kinds {
                let _ = writeln!(
                    out,
                    "strata_pipeline_{name}{{kind=\"{label}\"}} {}",
                    get(self.kind(kind))
                );
            }
        };
        counter(
            out,
            "records_accepted_total",
            "Records stored durably.",
            &|k| k.accepted.load(Ordering::Relaxed),
        );
        counter(
            out,
            "records_duplicate_total",
            "Records already stored (same event_id, or same unit, experiment and day).",
            &|k| k.duplicates.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP strata_pipeline_records_rejected_total Records refused one by one, by reason."
        );
        let _ = writeln!(out, "# TYPE strata_pipeline_records_rejected_total counter");
        for (kind, label) in kinds {
            let k = self.kind(kind);
            for (reason, v) in [
                ("invalid", &k.rejected_invalid),
                ("unit_rate_limit", &k.rejected_unit_rate),
                ("shed", &k.shed),
            ] {
                let _ = writeln!(
                    out,
                    "strata_pipeline_records_rejected_total{{kind=\"{label}\",reason=\"{reason}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        counter(out, "batches_total", "Batches answered with 200.", &|k| {
            k.batches.load(Ordering::Relaxed)
        });
        let _ = writeln!(
            out,
            "# HELP strata_pipeline_requests_refused_total Requests refused whole, by reason."
        );
        let _ = writeln!(out, "# TYPE strata_pipeline_requests_refused_total counter");
        for (i, r) in RefusalReason::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "strata_pipeline_requests_refused_total{{reason=\"{}\"}} {}",
                r.label(),
                self.refused[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_pipeline_ingest_latency_seconds Time from request arrival to answer."
        );
        let _ = writeln!(
            out,
            "# TYPE strata_pipeline_ingest_latency_seconds histogram"
        );
        self.latency
            .render(out, "strata_pipeline_ingest_latency_seconds", "");

        let _ = writeln!(out, "# HELP strata_pipeline_exposures_by_variant_total Accepted exposures per experiment and variant, for sample-ratio checks.");
        let _ = writeln!(
            out,
            "# TYPE strata_pipeline_exposures_by_variant_total counter"
        );
        {
            let map = self
                .variants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut series: Vec<_> = map
                .by_experiment
                .iter()
                .flat_map(|(e, vs)| vs.iter().map(move |(v, n)| (e, v, n)))
                .collect();
            series.sort();
            for (experiment, variant, n) in series {
                let _ = writeln!(
                    out,
                    "strata_pipeline_exposures_by_variant_total{{experiment=\"{}\",variant=\"{}\"}} {n}",
                    escape_label(experiment),
                    escape_label(variant)
                );
            }
        }
        let _ = writeln!(out, "# HELP strata_pipeline_exposures_by_variant_dropped_total Exposures not counted per variant because the series cap was reached.");
        let _ = writeln!(
            out,
            "# TYPE strata_pipeline_exposures_by_variant_dropped_total counter"
        );
        let _ = writeln!(
            out,
            "strata_pipeline_exposures_by_variant_dropped_total {}",
            self.variants_dropped.load(Ordering::Relaxed)
        );

        if let Some(p) = pressure {
            let _ = writeln!(out, "# HELP strata_pipeline_sink_backlog_bytes Bytes durable but not yet compacted, as the sink reports them.");
            let _ = writeln!(out, "# TYPE strata_pipeline_sink_backlog_bytes gauge");
            let _ = writeln!(
                out,
                "strata_pipeline_sink_backlog_bytes {}",
                p.backlog_bytes
            );
            if let Some(lag) = p.compaction_lag {
                let _ = writeln!(out, "# HELP strata_pipeline_sink_compaction_lag_seconds Age of the oldest record not yet compacted.");
                let _ = writeln!(
                    out,
                    "# TYPE strata_pipeline_sink_compaction_lag_seconds gauge"
                );
                let _ = writeln!(
                    out,
                    "strata_pipeline_sink_compaction_lag_seconds {}",
                    lag.as_secs_f64()
                );
            }
            if let Some(free) = p.disk_free_bytes {
                let _ = writeln!(
                    out,
                    "# HELP strata_pipeline_sink_disk_free_bytes Free bytes on the data volume."
                );
                let _ = writeln!(out, "# TYPE strata_pipeline_sink_disk_free_bytes gauge");
                let _ = writeln!(out, "strata_pipeline_sink_disk_free_bytes {free}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_bounded_variant_series() {
        let m = IngestMetrics::new(2);
        m.batch(Kind::Event, 7, 2, 1, 3, 4);
        m.refused(RefusalReason::KeyRateLimit);
        m.observe_latency(Duration::from_millis(3));
        m.observe_latency(Duration::from_millis(30));
        m.exposures([("exp", "a"), ("exp", "b"), ("exp", "a"), ("other\"x", "c")]);
        let mut out = String::new();
        m.render(
            &mut out,
            Some(Pressure {
                backlog_bytes: 5,
                ..Pressure::default()
            }),
        );
        for line in [
            "strata_pipeline_records_accepted_total{kind=\"events\"} 7",
            "strata_pipeline_records_accepted_total{kind=\"exposures\"} 0",
            "strata_pipeline_records_duplicate_total{kind=\"events\"} 2",
            "strata_pipeline_records_rejected_total{kind=\"events\",reason=\"invalid\"} 1",
            "strata_pipeline_records_rejected_total{kind=\"events\",reason=\"unit_rate_limit\"} 3",
            "strata_pipeline_records_rejected_total{kind=\"events\",reason=\"shed\"} 4",
            "strata_pipeline_requests_refused_total{reason=\"key_rate_limit\"} 1",
            "strata_pipeline_ingest_latency_seconds_bucket{le=\"0.0025\"} 0",
            "strata_pipeline_ingest_latency_seconds_bucket{le=\"0.005\"} 1",
            "strata_pipeline_ingest_latency_seconds_bucket{le=\"0.05\"} 2",
            "strata_pipeline_ingest_latency_seconds_bucket{le=\"+Inf\"} 2",
            "strata_pipeline_ingest_latency_seconds_count 2",
            "strata_pipeline_exposures_by_variant_total{experiment=\"exp\",variant=\"a\"} 2",
            "strata_pipeline_exposures_by_variant_total{experiment=\"exp\",variant=\"b\"} 1",
            "strata_pipeline_exposures_by_variant_dropped_total 1",
            "strata_pipeline_sink_backlog_bytes 5",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        assert!(!out.contains("other"), "a third series must not be created");
    }
}
