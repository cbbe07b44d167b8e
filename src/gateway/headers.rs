//! Pingora keeps, beside each header map, a second map with every name's original spelling, and
//! every insert writes both (and title-cases a `HeaderName` it is given). The gateway does not keep
//! the spelling of names — the headers it forwards go out lowercase, as Envoy sends them and as
//! HTTP/2 requires — so the headers it edits drop that second map first, and names are given as
//! `&'static str`, which Pingora takes without copying.

use pingora::http::{RequestHeader, ResponseHeader};

/// The same request head without the map of original name spellings.
pub fn drop_name_case(req: &mut RequestHeader) {
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let parts: http::request::Parts = std::mem::replace(req, empty).into();
    *req = RequestHeader::from(parts);
}

/// The upstream's response head as the client gets it: without the map of original name
/// spellings, without the reason phrase (the client gets the standard one for the status), and
/// without the headers that are the provider's business only (`upstream_only`).
pub fn upstream_head_for_client(resp: &mut ResponseHeader) {
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, empty).into();
    // One pass over the names; nothing is allocated unless one has to go.
    let doomed: Vec<http::HeaderName> = parts
        .headers
        .keys()
        .filter(|name| upstream_only(name.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        parts.headers.remove(name);
    }
    *resp = ResponseHeader::from(parts);
}

/// Response headers that tell of the provider's account or site, not of the answer: the operator's
/// organisation and project, its keys' rate limits and usage, the provider's cookies, CORS, CDN and
/// HTTP/3 hints, and hop-by-hop headers. A client learns from them whose key served it (and an
/// Anthropic client served by OpenAI, that it was).
fn upstream_only(name: &str) -> bool {
    matches!(
        name,
        "set-cookie"
            | "alt-svc"
            | "server"
            | "via"
            | "strict-transport-security"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "trailer"
            | "te"
            | "openai-organization"
            | "openai-project"
            | "openai-version"
            | "anthropic-organization-id"
    ) || ["x-ratelimit-", "anthropic-ratelimit-", "access-control-", "cf-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}
