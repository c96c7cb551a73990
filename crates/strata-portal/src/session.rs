//! Sign-in sessions, their cookie and the CSRF check of every form.
//!
//! A person signs in with an API token; the portal keeps, in memory, a
//! session that holds the token's hash (never the token), its expiry and a
//! CSRF token, and gives the browser only the session's random id in a
//! cookie (`HttpOnly`, `SameSite=Strict`, `Secure` behind TLS). Every
//! request resolves the hash to the token's principal through the control
//! plane's key cache, so a revoked token ends its sessions at once and the
//! permissions are the API's own.
//!
//! Every state-changing request carries the session's CSRF token in a form
//! field (`csrf`); the sign-in form, which has no session yet, carries a
//! token that must equal a short-lived cookie's (double submit). One
//! middleware ([`guard`]) checks both for every POST before any handler
//! runs, so a handler cannot forget it.
//!
//! Sessions live in the process: a restart signs everyone out, and behind a
//! load balancer a session is valid on the instance that created it only
//! (`docs/operations.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use strata_server::auth::{principal_of_hash, Principal};
use strata_server::service::Actor;

use crate::page::PortalError;
use crate::PortalState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "strata_session";
/// The sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "strata_login";
/// The form field every state-changing request carries.
pub const CSRF_FIELD: &str = "csrf";
/// The largest form body the portal reads.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// An expired session is remembered this long, so that its browser is
/// told it expired rather than just sent to the sign-in page; its cookie
/// lives as long.
pub const EXPIRED_GRACE: Duration = Duration::from_secs(3600);
/// At most this many live sessions; the oldest goes first beyond it, so a
/// flood of sign-ins cannot exhaust memory.
const MAX_SESSIONS: usize = 100_000;

/// A signed-in browser.
#[derive(Debug)]
struct Session {
    /// SHA-256 hex of the token signed in with.
    token_hash: String,
    /// The token's key id, so that signing out everywhere is possible.
    key_id: String,
    /// Required in every form posted by this session.
    csrf: String,
    /// When it stops being valid (absolute: a session is not extended).
    expires: Instant,
    /// When it began (the oldest go first when full).
    created: Instant,
}

/// Every live session of the process.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

/// Why a request has no usable session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// No cookie or an unknown session.
    Missing,
    /// The session has expired.
    Expired,
}

impl Sessions {
    /// Starts a session for the token with hash `token_hash`; returns its id
    /// and CSRF token.
    pub fn create(
        &self,
        token_hash: String,
        key_id: String,
        ttl: Duration,
    ) -> Result<(String, String), PortalError> {
        let id = random()?;
        let csrf = random()?;
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| s.expires + EXPIRED_GRACE > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                token_hash,
                key_id,
                csrf: csrf.clone(),
                expires: now + ttl,
                created: now,
            },
        );
        Ok((id, csrf))
    }

    /// The token hash and CSRF token of session `id`.
    fn lookup(&self, id: &str) -> Result<(String, String), NoSession> {
        let map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let s = map.get(id).ok_or(NoSession::Missing)?;
        if s.expires <= Instant::now() {
            return Err(NoSession::Expired);
        }
        Ok((s.token_hash.clone(), s.csrf.clone()))
    }

    /// Ends session `id`.
    pub fn end(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Ends every session of key `key_id` (its token was revoked); returns
    /// how many.
    pub fn end_key(&self, key_id: &str) -> usize {
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let before = map.len();
        map.retain(|_, s| s.key_id != key_id);
        before - map.len()
    }

    /// Forgets sessions expired for longer than [`EXPIRED_GRACE`];
    /// returns how many are kept.
    pub fn prune(&self) -> usize {
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| s.expires + EXPIRED_GRACE > now);
        map.len()
    }

    /// Sessions still valid.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| s.expires > now)
            .count()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 32 random bytes as hex: session ids and CSRF tokens.
pub fn random() -> Result<String, PortalError> {
    strata_server::auth::random_hex(32).map_err(|e| PortalError::Internal(e.message))
}

/// The value of cookie `name` in the request's headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, path `/`, `Secure`
/// when `secure`; `max_age` none deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let age = max_age.map_or(0, |d| d.as_secs());
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}")
}

/// Whether the request reached the process over TLS (directly configured,
/// or as a TLS-terminating proxy says with `X-Forwarded-Proto`).
pub fn is_secure(state: &PortalState, headers: &HeaderMap) -> bool {
    state.settings.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The signed-in person of a request: their principal (as the API sees
/// their token), their session id and its CSRF token.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token's identity: name, role, team.
    pub principal: Arc<Principal>,
    /// The session id.
    pub session: String,
    /// The CSRF token forms of this session carry.
    pub csrf: String,
}

impl Viewer {
    /// The actor services see: exactly the token's.
    pub fn actor(&self) -> Actor {
        self.principal.actor()
    }
}

/// Resolves the request's session to its viewer.
async fn resolve(state: &PortalState, headers: &HeaderMap) -> Result<Viewer, PortalError> {
    let id = cookie(headers, SESSION_COOKIE).ok_or(PortalError::SignIn(NoSession::Missing))?;
    let (hash, csrf) = state.sessions.lookup(id).map_err(PortalError::SignIn)?;
    let principal = match principal_of_hash(&state.app.store, &state.app.keys, hash).await {
        Ok(p) => p,
        // The token was revoked (or its key is gone): the session ends with it.
        Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
            state.sessions.end(id);
            return Err(PortalError::SignIn(NoSession::Missing));
        }
        Err(e) => return Err(PortalError::Internal(e.message)),
    };
    Ok(Viewer {
        principal,
        session: id.to_owned(),
        csrf,
    })
}

impl FromRequestParts<PortalState> for Viewer {
    type Rejection = PortalError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &PortalState,
    ) -> Result<Self, PortalError> {
        // The guard has resolved the session of a POST already.
        if let Some(v) = parts.extensions.get::<Viewer>() {
            return Ok(v.clone());
        }
        resolve(state, &parts.headers).await
    }
}

/// The middleware in front of every portal route: a state-changing request
/// must carry the CSRF token of its session (or, signing in, the token of
/// the sign-in cookie) in its form, else it is refused with 403 before any
/// handler runs. Safe methods pass untouched.
pub async fn guard(State(state): State<PortalState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    match check(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// [`guard`]'s check of one state-changing request; returns the request
/// with its body restored (and its viewer attached, when signed in).
async fn check(state: &PortalState, req: Request) -> Result<Request, PortalError> {
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| PortalError::BadRequest("the form is too large".into()))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| PortalError::BadRequest("the form could not be read".into()))?;
    let sent = fields
        .iter()
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.as_str());
    if parts.uri.path() == "/login" {
        let expected = cookie(&parts.headers, LOGIN_COOKIE);
        if sent.is_none() || sent != expected {
            return Err(PortalError::Csrf);
        }
    } else {
        let viewer = resolve(state, &parts.headers).await?;
        if sent != Some(viewer.csrf.as_str()) {
            return Err(PortalError::Csrf);
        }
        parts.extensions.insert(viewer);
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; strata_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn set_cookie_is_http_only_and_strict() {
        let c = set_cookie("s", "v", Some(Duration::from_secs(60)), false);
        assert_eq!(c, "s=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60");
        assert!(set_cookie("s", "v", None, true).ends_with("Max-Age=0; Secure"));
    }

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::default();
        let (id, csrf) = s
            .create("h".into(), "k".into(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(s.lookup(&id), Ok(("h".into(), csrf)));
        s.end(&id);
        assert_eq!(s.lookup(&id), Err(NoSession::Missing));
        let (id, _) = s.create("h".into(), "k".into(), Duration::ZERO).unwrap();
        assert_eq!(s.lookup(&id), Err(NoSession::Expired));
        // Remembered as expired for a while, but not counted as live.
        assert_eq!(s.lookup(&id), Err(NoSession::Expired));
        assert_eq!((s.len(), s.prune()), (0, 1));
        s.create("h".into(), "k".into(), Duration::from_secs(60))
            .unwrap();
        s.create("h2".into(), "k2".into(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(s.end_key("k"), 2);
        assert_eq!(s.prune(), 1);
    }
}
