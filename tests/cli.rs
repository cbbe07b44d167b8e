//! The binary's command line and start-up: `--check`, bad configs that must not start, and logs that
//! never carry a secret.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn apiproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_apiproxy"))
}

/// A gateway's arguments and environment: serving from `dir` (an empty config, SQLite) on these
/// two addresses.
fn serving<'a>(cmd: &'a mut Command, dir: &tempfile::TempDir, listen: &str, admin: &str) -> &'a mut Command {
    cmd.arg("--config")
        .arg(write(dir, ""))
        .env("APIPROXY_LISTEN", listen)
        .env("APIPROXY_ADMIN_LISTEN", admin)
        .env("APIPROXY_DATA_DIR", dir.path().join("data"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("a.db").display()),
        )
}

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "providers:\n  - {id: a, base_url: \"http://127.0.0.1:9\", api_keys: [\"${K}\"]}\n",
    );
    let out = apiproxy()
        .arg("--check")
        .arg("--config")
        .arg(&p)
        .env("K", "sk-x")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 providers"));
}

#[test]
fn check_names_file_place_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "providers:\n  - {id: a, base_url: \"ftp://x\"}\n",
            "providers[0].base_url",
        ),
        (
            "providers:\n  - {id: a, base_url: \"http://h\", wieght: 2}\n",
            "unknown field `wieght`",
        ),
        (
            "providers:\n  - {id: a, base_url: \"http://h\", api_keys: [\"${UNSET_SECRET_VAR}\"]}\n",
            "UNSET_SECRET_VAR",
        ),
        (
            "logical_models:\n  - {id: x, upstreams: []}\n",
            "logical_models[0].upstreams",
        ),
        ("server: {listen: nowhere}\n", "server.listen"),
        ("providers: [\n", "line "),
        // What the admin API refuses is refused in the file too.
        (
            "providers:\n  - {id: a, base_url: \"http://h\", retryable_status_codes: [5030]}\n",
            "providers[0].retryable_status_codes",
        ),
        (
            "providers:\n  - {id: a, base_url: \"http://h\"}\nlogical_models:\n  - {id: x, upstreams: [{provider: a, model: \"\"}]}\n",
            "logical_models[0].upstreams[0].model",
        ),
        // A success retried would fail over every answer.
        (
            "providers:\n  - {id: a, base_url: \"http://h\", retryable_status_codes: [503, 200]}\n",
            "200 is no error status",
        ),
        (
            "providers:\n  - {id: a, base_url: \"http://h\"}\nlogical_models:\n  - {id: x, upstreams: [{provider: a, model: m}, {provider: a, model: m}]}\n",
            "logical_models[0].upstreams[1]",
        ),
        (
            "providers:\n  - {id: a, base_url: \"http://h\"}\nlogical_models:\n  - {id: \" \", upstreams: [{provider: a, model: m}]}\n",
            "logical_models[0].id",
        ),
        ("server: {resolve: {api.example.com: []}}\n", "server.resolve.api.example.com"),
    ];
    for (yaml, expect) in cases {
        let p = write(&dir, yaml);
        let out = apiproxy().arg("--check").arg("--config").arg(&p).output().unwrap();
        assert!(!out.status.success(), "{yaml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&p.display().to_string()), "names the file: {err}");
        assert!(err.contains(expect), "{expect} not in: {err}");
    }
}

#[test]
fn a_bad_config_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "providers:\n  - {id: a, base_url: \"http://h\", weight: -1}\n");
    let port = free_port();
    let child = apiproxy()
        .arg("--config")
        .arg(&p)
        .env("APIPROXY_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("providers[0].weight"), "stopped for its config: {err}");
}

/// A token lifetime so long its expiry would overflow stops the start, named.
#[test]
fn an_absurd_token_lifetime_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "providers: []\n");
    let mut out = apiproxy()
        .arg("--config")
        .arg(&p)
        .env("APIPROXY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("APIPROXY_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("APIPROXY_DATA_DIR", dir.path().join("data"))
        .env("JWT_REFRESH_TTL_S", i64::MAX.to_string())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A gateway that took the lifetime would run on: the test fails then, rather than waiting.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while out.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = out.kill();
            panic!("the gateway started with an absurd JWT_REFRESH_TTL_S");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = out.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("JWT_REFRESH_TTL_S"), "{err}");
}

/// Pingora alone would retry for 30 s and then run on without the service whose port is taken.
#[test]
fn a_port_in_use_ends_the_start_and_names_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_at = taken.local_addr().unwrap().to_string();
    let free_at = format!("127.0.0.1:{}", free_port());
    for (listen, admin, place) in [
        (&free_at, &taken_at, "server.admin_listen"),
        (&taken_at, &free_at, "server.listen"),
    ] {
        let mut child = serving(&mut apiproxy(), &dir, listen, admin)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let still_running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!still_running, "still running with {place} taken: {err}");
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&format!("{place}: {taken_at} is already in use")), "{err}");
    }
    drop(taken);
}

/// A shell's soft open-file limit (1,024 on most systems) would stop a busy gateway at ~500 requests
/// in flight: it raises its soft limit to the hard one at start.
#[test]
fn the_open_file_limit_is_raised_at_start() {
    let read_limits = |pid: u32| -> Option<(String, String)> {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut cols = line["Max open files".len()..].split_whitespace();
        Some((cols.next()?.to_string(), cols.next()?.to_string()))
    };
    let (_, hard) = read_limits(std::process::id()).expect("this system shows its limits in /proc");
    if hard.parse::<u64>().is_ok_and(|h| h <= 256) {
        return; // A hard limit this low leaves nothing to raise.
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_apiproxy"));
    let (listen, admin) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{}", free_port()));
    let mut child = serving(&mut shell, &dir, &listen, &admin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read once it listens: the limit is raised before the ports open.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the gateway did not start");
        assert!(child.try_wait().unwrap().is_none(), "the gateway exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let limits = read_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let (soft, hard) = limits.expect("the gateway's limits");
    assert_eq!(soft, hard, "soft limit left at {soft} below the hard {hard}");
}

/// `apiproxy health`, the image's health check, reads the listen address as the gateway does and
/// succeeds only while a gateway answers there.
#[tokio::test(flavor = "multi_thread")]
async fn the_health_command_probes_the_configured_port() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let health = |listen: String| {
        apiproxy()
            .arg("--config")
            .arg(write(&dir, "server: {listen: 127.0.0.1:1}\n"))
            .arg("health")
            .env("APIPROXY_LISTEN", listen)
            .output()
            .unwrap()
    };
    let up = health(format!("0.0.0.0:{}", gw.port));
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let nobody = format!("127.0.0.1:{}", free_port());
    let down = health(nobody.clone());
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains(&nobody), "{down:?}");
}

/// `--check` refuses what the start would: a short secret, a Redis or database URL it cannot
/// use, a browser-mask value that is no header value.
#[test]
fn check_refuses_the_environment_start_would_refuse() {
    for (name, value, said) in [
        ("SECRET_KEY", "too-short", "SECRET_KEY"),
        ("REDIS_URL", "http://redis:6379", "REDIS_URL"),
        ("DATABASE_URL", "mysql://db/x", "DATABASE_URL"),
        ("MASK_ORIGIN", "https://a.example\nx", "mask.origin"),
    ] {
        let out = apiproxy()
            .arg("--check")
            .env(name, value)
            .env("MASK_AS_BROWSER", "true")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value} passed --check");
        assert!(err.contains(said), "{name}: {err}");
    }
}

#[test]
fn environment_overrides_are_validated() {
    let out = apiproxy()
        .arg("--check")
        .env("MODELS_CACHE_TTL", "soon")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("environment: MODELS_CACHE_TTL"));
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_logs_or_error_bodies() {
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{id: alpha, base_url: \"{}\", models: [m], api_keys: [\"sk-provider-secret-1\", \"sk-provider-secret-2\"]}}\n",
        a.url()
    ))
    .await;
    a.script([Reply::status(401), Reply::status(403), Reply::status(500)]);
    let mut bodies = String::new();
    for _ in 0..3 {
        bodies.push_str(&gw.chat(chat_body("m")).await.text().await.unwrap());
    }
    bodies.push_str(
        &gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-wrong-client-key")
            .json(&chat_body("m"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    bodies.push_str(
        &gw.client
            .get(gw.admin_url("/providers"))
            .bearer_auth(gw.admin().await.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    bodies.push_str(&gw.metrics().await);
    // Every request's line is in, the last one's included.
    let logs = gw.logs_when(|l| l.matches("request_id").count() >= 3).await;
    assert!(logs.contains("request"), "the gateway logged requests: {logs}");
    for secret in ["sk-provider-secret", CLIENT_KEY, "sk-wrong-client-key"] {
        assert!(!logs.contains(secret), "{secret} in logs");
        assert!(!bodies.contains(secret), "{secret} in a response");
    }
}

/// At `debug` Pingora logs every upstream request head: the provider's key and the values of its
/// extra headers (often credentials, as Azure's `api-key`) show there as `Sensitive`, not in clear.
#[tokio::test(flavor = "multi_thread")]
async fn debug_logs_of_upstream_heads_hide_provider_credentials() {
    let a = Mock::start("alpha", &["m"]).await;
    for level in ["debug", "trace"] {
        let gw = Gateway::start_with_env(
            &format!(
                "providers:\n  - {{id: alpha, base_url: \"{}\", models: [m], api_keys: [\"sk-provider-secret-1\"], headers: {{api-key: \"hdr-secret-value\"}}}}\n",
                a.url()
            ),
            &[("LOG_LEVEL", level)],
        )
        .await;
        assert_eq!(gw.chat(chat_body("m")).await.status(), 200);
        assert_eq!(a.last().unwrap().header("api-key"), Some("hdr-secret-value"));
        let logs = gw.logs_when(|l| l.contains("Sending header to upstream")).await;
        // The line that would carry them is there: the check below is not passed by its absence.
        assert!(logs.contains("Sending header to upstream"), "{level}: {logs}");
        assert!(logs.contains("Sensitive"), "{level}: the key shown as Sensitive");
        for secret in ["sk-provider-secret", "hdr-secret-value", CLIENT_KEY] {
            assert!(!logs.contains(secret), "{level}: {secret} in logs");
        }
    }
}

/// A head Pingora cannot read is refused before any hook; at `debug` its log line names the error
/// only, not the head it could not read, which carries the client's key.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_head_logs_no_credentials_at_debug() {
    use tokio::io::AsyncWriteExt;
    let a = Mock::start("alpha", &["m"]).await;
    let gw = Gateway::start_with_env(
        &format!("providers:\n{}", provider_yaml("alpha", &a, "")),
        &[("LOG_LEVEL", "debug")],
    )
    .await;
    let head = format!(
        "POST /v1beta/models/m:generateContent?key=query-secret-value HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\nno colon here\r\n\r\n"
    );
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut sock, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let logs = gw.logs_when(|l| l.contains("error=malformed_request")).await;
    // Pingora's own line about it is there: the check below is not passed by its absence.
    assert!(logs.contains("Fail to proxy"), "{logs}");
    for secret in ["query-secret-value", CLIENT_KEY] {
        assert!(!logs.contains(secret), "{secret} in logs: {logs}");
    }
}

/// The admin port's own server logs a head it cannot read at `error`, the default's level: the line
/// names the error only, not the head, which carries an admin's token.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_admin_head_logs_no_credentials() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start("").await;
    let head =
        "GET /users HTTP/1.1\r\nhost: x\r\nauthorization: Bearer eyJadmin-token-secret-value\r\nno colon here\r\n\r\n";
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", gw.admin_port))
        .await
        .unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    let _ = read_to_close(&mut sock, Duration::from_secs(5)).await;
    let logs = gw.logs_when(|l| l.contains("fails to read from downstream")).await;
    // The line about it is there: the check below is not passed by its absence.
    assert!(logs.contains("fails to read from downstream"), "{logs}");
    assert!(!logs.contains("admin-token-secret-value"), "{logs}");
}

/// The model-list probe sends the provider's key: a redirect to another host is not followed
/// (`x-api-key` and custom headers would go along), it is the probe's answer.
#[tokio::test(flavor = "multi_thread")]
async fn model_list_probes_do_not_follow_redirects_with_the_key() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_port = elsewhere.local_addr().unwrap().port();
    let reached = Arc::new(AtomicUsize::new(0));
    let count = reached.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = elsewhere.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"data\":[]}")
                .await;
        }
    });
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", redirector.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = redirector.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{elsewhere_port}/v1/models\r\ncontent-length: 0\r\n\r\n"
                );
                let _ = sock.write_all(answer.as_bytes()).await;
            });
        }
    });
    let gw = Gateway::start(&format!(
        "providers:\n  - {{id: moved, base_url: \"{base}\", api_style: anthropic, api_keys: [\"sk-ant-secret\"]}}\n"
    ))
    .await;
    let r = gw
        .client
        .get(gw.admin_url("/providers/moved/health"))
        .bearer_auth(gw.admin().await.token)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&v["status"], &v["http_status"]),
        (&"degraded".into(), &302.into()),
        "{v}"
    );
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the key went to the redirect's host");
}

/// A database an earlier version kept in `data/` while `APIPROXY_DATA_DIR` pointed elsewhere stays
/// in use (with a word on where it should move), rather than a new, empty one being opened.
#[test]
fn a_database_left_in_data_by_an_earlier_version_stays_in_use() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/apiproxy.db"), b"").unwrap();
    let out = apiproxy()
        .arg("--check")
        .current_dir(dir.path())
        .env("APIPROXY_DATA_DIR", dir.path().join("state"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("using the database at data/apiproxy.db"), "{err}");
}
