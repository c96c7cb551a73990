//! The portal's integration tests: the real server with the portal mounted,
//! driven over HTTP like a browser without JavaScript (`http`), and in a
//! real headless Chromium (`browser`).

mod browser;
mod common;
mod http;
