//! Background upkeep of provider knowledge, so the request path never waits on it: DNS resolution
//! of provider hosts and discovery of model lists (every `MODELS_CACHE_TTL`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use tokio::task::JoinSet;

use super::catalog::parse_model_list;
use super::Provider;
use crate::app::App;
use crate::config::ApiStyle;

const DNS_REFRESH: Duration = Duration::from_secs(30);
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Discovery {
    app: Arc<App>,
}

impl Discovery {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// Resolves every provider's host, all at once: one slow name server delays no other.
    async fn refresh_dns(&self) {
        let snapshot = self.app.snapshot();
        let lookups = snapshot
            .routes
            .providers()
            .iter()
            .filter(|p| p.needs_dns())
            .map(|p| async move {
                if let Some(ips) = self.app.settings.resolve.get(&p.endpoint.host) {
                    p.set_addrs(ips.iter().map(|ip| SocketAddr::new(*ip, p.endpoint.port)).collect());
                    return;
                }
                let target = (p.endpoint.host.as_str(), p.endpoint.port);
                match tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(target)).await {
                    Ok(Ok(addrs)) => p.set_addrs(addrs.collect()),
                    Ok(Err(e)) => tracing::warn!(provider = %p.id, error = %e, "DNS resolution failed"),
                    Err(_) => tracing::warn!(provider = %p.id, "DNS resolution timed out"),
                }
            });
        futures_util::future::join_all(lookups).await;
    }

    async fn refresh_models(&self, client: &reqwest::Client) {
        let snapshot = self.app.snapshot();
        let mut tasks = JoinSet::new();
        let ttl = Duration::from_secs(self.app.settings.models_cache_ttl_s.max(1));
        for p in snapshot.routes.providers().iter().filter(|p| p.static_models.is_none()) {
            // Another replica listed this provider, asked as it is now, within the TTL: use its list.
            if let Some(models) = self.app.state.models(&p.listing_key()).await {
                tracing::debug!(provider = %p.id, count = models.len(), "model list from shared state");
                self.app.catalog.set_discovered(&p.id, models);
                continue;
            }
            let (p, client, app) = (p.clone(), client.clone(), self.app.clone());
            tasks.spawn(async move {
                let models = fetch_models(&client, &p).await;
                if let Ok(list) = &models {
                    app.state.put_models(&p.listing_key(), list, ttl).await;
                }
                (p, models)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                // A provider moved elsewhere while its old server was being asked: that list is
                // not its own any more.
                Ok((p, Ok(_)))
                    if !self
                        .app
                        .snapshot()
                        .routes
                        .provider(&p.id)
                        .is_some_and(|now| now.lists_where(&p)) =>
                {
                    tracing::debug!(provider = %p.id, "model list of a provider since changed, dropped");
                }
                Ok((p, Ok(models))) => {
                    tracing::debug!(provider = %p.id, count = models.len(), "model list refreshed");
                    self.app.catalog.set_discovered(&p.id, models);
                }
                Ok((p, Err(e))) => tracing::warn!(provider = %p.id, error = %e, "model list discovery failed"),
                Err(e) => tracing::warn!(error = %e, "model discovery task failed"),
            }
        }
        self.app.rebuild_catalog();
    }
}

/// Most pages of one provider's model list read (at the largest page size each API takes).
const MAX_PAGES: usize = 20;

/// Fetches one provider's model list, every page of it (Gemini lists 50 models a page unless
/// asked for more, Anthropic 20). Errors carry no secret: only the status or transport error.
pub async fn fetch_models(client: &reqwest::Client, p: &Provider) -> Result<Vec<String>, String> {
    let mut models = Vec::new();
    let mut page: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let (status, body) = fetch_models_page(client, p, page.as_deref()).await?;
        if !(200..300).contains(&status) {
            return Err(format!("status {status}"));
        }
        models.extend(parse_model_list(&body).ok_or_else(|| "unrecognised model list".to_string())?);
        match next_page(p.style, &body) {
            None => return Ok(models),
            // A server that names the page it just gave as the next one would be asked forever.
            Some(next) if page.as_deref() == Some(next.as_str()) => {
                return Err("the model list names the same page again".into())
            }
            next => page = next,
        }
    }
    Err(format!("the model list goes on past {MAX_PAGES} pages"))
}

/// Largest model-list page read: the longest real lists (OpenRouter's, Gemini's at 1000 a page)
/// are well under a megabyte.
const MAX_LIST_BYTES: usize = 8 << 20;

/// One GET of the provider's model-list endpoint: its status and body as sent (the first page, as
/// large as the API gives). Also the admin API's live probe. Errors carry no secret and no URL.
pub async fn fetch_raw_models(client: &reqwest::Client, p: &Provider) -> Result<(u16, bytes::Bytes), String> {
    fetch_models_page(client, p, None).await
}

/// Where the page after this one starts: Gemini's `nextPageToken`, Anthropic's `last_id` while
/// `has_more`. OpenAI's list has no pages.
fn next_page(style: ApiStyle, body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = match style {
        ApiStyle::Gemini => v.get("nextPageToken")?.as_str()?,
        ApiStyle::Anthropic if v.get("has_more")?.as_bool()? => v.get("last_id")?.as_str()?,
        _ => return None,
    };
    (!token.is_empty()).then(|| token.to_string())
}

/// The model list's URL for the page after `page` (the first without it), at the largest page size.
fn models_url(p: &Provider, page: Option<&str>) -> String {
    let mut url = p.endpoint.url(&p.models_path);
    let mut param = |k: &str, v: &str| {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(k);
        url.push('=');
        url.extend(url::form_urlencoded::byte_serialize(v.as_bytes()));
    };
    match p.style {
        ApiStyle::Gemini => {
            param("pageSize", "1000");
            if let Some(t) = page {
                param("pageToken", t);
            }
        }
        ApiStyle::Anthropic => {
            param("limit", "1000");
            if let Some(t) = page {
                param("after_id", t);
            }
        }
        _ => {}
    }
    url
}

async fn fetch_models_page(
    client: &reqwest::Client,
    p: &Provider,
    page: Option<&str>,
) -> Result<(u16, bytes::Bytes), String> {
    // Each header once, the provider's own last, as the proxy sends them (`insert`: reqwest's
    // `header` appends, and two `anthropic-version`s or two keys get a 400).
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = p.any_key() {
        headers.insert(p.auth_header(), key);
    }
    if p.style == ApiStyle::Anthropic {
        headers.insert(
            "anthropic-version",
            reqwest::header::HeaderValue::from_static("2023-06-01"),
        );
    }
    for (k, v) in &p.extra_headers {
        headers.insert(k.clone(), v.clone());
    }
    let mut resp = client
        .get(models_url(p, page))
        .headers(headers)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = resp.status().as_u16();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + chunk.len() > MAX_LIST_BYTES {
            return Err(format!("the model list is larger than {} MiB", MAX_LIST_BYTES >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body.freeze()))
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start_with_ready_notifier(&self, mut shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let client = match super::provider_client(&self.app.settings, DISCOVERY_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the discovery HTTP client");
                ready.notify_ready();
                return;
            }
        };
        // First pass before the proxy accepts traffic, so zero-config routes work from the start.
        self.refresh_dns().await;
        self.refresh_models(&client).await;
        ready.notify_ready();

        // Addresses and model lists are refreshed by loops of their own: a slow model list (up to
        // 20 pages of 10 s each) does not hold back a changed address.
        let ttl = Duration::from_secs(self.app.settings.models_cache_ttl_s.max(1));
        let mut dns_tick = tokio::time::interval(DNS_REFRESH);
        let mut models_tick = tokio::time::interval(ttl);
        // A long pass delays the ticks behind it: they then come once, not in a burst.
        dns_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        models_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        dns_tick.tick().await;
        models_tick.tick().await;
        let mut dns_shutdown = shutdown.clone();
        let addresses = async {
            loop {
                tokio::select! {
                    _ = dns_shutdown.changed() => break,
                    _ = dns_tick.tick() => self.refresh_dns().await,
                    _ = self.app.hosts_changed.notified() => self.refresh_dns().await,
                }
            }
        };
        let model_lists = async {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = models_tick.tick() => self.refresh_models(&client).await,
                    // Providers were added or changed through the admin API (the address loop
                    // hears of it too).
                    _ = self.app.topology_changed.notified() => self.refresh_models(&client).await,
                }
            }
        };
        tokio::join!(addresses, model_lists);
    }
}
