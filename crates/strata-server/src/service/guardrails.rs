//! The guardrail monitor's record: evaluations, their state per guardrail,
//! the human review of a breach awaiting approval, and replay.
//!
//! The monitor (a job of the composition root) evaluates with
//! [`crate::guardrail::evaluate`] and stores every evaluation here through
//! [`GuardrailService::record`], then acts through [`ExperimentService`]
//! as the system actor. A breach of an experiment that requires approval
//! waits: a person with the right to kill the experiment confirms it (the
//! guardrail's action is then applied in that person's name) or dismisses
//! it; both are audited. A stored evaluation can be replayed: its input is
//! evaluated again and must give the same outcome and action.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{random_hex, Perm};
use crate::guardrail::{evaluate, Action, Evaluation, EvaluationInput};
use crate::model::Status;
use crate::service::experiments::ExperimentService;
use crate::service::lifecycle::Action as Lifecycle;
use crate::service::permissions::authorize;
use crate::service::{ActParams, Actor, ServiceError};
use crate::state::AppState;
use crate::store::{EvaluationRecord, StoreError};

/// Evaluations of one experiment listed in its history.
pub const HISTORY: u64 = 200;

/// The state of one guardrail on an experiment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GuardrailState {
    /// The guardrail definition's key.
    pub guardrail: String,
    /// Its latest evaluation.
    pub latest: EvaluationRecord,
    /// A breach waiting for a person to confirm or dismiss it.
    pub pending: Option<EvaluationRecord>,
}

/// `GET /api/v1/experiments/{key}/guardrails`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GuardrailsView {
    /// The experiment.
    pub experiment: String,
    /// The latest state of each guardrail evaluated.
    pub guardrails: Vec<GuardrailState>,
    /// Its evaluations, the latest first (at most [`HISTORY`]).
    pub history: Vec<EvaluationRecord>,
}

/// The outcome of a confirm or dismiss.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Review {
    /// The experiment.
    pub experiment: String,
    /// The guardrail.
    pub guardrail: String,
    /// `confirmed` or `dismissed`.
    pub review: String,
    /// The breach reviewed.
    pub evaluation: String,
    /// The experiment's status afterwards.
    pub status: String,
}

/// A replay of a stored evaluation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Replay {
    /// The evaluation replayed.
    pub id: String,
    /// The stored outcome.
    pub stored_outcome: String,
    /// The stored action.
    pub stored_action: String,
    /// The evaluation of the stored input now.
    pub replayed: Evaluation,
    /// Whether the replay decided the same (outcome and action).
    pub same: bool,
}

/// The input a stored evaluation was decided on (its document's `input`).
pub fn stored_input(rec: &EvaluationRecord) -> Result<EvaluationInput, ServiceError> {
    let input = rec
        .doc
        .get("input")
        .ok_or_else(|| ServiceError::Internal("stored evaluation without its input".into()))?;
    EvaluationInput::deserialize(input)
        .map_err(|e| ServiceError::Internal(format!("stored evaluation input: {e}")))
}

/// A stored evaluation and whether it continues a breach episode.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The evaluation as stored.
    pub record: EvaluationRecord,
    /// Whether the guardrail's previous evaluation was a breach too (the
    /// monitor alerts when an episode starts, not at every check).
    pub continues: bool,
}

/// Evaluations, reviews and replays.
#[derive(Debug, Clone)]
pub struct GuardrailService {
    state: AppState,
}

impl GuardrailService {
    /// The service over a server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn store_error(&self, e: StoreError) -> ServiceError {
        self.state.service_store_error(e)
    }

    /// Stores an evaluation of the monitor (any actor holding
    /// `results:write`, as the monitor's system actor does): its document
    /// holds the input and the decision.
    ///
    /// A breach awaiting approval is stored `pending`, unless it continues
    /// an episode (the guardrail's previous evaluation was a breach too)
    /// that a person dismissed: then it is stored `dismissed`, and the
    /// person is not asked again until the episode ends.
    pub async fn record(
        &self,
        actor: &Actor,
        input: &EvaluationInput,
        evaluation: &Evaluation,
    ) -> Result<Recorded, ServiceError> {
        authorize(&self.state.store, actor, Perm::ResultsWrite, None).await?;
        let previous = self
            .recent(&input.experiment, &input.guardrail.key, 1)
            .await?
            .into_iter()
            .next();
        let continues = previous.as_ref().is_some_and(|p| p.outcome == "breach");
        let dismissed =
            continues && previous.as_ref().and_then(|p| p.review.as_deref()) == Some("dismissed");
        let id = format!(
            "ge_{}",
            random_hex(8).map_err(|e| ServiceError::Internal(e.message))?
        );
        let review = (evaluation.action == Action::AwaitApproval).then(|| {
            if dismissed {
                "dismissed".to_owned()
            } else {
                "pending".to_owned()
            }
        });
        let rec = EvaluationRecord {
            id,
            experiment: input.experiment.clone(),
            guardrail: input.guardrail.key.clone(),
            at: String::new(),
            outcome: evaluation.outcome.as_str().to_owned(),
            action: evaluation.action.as_str().to_owned(),
            taken: None,
            review,
            reviewed_by: None,
            reviewed_at: None,
            doc: json!({"input": input, "evaluation": evaluation}),
        };
        let record = self
            .state
            .store
            .insert_guardrail_evaluation(rec)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(Recorded { record, continues })
    }

    /// Records what was done about evaluation `id`.
    pub async fn taken(&self, id: &str, taken: &str) -> Result<(), ServiceError> {
        self.state
            .store
            .set_guardrail_taken(id, taken)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// The latest evaluations of one guardrail of `experiment` (for the
    /// monitor: no permission check, it reads its own record).
    pub async fn recent(
        &self,
        experiment: &str,
        guardrail: &str,
        limit: u64,
    ) -> Result<Vec<EvaluationRecord>, ServiceError> {
        self.state
            .store
            .guardrail_evaluations(experiment, Some(guardrail), limit)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// The latest evaluations of `experiment`, any guardrail (for the
    /// monitor).
    pub async fn recent_of_experiment(
        &self,
        experiment: &str,
        limit: u64,
    ) -> Result<Vec<EvaluationRecord>, ServiceError> {
        self.state
            .store
            .guardrail_evaluations(experiment, None, limit)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Forgets evaluations older than `before_ms` that decided nothing.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, ServiceError> {
        self.state
            .store
            .prune_guardrail_evaluations(before_ms)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// The state of every guardrail evaluated on `key` and its history
    /// (`config:read`).
    pub async fn view(&self, actor: &Actor, key: &str) -> Result<GuardrailsView, ServiceError> {
        ExperimentService::new(self.state.clone())
            .get(actor, key)
            .await?;
        let store = &self.state.store;
        let latest = store
            .latest_guardrail_evaluations(key)
            .await
            .map_err(|e| self.store_error(e))?;
        let mut guardrails = Vec::with_capacity(latest.len());
        for l in latest {
            let pending = store
                .pending_guardrail_breach(key, &l.guardrail)
                .await
                .map_err(|e| self.store_error(e))?;
            guardrails.push(GuardrailState {
                guardrail: l.guardrail.clone(),
                latest: l,
                pending,
            });
        }
        let history = store
            .guardrail_evaluations(key, None, HISTORY)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(GuardrailsView {
            experiment: key.to_owned(),
            guardrails,
            history,
        })
    }

    async fn pending(&self, key: &str, guardrail: &str) -> Result<EvaluationRecord, ServiceError> {
        self.state
            .store
            .pending_guardrail_breach(key, guardrail)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| {
                ServiceError::Conflict(format!(
                    "guardrail {guardrail:?} of experiment {key:?} has no breach awaiting approval"
                ))
            })
    }

    /// Confirms the pending breach of `guardrail` on `key`: applies the
    /// guardrail's action (kill, or pause) as `actor`, who needs the right
    /// to do so on the owning team, and records the review (audited).
    pub async fn confirm(
        &self,
        actor: &Actor,
        key: &str,
        guardrail: &str,
    ) -> Result<Review, ServiceError> {
        let experiments = ExperimentService::new(self.state.clone());
        let experiment = experiments.get(actor, key).await?;
        let breach = self.pending(key, guardrail).await?;
        let def = stored_input(&breach)?.guardrail;
        let action = match def.auto_action {
            strata_model::AutoAction::Pause => Lifecycle::Pause,
            _ => Lifecycle::Kill,
        };
        authorize(
            &self.state.store,
            actor,
            action.permission(),
            Some(&experiment.owner_team),
        )
        .await?;
        let reason = format!(
            "guardrail {guardrail} breach confirmed by {} (evaluation {})",
            actor.audit_name(),
            breach.id
        );
        let acts = match action {
            Lifecycle::Pause => experiment.status == Status::Running,
            _ => matches!(experiment.status, Status::Running | Status::Paused),
        };
        let status = if acts {
            let params = ActParams {
                reason: Some(reason.clone()),
                ..ActParams::default()
            };
            experiments.act(actor, key, action, params).await?.status
        } else {
            experiment.status
        };
        self.state
            .store
            .review_guardrail_breaches(key, guardrail, "confirmed", actor, &reason)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(Review {
            experiment: key.to_owned(),
            guardrail: guardrail.to_owned(),
            review: "confirmed".to_owned(),
            evaluation: breach.id,
            status: status.as_str().to_owned(),
        })
    }

    /// Dismisses the pending breach of `guardrail` on `key` (the right to
    /// kill it on the owning team); audited. The monitor goes on
    /// evaluating, and alerts again only at a later breach episode.
    pub async fn dismiss(
        &self,
        actor: &Actor,
        key: &str,
        guardrail: &str,
    ) -> Result<Review, ServiceError> {
        let experiment = ExperimentService::new(self.state.clone())
            .get(actor, key)
            .await?;
        authorize(
            &self.state.store,
            actor,
            Perm::ExperimentsKill,
            Some(&experiment.owner_team),
        )
        .await?;
        let breach = self.pending(key, guardrail).await?;
        let detail = format!(
            "guardrail {guardrail} breach dismissed by {} (evaluation {})",
            actor.audit_name(),
            breach.id
        );
        self.state
            .store
            .review_guardrail_breaches(key, guardrail, "dismissed", actor, &detail)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(Review {
            experiment: key.to_owned(),
            guardrail: guardrail.to_owned(),
            review: "dismissed".to_owned(),
            evaluation: breach.id,
            status: experiment.status.as_str().to_owned(),
        })
    }

    /// Evaluates the stored input of evaluation `id` of experiment `key`
    /// again (`config:read`).
    pub async fn replay(&self, actor: &Actor, key: &str, id: &str) -> Result<Replay, ServiceError> {
        ExperimentService::new(self.state.clone())
            .get(actor, key)
            .await?;
        let not_found = || ServiceError::NotFound {
            what: "guardrail evaluation",
            key: id.to_owned(),
        };
        let rec = self
            .state
            .store
            .guardrail_evaluation(id)
            .await
            .map_err(|e| self.store_error(e))?
            .filter(|r| r.experiment == key)
            .ok_or_else(not_found)?;
        let input = stored_input(&rec)?;
        let replayed = evaluate(&input);
        let same =
            replayed.outcome.as_str() == rec.outcome && replayed.action.as_str() == rec.action;
        Ok(Replay {
            id: rec.id,
            stored_outcome: rec.outcome,
            stored_action: rec.action,
            replayed,
            same,
        })
    }
}
