//! The same suite against the in-process backend and the real Redis at 127.0.0.1:6379 (each Redis
//! test under its own key prefix, deleted afterwards).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::routing::health::{unix_ms, HealthDelta};

const REDIS: &str = "redis://127.0.0.1:6379/0";

/// A Redis backend under a fresh prefix; its keys are removed on drop.
struct TestRedis {
    backend: Arc<RedisBackend>,
    prefix: String,
}

impl TestRedis {
    fn new() -> Self {
        let prefix = format!("apxtest:{:016x}:", rand::random::<u64>());
        let backend = RedisBackend::open(REDIS, &prefix, Duration::from_millis(500)).expect("redis url");
        Self {
            backend: Arc::new(backend),
            prefix,
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Ok(client) = ::redis::Client::open(REDIS) {
            if let Ok(mut c) = client.get_connection() {
                let keys: Vec<String> = ::redis::cmd("KEYS")
                    .arg(format!("{}*", self.prefix))
                    .query(&mut c)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<i64, _> = ::redis::cmd("DEL").arg(keys).query(&mut c);
                }
            }
        }
    }
}

/// Runs a suite against both backends.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(&super::LocalBackend::default()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let r = super::TestRedis::new();
                super::$name(&*r.backend).await;
            }
        }
    };
}

async fn rate_limit_is_a_token_bucket(b: &dyn StateBackend) {
    let q = Admission {
        user_limit: None,
        limit: Some(("key-1", 3)),
        session: None,
        pin: None,
    };
    for _ in 0..3 {
        assert_eq!(b.admit(q).await.unwrap().limited, None);
    }
    let wait = b.admit(q).await.unwrap().limited.expect("fourth request refused");
    assert!(wait > Duration::ZERO && wait <= Duration::from_millis(400), "{wait:?}");
    // Another key has its own bucket.
    let other = Admission {
        user_limit: None,
        limit: Some(("key-2", 3)),
        session: None,
        pin: None,
    };
    assert_eq!(b.admit(other).await.unwrap().limited, None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.admit(q).await.unwrap().limited, None, "refilled");
}
both!(rate_limit_is_a_token_bucket);

async fn a_user_s_bucket_is_shared_by_the_user_s_keys(b: &dyn StateBackend) {
    let of_user = |key| Admission {
        limit: Some((key, 5)),
        user_limit: Some(("user:u", 2)),
        session: None,
        pin: None,
    };
    assert_eq!(b.admit(of_user("k1")).await.unwrap().limited, None);
    assert_eq!(b.admit(of_user("k2")).await.unwrap().limited, None);
    assert!(
        b.admit(of_user("k3")).await.unwrap().limited.is_some(),
        "the user's 2/s, whichever key"
    );
    // Refused by the user's bucket, a request spends nothing from its key's.
    let k4 = |user_limit| Admission {
        limit: Some(("k4", 1)),
        user_limit,
        session: None,
        pin: None,
    };
    assert!(b.admit(k4(Some(("user:u", 2)))).await.unwrap().limited.is_some());
    assert_eq!(
        b.admit(k4(None)).await.unwrap().limited,
        None,
        "k4's token is still there"
    );
}
both!(a_user_s_bucket_is_shared_by_the_user_s_keys);

async fn concurrent_admissions_never_exceed_the_limit(b: &dyn StateBackend) {
    let q = Admission {
        user_limit: None,
        limit: Some(("burst", 10)),
        session: None,
        pin: None,
    };
    let started = std::time::Instant::now();
    let results = futures_util::future::join_all((0..40).map(|_| b.admit(q))).await;
    let allowed = results.iter().filter(|r| r.as_ref().unwrap().limited.is_none()).count();
    // The burst, plus what refilled while they ran (a loaded machine may spread them out).
    let refilled = (10.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        (10..=10 + refilled.max(1)).contains(&allowed),
        "allowed {allowed} of 40 at 10/s"
    );
}
both!(concurrent_admissions_never_exceed_the_limit);

async fn session_bindings(b: &dyn StateBackend) {
    let ttl = Duration::from_secs(60);
    let q = Admission {
        user_limit: None,
        limit: None,
        session: Some(("s1", "fast")),
        pin: None,
    };
    assert_eq!(b.admit(q).await.unwrap().binding, None);
    b.bind("s1", "fast", "alpha/gpt-a", 1_000, ttl).await.unwrap();
    b.bind("s1", "smart", "beta/gpt-b", 1_000, ttl).await.unwrap();
    assert_eq!(b.admit(q).await.unwrap().binding.as_deref(), Some("alpha/gpt-a"));
    // Failover moved it on.
    b.bind("s1", "fast", "beta/gpt-b", 2_000, ttl).await.unwrap();
    // A continued response's binding is read beside the session's, in the same round trip.
    b.bind("response:r1", "fast", "alpha/gpt-a", 1_500, ttl).await.unwrap();
    let both = Admission {
        user_limit: None,
        limit: Some(("k", 5)),
        session: Some(("s1", "fast")),
        pin: Some(("response:r1", "fast")),
    };
    let a = b.admit(both).await.unwrap();
    assert_eq!((a.limited, a.binding.as_deref()), (None, Some("beta/gpt-b")));
    assert_eq!(a.pinned.as_deref(), Some("alpha/gpt-a"));
    let unknown = Admission {
        pin: Some(("response:elsewhere", "fast")),
        ..both
    };
    assert_eq!(b.admit(unknown).await.unwrap().pinned, None);
    assert_eq!(
        b.bindings("s1").await.unwrap(),
        vec![
            ("fast".to_string(), "beta/gpt-b".to_string()),
            ("smart".to_string(), "beta/gpt-b".to_string())
        ]
    );
    assert!(b.unbind("s1", 0, Duration::from_secs(60)).await.unwrap());
    assert!(!b.unbind("s1", 0, Duration::from_secs(60)).await.unwrap());
    assert!(b.bindings("s1").await.unwrap().is_empty());
    // Bindings expire.
    b.bind("s2", "fast", "alpha/gpt-a", 1_000, Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(b.bindings("s2").await.unwrap().is_empty());
}
both!(session_bindings);

async fn an_older_binding_never_replaces_a_newer_one(b: &dyn StateBackend) {
    let ttl = Duration::from_secs(60);
    let fast = Admission {
        user_limit: None,
        limit: None,
        session: Some(("s1", "fast")),
        pin: None,
    };
    // Another replica moved the session on at t=2000; this one writes back, after an outage,
    // what it decided at t=1000.
    b.bind("s1", "fast", "beta/gpt-b", 2_000, ttl).await.unwrap();
    b.bind("s1", "fast", "alpha/gpt-a", 1_000, ttl).await.unwrap();
    assert_eq!(b.admit(fast).await.unwrap().binding.as_deref(), Some("beta/gpt-b"));
    // Other models of the session are not held back by it; a later decision wins.
    b.bind("s1", "smart", "alpha/gpt-a", 1_500, ttl).await.unwrap();
    b.bind("s1", "fast", "gamma/gpt-c", 3_000, ttl).await.unwrap();
    assert_eq!(
        b.bindings("s1").await.unwrap(),
        vec![
            ("fast".to_string(), "gamma/gpt-c".to_string()),
            ("smart".to_string(), "alpha/gpt-a".to_string())
        ]
    );
    // Unbound at t=3500, the session starts afresh: a decision from before is not taken (another
    // replica writing back after an outage), a later one is.
    assert!(b.unbind("s1", 3_500, ttl).await.unwrap());
    b.bind("s1", "fast", "alpha/gpt-a", 3_400, ttl).await.unwrap();
    if b.name() == "redis" {
        assert_eq!(
            b.admit(fast).await.unwrap().binding,
            None,
            "a drop holds on every replica"
        );
    }
    b.bind("s1", "fast", "alpha/gpt-a", 4_000, ttl).await.unwrap();
    assert_eq!(b.admit(fast).await.unwrap().binding.as_deref(), Some("alpha/gpt-a"));
}
both!(an_older_binding_never_replaces_a_newer_one);

async fn session_context_is_bounded_and_per_owner(b: &dyn StateBackend) {
    let limits = ContextLimits {
        max_entries: 3,
        ttl: Duration::from_secs(60),
    };
    for i in 0..5 {
        b.push_context("k:one", "s", &format!("{{\"n\":{i}}}"), limits)
            .await
            .unwrap();
    }
    assert_eq!(
        b.context("k:one", "s").await.unwrap(),
        vec!["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]
    );
    assert!(
        b.context("k:two", "s").await.unwrap().is_empty(),
        "another key sees nothing"
    );
    let short = ContextLimits {
        max_entries: 3,
        ttl: Duration::from_millis(100),
    };
    b.push_context("k:one", "t", "{}", short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(b.context("k:one", "t").await.unwrap().is_empty(), "expired");
}
both!(session_context_is_bounded_and_per_owner);

/// Config-file clients whose names hold `:` never share a context through the key's layout.
async fn owners_with_colons_in_their_names_stay_apart(b: &dyn StateBackend) {
    let limits = ContextLimits {
        max_entries: 3,
        ttl: Duration::from_secs(60),
    };
    let owner = |name: &str| {
        context_owner(&crate::auth::ClientIdentity {
            name: name.into(),
            key_id: None,
            allowed_providers: None,
            rate_limit_rps: None,
            user_limit: None,
        })
    };
    b.push_context(&owner("team:x"), "1", "{\"who\":\"team:x\"}", limits)
        .await
        .unwrap();
    assert!(
        b.context(&owner("team"), "x:1").await.unwrap().is_empty(),
        "client team reads client team:x's session 1"
    );
}
both!(owners_with_colons_in_their_names_stay_apart);

async fn model_lists_expire(b: &dyn StateBackend) {
    assert_eq!(b.models("p").await.unwrap(), None);
    let list = vec!["a".to_string(), "b".to_string()];
    b.put_models("p", &list, Duration::from_millis(200)).await.unwrap();
    assert_eq!(b.models("p").await.unwrap(), Some(list));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.models("p").await.unwrap(), None);
}
both!(model_lists_expire);

async fn health_merges_every_replicas_deltas(b: &dyn StateBackend) {
    let now = unix_ms();
    // Replica A: two failures opened the circuit and a 429 cooled it down.
    let a = HealthDelta {
        failures: 2,
        cooldown_until_ms: now + 5_000,
        open_until_ms: now + 10_000,
        ..HealthDelta::default()
    };
    // Replica B: one success on another upstream.
    let b_delta = HealthDelta {
        successes: 1,
        latency_ms: 40.0,
        closed: true,
        ..HealthDelta::default()
    };
    let batch = format!("{:016x}", rand::random::<u64>());
    b.sync_health(&batch, &[("p/m".into(), a)]).await.unwrap();
    // The same batch sent again (its first call timed out after Redis applied it) counts once.
    b.sync_health(&batch, &[("p/m".into(), a)]).await.unwrap();
    let view = b
        .sync_health(&format!("{batch}b"), &[("q/m".into(), b_delta)])
        .await
        .unwrap();
    let get = |k: &str| view.iter().find(|(u, _)| u == k).map(|(_, h)| *h).unwrap();
    let p = get("p/m");
    assert!((p.error_rate - 0.4375).abs() < 1e-9, "{p:?}");
    assert_eq!((p.cooldown_until_ms, p.open_until_ms), (now + 5_000, now + 10_000));
    assert!(p.latency_ms < 0.0, "no latency known yet");
    let q = get("q/m");
    assert_eq!((q.latency_ms, q.error_rate, q.open_until_ms), (40.0, 0.0, 0));
    // A probe's success elsewhere closes the circuit for everyone.
    let closed = HealthDelta {
        successes: 1,
        latency_ms: 100.0,
        closed: true,
        ..HealthDelta::default()
    };
    let view = b
        .sync_health(&format!("{batch}c"), &[("p/m".into(), closed)])
        .await
        .unwrap();
    let p = view.iter().find(|(u, _)| u == "p/m").unwrap().1;
    assert_eq!(p.open_until_ms, 0);
    assert_eq!(p.latency_ms, 100.0);
    assert!(p.error_rate < 0.4375);
}
both!(health_merges_every_replicas_deltas);

async fn heartbeat_and_changes(b: &dyn StateBackend) {
    assert!(b.heartbeat("r1").await.unwrap() >= 1);
    b.publish_change().await.unwrap();
    b.ping().await.unwrap();
}
both!(heartbeat_and_changes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_counted_in_redis() {
    let r = TestRedis::new();
    assert_eq!(r.backend.heartbeat("a").await.unwrap(), 1);
    assert_eq!(r.backend.heartbeat("b").await.unwrap(), 2);
    assert_eq!(r.backend.heartbeat("a").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_notifications_reach_subscribers() {
    let r = TestRedis::new();
    let mut sub = r.backend.client().get_async_pubsub().await.unwrap();
    sub.subscribe(r.backend.changes_channel()).await.unwrap();
    r.backend.publish_change().await.unwrap();
    let msg = tokio::time::timeout(
        Duration::from_secs(2),
        futures_util::StreamExt::next(&mut sub.on_message()),
    )
    .await
    .expect("notified within 2 s");
    assert!(msg.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facade_falls_back_when_redis_is_unreachable() {
    // Nothing listens on this port: every call fails fast and the local backend answers.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = StateSettings {
        redis_url: Some(format!("redis://127.0.0.1:{port}/0")),
        timeout: Duration::from_millis(50),
        ..StateSettings::default()
    };
    let errors = prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["backend"]).unwrap();
    let state = State::new(settings.clone(), errors.clone());
    let backend = RedisBackend::open(settings.redis_url.as_deref().unwrap(), "x:", settings.timeout).unwrap();
    state.set_shared(Arc::new(backend));
    // Three replicas were alive when Redis was last heard from.
    state.set_replicas(3);
    let t0 = std::time::Instant::now();
    let q = Admission {
        user_limit: None,
        limit: Some(("k", 1)),
        session: Some(("s", "m")),
        pin: None,
    };
    assert_eq!(state.admit(q).await.limited, None);
    assert!(!state.shared_up(), "marked down after the first failure");
    assert_eq!(
        state.replicas(),
        3,
        "the replicas are still there: key limits stay split"
    );
    assert!(
        state.admit(q).await.limited.is_some(),
        "the local bucket limits meanwhile"
    );
    state.bind("s", "m", "p/m").await;
    assert_eq!(
        state
            .admit(Admission {
                user_limit: None,
                limit: None,
                session: Some(("s", "m")),
                pin: None,
            })
            .await
            .binding
            .as_deref(),
        Some("p/m")
    );
    assert!(t0.elapsed() < Duration::from_millis(600), "{:?}", t0.elapsed());
    assert!(errors.with_label_values(&["redis"]).get() >= 1);
    assert!(
        state.unbind("s").await.is_err(),
        "an admin delete cannot be confirmed without redis"
    );
}

/// A shared backend that takes only as many writes (binds, context entries) as it is allowed, then
/// fails them: a Redis that goes away in the middle of a resync. Everything else is the in-process
/// backend.
#[derive(Default)]
struct FlakyWrites {
    inner: LocalBackend,
    writes_allowed: std::sync::atomic::AtomicUsize,
    /// Writes are answered with a reply that cannot be read.
    garbled: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl StateBackend for FlakyWrites {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn admit(&self, q: Admission<'_>) -> Result<Admitted, StateError> {
        self.inner.admit(q).await
    }
    async fn bind(
        &self,
        session: &str,
        model: &str,
        upstream: &str,
        at_ms: u64,
        ttl: Duration,
    ) -> Result<(), StateError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.garbled.load(SeqCst) {
            return Err(StateError::Reply("an integer was expected".into()));
        }
        let allowed = self.writes_allowed.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
        match allowed {
            Ok(_) => self.inner.bind(session, model, upstream, at_ms, ttl).await,
            Err(_) => Err(StateError::Redis("connection reset".into())),
        }
    }
    async fn bindings(&self, session: &str) -> Result<Vec<(String, String)>, StateError> {
        self.inner.bindings(session).await
    }
    async fn unbind(&self, session: &str, at_ms: u64, ttl: Duration) -> Result<bool, StateError> {
        self.inner.unbind(session, at_ms, ttl).await
    }
    async fn push_context(
        &self,
        owner: &str,
        session: &str,
        entry: &str,
        limits: ContextLimits,
    ) -> Result<(), StateError> {
        use std::sync::atomic::Ordering::SeqCst;
        match self.writes_allowed.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => self.inner.push_context(owner, session, entry, limits).await,
            Err(_) => Err(StateError::Redis("connection reset".into())),
        }
    }
    async fn context(&self, owner: &str, session: &str) -> Result<Vec<String>, StateError> {
        self.inner.context(owner, session).await
    }
    async fn put_models(&self, provider: &str, models: &[String], ttl: Duration) -> Result<(), StateError> {
        self.inner.put_models(provider, models, ttl).await
    }
    async fn models(&self, provider: &str) -> Result<Option<Vec<String>>, StateError> {
        self.inner.models(provider).await
    }
    async fn sync_health(
        &self,
        batch_id: &str,
        deltas: &[(String, HealthDelta)],
    ) -> Result<Vec<(String, SharedHealth)>, StateError> {
        self.inner.sync_health(batch_id, deltas).await
    }
    async fn heartbeat(&self, replica: &str) -> Result<u32, StateError> {
        self.inner.heartbeat(replica).await
    }
    async fn publish_change(&self) -> Result<(), StateError> {
        self.inner.publish_change().await
    }
    async fn ping(&self) -> Result<(), StateError> {
        self.inner.ping().await
    }
}

/// Shared state whose Redis is a `FlakyWrites` (binds allowed: none yet).
fn state_over_flaky_writes() -> (State, Arc<FlakyWrites>) {
    let settings = StateSettings {
        redis_url: Some("redis://127.0.0.1:1/0".into()),
        timeout: Duration::from_millis(200),
        ..StateSettings::default()
    };
    let errors = prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["backend"]).unwrap();
    let state = State::new(settings, errors);
    let shared = Arc::new(FlakyWrites::default());
    state.set_shared(shared.clone());
    (state, shared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_made_during_an_outage_survive_a_second_outage_mid_resync() {
    let (state, shared) = state_over_flaky_writes();
    let sessions = ["s1", "s2", "s3", "s4"];
    // Redis is down: the bindings are kept locally and queued for it.
    for s in sessions {
        state.bind(s, "m", &format!("p/{s}")).await;
    }
    assert!(!state.shared_up());
    let written = |s: &'static str| {
        let shared = shared.clone();
        async move { shared.inner.bindings(s).await.unwrap() }
    };
    // Back, but gone again after two writes of the resync: the rest stays queued.
    shared.writes_allowed.store(2, std::sync::atomic::Ordering::SeqCst);
    assert!(state.answered());
    state.replay().await;
    for s in &sessions[..2] {
        assert_eq!(written(s).await, [("m".to_string(), format!("p/{s}"))], "{s}");
    }
    for s in &sessions[2..] {
        assert!(written(s).await.is_empty(), "{s} written after the failure");
    }
    // Back for good: the next resync writes what was left, and only that.
    shared.writes_allowed.store(2, std::sync::atomic::Ordering::SeqCst);
    assert!(state.answered());
    state.replay().await;
    for s in sessions {
        assert_eq!(written(s).await, [("m".to_string(), format!("p/{s}"))], "{s}");
    }
    // A later resync finds nothing left to write.
    shared.writes_allowed.store(10, std::sync::atomic::Ordering::SeqCst);
    state.replay().await;
    assert_eq!(shared.writes_allowed.load(std::sync::atomic::Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_writes_back_each_session_s_newest_context() {
    let (state, shared) = state_over_flaky_writes();
    let max = state.settings.context.max_entries;
    // Redis is down: one session writes more than it keeps, another writes once.
    for i in 0..max + 5 {
        state.push_context("k", "s1", &format!("{{\"n\":{i}}}")).await;
    }
    state.push_context("k", "s2", r#"{"n":"only"}"#).await;
    assert!(!state.shared_up());
    // Back with room for exactly what Redis would keep: all of it goes.
    shared
        .writes_allowed
        .store(max + 1, std::sync::atomic::Ordering::SeqCst);
    assert!(state.answered());
    state.replay().await;
    let s1 = shared.inner.context("k", "s1").await.unwrap();
    assert_eq!(s1.len(), max);
    assert_eq!(
        s1.last().map(String::as_str),
        Some(format!("{{\"n\":{}}}", max + 4).as_str())
    );
    assert_eq!(shared.inner.context("k", "s2").await.unwrap(), [r#"{"n":"only"}"#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_cannot_be_read_is_no_outage() {
    let (state, shared) = state_over_flaky_writes();
    shared.writes_allowed.store(10, std::sync::atomic::Ordering::SeqCst);
    state.bind("s0", "m", "p/a").await;
    assert!(state.shared_up());
    shared.garbled.store(true, std::sync::atomic::Ordering::SeqCst);
    state.bind("s1", "m", "p/b").await;
    assert!(state.shared_up(), "Redis answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_writes_back_each_session_s_latest_binding_once() {
    let (state, shared) = state_over_flaky_writes();
    // Redis is down: s1 fails over twice, s2 binds once.
    state.bind("s1", "m", "p/first").await;
    state.bind("s2", "m", "p/two").await;
    state.bind("s1", "m", "p/second").await;
    state.bind("s1", "m", "p/third").await;
    assert!(!state.shared_up());
    // Two writes are all Redis takes: both bindings go, the latest of s1's.
    shared.writes_allowed.store(2, std::sync::atomic::Ordering::SeqCst);
    assert!(state.answered());
    state.replay().await;
    assert_eq!(
        shared.inner.bindings("s1").await.unwrap(),
        [("m".to_string(), "p/third".to_string())]
    );
    assert_eq!(
        shared.inner.bindings("s2").await.unwrap(),
        [("m".to_string(), "p/two".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_written_back_after_an_outage_does_not_replace_a_newer_one() {
    let (state, shared) = state_over_flaky_writes();
    // Redis is down: this replica binds s1 and s2; queued.
    state.bind("s1", "m", "p/old").await;
    state.bind("s2", "m", "p/mine").await;
    assert!(!state.shared_up());
    // Meanwhile another replica, which still reached Redis, moved s1 on.
    let later = unix_ms() + 1_000;
    shared
        .inner
        .bind("s1", "m", "p/new", later, Duration::from_secs(60))
        .await
        .unwrap();
    shared.writes_allowed.store(10, std::sync::atomic::Ordering::SeqCst);
    assert!(state.answered());
    state.replay().await;
    assert_eq!(
        shared.inner.bindings("s1").await.unwrap(),
        [("m".to_string(), "p/new".to_string())]
    );
    assert_eq!(
        shared.inner.bindings("s2").await.unwrap(),
        [("m".to_string(), "p/mine".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_written_during_an_outage_is_written_back() {
    let (state, shared) = state_over_flaky_writes();
    state.push_context("key", "s", r#"{"n":1}"#).await;
    state.push_context("key", "s", r#"{"n":2}"#).await;
    assert!(!state.shared_up());
    assert_eq!(state.context("key", "s").await.len(), 2, "kept locally meanwhile");
    shared.writes_allowed.store(10, std::sync::atomic::Ordering::SeqCst);
    assert!(state.answered());
    state.replay().await;
    assert_eq!(
        shared.inner.context("key", "s").await.unwrap(),
        [r#"{"n":1}"#, r#"{"n":2}"#],
        "every replica reads them from Redis now"
    );
    assert_eq!(state.context("key", "s").await.len(), 2);
}

/// An upstream no replica has reported on for an hour (taken out of the configuration) leaves the
/// shared health hash; one reported on stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_health_forgets_upstreams_nobody_reports_on() {
    let r = TestRedis::new();
    let stale = r#"{"latency_ms":5,"error_rate":0,"cooldown_until_ms":0,"open_until_ms":0,"at":1000}"#;
    let mut c = ::redis::Client::open(REDIS).unwrap().get_connection().unwrap();
    let _: i64 = ::redis::cmd("HSET")
        .arg(format!("{}health", r.prefix))
        .arg("gone/m")
        .arg(stale)
        .query(&mut c)
        .unwrap();
    let delta = HealthDelta {
        successes: 1,
        latency_ms: 10.0,
        ..HealthDelta::default()
    };
    let view = r.backend.sync_health("b1", &[("kept/m".into(), delta)]).await.unwrap();
    let names: Vec<&str> = view.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(names, ["kept/m"]);
    let left: Vec<String> = ::redis::cmd("HKEYS")
        .arg(format!("{}health", r.prefix))
        .query(&mut c)
        .unwrap();
    assert_eq!(left, ["kept/m"]);
}

#[test]
fn a_binding_field_reads_back_as_its_owner_and_model() {
    let client = |key_id: Option<&str>, name: &str| crate::auth::ClientIdentity {
        name: name.into(),
        key_id: key_id.map(Into::into),
        allowed_providers: None,
        rate_limit_rps: None,
        user_limit: None,
    };
    for (client, owner, model) in [
        (client(Some("0a1b"), "alice/laptop"), "k:0a1b", "gpt-4o"),
        (client(None, "te m"), "c4:te m", "a b"),
        (client(None, "x:1 y "), "c6:x:1 y ", "m"),
        (client(None, ""), "c0:", " "),
    ] {
        assert_eq!(context_owner(&client), owner);
        let field = binding_field(&client, model);
        let (read, m) = split_binding_field(&field).expect(&field);
        let back = match read {
            Owner::Key(id) => format!("k:{id}"),
            Owner::Client(name) => format!("c{}:{name}", name.len()),
        };
        assert_eq!((back.as_str(), m), (owner, model));
    }
    // A model alone (a response's pin, or a binding from before owners).
    for field in ["gpt-4o", "claude-sonnet-4", "c9:short m", "cx:1 m", "k:nospace"] {
        assert_eq!(split_binding_field(field), None, "{field}");
    }
}
