//! The services called in-process, without HTTP: a system actor kills a
//! running experiment with exactly the permissions it was built with, and
//! another creates and starts one.

use serde_json::{json, Value};
use strata_server::auth::Perm;
use strata_server::model::{ExperimentRequest, Status};
use strata_server::service::{ActParams, Action, Actor, ExperimentService, ServiceError};

use crate::common::TestServer;

crate::on_both_backends!(
    system_actor_kills_a_running_experiment,
    system_actor_has_only_its_permissions,
    system_actor_creates_and_starts_an_experiment,
);

fn served(snapshot: &Value, key: &str) -> bool {
    snapshot["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["key"] == key)
}

fn monitor() -> Actor {
    Actor::system("guardrail-monitor").granting([Perm::ExperimentsKill, Perm::Read])
}

async fn system_actor_kills_a_running_experiment(s: TestServer) {
    s.setup_registry().await;
    let sdk = s.sdk_key().await;
    s.running("exp_g", json!({}), 20.0).await;
    assert!(served(&s.sdk_snapshot(&sdk).await, "exp_g"));

    let svc = ExperimentService::new(s.state().clone());
    let killed = svc
        .act(
            &monitor(),
            "exp_g",
            Action::Kill,
            ActParams {
                reason: Some("page_load_p95 up 40%".into()),
                ..ActParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(killed.status, Status::Killed);
    assert_eq!(killed.kill_reason.as_deref(), Some("page_load_p95 up 40%"));
    let snap = s.sdk_snapshot(&sdk).await;
    assert_eq!(snap["version"], killed.version);
    assert!(!served(&snap, "exp_g"), "a killed experiment is not served");

    let (_, audit) = s.get("/api/v1/experiments/exp_g/audit").await;
    let kill = &audit["items"][0];
    assert_eq!(kill["action"], "experiment.kill");
    assert_eq!(kill["actor"], "system:guardrail-monitor");
    assert_eq!(kill["detail"], "page_load_p95 up 40%");
    assert_eq!(kill["after"]["status"], "killed");

    // A second kill is an illegal transition, with the allowed next states.
    let again = svc
        .act(
            &monitor(),
            "exp_g",
            Action::Kill,
            ActParams {
                reason: Some("again".into()),
                ..ActParams::default()
            },
        )
        .await;
    match again {
        Err(ServiceError::IllegalTransition {
            action, allowed, ..
        }) => {
            assert_eq!(action, Action::Kill);
            assert_eq!(allowed, ["concluded", "archived"]);
        }
        other => panic!("expected an illegal transition, got {other:?}"),
    }
    s.finish().await;
}

async fn system_actor_has_only_its_permissions(s: TestServer) {
    s.setup_registry().await;
    s.running("exp_h", json!({}), 5.0).await;
    let svc = ExperimentService::new(s.state().clone());
    assert_eq!(svc.get(&monitor(), "exp_h").await.unwrap().key, "exp_h");

    let ramp = svc
        .act(
            &monitor(),
            "exp_h",
            Action::Ramp,
            ActParams {
                ramp_percent: Some(50.0),
                ..ActParams::default()
            },
        )
        .await;
    assert!(
        matches!(
            ramp,
            Err(ServiceError::Forbidden {
                permission: Perm::ExperimentsWrite,
                ..
            })
        ),
        "{ramp:?}"
    );
    let bare = Actor::system("scheduler");
    let kill = svc
        .act(
            &bare,
            "exp_h",
            Action::Kill,
            ActParams {
                reason: Some("r".into()),
                ..ActParams::default()
            },
        )
        .await;
    assert!(
        matches!(
            kill,
            Err(ServiceError::Forbidden {
                permission: Perm::ExperimentsKill,
                ..
            })
        ),
        "{kill:?}"
    );
    let (_, denied) = s.get("/api/v1/audit?action=denied").await;
    let actors: Vec<&str> = denied["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["system:scheduler", "system:guardrail-monitor"]);
    let (_, got) = s.get("/api/v1/experiments/exp_h").await;
    assert_eq!(
        (got["status"].as_str(), got["ramp_percent"].as_f64()),
        (Some("running"), Some(5.0))
    );
    s.finish().await;
}

async fn system_actor_creates_and_starts_an_experiment(s: TestServer) {
    s.setup_registry().await;
    let scheduler = Actor::system("scheduler").granting([Perm::ExperimentsWrite]);
    let svc = ExperimentService::new(s.state().clone());
    let req: ExperimentRequest =
        serde_json::from_value(crate::common::experiment("exp_s", json!({}))).unwrap();
    let created = svc.create(&scheduler, req.clone()).await.unwrap();
    assert_eq!(
        (created.status, created.created_by.as_str()),
        (Status::Draft, "system:scheduler")
    );
    assert!(matches!(
        svc.create(&scheduler, req).await,
        Err(ServiceError::AlreadyExists { .. })
    ));
    for action in [Action::Submit, Action::Start] {
        svc.act(&scheduler, "exp_s", action, ActParams::default())
            .await
            .unwrap();
    }
    let (_, got) = s.get("/api/v1/experiments/exp_s").await;
    assert_eq!(
        (got["status"].as_str(), got["ramp_percent"].as_f64()),
        (Some("running"), Some(1.0))
    );
    let (_, audit) = s.get("/api/v1/experiments/exp_s/audit").await;
    let actors: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, ["system:scheduler"; 3]);
    s.finish().await;
}
