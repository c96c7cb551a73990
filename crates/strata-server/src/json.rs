//! A JSON body extractor whose rejections are [`AppError`]s.
//!
//! axum's own `Json` answers malformed bodies with plain text; this one
//! answers with the API's error shape and names the offending field (via
//! `serde_path_to_error`), so `{"variants": [{"weight": "x"}]}` is reported
//! at `variants[0].weight`.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use strata_http::body::{read_limited, BodyError};

use crate::error::AppError;
use crate::state::AppState;

/// A JSON request body (any `Content-Type` is accepted; the body must be JSON).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let ApiBody(bytes) = ApiBody::from_request(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// A raw request body of at most the configured `max_body_bytes`; a longer
/// one is answered 413 `body_too_large` after the rest is drained, so the
/// client receives the answer instead of a reset connection.
#[derive(Debug, Clone, Default)]
pub struct ApiBody(pub Vec<u8>);

impl FromRequest<AppState> for ApiBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        match read_limited(&parts.headers, body, state.settings.max_body_bytes).await {
            Ok(bytes) => Ok(ApiBody(bytes)),
            Err(BodyError::TooLarge { limit }) => Err(AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than {limit} bytes"),
            )),
            Err(e) => Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                e.to_string(),
            )),
        }
    }
}

/// Parses a JSON document, reporting the field at fault.
///
/// serde's messages speak of Rust types (`expected u64`, `expected struct
/// EventFilter`); they are translated into the API's words
/// (`planned_units must be a whole number ≥ 0, got the string "x"`) so a
/// client never needs to know how the server is written.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::bad_json(
            "request body is empty; expected a json object",
            None,
        ));
    }
    // Every body of the API is an object; serde would also read a struct
    // from an array of its fields in order (`[1]` as `{"percent": 1}`).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(AppError::bad_json(
            "request body must be a json object, not an array",
            None,
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // serde_json reports a number or a list where a named choice
            // belongs as a syntax error ("expected value"), though the
            // document is well-formed; that is the field's fault.
            let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
            if well_formed && !(path == "." || path.is_empty()) {
                return AppError::bad_json(
                    format!("{path} must be a string naming one of its choices"),
                    Some(path),
                );
            }
            return AppError::bad_json(syntax_message(&inner), None);
        }
        let raw = serde_message(&inner);
        let message = raw.replace('`', "");
        let field = if path == "." || path.is_empty() {
            unknown_field_name(&message).or_else(|| missing_field_name(&message))
        } else if let Some(name) = missing_field_name(&message) {
            Some(format!("{path}.{name}"))
        } else {
            match unknown_field_name(&message) {
                Some(name) if !path.ends_with(&name) => Some(format!("{path}.{name}")),
                _ => Some(path),
            }
        };
        let subject = match &field {
            Some(f) if f != "." => f.as_str(),
            _ => "the request body",
        };
        let message = match translate(&raw, subject) {
            Some(m) => m,
            None => match &field {
                Some(f) => format!("field {f}: {message}"),
                None => message,
            },
        };
        AppError::bad_json(message, field)
    })?;
    Ok(value)
}

/// serde_json's message without its " at line L column C" suffix or a
/// trailing full stop (backticks kept, they delimit names).
fn serde_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let trimmed = match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    };
    trimmed.trim_end_matches('.').to_owned()
}

/// The message of a syntax or end-of-input error, with its position.
fn syntax_message(e: &serde_json::Error) -> String {
    format!(
        "malformed json at line {} column {}: {}",
        e.line(),
        e.column(),
        serde_message(e).replace('`', "")
    )
}

/// serde's data-error message in the API's words, as a sentence about
/// `subject`; `None` for messages that already speak the API's language
/// (unknown, missing and duplicate fields, and Strata's own messages).
fn translate(raw: &str, subject: &str) -> Option<String> {
    if let Some(rest) = raw
        .strip_prefix("invalid type: ")
        .or_else(|| raw.strip_prefix("invalid value: "))
    {
        let (got, expected) = rest.split_once(", expected ")?;
        return Some(format!(
            "{subject} must be {}, got {}",
            expected_words(expected),
            unexpected_words(got)
        ));
    }
    if let Some(rest) = raw.strip_prefix("invalid length ") {
        let (n, expected) = rest.split_once(", expected ")?;
        if expected.starts_with("struct ") {
            // serde also reads a struct from a list of its fields in order; a
            // client writing a list meant something else.
            return Some(format!("{subject} must be an object, got a list"));
        }
        return Some(format!(
            "{subject} must be {}, got {n} items",
            expected_words(expected)
        ));
    }
    if let Some(rest) = raw.strip_prefix("unknown variant ") {
        let (got, expected) = rest.split_once(", ")?;
        let got = got.trim_matches('`');
        let choices = expected
            .trim_start_matches("expected one of ")
            .trim_start_matches("expected ")
            .replace('`', "");
        if choices.starts_with("there are no variants") {
            return Some(format!("{subject} accepts no value, got {got:?}"));
        }
        return Some(format!(
            "{subject} must be one of {}, got {got:?}",
            choices.replace(" or ", ", ")
        ));
    }
    if raw.starts_with("data did not match any variant of untagged enum") {
        return Some(format!(
            "{subject} does not match any of its accepted forms"
        ));
    }
    None
}

/// An `expected …` clause of serde in the API's words; text that names no
/// Rust type (a Strata-authored expectation) is kept.
fn expected_words(expected: &str) -> String {
    let e = expected.trim();
    let words = match e {
        "u8" => "a whole number between 0 and 255",
        "u16" => "a whole number between 0 and 65535",
        "u32" => "a whole number between 0 and 4294967295",
        "u64" | "u128" | "usize" => "a whole number ≥ 0",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" | "a byte array" | "a borrowed byte array" => "a string",
        "a character" | "a char" => "a single character",
        "a sequence" => "a list",
        "a map" | "a JSON object" => "an object",
        "option" | "an optional value" => "a value or null",
        "unit" => "null",
        _ => "",
    };
    if !words.is_empty() {
        return words.to_owned();
    }
    if e.starts_with("struct ")
        || e.starts_with("internally tagged enum ")
        || e.starts_with("adjacently tagged enum ")
        || e.starts_with("map ")
    {
        "an object".to_owned()
    } else if e.starts_with("enum ") || e.ends_with(" identifier") || e == "variant index" {
        "a string".to_owned()
    } else if e.starts_with("unit struct ") || e.starts_with("unit variant") {
        "null".to_owned()
    } else if let Some(n) = e
        .strip_prefix("a tuple of size ")
        .or_else(|| e.strip_prefix("an array of length "))
    {
        format!("a list of {n} items")
    } else if e.starts_with("tuple struct ") || e.starts_with("tuple variant") {
        match e.rsplit_once(" with ") {
            Some((_, n)) => format!("a list of {}", n.replace("elements", "items")),
            None => "a list".to_owned(),
        }
    } else if e.starts_with("newtype struct ") || e.starts_with("newtype variant") {
        "a value".to_owned()
    } else {
        e.replace('`', "")
    }
}

/// serde's description of the value received, in the API's words.
fn unexpected_words(got: &str) -> String {
    let g = got.trim();
    if let Some(s) = g.strip_prefix("string ") {
        return format!("the string {s}");
    }
    for prefix in ["integer ", "floating point "] {
        if let Some(n) = g.strip_prefix(prefix) {
            return format!("the number {}", n.trim_matches('`'));
        }
    }
    if let Some(b) = g.strip_prefix("boolean ") {
        return b.trim_matches('`').to_owned();
    }
    if let Some(c) = g.strip_prefix("character ") {
        return format!("the character {}", c.trim_matches('`'));
    }
    match g {
        "unit value" | "null" | "unit" => "null".to_owned(),
        "sequence" => "a list".to_owned(),
        "map" => "an object".to_owned(),
        "byte array" => "a string".to_owned(),
        "option" | "newtype struct" | "enum" | "unit variant" | "newtype variant"
        | "tuple variant" | "struct variant" => "a value of another kind".to_owned(),
        other => other.replace('`', ""),
    }
}

/// The field name of a "missing field" message.
fn missing_field_name(message: &str) -> Option<String> {
    Some(message.strip_prefix("missing field ")?.trim().to_owned())
}

/// The field name of an "unknown field" message.
fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field ")?;
    let end = rest.find(',').unwrap_or(rest.len());
    Some(rest[..end].trim().to_owned())
}

/// Query-string parameters whose rejections are [`AppError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    e.body_text().to_lowercase(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        #[serde(default)]
        planned_units: u64,
        #[serde(default)]
        weight: u32,
        #[serde(default)]
        offset: i64,
        #[serde(default)]
        alpha: f64,
        #[serde(default)]
        on: bool,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        variants: Vec<Inner>,
        #[serde(default)]
        filter: Option<Inner>,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        range: Option<(u32, u32)>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        key: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        None,
        GroupSequential,
        AlwaysValid,
    }

    fn reject(body: &str) -> (Option<String>, String) {
        let e = parse::<Body>(body.as_bytes()).unwrap_err();
        (e.field.clone(), e.message.clone())
    }

    #[test]
    fn a_body_is_an_object_never_an_array_of_fields() {
        let e = parse::<Body>(b" [5, \"always_valid\"]").unwrap_err();
        assert_eq!(
            (e.code, e.field, e.message.as_str()),
            (
                "invalid_json",
                None,
                "request body must be a json object, not an array"
            )
        );
    }

    #[test]
    fn messages_speak_the_api_language() {
        let cases = [
            (
                r#"{"planned_units": "x"}"#,
                "planned_units",
                r#"planned_units must be a whole number ≥ 0, got the string "x""#,
            ),
            (
                r#"{"planned_units": -5}"#,
                "planned_units",
                "planned_units must be a whole number ≥ 0, got the number -5",
            ),
            (
                r#"{"weight": 4294967296}"#,
                "weight",
                "weight must be a whole number between 0 and 4294967295, got the number 4294967296",
            ),
            (
                r#"{"offset": 1.5}"#,
                "offset",
                "offset must be a whole number, got the number 1.5",
            ),
            (
                r#"{"alpha": true}"#,
                "alpha",
                "alpha must be a number, got true",
            ),
            (
                r#"{"on": "yes"}"#,
                "on",
                r#"on must be true or false, got the string "yes""#,
            ),
            (
                r#"{"name": 3}"#,
                "name",
                "name must be a string, got the number 3",
            ),
            (
                r#"{"variants": {}}"#,
                "variants",
                "variants must be a list, got an object",
            ),
            (
                r#"{"variants": [{"key": null}]}"#,
                "variants[0].key",
                "variants[0].key must be a string, got null",
            ),
            (
                r#"{"filter": "x"}"#,
                "filter",
                r#"filter must be an object, got the string "x""#,
            ),
            (
                r#"{"filter": []}"#,
                "filter",
                "filter must be an object, got a list",
            ),
            (
                r#"{"mode": "foo"}"#,
                "mode",
                r#"mode must be one of none, group_sequential, always_valid, got "foo""#,
            ),
            (
                r#"{"range": [1]}"#,
                "range",
                "range must be a list of 2 items, got 1 items",
            ),
            (
                r#""x""#,
                "",
                r#"the request body must be an object, got the string "x""#,
            ),
        ];
        for (body, field, message) in cases {
            let (f, m) = reject(body);
            assert_eq!(f.as_deref().unwrap_or(""), field, "{body}");
            assert_eq!(m, message, "{body}");
        }
    }

    #[test]
    fn strata_and_field_messages_are_kept() {
        let (f, m) = reject(r#"{"surprise": 1}"#);
        assert_eq!(f.as_deref(), Some("surprise"));
        assert!(
            m.starts_with("field surprise: unknown field surprise"),
            "{m}"
        );
        let (f, m) = reject(r#"{"variants": [{}]}"#);
        assert_eq!(f.as_deref(), Some("variants[0].key"));
        assert_eq!(m, "field variants[0].key: missing field key");
        let e = parse::<Body>(b"{\"on\": ").unwrap_err();
        assert!(
            e.message.starts_with("malformed json at line 1"),
            "{}",
            e.message
        );
        assert_eq!(e.field, None);
        assert_eq!(
            expected_words("a weight between 0 and 1000"),
            "a weight between 0 and 1000"
        );
    }
}
