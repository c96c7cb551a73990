//! The global holdout's contamination check, over the session's exposures.

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{Field, Schema};
use strata_model::holdout::{ContaminatedVariant, Contamination};

use super::*;

impl Analyzer {
    /// The held-out units of this analysis (experiment `spec.key`, control
    /// variant `spec.control`: the holdout) exposed in the analysed period
    /// (`start` to `as_of`) to one of `treatments`, the `(experiment,
    /// variant)` pairs the holdout promises its units never see.
    pub async fn holdout_contamination(
        &self,
        as_of: Option<DateTime<Utc>>,
        treatments: &[(String, String)],
    ) -> Result<Contamination> {
        let b = self.bounds(as_of);
        let s = &self.spec.spec;
        self.materialize(
            "held_out_units",
            &plan::held_out_units_sql(&s.key, &s.control, b.start, b.end),
        )
        .await?;
        let holdout_units = self.table_rows("held_out_units").await? as u64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("experiment", DataType::Utf8, false),
            Field::new("variant", DataType::Utf8, false),
        ]));
        let experiments: StringArray = treatments.iter().map(|(e, _)| Some(e.as_str())).collect();
        let variants: StringArray = treatments.iter().map(|(_, v)| Some(v.as_str())).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(experiments) as ArrayRef,
                Arc::new(variants) as ArrayRef,
            ],
        )
        .map_err(datafusion::error::DataFusionError::from)?;
        self.tables
            .register(&self.ctx, "holdout_treatments", schema, vec![batch])
            .await?;
        let mut out = Contamination {
            holdout_units,
            ..Contamination::default()
        };
        let sql =
            plan::contaminated_units_sql("held_out_units", "holdout_treatments", b.start, b.end);
        for batch in self.sql(&sql).await? {
            let e = column_str(&batch, "experiment")?;
            let v = column_str(&batch, "variant")?;
            let n = column_i64(&batch, "n")?;
            for ((e, v), n) in e.into_iter().zip(v).zip(n) {
                let n = n.max(0) as u64;
                match (e, v) {
                    (Some(experiment), Some(variant)) => out.exposures.push(ContaminatedVariant {
                        experiment,
                        variant,
                        units: n,
                    }),
                    _ => out.contaminated_units = n,
                }
            }
        }
        out.exposures
            .sort_by(|a, b| (&a.experiment, &a.variant).cmp(&(&b.experiment, &b.variant)));
        Ok(out)
    }
}
