//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{
    admin, alerts, experiments, guardrails, layers, lifecycle, power, registry, results,
};
use crate::{model, schema, sdk, store};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata control plane",
        description = "Experiment lifecycle, versioned config snapshots, SDK distribution and OFREP. Errors: {\"error\": {\"code\", \"message\", \"field\"}}. Every endpoint except /healthz, /readyz, /metrics and this document needs `Authorization: Bearer <token>`."
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    paths(
        experiments::create, experiments::get, experiments::list, experiments::update,
        lifecycle::action, experiments::audit, experiments::activation, experiments::explain,
        results::publish, results::latest, results::one, results::history, results::retract,
        layers::create, layers::list, layers::get, layers::allocate, layers::dry_run,
        registry::create_metric, registry::list_metrics, registry::get_metric, registry::update_metric, registry::delete_metric,
        registry::create_guardrail, registry::list_guardrails, registry::get_guardrail, registry::delete_guardrail,
        registry::get_holdout, registry::put_holdout, registry::rotate_holdout,
        registry::get_bot_detection, registry::put_bot_detection,
        registry::get_key_metrics, registry::put_key_metrics, registry::holdout_impact,
        power::plan,
        admin::create_key, admin::list_keys, admin::revoke_key, admin::audit,
        admin::config_info, admin::config_version, admin::rollback,
        alerts::create_webhook, alerts::list_webhooks, alerts::delete_webhook, alerts::deliveries,
        guardrails::view, guardrails::confirm, guardrails::dismiss, guardrails::replay,
        sdk::config, sdk::stream, sdk::evaluate, sdk::ofrep_flag, sdk::ofrep_bulk,
    ),
    components(schemas(
        model::ExperimentRequest, model::ExperimentRecord, model::VariantDef, model::RampStage, model::Status,
        schema::Sequential, schema::AnalysisMode, schema::MultipleTesting, schema::Cuped, model::LayerRecord, model::LayerRequest, schema::MetricDef,
        schema::MetricType, schema::EventFilter, schema::RatioPart, schema::MetricDirection,
        schema::GuardrailDef, schema::GuardrailDirection, schema::AutoAction, schema::AppliesTo, model::HoldoutRecord, model::BotDetectionRecord,
        model::KeyMetricsRecord, model::KeyMetricsRequest, crate::service::HoldoutImpact,
        model::HoldoutRequest, layers::Allocation, layers::AllocateRequest, layers::DryRunRequest,
        admin::KeyRequest, admin::RollbackRequest, store::AuditEntry, store::KeyRecord,
        experiments::ExplainRequest, crate::service::Lookup, crate::service::LookupRow,
        sdk::EvaluateRequest, store::ResultsMeta, results::PublishedResults, results::HistoryItem, results::ResultsHistory, results::RetractRequest,
        crate::service::power::PowerRequest, crate::service::power::PowerPlan,
        crate::service::power::PlannedEffect, crate::service::power::PowerMetric,
        alerts::WebhookRequest, store::Webhook, store::Delivery, crate::activation::Activation,
        store::EvaluationRecord, crate::service::guardrails::GuardrailsView,
        crate::service::guardrails::GuardrailState, crate::service::guardrails::Review,
        crate::service::guardrails::Replay, crate::guardrail::Evaluation, crate::guardrail::Gate,
        crate::guardrail::TreatmentCheck, crate::guardrail::Outcome, crate::guardrail::Action,
    )),
    tags(
        (name = "experiments"), (name = "layers"), (name = "metrics"), (name = "guardrails"),
        (name = "holdout"), (name = "keys"), (name = "audit"), (name = "config"),
        (name = "alerts", description = "webhooks for the platform's alerts; admins"),
        (name = "results", description = "analysis results; team-restricted"),
        (name = "power", description = "sample size, detectable effect and duration"),
        (name = "sdk", description = "for SDK keys"),
        (name = "ofrep", description = "OpenFeature Remote Evaluation Protocol"),
    )
)]
struct ApiDoc;

/// The document as JSON, with the paths of the mounts merged in.
pub fn document(mounts: impl Iterator<Item = utoipa::openapi::OpenApi>) -> String {
    mounts
        .fold(ApiDoc::openapi(), |mut doc, other| {
            doc.merge(other);
            doc
        })
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
