//! Errors of building a client. They are the only errors the SDK returns:
//! once built, a client answers every call, with the default if need be.

/// Why [`crate::ClientBuilder::build`] refused to build a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build` was called outside a tokio runtime; the client's background
    /// tasks need one (use [`crate::BlockingClient`] in non-async hosts).
    #[error("no tokio runtime: build the client inside one, or use BlockingClient")]
    NoRuntime,
    /// The server or collector url does not parse or is not http(s).
    #[error("invalid {field} {url:?}: {reason}")]
    InvalidUrl {
        /// Which url: `server_url` or `collector_url`.
        field: &'static str,
        /// The url as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key contains characters that cannot go into an HTTP header.
    #[error("invalid {field}: not a valid http header value")]
    InvalidKey {
        /// Which key: `sdk_key` or `ingest_key`.
        field: &'static str,
    },
    /// An option is out of range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's builder method.
        option: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The HTTP client could not be created.
    #[error("http client: {0}")]
    Http(String),
    /// The runtime of a [`crate::BlockingClient`] could not be started.
    #[error("runtime: {0}")]
    Runtime(String),
}
