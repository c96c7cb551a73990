//! The check that a spec's experiment and variant names match the data:
//! a misspelt key must fail naming what the data holds, not report zero
//! units.

use super::*;

impl Analyzer {
    /// Fails with [`Error::NoExposures`] or [`Error::UnknownVariants`] when
    /// the experiment key or variant keys of the spec do not match the data
    /// (the rule is in `docs/data-model.md`, "Semantics").
    ///
    /// Runs after stage 1 (`units_all` registered): when every variant of
    /// `order` has units in this look there is nothing to check; otherwise
    /// the names are checked against all of the exposures, not only those
    /// before the look, so that an early look with no units yet is not an
    /// error.
    pub(super) async fn check_names(&self, order: &[String]) -> Result<()> {
        let mut seen = BTreeSet::new();
        for batch in self.sql(plan::UNIT_VARIANTS_SQL).await? {
            seen.extend(column_str(&batch, "variant")?.into_iter().flatten());
        }
        if order.iter().all(|v| seen.contains(v)) {
            return Ok(());
        }
        let key = &self.spec.spec.key;
        let names = |batches: Vec<RecordBatch>, col: &str| -> Result<Vec<String>> {
            let mut out = Vec::new();
            for batch in batches {
                out.extend(column_str(&batch, col)?.into_iter().flatten());
            }
            Ok(out)
        };
        let v = plan::variant_column(self.spec.spec.analysis);
        let present = names(
            self.sql(&plan::exposure_variants_sql(v, key)).await?,
            "name",
        )?;
        if present.is_empty() {
            let experiments = names(
                self.sql(&plan::exposure_experiments_sql(crate::error::LISTED + 1))
                    .await?,
                "name",
            )?;
            return Err(Error::NoExposures {
                experiment: key.clone(),
                path: self.exposures.path.clone(),
                experiments,
            });
        }
        let missing: Vec<String> = order
            .iter()
            .filter(|v| !present.contains(v))
            .cloned()
            .collect();
        let unknown = present.iter().any(|p| !order.contains(p));
        if missing.len() == order.len() || (!missing.is_empty() && unknown) {
            return Err(Error::UnknownVariants {
                experiment: key.clone(),
                missing,
                present,
            });
        }
        Ok(())
    }
}
