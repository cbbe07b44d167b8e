//! Test harness: the real `apiproxy` binary on ephemeral ports, against mock upstreams run by the
//! test, driven over real sockets.
#![allow(dead_code)]

pub mod mock;
pub mod sdk;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(unused_imports)]
pub use mock::{Mock, Recorded, Reply, Style};

pub const CLIENT_KEY: &str = "test-client-key-0123456789";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

impl Gateway {
    /// Starts the gateway with this YAML (a `clients` entry with `CLIENT_KEY` is added) and waits
    /// until both ports answer.
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[]).await
    }

    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("apiproxy.yaml");
        let full = format!("clients:\n  - {{name: tester, key: \"{CLIENT_KEY}\"}}\n{yaml}");
        std::fs::write(&config, full).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiproxy"));
        cmd.arg("--config")
            .arg(&config)
            .env("APIPROXY_LISTEN", format!("127.0.0.1:{port}"))
            .env("APIPROXY_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("LOG_LEVEL", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start apiproxy");
        let gw = Gateway {
            child,
            port,
            admin_port,
            dir,
            client: reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap(),
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in [self.url("/health"), self.admin_url("/health")] {
            loop {
                if let Ok(r) = self.client.get(&url).send().await {
                    if r.status() == 200 {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "gateway did not start; log:\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// POST a chat completion with the test key.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", body, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).bearer_auth(CLIENT_KEY).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request reaches the gateway")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chat request body.
pub fn chat_body(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// Reads an SSE body to the end, returning each `data:` payload in order.
pub async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap_or_default();
    text.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        })
        .map(|s| s.to_string())
        .collect()
}

/// The YAML of one provider pointing at a mock.
pub fn provider_yaml(id: &str, mock: &Mock, extra: &str) -> String {
    format!(
        "  - {{id: {id}, base_url: \"{}\", api_keys: [\"sk-{id}-secret-key\"]{extra}}}\n",
        mock.url()
    )
}

/// The YAML of one provider of the given `api_style` (`openai`, `responses`, `anthropic`, `gemini`)
/// at `base_url`.
pub fn provider_yaml_api(id: &str, base_url: &str, api_style: &str, extra: &str) -> String {
    format!("  - {{id: {id}, base_url: \"{base_url}\", api_style: {api_style}, api_keys: [\"sk-{id}-secret-key\"]{extra}}}\n")
}

/// The YAML of one provider pointing at a mock, with the `api_style` of the mock's style.
pub fn provider_yaml_styled(id: &str, mock: &Mock, extra: &str) -> String {
    provider_yaml_api(id, &mock.url(), mock.style().api_style(), extra)
}

/// The key `provider_yaml*` gives provider `id`, as the mock should receive it.
pub fn provider_key(id: &str) -> String {
    format!("sk-{id}-secret-key")
}
