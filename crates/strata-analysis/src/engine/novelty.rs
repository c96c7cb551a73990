//! The novelty report: the primary metric's effect in units' first days
//! against later, and whether it decays significantly.

use super::*;

/// A window effect and its comparison (Welch test and relative lift).
pub(super) type WindowOutcome = (results::WindowEffect, Comparison);

impl Analyzer {
    pub(super) async fn novelty(
        &self,
        early: &[usize],
        late: &[usize],
        order: &[String],
        b: &Bounds,
    ) -> Result<results::Novelty> {
        let p = &self.planned[0];
        let alpha = self.spec.spec.alpha;
        let stats = |cols: &[usize], late_only: bool| {
            plan::novelty_window_sql(&plan::unit_expr(p.metric.kind, cols, None), late_only, b)
        };
        let mut per_window = Vec::new();
        for (cols, late_only) in [(early, false), (late, true)] {
            let mut by_variant: BTreeMap<String, MeanStats> = BTreeMap::new();
            for batch in self.sql(&stats(cols, late_only)).await? {
                let v = column_str(&batch, "variant")?;
                let n = column_i64(&batch, "n")?;
                let my = column_f64(&batch, "my")?;
                let vy = column_f64(&batch, "vy")?;
                for i in 0..batch.num_rows() {
                    if let Some(name) = v[i].clone() {
                        let n = n[i].max(0) as u64;
                        by_variant.insert(
                            name,
                            MeanStats::from_moments(
                                n,
                                my[i].unwrap_or(0.0),
                                vy[i].unwrap_or(0.0).max(0.0) * n as f64,
                            )?,
                        );
                    }
                }
            }
            per_window.push(by_variant);
        }
        let mut effects = Vec::new();
        for treatment in order.iter().skip(1) {
            let window = |w: &BTreeMap<String, MeanStats>| -> Result<WindowOutcome> {
                let c = w.get(&order[0]).cloned().unwrap_or_default();
                let t = w.get(treatment).cloned().unwrap_or_default();
                let cmp = Comparison::new(
                    Sample::from_mean(&c).as_ref(),
                    Sample::from_mean(&t).as_ref(),
                    alpha,
                )?;
                Ok((
                    results::WindowEffect {
                        n: [c.n(), t.n()],
                        delta: cmp.welch.map(|w| w.difference),
                        ci: cmp.welch.map(|w| pair(&w.ci)),
                        p_value: cmp.p_value(),
                    },
                    cmp,
                ))
            };
            let (early_e, ew) = window(&per_window[0])?;
            let (late_e, lw) = window(&per_window[1])?;
            // Lifts, not differences: the windows' baselines differ.
            let decay = match (ew.lift, ew.p_value(), lw.lift) {
                (Some(e), Some(p), Some(l)) => novelty_decay(&e, p, &l, alpha)?,
                _ => None,
            };
            effects.push(results::NoveltyEffect {
                variant: treatment.clone(),
                early: early_e,
                late: late_e,
                decay_p_value: decay.map(|d| d.p_value),
                flagged: decay.is_some_and(|d| d.flagged),
            });
        }
        Ok(results::Novelty {
            metric: p.metric.key.clone(),
            window_days: self.spec.spec.novelty_days,
            effects,
        })
    }
}
