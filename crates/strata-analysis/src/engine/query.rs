//! Running the plan's SQL on DataFusion: queries, materialized stages
//! (with the fused aggregate's struct column flattened), the per-slice
//! deduplicating stage 2a, and reading result columns.
//!
//! A query that fails on a timestamp the input cannot be read as is
//! re-diagnosed against the sources, so the error names the file and column
//! rather than an Arrow cast.

use super::*;

/// At most this many queries for the deduplicating stage 2 when the events
/// are partitioned by unit: each builds the join's hash table anew, and
/// fewer, larger slices hold more in their deduplication aggregate (at
/// 100 M events under the same pool, 4 slices took 55 s and 16 took 49 s).
pub(crate) const SLICE_GROUPS: usize = 16;

pub(super) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        Error::Engine(datafusion::error::DataFusionError::Internal(format!(
            "missing column {name}"
        )))
    })
}

pub(super) fn column_f64(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let col = column(batch, name)?;
    let c = cast(col, &DataType::Float64).map_err(datafusion::error::DataFusionError::from)?;
    let a = c.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

pub(super) fn column_i64(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let col = column(batch, name)?;
    let c = cast(col, &DataType::Int64).map_err(datafusion::error::DataFusionError::from)?;
    let a = c.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| if a.is_valid(i) { a.value(i) } else { 0 })
        .collect())
}

pub(super) fn column_str(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let col = column(batch, name)?;
    let c = cast(col, &DataType::Utf8).map_err(datafusion::error::DataFusionError::from)?;
    let a = c.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect())
}

impl Analyzer {
    pub(super) async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let run = async { self.ctx.sql(sql).await?.collect().await };
        match run.await {
            Ok(b) => Ok(b),
            Err(e) => {
                for src in [&self.exposures, &self.events] {
                    if let Some(diag) = source::diagnose_timestamps(&self.ctx, src).await {
                        return Err(diag);
                    }
                }
                Err(e.into())
            }
        }
    }

    pub(super) async fn materialize(&self, name: &str, sql: &str) -> Result<()> {
        self.materialize_union(name, &[sql.to_string()]).await
    }

    /// Runs each query and registers the union of their rows as `name`.
    pub(super) async fn materialize_union(&self, name: &str, sqls: &[String]) -> Result<()> {
        let mut schema = None;
        let mut batches = Vec::new();
        for sql in sqls {
            let df = self.ctx.sql(sql).await?;
            schema.get_or_insert_with(|| Arc::new(df.schema().as_arrow().clone()));
            match df.collect().await {
                Ok(b) => batches.extend(b),
                Err(e) => {
                    for src in [&self.exposures, &self.events] {
                        if let Some(diag) = source::diagnose_timestamps(&self.ctx, src).await {
                            return Err(diag);
                        }
                    }
                    return Err(e.into());
                }
            }
        }
        let schema = schema.ok_or_else(|| Error::invalid("plan", name, "no query"))?;
        // The fused aggregate's struct column becomes one column per part.
        let schema = crate::fused::flatten(&RecordBatch::new_empty(schema))?.schema();
        let batches = batches
            .iter()
            .map(crate::fused::flatten)
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        self.tables.register(&self.ctx, name, schema, batches).await
    }

    /// Stage 2a: per-unit sums of the parts into `unit_parts`.
    ///
    /// When deduplicating events partitioned by unit (`part=` directories,
    /// as the pipeline writes them), each slice is aggregated on its own:
    /// the deduplication aggregate then holds one slice's events instead of
    /// all of them, so it stays in memory instead of spilling. A unit whose
    /// events straddle slices could have a duplicate counted once per slice,
    /// so the union of the slices' rows is kept only when no unit has rows
    /// from two slices; otherwise the stage is redone in one query. With
    /// unique ids there is no such aggregate to shrink and one query is
    /// quicker (the join's hash table is built once).
    pub(super) async fn unit_parts(&self, b: &Bounds, dedup: bool) -> Result<()> {
        if let Some(r) = &self.rollup {
            return self.rollup_unit_parts(r, b).await;
        }
        if self.parts.is_empty() {
            return Ok(());
        }
        self.materialize("unit_keys", plan::UNIT_KEYS_SQL).await?;
        let whole = plan::unit_parts_sql(&self.parts, &self.properties, b, dedup, None, self.fused);
        if !dedup || self.slices.len() < 2 {
            return self.materialize("unit_parts", &whole).await;
        }
        let per_group = self.slices.len().div_ceil(SLICE_GROUPS);
        let groups: Vec<&[String]> = self.slices.chunks(per_group).collect();
        let per_slice: Vec<String> = plan::slice_conditions(&groups)
            .iter()
            .map(|c| {
                plan::unit_parts_sql(&self.parts, &self.properties, b, dedup, Some(c), self.fused)
            })
            .collect();
        self.materialize_union("unit_parts", &per_slice).await?;
        let straddling = self.sql(plan::STRADDLING_UNITS_SQL).await?;
        let n = match straddling.first() {
            Some(batch) => column_i64(batch, "n")?.first().copied().unwrap_or(0),
            None => 0,
        };
        if n > 0 {
            return self.materialize("unit_parts", &whole).await;
        }
        Ok(())
    }

    /// Stage 2a from a shared rollup, read in this process
    /// ([`crate::rollup::stage2`]): `unit_parts`, and the quantile
    /// metrics' values kept for stage 3.
    async fn rollup_unit_parts(&self, r: &crate::rollup::View, b: &Bounds) -> Result<()> {
        let units = self.sql(plan::ROLLUP_UNITS_SQL).await?;
        let (view, parts, b) = (r.clone(), self.parts.clone(), *b);
        // Reading millions of rows is CPU work: off the async workers.
        let s =
            tokio::task::spawn_blocking(move || crate::rollup::stage2(&view, &parts, &units, &b))
                .await
                .map_err(|e| {
                    Error::Engine(datafusion::error::DataFusionError::External(Box::new(e)))
                })??;
        *self
            .rollup_values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s.values;
        if self.parts.is_empty() {
            return Ok(());
        }
        self.tables
            .register(&self.ctx, "unit_parts", s.parts.schema(), vec![s.parts])
            .await
    }
}
