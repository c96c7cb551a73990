//! The frame every page shares (head, navigation, who is signed in), the
//! small pieces pages repeat (badges, times, the CSRF field), and the
//! portal's one error type, rendered as a page.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use strata_server::auth::Perm;
use strata_server::model::Status;
use strata_server::service::{permissions, ServiceError};
use strata_server::AppError;

use crate::session::{NoSession, Viewer, CSRF_FIELD};

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// The experiments list and everything under one experiment.
    Experiments,
    /// "Which experiments is this user in?"
    Lookup,
    /// Layers, registry, guardrails, holdout, audit, keys, alerts: the
    /// page's path.
    Platform(&'static str),
    /// No section (sign-in, errors).
    None,
}

/// The platform pages of the navigation, each shown to the roles that may
/// read it.
const PLATFORM: &[(&str, &str, Perm)] = &[
    ("/layers", "Layers", Perm::Read),
    ("/registry", "Metrics", Perm::Read),
    ("/guardrails", "Guardrails", Perm::Read),
    ("/holdout", "Holdout", Perm::Read),
    ("/audit", "Audit log", Perm::AuditRead),
    ("/keys", "Keys", Perm::KeysWrite),
    ("/alerts", "Alerts", Perm::AlertsWrite),
];

/// A whole page: `title`, the navigation for `viewer` (none: signed out)
/// and `body`.
pub fn shell(title: &str, viewer: Option<&Viewer>, nav: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Strata" }
                link rel="stylesheet" href=(crate::assets::CSS_PATH);
                script src=(crate::assets::JS_PATH) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/experiments" { "Strata" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/experiments" aria-current=[(nav == Nav::Experiments).then_some("page")] { "Experiments" } }
                                li { a href="/lookup" aria-current=[(nav == Nav::Lookup).then_some("page")] { "User lookup" } }
                                @for (href, label, perm) in PLATFORM {
                                    @if may(v, *perm, None) {
                                        li { a href=(href) aria-current=[(nav == Nav::Platform(href)).then_some("page")] { (label) } }
                                    }
                                }
                            }
                        }
                        div.who {
                            span { (v.principal.name) " · " (v.principal.role.as_str())
                                @if !v.principal.team.is_empty() { " · " (v.principal.team) } }
                            form method="post" action="/logout" {
                                (csrf_field(v))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// The hidden CSRF field every form of a signed-in page carries.
pub fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(v.csrf); }
}

/// Whether `v` may exercise `perm` on something of `team` (the API's own
/// permission table): what decides whether a button is shown at all.
pub fn may(v: &Viewer, perm: Perm, team: Option<&str>) -> bool {
    permissions::check_principal(&v.principal, perm, team).is_ok()
}

/// A status badge.
pub fn status_badge(s: Status) -> Markup {
    html! { span class={"badge status-" (s.as_str())} { (s.as_str()) } }
}

/// `2026-12-04 13:05 UTC` from an RFC 3339 timestamp (as given when it
/// does not parse).
pub fn when(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}

/// How long ago `rfc3339` was, coarsely (`3 d`, `5 h`, `12 min`).
pub fn age(rfc3339: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return "–".to_owned();
    };
    let secs = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        s if s >= 2 * 86_400 => format!("{} d", s / 86_400),
        s if s >= 3_600 => format!("{} h", s / 3_600),
        s => format!("{} min", s / 60),
    }
}

/// Why a portal request failed; rendered as a page with the right status.
#[derive(Debug)]
pub enum PortalError {
    /// Not signed in (or the session ended): back to the sign-in page.
    SignIn(NoSession),
    /// A form without the CSRF token of its session.
    Csrf,
    /// A malformed request.
    BadRequest(String),
    /// A refusal or failure of the control plane's services.
    Service(ServiceError),
    /// No such page.
    NotFound,
    /// A failure of the process.
    Internal(String),
}

impl From<ServiceError> for PortalError {
    fn from(e: ServiceError) -> Self {
        PortalError::Service(e)
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PortalError::SignIn(why) => {
                let to = match why {
                    NoSession::Expired => "/login?expired=1",
                    NoSession::Missing => "/login",
                };
                return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
            }
            PortalError::Csrf => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the form was sent without its security token (or with a stale one); reload the page and try again".to_owned(),
            ),
            PortalError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            PortalError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "there is no such page".to_owned(),
            ),
            PortalError::Internal(m) => {
                tracing::error!(error = %m, "portal request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    m,
                )
            }
            PortalError::Service(e) => {
                let forbidden = matches!(e, ServiceError::Forbidden { .. });
                let app = AppError::from(e);
                let title = match app.status {
                    StatusCode::FORBIDDEN => "Forbidden",
                    StatusCode::NOT_FOUND => "Not found",
                    s if s.is_server_error() => "Something went wrong",
                    _ => "Refused",
                };
                let message = if forbidden {
                    format!("your role may not do this: {}", app.message)
                } else {
                    app.message
                };
                (app.status, title, message)
            }
        };
        let body = html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/experiments" { "Back to the experiments" } }
        };
        (status, shell(title, None, Nav::None, body)).into_response()
    }
}

/// A page's inline message (`role="alert"` for errors so screen readers
/// announce it).
pub fn notice(kind: &str, message: &str) -> Markup {
    html! {
        @if kind == "error" {
            p class={"notice notice-" (kind)} role="alert" { (message) }
        } @else {
            p class={"notice notice-" (kind)} role="status" { (message) }
        }
    }
}

/// A refusal as a page shows it beside its form: its status and
/// `field: message`. A missing permission or thing is its own page instead.
pub fn refusal(e: ServiceError) -> Result<(StatusCode, String), PortalError> {
    if matches!(
        e,
        ServiceError::Forbidden { .. } | ServiceError::NotFound { .. }
    ) {
        return Err(e.into());
    }
    let app = AppError::from(e);
    let message = match &app.field {
        Some(f) if !f.is_empty() => format!("{f}: {}", app.message),
        _ => app.message,
    };
    Ok((app.status, message))
}

/// A posted form's fields, the CSRF token left out.
pub fn fields(f: &[(String, String)]) -> Vec<(String, String)> {
    f.iter().filter(|(k, _)| k != CSRF_FIELD).cloned().collect()
}

/// The first value of `name` in a form's fields (empty when absent).
pub fn field<'a>(f: &'a [(String, String)], name: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}
