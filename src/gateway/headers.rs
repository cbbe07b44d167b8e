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

/// The same response head without the map of original name spellings. The reason phrase goes
/// too: the client gets the standard one for the status.
pub fn drop_response_name_case(resp: &mut ResponseHeader) {
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let parts: http::response::Parts = std::mem::replace(resp, empty).into();
    *resp = ResponseHeader::from(parts);
}
