//! Signing in with an API token, and out.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use strata_server::auth::{hash_token, principal, KeyKind};

use crate::page::{notice, shell, Nav, PortalError};
use crate::session::{
    cookie, is_secure, random, set_cookie, Viewer, CSRF_FIELD, EXPIRED_GRACE, LOGIN_COOKIE,
    SESSION_COOKIE,
};
use crate::PortalState;

/// How long the sign-in form's double-submit cookie lasts.
const LOGIN_FORM_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Query of `GET /login`.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Set when a session expired.
    expired: Option<String>,
}

/// `GET /login`: the sign-in form (or the experiments, when signed in).
pub async fn form(
    State(state): State<PortalState>,
    viewer: Result<Viewer, PortalError>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, PortalError> {
    if viewer.is_ok() {
        return Ok(Redirect::to("/experiments").into_response());
    }
    let message = q
        .expired
        .is_some()
        .then_some("your session has expired; sign in again");
    render(&state, &headers, StatusCode::OK, message, None)
}

/// The sign-in page with a fresh form token.
fn render(
    state: &PortalState,
    headers: &HeaderMap,
    status: StatusCode,
    message: Option<&str>,
    error: Option<&str>,
) -> Result<Response, PortalError> {
    let token = random()?;
    let body = html! {
        h1 { "Sign in" }
        @if let Some(m) = message { (notice("warn", m)) }
        form.stack method="post" action="/login" {
            input type="hidden" name=(CSRF_FIELD) value=(token);
            label for="token" { "API token" }
            input #token type="password" name="token" required autocomplete="off"
                autofocus aria-describedby="token-help"
                aria-invalid=[error.map(|_| "true")];
            @if let Some(e) = error { span.field-error #token-error role="alert" { (e) } }
            span.muted #token-help { "An API token from your platform admin (" code { "strata token create" } ")." }
            div { button.primary type="submit" { "Sign in" } }
        }
    };
    let cookie = set_cookie(
        LOGIN_COOKIE,
        &token,
        Some(LOGIN_FORM_TTL),
        is_secure(state, headers),
    );
    Ok((
        status,
        [(header::SET_COOKIE, cookie)],
        shell("Sign in", None, Nav::None, body),
    )
        .into_response())
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /login`: exchanges a token for a session cookie.
pub async fn submit(
    State(state): State<PortalState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, PortalError> {
    let token = f.token.trim();
    if token.is_empty() {
        return render(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            None,
            Some("enter an api token"),
        );
    }
    let p = match principal(&state.app.store, &state.app.keys, token).await {
        Ok(p) => p,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return render(
                &state,
                &headers,
                StatusCode::UNAUTHORIZED,
                None,
                Some("this token is unknown or has been revoked"),
            )
        }
        Err(e) => return Err(PortalError::Internal(e.message)),
    };
    if p.kind != KeyKind::Api {
        return render(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            None,
            Some(&format!(
                "a {} key cannot sign in; use an api token",
                p.kind.as_str()
            )),
        );
    }
    let ttl = state.settings.session_ttl;
    let (id, _) = state
        .sessions
        .create(hash_token(token), p.key_id.clone(), ttl)?;
    tracing::info!(key = %p.key_id, name = %p.name, "portal sign-in");
    let secure = is_secure(&state, &headers);
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/experiments".to_owned()),
            (
                header::SET_COOKIE,
                // Outlives the session by the grace period, so an expired
                // session is told apart from none.
                set_cookie(SESSION_COOKIE, &id, Some(ttl + EXPIRED_GRACE), secure),
            ),
        ],
    )
        .into_response())
}

/// `POST /logout`: ends the session.
pub async fn logout(
    State(state): State<PortalState>,
    headers: HeaderMap,
    viewer: Viewer,
) -> Response {
    state.sessions.end(&viewer.session);
    let secure = is_secure(&state, &headers);
    // The session cookie of a request that reached here is the viewer's.
    debug_assert_eq!(
        cookie(&headers, SESSION_COOKIE),
        Some(viewer.session.as_str())
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_owned()),
            (
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, "", None, secure),
            ),
        ],
    )
        .into_response()
}
