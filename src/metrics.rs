//! Prometheus metrics, served on the admin port. Label values come from the configuration, the model
//! catalog or fixed sets, never from raw client input, so label sets stay bounded.

use std::collections::HashSet;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::routing::health::HealthView;

/// Latency buckets from 0.5 ms to 10 minutes (long streams and reasoning calls run for minutes), on
/// the round figures SLOs are written in (1 s, 5 s, 30 s…), so a share under one is exact.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
        120.0, 300.0, 600.0,
    ]
}

pub struct Metrics {
    registry: Registry,
    /// Held by a scrape while it refreshes the gauges kept elsewhere and renders.
    pub scrape: parking_lot::Mutex<()>,
    /// Client requests: `api`, `route`, `model`, `provider`, `status_class`, `outcome`.
    pub requests: IntCounterVec,
    /// Upstream attempts: `provider`, `outcome` (status class, `transport_error`, `client_closed`,
    /// or `skipped` for a candidate passed by without sending).
    pub attempts: IntCounterVec,
    /// Attempts followed by an attempt on another upstream: `reason`.
    pub failovers: IntCounterVec,
    /// Attempts followed by another attempt on the same upstream (transient error, other key): `reason`.
    pub retries: IntCounterVec,
    /// Requests the gateway refused itself: `type` (the error code).
    pub client_errors: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_ttfb: HistogramVec,
    pub time_to_first_token: HistogramVec,
    /// Total time minus time waiting on upstreams: what the gateway itself costs.
    pub overhead: HistogramVec,
    /// Tokens: `model`, `provider`, `client`, `kind` (input, output, cached_input, cache_creation, reasoning).
    pub tokens: IntCounterVec,
    pub active: IntGauge,
    pub open_streams: IntGauge,
    pub upstream_latency: GaugeVec,
    pub upstream_error_rate: GaugeVec,
    pub upstream_circuit_open: GaugeVec,
    /// 1 for the state the upstream's circuit is in (`closed`, `open`, `half_open`), 0 for the others.
    pub upstream_circuit_state: GaugeVec,
    pub upstream_cooldown: GaugeVec,
    pub upstream_weight: GaugeVec,
    /// The weight the router gives each upstream of a logical model now: `route`, `provider`, `model`.
    pub route_weight: GaugeVec,
    /// Configuration rebuilds: `result` (`applied`; `rejected` when the previous one was kept;
    /// `failed` when the database could not be read).
    pub config_reloads: IntCounterVec,
    /// Errors talking to a shared-state backend: `backend`.
    pub state_errors: IntCounterVec,
    /// Media URLs sent inline for an upstream: `result` (fetched, reused, refused).
    pub media: IntCounterVec,
    /// The `duration` and `overhead` series of each `api` label, looked up once: every request
    /// observes both, and a labelled lookup hashes its values and takes a lock.
    api_timings: [std::sync::OnceLock<(Histogram, Histogram)>; API_LABELS.len()],
}

/// Every value of the `api` label (`RequestCtx::api_label`).
pub const API_LABELS: [&str; 10] = [
    "openai_chat",
    "openai_responses",
    "anthropic",
    "gemini",
    "anthropic_count_tokens",
    "gemini_count_tokens",
    "openai_embeddings",
    "openai_responses_compact",
    "models",
    "none",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

/// The gateway's own cost is microseconds to a few milliseconds: fine buckets where a
/// sub-millisecond p99 is judged, coarse ones above.
fn overhead_buckets() -> Vec<f64> {
    vec![
        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.002, 0.005,
        0.01, 0.025, 0.1, 0.5, 2.5,
    ]
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    histogram_with(r, name, help, labels, latency_buckets())
}

fn histogram_with(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    r.register(Box::new(h.clone())).expect("metric registered once");
    h
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let active = IntGauge::new("apiproxy_active_requests", "Requests in flight").expect("valid metric");
        let open_streams = IntGauge::new("apiproxy_open_streams", "SSE streams in flight").expect("valid metric");
        for g in [Box::new(active.clone()), Box::new(open_streams.clone())] {
            r.register(g).expect("metric registered once");
        }
        Self {
            requests: counter(
                &r,
                "apiproxy_requests_total",
                "Client requests",
                &["api", "route", "model", "provider", "status_class", "outcome"],
            ),
            attempts: counter(
                &r,
                "apiproxy_upstream_attempts_total",
                "Upstream attempts",
                &["provider", "outcome"],
            ),
            failovers: counter(
                &r,
                "apiproxy_failovers_total",
                "Attempts followed by an attempt on another upstream",
                &["reason"],
            ),
            retries: counter(
                &r,
                "apiproxy_retries_total",
                "Attempts followed by another attempt on the same upstream",
                &["reason"],
            ),
            client_errors: counter(
                &r,
                "apiproxy_client_errors_total",
                "Requests refused by the gateway",
                &["type"],
            ),
            duration: histogram(
                &r,
                "apiproxy_request_duration_seconds",
                "Total request latency",
                &["api"],
            ),
            upstream_ttfb: histogram(
                &r,
                "apiproxy_upstream_ttfb_seconds",
                "Upstream time to response header",
                &["provider"],
            ),
            time_to_first_token: histogram(
                &r,
                "apiproxy_time_to_first_token_seconds",
                "Time from request to the first content of a stream (text, reasoning, a tool call)",
                &["provider"],
            ),
            overhead: histogram_with(
                &r,
                "apiproxy_gateway_overhead_seconds",
                "Total latency minus time waiting on upstreams (request sent to last response byte received)",
                &["api"],
                overhead_buckets(),
            ),
            tokens: counter(
                &r,
                "apiproxy_tokens_total",
                "Tokens reported by upstreams (input includes cached_input and cache_creation, output includes reasoning)",
                &["model", "provider", "client", "kind"],
            ),
            active,
            open_streams,
            upstream_latency: gauge(
                &r,
                "apiproxy_upstream_latency_ewma_seconds",
                "Latency EWMA per upstream",
                &["provider", "model"],
            ),
            upstream_error_rate: gauge(
                &r,
                "apiproxy_upstream_error_rate",
                "Error-rate EWMA per upstream (0-1)",
                &["provider", "model"],
            ),
            upstream_circuit_open: gauge(
                &r,
                "apiproxy_upstream_circuit_open",
                "1 when the upstream's circuit is open or half-open",
                &["provider", "model"],
            ),
            upstream_circuit_state: gauge(
                &r,
                "apiproxy_upstream_circuit_state",
                "1 for the state the upstream's circuit is in, 0 for the others",
                &["provider", "model", "state"],
            ),
            upstream_cooldown: gauge(
                &r,
                "apiproxy_upstream_cooldown_seconds",
                "Remaining 429 cool-down per upstream",
                &["provider", "model"],
            ),
            upstream_weight: gauge(
                &r,
                "apiproxy_upstream_weight",
                "The provider's configured weight × health factor per upstream (zero-config and provider/ routes)",
                &["provider", "model"],
            ),
            route_weight: gauge(
                &r,
                "apiproxy_route_weight",
                "Effective weight the router gives each upstream of a logical model: configured weight × error factor × latency factor against its tier's fastest; 0 out of rotation",
                &["route", "provider", "model"],
            ),
            config_reloads: counter(
                &r,
                "apiproxy_config_reloads_total",
                "Configuration rebuilds: applied, rejected (the previous configuration kept) or failed (the database unreadable)",
                &["result"],
            ),
            state_errors: counter(
                &r,
                "apiproxy_state_backend_errors_total",
                "Errors from a shared-state backend",
                &["backend"],
            ),
            media: counter(
                &r,
                "apiproxy_media_fetches_total",
                "Media URLs the gateway fetched for an upstream, reused from an earlier fetch, or refused",
                &["result"],
            ),
            registry: r,
            scrape: parking_lot::Mutex::new(()),
            api_timings: Default::default(),
        }
    }

    /// The total-latency and overhead histograms of an `api` label, one of [API_LABELS] (every
    /// label `RequestCtx::api_label` gives is one: a unit test there says so; any other would be
    /// counted under `none`).
    pub fn api_timings(&self, api: &'static str) -> &(Histogram, Histogram) {
        let i = API_LABELS
            .iter()
            .position(|l| *l == api)
            .unwrap_or(API_LABELS.len() - 1);
        self.api_timings[i].get_or_init(|| {
            let label = [API_LABELS[i]];
            (
                self.duration.with_label_values(&label),
                self.overhead.with_label_values(&label),
            )
        })
    }

    /// Sets the per-upstream gauges from the live health (called at scrape time).
    /// Forgets every upstream series, before the current upstreams are set again.
    pub fn clear_upstreams(&self) {
        for gauge in [
            &self.upstream_latency,
            &self.upstream_error_rate,
            &self.upstream_circuit_open,
            &self.upstream_circuit_state,
            &self.upstream_cooldown,
            &self.upstream_weight,
            &self.route_weight,
        ] {
            gauge.reset();
        }
    }

    pub fn set_upstream(&self, provider: &str, model: &str, weight: f64, h: &HealthView) {
        let labels = [provider, model];
        // No sample yet, no series: a 0 would read as the fastest upstream.
        if let Some(ms) = h.latency_ewma_ms {
            self.upstream_latency.with_label_values(&labels).set(ms / 1000.0);
        }
        self.upstream_error_rate.with_label_values(&labels).set(h.error_rate);
        self.upstream_circuit_open
            .with_label_values(&labels)
            .set(if h.circuit == "closed" { 0.0 } else { 1.0 });
        for state in ["closed", "open", "half_open"] {
            self.upstream_circuit_state
                .with_label_values(&[provider, model, state])
                .set(if h.circuit == state { 1.0 } else { 0.0 });
        }
        self.upstream_cooldown
            .with_label_values(&labels)
            .set(h.cooldown_remaining_ms as f64 / 1000.0);
        let factor = if h.circuit == "closed" && h.cooldown_remaining_ms == 0 {
            (1.0 - 0.9 * h.error_rate).max(0.05)
        } else {
            0.0
        };
        self.upstream_weight.with_label_values(&labels).set(weight * factor);
    }

    /// Forgets the token series of clients no key is known by any more (deleted or renamed keys),
    /// so the `client` label stays bounded by the keys that exist.
    pub fn retain_clients(&self, known: &HashSet<&str>) {
        for family in self.tokens.collect() {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map_or("", |l| l.value())
                };
                let client = label("client");
                if client != "none" && !known.contains(client) {
                    let values = [label("model"), label("provider"), client, label("kind")];
                    let _ = self.tokens.remove_label_values(&values);
                }
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// `2xx`, `4xx`…: a bounded label for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
