//! CORS, for pages that call the proxy port from a browser, when `server.cors_origins` allows
//! their origin: a preflight is answered without a key, and every answer (the gateway's own and the
//! upstreams') names the origin that may read it. Nothing is done when no origin is configured.

use http::header::{self, HeaderValue};
use http::Method;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::ctx::RequestCtx;

/// Headers a page's script may read from an answer besides the basic ones.
const EXPOSED: &str = "x-request-id, x-apiproxy-provider, x-gateway-upstream-status, retry-after";
/// How long a browser may reuse a preflight's answer, seconds.
const MAX_AGE: &str = "600";

/// Whether `s` can be configured: `*`, or a web origin (scheme, host and port, no path).
pub fn is_origin(s: &str) -> bool {
    s == "*"
        || url::Url::parse(s).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.origin().ascii_serialization() == s.trim_end_matches('/')
        })
}

/// The request's `Origin` when the configuration allows it, to name in the answer.
pub fn allowed_origin(origins: &[String], session: &Session) -> Option<HeaderValue> {
    let origin = session.get_header(header::ORIGIN)?;
    let text = origin.to_str().ok()?.trim_end_matches('/');
    origins
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

/// A browser asking whether it may send a request (`OPTIONS` with `Access-Control-Request-Method`).
pub fn is_preflight(session: &Session) -> bool {
    session.req_header().method == Method::OPTIONS
        && session.get_header(header::ACCESS_CONTROL_REQUEST_METHOD).is_some()
}

/// Answers a preflight: the methods the proxy takes and the headers the page asked to send (SDKs
/// send their own, such as `x-stainless-*` and `anthropic-version`), when its origin is allowed;
/// without them (the browser then refuses the call) when it is not.
pub async fn answer_preflight(session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(204, Some(7))?;
    resp.insert_header(super::headers::names::X_REQUEST_ID, ctx.request_id.header())?;
    if let Some(origin) = ctx.cors_origin.clone() {
        add_origin(&mut resp, origin)?;
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, POST, OPTIONS")?;
        if let Some(asked) = session.get_header(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned() {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, asked)?;
        }
        resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE)?;
    }
    ctx.status = Some(204);
    session.write_response_header(Box::new(resp), true).await
}

/// Names the allowed origin on an answer, and the headers its script may read.
pub fn expose(resp: &mut ResponseHeader, ctx: &RequestCtx) -> pingora::Result<()> {
    let Some(origin) = ctx.cors_origin.clone() else {
        return Ok(());
    };
    add_origin(resp, origin)?;
    resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED)?;
    Ok(())
}

fn add_origin(resp: &mut ResponseHeader, origin: HeaderValue) -> pingora::Result<()> {
    resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)?;
    // The answer depends on the asking origin: caches must keep one per origin.
    resp.append_header(header::VARY, "origin")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        for ok in [
            "*",
            "https://app.example.com",
            "http://localhost:3000",
            "https://app.example.com/",
        ] {
            assert!(is_origin(ok), "{ok}");
        }
        for bad in [
            "",
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x.org",
            "null",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}
