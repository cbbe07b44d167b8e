//! The HTTP client the gateway itself uses towards providers (model lists, the admin API's
//! probes), off the request path. It trusts and resolves as the proxy does — `server.ca_file`
//! instead of the system roots, `server.resolve` instead of DNS — so a provider behind a private CA
//! or a pinned address is listed and probed like it is proxied.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ServerSettings;

/// A client for provider calls with this overall `timeout`. It follows no redirect: the provider's
/// key (`x-api-key`, `x-goog-api-key` and custom headers survive reqwest's cross-host stripping)
/// would go with it to another host.
pub fn provider_client(settings: &ServerSettings, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("server.ca_file {path}: {e}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("server.ca_file {path}: {e}"))?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    for (host, ips) in &settings.resolve {
        // The URL's port is used; reqwest ignores the one given here.
        let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
        builder = builder.resolve_to_addrs(host, &addrs);
    }
    builder.build().map_err(|e| e.to_string())
}
