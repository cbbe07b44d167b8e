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
        let uri: http::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{url}` must start with http:// or https://")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or(format!("`{url}` has no host"))?;
        if uri.query().is_some() {
            return Err(format!("`{url}` must not carry a query string"));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("https://openrouter.ai/api/").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.base_path.as_str()),
            (true, "openrouter.ai", 443, "/api")
        );
        assert_eq!(e.authority(), "openrouter.ai");
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(e.literal_addr(), Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(e.authority(), "127.0.0.1:9000");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("nonsense").is_err());
    }
}
