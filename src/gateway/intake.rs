//! The request side of `request_filter`: which endpoint, who is calling, the body, and the route.
//! Everything here happens before any upstream is contacted.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::Method;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::error::GatewayError;
use crate::app::App;
use crate::formats::request::inspect;
use crate::formats::ClientApi;

/// Longest pause allowed between two pieces of a request body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Most memory reserved up front for a body, whatever its declared length.
const MAX_PREALLOCATION: usize = 1024 * 1024;

/// What the client asked for, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Models,
    Proxy(ClientApi),
}

pub fn classify(method: &Method, path: &str) -> Result<Endpoint, GatewayError> {
    let path_only = path.trim_end_matches('/');
    let (endpoint, allowed) = match path_only {
        "/health" => (Endpoint::Health, Method::GET),
        "/models" | "/v1/models" => (Endpoint::Models, Method::GET),
        "/v1/chat/completions" | "/chat/completions" => (Endpoint::Proxy(ClientApi::ChatCompletions), Method::POST),
        "/v1/responses" | "/responses" => (Endpoint::Proxy(ClientApi::Responses), Method::POST),
        _ => {
            return Err(GatewayError::NotFound {
                path: path.chars().take(200).collect(),
            })
        }
    };
    if *method != allowed && !(allowed == Method::GET && *method == Method::HEAD) {
        return Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path: path_only.to_string(),
        });
    }
    Ok(endpoint)
}

/// The client's request id when it is sane, else a fresh one.
pub fn request_id(session: &Session) -> String {
    match session.get_header("x-request-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) => id.to_string(),
        _ => format!("{:032x}", rand::random::<u128>()),
    }
}

/// Checks the client key against the snapshot, then the key's rate limit.
pub async fn authenticate(session: &Session, app: &App, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let snapshot = ctx.snapshot.get_or_insert_with(|| app.snapshot()).clone();
    let auth = session.get_header(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    let key = session.get_header("x-api-key").map(|v| v.as_bytes());
    let client = snapshot.clients.authenticate(auth, key)?;
    if let (Some(id), Some(rps)) = (&client.key_id, client.rate_limit_rps) {
        app.limiter
            .acquire(id, rps)
            .await
            .map_err(|retry_after| GatewayError::RateLimited { retry_after })?;
    }
    ctx.client = Some(client);
    Ok(())
}

/// Reads the whole body (it is needed to route on `model`, and is replayed on failover).
pub async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = session
        .get_header(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    // Pingora replays the buffered body to every upstream attempt (see vendor/pingora-core).
    session.enable_retry_buffering();
    // A client that stops sending mid-body must not hold the request open forever.
    session.set_read_timeout(Some(BODY_READ_TIMEOUT));
    // Grow with what arrives: a declared length alone does not reserve memory.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(MAX_PREALLOCATION));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(GatewayError::ClientRead(e.etype().as_str().to_string())),
        }
    }
    Ok(buf.freeze())
}

/// Parses the body and resolves its model to a plan.
pub fn route(session: &Session, app: &App, ctx: &mut RequestCtx, body: Bytes) -> Result<(), GatewayError> {
    let inspected = inspect(&body)?;
    let snapshot: Arc<_> = ctx.snapshot.get_or_insert_with(|| app.snapshot()).clone();
    let mut plan = snapshot.routes.plan(&inspected.model, &app.catalog, &app.health)?;
    if let Some(allowed) = ctx.client.as_ref().and_then(|c| c.allowed_providers.as_ref()) {
        plan = plan.restricted_to(allowed)?;
    }
    let wants_sse = session
        .get_header(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    ctx.stream = inspected.stream || wants_sse;
    ctx.session_id = session
        .get_header("x-session-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(|s| app.sessions.hash_key(&s.chars().take(256).collect::<String>()));
    ctx.plan = Some(plan);
    ctx.inspected = Some(inspected);
    ctx.body = body;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify(&Method::GET, "/health").unwrap(), Endpoint::Health);
        assert_eq!(classify(&Method::GET, "/v1/models").unwrap(), Endpoint::Models);
        assert_eq!(
            classify(&Method::POST, "/v1/chat/completions").unwrap(),
            Endpoint::Proxy(ClientApi::ChatCompletions)
        );
        assert_eq!(
            classify(&Method::POST, "/v1/responses/").unwrap(),
            Endpoint::Proxy(ClientApi::Responses)
        );
        assert_eq!(
            classify(&Method::GET, "/v1/chat/completions").unwrap_err().status(),
            405
        );
        assert_eq!(classify(&Method::GET, "/nope").unwrap_err().status(), 404);
    }
}
