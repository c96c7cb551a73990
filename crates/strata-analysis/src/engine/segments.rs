//! Results broken down by segment (the spec's `segments`): per segment
//! value, each metric's units and estimate per variant, and the check for
//! Simpson's paradox, where most segments' effects have the opposite sign of
//! the overall effect.

use super::*;

impl Analyzer {
    /// The segment reports of a look, from each metric's per-segment
    /// moments; a flagged paradox also adds a `simpsons_paradox` warning.
    pub(super) fn segment_reports(
        &self,
        metrics: &[results::MetricResult],
        seg_moments: &[Vec<BTreeMap<(String, String), Moments>>],
        order: &[String],
        warnings: &mut Vec<results::Warning>,
    ) -> Result<BTreeMap<String, results::SegmentReport>> {
        let s = &self.spec.spec;
        let mut segments = BTreeMap::new();
        for (si, seg) in s.segments.iter().enumerate() {
            let mut sr = results::SegmentReport {
                values: BTreeMap::new(),
                simpson: BTreeMap::new(),
            };
            for ((p, m), moments) in self.planned.iter().zip(metrics).zip(seg_moments) {
                let Some(cells) = moments.get(si) else {
                    continue;
                };
                let est = |mo: &Moments| -> Option<f64> {
                    if mo.n == 0 {
                        return None;
                    }
                    if p.metric.kind == MetricType::Ratio {
                        (mo.mx != 0.0).then(|| mo.my / mo.mx)
                    } else {
                        Some(mo.my)
                    }
                };
                let mut values_by_seg: BTreeMap<String, BTreeMap<String, Moments>> =
                    BTreeMap::new();
                for ((variant, value), mo) in cells {
                    values_by_seg
                        .entry(value.clone())
                        .or_default()
                        .insert(variant.clone(), *mo);
                    sr.values
                        .entry(value.clone())
                        .or_default()
                        .entry(p.metric.key.clone())
                        .or_default()
                        .insert(
                            variant.clone(),
                            results::SegmentCell {
                                n: mo.n,
                                mean: est(mo),
                            },
                        );
                }
                let mut checks = BTreeMap::new();
                for e in &m.effects {
                    let Some(aggregate) = e.delta else { continue };
                    let segs: Vec<SegmentEffect> = values_by_seg
                        .values()
                        .filter_map(|by_v| {
                            let c = by_v.get(&order[0])?;
                            let t = by_v.get(&e.variant)?;
                            Some(SegmentEffect {
                                effect: est(t)? - est(c)?,
                                n: c.n + t.n,
                            })
                        })
                        .collect();
                    let mut check = simpsons_paradox(aggregate, &segs, DEFAULT_MIN_SEGMENT_N)?;
                    // Only a significant overall effect can be reversed:
                    // the segments of a null effect split their signs at
                    // random, and more than half opposite would be noise
                    // called a paradox half the time.
                    check.flagged &= e.significant;
                    if check.flagged {
                        warnings.push(results::Warning {
                        code: "simpsons_paradox".into(),
                        count: None,
                        message: format!(
                            "metric `{}`, {} vs {}: most `{seg}` segments have the opposite sign of the overall effect",
                            p.metric.key, e.variant, e.control
                        ),
                    });
                    }
                    checks.insert(
                        e.variant.clone(),
                        results::Simpson {
                            eligible_segments: check.eligible_segments,
                            opposite_segments: check.opposite_segments,
                            flagged: check.flagged,
                        },
                    );
                }
                sr.simpson.insert(p.metric.key.clone(), checks);
            }
            segments.insert(seg.clone(), sr);
        }

        Ok(segments)
    }
}
