//! Several replicas working as one: two gateway processes on one PostgreSQL database (fresh per
//! test) and one Redis (a fresh key prefix per test), and what happens when Redis goes away.

mod common;

use std::time::{Duration, Instant};

use common::tcp_proxy::TcpRelay;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "replica-test-secret-0123456789abcdef-shared";

fn yaml(a: &Mock, b: &Mock) -> String {
    format!(
        "server:\n  circuit_failure_threshold: 2\n  circuit_open_s: 30\nproviders:\n{}{}logical_models:\n  - id: lm\n    upstreams:\n      - {{provider: alpha, model: m}}\n      - {{provider: beta, model: m}}\n",
        provider_yaml("alpha", a, ", models: [m]"),
        provider_yaml("beta", b, ", models: [m]"),
    )
}

fn env<'a>(prefix: &'a str, redis_url: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut e = vec![
        ("REDIS_URL", redis_url),
        ("REDIS_PREFIX", prefix),
        ("SECRET_KEY", SECRET),
        ("HEALTH_SYNC_MS", "100"),
    ];
    if redis_url == REDIS_URL {
        // Redis itself is never cut here: one reply slower than the default 100 ms on a loaded
        // machine would put the replica on local state for up to a second, and the shared
        // counts and bindings these tests check would diverge. (Relayed Redis keeps the default,
        // so outages are noticed quickly.)
        e.push(("REDIS_TIMEOUT_MS", "1000"));
    }
    e
}

/// Replica A on a fresh PostgreSQL database, replica B on the same database and Redis prefix.
async fn pair(yaml: &str, prefix: &RedisPrefix) -> (Gateway, Gateway) {
    let a = Gateway::start_on(Backend::Postgres, yaml, &env(&prefix.0, REDIS_URL)).await;
    let mut e = env(&prefix.0, REDIS_URL);
    e.push(("DATABASE_URL", &a.database_url));
    let b = Gateway::start_on(Backend::Postgres, yaml, &e).await;
    (a, b)
}

/// An admin request with `tok` (replicas sharing a database and `SECRET_KEY` accept each other's).
async fn admin(gw: &Gateway, tok: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = gw.client.request(method, gw.admin_url(path)).bearer_auth(tok);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A minted key (on `gw`), optionally rate-limited.
async fn mint(gw: &Gateway, rps: Option<u32>) -> String {
    let me = gw.admin().await;
    let (s, v) = admin(
        gw,
        &me.token,
        Method::POST,
        &format!("/users/{}/api-keys", me.user_id),
        Some(json!({"name": "app", "rate_limit_rps": rps})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

async fn call(gw: &Gateway, key: &str, session: Option<&str>) -> (u16, Option<String>) {
    let mut r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body("lm"));
    if let Some(s) = session {
        r = r.header("x-session-id", s);
    }
    let resp = r.send().await.unwrap();
    let provider = resp
        .headers()
        .get("x-apiproxy-provider")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), provider)
}

async fn circuit(gw: &Gateway, tok: &str, provider: &str) -> String {
    let (_, v) = admin(gw, tok, Method::GET, &format!("/providers/{provider}/metrics"), None).await;
    v["upstreams"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["model"] == "m"))
        .and_then(|u| u["health"]["circuit"].as_str())
        .unwrap_or("unknown")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behave_as_one() {
    let (ma, mb) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    let prefix = RedisPrefix::new();
    let (a, b) = pair(&yaml(&ma, &mb), &prefix).await;
    let tok = a.admin().await.token;

    // A key minted on A works on B within a second (pub/sub; the 1 s poll is the safety net).
    let key = mint(&a, None).await;
    let took = until("minted key on B", Duration::from_secs(3), async || {
        call(&b, &key, None).await.0 == 200
    })
    .await;
    println!("key minted on A accepted by B after {took:?}");

    // A session placed on A gets the same upstream on B.
    let (s, first) = call(&a, &key, Some("sess-a")).await;
    assert_eq!(s, 200);
    for gw in [&b, &a, &b] {
        assert_eq!(call(gw, &key, Some("sess-a")).await.1, first);
    }
    // Failover on A moves the session on; B follows the binding, not its own hash.
    let (s, v) = admin(&b, &tok, Method::GET, "/routing/sessions/sess-b?model=lm", None).await;
    assert_eq!(s, 200, "{v}");
    let hashed = v["upstream"]["provider"].as_str().unwrap().to_string();
    let (hashed_mock, other) = if hashed == "alpha" {
        (&ma, "beta")
    } else {
        (&mb, "alpha")
    };
    hashed_mock.script([Reply::status(503)]);
    assert_eq!(call(&a, &key, Some("sess-b")).await, (200, Some(other.to_string())));
    let took = until("binding on B", Duration::from_secs(3), async || {
        admin(&b, &tok, Method::GET, "/routing/sessions/sess-b?model=lm", None)
            .await
            .1["binding"]
            == "stored"
    })
    .await;
    println!("binding made on A visible on B after {took:?}");
    for _ in 0..3 {
        assert_eq!(call(&b, &key, Some("sess-b")).await.1.as_deref(), Some(other));
    }
    // The admin API on either replica drops it for both.
    assert_eq!(
        admin(&b, &tok, Method::DELETE, "/routing/sessions/sess-b", None)
            .await
            .1["deleted"],
        true
    );
    assert_eq!(
        admin(&a, &tok, Method::GET, "/routing/sessions/sess-b", None).await.0,
        404
    );
    assert_eq!(call(&a, &key, Some("sess-b")).await.1, Some(hashed.clone()));

    // A per-key limit of N per second holds across both replicas together.
    const N: u32 = 4;
    let limited = mint(&a, Some(N)).await;
    until("limited key on B", Duration::from_secs(3), async || {
        call(&b, &limited, None).await.0 == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t0 = Instant::now();
    let calls = (0..24).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        let k = limited.clone();
        async move { call(gw, &k, None).await.0 }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let ok = statuses.iter().filter(|s| **s == 200).count() as f64;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    println!("rate limit {N}/s: {ok} of 24 allowed across both replicas in {elapsed:.3} s, {refused} refused");
    assert_eq!(ok as usize + refused, 24, "{statuses:?}");
    let ceiling = f64::from(N) + (f64::from(N) * elapsed).ceil();
    assert!(ok >= f64::from(N) && ok <= ceiling, "{ok} allowed; at most {ceiling}");

    // A provider marked down by A's traffic is avoided by B.
    ma.set_default(Reply::status(500));
    let mut tries = 0;
    while circuit(&a, &tok, "alpha").await != "open" {
        call(&a, &key, None).await;
        tries += 1;
        assert!(tries < 40, "alpha's circuit never opened on A");
    }
    // Typically ~110 ms (HEALTH_SYNC_MS=100); the bound leaves room for a loaded CI machine.
    let took = until("alpha down on B", Duration::from_secs(5), async || {
        circuit(&b, &tok, "alpha").await == "open"
    })
    .await;
    println!("circuit opened by A's traffic seen by B after {took:?}");
    let before = ma.hits();
    for _ in 0..10 {
        assert_eq!(call(&b, &key, None).await, (200, Some("beta".into())));
    }
    assert_eq!(ma.hits(), before, "B sent nothing to alpha");
}

/// Each replica takes its share of a provider key's `qps_limit`, counting the replicas every
/// second whatever `HEALTH_SYNC_MS` is (a replica that counted only at each sync saw itself alone).
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_key_s_limit_is_shared_out_whatever_the_sync_period() {
    let m = Mock::start("gamma", &["m"]).await;
    let prefix = RedisPrefix::new();
    let mut e = env(&prefix.0, REDIS_URL);
    e.retain(|(k, _)| *k != "HEALTH_SYNC_MS");
    e.push(("HEALTH_SYNC_MS", "10000"));
    let a = Gateway::start_on(Backend::Postgres, "", &e).await;
    e.push(("DATABASE_URL", &a.database_url));
    let b = Gateway::start_on(Backend::Postgres, "", &e).await;
    let tok = a.admin().await.token;
    let (s, v) = admin(
        &a,
        &tok,
        Method::POST,
        "/providers",
        Some(json!({"id": "gamma", "base_url": m.url(), "models": [{"model": "m"}],
                    "api_keys": [{"key": "sk-gamma-0123456789", "qps_limit": 4}]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    until("the provider on B", Duration::from_secs(5), async || {
        b.chat(chat_body("m")).await.status() == 200
    })
    .await;
    // Both replicas have counted each other by now (each says it is alive every second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // At once, so that the bucket has no time to refill between them.
    let answers = futures_util::future::join_all((0..4).map(|_| a.chat(chat_body("m")))).await;
    let answered = answers.iter().filter(|r| r.status() == 200).count();
    assert_eq!(answered, 2, "A's share of 4/s between two replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_context_is_kept_per_key_and_shared() {
    let (ma, mb) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    let prefix = RedisPrefix::new();
    let (a, b) = pair(&yaml(&ma, &mb), &prefix).await;
    let (k1, k2) = (mint(&a, None).await, mint(&a, None).await);
    until("keys on B", Duration::from_secs(3), async || {
        call(&b, &k2, None).await.0 == 200
    })
    .await;
    let body =
        json!({"model": "lm", "messages": [{"role": "user", "content": "my key is sk-live-0123456789abcdefghij ok"}]});
    let r = a
        .client
        .post(a.url("/v1/chat/completions"))
        .bearer_auth(&k1)
        .header("x-session-id", "conv-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Served by B to the key that wrote it, with the secret redacted.
    let get = |gw: &Gateway, key: &str| {
        gw.client
            .get(gw.url("/context/conv-1"))
            .bearer_auth(key.to_string())
            .send()
    };
    let mut v = Value::Null;
    until("context on B", Duration::from_secs(3), async || {
        let r = get(&b, &k1).await.unwrap();
        let ok = r.status() == 200;
        v = r.json().await.unwrap_or(Value::Null);
        ok
    })
    .await;
    let e = &v["entries"][0];
    assert_eq!(e["request"], "my key is [REDACTED] ok", "{v}");
    assert!(e["response"].as_str().unwrap().contains("hello from"), "{v}");
    assert!(!v.to_string().contains("sk-live-0123456789"));
    // Nobody else: another key, no key.
    assert_eq!(get(&b, &k2).await.unwrap().status(), 404);
    assert_eq!(get(&a, &k2).await.unwrap().status(), 404);
    assert_eq!(
        b.client.get(b.url("/context/conv-1")).send().await.unwrap().status(),
        401
    );
}

/// Redis stops answering mid-traffic (behind a relay the test controls; the real server stays up
/// for the other tests): requests keep succeeding fast, the outage is logged and counted, and state
/// made meanwhile reaches the other replica once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_survived_and_resynchronised() {
    let (ma, mb) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    let prefix = RedisPrefix::new();
    let relay = TcpRelay::start("127.0.0.1:6379".parse().unwrap()).await;
    let via_relay = format!("redis://127.0.0.1:{}/0", relay.port);
    let y = yaml(&ma, &mb);
    let a = Gateway::start_on(Backend::Sqlite, &y, &env(&prefix.0, &via_relay)).await;
    let b = Gateway::start_on(Backend::Sqlite, &y, &env(&prefix.0, REDIS_URL)).await;
    let key = mint(&a, Some(1000)).await;
    let (ta, tb) = (a.admin().await.token, b.admin().await.token);
    assert_eq!(call(&a, &key, Some("before")).await.0, 200);

    relay.cut();
    ma.set_default(Reply::status(500));
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let t = Instant::now();
        let (s, _) = call(&a, &key, Some(&format!("during-{}", i % 3))).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(s, 200, "request {i} during the outage");
    }
    println!(
        "30 requests during the redis outage: all 200 in {:?}, slowest {slowest:?}",
        t0.elapsed()
    );
    assert!(slowest < Duration::from_millis(1500), "slowest {slowest:?}");
    assert_eq!(circuit(&a, &ta, "alpha").await, "open");
    assert_eq!(circuit(&b, &tb, "alpha").await, "closed", "B cannot know yet");
    let metrics = a.metrics().await;
    let errors = metric(&metrics, "apiproxy_state_backend_errors_total", &[("backend", "redis")]);
    assert!(errors >= 1.0, "errors counted: {errors}");
    assert!(a.logs().contains("shared state (redis) unavailable"));

    relay.restore();
    let took = until("B learns what A saw", Duration::from_secs(5), async || {
        circuit(&b, &tb, "alpha").await == "open"
    })
    .await;
    println!("after redis came back, B saw alpha's open circuit in {took:?}");
    until("bindings replayed", Duration::from_secs(2), async || {
        admin(&b, &tb, Method::GET, "/routing/sessions/during-0", None).await.0 == 200
    })
    .await;
    assert!(a.logs().contains("shared state (redis) is back"));
}

/// A Redis that comes back far away (each answer 150 ms late, within the requests' 250 ms, while
/// a new connection takes a few round trips) is used again: a probe that gave up before its new
/// connection was made would start another every time, and the replica would stay on local state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_redis_coming_back_is_used_again() {
    let (ma, mb) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    let prefix = RedisPrefix::new();
    let relay = TcpRelay::start("127.0.0.1:6379".parse().unwrap()).await;
    let via_relay = format!("redis://127.0.0.1:{}/0", relay.port);
    let mut e = env(&prefix.0, &via_relay);
    e.push(("REDIS_TIMEOUT_MS", "250"));
    let a = Gateway::start_on(Backend::Sqlite, &yaml(&ma, &mb), &e).await;
    let key = mint(&a, Some(1000)).await;
    relay.cut();
    until("the outage seen", Duration::from_secs(5), async || {
        call(&a, &key, None).await;
        a.logs().contains("shared state (redis) unavailable")
    })
    .await;
    relay.set_delay(Duration::from_millis(150));
    relay.restore();
    until("redis used again", Duration::from_secs(8), async || {
        a.logs().contains("shared state (redis) is back")
    })
    .await;
}

/// Redis's host vanishes without a reset reaching the gateway, and a new one answers at the same
/// address (a failover behind one name): the dead connection is given up and a new one made, so
/// the replica is back on shared state within a probe or two, not after TCP's own give-up
/// (minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_gone_without_a_reset_is_reconnected() {
    let (ma, mb) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    let prefix = RedisPrefix::new();
    let relay = TcpRelay::start("127.0.0.1:6379".parse().unwrap()).await;
    let via_relay = format!("redis://127.0.0.1:{}/0", relay.port);
    let a = Gateway::start_on(Backend::Sqlite, &yaml(&ma, &mb), &env(&prefix.0, &via_relay)).await;
    let key = mint(&a, Some(1000)).await;
    assert_eq!(call(&a, &key, Some("before")).await.0, 200);
    relay.vanish();
    for i in 0..3 {
        assert_eq!(call(&a, &key, Some(&format!("during-{i}"))).await.0, 200);
    }
    until("back on redis", Duration::from_secs(5), async || {
        a.logs().contains("shared state (redis) is back")
    })
    .await;
    assert!(a.logs().contains("shared state (redis) unavailable"));
}

/// PostgreSQL stops: the proxy keeps serving from the in-memory snapshot (minted keys included),
/// admin writes fail with 503 and a clear message and leave nothing behind; once it is back,
/// writes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_keeps_serving_and_refuses_writes() {
    let (ma, mb) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    let y = yaml(&ma, &mb);
    // B owns the per-test database; A reaches it through a relay the test can stop.
    let b = Gateway::start_on(Backend::Postgres, &y, &[("SECRET_KEY", SECRET)]).await;
    let relay = TcpRelay::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = b
        .database_url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port));
    let a = Gateway::start_on(Backend::Postgres, &y, &[("SECRET_KEY", SECRET), ("DATABASE_URL", &url)]).await;
    let key = mint(&a, None).await;
    let tok = a.admin().await.token;
    assert_eq!(call(&a, &key, None).await.0, 200);

    relay.stop();
    for _ in 0..5 {
        assert_eq!(call(&a, &key, None).await.0, 200, "served from the snapshot");
    }
    let provider = json!({"id": "gamma", "base_url": "http://127.0.0.1:9"});
    let t0 = Instant::now();
    let (s, v) = admin(&a, &tok, Method::POST, "/providers", Some(provider.clone())).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database is unavailable"),
        "{v}"
    );
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    assert_eq!(call(&a, &key, None).await.0, 200);
    // The configuration A cannot refresh shows on its metrics, not only in its log.
    until("the failed refreshes counted", Duration::from_secs(10), async || {
        let text = a.metrics().await;
        metric(&text, "apiproxy_config_reloads_total", &[("result", "failed")]) >= 1.0
            && metric(&text, "apiproxy_state_backend_errors_total", &[("backend", "database")]) >= 1.0
    })
    .await;
    let b_text = b.metrics().await;
    assert_eq!(
        metric(&b_text, "apiproxy_config_reloads_total", &[("result", "failed")]),
        0.0,
        "B reads its database: {b_text}"
    );

    relay.restore();
    until("writes work again", Duration::from_secs(10), async || {
        admin(&a, &tok, Method::GET, "/providers/gamma", None).await.0 == 404
            && admin(&a, &tok, Method::POST, "/providers", Some(provider.clone()))
                .await
                .0
                == 201
    })
    .await;
}

/// PostgreSQL stops answering without closing its connections (a frozen host, a partition): admin
/// calls get their 503 within the store's time bound instead of hanging until TCP gives up, the
/// proxy keeps serving, and once the database answers again so does the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_postgres_is_a_prompt_503_not_a_hang() {
    let (ma, mb) = (Mock::start("alpha", &["m"]).await, Mock::start("beta", &["m"]).await);
    let y = yaml(&ma, &mb);
    let b = Gateway::start_on(Backend::Postgres, &y, &[("SECRET_KEY", SECRET)]).await;
    let relay = TcpRelay::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = b
        .database_url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", relay.port));
    let a = Gateway::start_on(Backend::Postgres, &y, &[("SECRET_KEY", SECRET), ("DATABASE_URL", &url)]).await;
    let key = mint(&a, None).await;
    let tok = a.admin().await.token;

    relay.cut();
    let provider = json!({"id": "gamma", "base_url": "http://127.0.0.1:9"});
    let t0 = Instant::now();
    let (s, v) = tokio::time::timeout(
        Duration::from_secs(20),
        admin(&a, &tok, Method::POST, "/providers", Some(provider.clone())),
    )
    .await
    .expect("an answer within 20 s");
    let took = t0.elapsed();
    println!("an admin write against a silent database: {s} after {took:?}");
    assert_eq!(s, 503, "{v}");
    assert_eq!(call(&a, &key, None).await.0, 200, "served from the snapshot");

    relay.restore();
    until("writes work again", Duration::from_secs(20), async || {
        admin(&a, &tok, Method::POST, "/providers", Some(provider.clone()))
            .await
            .0
            == 201
    })
    .await;
}

/// Replicas started together on an empty database (`docker compose up` of several) all come up:
/// one creates the tables, the others wait for it and find nothing left to do.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_starting_together_on_an_empty_database_all_come_up() {
    let (name, url) = fresh_pg_database().await;
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let y = yaml(&a, &b);
    let e = [("DATABASE_URL", url.as_str()), ("SECRET_KEY", SECRET)];
    let (g1, g2, g3) = tokio::join!(
        Gateway::start_on(Backend::Postgres, &y, &e),
        Gateway::start_on(Backend::Postgres, &y, &e),
        Gateway::start_on(Backend::Postgres, &y, &e),
    );
    for gw in [&g1, &g2, &g3] {
        assert_eq!(gw.chat(chat_body("lm")).await.status(), 200, "{}", gw.logs());
    }
    drop((g1, g2, g3));
    drop_pg_database(&name).await;
}

/// The replica's subscription to configuration changes stays up while Redis does: no reconnect,
/// and so no rebuild of the configuration, every few seconds (a subscribed connection answers
/// PING with an array, which was taken for a dead connection).
#[tokio::test(flavor = "multi_thread")]
async fn the_change_subscription_stays_up_without_rebuilding_the_configuration() {
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let prefix = RedisPrefix::new();
    let gw = Gateway::start_on(Backend::Postgres, &yaml(&a, &b), &env(&prefix.0, REDIS_URL)).await;
    let reloads = |text: &str| metric(text, "apiproxy_config_reloads_total", &[("result", "applied")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = reloads(&gw.metrics().await);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = reloads(&gw.metrics().await);
    assert_eq!(after, before, "configuration rebuilt with nothing changed");
    // A write rebuilds its replica once: its own announcement, heard back, rebuilds nothing again.
    mint(&gw, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let written = reloads(&gw.metrics().await);
    assert_eq!(written, after + 1.0, "one write, one rebuild");
}

/// A change saved to the database reaches every replica even when nothing announced it (a process
/// that died between its write and the change marker, a change an operator made in SQL): the
/// database moves the marker itself, in the write's own transaction.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_written_straight_to_the_database_is_picked_up() {
    let a = Mock::start("alpha", &["m"]).await;
    let b = Mock::start("beta", &["m"]).await;
    let gw = Gateway::start_on(Backend::Postgres, &yaml(&a, &b), &[("SECRET_KEY", SECRET)]).await;
    let key = mint(&gw, None).await;
    assert_eq!(call(&gw, &key, None).await.0, 200);
    let (client, conn) = tokio_postgres::connect(&gw.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    client
        .batch_execute("UPDATE api_keys SET disabled = true")
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
    until("the key refused", Duration::from_secs(5), async || {
        call(&gw, &key, None).await.0 == 401
    })
    .await;
}

/// A binding written back after an outage with what is left of its TTL does not shorten the life
/// of the session's newer bindings of other models (Claude Code binds two models per session).
#[tokio::test(flavor = "multi_thread")]
async fn a_binding_written_back_late_keeps_the_session_s_others_alive() {
    use apiproxy::state::{RedisBackend, StateBackend};
    let prefix = RedisPrefix::new();
    let backend = RedisBackend::open(REDIS_URL, &prefix.0, Duration::from_secs(2)).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let hour = Duration::from_secs(3600);
    backend.bind("s1", "sonnet", "beta", now_ms, hour).await.unwrap();
    // Decided 55 minutes ago, during an outage: five minutes left.
    let late = now_ms - 55 * 60 * 1000;
    backend
        .bind("s1", "haiku", "alpha", late, Duration::from_secs(300))
        .await
        .unwrap();
    let mut c = redis::Client::open(REDIS_URL).unwrap().get_connection().unwrap();
    for key in ["sess", "sess_at"] {
        let ttl: i64 = redis::cmd("PTTL").arg(backend.key(&[key, "s1"])).query(&mut c).unwrap();
        assert!(
            ttl > 3_000_000,
            "{key} lives {ttl} ms: the hour of the newer binding was cut"
        );
    }
    let bound = backend.bindings("s1").await.unwrap();
    assert_eq!(bound.len(), 2, "{bound:?}");
}

/// Live bindings are dated by Redis's clock, not the replicas': a replica whose clock runs 3 s
/// fast binds a session, another moves it on a second later, and the move holds (it was refused,
/// as decided "before" the first). A binding written back after an outage is still older than
/// what was decided since.
#[tokio::test(flavor = "multi_thread")]
async fn live_bindings_are_dated_by_redis_not_the_replicas_clocks() {
    use apiproxy::state::{RedisBackend, StateBackend};
    let prefix = RedisPrefix::new();
    let backend = RedisBackend::open(REDIS_URL, &prefix.0, Duration::from_secs(2)).unwrap();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let hour = Duration::from_secs(3600);
    backend
        .bind("s2", "owner m", "alpha", now_ms() + 3000, hour)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    backend.bind("s2", "owner m", "beta", now_ms(), hour).await.unwrap();
    let bound = backend.bindings("s2").await.unwrap();
    assert_eq!(bound, [("owner m".to_string(), "beta".to_string())]);
    // Decided a minute ago (written back after an outage): the newer one stays.
    backend
        .bind("s2", "owner m", "gamma", now_ms() - 60_000, hour)
        .await
        .unwrap();
    let bound = backend.bindings("s2").await.unwrap();
    assert_eq!(bound, [("owner m".to_string(), "beta".to_string())]);
}
