//! A provider's `base_url`, split into what a connection needs.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub base_path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        // Credentials in the URL would never be sent (the `Host` header carries none), and every
        // error and view that shows the URL would show them: refused, without echoing the URL.
        let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err("must not carry a user name or password: put credentials in `api_keys` or `headers`".into());
        }
        // A query may carry a key (`?key=…` for Gemini): errors show the URL without it.
        let shown = url.split(['?', '#']).next().unwrap_or_default();
        let uri: http::Uri = url.parse().map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{shown}` must start with http:// or https://")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or(format!("`{shown}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!(
                "`{shown}` must not carry a query string (keys go in `api_keys`)"
            ));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        // Host names are case-blind: kept in lowercase, so `server.resolve` (whose names are too)
        // matches however either is written, for the proxy and for reqwest's own calls alike.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        Ok(Self {
            tls,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The address when the host is an IP literal: no DNS needed.
    pub fn literal_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// `Host` header value.
    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}{}",
            if self.tls { "https" } else { "http" },
            self.authority(),
            path
        )
    }
}

/// Headers the gateway sets or frames itself, which a provider's `headers:` may not replace: the
/// body's framing, the connection, and `accept-encoding` (answers must come uncompressed to be
/// watched and translated).
const GATEWAY_OWNED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "accept-encoding",
];

/// Checks one of a provider's extra `headers:` (the config file and the admin API alike).
pub fn check_extra_header(name: &str, value: &str) -> Result<(), &'static str> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() || http::HeaderValue::from_str(value).is_err() {
        return Err("is not a valid HTTP header");
    }
    if GATEWAY_OWNED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return Err("is set by the gateway itself and cannot be replaced");
    }
    Ok(())
}

/// Checks a provider's path override: a path the upstream request line can carry as it is.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with `/`");
    }
    if path.contains(['?', '#']) || path.parse::<http::uri::PathAndQuery>().is_err() {
        return Err("must be a plain URL path (no spaces, `?` or `#`)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_url_is_shown_without_its_query() {
        let err = Endpoint::parse("https://generativelanguage.googleapis.com/v1beta?key=AIzaSySECRET").unwrap_err();
        assert!(!err.contains("SECRET") && err.contains("query string"), "{err}");
        let err = Endpoint::parse("gopher://h/?key=AIzaSySECRET").unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("https://openrouter.ai/api/").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.base_path.as_str()),
            (true, "openrouter.ai", 443, "/api")
        );
        assert_eq!(e.authority(), "openrouter.ai");
        // Host names are case-blind: kept in lowercase, as `server.resolve`'s are.
        assert_eq!(
            Endpoint::parse("https://API.Corp.example/v1").unwrap().host,
            "api.corp.example"
        );
        let settings: crate::config::ServerSettings =
            serde_yaml::from_str("resolve: {API.Corp.example: [10.0.0.5]}").unwrap();
        assert!(settings.resolve.contains_key("api.corp.example"));
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(e.literal_addr(), Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(e.authority(), "127.0.0.1:9000");
        assert!(Endpoint::parse("ftp://x").is_err());
        let err = Endpoint::parse("https://user:s3cret@gw.example.com/v1").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(check_extra_header("api-key", "x").is_ok());
        for owned in ["Accept-Encoding", "transfer-encoding", "host", "connection"] {
            assert!(check_extra_header(owned, "x").is_err(), "{owned}");
        }
        assert!(check_path("/v1/chat/completions").is_ok());
        for bad in ["v1/chat", "/v1/chat completions", "/v1/chat?x=1", "/a#b"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::parse("nonsense").is_err());
    }
}
