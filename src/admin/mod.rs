//! The admin service on its own port (`APIPROXY_ADMIN_LISTEN`): health, Prometheus metrics and the
//! read-only routing views. It never shares a port with client traffic.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::app::App;

pub struct AdminApp {
    app: Arc<App>,
}

impl AdminApp {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// Upstream health lives in the health registry; copy it into the gauges at scrape time.
    fn refresh_upstream_gauges(&self) {
        let snap = self.app.snapshot();
        for (provider, model, view) in self.app.health.all(Instant::now()) {
            let weight = snap.routes.provider(&provider).map_or(1.0, |p| p.weight);
            self.app.metrics.set_upstream(&provider, &model, weight, &view);
        }
    }

    fn route(&self, method: &http::Method, path: &str) -> (u16, &'static str, Vec<u8>) {
        let json_ok = |v: serde_json::Value| (200, "application/json", v.to_string().into_bytes());
        if method != http::Method::GET {
            return (405, "application/json", br#"{"error":"method not allowed"}"#.to_vec());
        }
        match path.trim_end_matches('/') {
            "/health" => json_ok(json!({"status": "ok"})),
            "/metrics" => {
                self.refresh_upstream_gauges();
                (200, "text/plain; version=0.0.4", self.app.metrics.render())
            }
            "/providers" => {
                let snap = self.app.snapshot();
                let now = Instant::now();
                let list: Vec<_> = snap
                    .routes
                    .providers()
                    .iter()
                    .map(|p| {
                        json!({
                            "id": &*p.id,
                            "base_url": p.endpoint.url(&p.endpoint.base_path),
                            "api_style": format!("{:?}", p.style).to_lowercase(),
                            "weight": p.weight,
                            "keys_in_rotation": p.usable_keys(),
                            "models": self.app.catalog.models_of(p).map(|m| m.to_vec()),
                            "upstreams": self.app.health.of_provider(&p.id, now)
                                .into_iter()
                                .map(|(model, h)| json!({"model": model, "health": h}))
                                .collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json_ok(json!({ "providers": list }))
            }
            _ => (404, "application/json", br#"{"error":"not found"}"#.to_vec()),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, content_type, body) = self.route(&req.method, req.uri.path());
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
