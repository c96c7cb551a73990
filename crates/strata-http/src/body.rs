//! Request bodies read with a limit.
//!
//! Both the control plane's JSON API and the collection endpoints refuse a
//! body over their limit with 413 *after* draining it, so the client reads
//! the answer instead of a reset connection.

use std::time::Duration;

use axum::http::{header, HeaderMap};

/// Why [`read_limited`] could not read a request body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is longer than the limit.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The connection failed while the body was being read.
    #[error("reading the request body: {0}")]
    Read(String),
}

/// How much of a refused request body is still read and thrown away before
/// the answer goes out (see [`discard_body`]).
pub const DRAIN_BYTES: u64 = 8 << 20;

/// How long a refused request body is drained at most.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads a request body of at most `limit` bytes, stopping as soon as it is
/// known to be longer (a declared `Content-Length` or the bytes received)
/// rather than buffering whatever the client sends. The remainder of a body
/// that is too long is drained with [`discard_body`] so that the client sees
/// the 413.
pub async fn read_limited(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    use futures_util::StreamExt as _;
    let too_large = BodyError::TooLarge { limit };
    let declared = content_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        discard_body(headers, body, 0).await;
        return Err(too_large);
    }
    let mut stream = body.into_data_stream();
    // Sized once from the declared length (already bounded by the limit)
    // rather than regrown and copied chunk by chunk.
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string().to_lowercase()))?;
        if out.len() + chunk.len() > limit {
            let read = (out.len() + chunk.len()) as u64;
            discard_body(headers, axum::body::Body::from_stream(stream), read).await;
            return Err(too_large);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads and throws away the rest of a request body that will not be used
/// (`already` bytes of it were read), at most [`DRAIN_BYTES`] within
/// [`DRAIN_TIME`]; a body declared longer than that is left unread.
///
/// An HTTP/1 server that answers before the client has sent its whole body
/// closes a socket with unread data; the kernel then resets the connection
/// and most clients report the reset instead of the answer (a 413, 429 or
/// 503 with `Retry-After`). Draining first, as nginx's "lingering close"
/// does, lets the answer arrive, at the cost of reading bytes that are
/// bounded anyway.
pub async fn discard_body(headers: &HeaderMap, body: axum::body::Body, already: u64) {
    use futures_util::StreamExt as _;
    if content_length(headers).is_some_and(|n| n.saturating_sub(already) > DRAIN_BYTES) {
        return;
    }
    let mut stream = body.into_data_stream();
    let drain = async {
        let mut drained = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len() as u64;
            if drained > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

/// The declared `Content-Length`, if present and a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
