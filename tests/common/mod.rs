//! Test harness: the real `apiproxy` binary on ephemeral ports, against mock upstreams run by the
//! test, driven over real sockets.
#![allow(dead_code)]

pub mod mock;
pub mod sdk;
pub mod shape;
pub mod tcp_proxy;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(unused_imports)]
pub use mock::{Mock, Recorded, Reply, Style};

pub const CLIENT_KEY: &str = "test-client-key-0123456789";

/// Where the gateway keeps its data in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in the test's temporary folder.
    Sqlite,
    /// A fresh database on the local PostgreSQL (`127.0.0.1:5432`, user `postgres`), dropped after.
    Postgres,
}

const PG_ADMIN_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

async fn pg_exec(sql: String) {
    let (client, conn) = tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls)
        .await
        .expect(
            "PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, database test) is needed for \
             these tests: `.ci/services` (as root, Debian/Ubuntu) installs and starts it, with Redis",
        );
    let task = tokio::spawn(conn);
    client.batch_execute(&sql).await.expect(&sql);
    drop(client);
    let _ = task.await;
}

/// A new, empty database on the local PostgreSQL: (name, URL). Drop it with `drop_pg_database`.
pub async fn fresh_pg_database() -> (String, String) {
    let name = format!("apiproxy_t_{:016x}", rand::random::<u64>());
    pg_exec(format!("CREATE DATABASE {name}")).await;
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    (name, url)
}

/// Drops a database `fresh_pg_database` made.
pub async fn drop_pg_database(name: &str) {
    pg_exec(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
}

/// The admin credentials a test bootstrapped.
#[derive(Clone)]
pub struct AdminCreds {
    pub user_id: String,
    pub password: String,
    pub token: String,
}

/// A port nothing listens on now, never handed out before in this test process: tests run in
/// parallel, and two gateways given the same free port would race for it, the loser's requests
/// answered by the winner.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up on Linux): a port handed to a gateway to
    // bind later is never the one the kernel gives a mock or a client binding port 0 meanwhile
    // (which happened: a gateway's admin port taken by a mock, the test scraping the mock).
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    let mut next = 20_000 + (std::process::id() % 1000) as u16 * 12;
    loop {
        next = if next >= 32_000 { 20_000 } else { next + 1 };
        if handed_out.contains(&next) || TcpListener::bind(("127.0.0.1", next)).is_err() {
            continue;
        }
        handed_out.push(next);
        return next;
    }
}

/// Polls `check` until it holds, every 10 ms; fails the test naming `what` after `limit`. How long
/// it took.
pub async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if check().await {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything a raw connection sends until it closes (within `limit`), as text.
pub async fn read_to_close(sock: &mut (impl tokio::io::AsyncRead + Unpin), limit: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    tokio::time::timeout(limit, sock.read_to_end(&mut answer))
        .await
        .expect("the connection closes at the end of the answer")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads a raw connection into `seen` until it holds `needle`, each read within `limit`.
pub async fn read_until(
    sock: &mut (impl tokio::io::AsyncRead + Unpin),
    seen: &mut Vec<u8>,
    needle: &str,
    limit: Duration,
) {
    use tokio::io::AsyncReadExt;
    while !String::from_utf8_lossy(seen).contains(needle) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(limit, sock.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("`{needle}` within {limit:?}: {}", String::from_utf8_lossy(seen)))
            .unwrap();
        assert!(n > 0, "closed before `{needle}`: {}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&buf[..n]);
    }
}

/// A port that refuses connections for as long as this lives: bound, never listening, so the kernel
/// answers a connect with a reset and hands the port to no one else (a released "free" port could
/// go to the next mock).
pub struct DeadPort {
    _held: tokio::net::TcpSocket,
    pub port: u16,
}

impl DeadPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        Self { _held: socket, port }
    }
}

pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub database_url: String,
    pg_db: Option<String>,
    admin: tokio::sync::OnceCell<AdminCreds>,
}

impl Gateway {
    /// Starts the gateway with this YAML (a `clients` entry with `CLIENT_KEY` is added) and waits
    /// until both ports answer.
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[]).await
    }

    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_on(Backend::Sqlite, yaml, env).await
    }

    /// Starts on a fresh database of `backend` (unless `env` names a `DATABASE_URL`).
    pub async fn start_on(backend: Backend, yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut pg_db = None;
        let database_url = match env.iter().find(|(k, _)| *k == "DATABASE_URL") {
            Some((_, url)) => url.to_string(),
            None => match backend {
                Backend::Sqlite => format!("sqlite://{}", dir.path().join("apiproxy.db").display()),
                Backend::Postgres => {
                    let (name, url) = fresh_pg_database().await;
                    pg_db = Some(name);
                    url
                }
            },
        };
        let config = dir.path().join("apiproxy.yaml");
        let full = format!("clients:\n  - {{name: tester, key: \"{CLIENT_KEY}\"}}\n{yaml}");
        std::fs::write(&config, full).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiproxy"));
        // Nothing of the developer's or CI's environment (a `REDIS_URL`, a `SESSION_TTL`…) reaches
        // the gateway: each test says all it runs with.
        cmd.env_clear();
        for keep in ["PATH", "HOME", "TMPDIR", "RUST_BACKTRACE", "LLVM_PROFILE_FILE"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        // Its own folder to run in: nothing relative (an old `data/`) is found in the checkout.
        cmd.current_dir(dir.path())
            .arg("--config")
            .arg(&config)
            .env("APIPROXY_LISTEN", format!("127.0.0.1:{port}"))
            .env("APIPROXY_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("LOG_LEVEL", "info")
            .env("DATABASE_URL", &database_url)
            .env("APIPROXY_DATA_DIR", dir.path().join("data"))
            .env_remove("SECRET_KEY")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start apiproxy");
        let mut gw = Gateway {
            child,
            port,
            admin_port,
            dir,
            client: reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap(),
            database_url,
            pg_db,
            admin: tokio::sync::OnceCell::new(),
        };
        gw.wait_ready().await;
        gw
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in [self.url("/health"), self.admin_url("/health")] {
            loop {
                // Another process answering on a port this one could not take must not pass for it.
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("gateway exited ({status}); log:\n{}", self.logs());
                }
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
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("gateway exited ({status}); log:\n{}", self.logs());
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

    /// The log once `ready` holds for it (lines are written as requests end, off the client's
    /// path): polled for up to 10 s, then returned as it is.
    pub async fn logs_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if ready(&logs) || Instant::now() > deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// One chat completion sent as curl sends a large body: `Expect: 100-continue`, the body only
    /// after the gateway's `100 Continue` (asserted). The whole raw answer that follows.
    pub async fn post_expecting_continue(&self, body: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
             content-type: application/json\r\nexpect: 100-continue\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        // The body waits for the go-ahead, as the client asked.
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), sock.read(&mut buf))
            .await
            .expect("a 100 Continue, not silence")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 100"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        sock.write_all(body.as_bytes()).await.unwrap();
        read_to_close(&mut sock, Duration::from_secs(10)).await
    }

    /// POST a chat completion with the test key.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", body, &[]).await
    }

    /// A Gemini client's `generateContent` call for `model`, its key in the query (`?key=`).
    pub async fn gemini_with_query_key(&self, model: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1beta/models/{model}:generateContent?key={CLIENT_KEY}")))
            .json(&serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).bearer_auth(CLIENT_KEY).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("request reaches the gateway")
    }
}

impl Gateway {
    /// The first admin, created through `POST /system/admin/init` and logged in (once per gateway).
    pub async fn admin(&self) -> AdminCreds {
        self.admin
            .get_or_init(|| async {
                let r = self
                    .client
                    .post(self.admin_url("/system/admin/init"))
                    .json(&serde_json::json!({"username": "admin"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201, "admin init");
                let v: Value = r.json().await.unwrap();
                let password = v["password"].as_str().unwrap().to_string();
                let token = self.login("admin", &password).await;
                AdminCreds {
                    user_id: v["user"]["id"].as_str().unwrap().to_string(),
                    password,
                    token,
                }
            })
            .await
            .clone()
    }

    /// An access token for this user.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .client
            .post(self.admin_url("/auth/login"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {username}");
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    /// An admin-API `GET` with the admin's token: its status and JSON body (`Null` when none).
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self.admin_req(reqwest::Method::GET, path).await.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// An admin-API request with the admin's token.
    pub async fn admin_req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = self.admin().await.token;
        self.client.request(method, self.admin_url(path)).bearer_auth(token)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(name) = self.pg_db.take() {
            // Drop runs outside any runtime we may block: use a thread with its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(drop_pg_database(&name));
                }
            })
            .join();
        }
    }
}

pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// A key prefix of the real Redis at 127.0.0.1:6379 for one test; its keys are deleted on drop.
pub struct RedisPrefix(pub String);

impl RedisPrefix {
    pub fn new() -> Self {
        Self(format!("apxt:{:016x}:", rand::random::<u64>()))
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(REDIS_URL) else {
            return;
        };
        let Ok(mut c) = client.get_connection() else { return };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}

/// A chat request body.
pub fn chat_body(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// One OpenAI Chat stream event (`Reply::Sse`) of choice `index`: `delta` and `finish` as JSON.
pub fn chat_chunk(index: u8, delta: &str, finish: &str) -> String {
    format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\
         \"choices\":[{{\"index\":{index},\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
    )
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

/// Mocks `alpha` and `beta` serving `m`, behind the logical model `lm` that prefers alpha and fails
/// over to beta (a lower tier).
pub async fn failover_pair() -> (Mock, Mock, Gateway) {
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let yaml = format!(
        "providers:\n{}{}logical_models:\n  - id: lm\n    upstreams: [{{provider: alpha, model: m}}, {{provider: beta, model: m, priority: 1}}]\n",
        provider_yaml("alpha", &a, ""),
        provider_yaml("beta", &b, "")
    );
    let gw = Gateway::start(&yaml).await;
    (a, b, gw)
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

/// The sum of the values of metric `name` whose labels contain every `want` pair.
pub fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    // A family with no series yet is left out of the text, so a misspelt name would read as 0 and
    // every "nothing counted" check would pass: the name must be one the gateway registers.
    static REGISTERED: &str = include_str!("../../src/metrics.rs");
    let family = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    assert!(
        REGISTERED.contains(&format!("\"{family}\"")),
        "{name} is no metric the gateway exports"
    );
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| want.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Gateway {
    /// The Prometheus text of the admin port.
    /// Read once no request is in flight (within 2 s): a request's metrics are counted when it is
    /// logged, just after its last byte reached the client.
    pub async fn metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let text = self.metrics_now().await;
            if metric(&text, "apiproxy_active_requests", &[]) == 0.0 || Instant::now() >= deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The Prometheus text of the admin port as it is now, requests in flight or not.
    pub async fn metrics_now(&self) -> String {
        let r = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("admin answers");
        r.text().await.unwrap_or_default()
    }

    /// The ids `path` (`/models` or `/v1/models`) lists for client key `key`, checked to be an
    /// OpenAI-style list answered with 200.
    pub async fn model_ids(&self, path: &str, key: &str) -> Vec<String> {
        let r = self.client.get(self.url(path)).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "list");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    }
}
