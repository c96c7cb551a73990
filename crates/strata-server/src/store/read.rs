//! Reads of experiments, definitions and snapshots.
//!
//! Each query is written once, over a connection, so that a [`ConfigStore`]
//! runs it on a pooled connection and a [`WriteTx`](super::WriteTx) inside its
//! transaction, where it sees the change's own writes before they commit.
//! Soft-deleted experiments and definitions are never returned.

use serde::de::DeserializeOwned;
use sqlx::{AnyConnection, Row};

use super::{from_json, rfc3339, ConfigStore, Result};
use crate::model::ExperimentRecord;

/// A stored snapshot.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    /// Version.
    pub version: u64,
    /// The JSON body SDKs receive.
    pub body: String,
    /// The server-side extras (disabled flags).
    pub extra: String,
    /// RFC 3339.
    pub created_at: String,
    /// Who published it.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// Which experiments [`ConfigStore::select_experiments`] returns, by
/// their indexed columns (and, as a prefilter, the stored document's text).
#[derive(Debug, Clone, Default)]
pub struct ExperimentSelect {
    /// Any of these statuses (`running`, …).
    pub statuses: Option<Vec<String>>,
    /// In this layer.
    pub layer: Option<String>,
    /// Owned by this team.
    pub owner_team: Option<String>,
    /// Created at or after, ms.
    pub created_after: Option<i64>,
    /// Created before, ms.
    pub created_before: Option<i64>,
    /// Lowercase ASCII text the stored document contains, in any field:
    /// a prefilter only (it also matches other fields, such as targeting
    /// values), that the caller narrows to the fields it searches.
    pub contains: Option<String>,
}

impl ConfigStore {
    /// The experiments matching `sel`, oldest first, with how many match;
    /// only the page `(offset, limit)` when one is given (the count is of
    /// all), so that a page of thousands reads only its own documents.
    pub async fn select_experiments(
        &self,
        sel: &ExperimentSelect,
        page: Option<(usize, usize)>,
    ) -> Result<(Vec<ExperimentRecord>, usize)> {
        let mut clauses = vec!["deleted = 0".to_owned()];
        let mut binds: Vec<Bind> = Vec::new();
        fn next(b: Bind, binds: &mut Vec<Bind>) -> String {
            binds.push(b);
            format!("${}", binds.len())
        }
        if let Some(statuses) = &sel.statuses {
            let ps: Vec<String> = statuses
                .iter()
                .map(|st| next(Bind::Text(st.clone()), &mut binds))
                .collect();
            clauses.push(if ps.is_empty() {
                "1 = 0".to_owned()
            } else {
                format!("status IN ({})", ps.join(", "))
            });
        }
        for (col, v) in [("layer", &sel.layer), ("owner_team", &sel.owner_team)] {
            if let Some(v) = v {
                let p = next(Bind::Text(v.clone()), &mut binds);
                clauses.push(format!("{col} = {p}"));
            }
        }
        if let Some(a) = sel.created_after {
            let p = next(Bind::Int(a), &mut binds);
            clauses.push(format!("created_at >= {p}"));
        }
        if let Some(b) = sel.created_before {
            let p = next(Bind::Int(b), &mut binds);
            clauses.push(format!("created_at < {p}"));
        }
        if let Some(t) = &sel.contains {
            let escaped = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let p = next(Bind::Text(format!("%{escaped}%")), &mut binds);
            clauses.push(format!("LOWER(doc) LIKE {p} ESCAPE '\\'"));
        }
        let filter = clauses.join(" AND ");
        let mut c = self.conn().await?;
        let total = match page {
            Some(_) => {
                let sql = format!("SELECT COUNT(*) FROM experiments WHERE {filter}");
                let row = bind_all(sqlx::query(&sql), &binds)
                    .fetch_one(&mut *c)
                    .await?;
                usize::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0)
            }
            None => 0,
        };
        let mut sql =
            format!("SELECT doc FROM experiments WHERE {filter} ORDER BY created_at, key");
        if let Some((offset, limit)) = page {
            binds.push(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
            binds.push(Bind::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
            sql.push_str(&format!(
                " LIMIT ${} OFFSET ${}",
                binds.len() - 1,
                binds.len()
            ));
        }
        let rows = bind_all(sqlx::query(&sql), &binds)
            .fetch_all(&mut *c)
            .await?;
        let items: Vec<ExperimentRecord> = rows
            .iter()
            .map(|r| from_json("experiment", &r.try_get::<String, _>(0)?))
            .collect::<Result<_>>()?;
        let total = if page.is_some() { total } else { items.len() };
        Ok((items, total))
    }

    /// The latest published version (0 if none).
    pub async fn head_version(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM snapshots")
            .fetch_one(&self.pool)
            .await?;
        let v: i64 = row.try_get(0)?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    /// A stored snapshot.
    pub async fn snapshot(&self, version: u64) -> Result<Option<StoredSnapshot>> {
        let mut c = self.conn().await?;
        load_snapshot(&mut c, version).await
    }

    /// One experiment (soft-deleted ones are not found).
    pub async fn experiment(&self, key: &str) -> Result<Option<ExperimentRecord>> {
        let mut c = self.conn().await?;
        load_experiment(&mut c, key).await
    }

    /// Every experiment that is not soft-deleted, oldest first.
    pub async fn experiments(&self) -> Result<Vec<ExperimentRecord>> {
        let mut c = self.conn().await?;
        load_experiments(&mut c).await
    }

    /// The experiments of one layer.
    pub async fn experiments_in_layer(&self, layer: &str) -> Result<Vec<ExperimentRecord>> {
        let mut c = self.conn().await?;
        load_layer_experiments(&mut c, layer).await
    }

    /// A definition (`layer`, `metric`, `guardrail`, `holdout`).
    pub async fn definition<T: DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
    ) -> Result<Option<T>> {
        let mut c = self.conn().await?;
        load_definition(&mut c, kind, key).await
    }

    /// Every definition of a kind.
    pub async fn definitions<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>> {
        let mut c = self.conn().await?;
        load_definitions(&mut c, kind).await
    }
}

pub(super) async fn load_snapshot(
    c: &mut AnyConnection,
    version: u64,
) -> Result<Option<StoredSnapshot>> {
    let v = i64::try_from(version).unwrap_or(i64::MAX);
    let row = sqlx::query(
        "SELECT version, body, extra, created_at, actor, reason FROM snapshots WHERE version = $1",
    )
    .bind(v)
    .fetch_optional(&mut *c)
    .await?;
    row.map(|r| {
        Ok(StoredSnapshot {
            version: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
            body: r.try_get(1)?,
            extra: r.try_get(2)?,
            created_at: rfc3339(r.try_get(3)?),
            actor: r.try_get(4)?,
            reason: r.try_get(5)?,
        })
    })
    .transpose()
}

pub(super) async fn load_experiment(
    c: &mut AnyConnection,
    key: &str,
) -> Result<Option<ExperimentRecord>> {
    let row = sqlx::query("SELECT doc FROM experiments WHERE key = $1 AND deleted = 0")
        .bind(key)
        .fetch_optional(&mut *c)
        .await?;
    row.map(|r| from_json("experiment", &r.try_get::<String, _>(0)?))
        .transpose()
}

/// A value bound to a query.
#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Int(i64),
}

/// `q` with `binds` bound in order.
fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t.as_str()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q
}

pub(super) async fn load_experiments(c: &mut AnyConnection) -> Result<Vec<ExperimentRecord>> {
    let rows =
        sqlx::query("SELECT doc FROM experiments WHERE deleted = 0 ORDER BY created_at, key")
            .fetch_all(&mut *c)
            .await?;
    rows.iter()
        .map(|r| from_json("experiment", &r.try_get::<String, _>(0)?))
        .collect()
}

pub(super) async fn load_definitions<T: DeserializeOwned>(
    c: &mut AnyConnection,
    kind: &str,
) -> Result<Vec<T>> {
    let rows = sqlx::query(
        "SELECT doc FROM definitions WHERE kind = $1 AND deleted = 0 ORDER BY created_at, key",
    )
    .bind(kind)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| from_json(kind, &r.try_get::<String, _>(0)?))
        .collect()
}

pub(super) async fn load_layer_experiments(
    c: &mut AnyConnection,
    layer: &str,
) -> Result<Vec<ExperimentRecord>> {
    let rows = sqlx::query(
        "SELECT doc FROM experiments WHERE layer = $1 AND deleted = 0 ORDER BY created_at, key",
    )
    .bind(layer)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| from_json("experiment", &r.try_get::<String, _>(0)?))
        .collect()
}

pub(super) async fn load_definition<T: DeserializeOwned>(
    c: &mut AnyConnection,
    kind: &str,
    key: &str,
) -> Result<Option<T>> {
    let row =
        sqlx::query("SELECT doc FROM definitions WHERE kind = $1 AND key = $2 AND deleted = 0")
            .bind(kind)
            .bind(key)
            .fetch_optional(&mut *c)
            .await?;
    row.map(|r| from_json(kind, &r.try_get::<String, _>(0)?))
        .transpose()
}
