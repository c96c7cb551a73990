//! Hand-computed results on the fixture of `common`: every metric type,
//! window rule, dedup rule, ITT vs per-protocol, CUPED covariate, multiple
//! exposure.
//!
//! Per-unit values (ITT; control = u1, u2; treatment = u3, u4, u5):
//! * u1: e1 (deduplicated), e2 → 2 purchases, revenue 15; e4 is before start (CUPED pre-period).
//! * u2: e5 is 3 s before exposure (within the 5 s skew) → counts; e6 is 10 s before → does not.
//! * u3: e8 is at `end` (excluded), e9 is a bot; e11 is pre-period.
//! * u4: exposed to treatment then control → counted in treatment; 2 purchases, 16.
//! * u5: assigned treatment, served control, opted out → ITT treatment; 1 purchase, 6.
//! * u6 is exposed after the end, u7 in another experiment: not in the analysis.

use strata_stats::cuped::cuped;
use strata_stats::moments::CupedStats;

use super::common::*;

fn check(
    r: &strata_analysis::Results,
    key: &str,
    control: (u64, f64, Option<f64>),
    treatment: (u64, f64, Option<f64>),
) {
    let m = metric(r, key);
    for (name, (n, mean, var)) in [("control", control), ("treatment", treatment)] {
        let v = &m.variants[name];
        assert_eq!(v.n, n, "{key} {name} n");
        assert!(
            close(v.mean.unwrap(), mean),
            "{key} {name} mean {:?} != {mean}",
            v.mean
        );
        if let Some(var) = var {
            assert!(
                close(v.variance.unwrap(), var),
                "{key} {name} variance {:?} != {var}",
                v.variance
            );
        }
    }
    let e = &m.effects[0];
    assert!(
        close(e.delta.unwrap(), treatment.1 - control.1),
        "{key} delta"
    );
}

#[test]
fn every_metric_type_itt() {
    let r = analyze("");
    assert_eq!(r.units["control"], 2);
    assert_eq!(r.units["treatment"], 3);
    check(
        &r,
        "conversion",
        (2, 1.0, Some(0.0)),
        (3, 2.0 / 3.0, Some(1.0 / 3.0)),
    );
    check(&r, "purchases", (2, 1.5, Some(0.5)), (3, 1.0, Some(1.0)));
    check(&r, "revenue", (2, 17.5, Some(12.5)), (3, 22.0 / 3.0, None));
    check(&r, "order_value", (2, 13.75, None), (2, 7.0, Some(2.0)));
    check(&r, "aov", (2, 35.0 / 3.0, None), (3, 22.0 / 3.0, None));
    check(&r, "big_purchases", (2, 0.5, None), (3, 1.0 / 3.0, None));
    check(&r, "us_purchases", (2, 0.5, None), (3, 1.0 / 3.0, None));
    // Pooled per-unit revenue [15, 20, 0, 16, 6]: the 0.75 quantile is 16, so u2's 20 becomes 16.
    check(&r, "revenue_w", (2, 15.5, Some(0.5)), (3, 22.0 / 3.0, None));
    assert_eq!(metric(&r, "revenue_w").winsorize_caps, Some(vec![16.0]));
    // Quantile over page-load events: control [100, 300], treatment [200]; type-7 median.
    let q = metric(&r, "load_p50");
    assert_eq!(q.variants["control"].value, Some(200.0));
    assert_eq!(q.variants["control"].n, 2);
    assert_eq!(q.variants["treatment"].value, Some(200.0));
    assert_eq!(q.variants["treatment"].n, 1);
    // Roles, multiple testing: primary unadjusted, secondaries adjusted.
    assert_eq!(metric(&r, "conversion").role, "primary");
    assert!(metric(&r, "conversion").effects[0]
        .adjusted_p_value
        .is_none());
    assert!(metric(&r, "purchases").effects[0]
        .adjusted_p_value
        .is_some());
    let multi = r
        .warnings
        .iter()
        .find(|w| w.code == "multiple_exposure_units")
        .unwrap();
    assert_eq!(multi.count, Some(1));
    assert_eq!(r.srm.observed["treatment"], 3);
}

#[test]
fn per_protocol_uses_served_variant_and_drops_opted_out() {
    let r = analyze(r#", "analysis": "per_protocol""#);
    assert_eq!(r.units["control"], 2);
    assert_eq!(r.units["treatment"], 2);
    check(&r, "conversion", (2, 1.0, None), (2, 0.5, None));
    check(&r, "revenue", (2, 17.5, None), (2, 8.0, None));
    assert!(r
        .warnings
        .iter()
        .any(|w| w.code == "opted_out_units_excluded" && w.count == Some(1)));
}

#[test]
fn clock_skew_tolerance_is_configurable() {
    let r = analyze(r#", "clock_skew_seconds": 0"#);
    // e5 (3 s before u2's exposure) no longer counts.
    check(&r, "conversion", (2, 0.5, None), (3, 2.0 / 3.0, None));
    let r = analyze(r#", "clock_skew_seconds": 15"#);
    // e6 (10 s before) now counts too.
    check(&r, "revenue", (2, 32.5, None), (3, 22.0 / 3.0, None));
}

#[test]
fn as_of_cuts_exposures_and_events() {
    let f = Fixture::new();
    let r = analyze_with(
        METRICS,
        &spec_json(""),
        &f.path("exposures.ndjson"),
        &f.path("events.ndjson"),
        Some("2026-01-12T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(r.as_of, "2026-01-12T00:00:00Z");
    // u5 (exposed at 01-12) is out; u4's second exposure too, so no multiple exposure.
    assert_eq!(r.units["treatment"], 2);
    assert!(!r
        .warnings
        .iter()
        .any(|w| w.code == "multiple_exposure_units"));
    // Revenue: u1 has only e1 (10), u2 e5 (20); u3 and u4 nothing yet.
    check(&r, "revenue", (2, 15.0, Some(50.0)), (2, 0.0, Some(0.0)));
}

#[test]
fn cuped_covariate_from_pre_period() {
    let r = analyze(r#", "cuped": {"pre_period_days": 7}"#);
    // Pre-period [01-03, 01-10): u1 has e4 (7.0), u3 has e11 (3.0).
    let cases: [(&str, [f64; 5], [f64; 5]); 3] = [
        (
            "purchases",
            [2.0, 1.0, 0.0, 2.0, 1.0],
            [1.0, 0.0, 1.0, 0.0, 0.0],
        ),
        (
            "revenue",
            [15.0, 20.0, 0.0, 16.0, 6.0],
            [7.0, 0.0, 3.0, 0.0, 0.0],
        ),
        (
            "conversion",
            [1.0, 1.0, 0.0, 1.0, 1.0],
            [1.0, 0.0, 1.0, 0.0, 0.0],
        ),
    ];
    for (key, y, x) in cases {
        let expected = cuped(&[
            CupedStats::from_values(&y[..2], &x[..2]).unwrap(),
            CupedStats::from_values(&y[2..], &x[2..]).unwrap(),
        ])
        .unwrap();
        let m = metric(&r, key);
        let e = &m.effects[0];
        let cu = e.cuped.as_ref().unwrap();
        assert!(
            close(cu.theta, expected.theta),
            "{key} theta {} != {}",
            cu.theta,
            expected.theta
        );
        for (i, v) in ["control", "treatment"].iter().enumerate() {
            assert!(
                close(
                    m.variants[*v].cuped_mean.unwrap(),
                    expected.variants[i].adjusted_mean
                ),
                "{key} {v}"
            );
            assert!(close(
                m.variants[*v].mean.unwrap(),
                expected.variants[i].mean
            ));
        }
        let un = e.unadjusted.as_ref().unwrap();
        assert!(close(
            un.delta.unwrap(),
            expected.variants[1].mean - expected.variants[0].mean
        ));
        assert!(close(
            e.delta.unwrap(),
            expected.variants[1].adjusted_mean - expected.variants[0].adjusted_mean
        ));
    }
    // CUPED does not apply to mean, ratio and quantile metrics.
    assert!(metric(&r, "aov").effects[0].cuped.is_none());
    assert!(metric(&r, "order_value").variants["control"]
        .cuped_mean
        .is_none());
}

#[test]
fn segments_break_down_by_first_exposure_attribute() {
    let r = analyze(r#", "segments": ["country"]"#);
    let s = &r.segments["country"];
    // US: u1 (control), u3, u5 (treatment); DE: u2 (control), u4 (treatment).
    let us = &s.values["US"]["revenue"];
    assert_eq!(us["control"].n, 1);
    assert_eq!(us["control"].mean, Some(15.0));
    assert_eq!(us["treatment"].n, 2);
    assert_eq!(us["treatment"].mean, Some(3.0));
    assert_eq!(s.values["DE"]["revenue"]["treatment"].mean, Some(16.0));
    assert!(s.simpson["revenue"].contains_key("treatment"));
}

#[test]
fn first_exposure_decides_variant_and_segment_when_exposures_disagree() {
    // w1: treatment then control; w2: one variant, country US then DE; w3:
    // country missing on the first exposure only; w4: two variants at the
    // same instant (the tie goes to the first variant by name); w5: two
    // agreeing exposures; w6: one exposure.
    let exposures = r#"{"unit_id":"w1","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z","country":"DE"}
{"unit_id":"w1","experiment":"exp","variant":"control","ts":"2026-01-12T00:00:00Z","country":"DE"}
{"unit_id":"w2","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z","country":"US"}
{"unit_id":"w2","experiment":"exp","variant":"control","ts":"2026-01-12T00:00:00Z","country":"DE"}
{"unit_id":"w3","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"w3","experiment":"exp","variant":"treatment","ts":"2026-01-12T00:00:00Z","country":"US"}
{"unit_id":"w4","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z","country":"US"}
{"unit_id":"w4","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z","country":"US"}
{"unit_id":"w5","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z","country":"DE"}
{"unit_id":"w5","experiment":"exp","variant":"treatment","ts":"2026-01-13T00:00:00Z","country":"DE"}
{"unit_id":"w6","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z","country":"US"}
"#;
    let events = r#"{"event_id":"x1","unit_id":"w1","type":"purchase","ts":"2026-01-13T00:00:00Z","value":1.0,"properties":{"country":"DE"}}
"#;
    let dir = tempfile::tempdir().unwrap();
    let (ex, ev) = (dir.path().join("ex.ndjson"), dir.path().join("ev.ndjson"));
    std::fs::write(&ex, exposures).unwrap();
    std::fs::write(&ev, events).unwrap();
    let r = analyze_with(
        METRICS,
        &spec_json(r#", "segments": ["country"]"#),
        &ex,
        &ev,
        None,
    )
    .unwrap();
    assert_eq!(r.units["control"], 3, "w2, w4, w6");
    assert_eq!(r.units["treatment"], 3, "w1, w3, w5");
    let multi = r
        .warnings
        .iter()
        .find(|w| w.code == "multiple_exposure_units");
    assert_eq!(multi.and_then(|w| w.count), Some(2), "w1 and w4");
    // w1's purchase counts in treatment, its first variant.
    check(&r, "conversion", (3, 0.0, None), (3, 1.0 / 3.0, None));
    let n = |country: &str, variant: &str| {
        r.segments["country"].values[country]["conversion"]
            .get(variant)
            .map_or(0, |c| c.n)
    };
    assert_eq!(n("US", "control"), 3, "w2, w4, w6");
    assert_eq!(n("DE", "treatment"), 2, "w1, w5");
    assert_eq!(n("(null)", "treatment"), 1, "w3");
    assert_eq!(n("DE", "control") + n("US", "treatment"), 0);
}
