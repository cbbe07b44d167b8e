//! Reading, expanding and validating the configuration. Every error names the file, the place in it
//! and what is wrong, so a bad config never starts half-way.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use serde_yaml::Value;

use super::model::{Config, LogFormat, MAX_BODY_LIMIT};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {place}: {message}")]
    Invalid {
        file: String,
        place: String,
        message: String,
    },
}

/// Where a value came from, for error messages.
struct Origin<'a> {
    file: &'a str,
}

impl Origin<'_> {
    fn err(&self, place: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            place: place.into(),
            message: message.into(),
        }
    }
}

/// Loads `path` (or an empty configuration when `None`), expands `${VAR}` and `${VAR:-default}` in
/// string values from `env`, applies the environment overrides and validates the result.
pub fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let file = path.map_or_else(|| "(no config file)".to_string(), |p| p.display().to_string());
    let origin = Origin { file: &file };
    let mut config = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            parse(&text, &origin, env)?
        }
        None => Config::default(),
    };
    let set = apply_env_overrides(&mut config, env)?;
    validate(&config, &origin).map_err(|e| of_environment(e, &set))?;
    Ok(config)
}

fn parse(text: &str, origin: &Origin, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|e| {
        let place = e.location().map_or_else(
            || "document".to_string(),
            |l| format!("line {} column {}", l.line(), l.column()),
        );
        origin.err(place, e.to_string())
    })?;
    if value.is_null() {
        return Ok(Config::default());
    }
    let mut expanded = Vec::new();
    expand_env(&mut value, &mut String::new(), origin, env, &mut expanded)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let place = e.path().to_string();
        // serde quotes the value it could not take, which may be a secret from the environment
        // (`api_keys: ${OPENAI_API_KEY}` where a list belongs): it is shown as written instead.
        let message = expanded.iter().fold(e.into_inner().to_string(), |m, (value, written)| {
            m.replace(value.as_str(), written)
        });
        origin.err(place, message)
    })
}

/// Replaces `${NAME}` and `${NAME:-default}` inside every string value.
fn expand_env(
    value: &mut Value,
    path: &mut String,
    origin: &Origin,
    env: &dyn Fn(&str) -> Option<String>,
    expanded: &mut Vec<(String, String)>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) if s.contains("${") => {
            let value = expand_str(s, env).map_err(|m| origin.err(path.clone(), m))?;
            if !value.is_empty() {
                expanded.push((value.clone(), std::mem::replace(s, value)));
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, origin, env, expanded)?;
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k.as_str().unwrap_or("?"));
                expand_env(v, path, origin, env, expanded)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("unterminated `${` in value")?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{expr}}}` is not a valid environment variable reference"));
        }
        match (env(name), default) {
            (Some(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (Some(_), None) | (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (use ${{{name}:-}} to allow that)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Largest `log_body_bytes`.
const MAX_LOG_BODY_BYTES: usize = 64 * 1024;

/// Every override set but empty counts as unset: templates write `${VAR:-}` for what they leave
/// to the file. Returns the settings the environment set, as (place, variable), so that an error
/// about one names the variable rather than the file.
fn apply_env_overrides(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, &'static str)>, ConfigError> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let mut set = Vec::new();
    let origin = Origin { file: "environment" };
    let s = &mut config.server;
    if let Some(v) = env("APIPROXY_LISTEN") {
        set.push(("server.listen", "APIPROXY_LISTEN"));
        s.listen = v;
    }
    if let Some(v) = env("APIPROXY_ADMIN_LISTEN") {
        set.push(("server.admin_listen", "APIPROXY_ADMIN_LISTEN"));
        s.admin_listen = v;
    }
    if let Some(v) = env("LOG_LEVEL") {
        set.push(("server.log_level", "LOG_LEVEL"));
        s.log_level = v;
    }
    if let Some(v) = env("LOG_FORMAT") {
        set.push(("server.log_format", "LOG_FORMAT"));
        s.log_format = match v.to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            _ => return Err(origin.err("LOG_FORMAT", format!("`{v}` is not text or json"))),
        };
    }
    if let Some(v) = env("LOG_TIMEZONE") {
        set.push(("server.log_timezone", "LOG_TIMEZONE"));
        s.log_timezone = Some(v);
    }
    if let Some(v) = env("LOG_BODY_BYTES") {
        set.push(("server.log_body_bytes", "LOG_BODY_BYTES"));
        s.log_body_bytes = v
            .parse()
            .map_err(|_| origin.err("LOG_BODY_BYTES", format!("`{v}` is not a number of bytes")))?;
    }
    if let Some(v) = env("APIPROXY_THREADS") {
        set.push(("server.threads", "APIPROXY_THREADS"));
        s.threads = v
            .parse()
            .map_err(|_| origin.err("APIPROXY_THREADS", format!("`{v}` is not a whole number")))?;
    }
    if let Some(v) = env("MODELS_CACHE_TTL") {
        set.push(("server.models_cache_ttl_s", "MODELS_CACHE_TTL"));
        s.models_cache_ttl_s = v
            .parse()
            .map_err(|_| origin.err("MODELS_CACHE_TTL", format!("`{v}` is not a number of seconds")))?;
    }
    if let Some(v) = env("APIPROXY_CORS_ORIGINS") {
        set.push(("server.cors_origins", "APIPROXY_CORS_ORIGINS"));
        s.cors_origins = v
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(String::from)
            .collect();
    }
    let m = &mut config.mask;
    if let Some(v) = env("MASK_AS_BROWSER") {
        set.push(("mask.as_browser", "MASK_AS_BROWSER"));
        m.as_browser = match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(origin.err("MASK_AS_BROWSER", format!("`{v}` is not true or false"))),
        };
    }
    if let Some(v) = env("MASK_USER_AGENT") {
        set.push(("mask.user_agent", "MASK_USER_AGENT"));
        m.user_agent = Some(v);
    }
    if let Some(v) = env("MASK_ORIGIN") {
        set.push(("mask.origin", "MASK_ORIGIN"));
        m.origin = Some(v);
    }
    if let Some(v) = env("MASK_REFERER") {
        set.push(("mask.referer", "MASK_REFERER"));
        m.referer = Some(v);
    }
    Ok(set)
}

/// An error about a setting the environment set, said of its variable (`APIPROXY_LISTEN
/// (server.listen)` in the environment), not of the config file the value did not come from.
fn of_environment(e: ConfigError, set: &[(&str, &str)]) -> ConfigError {
    match e {
        ConfigError::Invalid { place, message, .. }
            if let Some((_, var)) = set.iter().find(|(p, _)| {
                place
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            }) =>
        {
            ConfigError::Invalid {
                file: "environment".to_string(),
                place: format!("{var} ({place})"),
                message,
            }
        }
        e => e,
    }
}

/// The longest time model lists are kept before they are discovered again.
const MAX_MODELS_CACHE_TTL_S: u64 = 30 * 86_400;

fn validate(config: &Config, origin: &Origin) -> Result<(), ConfigError> {
    let s = &config.server;
    let mut addrs = Vec::with_capacity(2);
    for (place, addr) in [("server.listen", &s.listen), ("server.admin_listen", &s.admin_listen)] {
        addrs.push(
            addr.parse::<SocketAddr>()
                .map_err(|_| origin.err(place, format!("`{addr}` is not an address like 0.0.0.0:8000")))?,
        );
    }
    let (proxy, admin) = (addrs[0], addrs[1]);
    let overlap = proxy.ip() == admin.ip() || proxy.ip().is_unspecified() || admin.ip().is_unspecified();
    if proxy.port() == admin.port() && overlap {
        return Err(origin.err(
            "server.admin_listen",
            format!(
                "`{admin}` is where the proxy listens (server.listen `{proxy}`); give the admin service its own port"
            ),
        ));
    }
    for (field, value) in [
        ("mask.user_agent", &config.mask.user_agent),
        ("mask.origin", &config.mask.origin),
        ("mask.referer", &config.mask.referer),
    ] {
        if value
            .as_deref()
            .is_some_and(|v| http::HeaderValue::from_str(v).is_err())
        {
            return Err(origin.err(field, "is not a valid header value"));
        }
    }
    if let Some((host, _)) = s.resolve.iter().find(|(_, ips)| ips.is_empty()) {
        return Err(origin.err(
            format!("server.resolve.{host}"),
            "needs at least one address (leave the name out to look it up)",
        ));
    }
    if let Some(ca) = &s.ca_file {
        if !Path::new(ca).is_file() {
            return Err(origin.err("server.ca_file", format!("`{ca}` is not a readable file")));
        }
        check_ca_file(ca).map_err(|why| origin.err("server.ca_file", format!("`{ca}`: {why}")))?;
    }
    if s.threads == 0 {
        return Err(origin.err("server.threads", "must be at least 1"));
    }
    if s.max_body_bytes == 0 || s.max_body_bytes > MAX_BODY_LIMIT {
        return Err(origin.err(
            "server.max_body_bytes",
            format!("must be between 1 and {MAX_BODY_LIMIT}"),
        ));
    }
    for (i, o) in s.cors_origins.iter().enumerate() {
        if !crate::gateway::cors::is_origin(o) {
            return Err(origin.err(
                format!("server.cors_origins[{i}]"),
                format!("`{o}` is not `*` or an origin like https://app.example.com (scheme, host, port; no path)"),
            ));
        }
    }
    // A log line is no place for a whole body: enough of one to see what went wrong.
    if s.log_body_bytes > MAX_LOG_BODY_BYTES {
        return Err(origin.err("server.log_body_bytes", format!("must be at most {MAX_LOG_BODY_BYTES}")));
    }
    if s.max_attempts == 0 || s.max_attempts > 16 {
        return Err(origin.err("server.max_attempts", "must be between 1 and 16"));
    }
    // A failed probe doubles the wait up to 5 minutes, and replicas share open circuits capped
    // there: a longer first wait would shrink on the first failed probe.
    if s.circuit_open_s == 0 || s.circuit_open_s > 300 {
        return Err(origin.err("server.circuit_open_s", "must be between 1 and 300 seconds"));
    }
    // Past that, timer arithmetic overflows (the discovery task would stop) and Redis refuses
    // the expiry.
    if s.models_cache_ttl_s == 0 || s.models_cache_ttl_s > MAX_MODELS_CACHE_TTL_S {
        return Err(origin.err(
            "server.models_cache_ttl_s",
            format!("must be between 1 and {MAX_MODELS_CACHE_TTL_S} seconds (30 days)"),
        ));
    }
    if let Some(tz) = &s.log_timezone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(origin.err(
                "server.log_timezone",
                format!("`{tz}` is not an IANA time zone like Asia/Shanghai"),
            ));
        }
    }
    if let Err(why) = super::log_filter(&s.log_level) {
        return Err(origin.err("server.log_level", why));
    }

    let mut client_names = HashSet::new();
    for (i, c) in config.clients.iter().enumerate() {
        if c.key.len() < 8 {
            return Err(origin.err(format!("clients[{i}].key"), "must be at least 8 characters"));
        }
        if c.name.contains('/') {
            // Minted keys are known as `username/key name`: a client of the file never passes for one.
            return Err(origin.err(format!("clients[{i}].name"), "must not contain `/`"));
        }
        if !client_names.insert(c.name.as_str()) {
            return Err(origin.err(format!("clients[{i}].name"), format!("`{}` is used twice", c.name)));
        }
    }

    let mut providers = HashSet::new();
    for (i, p) in config.providers.iter().enumerate() {
        let place = |field: &str| format!("providers[{i}].{field}");
        if p.id.is_empty() || p.id.contains('/') {
            return Err(origin.err(place("id"), "must be non-empty and contain no `/`"));
        }
        if !providers.insert(p.id.as_str()) {
            return Err(origin.err(place("id"), format!("`{}` is used twice", p.id)));
        }
        crate::upstream::Endpoint::parse(&p.base_url).map_err(|m| origin.err(place("base_url"), m))?;
        if !(p.weight.is_finite() && p.weight > 0.0) {
            return Err(origin.err(place("weight"), "must be a positive number"));
        }
        if p.timeouts.connect_ms == 0 || p.timeouts.first_byte_ms == 0 || p.timeouts.idle_ms == 0 {
            return Err(origin.err(place("timeouts"), "every timeout must be above 0 ms"));
        }
        for (k, v) in &p.headers {
            crate::upstream::check_extra_header(k, v).map_err(|m| origin.err(place(&format!("headers.{k}")), m))?;
        }
        for (field, path) in [
            ("chat", &p.paths.chat),
            ("responses", &p.paths.responses),
            ("models", &p.paths.models),
            ("messages", &p.paths.messages),
            ("gemini", &p.paths.gemini),
        ] {
            if let Some(path) = path {
                crate::upstream::check_path(path).map_err(|m| origin.err(place(&format!("paths.{field}")), m))?;
            }
        }
        check_retryable_statuses(&p.retryable_status_codes)
            .map_err(|m| origin.err(place("retryable_status_codes"), m))?;
        for (k, key) in p.api_keys.iter().enumerate() {
            if http::HeaderValue::from_str(key).is_err() {
                return Err(origin.err(
                    place(&format!("api_keys[{k}]")),
                    "contains characters not allowed in a header",
                ));
            }
        }
    }

    let mut logical = HashSet::new();
    for (i, lm) in config.logical_models.iter().enumerate() {
        if lm.id.trim().is_empty() {
            return Err(origin.err(format!("logical_models[{i}].id"), "must not be empty"));
        }
        if !logical.insert(lm.id.as_str()) {
            return Err(origin.err(format!("logical_models[{i}].id"), format!("`{}` is used twice", lm.id)));
        }
        if lm.upstreams.is_empty() {
            return Err(origin.err(format!("logical_models[{i}].upstreams"), "needs at least one upstream"));
        }
        for (j, u) in lm.upstreams.iter().enumerate() {
            let place = format!("logical_models[{i}].upstreams[{j}]");
            if !providers.contains(u.provider.as_str()) {
                return Err(origin.err(
                    format!("{place}.provider"),
                    format!("no provider has id `{}`", u.provider),
                ));
            }
            if !(u.weight.is_finite() && u.weight > 0.0) {
                return Err(origin.err(format!("{place}.weight"), "must be a positive number"));
            }
            if u.model.trim().is_empty() {
                return Err(origin.err(format!("{place}.model"), "must not be empty"));
            }
        }
        if let Some(j) = repeated_upstream(lm.upstreams.iter().map(|u| (u.provider.as_str(), u.model.as_str()))) {
            return Err(origin.err(format!("logical_models[{i}].upstreams[{j}]"), REPEATED_UPSTREAM));
        }
    }
    Ok(())
}

/// Checks a provider's `retryable_status_codes`: error statuses only. A success or a redirect
/// there would have every answer recorded as a failure and failed over.
pub fn check_retryable_statuses(codes: &[u16]) -> Result<(), String> {
    match codes.iter().find(|c| !(400..=599).contains(*c)) {
        Some(c) => Err(format!("{c} is no error status (400–599)")),
        None => Ok(()),
    }
}

/// Why [`repeated_upstream`]'s upstream is refused.
pub const REPEATED_UPSTREAM: &str =
    "names a provider and model an earlier upstream names: give each pair one entry (drop one, or add up their weights)";

/// The index of the first upstream of a logical model that names a provider and model an earlier
/// one already names. Two such candidates share one health entry: the pair would get twice its
/// weight, and a failed upstream would be asked again in the same request as "the other one".
pub fn repeated_upstream<'a>(upstreams: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<usize> {
    let mut seen = HashSet::new();
    upstreams.into_iter().position(|pair| !seen.insert(pair))
}

/// A CA file as Pingora loads it: PEM certificates, at least one, and nothing else (a private key
/// in the bundle, or a certificate it cannot read, fails Pingora's start with a panic).
fn check_ca_file(path: &str) -> Result<(), String> {
    use rustls::pki_types::pem::{PemObject, SectionKind};
    let mut roots = rustls::RootCertStore::empty();
    let items = <(SectionKind, Vec<u8>)>::pem_file_iter(path).map_err(|e| format!("cannot be read: {e}"))?;
    for item in items {
        match item.map_err(|e| format!("is not PEM: {e}"))? {
            (SectionKind::Certificate, der) => roots
                .add(rustls::pki_types::CertificateDer::from(der))
                .map_err(|e| format!("holds a certificate that cannot be used: {e}"))?,
            (other, _) => return Err(format!("holds a {other:?}; only CA certificates belong there")),
        }
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn load_text(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let origin = Origin { file: "test.yaml" };
        let mut c = parse(text, &origin, env)?;
        let set = apply_env_overrides(&mut c, env)?;
        validate(&c, &origin).map_err(|e| of_environment(e, &set))?;
        Ok(c)
    }

    /// A CA file Pingora could not load (a key in the bundle, no certificate) is refused at load,
    /// where before the gateway panicked at start, or started with no CA at all.
    #[test]
    fn a_ca_file_holds_certificates_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let good = write("good.pem", &ca.pem());
        let with_key = write("with-key.pem", &format!("{}{}", ca.pem(), key.serialize_pem()));
        let empty = write("empty.pem", "no certificates here\n");
        let yaml = |path: &str| format!("server: {{ca_file: \"{path}\"}}\n");
        assert!(load_text(&yaml(&good), &env_of(&[])).is_ok());
        for (path, why) in [(with_key, "PrivateKey"), (empty, "no PEM certificate")] {
            let err = load_text(&yaml(&path), &env_of(&[])).unwrap_err().to_string();
            assert!(err.contains("server.ca_file") && err.contains(why), "{err}");
        }
    }

    #[test]
    fn expands_secrets_and_defaults() {
        let env = env_of(&[("KEY", "sk-secret")]);
        let c = load_text(
            "providers:\n  - {id: a, base_url: 'http://127.0.0.1:9', api_keys: ['${KEY}', '${OTHER:-x}']}\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.providers[0].api_keys, vec!["sk-secret", "x"]);
    }

    #[test]
    fn an_empty_mask_variable_is_unset() {
        let env = env_of(&[("MASK_USER_AGENT", ""), ("MASK_ORIGIN", "https://example.com")]);
        let c = load_text("mask: {user_agent: 'Agent/1'}\n", &env).unwrap();
        assert_eq!(c.mask.user_agent.as_deref(), Some("Agent/1"), "kept, not emptied");
        assert_eq!(c.mask.origin.as_deref(), Some("https://example.com"));
    }

    #[test]
    fn a_client_name_with_a_slash_is_refused() {
        let env = env_of(&[]);
        let e = load_text("clients:\n  - {name: alice/prod, key: apx-0123456789}\n", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("clients[0].name: must not contain `/`"), "{e}");
        assert!(load_text("clients:\n  - {name: alice-prod, key: apx-0123456789}\n", &env).is_ok());
    }

    #[test]
    fn a_first_circuit_wait_past_the_longest_is_refused() {
        let env = env_of(&[]);
        let e = load_text("server: {circuit_open_s: 600}\n", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.circuit_open_s: must be between 1 and 300"), "{e}");
        assert!(load_text("server: {circuit_open_s: 300}\n", &env).is_ok());
        for ttl in ["0", "2592001", "18446744073709551615"] {
            let e = load_text(&format!("server: {{models_cache_ttl_s: {ttl}}}\n"), &env)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("server.models_cache_ttl_s: must be between 1 and 2592000"),
                "{e}"
            );
        }
    }

    /// `${VAR:-}` in a compose file or a template sets every variable it does not use to "".
    #[test]
    fn every_empty_override_leaves_the_file_s_value() {
        let env = env_of(&[
            ("APIPROXY_LISTEN", " "),
            ("APIPROXY_ADMIN_LISTEN", ""),
            ("APIPROXY_THREADS", ""),
            ("LOG_LEVEL", ""),
            ("LOG_FORMAT", " "),
            ("LOG_TIMEZONE", ""),
            ("MODELS_CACHE_TTL", ""),
            ("APIPROXY_CORS_ORIGINS", ""),
            ("MASK_AS_BROWSER", ""),
            ("MASK_USER_AGENT", ""),
        ]);
        let c = load_text(
            "server: {listen: '127.0.0.1:7000', admin_listen: '127.0.0.1:7001', threads: 3, log_format: json, \
             models_cache_ttl_s: 9, cors_origins: ['https://a.example']}\nmask: {as_browser: true}\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            (c.server.listen.as_str(), c.server.admin_listen.as_str()),
            ("127.0.0.1:7000", "127.0.0.1:7001")
        );
        assert_eq!((c.server.threads, c.server.models_cache_ttl_s), (3, 9));
        assert_eq!(c.server.log_format, LogFormat::Json);
        assert_eq!(c.server.cors_origins, vec!["https://a.example"]);
        assert!(c.mask.as_browser);
    }

    #[test]
    fn missing_secret_names_the_place() {
        let env = env_of(&[]);
        let e = load_text(
            "providers:\n  - {id: a, base_url: 'http://h', api_keys: ['${NOPE}']}\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("test.yaml: providers[0].api_keys[0]: environment variable NOPE"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_the_place() {
        let e = load_text(
            "providers:\n  - {id: a, base_url: 'http://h', weight: heavy}\n",
            &env_of(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("test.yaml: providers[0].weight:"), "{e}");
    }

    /// serde quotes the value it could not take: one from the environment is shown as written.
    #[test]
    fn a_misplaced_secret_is_not_quoted_in_the_error() {
        let env = env_of(&[("KEY", "sk-secret-123")]);
        let e = load_text(
            "providers:\n  - {id: a, base_url: 'http://h', api_keys: '${KEY}'}\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("providers[0].api_keys:") && e.contains("${KEY}"), "{e}");
        assert!(!e.contains("sk-secret"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = load_text("providers: [\n  {id: a\n", &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line "), "{e}");
    }

    #[test]
    fn unknown_provider_in_logical_model() {
        let e = load_text(
            "logical_models:\n  - {id: m, upstreams: [{provider: ghost, model: x}]}\n",
            &env_of(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("logical_models[0].upstreams[0].provider: no provider has id `ghost`"),
            "{e}"
        );
    }

    #[test]
    fn the_admin_service_needs_its_own_port() {
        for (proxy, admin) in [("0.0.0.0:8000", "127.0.0.1:8000"), ("127.0.0.1:8000", "127.0.0.1:8000")] {
            let yaml = format!("server: {{listen: '{proxy}', admin_listen: '{admin}'}}\n");
            let e = load_text(&yaml, &env_of(&[])).unwrap_err().to_string();
            assert!(e.contains("server.admin_listen") && e.contains("its own port"), "{e}");
        }
        let yaml = "server: {listen: '127.0.0.1:8000', admin_listen: '127.0.0.2:8000'}\n";
        assert!(load_text(yaml, &env_of(&[])).is_ok());
    }

    #[test]
    fn cors_origins_are_origins() {
        let e = load_text("server: {cors_origins: ['https://a.example/app']}\n", &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.cors_origins[0]"), "{e}");
        let env = env_of(&[("APIPROXY_CORS_ORIGINS", "https://a.example, http://localhost:3000")]);
        let c = load_text("", &env).unwrap();
        assert_eq!(c.server.cors_origins, ["https://a.example", "http://localhost:3000"]);
    }

    /// A bad value from an environment override is said of its variable, not of the file.
    #[test]
    fn errors_about_overrides_name_their_variable() {
        let yaml = "server: {listen: '0.0.0.0:8000', log_body_bytes: 10}\n";
        let e = load_text(yaml, &env_of(&[("APIPROXY_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("environment: APIPROXY_LISTEN (server.listen):"), "{e}");
        let e = load_text(yaml, &env_of(&[("APIPROXY_CORS_ORIGINS", "https://a.example/app")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("environment: APIPROXY_CORS_ORIGINS (server.cors_origins[0]):"),
            "{e}"
        );
        // The file's own mistakes are still the file's.
        let e = load_text(
            "server: {log_body_bytes: 999999}\n",
            &env_of(&[("APIPROXY_LISTEN", "127.0.0.1:1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("test.yaml: server.log_body_bytes"), "{e}");
    }

    #[test]
    fn env_overrides_win() {
        let env = env_of(&[("APIPROXY_LISTEN", "127.0.0.1:9999"), ("MODELS_CACHE_TTL", "7")]);
        let c = load_text("server: {listen: '0.0.0.0:1'}\n", &env).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9999");
        assert_eq!(c.server.models_cache_ttl_s, 7);
        let bad = env_of(&[("MODELS_CACHE_TTL", "soon")]);
        let e = load_text("", &bad).unwrap_err().to_string();
        assert!(e.starts_with("environment: MODELS_CACHE_TTL:"), "{e}");
    }

    #[test]
    fn logged_bodies_are_bounded() {
        assert_eq!(load_text("", &env_of(&[])).unwrap().server.log_body_bytes, 0);
        let c = load_text("", &env_of(&[("LOG_BODY_BYTES", "2048")])).unwrap();
        assert_eq!(c.server.log_body_bytes, 2048);
        let e = load_text("server: {log_body_bytes: 70000}\n", &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.log_body_bytes") && e.contains("at most 65536"),
            "{e}"
        );
        let e = load_text("", &env_of(&[("LOG_BODY_BYTES", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("environment: LOG_BODY_BYTES:"), "{e}");
    }
}
