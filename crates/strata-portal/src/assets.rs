//! The stylesheet and script, compiled into the binary: the portal loads
//! nothing from elsewhere and needs no Node at run time. Each is served
//! under a path that carries the release version, so browsers may keep
//! it for a day and pick up a new release under its new path.

use axum::http::header;
use axum::response::IntoResponse;

/// The stylesheet.
pub const CSS: &str = include_str!("../assets/portal.css");
/// The script: progressive enhancement only; every page works without it.
pub const JS: &str = include_str!("../assets/portal.js");
/// Where the stylesheet is served (the version is the crate's: assets
/// change only with a release).
pub const CSS_PATH: &str = concat!("/assets/portal-", env!("CARGO_PKG_VERSION"), ".css");
/// Where the script is served.
pub const JS_PATH: &str = concat!("/assets/portal-", env!("CARGO_PKG_VERSION"), ".js");

/// `GET` the stylesheet.
pub async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        CSS,
    )
}

/// `GET` the script.
pub async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        JS,
    )
}
