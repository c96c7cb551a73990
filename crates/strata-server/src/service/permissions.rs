//! The one permission table, used by the HTTP handlers and the services.
//!
//! A permission is granted to a token by its kind and role, and reaches
//! either nothing, the experiments (and results) of the token's own team, or
//! those of every team; platform-wide things (layers, keys, the holdout)
//! have no team, and any reach grants them. A system actor has exactly the
//! permissions it was built with, on every team. Every denial is audited.
//!
//! The boundaries: a platform admin manages layers, guardrails, the holdout
//! and keys, approves, and may kill any experiment, but edits and runs only
//! its own team's experiments; an experimenter acts on its own team's
//! experiments; an analyst reads every team's results and writes metrics; a
//! viewer reads.

use crate::auth::{KeyKind, Perm, Principal, Role};
use crate::service::{Actor, ServiceError};
use crate::store::ConfigStore;

/// How far a role's grant of a permission reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Not granted.
    None,
    /// Granted on what the caller's own team owns (and on platform-wide things).
    OwnTeam,
    /// Granted on what every team owns.
    AllTeams,
}

use Reach::{AllTeams as A, None as N, OwnTeam as O};

/// The roles of API keys, in the column order of [`API_TABLE`].
pub const ROLES: [Role; 4] = [Role::Admin, Role::Experimenter, Role::Analyst, Role::Viewer];

/// Per permission, its reach for an API key of role admin, experimenter,
/// analyst and viewer. SDK keys hold `sdk:read` only; ingest keys nothing
/// here (they are accepted by the collection endpoints alone).
pub const API_TABLE: &[(Perm, [Reach; 4])] = &[
    (Perm::Read, [A, A, A, A]),
    (Perm::ExperimentsWrite, [O, O, N, N]),
    (Perm::ExperimentsApprove, [A, N, N, N]),
    (Perm::ExperimentsKill, [A, O, N, N]),
    (Perm::LayersWrite, [A, N, N, N]),
    (Perm::MetricsWrite, [A, N, A, N]),
    (Perm::GuardrailsWrite, [A, N, N, N]),
    (Perm::HoldoutWrite, [A, N, N, N]),
    (Perm::ConfigRollback, [A, N, N, N]),
    (Perm::AuditRead, [A, N, A, N]),
    (Perm::KeysWrite, [A, N, N, N]),
    (Perm::SdkRead, [N, N, N, N]),
    (Perm::ResultsRead, [A, O, A, O]),
    (Perm::ResultsWrite, [A, O, A, N]),
    (Perm::ResultsRetract, [A, N, A, N]),
    (Perm::DataAdmin, [A, N, N, N]),
    (Perm::AlertsWrite, [A, N, N, N]),
];

/// The reach of `perm` for a key of `kind` and `role`.
pub fn reach(kind: KeyKind, role: Role, perm: Perm) -> Reach {
    match kind {
        KeyKind::Sdk if perm == Perm::SdkRead => Reach::AllTeams,
        KeyKind::Sdk | KeyKind::Ingest => Reach::None,
        KeyKind::Api => {
            let col = ROLES.iter().position(|r| *r == role);
            API_TABLE
                .iter()
                .find(|(p, _)| *p == perm)
                .zip(col)
                .map_or(Reach::None, |((_, row), c)| row[c])
        }
    }
}

/// Whether `actor` may exercise `perm` on something owned by `team` (none:
/// a platform-wide thing, or a check of the role alone). `Err` carries the
/// detail of the refusal, if any.
pub fn check(actor: &Actor, perm: Perm, team: Option<&str>) -> Result<(), Option<String>> {
    match actor {
        Actor::System(_) if actor.system_perms().contains(&perm) => Ok(()),
        Actor::System(_) => Err(None),
        Actor::Token(p) => check_principal(p, perm, team),
    }
}

/// [`check`] for the holder of a token, without building an [`Actor`]: the
/// request path checks every request, and an actor is only needed to audit
/// a refusal.
pub fn check_principal(
    p: &Principal,
    perm: Perm,
    team: Option<&str>,
) -> Result<(), Option<String>> {
    match reach(p.kind, p.role, perm) {
        Reach::None => Err(None),
        Reach::AllTeams => Ok(()),
        Reach::OwnTeam => match team {
            Some(t) if t != p.team => Err(Some(format!("the experiment belongs to team {t:?}"))),
            _ => Ok(()),
        },
    }
}

/// Requires `perm` of `actor` on something owned by `team`; a refusal is
/// audited and returned as [`ServiceError::Forbidden`].
pub async fn authorize(
    store: &ConfigStore,
    actor: &Actor,
    perm: Perm,
    team: Option<&str>,
) -> Result<(), ServiceError> {
    match check(actor, perm, team) {
        Ok(()) => Ok(()),
        Err(detail) => Err(deny(store, actor, perm, detail).await),
    }
}

/// Audits a refusal of `perm` to `actor` and returns the error.
pub async fn deny(
    store: &ConfigStore,
    actor: &Actor,
    perm: Perm,
    detail: Option<String>,
) -> ServiceError {
    let err = ServiceError::Forbidden {
        permission: perm,
        detail,
    };
    let message = err.to_string();
    if let Err(e) = store
        .audit_event(actor, "denied", "request", perm.as_str(), Some(&message))
        .await
    {
        tracing::warn!(error = %e, "could not audit a denied request");
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    const ALL_PERMS: [Perm; 17] = [
        Perm::Read,
        Perm::ExperimentsWrite,
        Perm::ExperimentsApprove,
        Perm::ExperimentsKill,
        Perm::LayersWrite,
        Perm::MetricsWrite,
        Perm::GuardrailsWrite,
        Perm::HoldoutWrite,
        Perm::ConfigRollback,
        Perm::AuditRead,
        Perm::KeysWrite,
        Perm::SdkRead,
        Perm::ResultsRead,
        Perm::ResultsWrite,
        Perm::ResultsRetract,
        Perm::DataAdmin,
        Perm::AlertsWrite,
    ];

    fn token(kind: KeyKind, role: Role, team: &str) -> Actor {
        Actor::Token(Principal {
            key_id: "key_1".into(),
            name: "n".into(),
            kind,
            role,
            team: team.into(),
        })
    }

    #[test]
    fn the_table_lists_every_permission_once() {
        for p in ALL_PERMS {
            assert_eq!(
                API_TABLE.iter().filter(|(q, _)| *q == p).count(),
                1,
                "{}",
                p.as_str()
            );
        }
        assert_eq!(API_TABLE.len(), ALL_PERMS.len());
    }

    /// Every role × permission × own team / other team / no team.
    #[test]
    fn each_role_on_own_and_other_teams() {
        // (role, perm, own team, other team, platform-wide)
        let expect = |role: Role, perm: Perm| -> (bool, bool, bool) {
            use Perm::*;
            match (role, perm) {
                (_, SdkRead) => (false, false, false),
                (_, Read) => (true, true, true),
                (Role::Admin, ExperimentsWrite) => (true, false, true),
                (Role::Admin, _) => (true, true, true),
                (
                    Role::Experimenter,
                    ExperimentsWrite | ExperimentsKill | ResultsRead | ResultsWrite,
                ) => (true, false, true),
                (
                    Role::Analyst,
                    MetricsWrite | AuditRead | ResultsRead | ResultsWrite | ResultsRetract,
                ) => (true, true, true),
                (Role::Viewer, ResultsRead) => (true, false, true),
                _ => (false, false, false),
            }
        };
        for role in ROLES {
            let a = token(KeyKind::Api, role, "checkout");
            for perm in ALL_PERMS {
                let got = (
                    check(&a, perm, Some("checkout")).is_ok(),
                    check(&a, perm, Some("search")).is_ok(),
                    check(&a, perm, None).is_ok(),
                );
                assert_eq!(
                    got,
                    expect(role, perm),
                    "{} {}",
                    role.as_str(),
                    perm.as_str()
                );
            }
        }
    }

    #[test]
    fn a_refusal_on_another_team_names_the_team() {
        let a = token(KeyKind::Api, Role::Experimenter, "checkout");
        assert_eq!(
            check(&a, Perm::ExperimentsKill, Some("search")),
            Err(Some("the experiment belongs to team \"search\"".into()))
        );
        assert_eq!(check(&a, Perm::LayersWrite, None), Err(None));
    }

    #[test]
    fn sdk_and_ingest_keys_hold_only_sdk_read() {
        for perm in ALL_PERMS {
            let sdk = token(KeyKind::Sdk, Role::Viewer, "");
            let ingest = token(KeyKind::Ingest, Role::Viewer, "");
            assert_eq!(check(&sdk, perm, None).is_ok(), perm == Perm::SdkRead);
            assert!(check(&ingest, perm, None).is_err());
        }
    }

    #[test]
    fn system_actors_hold_exactly_what_they_are_built_with() {
        let monitor =
            Actor::system("guardrail-monitor").granting([Perm::ExperimentsKill, Perm::Read]);
        for perm in ALL_PERMS {
            let granted = matches!(perm, Perm::ExperimentsKill | Perm::Read);
            assert_eq!(check(&monitor, perm, Some("any")).is_ok(), granted);
            assert_eq!(check(&monitor, perm, None).is_ok(), granted);
        }
        assert_eq!(monitor.audit_name(), "system:guardrail-monitor");
        assert!(ALL_PERMS
            .iter()
            .all(|p| check(&Actor::server(), *p, None).is_err()));
    }
}
