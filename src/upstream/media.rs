//! Images and files an upstream cannot fetch itself (Gemini reads `fileData` only from `gs://` and
//! its Files API), fetched by the gateway and sent inline. A client names the URL, so the fetch is
//! bounded in time and size, follows few redirects, takes only images and PDFs, and by default
//! refuses every address that is not public (loopback, private, link-local…): a request must not
//! make the gateway reach into its own network.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::future::try_join_all;

use crate::formats::{FetchedMedia, Media};

/// Most bytes fetched for one request, all URLs together (Gemini takes 20 MB of inline data per
/// request, base64 included).
const MAX_BYTES: usize = 14 * 1024 * 1024;
/// Most URLs fetched for one request.
const MAX_URLS: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 3;
/// Most memory the media fetched lately may hold (base64, as sent).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Longest a fetched media is reused (less when its `Cache-Control: max-age` says so).
const CACHE_TTL: Duration = Duration::from_secs(600);
/// Most requests fetching media at once: each may hold `MAX_BYTES` and their base64 while it does,
/// so a client sending many requests with image URLs cannot grow the gateway's memory without
/// bound (16 hold at most about half a GiB). Others wait their turn.
const MAX_REQUESTS_FETCHING: usize = 16;

/// Why a client's media URL could not be sent inline. The message names the URL, never more.
#[derive(Debug, thiserror::Error)]
#[error("the media at `{url}` could not be fetched for this upstream: {reason}")]
pub struct FetchError {
    url: String,
    reason: String,
}

pub struct MediaFetcher {
    client: reqwest::Client,
    allow_private: bool,
    /// Media fetched lately, by URL: a conversation sends its images again with every turn, and
    /// each would otherwise be downloaded again. Fetched under the same address policy.
    recent: quick_cache::sync::Cache<String, Arc<Fetched>, ByEncodedSize>,
    /// `apiproxy_media_fetches_total`, by `result`.
    outcomes: prometheus::IntCounterVec,
    /// A turn for each request fetching (`MAX_REQUESTS_FETCHING`).
    turns: tokio::sync::Semaphore,
}

/// A fetched media, as sent inline (base64), and until when it may be reused.
struct Fetched {
    media_type: String,
    data: String,
    expires: Instant,
}

impl Fetched {
    fn media(&self) -> Media {
        Media::Base64 {
            media_type: self.media_type.clone(),
            data: self.data.clone(),
        }
    }

    /// Bytes before base64, as counted against a request's budget.
    fn size(&self) -> usize {
        let padding = self.data.bytes().rev().take_while(|b| *b == b'=').count();
        (self.data.len() / 4 * 3).saturating_sub(padding)
    }
}

#[derive(Clone)]
struct ByEncodedSize;

impl quick_cache::Weighter<String, Arc<Fetched>> for ByEncodedSize {
    fn weight(&self, url: &String, f: &Arc<Fetched>) -> u64 {
        (url.len() + f.data.len()).max(1) as u64
    }
}

impl MediaFetcher {
    /// `allow_private` lets URLs reach non-public addresses (`server.fetch_private_media`). Fails
    /// only when no HTTP client can be built; never falls back to one without the address check.
    pub fn new(allow_private: bool, outcomes: prometheus::IntCounterVec) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if !allow_private && attempt.url().host().is_some_and(|h| literal_is_private(&h)) {
                    attempt.error("redirected to an address that is not public")
                } else {
                    attempt.follow()
                }
            }))
            .dns_resolver(Arc::new(PublicResolver { allow_private }))
            // A proxy from the environment would resolve names itself, past the address check.
            .no_proxy()
            .build()
            .map_err(|e| format!("media fetcher: {e}"))?;
        Ok(Self {
            client,
            allow_private,
            recent: quick_cache::sync::Cache::with_options(
                // One shard: each shard holds its share of the capacity, and a large image must
                // fit in one.
                quick_cache::OptionsBuilder::new()
                    .shards(1)
                    .estimated_items_capacity(256)
                    .weight_capacity(CACHE_BYTES)
                    .build()
                    .map_err(|e| format!("media cache: {e}"))?,
                ByEncodedSize,
                Default::default(),
                Default::default(),
            ),
            outcomes,
            turns: tokio::sync::Semaphore::new(MAX_REQUESTS_FETCHING),
        })
    }

    /// Fetches every URL (concurrently, within one byte budget); the first failure fails them all.
    pub async fn fetch_all(&self, urls: &[String]) -> Result<FetchedMedia, FetchError> {
        if let Some(extra) = urls.get(MAX_URLS) {
            return Err(FetchError {
                url: extra.chars().take(200).collect(),
                reason: format!("a request may name at most {MAX_URLS} media URLs"),
            });
        }
        // Never closed: a turn always comes.
        let _turn = self.turns.acquire().await;
        let budget = AtomicUsize::new(MAX_BYTES);
        let fetched = try_join_all(urls.iter().map(|u| self.fetch_counted(u, &budget))).await?;
        Ok(urls.iter().cloned().zip(fetched).collect())
    }

    async fn fetch_counted(&self, url: &str, budget: &AtomicUsize) -> Result<Media, FetchError> {
        let result = self.fetch(url, budget).await;
        let outcome = match &result {
            Ok((_, true)) => "reused",
            Ok((_, false)) => "fetched",
            Err(_) => "refused",
        };
        self.outcomes.with_label_values(&[outcome]).inc();
        result.map(|(media, _)| media)
    }

    /// The media at `url`, and whether it was reused from an earlier fetch.
    async fn fetch(&self, url: &str, budget: &AtomicUsize) -> Result<(Media, bool), FetchError> {
        let fail = |reason: &str| FetchError {
            url: url.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        let too_large = || fail("the request's media add up to more than 14 MiB");
        let take = |n: usize| {
            budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(n))
                .map(|_| ())
        };
        if let Some(f) = self.recent.get(url).filter(|f| f.expires > Instant::now()) {
            take(f.size()).map_err(|_| too_large())?;
            return Ok((f.media(), true));
        }
        let parsed = reqwest::Url::parse(url).map_err(|_| fail("not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(fail("only http and https URLs are fetched"));
        }
        if !self.allow_private && parsed.host().is_some_and(|h| literal_is_private(&h)) {
            return Err(fail("the address is not public"));
        }
        let mut resp = self.client.get(parsed).send().await.map_err(|e| {
            // Not `e.to_string()`: it would repeat the URL; say what kind of failure it was.
            fail(if e.is_timeout() {
                "timed out"
            } else if e.is_redirect() {
                "too many redirects, or a redirect to an address that is not public"
            } else if e.is_connect() {
                "could not connect (or the host has no public address)"
            } else {
                "the request failed"
            })
        })?;
        if !resp.status().is_success() {
            return Err(fail(&format!("the server answered {}", resp.status().as_u16())));
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default();
        if !(media_type.starts_with("image/") || media_type == "application/pdf") {
            return Err(fail("it is not an image or a PDF"));
        }
        if resp.content_length().is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(too_large());
        }
        let ttl = reuse_for(resp.headers());
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|_| fail("the download was cut"))? {
            take(chunk.len()).map_err(|_| too_large())?;
            bytes.extend_from_slice(&chunk);
        }
        let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let Some(ttl) = ttl else {
            return Ok((Media::Base64 { media_type, data }, false));
        };
        let fetched = Fetched {
            media_type,
            data,
            expires: Instant::now() + ttl,
        };
        let media = fetched.media();
        self.recent.insert(url.to_string(), Arc::new(fetched));
        Ok((media, false))
    }
}

/// How long an answer may be reused for other requests, by its `Cache-Control`: not at all when
/// it is `no-store`, `no-cache` or `private` (one user's), at most its `max-age`, else `CACHE_TTL`.
fn reuse_for(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let mut ttl = CACHE_TTL;
    for directive in headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let d = directive.trim().to_ascii_lowercase();
        if matches!(d.as_str(), "no-store" | "no-cache" | "private") {
            return None;
        }
        if let Some(secs) = d
            .strip_prefix("max-age=")
            .and_then(|n| n.trim_matches('"').parse::<u64>().ok())
        {
            ttl = ttl.min(Duration::from_secs(secs));
        }
    }
    (!ttl.is_zero()).then_some(ttl)
}

/// Resolves names to their public addresses only (all of them, when private ones are allowed).
struct PublicResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("the host has no public address".into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An IP-literal host that is not public (names are checked when resolved).
fn literal_is_private(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => !is_public(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => !is_public(IpAddr::V6(*ip)),
        url::Host::Domain(_) => false,
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT) and benchmarking networks.
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                // IETF protocol assignments (192.0.0.0/24: DS-Lite, NAT64 discovery).
                || (a, b, v4.octets()[2]) == (192, 0, 0)
                || v4.is_multicast()
                || a >= 240)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| embedded_ipv4(v6)) {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                // NAT64's local-use prefix (64:ff9b:1::/48) reaches whatever IPv4 its translator
                // is set up for: private networks included.
                let local_nat64 = v6.segments()[..3] == [0x64, 0xff9b, 1];
                !(v6.is_loopback()
                    || local_nat64
                    || v6.is_unspecified()
                    || (first & 0xfe00) == 0xfc00 // unique local
                    || (first & 0xffc0) == 0xfe80 // link-local
                    || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside some networks)
                    || v6.is_multicast())
            }
        },
    }
}

/// The IPv4 address an IPv6 address reaches through a translator or tunnel, which is what a
/// fetch of it would reach: NAT64's well-known prefix (64:ff9b::/96), 6to4 (2002::/16) and the
/// old IPv4-compatible form (::a.b.c.d).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let last = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(last(hi, lo)),
        [0x2002, hi, lo, ..] => Some(last(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => Some(last(hi, lo)),
        // SIIT's IPv4-translated form (::ffff:0:a.b.c.d).
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(last(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many requests fetch media at once, at most `MAX_REQUESTS_FETCHING` download
    /// together; the others wait their turn and are served.
    #[tokio::test(flavor = "multi_thread")]
    async fn requests_fetching_media_take_turns() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (server_now, server_most) = (now.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let (now, most) = (server_now.clone(), server_most.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        let n = sock.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncache-control: no-store\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd";
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        let outcomes = prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["result"]).unwrap();
        let fetcher = Arc::new(MediaFetcher::new(true, outcomes).unwrap());
        let requests = (0..3 * MAX_REQUESTS_FETCHING).map(|i| {
            let fetcher = fetcher.clone();
            tokio::spawn(async move { fetcher.fetch_all(&[format!("http://127.0.0.1:{port}/{i}.png")]).await })
        });
        for done in futures_util::future::join_all(requests).await {
            assert!(done.unwrap().is_ok());
        }
        let most = most.load(Ordering::SeqCst);
        assert!((2..=MAX_REQUESTS_FETCHING).contains(&most), "{most} at once");
    }

    #[test]
    fn addresses_that_reach_ipv4_through_a_translator_are_judged_by_it() {
        for private in [
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "2002:c0a8:101::1",
            "::10.0.0.1",
            "64:ff9b:1::8.8.8.8",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn cache_control_bounds_reuse() {
        let ttl = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::CACHE_CONTROL, v.parse().unwrap());
            reuse_for(&h)
        };
        assert_eq!(reuse_for(&reqwest::header::HeaderMap::new()), Some(CACHE_TTL));
        assert_eq!(ttl("public, max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(ttl("max-age=86400"), Some(CACHE_TTL));
        for never in ["no-store", "private, max-age=600", "No-Cache", "max-age=0"] {
            assert_eq!(ttl(never), None, "{never}");
        }
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "fec0::1",
            "::ffff:0:a00:1",
            "192.0.0.8",
            "224.0.0.251",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
