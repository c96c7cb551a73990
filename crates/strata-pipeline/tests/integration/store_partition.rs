//! The user partition is independent of the assigned variant (the seed's
//! partition-7 incident), checked with units assigned by strata-core.

use strata_core::{CompiledSnapshot, Context};
use strata_pipeline::user_partition;

const SNAPSHOT: &str = r#"{
  "version": 1,
  "experiments": [
    {"key": "pricing", "flag": "pricing", "salt": "pricing-2026", "status": "running",
     "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}]},
    {"key": "three", "flag": "three", "salt": "three-2026", "status": "running",
     "variants": [{"key": "control", "weight": 20}, {"key": "b", "weight": 30}, {"key": "c", "weight": 50}]}
  ]
}"#;

/// Pearson's χ² statistic of independence of a contingency table.
fn chi_square(table: &[Vec<f64>]) -> (f64, usize) {
    let rows: Vec<f64> = table.iter().map(|r| r.iter().sum()).collect();
    let cols: Vec<f64> = (0..table[0].len())
        .map(|j| table.iter().map(|r| r[j]).sum())
        .collect();
    let total: f64 = rows.iter().sum();
    let mut chi2 = 0.0;
    for (i, r) in table.iter().enumerate() {
        for (j, &o) in r.iter().enumerate() {
            let e = rows[i] * cols[j] / total;
            chi2 += (o - e).powi(2) / e;
        }
    }
    (chi2, (rows.len() - 1) * (cols.len() - 1))
}

/// Upper 0.001 quantile of χ² with `df` degrees of freedom (Wilson–Hilferty).
fn chi2_critical_001(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.090_232_306; // Φ⁻¹(0.999)
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

fn tables(partition: &dyn Fn(&str, &str) -> u32, parts: usize) -> Vec<(String, Vec<Vec<f64>>)> {
    let snapshot = CompiledSnapshot::from_json(SNAPSHOT).unwrap();
    let mut out: Vec<(String, Vec<String>, Vec<Vec<f64>>)> = vec![
        (
            "pricing".into(),
            vec!["control".into(), "treatment".into()],
            vec![vec![0.0; parts]; 2],
        ),
        (
            "three".into(),
            vec!["control".into(), "b".into(), "c".into()],
            vec![vec![0.0; parts]; 3],
        ),
    ];
    for i in 0..100_000 {
        let unit = format!("user-{i}");
        for a in snapshot.evaluate(&Context::for_user(unit.clone()), None) {
            let (_, variants, table) = out.iter_mut().find(|(k, _, _)| k == a.experiment).unwrap();
            let row = variants.iter().position(|v| v == a.variant).unwrap();
            table[row][partition(&unit, a.experiment) as usize] += 1.0;
        }
    }
    out.into_iter().map(|(k, _, t)| (k, t)).collect()
}

#[test]
fn partition_is_independent_of_variant() {
    for parts in [16u32, 50] {
        for (exp, table) in tables(&|unit, _| user_partition(unit, parts), parts as usize) {
            let n: f64 = table.iter().flatten().sum();
            assert_eq!(n, 100_000.0, "every unit assigned in {exp}");
            let (chi2, df) = chi_square(&table);
            assert!(
                chi2 < chi2_critical_001(df),
                "{exp}, {parts} partitions: χ² = {chi2:.1} with {df} df"
            );
        }
    }
}

/// The same test catches the incident's design: partitions taken from the
/// assignment hash (contiguous bucket ranges, as a range-partitioned stream
/// keyed by the bucket would be).
#[test]
fn the_test_detects_a_partition_correlated_with_assignment() {
    let salts = [("pricing", "pricing-2026"), ("three", "three-2026")];
    let correlated = |unit: &str, exp: &str| {
        let salt = salts.iter().find(|(k, _)| *k == exp).unwrap().1;
        u32::from(strata_core::hash::bucket(unit, salt)) * 16 / 1000
    };
    for (exp, table) in tables(&correlated, 16) {
        let (chi2, df) = chi_square(&table);
        assert!(
            chi2 > chi2_critical_001(df),
            "{exp}: χ² = {chi2:.1} with {df} df"
        );
    }
}
