//! Helpers shared by the test modules.

use serde_json::{json, Value};
use strata_core::{CompiledSnapshot, Context};

/// Compiles a snapshot given as a JSON value, panicking with the error.
pub fn compile(snapshot: Value) -> CompiledSnapshot {
    CompiledSnapshot::from_json(&snapshot.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

/// A context with `user_id` and the given extra attributes.
pub fn user(id: &str, extra: Value) -> Context {
    let mut ctx = Context::try_from(extra).expect("object");
    ctx.insert("user_id", id);
    ctx
}

/// The served variant of `experiment` for `ctx`, if any.
pub fn variant_of(s: &CompiledSnapshot, ctx: &Context, experiment: &str) -> Option<String> {
    s.evaluate(ctx, None)
        .into_iter()
        .find(|a| a.experiment == experiment)
        .map(|a| a.variant.to_owned())
}

/// A one-experiment snapshot with the given ramp and weights.
pub fn single(ramp_permille: u16, weights: &[u32]) -> Value {
    let variants: Vec<Value> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"key": format!("v{i}"), "weight": w}))
        .collect();
    json!({"version": 1, "experiments": [{
        "key": "e", "flag": "f", "salt": "s-e", "status": "running",
        "ramp_permille": ramp_permille, "variants": variants
    }]})
}

/// Upper tail probability of a chi-squared statistic with `df` degrees of freedom.
pub fn chi2_sf(stat: f64, df: f64) -> f64 {
    use statrs::distribution::{ChiSquared, ContinuousCDF};
    ChiSquared::new(df).expect("df > 0").sf(stat)
}
