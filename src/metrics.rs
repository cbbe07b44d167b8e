//! Prometheus metrics, served on the admin port. Label values come from the configuration or fixed
//! sets, never from raw client input, so label sets stay bounded.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub attempts: IntCounterVec,
    pub duration: HistogramVec,
    pub active: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "apiproxy_requests_total",
                "Client requests by API, status class and outcome",
            ),
            &["api", "status_class", "outcome"],
        )
        .expect("valid metric");
        let attempts = IntCounterVec::new(
            Opts::new(
                "apiproxy_upstream_attempts_total",
                "Upstream attempts by provider and outcome",
            ),
            &["provider", "outcome"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("apiproxy_request_duration_seconds", "Total request latency")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 18).expect("valid buckets")),
            &["api"],
        )
        .expect("valid metric");
        let active = IntGauge::new("apiproxy_active_requests", "Requests in flight").expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(attempts.clone()),
            Box::new(duration.clone()),
            Box::new(active.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Self {
            registry,
            requests,
            attempts,
            duration,
            active,
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
