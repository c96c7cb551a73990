//! The administration of the control plane: API keys, the audit log, and
//! config versions with their rollback.
//!
//! Keys are stored by the hash of their token; the token itself exists only
//! in the answer to its creation. A rollback republishes an earlier
//! snapshot's content as a new version, audited like any change; the
//! definitions are not changed, so the next change to them publishes from
//! the definitions again.

use serde::Deserialize;
use serde_json::json;

use crate::auth::{hash_token, new_key_record, new_token, KeyKind, Perm, Role};
use crate::live::SnapshotExtra;
use crate::service::permissions::authorize;
use crate::service::{Actor, ServiceError};
use crate::state::AppState;
use crate::store::{AuditEntry, AuditQuery, KeyRecord, StoreError, StoredSnapshot};

/// The body of `POST /api/v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// `api`, `sdk` or `ingest`.
    pub kind: String,
    /// For `api` keys: `admin`, `experimenter`, `analyst` or `viewer`.
    #[serde(default)]
    pub role: Option<String>,
    /// Team (required for experimenters).
    #[serde(default)]
    pub team: String,
    /// Display name.
    pub name: String,
}

/// A key just created: its record and its token, shown this once.
#[derive(Debug)]
pub struct CreatedKey {
    /// The token to hand to its holder.
    pub token: String,
    /// The stored record.
    pub record: KeyRecord,
}

/// Filters of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// `experiment:KEY`, `layer:KEY`, … or just a key.
    pub entity: Option<String>,
    /// Entity type (`experiment`, `layer`, `metric`, `guardrail`, `holdout`, `config`, `key`, `request`).
    pub entity_type: Option<String>,
    /// Action, e.g. `experiment.kill`, `denied`.
    pub action: Option<String>,
    /// Entries older than this sequence number (paging).
    pub before: Option<i64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// The version a rollback published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// The new version.
    pub version: u64,
    /// The version whose content it republished.
    pub rolled_back_to: u64,
}

/// Keys, the audit log and config versions.
#[derive(Debug, Clone)]
pub struct AdminService {
    state: AppState,
}

impl AdminService {
    /// The service over a server's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn store_error(&self, e: StoreError) -> ServiceError {
        self.state.service_store_error(e)
    }

    /// Creates a key (`keys:write`: admins); audited as `key.create`.
    pub async fn create_key(
        &self,
        actor: &Actor,
        req: KeyRequest,
    ) -> Result<CreatedKey, ServiceError> {
        authorize(&self.state.store, actor, Perm::KeysWrite, None).await?;
        let kind = KeyKind::parse(&req.kind).ok_or_else(|| {
            ServiceError::validation(
                "kind",
                format!(
                    "unknown key kind {:?}; expected api, sdk or ingest",
                    req.kind
                ),
            )
        })?;
        let role = match (kind, req.role.as_deref()) {
            (KeyKind::Api, Some(r)) => Role::parse(r).ok_or_else(|| {
                ServiceError::validation(
                    "role",
                    format!("unknown role {r:?}; expected admin, experimenter, analyst or viewer"),
                )
            })?,
            (KeyKind::Api, None) => {
                return Err(ServiceError::validation(
                    "role",
                    "role is required for api keys",
                ))
            }
            (_, None) => Role::Viewer,
            (_, Some(r)) => Role::parse(r)
                .ok_or_else(|| ServiceError::validation("role", format!("unknown role {r:?}")))?,
        };
        if req.name.trim().is_empty() {
            return Err(ServiceError::validation("name", "name must not be empty"));
        }
        crate::model::check_text("name", &req.name, 128).map_err(ServiceError::from_request)?;
        crate::model::check_text("team", &req.team, 128).map_err(ServiceError::from_request)?;
        if kind == KeyKind::Api && role == Role::Experimenter && req.team.is_empty() {
            return Err(ServiceError::validation(
                "team",
                "an experimenter key needs a team",
            ));
        }
        let internal = |e: crate::AppError| ServiceError::Internal(e.message);
        let token = new_token().map_err(internal)?;
        let record = new_key_record(kind, role, &req.team, &req.name, actor.audit_name())
            .map_err(internal)?;
        self.state
            .store
            .insert_key(&record, &hash_token(&token), actor)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(CreatedKey { token, record })
    }

    /// Every key, never its token (`keys:write`).
    pub async fn keys(&self, actor: &Actor) -> Result<Vec<KeyRecord>, ServiceError> {
        authorize(&self.state.store, actor, Perm::KeysWrite, None).await?;
        self.state
            .store
            .keys()
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Revokes key `id` at once on this instance (`keys:write`); audited.
    pub async fn revoke_key(&self, actor: &Actor, id: &str) -> Result<(), ServiceError> {
        authorize(&self.state.store, actor, Perm::KeysWrite, None).await?;
        let found = self
            .state
            .store
            .revoke_key(id, actor)
            .await
            .map_err(|e| self.store_error(e))?;
        self.state.keys.remove_key(id);
        if found {
            Ok(())
        } else {
            Err(ServiceError::NotFound {
                what: "key",
                key: id.to_owned(),
            })
        }
    }

    /// Audit entries matching `p`, newest first (`audit:read`: analysts and
    /// admins).
    pub async fn audit(
        &self,
        actor: &Actor,
        p: AuditParams,
    ) -> Result<Vec<AuditEntry>, ServiceError> {
        authorize(&self.state.store, actor, Perm::AuditRead, None).await?;
        let (mut entity_type, entity_key) = match p.entity.as_deref() {
            Some(e) => match e.split_once(':') {
                Some((t, k)) => (Some(t.to_owned()), Some(k.to_owned())),
                None => (None, Some(e.to_owned())),
            },
            None => (None, None),
        };
        if p.entity_type.is_some() {
            entity_type = p.entity_type;
        }
        let limit = p.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ServiceError::validation(
                "limit",
                "limit must be between 1 and 1000",
            ));
        }
        self.state
            .store
            .audit(&AuditQuery {
                entity_type,
                entity_key,
                action: p.action,
                before_seq: p.before,
                limit,
            })
            .await
            .map_err(|e| self.store_error(e))
    }

    /// A stored config version (`read`).
    pub async fn config_version(
        &self,
        actor: &Actor,
        version: u64,
    ) -> Result<StoredSnapshot, ServiceError> {
        authorize(&self.state.store, actor, Perm::Read, None).await?;
        self.state
            .store
            .snapshot(version)
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| ServiceError::NotFound {
                what: "config version",
                key: version.to_string(),
            })
    }

    /// Republishes version `to`'s content as a new version
    /// (`config:rollback`: admins); audited as `config.rollback`.
    pub async fn rollback(&self, actor: &Actor, to: u64) -> Result<RolledBack, ServiceError> {
        authorize(&self.state.store, actor, Perm::ConfigRollback, None).await?;
        let mut tx = self
            .state
            .store
            .begin_write(actor)
            .await
            .map_err(|e| self.store_error(e))?;
        let old = tx
            .snapshot(to)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "config version",
                key: to.to_string(),
            })?;
        let mut snapshot: strata_core::Snapshot = serde_json::from_str(&old.body).map_err(|e| {
            ServiceError::Internal(format!(
                "stored snapshot {} is unreadable: {e}",
                old.version
            ))
        })?;
        let extra: SnapshotExtra = serde_json::from_str(&old.extra).unwrap_or_default();
        snapshot.version = tx.version;
        let live = tx
            .store_snapshot(&snapshot, &extra, &format!("rollback to {to}"))
            .await?
            .map_err(ServiceError::InvalidSnapshot)?;
        tx.audit(
            "config.rollback",
            "config",
            &tx.version.to_string(),
            None,
            Some(&json!({ "to_version": to })),
            None,
        )
        .await?;
        let version = self.state.install(tx, live).await?;
        Ok(RolledBack {
            version,
            rolled_back_to: to,
        })
    }
}
