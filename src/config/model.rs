//! The shape of `apiproxy.yaml`. Defaults here are the documented defaults of the README.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSettings,
    /// Client keys accepted without a database.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub logical_models: Vec<LogicalModelConfig>,
    /// Browser-like headers added to upstream requests (`MASK_*` in the environment).
    #[serde(default)]
    pub mask: MaskSettings,
}

/// Process-level settings; each has an environment override.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Client API address (`APIPROXY_LISTEN`).
    pub listen: String,
    /// Admin service address (`APIPROXY_ADMIN_LISTEN`).
    pub admin_listen: String,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// `LOG_LEVEL`: an `EnvFilter` directive such as `info` or `apiproxy=debug`.
    pub log_level: String,
    /// `LOG_FORMAT`: human-readable text, or one JSON object per line.
    pub log_format: LogFormat,
    /// `LOG_TIMEZONE`: an IANA zone such as `Asia/Shanghai` for log timestamps; local time when unset.
    pub log_timezone: Option<String>,
    /// `LOG_BODY_BYTES`: the request line also shows the first this many bytes of the client's
    /// request body and of the answer it got; 0 (the default) shows none. Bodies hold prompts and
    /// personal data: for debugging, explicitly.
    pub log_body_bytes: usize,
    /// `MODELS_CACHE_TTL`, seconds.
    pub models_cache_ttl_s: u64,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Upper bound on upstream attempts per request, retries and failovers included.
    pub max_attempts: usize,
    /// Seconds a 429 without `Retry-After` keeps an upstream out of rotation.
    pub default_cooldown_s: u64,
    /// Consecutive failures that open an upstream's circuit.
    pub circuit_failure_threshold: u32,
    /// Seconds an open circuit waits before letting one probe request through.
    pub circuit_open_s: u64,
    /// PEM bundle of CAs trusted for upstream TLS instead of the system's roots.
    pub ca_file: Option<String>,
    /// Lets image URLs the gateway fetches for an upstream (Gemini) reach addresses that are not
    /// public (loopback, private networks); off, a client cannot make the gateway reach inside.
    pub fetch_private_media: bool,
    /// Milliseconds a streamed answer may leave the client without bytes before the gateway sends
    /// a keep-alive in the client's format (an SSE comment); 0 sends none.
    pub stream_keepalive_ms: u64,
    /// Milliseconds one write to the client may wait for it to take bytes; a client that stops
    /// reading (but keeps its socket open) then ends its request instead of holding the upstream
    /// connection and its buffers forever. 0: no limit.
    pub client_write_timeout_ms: u64,
    /// Web origins (`https://app.example.com`, or `*` for any) whose pages may call the proxy
    /// port from a browser (CORS); empty: none (`APIPROXY_CORS_ORIGINS`, comma-separated).
    pub cors_origins: Vec<String>,
    /// Host names resolved to these addresses instead of by DNS (as curl's `--resolve`): a
    /// provider pinned to known servers, or to one address family. Names in lowercase, as
    /// `Endpoint` keeps hosts.
    #[serde(deserialize_with = "lowercase_names")]
    pub resolve: BTreeMap<String, Vec<IpAddr>>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8000".into(),
            admin_listen: "127.0.0.1:8001".into(),
            threads: 2,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            log_timezone: None,
            log_body_bytes: 0,
            models_cache_ttl_s: 300,
            max_body_bytes: 32 * 1024 * 1024,
            max_attempts: 4,
            default_cooldown_s: 5,
            circuit_failure_threshold: 5,
            circuit_open_s: 10,
            ca_file: None,
            fetch_private_media: false,
            stream_keepalive_ms: 15_000,
            client_write_timeout_ms: 60_000,
            cors_origins: Vec::new(),
            resolve: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The largest `max_body_bytes` we accept: the patched Pingora retry buffer (vendor/pingora-core).
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskSettings {
    #[serde(default)]
    pub as_browser: bool,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub referer: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    pub key: String,
}

/// The wire format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiStyle {
    /// OpenAI Chat Completions (and, where offered, the Responses API).
    #[default]
    Openai,
    /// OpenAI Responses only.
    Responses,
    Anthropic,
    Gemini,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    #[default]
    Native,
    Aggregator,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub id: String,
    pub base_url: String,
    #[serde(default)]
    pub api_style: ApiStyle,
    /// Several keys rotate; an empty list sends no credentials (local model servers).
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default = "one")]
    pub weight: f64,
    /// Static model list; without it the list is discovered from the provider.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default = "default_retryable")]
    pub retryable_status_codes: Vec<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub provider_type: ProviderType,
    /// For `api_style: openai`: the upstream serves `/v1/responses` itself. Set false for a
    /// Chat-only OpenAI-compatible server; Responses clients are then translated to Chat.
    #[serde(default = "yes")]
    pub responses_api: bool,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

fn default_retryable() -> Vec<u16> {
    vec![408, 429, 500, 502, 503, 504, 529]
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect_ms: u64,
    /// Wait for the response header of a non-streaming request.
    pub first_byte_ms: u64,
    /// Longest silence allowed inside a stream (and before its first event).
    pub idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: 3_000,
            first_byte_ms: 60_000,
            idle_ms: 60_000,
        }
    }
}

/// Path overrides, for aggregators that mount the APIs elsewhere.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    pub chat: Option<String>,
    pub responses: Option<String>,
    pub models: Option<String>,
    /// Anthropic Messages (`/v1/messages`).
    pub messages: Option<String>,
    /// Gemini API version prefix (`/v1beta`); the model and method follow it.
    pub gemini: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalModelConfig {
    pub id: String,
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub provider: String,
    pub model: String,
    #[serde(default = "one")]
    pub weight: f64,
    /// 0 is tried first; a higher tier only when every upstream above has failed.
    #[serde(default)]
    pub priority: u32,
}

fn lowercase_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<IpAddr>>, D::Error> {
    let named = BTreeMap::<String, Vec<IpAddr>>::deserialize(d)?;
    Ok(named
        .into_iter()
        .map(|(name, ips)| (name.to_ascii_lowercase(), ips))
        .collect())
}
