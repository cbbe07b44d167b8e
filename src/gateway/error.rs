//! Errors the gateway answers itself, with their status and their body in the client's format.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::ctx::{AttemptEnd, AttemptRecord};
use super::intake::Operation;
use crate::auth::AuthError;
use crate::formats::errors::openai_error;
use crate::formats::request::BodyError;
use crate::formats::{error_response, ErrorKind, WireFormat};
use crate::routing::RouteError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("Request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("Unknown path {path}")]
    NotFound { path: String },
    #[error("Method {method} is not allowed on {path}")]
    MethodNotAllowed {
        method: String,
        path: String,
        /// The path's methods, for the `Allow` header a 405 must carry.
        allow: &'static str,
    },
    #[error("Could not read the request body: {0}")]
    ClientRead(String),
    /// The body's own framing is broken (a bad chunk): the client is there, its request is not
    /// well-formed.
    #[error("The request body is malformed: {0}")]
    MalformedBody(String),
    /// A body sent compressed (`Content-Encoding`): the gateway reads bodies to route them, and
    /// takes them only as they are.
    #[error("Compressed request bodies are not accepted (Content-Encoding: {0}); send the body uncompressed")]
    CompressedBody(String),
    /// Found once an upstream was chosen: a request header Pingora refuses to forward (e.g. a
    /// `Connection` header that nominates `Host`), or a malformed body.
    #[error("The request cannot be forwarded: {0}")]
    Unforwardable(String),
    #[error("The request body did not arrive within {} s", .0.as_secs())]
    BodyTimeout(Duration),
    #[error("Rate limit of this API key exceeded; retry after {} s", retry_after.as_secs_f64().ceil())]
    RateLimited { retry_after: Duration },
    #[error("This request cannot be served faithfully by any upstream of its model: {0}")]
    Untranslatable(String),
    /// An operation no upstream of the model has an endpoint for (a token count for OpenAI-style
    /// upstreams, embeddings for Anthropic). A 404, never a made-up answer: Claude Code estimates a
    /// count for itself on an error, and would trust a zero and never compact.
    #[error("No upstream of `{model}` {}", operation.unserved())]
    Unserved { model: String, operation: Operation },
    #[error("{}", if *rate_limited {
        format!("Every upstream for `{model}` is rate-limited")
    } else {
        format!("Every upstream for `{model}` failed or is out of rotation")
    })]
    Exhausted {
        model: String,
        attempts: Vec<AttemptRecord>,
        retry_after: Option<Duration>,
        /// Nothing but rate limits stood in the way (formats.md §5.2: the client sees a 429).
        rate_limited: bool,
    },
}

/// The attempts that say something of the upstreams' state: not the candidates passed by because
/// they cannot take this request at all.
fn telling(attempts: &[AttemptRecord]) -> impl Iterator<Item = &AttemptRecord> {
    attempts.iter().filter(|a| a.end != AttemptEnd::CannotTake)
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Auth(_) => 401,
            GatewayError::Body(_)
            | GatewayError::ClientRead(_)
            | GatewayError::MalformedBody(_)
            | GatewayError::Unforwardable(_)
            | GatewayError::Untranslatable(_) => 400,
            GatewayError::BodyTimeout(_) => 408,
            GatewayError::Route(RouteError::UnknownModel(_))
            | GatewayError::NotFound { .. }
            | GatewayError::Unserved { .. } => 404,
            GatewayError::Route(RouteError::NotAllowed(_)) => 403,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::CompressedBody(_) => 415,
            GatewayError::Exhausted { rate_limited: true, .. } => 429,
            // Every upstream timed out: a gateway timeout, as a reverse proxy says it.
            GatewayError::Exhausted { attempts, .. }
                if telling(attempts).next().is_some()
                    && telling(attempts)
                        .all(|a| a.end == AttemptEnd::Timeout || matches!(a.status(), Some(408 | 504))) =>
            {
                504
            }
            GatewayError::Exhausted { attempts, .. } => {
                // Capacity problems (overload, some rate limits, nothing in rotation) are 503: come
                // back later. Anything else means the upstreams are broken: 502.
                let capacity = telling(attempts).all(|a| a.rate_limited() || matches!(a.status(), Some(503 | 529)));
                if capacity {
                    503
                } else {
                    502
                }
            }
        }
    }

    /// A short, bounded name for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self.kind() {
            (_, Some(code)) => code,
            (_, None) => "invalid_request",
        }
    }

    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            GatewayError::Auth(_) => ("invalid_request_error", Some("invalid_api_key")),
            GatewayError::Body(BodyError::MissingModel) => ("invalid_request_error", Some("missing_model")),
            GatewayError::Body(_) | GatewayError::ClientRead(_) | GatewayError::MalformedBody(_) => {
                ("invalid_request_error", None)
            }
            GatewayError::Unforwardable(_) => ("invalid_request_error", Some("unforwardable_request")),
            GatewayError::BodyTimeout(_) => ("invalid_request_error", Some("request_timeout")),
            GatewayError::Untranslatable(_) => ("invalid_request_error", Some("unsupported_for_upstream")),
            GatewayError::Route(RouteError::UnknownModel(_)) => ("invalid_request_error", Some("model_not_found")),
            GatewayError::Route(RouteError::NotAllowed(_)) => ("permission_error", Some("provider_not_allowed")),
            GatewayError::RateLimited { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            GatewayError::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            GatewayError::CompressedBody(_) => ("invalid_request_error", Some("unsupported_content_encoding")),
            GatewayError::NotFound { .. } => ("invalid_request_error", Some("unknown_url")),
            GatewayError::Unserved { operation, .. } => (
                "invalid_request_error",
                Some(match operation {
                    Operation::CountTokens => "count_tokens_unsupported",
                    Operation::Embeddings => "embeddings_unsupported",
                    Operation::Compact => "compact_unsupported",
                    Operation::Generate => "unsupported_for_upstream",
                }),
            ),
            GatewayError::MethodNotAllowed { .. } => ("invalid_request_error", Some("method_not_allowed")),
            GatewayError::Exhausted { rate_limited: true, .. } => ("rate_limit_error", Some("all_upstreams_failed")),
            GatewayError::Exhausted { .. } => ("upstream_error", Some("all_upstreams_failed")),
        }
    }

    /// Seconds for a `Retry-After` header, when the client should come back later.
    pub fn retry_after(&self, upstream_hint: Option<u64>) -> Option<u64> {
        match self {
            GatewayError::Exhausted { retry_after, .. } => retry_after
                .map(|d| d.as_secs_f64().ceil() as u64)
                .filter(|s| *s > 0)
                .or(upstream_hint),
            GatewayError::RateLimited { retry_after } => Some((retry_after.as_secs_f64().ceil() as u64).max(1)),
            _ => None,
        }
    }

    /// The error kind other formats render.
    fn error_kind(&self) -> ErrorKind {
        match self {
            GatewayError::Auth(_) => ErrorKind::Authentication,
            GatewayError::Route(RouteError::NotAllowed(_)) => ErrorKind::PermissionDenied,
            GatewayError::Route(RouteError::UnknownModel(_))
            | GatewayError::NotFound { .. }
            | GatewayError::Unserved { .. } => ErrorKind::NotFound,
            GatewayError::RateLimited { .. } | GatewayError::Exhausted { rate_limited: true, .. } => {
                ErrorKind::RateLimited
            }
            GatewayError::BodyTooLarge { .. } => ErrorKind::RequestTooLarge,
            // The client's body did not arrive in time: Anthropic's `timeout_error`, Gemini's
            // `DEADLINE_EXCEEDED`, still under its 408.
            GatewayError::BodyTimeout(_) => ErrorKind::Timeout,
            GatewayError::Exhausted { .. } if self.status() == 503 => ErrorKind::Overloaded,
            GatewayError::Exhausted { .. } if self.status() == 504 => ErrorKind::Timeout,
            GatewayError::Exhausted { .. } => ErrorKind::Upstream,
            _ => ErrorKind::InvalidRequest,
        }
    }

    /// The status and body in the client's format. OpenAI clients also get the attempt summary as a
    /// field; the others get it in the message.
    /// `request_id`: the request's id, which an Anthropic error body carries.
    pub fn render(&self, client: WireFormat, request_id: Option<&str>) -> (u16, Bytes) {
        let status = self.status();
        match client {
            WireFormat::OpenAiChat | WireFormat::OpenAiResponses => {
                let (err_type, code) = self.kind();
                let details = match self {
                    GatewayError::Exhausted { attempts, .. } => Some(json!({ "attempts": attempts })),
                    _ => None,
                };
                (status, openai_error(&self.to_string(), err_type, code, details))
            }
            WireFormat::Anthropic | WireFormat::Gemini => {
                let mut message = self.to_string();
                if let GatewayError::Exhausted { attempts, .. } = self {
                    let summary: Vec<String> = attempts
                        .iter()
                        .map(|a| match (a.status(), &a.note) {
                            (Some(s), None) => format!("{}: status {s}", a.provider),
                            (Some(s), Some(e)) => format!("{}: status {s}, {e}", a.provider),
                            (None, Some(e)) => format!("{}: {e}", a.provider),
                            (None, None) => a.provider.to_string(),
                        })
                        .collect();
                    message = format!("{message} ({})", summary.join("; "));
                }
                error_response(client, status, self.error_kind(), &message, request_id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that did not arrive in time is a timeout in every format, under its 408.
    #[test]
    fn a_body_timeout_is_a_timeout_in_every_format() {
        let err = GatewayError::BodyTimeout(std::time::Duration::from_secs(60));
        let body = |client| {
            let (status, body) = err.render(client, None);
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
        };
        let (status, anthropic) = body(WireFormat::Anthropic);
        assert_eq!((status, &anthropic["error"]["type"]), (408, &json!("timeout_error")));
        let (status, gemini) = body(WireFormat::Gemini);
        assert_eq!((status, &gemini["error"]["status"]), (408, &json!("DEADLINE_EXCEEDED")));
    }
}
