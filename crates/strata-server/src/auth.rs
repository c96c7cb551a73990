//! Bearer tokens, roles, permissions and per-token rate limits.
//!
//! A token is `strata_` + 64 hex digits (256 random bits); only its SHA-256
//! is stored. Known tokens are cached in memory so that SDK requests never
//! wait for (or depend on) the store once a token has been seen.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::service::{permissions, Actor};
use crate::state::AppState;
use crate::store::{ConfigStore, KeyRecord};

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The management API, with a role.
    Api,
    /// SDKs: read the snapshot, evaluate.
    Sdk,
    /// Event ingestion: write events only.
    Ingest,
}

impl KeyKind {
    /// Parses `api`, `sdk`, `ingest`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "api" => KeyKind::Api,
            "sdk" => KeyKind::Sdk,
            "ingest" => KeyKind::Ingest,
            _ => return None,
        })
    }

    /// The kind as a string.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Api => "api",
            KeyKind::Sdk => "sdk",
            KeyKind::Ingest => "ingest",
        }
    }
}

/// Role of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only.
    Viewer,
    /// Reads everything; creates metric definitions.
    Analyst,
    /// Creates and runs the experiments of its team.
    Experimenter,
    /// Runs the platform: layers, guardrails, the holdout, keys, approvals;
    /// may kill any experiment but runs only its own team's (see
    /// [`crate::service::permissions`]).
    Admin,
}

impl Role {
    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "viewer" => Role::Viewer,
            "analyst" => Role::Analyst,
            "experimenter" => Role::Experimenter,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    /// The role name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Experimenter => "experimenter",
            Role::Admin => "admin",
        }
    }
}

/// A permission, named in 403 responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Read experiments, layers, metrics, guardrails, the holdout, config versions.
    Read,
    /// Create, edit and run experiments (own team, admins included).
    ExperimentsWrite,
    /// Approve experiments that require it.
    ExperimentsApprove,
    /// Kill experiments (own team; admins: any).
    ExperimentsKill,
    /// Create layers.
    LayersWrite,
    /// Create metric definitions.
    MetricsWrite,
    /// Create guardrail definitions.
    GuardrailsWrite,
    /// Change the global holdout.
    HoldoutWrite,
    /// Roll the config back.
    ConfigRollback,
    /// Read the audit log.
    AuditRead,
    /// Manage keys.
    KeysWrite,
    /// Read the SDK snapshot and evaluate.
    SdkRead,
    /// Read analysis results (analysts and admins: every team; others: their team's).
    ResultsRead,
    /// Publish analysis results (analysts and admins; experimenters: their team's).
    ResultsWrite,
    /// Retract a published look at the results (analysts and admins, every
    /// team's): a correction of the record is not the publisher's to make alone.
    ResultsRetract,
    /// Operate the event pipeline: compact now, delete a unit's data.
    DataAdmin,
    /// Register and remove alert webhooks; read their deliveries.
    AlertsWrite,
}

impl Perm {
    /// The permission's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Read => "config:read",
            Perm::ExperimentsWrite => "experiments:write",
            Perm::ExperimentsApprove => "experiments:approve",
            Perm::ExperimentsKill => "experiments:kill",
            Perm::LayersWrite => "layers:write",
            Perm::MetricsWrite => "metrics:write",
            Perm::GuardrailsWrite => "guardrails:write",
            Perm::HoldoutWrite => "holdout:write",
            Perm::ConfigRollback => "config:rollback",
            Perm::AuditRead => "audit:read",
            Perm::KeysWrite => "keys:write",
            Perm::SdkRead => "sdk:read",
            Perm::ResultsRead => "results:read",
            Perm::ResultsWrite => "results:write",
            Perm::ResultsRetract => "results:retract",
            Perm::DataAdmin => "data:admin",
            Perm::AlertsWrite => "alerts:write",
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key id.
    pub key_id: String,
    /// Key name.
    pub name: String,
    /// Kind.
    pub kind: KeyKind,
    /// Role (API keys; `viewer` for the others).
    pub role: Role,
    /// Team.
    pub team: String,
}

impl Principal {
    /// The audit actor.
    pub fn actor(&self) -> Actor {
        Actor::Token(self.clone())
    }

    /// Whether the role grants `perm` on something of the caller's own team
    /// (checks on another team's things are separate; see
    /// [`crate::service::permissions`]).
    pub fn has(&self, perm: Perm) -> bool {
        permissions::reach(self.kind, self.role, perm) != permissions::Reach::None
    }

    fn from_key(k: &KeyRecord) -> Option<Self> {
        let kind = KeyKind::parse(&k.kind)?;
        let role = if kind == KeyKind::Api {
            Role::parse(&k.role)?
        } else {
            Role::Viewer
        };
        Some(Self {
            key_id: k.id.clone(),
            name: k.name.clone(),
            kind,
            role,
            team: k.team.clone(),
        })
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// SHA-256 hex of a token.
pub fn hash_token(token: &str) -> String {
    to_hex(&Sha256::digest(token.as_bytes()))
}

/// `n` random bytes as hex, from the OS generator.
pub fn random_hex(n: usize) -> Result<String, AppError> {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng
        .try_fill_bytes(&mut buf)
        .map_err(|e| AppError::internal(format!("no randomness available: {e}")))?;
    Ok(to_hex(&buf))
}

/// A new token: `strata_` + 256 random bits in hex.
pub fn new_token() -> Result<String, AppError> {
    Ok(format!("strata_{}", random_hex(32)?))
}

/// A new key record with a random id.
pub fn new_key_record(
    kind: KeyKind,
    role: Role,
    team: &str,
    name: &str,
    created_by: &str,
) -> Result<KeyRecord, AppError> {
    Ok(KeyRecord {
        id: format!("key_{}", random_hex(8)?),
        kind: kind.as_str().to_owned(),
        role: role.as_str().to_owned(),
        team: team.to_owned(),
        name: name.to_owned(),
        created_at: String::new(),
        created_by: created_by.to_owned(),
        revoked: false,
    })
}

/// Requests per second per token: a token bucket per key (strata-http's
/// bounded limiter), with a burst of one second's worth.
#[derive(Debug)]
pub struct RateLimiter(strata_http::limit::RateLimiter);

/// Tokens remembered by a limiter; past this, idle buckets (which are full
/// again anyway) are forgotten first.
const LIMITER_KEYS: usize = 65_536;

impl RateLimiter {
    /// `per_second` = 0 disables limiting. The burst equals one second's worth.
    pub fn new(per_second: f64) -> Self {
        let rate = strata_http::limit::Rate::per_second(per_second.max(0.0));
        Self(strata_http::limit::RateLimiter::new(rate, LIMITER_KEYS))
    }

    /// `Ok` if the key may make a request now, else the seconds to wait.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let hash = strata_http::limit::RateLimiter::key_hash(key.as_bytes());
        match self.0.take_exact(hash, 1.0, Instant::now()) {
            strata_http::limit::Verdict::Allow => Ok(()),
            strata_http::limit::Verdict::Deny(wait) => Err(strata_http::retry_after_secs(wait)),
        }
    }
}

/// Cache of known tokens, by hash.
#[derive(Debug, Default)]
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, Arc<Principal>>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Arc<Principal>> {
        self.by_hash
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned()
    }

    /// Adds a stored key to the cache (keys of unknown kind or role are skipped).
    pub fn warm(&self, hash: String, key: &KeyRecord) {
        if let Some(p) = Principal::from_key(key) {
            self.put(hash, Arc::new(p));
        }
    }

    fn put(&self, hash: String, p: Arc<Principal>) {
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash, p);
    }

    /// Replaces the cache with the store's active keys, so that keys revoked
    /// on another instance stop working here too.
    pub fn replace_all(&self, keys: &[(String, KeyRecord)]) {
        let fresh: HashMap<String, Arc<Principal>> = keys
            .iter()
            .filter_map(|(h, k)| Some((h.clone(), Arc::new(Principal::from_key(k)?))))
            .collect();
        *self.by_hash.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// Forgets a key (after revocation).
    pub fn remove_key(&self, key_id: &str) {
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, p| p.key_id != key_id);
    }
}

/// The principal of a bearer token: from the cache, else from the store
/// (then cached).
pub async fn principal(
    store: &ConfigStore,
    keys: &KeyCache,
    token: &str,
) -> Result<Arc<Principal>, AppError> {
    principal_of_hash(store, keys, hash_token(token)).await
}

/// The principal of the token whose [`hash_token`] is `hash`: what a
/// session that keeps the hash rather than the token resolves on every
/// request, so that revoking the token ends the session.
pub async fn principal_of_hash(
    store: &ConfigStore,
    keys: &KeyCache,
    hash: String,
) -> Result<Arc<Principal>, AppError> {
    if let Some(p) = keys.get(&hash) {
        return Ok(p);
    }
    let rec = store
        .key_by_hash(&hash)
        .await
        .map_err(AppError::from)?
        .ok_or_else(|| AppError::unauthorized("unknown or revoked token"))?;
    let p = Arc::new(
        Principal::from_key(&rec)
            .ok_or_else(|| AppError::internal("stored key has an unknown kind or role"))?,
    );
    keys.put(hash, p.clone());
    Ok(p)
}

/// The authenticated caller of a request (401 without a valid bearer token,
/// 429 over its rate limit).
#[derive(Debug, Clone)]
pub struct Auth(pub Arc<Principal>);

impl std::ops::Deref for Auth {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            AppError::unauthorized("missing authorization header; expected Bearer <token>")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                AppError::unauthorized("malformed authorization header; expected Bearer <token>")
            })?;
        let principal = principal(&state.store, &state.keys, token).await?;
        let limiter = if principal.kind == KeyKind::Api {
            &state.limiter
        } else {
            &state.sdk_limiter
        };
        limiter
            .check(&principal.key_id)
            .map_err(AppError::rate_limited)?;
        Ok(Auth(principal))
    }
}

impl Auth {
    /// Requires `perm` (by role, whatever the team); a denial is audited and
    /// answered with 403.
    pub async fn require(&self, state: &AppState, perm: Perm) -> Result<(), AppError> {
        self.require_on(state, perm, None).await
    }

    /// Requires `perm` on something owned by `team` (none: platform-wide),
    /// as the permission table says; a denial is audited and answered with
    /// 403.
    pub async fn require_on(
        &self,
        state: &AppState,
        perm: Perm,
        team: Option<&str>,
    ) -> Result<(), AppError> {
        match permissions::check_principal(self, perm, team) {
            Ok(()) => Ok(()),
            Err(detail) => Err(permissions::deny(&state.store, &self.actor(), perm, detail)
                .await
                .into()),
        }
    }

    /// Audits a denial and returns the 403.
    pub async fn deny(&self, state: &AppState, perm: Perm, detail: Option<&str>) -> AppError {
        permissions::deny(&state.store, &self.actor(), perm, detail.map(str::to_owned))
            .await
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hash_to_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = new_token().unwrap();
        assert_eq!(t.len(), 71);
        assert_ne!(t, new_token().unwrap());
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_refuses() {
        let l = RateLimiter::new(3.0);
        assert!((0..3).all(|_| l.check("k").is_ok()));
        assert_eq!(l.check("k"), Err(1));
        assert!(l.check("other").is_ok());
        assert!(RateLimiter::new(0.0).check("k").is_ok());
    }

    #[test]
    fn roles_grant_what_the_matrix_says() {
        let p = |kind, role| Principal {
            key_id: "k".into(),
            name: "n".into(),
            kind,
            role,
            team: "t".into(),
        };
        assert!(p(KeyKind::Api, Role::Analyst).has(Perm::MetricsWrite));
        assert!(!p(KeyKind::Api, Role::Experimenter).has(Perm::MetricsWrite));
        assert!(!p(KeyKind::Api, Role::Experimenter).has(Perm::AuditRead));
        assert!(!p(KeyKind::Api, Role::Admin).has(Perm::SdkRead));
        assert!(p(KeyKind::Sdk, Role::Viewer).has(Perm::SdkRead));
        assert!(!p(KeyKind::Sdk, Role::Viewer).has(Perm::Read));
        assert!(!p(KeyKind::Ingest, Role::Viewer).has(Perm::SdkRead));
    }
}
