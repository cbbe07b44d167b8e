//! Pingora keeps, beside each header map, a second map with every name's original spelling, and
//! every insert writes both (and parses the name it is given again, or title-cases a `HeaderName`).
//! The gateway does not keep the spelling of names — the headers it forwards go out lowercase, as
//! Envoy sends them and as HTTP/2 requires — so the heads it edits drop that second map and are
//! edited as `http` parts, with names made once (`names`).

use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};

/// Header names the gateway writes on every request, made once.
pub mod names {
    use http::HeaderName;

    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_APIPROXY_PROVIDER: HeaderName = HeaderName::from_static("x-apiproxy-provider");
    pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
}

/// Edits the request head as `http` parts; it comes back without the map of original name
/// spellings.
pub fn edit_request(req: &mut RequestHeader, edit: impl FnOnce(&mut http::request::Parts)) {
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, empty).into();
    edit(&mut parts);
    *req = RequestHeader::from(parts);
}

/// Edits the response head as `http` parts; it comes back without the map of original name
/// spellings and without the reason phrase (the client gets the standard one for the status).
pub fn edit_response(resp: &mut ResponseHeader, edit: impl FnOnce(&mut http::response::Parts)) {
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, empty).into();
    edit(&mut parts);
    *resp = ResponseHeader::from(parts);
}

/// Removes the headers that are the provider's business only (`upstream_only`), in one pass over
/// the names; nothing is allocated unless one has to go.
pub fn drop_upstream_only(headers: &mut http::HeaderMap) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| upstream_only(name.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
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
