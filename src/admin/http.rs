//! The admin API's request, reply and error types, and JSON input parsing that names the field.

use std::collections::HashMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::store::StoreError;

/// What a handler sees of a request.
pub struct Req {
    pub method: http::Method,
    pub path: String,
    pub query: HashMap<String, String>,
    /// Path parameters, e.g. `id` in `/users/{id}`.
    pub params: HashMap<String, String>,
    pub bearer: Option<String>,
    pub body: Bytes,
    /// The client's address (the TCP peer: the admin port trusts no forwarding header).
    pub peer: Option<std::net::IpAddr>,
}

impl Req {
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }

    /// The body as `T`; 400 naming the field on any mismatch.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body: &[u8] = if self.body.is_empty() { b"{}" } else { &self.body };
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let message = without_quoted_string(inner.to_string());
                // A missing field is named only in the message; the path is its parent. (For an
                // unknown field the path already ends with it.)
                let missing = message
                    .starts_with("missing field")
                    .then(|| between_ticks(&message))
                    .flatten()
                    .map(|f| {
                        if path == "." {
                            f.to_string()
                        } else {
                            format!("{path}.{f}")
                        }
                    });
                let field = missing.unwrap_or(if path == "." { "body".into() } else { path });
                ApiError::BadRequest { field, message }
            })
            .and_then(|v| {
                // One JSON value and nothing after it (whitespace aside).
                de.end()
                    .map(|()| v)
                    .map_err(|_| ApiError::bad("body", "unexpected text after the JSON value"))
            })
            .and_then(|v| match has_nul_escape(body) {
                // PostgreSQL refuses NUL in text (a 500 there, accepted by SQLite): refused alike.
                true => Err(ApiError::bad(
                    "body",
                    "text must not contain the NUL character (\\u0000)",
                )),
                false => Ok(v),
            })
    }
}

/// serde's "invalid type: string \"…\", expected …" quotes the value: a provider key sent where an
/// object was expected would come back in the error. The value is left out.
fn without_quoted_string(message: String) -> String {
    let Some(start) = message.find(": string \"") else {
        return message;
    };
    let Some(end) = message[start..].find("\", expected").map(|e| start + e + 1) else {
        return message;
    };
    format!("{}: a string{}", &message[..start], &message[end..])
}

fn between_ticks(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let end = s[start..].find('`')? + start;
    Some(&s[start..end])
}

/// A successful answer.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The `Allow` header of a 405.
    pub allow: Option<String>,
    /// The `Retry-After` header of a 429, in seconds.
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn json(status: u16, v: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            allow: None,
            retry_after: None,
        }
    }

    pub fn ok(v: Value) -> Self {
        Self::json(200, v)
    }

    pub fn created(v: Value) -> Self {
        Self::json(201, v)
    }

    pub fn no_content() -> Self {
        Self {
            status: 204,
            content_type: "application/json",
            body: Vec::new(),
            allow: None,
            retry_after: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    BadRequest { field: String, message: String },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    /// `allow` lists the methods the path takes, for the `Allow` header a 405 must carry.
    #[error("method not allowed; this path takes {allow}")]
    MethodNotAllowed { allow: String },
    #[error("{0}")]
    Conflict(String),
    /// A user who is not an admin changed things faster than the admin API allows.
    #[error("too many changes; try again in {retry_after} s")]
    TooManyChanges { retry_after: u64 },
    /// A username whose logins failed again and again must wait before its next try.
    #[error("too many failed logins for this username; try again in {retry_after} s")]
    TooManyLogins { retry_after: u64 },
    #[error("{0}")]
    Unavailable(&'static str),
    /// A provider did not answer as expected (never carries a key or a URL).
    #[error("{0}")]
    Upstream(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest { .. } => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Conflict(_) => 409,
            ApiError::TooManyChanges { .. } | ApiError::TooManyLogins { .. } => 429,
            ApiError::Internal => 500,
            ApiError::Upstream(_) => 502,
            ApiError::Unavailable(_) => 503,
        }
    }

    pub fn reply(&self) -> Reply {
        let kind = match self {
            ApiError::BadRequest { .. } => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooManyChanges { .. } | ApiError::TooManyLogins { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal => "internal",
            ApiError::Upstream(_) => "upstream",
        };
        let mut err = json!({"message": self.to_string(), "type": kind});
        if let ApiError::BadRequest { field, .. } = self {
            err["field"] = json!(field);
        }
        let mut reply = Reply::json(self.status(), json!({ "error": err }));
        if let ApiError::MethodNotAllowed { allow } = self {
            reply.allow = Some(allow.clone());
        }
        if let ApiError::TooManyChanges { retry_after } | ApiError::TooManyLogins { retry_after } = self {
            reply.retry_after = Some(*retry_after);
        }
        reply
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ApiError::Conflict("an item with this id or name already exists".into()),
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Stale => ApiError::Conflict("it changed meanwhile; read it and try again".into()),
            StoreError::Pool(m) => {
                tracing::error!(error = %m, "database unavailable");
                ApiError::Unavailable(
                    "the database is unavailable: nothing was saved; the gateway keeps serving its current configuration; retry when the database is back",
                )
            }
            e => {
                tracing::error!(error = %e, "database error");
                ApiError::Internal
            }
        }
    }
}

impl From<crate::secrets::SecretError> for ApiError {
    fn from(e: crate::secrets::SecretError) -> Self {
        tracing::error!(error = %e, "secret handling failed");
        ApiError::Internal
    }
}

impl From<crate::live::SettingsError> for ApiError {
    fn from(e: crate::live::SettingsError) -> Self {
        use crate::live::SettingsError;
        match e {
            SettingsError::Sealed(_) => ApiError::Conflict(format!("the stored settings cannot be read: {e}")),
            SettingsError::Secret(e) => e.into(),
            SettingsError::Json(e) => {
                tracing::error!(error = %e, "stored provider settings unreadable");
                ApiError::Internal
            }
        }
    }
}

/// Parses a query string (`a=1&b=x`), percent-decoding values.
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A path segment as the client meant it (`conv%201` is `conv 1`).
pub fn decode_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Whether a JSON text holds the escape `\u0000` (a backslash before it escaping the backslash
/// does not count). Raw control characters are already invalid JSON.
fn has_nul_escape(json: &[u8]) -> bool {
    memchr::memmem::find_iter(json, b"u0000").any(|at| {
        let backslashes = json[..at].iter().rev().take_while(|b| **b == b'\\').count();
        backslashes % 2 == 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misplaced_string_is_not_quoted_back() {
        let m = without_quoted_string(
            r#"invalid type: string "sk-live-0123", expected struct KeyInput at line 1 column 9"#.into(),
        );
        assert_eq!(m, "invalid type: a string, expected struct KeyInput at line 1 column 9");
        assert_eq!(without_quoted_string("missing field `id`".into()), "missing field `id`");
    }

    #[test]
    fn queries_decode() {
        let q = parse_query(Some("model=a%2Fb&x=1+2&flag"));
        assert_eq!(q["model"], "a/b");
        assert_eq!(q["x"], "1 2");
        assert_eq!(q["flag"], "");
        assert_eq!(parse_query(Some("a=%"))["a"], "%");
        assert_eq!(parse_query(Some("a=%4"))["a"], "%4");
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct B {
            name: String,
            n: Option<u32>,
        }
        let req = |body: &'static str| Req {
            method: http::Method::POST,
            path: "/".into(),
            query: HashMap::new(),
            params: HashMap::new(),
            bearer: None,
            body: Bytes::from_static(body.as_bytes()),
            peer: None,
        };
        let field = |r: Result<B, ApiError>| match r.unwrap_err() {
            ApiError::BadRequest { field, .. } => field,
            e => panic!("{e:?}"),
        };
        assert_eq!(field(req("{}").json()), "name");
        assert_eq!(field(req(r#"{"name":"x","n":"y"}"#).json()), "n");
        assert_eq!(field(req(r#"{"name":"x","bogus":1}"#).json()), "bogus");
        assert_eq!(field(req("not json").json()), "body");
        assert_eq!(field(req(r#"{"name":"x"} junk"#).json()), "body");
        assert_eq!(field(req(r#"{"name":"x"}{"name":"y"}"#).json()), "body");
        assert!(
            req("{\"name\":\"x\"}\n").json::<B>().is_ok(),
            "trailing whitespace is fine"
        );
        assert_eq!(field(req(r#"{"name":"a\u0000b"}"#).json()), "body");
        assert!(
            req(r#"{"name":"a\\u0000b"}"#).json::<B>().is_ok(),
            "an escaped backslash, then text"
        );
        assert!(req(r#"{"name":"a\\\u0000b"}"#).json::<B>().is_err());
    }

    #[test]
    fn path_segments_decode() {
        assert_eq!(decode_segment("conv%201"), "conv 1");
        assert_eq!(decode_segment("a%2Fb"), "a/b");
        assert_eq!(decode_segment("caf%C3%A9"), "café");
        assert_eq!(decode_segment("100%"), "100%");
    }
}
