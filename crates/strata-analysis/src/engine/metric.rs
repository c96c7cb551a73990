//! Stage 3 for one metric: the per-variant statistics strata-stats takes
//! (centred moments, or the sorted values of a quantile metric), its
//! winsorizing caps, and its moments per segment.

use super::query::column;
use super::*;

/// Per (variant[, segment]) centred moments of `y` and `x`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Moments {
    pub(super) n: u64,
    pub(super) my: f64,
    pub(super) vy: f64,
    pub(super) mx: f64,
    pub(super) vx: f64,
    pub(super) cxy: f64,
}

impl Analyzer {
    /// Statistics of one metric, its winsorizing caps and per-segment moments.
    pub(super) async fn metric_data(
        &self,
        p: &Planned,
        order: &[String],
        b: &Bounds,
    ) -> Result<(
        MetricData,
        Option<Vec<f64>>,
        Vec<BTreeMap<(String, String), Moments>>,
    )> {
        let kind = p.metric.kind;
        if kind == MetricType::Quantile {
            let q = p.metric.quantile.unwrap_or(0.5);
            let mut values: Vec<Vec<f64>> = vec![Vec::new(); order.len()];
            // Per variant, how many values each unit gave: a unit's values
            // move together, so the interval counts units, not values, as
            // the independent draws.
            let mut sizes: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
            let slot = |variant: &str| order.iter().position(|o| o == variant);
            // One value per matching event (millions at scale): read the
            // Arrow columns in place rather than allocating a string per row.
            if let Some(&c) = p.cols.first() {
                // Gathered per unit in stage 2a.
                for batch in self.sql(&plan::unit_value_lists_sql(c)).await? {
                    let v = cast(column(&batch, "variant")?, &DataType::Utf8)
                        .map_err(datafusion::error::DataFusionError::from)?;
                    let (v, lists) = (v.as_string::<i32>(), column(&batch, "v")?.as_list::<i32>());
                    let (offsets, x) = (
                        lists.value_offsets(),
                        lists.values().as_primitive::<Float64Type>(),
                    );
                    for i in 0..batch.num_rows() {
                        if v.is_null(i) || lists.is_null(i) {
                            continue;
                        }
                        let Some(slot) = slot(v.value(i)) else {
                            continue;
                        };
                        let range = offsets[i] as usize..offsets[i + 1] as usize;
                        let out = &mut values[slot];
                        let before = out.len();
                        match x.nulls() {
                            None => out.extend_from_slice(&x.values()[range]),
                            Some(n) => {
                                out.extend(range.filter(|&j| n.is_valid(j)).map(|j| x.value(j)))
                            }
                        }
                        if out.len() > before {
                            sizes[slot].push(out.len() - before);
                        }
                    }
                }
            } else if self.rollup.is_some() {
                // Read of the rollup in stage 2.
                let mut kept = self
                    .rollup_values
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let at = kept
                    .iter()
                    .position(|(k, _)| k == &p.metric.key)
                    .ok_or_else(|| {
                        Error::invalid(
                            "rollup",
                            "metrics",
                            format!("the shared rollup holds no values of `{}`", p.metric.key),
                        )
                    })?;
                for (variant, v, s) in kept.swap_remove(at).1 {
                    if let Some(slot) = slot(&variant) {
                        values[slot] = v;
                        sizes[slot] = s;
                    }
                }
            } else {
                let sql = plan::quantile_values_sql(
                    &p.metric,
                    &self.properties,
                    b,
                    !self.options.assume_unique_event_ids,
                );
                // (unit, value) per variant, grouped by unit below.
                let mut pairs: Vec<Vec<(i64, f64)>> = vec![Vec::new(); order.len()];
                for batch in self.sql(&sql).await? {
                    let cast_to = |name: &str, t: &DataType| {
                        column(&batch, name).and_then(|c| {
                            cast(c, t)
                                .map_err(|e| datafusion::error::DataFusionError::from(e).into())
                        })
                    };
                    let (v, u, x) = (
                        cast_to("variant", &DataType::Utf8)?,
                        cast_to("uidx", &DataType::Int64)?,
                        cast_to("value", &DataType::Float64)?,
                    );
                    let (v, u, x) = (
                        v.as_string::<i32>(),
                        u.as_primitive::<Int64Type>(),
                        x.as_primitive::<Float64Type>(),
                    );
                    for i in 0..batch.num_rows() {
                        if !v.is_null(i) && !x.is_null(i) && !u.is_null(i) {
                            if let Some(slot) = slot(v.value(i)) {
                                pairs[slot].push((u.value(i), x.value(i)));
                            }
                        }
                    }
                }
                for ((mut p, out), sizes) in pairs.into_iter().zip(&mut values).zip(&mut sizes) {
                    p.sort_unstable_by_key(|&(unit, _)| unit);
                    for run in p.chunk_by(|a, b| a.0 == b.0) {
                        sizes.push(run.len());
                        out.extend(run.iter().map(|&(_, x)| x));
                    }
                }
            }
            // Millions of values per variant: the variants sort in parallel.
            let sorts: Vec<_> = values
                .into_iter()
                .zip(sizes)
                .map(|(v, sizes)| {
                    tokio::task::spawn_blocking(move || QuantileSample::from_units(v, &sizes))
                })
                .collect();
            let mut variants = Vec::with_capacity(sorts.len());
            for s in sorts {
                let sample = s.await.map_err(|e| {
                    Error::Engine(datafusion::error::DataFusionError::External(Box::new(e)))
                })??;
                variants.push(sample);
            }
            return Ok((MetricData::Quantile { q, variants }, None, Vec::new()));
        }
        let e = plan::unit_expr(kind, &p.cols, p.cuped_col);
        let (mut y, mut x) = (e.y.clone(), e.x.clone());
        let mut caps = None;
        if let Some(w) = p.metric.winsorize {
            let mut exprs = vec![y.clone()];
            if kind == MetricType::Ratio {
                exprs.extend(x.clone());
            }
            let mut c = Vec::new();
            for ex in &exprs {
                let batches = self
                    .sql(&plan::winsorize_cap_sql(w, ex, e.filter.as_deref()))
                    .await?;
                let cap = batches
                    .first()
                    .map(|b| column_f64(b, "cap"))
                    .transpose()?
                    .and_then(|v| v.first().copied().flatten());
                c.push(cap.unwrap_or(f64::INFINITY));
            }
            y = plan::capped(&y, c[0]);
            if kind == MetricType::Ratio {
                x = x.map(|x| plan::capped(&x, c[1]));
            }
            caps = Some(c.into_iter().filter(|c| c.is_finite()).collect());
        }
        let moments =
            |group: Option<&str>| plan::moments_sql(&y, x.as_deref(), e.filter.as_deref(), group);
        let read = |batches: Vec<RecordBatch>,
                    group: Option<&str>|
         -> Result<BTreeMap<(String, String), Moments>> {
            let mut out = BTreeMap::new();
            for batch in batches {
                let v = column_str(&batch, "variant")?;
                let g = match group {
                    Some(gc) => column_str(&batch, gc)?,
                    None => vec![None; batch.num_rows()],
                };
                let n = column_i64(&batch, "n")?;
                let cols = ["my", "vy", "mx", "vx", "cxy"]
                    .iter()
                    .map(|c| column_f64(&batch, c))
                    .collect::<Result<Vec<_>>>()?;
                for i in 0..batch.num_rows() {
                    let Some(variant) = v[i].clone() else {
                        continue;
                    };
                    let get = |j: usize| cols[j][i].unwrap_or(0.0);
                    out.insert(
                        (variant, g[i].clone().unwrap_or_else(|| "(null)".into())),
                        Moments {
                            n: n[i].max(0) as u64,
                            my: get(0),
                            vy: get(1).max(0.0),
                            mx: get(2),
                            vx: get(3).max(0.0),
                            cxy: get(4),
                        },
                    );
                }
            }
            Ok(out)
        };
        let all = read(self.sql(&moments(None)).await?, None)?;
        let mut segs = Vec::new();
        for i in 0..self.spec.spec.segments.len() {
            let col = format!("seg_{i}");
            segs.push(read(self.sql(&moments(Some(&col))).await?, Some(&col))?);
        }
        let m = |v: &String| -> Moments {
            all.iter()
                .find(|((variant, _), _)| variant == v)
                .map(|(_, m)| *m)
                .unwrap_or_default()
        };
        let data = if kind == MetricType::Ratio {
            MetricData::Ratio(
                order
                    .iter()
                    .map(|v| {
                        let o = m(v);
                        let nf = o.n as f64;
                        RatioStats::from_moments(o.n, o.my, o.mx, o.vy * nf, o.vx * nf, o.cxy * nf)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        } else if p.cuped_col.is_some() {
            MetricData::Cuped(
                order
                    .iter()
                    .map(|v| {
                        let o = m(v);
                        let nf = o.n as f64;
                        CupedStats::from_moments(o.n, o.my, o.mx, o.vy * nf, o.vx * nf, o.cxy * nf)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        } else {
            MetricData::Mean(
                order
                    .iter()
                    .map(|v| {
                        let o = m(v);
                        MeanStats::from_moments(o.n, o.my, o.vy * o.n as f64)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        };
        Ok((data, caps, segs))
    }
}
