//! End-to-end benchmark: a fast mock upstream and a load generator in one process, measuring the mock
//! directly and through APIProxy (the release binary) in the same run, so every figure is printed next
//! to its baseline. nginx is measured as a reference reverse proxy when it is installed.
//!
//! Run: `cargo bench --bench gateway` (BENCH_SECS=N sets the length of each timed phase).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The gateway's allocator, so the Pingora floor (this binary re-executed) is compared like for like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENT_KEY: &str = "bench-client-key-0123456789";

// ---------------------------------------------------------------- mock upstream

const STREAM_EVENTS: usize = 50;

fn json_reply() -> &'static [u8] {
    br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}"#
}

fn anthropic_reply() -> &'static [u8] {
    br#"{"id":"msg_bench","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":9}}"#
}

fn stream_reply() -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = |data: &str| out.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
    for i in 0..STREAM_EVENTS {
        chunk(&format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    chunk("data: [DONE]\n\n");
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Connections the mock has accepted: shows whether upstream connections are pooled.
static MOCK_ACCEPTS: AtomicU64 = AtomicU64::new(0);

async fn mock_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("mock addr");
    let stream_body: Arc<[u8]> = stream_reply().into();
    tokio::spawn(async move {
        loop {
            // An accept that fails (descriptors run out at 1,000 streams) must not end the mock.
            let sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    eprintln!("mock upstream: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            MOCK_ACCEPTS.fetch_add(1, Ordering::Relaxed);
            let _ = sock.set_nodelay(true);
            tokio::spawn(mock_conn(sock, stream_body.clone()));
        }
    });
    addr
}

async fn mock_conn(mut sock: TcpStream, stream_body: Arc<[u8]>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Read one request: head, then Content-Length bytes of body.
        let (head_len, body_len, mode, anthropic) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value.to_vec())
                };
                let len = header("content-length")
                    .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                let mode = header("x-mock").unwrap_or_default();
                let anthropic = req.path.is_some_and(|p| p.starts_with("/v1/messages"));
                break (n, len, mode, anthropic);
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_len + body_len {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_len + body_len);
        let ok = match mode.as_slice() {
            b"stream" => {
                let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                sock.write_all(head).await.is_ok() && sock.write_all(&stream_body).await.is_ok()
            }
            b"slow-stream" => slow_stream(&mut sock).await,
            _ => {
                let body = if anthropic { anthropic_reply() } else { json_reply() };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                sock.write_all(head.as_bytes()).await.is_ok() && sock.write_all(body).await.is_ok()
            }
        };
        if !ok {
            return;
        }
    }
}

/// Ten events, 500 ms apart: a model thinking slowly.
async fn slow_stream(sock: &mut TcpStream) -> bool {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if sock.write_all(head).await.is_err() {
        return false;
    }
    for i in 0..10 {
        let ev = format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n");
        if sock
            .write_all(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes())
            .await
            .is_err()
        {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let end = "data: [DONE]\n\n";
    sock.write_all(format!("{:x}\r\n{end}\r\n0\r\n\r\n", end.len()).as_bytes())
        .await
        .is_ok()
}

// ---------------------------------------------------------------- processes under test

struct Proc {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    /// Asked to stop with SIGQUIT first: nginx's workers outlive a killed master.
    quit_first: bool,
    /// The gateway's admin port (`/metrics`).
    admin: Option<SocketAddr>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.quit_first {
            let _ = Command::new("kill")
                .args(["-s", "QUIT", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` (output discarded) and waits until something listens on `addr`. `dir` holds the
    /// process's files and lives as long as it does.
    async fn start(mut cmd: Command, addr: SocketAddr, dir: tempfile::TempDir, quit_first: bool) -> Proc {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
        let p = Proc {
            child,
            addr,
            _dir: dir,
            quit_first,
            admin: None,
        };
        wait_listening(addr).await;
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr")
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_gateway(upstream: SocketAddr, anthropic_upstream: Option<SocketAddr>) -> Proc {
    let dir = tempfile::tempdir().expect("tempdir");
    let threads: usize = std::env::var("BENCH_GATEWAY_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let mut yaml = format!(
        "server: {{threads: {threads}, max_body_bytes: 8388608}}\nclients:\n  - {{name: bench, key: \"{CLIENT_KEY}\"}}\nproviders:\n  - {{id: mock, base_url: \"http://{upstream}\", models: [m], api_keys: [\"sk-bench\"]}}\n"
    );
    if let Some(a) = anthropic_upstream {
        yaml.push_str(&format!(
            "  - {{id: claude, base_url: \"http://{a}\", api_style: anthropic, models: [c], api_keys: [\"sk-bench\"]}}\n"
        ));
    }
    let config = dir.path().join("bench.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let (addr, admin) = (free_addr(), free_addr());
    // BENCH_GATEWAY_BIN runs another build of the gateway (an A/B of a change) in the same harness.
    let bin = std::env::var("BENCH_GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_apiproxy").into());
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(&config)
        .env("APIPROXY_LISTEN", addr.to_string())
        .env("APIPROXY_ADMIN_LISTEN", admin.to_string())
        // BENCH_LOG_LEVEL=info: the request line a deployed gateway writes (to /dev/null here).
        .env(
            "LOG_LEVEL",
            std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
        );
    let mut p = Proc::start(cmd, addr, dir, false).await;
    p.admin = Some(admin);
    p
}

/// The floor: this same binary re-executed as the thinnest Pingora proxy (one peer, no body reading, no
/// routing, no metrics) on the same patched Pingora, so the figures show what Pingora itself costs
/// and what the gateway adds on top of it.
async fn start_pingora_floor(upstream: SocketAddr) -> Proc {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let mut cmd = Command::new(std::env::current_exe().expect("bench exe"));
    cmd.env(FLOOR_ROLE, format!("{addr} {upstream}"));
    Proc::start(cmd, addr, dir, false).await
}

const FLOOR_ROLE: &str = "APIPROXY_BENCH_PINGORA_FLOOR";

mod floor {
    use std::net::SocketAddr;

    use async_trait::async_trait;
    use pingora::prelude::*;
    use pingora::server::configuration::ServerConf;

    struct Floor(SocketAddr);

    #[async_trait]
    impl ProxyHttp for Floor {
        type CTX = ();
        fn new_ctx(&self) {}
        async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
            Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
        }
    }

    /// Runs the floor proxy until killed: `listen upstream` in the role variable.
    pub fn run(spec: &str) -> ! {
        let mut parts = spec.split(' ').map(|s| s.parse::<SocketAddr>().expect("floor address"));
        let (listen, upstream) = (parts.next().expect("listen"), parts.next().expect("upstream"));
        let conf = ServerConf {
            threads: 2,
            upstream_keepalive_pool_size: 256,
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let mut proxy = http_proxy_service(&server.configuration, Floor(upstream));
        proxy.add_tcp(&listen.to_string());
        server.add_service(proxy);
        server.run_forever()
    }
}

/// nginx as a reference reverse proxy, when installed.
async fn start_nginx(upstream: SocketAddr) -> Option<Proc> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let dir = tempfile::tempdir().ok()?;
    let addr = free_addr();
    let d = dir.path().display();
    let conf = format!(
        "worker_processes 2; daemon off; master_process on; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_max_body_size 16m; client_body_buffer_size 2m; proxy_buffering off;\n\
           upstream up {{ server {upstream}; keepalive 256; }}\n\
           server {{ listen {addr}; location / {{ proxy_pass http://up; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; }} }} }}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).ok()?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&path).arg("-p").arg(dir.path());
    Some(Proc::start(cmd, addr, dir, true).await)
}

// ---------------------------------------------------------------- load generation

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    path: &'static str,
    body: Bytes,
    mode: &'static str,
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let sock = TcpStream::connect(addr).await.expect("connect");
    let _ = sock.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

/// One request, body read to the end; returns whether it was a 200 and, for a stream, whole (its
/// `[DONE]` last: a stream the gateway cut with an error event is no success).
async fn one(send: &mut SendRequest<Full<Bytes>>, t: &Target) -> bool {
    if send.ready().await.is_err() {
        return false;
    }
    let req = hyper::Request::post(t.path)
        .header("host", "bench")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("x-mock", t.mode)
        .body(Full::new(t.body.clone()))
        .expect("request");
    match send.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status() == 200;
            let Ok(body) = resp.into_body().collect().await else {
                return false;
            };
            let stream = t.mode.contains("stream");
            ok && (!stream || body.to_bytes().ends_with(b"data: [DONE]\n\n"))
        }
        Err(_) => false,
    }
}

/// Closed loop: `conns` connections each sending back to back for `secs`. Returns requests/s.
async fn saturate(t: &Target, conns: usize, secs: f64) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (t, stop, done, errors) = (t.clone(), stop.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut send = connect(t.addr).await;
            while !stop.load(Ordering::Relaxed) {
                if one(&mut send, &t).await {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    send = connect(t.addr).await;
                }
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
    )
}

#[derive(Clone, Copy)]
struct Measured {
    rps: f64,
    /// CPU seconds per request, user space and kernel.
    cpu_per_req: Cpu,
    /// Where the machine's CPU time went per request: this process (load generator and mock), and
    /// idle. With the proxy's own share they add up to `cores / rps`.
    harness_per_req: f64,
    idle_per_req: f64,
    errors: u64,
}

/// Saturates `t` and charges the CPU time of process `pid` and its children (nginx's workers) to
/// the requests it served. `BENCH_CONNS` sets the connections (default 32).
async fn measured(t: &Target, pid: u32, secs: f64) -> Measured {
    let conns = saturation_conns();
    let (cpu0, harness0, idle0) = (cpu_secs_tree(pid), cpu_secs(std::process::id()), idle_secs());
    let (rps, errors) = saturate(t, conns, secs).await;
    let cpu = cpu_secs_tree(pid) - cpu0;
    let harness = cpu_secs(std::process::id()) - harness0;
    let idle = idle_secs() - idle0;
    let n = (rps * secs).max(1.0);
    Measured {
        rps,
        cpu_per_req: Cpu {
            user: cpu.user / n,
            kernel: cpu.kernel / n,
        },
        harness_per_req: (harness.user + harness.kernel) / n,
        idle_per_req: idle / n,
        errors,
    }
}

/// Connections of the closed loop that saturates a target: 32, or `BENCH_CONNS` (to check that a
/// proxy is saturated: more connections should not raise its requests/s).
fn saturation_conns() -> usize {
    std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32)
}

/// Seconds all cores together spent idle since boot (`/proc/stat`: idle and iowait).
fn idle_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or("");
    let ticks: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|s| s.parse().ok()).collect();
    (ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0)) / 100.0
}

/// Open loop at `rate` requests/s. Each of 64 connections owns every 64th slot of one schedule, so
/// no lock or channel sits between the clock and the send. A request counts from its scheduled time
/// when its connection was still busy with the previous answer (a stall of the proxy is not hidden:
/// no coordinated omission), and from the moment its timer fired otherwise, so the timer wheel's
/// 1 ms granularity is not charged to the proxy.
/// Returns the latencies of the requests that succeeded, sorted, and how many failed.
async fn fixed_rate(t: &Target, rate: f64, secs: f64) -> (Vec<Duration>, usize) {
    const CONNS: usize = 64;
    let n = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let workers: Vec<_> = (0..CONNS)
        .map(|k| {
            let t = t.clone();
            tokio::spawn(async move {
                let mut send = connect(t.addr).await;
                let mut out = Vec::with_capacity(n / CONNS + 1);
                let mut failed = 0;
                let mut idle_since = Instant::now();
                for i in (k..n).step_by(CONNS) {
                    let at = start + interval * i as u32;
                    tokio::time::sleep_until(at.into()).await;
                    let from = if idle_since > at { at } else { Instant::now() };
                    if !one(&mut send, &t).await {
                        failed += 1;
                        send = connect(t.addr).await;
                        idle_since = Instant::now();
                        continue;
                    }
                    idle_since = Instant::now();
                    out.push(idle_since - from);
                }
                (out, failed)
            })
        })
        .collect();
    let mut v = Vec::with_capacity(n);
    let mut failed = 0;
    for w in workers {
        let (out, f) = w.await.unwrap_or_default();
        v.extend(out);
        failed += f;
    }
    v.sort();
    (v, failed)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// CPU seconds a process has used, in user space and in the kernel (its system calls, and the
/// network stack's work done on its behalf).
#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    kernel: f64,
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user + o.user,
            kernel: self.kernel + o.kernel,
        }
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user - o.user,
            kernel: self.kernel - o.kernel,
        }
    }
}

fn cpu_secs(pid: u32) -> Cpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    Cpu {
        user: ticks(11),
        kernel: ticks(12),
    }
}

/// CPU seconds of a process and its direct children.
fn cpu_secs_tree(pid: u32) -> Cpu {
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1));
            ppid == Some(pid.to_string().as_str())
        })
        .collect::<Vec<_>>();
    children.into_iter().map(cpu_secs).fold(cpu_secs(pid), |a, b| a + b)
}

/// Resident memory of a process, current and peak, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn chat_body(size: usize, stream: bool) -> Bytes {
    let filler = "x".repeat(size.saturating_sub(120));
    Bytes::from(format!(
        "{{\"model\":\"m\",\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"{filler}\"}}]}}"
    ))
}

// ---------------------------------------------------------------- main

fn main() {
    // 1,000 streams need ~2,000 descriptors in this process (the clients' and the mock's ends),
    // and as many in the gateway, which raises its own limit.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    if let Ok(spec) = std::env::var(FLOOR_ROLE) {
        floor::run(&spec);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let upstream = mock_upstream().await;
    let gw = start_gateway(upstream, Some(upstream)).await;
    let nginx = start_nginx(upstream).await;
    let floor = start_pingora_floor(upstream).await;
    println!(
        "APIProxy benchmark: {} cores, {secs} s per phase; mock upstream and load generator in this process",
        num_cpus()
    );
    println!(
        "gateway pid {}{}\n",
        gw.pid(),
        if nginx.is_some() {
            ", nginx reference present"
        } else {
            ", nginx not installed (no reference)"
        }
    );

    // Warm up pools and caches.
    let warm = Target {
        addr: gw.addr,
        path: "/v1/chat/completions",
        body: chat_body(1024, false),
        mode: "json",
    };
    let _ = saturate(&warm, 8, 0.5).await;

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    println!(
        "{:<40} {:>8} {:>8} {:>7} {:>8} {:>7} {:>8} {:>7} {:>9} {:>10} {:>6}",
        format!("case (throughput r/s, {} conns)", saturation_conns()),
        "direct",
        "gateway",
        "usr+krn",
        "pingora",
        "usr+krn",
        "nginx",
        "usr+krn",
        "gw/nginx",
        "gw/pingora",
        "conns"
    );
    let cases: [(&str, usize, bool, &str); 5] = [
        ("non-stream, 1 KiB body", 1024, false, "json"),
        ("translated, OpenAI -> Anthropic, 1 KiB", 1024, false, "translate"),
        ("non-stream, 64 KiB body", 64 * 1024, false, "json"),
        ("non-stream, 1 MiB body", 1024 * 1024, false, "json"),
        ("stream, 50 SSE events", 1024, true, "stream"),
    ];
    let mut verdict = Verdict::default();
    for (name, size, stream, mode) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let translated = mode == "translate";
        let body = chat_body(size, stream);
        // The direct baseline of a translated route is the same upstream answering in its own format.
        let direct = Target {
            addr: upstream,
            path: "/v1/chat/completions",
            body: body.clone(),
            mode,
        };
        let through = if translated {
            let claude = String::from_utf8_lossy(&body).replacen("\"model\":\"m\"", "\"model\":\"c\"", 1);
            Target {
                addr: gw.addr,
                body: Bytes::from(claude),
                ..direct.clone()
            }
        } else {
            Target {
                addr: gw.addr,
                ..direct.clone()
            }
        };
        let (d, _) = saturate(&direct, saturation_conns(), secs).await;
        let accepts0 = MOCK_ACCEPTS.load(Ordering::Relaxed);
        let g = measured(&through, gw.pid(), secs).await;
        let upstream_conns = MOCK_ACCEPTS.load(Ordering::Relaxed) - accepts0;
        // Same-format cases only: the floor and nginx pass bytes through and cannot translate.
        let same_format = |p: &Proc| Target {
            addr: p.addr,
            ..direct.clone()
        };
        let f = match translated {
            true => None,
            false => Some(measured(&same_format(&floor), floor.pid(), secs).await),
        };
        let n = match &nginx {
            Some(n) if !translated => Some(measured(&same_format(n), n.pid(), secs).await),
            _ => None,
        };
        let cell = |m: &Option<Measured>| match m {
            Some(m) => format!(
                "{:>8.0} {:>3.0}+{:<3.0}",
                m.rps,
                m.cpu_per_req.user * 1e6,
                m.cpu_per_req.kernel * 1e6
            ),
            None => format!("{:>8} {:>7}", "-", "-"),
        };
        let ratio = |m: &Option<Measured>| match m {
            Some(m) => format!("{:.0}%", 100.0 * g.rps / m.rps),
            None => "-".into(),
        };
        let errs = match g.errors {
            0 => String::new(),
            e => format!(" ({e} errors)"),
        };
        println!(
            "{name:<40} {d:>8.0} {} {} {} {:>9} {:>10} {upstream_conns:>6}{errs}",
            cell(&Some(g)),
            cell(&f),
            cell(&n),
            ratio(&n),
            ratio(&f),
        );
        // Where both cores went, per request: what a proxy leaves to the load generator, the mock
        // and idle decides its requests/s as much as its own share does.
        let split = |label: &str, m: &Option<Measured>| match m {
            Some(m) => format!(
                "{label} {:.0} + {:.0} + {:.0}",
                (m.cpu_per_req.user + m.cpu_per_req.kernel) * 1e6,
                m.harness_per_req * 1e6,
                m.idle_per_req * 1e6
            ),
            None => String::new(),
        };
        let splits = [split("gateway", &Some(g)), split("pingora", &f), split("nginx", &n)];
        println!(
            "  {:<38} {}",
            "µs/req: proxy + load gen & mock + idle",
            splits
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        );
        match (mode, size) {
            ("json", 1024) => {
                verdict.same_format_rps = Some(g.rps);
                verdict.vs_nginx = n.as_ref().map(|n| g.rps / n.rps);
                verdict.floor_vs_nginx = f.as_ref().zip(n.as_ref()).map(|(f, n)| f.rps / n.rps);
            }
            ("translate", _) => verdict.translated_rps = Some(g.rps),
            _ => {}
        }
    }
    // BENCH_ONLY picks throughput cases by name, or `latency` / `streams` for those phases alone.
    if !only.is_empty() && only != "latency" && only != "streams" {
        verdict.print();
        return;
    }
    if only != "streams" {
        verdict.added_p99 = Some(latency(&gw, upstream, nginx.as_ref(), secs).await);
    }
    if only != "latency" {
        verdict.streams = Some(streams(gw, upstream).await);
    }
    verdict.print();
}

/// What this run says about the targets of the benchmark (on the 2-core machine it was set for).
#[derive(Default)]
struct Verdict {
    same_format_rps: Option<f64>,
    /// Same-format 1 KiB throughput over nginx's.
    vs_nginx: Option<f64>,
    /// The bare Pingora proxy's 1 KiB throughput over nginx's: how far any Pingora proxy gets.
    floor_vs_nginx: Option<f64>,
    translated_rps: Option<f64>,
    added_p99: Option<Duration>,
    /// Streams completed of 1,000, and the gateway's peak RSS in MiB.
    streams: Option<(u64, f64)>,
}

impl Verdict {
    fn print(&self) {
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        println!("\ntargets, this run:");
        if let Some(r) = self.vs_nginx {
            println!(
                "  same-format 1 KiB throughput >= 90% of nginx      {:>9.0}%   {}",
                r * 100.0,
                met(r >= 0.9)
            );
            if let Some(f) = self.floor_vs_nginx {
                println!("    (the bare Pingora proxy, same run: {:.0}% of nginx)", f * 100.0);
            }
        }
        if let Some(d) = self.added_p99 {
            println!(
                "  added p99 at 2,000 req/s < 1 ms                   {:>7.2} ms   {}",
                d.as_secs_f64() * 1e3,
                met(d < Duration::from_millis(1))
            );
        }
        if let (Some(t), Some(s)) = (self.translated_rps, self.same_format_rps) {
            println!(
                "  translated >= 60% of same-format throughput       {:>9.0}%   {}",
                100.0 * t / s,
                met(t >= 0.6 * s)
            );
        }
        if let Some((done, peak)) = self.streams {
            println!(
                "  1,000 concurrent streams in < 100 MiB RSS         {peak:>6.1} MiB   {} ({done}/1000 completed)",
                met(done == 1000 && peak < 100.0)
            );
        }
    }
}

/// Prints the latency phase; returns the p99 the gateway adds over direct.
async fn latency(gw: &Proc, upstream: SocketAddr, nginx: Option<&Proc>, secs: f64) -> Duration {
    const RATE: f64 = 2000.0;
    const SLICE_SECS: f64 = 1.0;
    println!(
        "\nlatency at a fixed {RATE:.0} req/s (1 KiB non-stream), direct / gateway / nginx alternating in {SLICE_SECS} s slices:"
    );
    let direct = Target {
        addr: upstream,
        path: "/v1/chat/completions",
        body: chat_body(1024, false),
        mode: "json",
    };
    let mut targets = vec![
        ("direct", direct.clone()),
        (
            "gateway",
            Target {
                addr: gw.addr,
                ..direct.clone()
            },
        ),
    ];
    if let Some(n) = nginx {
        targets.push((
            "nginx",
            Target {
                addr: n.addr,
                ..direct.clone()
            },
        ));
    }
    let admin = gw.admin.expect("gateway admin address");
    let before = overhead_histogram(admin).await;
    // Alternating slices expose every target to the same machine: on two shared cores the speed
    // moves by tens of percent within a minute.
    let mut samples = vec![Vec::new(); targets.len()];
    let mut failed = vec![0; targets.len()];
    for _ in 0..(secs / SLICE_SECS).ceil().max(1.0) as usize {
        for (i, (_, t)) in targets.iter().enumerate() {
            let (v, f) = fixed_rate(t, RATE, SLICE_SECS).await;
            samples[i].extend(v);
            failed[i] += f;
        }
    }
    let overhead = overhead_histogram(admin).await.minus(&before);
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>8} {:>7}",
        "", "p50", "p99", "p99.9", "n", "failed"
    );
    for (((label, _), v), f) in targets.iter().zip(samples.iter_mut()).zip(&failed) {
        v.sort();
        println!(
            "{label:<10} {:>10.3?} {:>10.3?} {:>10.3?} {:>8} {f:>7}",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 0.999),
            v.len()
        );
    }
    let d = &samples[0];
    let added = |v: &[Duration], label: &str| {
        println!(
            "{label:<10} {:>10.3?} {:>10.3?} {:>10.3?}",
            pct(v, 0.5).saturating_sub(pct(d, 0.5)),
            pct(v, 0.99).saturating_sub(pct(d, 0.99)),
            pct(v, 0.999).saturating_sub(pct(d, 0.999))
        );
    };
    added(&samples[1], "added");
    let added_p99 = pct(&samples[1], 0.99).saturating_sub(pct(d, 0.99));
    if let Some(n) = samples.get(2) {
        added(n, "nginx adds");
    }
    // The gateway's own account of the same requests: total minus the wait on the upstream.
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>8}   (apiproxy_gateway_overhead_seconds over the gateway slices; bucket upper bounds)",
        "overhead",
        overhead.quantile_bound(0.5),
        overhead.quantile_bound(0.99),
        overhead.quantile_bound(0.999),
        overhead.count()
    );
    added_p99
}

/// Cumulative bucket counts of `apiproxy_gateway_overhead_seconds`, summed over its labels.
#[derive(Default)]
struct Buckets(Vec<(f64, f64)>);

impl Buckets {
    fn minus(&self, before: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(le, n)| (le, n - before.0.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1)))
                .collect(),
        )
    }

    fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |b| b.1)
    }

    /// The upper bound of the bucket holding quantile `q`: the quantile is at most this.
    fn quantile_bound(&self, q: f64) -> String {
        let rank = q * self.count();
        match self.0.iter().find(|b| b.1 >= rank && b.1 > 0.0) {
            Some(&(le, _)) if le.is_finite() => format!("≤{:.3}ms", le * 1e3),
            Some(_) => "above".into(),
            None => "-".into(),
        }
    }
}

async fn overhead_histogram(admin: SocketAddr) -> Buckets {
    let mut sock = TcpStream::connect(admin).await.expect("connect admin");
    sock.write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await
        .expect("ask metrics");
    let mut text = String::new();
    let _ = sock.read_to_string(&mut text).await;
    let mut b: Vec<(f64, f64)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiproxy_gateway_overhead_seconds_bucket{"))
    {
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next());
        let n = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok());
        let (Some(le), Some(n)) = (le, n) else { continue };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        match b.iter_mut().find(|x| x.0 == le) {
            Some(x) => x.1 += n,
            None => b.push((le, n)),
        }
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    Buckets(b)
}

/// Prints the streams phase; returns how many of the 1,000 completed and the peak RSS in MiB.
async fn streams(gw: Proc, upstream: SocketAddr) -> (u64, f64) {
    // The throughput phases' peak (1 MiB bodies, 32 at a time) before this gateway goes.
    let (_, throughput_hwm) = rss_mib(gw.pid());
    println!("\ngateway peak RSS over the throughput and latency phases: {throughput_hwm:.1} MiB");
    println!("\n1000 concurrent slow streams (10 events over 5 s each) through a freshly started gateway:");
    drop(gw);
    let gw = start_gateway(upstream, None).await;
    let warm = Target {
        addr: gw.addr,
        path: "/v1/chat/completions",
        body: chat_body(1024, false),
        mode: "json",
    };
    let _ = saturate(&warm, 4, 0.3).await;
    let (rss_before, _) = rss_mib(gw.pid());
    let t = Target {
        addr: gw.addr,
        path: "/v1/chat/completions",
        body: chat_body(512, true),
        mode: "slow-stream",
    };
    let ok = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(parking_lot::Mutex::new(0f64));
    let sampler = {
        let (peak, pid) = (peak.clone(), gw.pid());
        tokio::spawn(async move {
            loop {
                let (rss, _) = rss_mib(pid);
                {
                    let mut p = peak.lock();
                    *p = p.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (t, ok) = (t.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut send = connect(t.addr).await;
            if one(&mut send, &t).await {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    sampler.abort();
    let (_, hwm) = rss_mib(gw.pid());
    println!(
        "completed {}/1000 in {:.1?}; gateway RSS {:.1} MiB idle, {:.1} MiB peak during the streams (process high-water mark {:.1} MiB)",
        ok.load(Ordering::Relaxed),
        start.elapsed(),
        rss_before,
        *peak.lock(),
        hwm
    );
    let peak = *peak.lock();
    (ok.load(Ordering::Relaxed), peak.max(hwm))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
