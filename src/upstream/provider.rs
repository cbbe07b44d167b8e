//! A configured provider at run time: its endpoint, resolved addresses, rotating keys and request
//! shaping (paths, auth and extra headers).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use parking_lot::Mutex;

use super::Endpoint;
use crate::config::{ApiStyle, ProviderConfig, ProviderType, Timeouts};
use crate::formats::WireFormat;
use crate::limit::TokenBucket;

/// What a provider stored in the database adds to its `ProviderConfig`.
#[derive(Debug, Clone, Default)]
pub struct ProviderExtras {
    /// Per-key requests-per-second limits, parallel to `ProviderConfig::api_keys`.
    pub key_qps: Vec<Option<u32>>,
    /// Models never listed or routed to by zero-config, even when discovered.
    pub hidden_models: HashSet<String>,
    /// (alias, model): clients may ask for the alias and get this provider's model.
    pub aliases: Vec<(String, String)>,
}

/// How long a key that the provider refused (401/403) stays out of rotation.
const BAD_KEY_PAUSE: Duration = Duration::from_secs(600);

/// One provider credential. The secret never leaves this type except as a header value.
pub struct ProviderKey {
    header: HeaderValue,
    /// Unix milliseconds until which the key is out of rotation; 0 when usable.
    paused_until_ms: AtomicU64,
    /// Requests per second this key may carry, and its bucket.
    qps: Option<(u32, TokenBucket)>,
}

impl ProviderKey {
    /// Not paused at `now_ms` (a refused key rests for a while).
    fn in_rotation(&self, now_ms: u64) -> bool {
        self.paused_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderKey(<redacted>)")
    }
}

/// The key chosen for one attempt: its index (for taking it out of rotation) and header value.
#[derive(Clone)]
pub struct KeyChoice {
    pub index: usize,
    pub header: HeaderValue,
}

pub struct Provider {
    pub id: Arc<str>,
    pub style: ApiStyle,
    pub endpoint: Endpoint,
    pub weight: f64,
    pub static_models: Option<Vec<String>>,
    pub hidden_models: HashSet<String>,
    pub aliases: Vec<(String, String)>,
    pub timeouts: Timeouts,
    pub provider_type: ProviderType,
    retryable: Vec<u16>,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub chat_path: String,
    pub responses_path: String,
    pub models_path: String,
    pub messages_path: String,
    /// Gemini API version prefix, e.g. `/v1beta`.
    pub gemini_prefix: String,
    /// An `openai`-style upstream that serves `/v1/responses` natively.
    pub responses_api: bool,
    /// `Host` header value.
    pub authority: HeaderValue,
    keys: Vec<ProviderKey>,
    next_key: AtomicUsize,
    addrs: ArcSwap<Vec<SocketAddr>>,
    next_addr: AtomicUsize,
    /// Addresses a connection to failed lately, with when they may be tried again; `any_down`
    /// keeps the lock off the request path while there are none.
    down: Mutex<Vec<(SocketAddr, Instant)>>,
    any_down: AtomicBool,
    /// The upstream refused `stream_options` (Mistral: 422 `extra_forbidden`): its streams are
    /// asked without it.
    refuses_stream_usage: AtomicBool,
}

/// How long an address that refused a connection is passed over while the host has others (an
/// IPv6 address where the gateway has no IPv6 route, one server of several down).
const ADDR_DOWN: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Provider {
    /// Carries over from the provider this one replaces (a configuration reload) what its keys
    /// have learnt: which rest after being refused, what their rate budgets have spent, where the
    /// round-robin is. Otherwise every admin write would put a refused key back in rotation on
    /// every replica and refill every budget.
    /// Nothing carries over when where or how the provider is asked changed (a fixed `base_url`,
    /// header or path is why its keys were refused).
    pub fn carry_key_state(&self, old: &Provider) {
        if !self.asked_as(old) {
            return;
        }
        for key in &self.keys {
            let Some(before) = old.keys.iter().find(|k| k.header == key.header) else {
                continue;
            };
            key.paused_until_ms
                .store(before.paused_until_ms.load(Ordering::Relaxed), Ordering::Relaxed);
            if let (Some((rate, bucket)), Some((old_rate, old_bucket))) = (&key.qps, &before.qps) {
                if rate == old_rate {
                    bucket.take_over(old_bucket);
                }
            }
        }
        self.next_key
            .store(old.next_key.load(Ordering::Relaxed), Ordering::Relaxed);
        self.refuses_stream_usage
            .store(old.refuses_stream_usage(), Ordering::Relaxed);
    }

    /// Whether an OpenAI Chat stream to this upstream may ask for its usage (`stream_options`).
    pub fn refuses_stream_usage(&self) -> bool {
        self.refuses_stream_usage.load(Ordering::Relaxed)
    }

    /// The upstream answered a request for refusing `stream_options`: asked without it from now.
    pub fn set_refuses_stream_usage(&self) {
        self.refuses_stream_usage.store(true, Ordering::Relaxed);
    }

    /// Pauses here the key `old` was refused with: a request that began before a reload learnt it
    /// on the provider this one replaced, after its state was carried over.
    pub fn pause_key_of(&self, old: &Provider, index: usize) {
        let Some(refused) = old.keys.get(index) else { return };
        if let Some(i) = self.keys.iter().position(|k| k.header == refused.header) {
            if self.asked_as(old) {
                self.pause_key(i);
            }
        }
    }

    /// Whether this provider is asked where and as `old` was, so what its keys learnt holds here.
    /// Whether its model list is fetched as `old`'s was: asked the same way, with the same keys,
    /// and discovered (or not) alike. A configuration change that leaves every provider so needs
    /// no new round of discovery.
    /// The name this provider's model list is shared under between replicas: its id and a digest
    /// of how the list is asked for (URL, style, headers, keys: what `listed_as` compares), so a
    /// provider changed through the admin API is listed afresh, not read from the cache of what
    /// its old endpoint listed.
    pub fn listing_key(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut add = |part: &[u8]| {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        };
        add(self.endpoint.url(&self.models_path).as_bytes());
        add(format!("{:?}", self.style).as_bytes());
        for (name, value) in &self.extra_headers {
            add(name.as_str().as_bytes());
            add(value.as_bytes());
        }
        for key in &self.keys {
            add(key.header.as_bytes());
        }
        let digest = ctx.finish();
        let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:{hex}", self.id)
    }

    pub fn listed_as(&self, old: &Provider) -> bool {
        self.asked_as(old)
            && self.lists_where(old)
            && self.static_models.is_none() == old.static_models.is_none()
            && self.keys.len() == old.keys.len()
            && self.keys.iter().zip(&old.keys).all(|(a, b)| a.header == b.header)
    }

    /// Whether its models are listed by the same server, at the same place and in the same API,
    /// as `old`'s: else what `old` listed says nothing of what this one serves. (A header or a
    /// chat path changed: the same list.)
    pub fn lists_where(&self, old: &Provider) -> bool {
        self.endpoint == old.endpoint && self.style == old.style && self.models_path == old.models_path
    }

    /// Whether this provider is asked as `old` was, with the same keys: else what `old`'s health
    /// says (an open circuit, a cool-down) may be what the change mends.
    pub fn asked_as_with_keys(&self, old: &Provider) -> bool {
        self.asked_as(old)
            && self.keys.len() == old.keys.len()
            && self.keys.iter().all(|k| old.keys.iter().any(|o| o.header == k.header))
    }

    fn asked_as(&self, old: &Provider) -> bool {
        self.endpoint == old.endpoint
            && self.extra_headers == old.extra_headers
            && self.style == old.style
            && [
                &self.chat_path,
                &self.responses_path,
                &self.messages_path,
                &self.gemini_prefix,
            ] == [
                &old.chat_path,
                &old.responses_path,
                &old.messages_path,
                &old.gemini_prefix,
            ]
    }
}

/// One replica's share of a key's QPS limit: an exact fraction, so that together the replicas
/// stay within the limit (rounded up, 5/s over two replicas was 6/s, and 1/s over three 3/s).
fn key_share(rate: u32, replicas: u32) -> f64 {
    f64::from(rate) / f64::from(replicas.max(1))
}

impl Provider {
    /// Builds the run-time provider; the config was validated, so parse failures are impossible here
    /// and reported as strings only for completeness.
    pub fn from_config(c: &ProviderConfig) -> Result<Self, String> {
        Self::build(c, &ProviderExtras::default())
    }

    /// As `from_config`, with what the database adds (key limits, hidden models, aliases).
    pub fn build(c: &ProviderConfig, extras: &ProviderExtras) -> Result<Self, String> {
        let endpoint = Endpoint::parse(&c.base_url)?;
        let join = |over: &Option<String>, default: &str| {
            over.clone()
                .unwrap_or_else(|| format!("{}{default}", endpoint.base_path))
        };
        let auth_value = |key: &str| match c.api_style {
            ApiStyle::Openai | ApiStyle::Responses => format!("Bearer {key}"),
            ApiStyle::Anthropic | ApiStyle::Gemini => key.to_string(),
        };
        let keys = c
            .api_keys
            .iter()
            .enumerate()
            .filter(|(_, k)| !k.is_empty())
            .map(|(i, k)| {
                let mut header = HeaderValue::from_str(&auth_value(k)).map_err(|_| "invalid api key".to_string())?;
                header.set_sensitive(true);
                let qps = extras
                    .key_qps
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|r| (r, TokenBucket::new(f64::from(r))));
                Ok(ProviderKey {
                    header,
                    paused_until_ms: AtomicU64::new(0),
                    qps,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let extra_headers = c
            .headers
            .iter()
            .map(|(k, v)| {
                // Often a credential (Azure's `api-key`): kept out of every `Debug` print of the
                // upstream request, as Pingora's debug log of the head is.
                let mut value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
                value.set_sensitive(true);
                Ok((HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?, value))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let addrs = endpoint.literal_addr().into_iter().collect();
        Ok(Self {
            id: c.id.as_str().into(),
            style: c.api_style,
            authority: HeaderValue::from_str(&endpoint.authority()).map_err(|e| e.to_string())?,
            chat_path: join(&c.paths.chat, "/v1/chat/completions"),
            responses_path: join(&c.paths.responses, "/v1/responses"),
            models_path: join(
                &c.paths.models,
                if c.api_style == ApiStyle::Gemini {
                    "/v1beta/models"
                } else {
                    "/v1/models"
                },
            ),
            messages_path: join(&c.paths.messages, "/v1/messages"),
            gemini_prefix: join(&c.paths.gemini, "/v1beta"),
            responses_api: c.responses_api,
            endpoint,
            weight: c.weight,
            static_models: c.models.clone(),
            hidden_models: extras.hidden_models.clone(),
            aliases: extras.aliases.clone(),
            timeouts: c.timeouts,
            provider_type: c.provider_type,
            retryable: c.retryable_status_codes.clone(),
            extra_headers,
            keys,
            next_key: AtomicUsize::new(0),
            addrs: ArcSwap::from_pointee(addrs),
            next_addr: AtomicUsize::new(0),
            down: Mutex::new(Vec::new()),
            any_down: AtomicBool::new(false),
            refuses_stream_usage: AtomicBool::new(false),
        })
    }

    /// Whether this provider's configuration lists `status` as worth another attempt.
    pub fn is_retryable(&self, status: u16) -> bool {
        self.retryable.contains(&status)
    }

    /// The header that carries the key for this API style.
    pub fn auth_header(&self) -> http::HeaderName {
        match self.style {
            ApiStyle::Openai | ApiStyle::Responses => http::header::AUTHORIZATION,
            ApiStyle::Anthropic => http::HeaderName::from_static("x-api-key"),
            ApiStyle::Gemini => http::HeaderName::from_static("x-goog-api-key"),
        }
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Round-robin over the keys in rotation, skipping those in `exclude` and those at their QPS
    /// limit. `None` when the provider has keys but none is usable. A key's QPS limit is shared by
    /// the `replicas` using it: each takes an equal share, so together they stay within it without
    /// a Redis round trip per request.
    /// `body` with every key of this provider replaced by `[REDACTED]`, when it holds one: an
    /// upstream's error may echo the key it was called with (Gemini names a suspended key in
    /// full), and that body goes to the client. `None` when there is nothing to take out.
    pub fn scrub_keys(&self, body: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.iter().map(|key| {
            let header = key.header.as_bytes();
            match header.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &header[7..],
                _ => header,
            }
        });
        // Credentials set as headers (Azure's `api-key`): values that look like one, not an
        // `api-version` date or a media type.
        let headers = self
            .extra_headers
            .iter()
            .map(|(_, v)| v.as_bytes())
            .filter(|v| v.len() >= 16 && v.iter().any(u8::is_ascii_digit) && v.iter().any(u8::is_ascii_alphabetic));
        let mut out: Option<Vec<u8>> = None;
        for secret in keys.chain(headers) {
            // Too short to be a secret anyone could mistake for other text.
            if secret.len() < 8 {
                continue;
            }
            let text = out.as_deref().unwrap_or(body);
            let mut found = memchr::memmem::find_iter(text, secret).peekable();
            if found.peek().is_none() {
                continue;
            }
            let mut clean = Vec::with_capacity(text.len());
            let mut at = 0;
            for found in found {
                clean.extend_from_slice(&text[at..found]);
                clean.extend_from_slice(b"[REDACTED]");
                at = found + secret.len();
            }
            clean.extend_from_slice(&text[at..]);
            out = Some(clean);
        }
        out
    }

    /// The next key in turn among those that may be used (outside `exclude`, in rotation), whose
    /// share of its QPS limit has budget. The turn goes round the usable keys only: a paused key's
    /// turns are shared by all the others, not taken by the key after it.
    pub fn pick_key(&self, exclude: &[usize], replicas: u32) -> Option<KeyChoice> {
        let share = |rate: u32| key_share(rate, replicas);
        let now = now_ms();
        let usable = |i: &usize| !exclude.contains(i) && self.keys[*i].in_rotation(now);
        let count = (0..self.keys.len()).filter(usable).count();
        if count == 0 {
            return None;
        }
        let start = self.next_key.fetch_add(1, Ordering::Relaxed) % count;
        let instant = Instant::now();
        (0..self.keys.len())
            .filter(usable)
            .cycle()
            .skip(start)
            .take(count)
            .find(|&i| {
                self.keys[i]
                    .qps
                    .as_ref()
                    .is_none_or(|(rate, b)| b.take(share(*rate), instant).is_ok())
            })
            .map(|index| KeyChoice {
                index,
                header: self.keys[index].header.clone(),
            })
    }

    /// When `pick_key` found none though a key outside `exclude` is in rotation: how long until the
    /// first such key has budget again (its share of the key's QPS limit). Spends nothing.
    pub fn key_budget_wait(&self, exclude: &[usize], replicas: u32) -> Option<Duration> {
        let share = |rate: u32| key_share(rate, replicas);
        let (now, instant) = (now_ms(), Instant::now());
        self.keys
            .iter()
            .enumerate()
            .filter(|(i, k)| !exclude.contains(i) && k.in_rotation(now))
            .filter_map(|(_, k)| k.qps.as_ref().map(|(rate, b)| b.wait(share(*rate), instant)))
            .min()
    }

    /// Whether a request may be sent with a key outside `exclude`: the provider needs none, or one
    /// is in rotation (its rate budget aside).
    pub fn can_send_without(&self, exclude: &[usize]) -> bool {
        !self.has_keys() || self.has_key_in_rotation(exclude)
    }

    /// Whether a key outside `exclude` is in rotation (its rate budget aside, and left untouched).
    pub fn has_key_in_rotation(&self, exclude: &[usize]) -> bool {
        let now = now_ms();
        self.keys
            .iter()
            .enumerate()
            .any(|(i, k)| !exclude.contains(&i) && k.in_rotation(now))
    }

    /// Takes a key the provider refused out of rotation.
    pub fn pause_key(&self, index: usize) {
        if let Some(k) = self.keys.get(index) {
            k.paused_until_ms
                .store(now_ms() + BAD_KEY_PAUSE.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Keys currently in rotation.
    pub fn usable_keys(&self) -> usize {
        let now = now_ms();
        self.keys.iter().filter(|k| k.in_rotation(now)).count()
    }

    /// The first key in rotation, for background calls (model lists, probes): they neither spend
    /// the proxy's QPS budget nor move its turn, and a key at its limit still lists the models.
    pub fn any_key(&self) -> Option<HeaderValue> {
        let now = now_ms();
        self.keys.iter().find(|k| k.in_rotation(now)).map(|k| k.header.clone())
    }

    /// One of the resolved addresses, rotating, passing over those a connection failed to lately
    /// (unless every one did); `None` before the first successful resolution.
    pub fn addr(&self) -> Option<SocketAddr> {
        let addrs = self.addrs.load();
        if addrs.is_empty() {
            return None;
        }
        let turn = self.next_addr.fetch_add(1, Ordering::Relaxed);
        if self.any_down.load(Ordering::Relaxed) {
            if let Some(addr) = self.live_addr(&addrs, turn) {
                return Some(addr);
            }
        }
        Some(addrs[turn % addrs.len()])
    }

    fn live_addr(&self, addrs: &[SocketAddr], turn: usize) -> Option<SocketAddr> {
        let now = Instant::now();
        let mut down = self.down.lock();
        down.retain(|(_, until)| *until > now);
        if down.is_empty() {
            self.any_down.store(false, Ordering::Relaxed);
            return None;
        }
        let is_live = |a: &&SocketAddr| !down.iter().any(|(d, _)| d == *a);
        let live = addrs.iter().filter(is_live).count();
        (live > 0)
            .then(|| addrs.iter().filter(is_live).nth(turn % live).copied())
            .flatten()
    }

    /// A connection to `addr` failed: it is passed over for a while. Says whether the host has
    /// another address not passed over, which the request can try instead (the failure is then
    /// the address's, not the upstream's).
    pub fn addr_failed(&self, addr: SocketAddr) -> bool {
        let addrs = self.addrs.load();
        if addrs.len() < 2 || !addrs.contains(&addr) {
            return false;
        }
        let now = Instant::now();
        let mut down = self.down.lock();
        down.retain(|(a, until)| *until > now && *a != addr);
        down.push((addr, now + ADDR_DOWN));
        self.any_down.store(true, Ordering::Relaxed);
        addrs.iter().any(|a| !down.iter().any(|(d, _)| d == a))
    }

    /// Every resolved address; `None` before the first resolution.
    pub fn addrs(&self) -> Option<Vec<SocketAddr>> {
        let addrs = self.addrs.load();
        (!addrs.is_empty()).then(|| addrs.to_vec())
    }

    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        if !addrs.is_empty() && **self.addrs.load() != addrs {
            self.addrs.store(Arc::new(addrs));
        }
    }

    pub fn needs_dns(&self) -> bool {
        self.endpoint.literal_addr().is_none()
    }

    /// The format this provider is spoken to in, for a request that arrived in `request`.
    pub fn upstream_format(&self, request: WireFormat) -> WireFormat {
        match self.style {
            ApiStyle::Openai if request == WireFormat::OpenAiResponses && self.responses_api => {
                WireFormat::OpenAiResponses
            }
            ApiStyle::Openai => WireFormat::OpenAiChat,
            ApiStyle::Responses => WireFormat::OpenAiResponses,
            ApiStyle::Anthropic => WireFormat::Anthropic,
            ApiStyle::Gemini => WireFormat::Gemini,
        }
    }

    /// Whether this provider's API wants the assistant turns' reasoning back (`reasoning_content`):
    /// DeepSeek's and Moonshot's own, by host (the same models elsewhere, at Groq say, refuse the
    /// field).
    pub fn wants_reasoning_back(&self) -> bool {
        const HOSTS: [&str; 3] = ["api.deepseek.com", "api.moonshot.ai", "api.moonshot.cn"];
        HOSTS.iter().any(|h| self.endpoint.host.eq_ignore_ascii_case(h))
    }

    /// The request path (and query) for a call in `format`; Gemini puts the model and method in it.
    pub fn path_for(&self, format: WireFormat, model: &str, stream: bool) -> String {
        match format {
            WireFormat::OpenAiChat => self.chat_path.clone(),
            WireFormat::OpenAiResponses => self.responses_path.clone(),
            WireFormat::Anthropic => self.messages_path.clone(),
            WireFormat::Gemini => {
                let model = model.strip_prefix("models/").unwrap_or(model);
                let method = if stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                };
                format!("{}/models/{model}:{method}", self.gemini_prefix)
            }
        }
    }

    /// The path of a token count in `format`, where the format has one (Anthropic's
    /// `/v1/messages/count_tokens`, next to the messages path; Gemini's `:countTokens`).
    pub fn count_path_for(&self, format: WireFormat, model: &str) -> Option<String> {
        match format {
            // Configured paths are plain (no query).
            WireFormat::Anthropic => Some(format!("{}/count_tokens", self.messages_path.trim_end_matches('/'))),
            WireFormat::Gemini => {
                let model = model.strip_prefix("models/").unwrap_or(model);
                Some(format!("{}/models/{model}:countTokens", self.gemini_prefix))
            }
            WireFormat::OpenAiChat | WireFormat::OpenAiResponses => None,
        }
    }

    /// The path of a Responses compaction (`/responses/compact`, beside the Responses path), for an
    /// upstream spoken to in Responses: no other API compacts.
    pub fn compact_path_for(&self, format: WireFormat) -> Option<String> {
        (format == WireFormat::OpenAiResponses)
            .then(|| format!("{}/compact", self.responses_path.trim_end_matches('/')))
    }

    /// The path of embeddings in `format`, where the format has them: an OpenAI-compatible API's
    /// `/embeddings` beside its chat path (`/v1/chat/completions` → `/v1/embeddings`; a chat path
    /// of another shape: `/v1/embeddings` under the base URL's path), Gemini's `:batchEmbedContents`.
    pub fn embeddings_path_for(&self, format: WireFormat, model: &str) -> Option<String> {
        match format {
            WireFormat::OpenAiChat | WireFormat::OpenAiResponses => Some(
                match self.chat_path.trim_end_matches('/').strip_suffix("/chat/completions") {
                    Some(base) => format!("{base}/embeddings"),
                    None => format!("{}/v1/embeddings", self.endpoint.base_path),
                },
            ),
            WireFormat::Gemini => {
                let model = model.strip_prefix("models/").unwrap_or(model);
                Some(format!("{}/models/{model}:batchEmbedContents", self.gemini_prefix))
            }
            WireFormat::Anthropic => None,
        }
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(keys: &[&str]) -> Provider {
        let yaml = format!("{{id: p, base_url: 'http://127.0.0.1:1', api_keys: {keys:?}}}");
        Provider::from_config(&serde_yaml::from_str(&yaml).unwrap()).unwrap()
    }

    #[test]
    fn a_model_list_is_shared_under_how_it_is_asked_for() {
        let of = |yaml: &str| {
            Provider::from_config(&serde_yaml::from_str(yaml).unwrap())
                .unwrap()
                .listing_key()
        };
        let base = of("{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1]}");
        assert_eq!(base, of("{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1]}"));
        assert!(base.starts_with("p:"), "{base}");
        assert!(!base.contains("k1"), "no secret in a Redis key: {base}");
        for changed in [
            "{id: p, base_url: 'http://127.0.0.1:2', api_keys: [k1]}",
            "{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k2]}",
            "{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1], api_style: anthropic}",
            "{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1], headers: {x-team: a}}",
        ] {
            assert_ne!(base, of(changed), "{changed}");
        }
    }

    #[test]
    fn keys_rotate_and_pause() {
        let p = provider(&["k1", "k2"]);
        let a = p.pick_key(&[], 1).unwrap().index;
        let b = p.pick_key(&[], 1).unwrap().index;
        assert_ne!(a, b);
        p.pause_key(0);
        for _ in 0..4 {
            assert_eq!(p.pick_key(&[], 1).unwrap().index, 1);
        }
        assert!(p.pick_key(&[1], 1).is_none());
        assert_eq!(p.usable_keys(), 1);
        assert_eq!(p.pick_key(&[], 1).unwrap().header, "Bearer k2");
    }

    #[test]
    fn a_paused_key_s_turns_are_shared_by_the_others() {
        let p = provider(&["k1", "k2", "k3"]);
        p.pause_key(0);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[p.pick_key(&[], 1).unwrap().index] += 1;
        }
        assert_eq!(counts, [0, 150, 150]);
    }

    #[test]
    fn background_calls_take_a_key_at_its_limit_and_spend_nothing() {
        let c: ProviderConfig =
            serde_yaml::from_str("{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1]}").unwrap();
        let extras = ProviderExtras {
            key_qps: vec![Some(1)],
            ..Default::default()
        };
        let p = Provider::build(&c, &extras).unwrap();
        assert!(p.pick_key(&[], 1).is_some());
        assert!(p.pick_key(&[], 1).is_none(), "at its limit");
        assert_eq!(p.any_key().unwrap(), "Bearer k1");
    }

    #[test]
    fn qps_limited_keys_step_aside() {
        let c: ProviderConfig =
            serde_yaml::from_str("{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1, k2]}").unwrap();
        let extras = ProviderExtras {
            key_qps: vec![Some(1), None],
            ..Default::default()
        };
        let p = Provider::build(&c, &extras).unwrap();
        let picked: Vec<usize> = (0..6).filter_map(|_| p.pick_key(&[], 1).map(|k| k.index)).collect();
        assert_eq!(picked.iter().filter(|i| **i == 0).count(), 1, "{picked:?}");
    }

    #[test]
    fn a_reload_keeps_what_the_keys_learnt() {
        let c: ProviderConfig =
            serde_yaml::from_str("{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1, k2]}").unwrap();
        let extras = ProviderExtras {
            key_qps: vec![None, Some(1)],
            ..Default::default()
        };
        let before = Provider::build(&c, &extras).unwrap();
        before.pause_key(0);
        assert_eq!(before.pick_key(&[], 1).map(|k| k.index), Some(1), "k2 spends its 1/s");
        // The same provider rebuilt (an admin wrote something): k1 still rests, k2's second is spent.
        let after = Provider::build(&c, &extras).unwrap();
        after.carry_key_state(&before);
        assert!(after.pick_key(&[], 1).is_none());
        // A rebuilt provider that is not told keeps nothing (what the reload did before).
        let fresh = Provider::build(&c, &extras).unwrap();
        assert!(fresh.pick_key(&[], 1).is_some());
        // Nor does one whose base_url changed: a wrong URL may be why its keys were refused.
        let moved: ProviderConfig =
            serde_yaml::from_str("{id: p, base_url: 'http://127.0.0.1:2', api_keys: [k1, k2]}").unwrap();
        let fixed = Provider::build(&moved, &extras).unwrap();
        fixed.carry_key_state(&before);
        assert!(fixed.pick_key(&[], 1).is_some());
        assert!(fixed.has_key_in_rotation(&[1]), "k1 back in rotation");
    }

    #[test]
    fn a_key_refused_after_a_reload_rests_in_the_new_provider_too() {
        let c: ProviderConfig =
            serde_yaml::from_str("{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1, k2]}").unwrap();
        let extras = ProviderExtras::default();
        let before = Provider::build(&c, &extras).unwrap();
        let after = Provider::build(&c, &extras).unwrap();
        after.carry_key_state(&before);
        // A request that began before the reload is refused k2 on the old provider.
        before.pause_key(1);
        after.pause_key_of(&before, 1);
        assert!(!after.has_key_in_rotation(&[0]), "k2 rests in the new one too");
        // Not where the provider is now asked elsewhere.
        let moved: ProviderConfig =
            serde_yaml::from_str("{id: p, base_url: 'http://127.0.0.1:2', api_keys: [k1, k2]}").unwrap();
        let elsewhere = Provider::build(&moved, &extras).unwrap();
        elsewhere.pause_key_of(&before, 1);
        assert!(elsewhere.has_key_in_rotation(&[0]));
    }

    #[test]
    fn replicas_split_a_key_limit() {
        let c: ProviderConfig =
            serde_yaml::from_str("{id: p, base_url: 'http://127.0.0.1:1', api_keys: [k1]}").unwrap();
        let extras = ProviderExtras {
            key_qps: vec![Some(6)],
            ..Default::default()
        };
        let p = Provider::build(&c, &extras).unwrap();
        // Three replicas: this one may send 2 of the key's 6 per second.
        let n = (0..10).filter(|_| p.pick_key(&[], 3).is_some()).count();
        assert_eq!(n, 2);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let p = provider(&["sk-very-secret"]);
        assert!(!format!("{p:?}").contains("sk-very-secret"));
    }
}
