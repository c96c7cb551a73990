//! Who acts: the holder of a token, or a job inside the server process.
//!
//! One type serves permission checks and the audit log alike, so that an
//! operation called in-process by a job of the server is
//! checked against the same permission table and audited under a name just
//! like a request made with a token.

use crate::auth::{KeyKind, Perm, Principal, Role};

/// Who performs an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The holder of a token: its name, key id, kind, role and team.
    Token(Principal),
    /// A job inside the server process, with exactly the permissions it was
    /// built with, on every team's experiments.
    System(SystemActor),
}

/// A job inside the server process (see [`Actor::system`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemActor {
    /// The audited name, `system:<job>` (or `system` for the server itself).
    name: String,
    /// What the job may do.
    perms: Vec<Perm>,
}

/// The key id audited for system actors.
const SYSTEM_KEY: &str = "system";

impl Actor {
    /// A job inside the process named `job`, audited as `system:<job>`, with
    /// no permission until granted by [`Actor::granting`].
    pub fn system(job: &str) -> Self {
        Actor::System(SystemActor {
            name: format!("system:{job}"),
            perms: Vec::new(),
        })
    }

    /// The server itself (bootstrap, key seeding), audited as `system`; it
    /// passes no permission check.
    pub fn server() -> Self {
        Actor::System(SystemActor {
            name: SYSTEM_KEY.to_owned(),
            perms: Vec::new(),
        })
    }

    /// This system actor with `perms` added (a token's permissions come from
    /// its role and cannot be widened: tokens are returned unchanged).
    pub fn granting(self, perms: impl IntoIterator<Item = Perm>) -> Self {
        match self {
            Actor::System(mut s) => {
                for p in perms {
                    if !s.perms.contains(&p) {
                        s.perms.push(p);
                    }
                }
                Actor::System(s)
            }
            token => token,
        }
    }

    /// The name written to the audit log.
    pub fn audit_name(&self) -> &str {
        match self {
            Actor::Token(p) => &p.name,
            Actor::System(s) => &s.name,
        }
    }

    /// The key id written to the audit log (`system` for system actors).
    pub fn audit_key(&self) -> &str {
        match self {
            Actor::Token(p) => &p.key_id,
            Actor::System(_) => SYSTEM_KEY,
        }
    }

    /// The key id of a token (none for system actors).
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Actor::Token(p) => Some(&p.key_id),
            Actor::System(_) => None,
        }
    }

    /// The kind and role of a token (none for system actors).
    pub fn role(&self) -> Option<(KeyKind, Role)> {
        match self {
            Actor::Token(p) => Some((p.kind, p.role)),
            Actor::System(_) => None,
        }
    }

    /// The team of a token (none for system actors).
    pub fn team(&self) -> Option<&str> {
        match self {
            Actor::Token(p) => Some(&p.team),
            Actor::System(_) => None,
        }
    }

    /// The permissions of a system actor (none for tokens: see the
    /// permission table).
    pub(crate) fn system_perms(&self) -> &[Perm] {
        match self {
            Actor::Token(_) => &[],
            Actor::System(s) => &s.perms,
        }
    }
}

impl From<Principal> for Actor {
    fn from(p: Principal) -> Self {
        Actor::Token(p)
    }
}
