//! `State`: the gateway's one entry point to shared state. It uses Redis when configured and
//! reachable, the in-process backend otherwise; every Redis call is bounded, and after an error
//! the request path stops asking Redis until the state service has seen it answer again.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::IntCounterVec;

use super::{Admission, Admitted, ContextLimits, LocalBackend, StateBackend, StateError};
use crate::routing::health::{unix_ms, HealthDelta, SharedHealth};

/// Bindings and context entries recorded while Redis was down, replayed when it is back (at most
/// this many of each).
const MAX_PENDING: usize = 10_000;
/// Most bytes of session context queued for Redis during an outage, the oldest giving way: an
/// entry may be long (`SNIPPET_CHARS`), and ten thousand of them would be gigabytes.
const MAX_PENDING_CONTEXT_BYTES: usize = 64 << 20;

/// Shared-state settings, from the environment.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// `REDIS_URL`; none: in-process state.
    pub redis_url: Option<String>,
    /// `REDIS_PREFIX`: every key and channel starts with it (default `apiproxy:`).
    pub prefix: String,
    /// `REDIS_TIMEOUT_MS`: the longest any call waits for Redis (default 100 ms).
    pub timeout: Duration,
    /// `SESSION_TTL`: how long a session binding lives after the session's last request.
    pub session_ttl: Duration,
    /// `SESSION_CONTEXT_MAX_ENTRIES`, `SESSION_CONTEXT_TTL`.
    pub context: ContextLimits,
    /// `SESSION_CONTEXT_SNIPPET_CHARS`: longest request or response snippet kept.
    pub snippet_chars: usize,
    /// `HEALTH_SYNC_MS`: how often health is exchanged with the other replicas.
    pub health_sync: Duration,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            prefix: "apiproxy:".into(),
            timeout: Duration::from_millis(100),
            session_ttl: Duration::from_secs(3600),
            context: ContextLimits {
                max_entries: 20,
                ttl: Duration::from_secs(86_400),
            },
            snippet_chars: 1000,
            health_sync: Duration::from_millis(250),
        }
    }
}

impl StateSettings {
    /// Reads the settings through `var` (the environment in production).
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut s = Self::default();
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        s.redis_url = var("REDIS_URL");
        if let Some(url) = &s.redis_url {
            // Caught at start-up; the message never repeats the URL (it may hold a password).
            ::redis::Client::open(url.as_str())
                .map_err(|e| format!("REDIS_URL is not a valid Redis URL ({:?})", e.kind()))?;
        }
        if let Some(p) = var("REDIS_PREFIX") {
            s.prefix = p;
        }
        let num = |k: &str, min: u64, max: u64| -> Result<Option<u64>, String> {
            var(k)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (min..=max).contains(n))
                        .ok_or_else(|| format!("{k}: `{v}` is not a number between {min} and {max}"))
                })
                .transpose()
        };
        if let Some(n) = num("REDIS_TIMEOUT_MS", 5, 10_000)? {
            s.timeout = Duration::from_millis(n);
        }
        if let Some(n) = num("SESSION_TTL", 1, 30 * 86_400)? {
            s.session_ttl = Duration::from_secs(n);
        }
        if let Some(n) = num("SESSION_CONTEXT_TTL", 1, 30 * 86_400)? {
            s.context.ttl = Duration::from_secs(n);
        }
        if let Some(n) = num("SESSION_CONTEXT_MAX_ENTRIES", 1, 1000)? {
            s.context.max_entries = n as usize;
        }
        if let Some(n) = num("SESSION_CONTEXT_SNIPPET_CHARS", 16, 100_000)? {
            s.snippet_chars = n as usize;
        }
        if let Some(n) = num("HEALTH_SYNC_MS", 20, 60_000)? {
            s.health_sync = Duration::from_millis(n);
        }
        Ok(s)
    }
}

/// A session context entry Redis has not heard of yet.
#[derive(Debug, Clone)]
struct PendingContext {
    owner: Box<str>,
    session: Box<str>,
    entry: Box<str>,
}

/// A session binding Redis has not heard of yet.
#[derive(Debug, Clone)]
struct PendingBinding {
    session: Box<str>,
    model: Box<str>,
    upstream: Box<str>,
    /// When it was decided (Unix ms).
    at: u64,
}

pub struct State {
    pub settings: StateSettings,
    local: Arc<LocalBackend>,
    /// Redis, once the state service has opened it.
    shared: OnceLock<Arc<dyn StateBackend>>,
    /// Set on a Redis error; only the state service clears it, after Redis answered again.
    down: AtomicBool,
    errors: IntCounterVec,
    replicas: AtomicU32,
    /// Bindings made while Redis was down, to write back when it answers.
    pending_bindings: Mutex<Vec<PendingBinding>>,
    /// Context entries written while Redis was down, likewise.
    pending_contexts: Mutex<Vec<PendingContext>>,
    /// This process's id among the replicas.
    pub replica_id: String,
}

impl State {
    pub fn new(settings: StateSettings, errors: IntCounterVec) -> Self {
        Self {
            settings,
            local: Arc::new(LocalBackend::default()),
            shared: OnceLock::new(),
            down: AtomicBool::new(false),
            errors,
            replicas: AtomicU32::new(1),
            pending_bindings: Mutex::new(Vec::new()),
            pending_contexts: Mutex::new(Vec::new()),
            replica_id: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// Installs the shared backend (the state service does, inside its runtime).
    pub fn set_shared(&self, backend: Arc<dyn StateBackend>) {
        let _ = self.shared.set(backend);
    }

    /// `redis` when configured, else `local`.
    pub fn backend_name(&self) -> &'static str {
        if self.settings.redis_url.is_some() {
            "redis"
        } else {
            "local"
        }
    }

    pub fn is_shared(&self) -> bool {
        self.settings.redis_url.is_some()
    }

    /// Redis is configured and was answering at last contact.
    pub fn shared_up(&self) -> bool {
        self.shared.get().is_some() && !self.down.load(Ordering::Relaxed)
    }

    /// The shared backend when it is usable right now.
    fn shared(&self) -> Option<&Arc<dyn StateBackend>> {
        self.shared.get().filter(|_| !self.down.load(Ordering::Relaxed))
    }

    /// The shared backend even while marked down: for the state service's probes and resync.
    pub(super) fn shared_any(&self) -> Option<&Arc<dyn StateBackend>> {
        self.shared.get()
    }

    /// Runs a Redis call within the timeout; on failure, counts it and marks Redis down.
    async fn bounded<T>(&self, fut: impl std::future::Future<Output = Result<T, StateError>>) -> Option<T> {
        let result = match tokio::time::timeout(self.settings.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StateError::Timeout(self.settings.timeout)),
        };
        match result {
            Ok(v) => Some(v),
            // Redis answered, with something this replica cannot read (a key another version
            // wrote, say): no outage, and no reason to leave shared state for local.
            Err(e @ StateError::Reply(_)) => {
                self.errors.with_label_values(&["redis"]).inc();
                tracing::warn!(error = %e, "a shared state reply could not be read");
                None
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    pub(super) fn failed(&self, e: &StateError) {
        self.errors.with_label_values(&["redis"]).inc();
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "shared state (redis) unavailable: serving from local state until it answers again");
        } else {
            tracing::debug!(error = %e, "shared state (redis) still unavailable");
        }
    }

    /// Called by the state service when Redis answered; true when it had been down.
    pub(super) fn answered(&self) -> bool {
        let was_down = self.down.swap(false, Ordering::Relaxed);
        if was_down {
            tracing::info!("shared state (redis) is back: resynchronising");
        }
        was_down
    }

    /// Live replicas sharing this state (1 without Redis). While Redis is down, the count last
    /// seen: the replicas are still there, and each taking a whole key's limit for itself would
    /// multiply it.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    pub(super) fn set_replicas(&self, n: u32) {
        self.replicas.store(n.max(1), Ordering::Relaxed);
    }

    /// The request path's one round trip: rate limit and session binding together.
    pub async fn admit(&self, q: Admission<'_>) -> Admitted {
        if q.limit.is_none() && q.user_limit.is_none() && q.session.is_none() && q.pin.is_none() {
            return Admitted::default();
        }
        if let Some(b) = self.shared() {
            if let Some(a) = self.bounded(b.admit(q)).await {
                return a;
            }
        }
        self.local.admit(q).await.unwrap_or_default()
    }

    /// Records that the session's requests for `model` go to `upstream` (kept locally too, so a
    /// Redis outage does not lose it).
    pub async fn bind(&self, session: &str, model: &str, upstream: &str) {
        let ttl = self.settings.session_ttl;
        let at = unix_ms();
        let _ = self.local.bind(session, model, upstream, at, ttl).await;
        if let Some(b) = self.shared() {
            if self.bounded(b.bind(session, model, upstream, at, ttl)).await.is_some() {
                return;
            }
        }
        // The session's latest decision for the model is the one to write back.
        self.hold_back(
            &self.pending_bindings,
            PendingBinding {
                session: session.into(),
                model: model.into(),
                upstream: upstream.into(),
                at,
            },
            1,
            |p| *p.session == *session && *p.model == *model,
        );
    }

    /// Writes back what was recorded while Redis was down: bindings each as of when it was
    /// decided (one another replica replaced meanwhile stays replaced) and for what is left of its
    /// time (one that has expired meanwhile is not brought back), then context entries.
    pub(super) async fn replay(&self) {
        let Some(b) = self.shared_any() else { return };
        let ttl = self.settings.session_ttl;
        self.write_back(&self.pending_bindings, "session bindings", |p: PendingBinding| {
            let b = b.clone();
            async move {
                let age = Duration::from_millis(unix_ms().saturating_sub(p.at));
                let Some(left) = ttl.checked_sub(age).filter(|left| !left.is_zero()) else {
                    return true;
                };
                self.bounded(b.bind(&p.session, &p.model, &p.upstream, p.at, left))
                    .await
                    .is_some()
            }
        })
        .await;
        let limits = self.settings.context;
        self.write_back(
            &self.pending_contexts,
            "session context entries",
            |p: PendingContext| {
                let b = b.clone();
                async move {
                    self.bounded(b.push_context(&p.owner, &p.session, &p.entry, limits))
                        .await
                        .is_some()
                }
            },
        )
        .await;
    }

    /// Queues what Redis missed, to write back when it answers (nothing to queue without Redis):
    /// at most `keep` items `alike` (of one session, say), and at most [MAX_PENDING] in all, the
    /// oldest giving way, so what is written back is what Redis would have kept.
    fn hold_back<T>(&self, queue: &Mutex<Vec<T>>, item: T, keep: usize, alike: impl Fn(&T) -> bool) {
        if !self.is_shared() {
            return;
        }
        let mut pending = queue.lock();
        let mut same = pending.iter().filter(|p| alike(p)).count();
        while same >= keep.max(1) {
            if let Some(oldest) = pending.iter().position(&alike) {
                pending.remove(oldest);
            }
            same -= 1;
        }
        if pending.len() >= MAX_PENDING {
            pending.remove(0);
        }
        pending.push(item);
    }

    /// Writes `queue` back in order; if Redis goes away again, what was not written stays queued
    /// for the next resync.
    async fn write_back<T: Clone, W: std::future::Future<Output = bool>>(
        &self,
        queue: &Mutex<Vec<T>>,
        what: &'static str,
        write: impl Fn(T) -> W,
    ) {
        let pending = std::mem::take(&mut *queue.lock());
        for (i, p) in pending.iter().enumerate() {
            if !write(p.clone()).await {
                let mut left = queue.lock();
                left.splice(0..0, pending[i..].iter().cloned());
                // Over the bound, the oldest give way (as `hold_back` does), not the newest.
                let excess = left.len().saturating_sub(MAX_PENDING);
                left.drain(..excess);
                return;
            }
        }
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), what, "recorded during the outage, written back");
        }
    }

    /// Every binding of a session; `Err` when Redis cannot be asked.
    pub async fn bindings(&self, session: &str) -> Result<Vec<(String, String)>, StateError> {
        if !self.is_shared() {
            return self.local.bindings(session).await;
        }
        let b = self.shared().ok_or_else(|| StateError::Redis("unavailable".into()))?;
        self.bounded(b.bindings(session))
            .await
            .ok_or(StateError::Timeout(self.settings.timeout))
    }

    /// Drops a session's bindings everywhere; `Err` when Redis cannot be asked.
    pub async fn unbind(&self, session: &str) -> Result<bool, StateError> {
        let (at, ttl) = (unix_ms(), self.settings.session_ttl);
        let local = self.local.unbind(session, at, ttl).await.unwrap_or(false);
        self.pending_bindings.lock().retain(|p| &*p.session != session);
        if !self.is_shared() {
            return Ok(local);
        }
        let b = self.shared().ok_or_else(|| StateError::Redis("unavailable".into()))?;
        let shared = self
            .bounded(b.unbind(session, at, ttl))
            .await
            .ok_or(StateError::Timeout(self.settings.timeout))?;
        Ok(shared || local)
    }

    pub async fn push_context(&self, owner: &str, session: &str, entry: &str) {
        let limits = self.settings.context;
        if let Some(b) = self.shared() {
            if self
                .bounded(b.push_context(owner, session, entry, limits))
                .await
                .is_some()
            {
                return;
            }
        }
        let _ = self.local.push_context(owner, session, entry, limits).await;
        // Redis keeps a session's newest `max_entries`: older ones queued for it would only be
        // trimmed there.
        self.hold_back(
            &self.pending_contexts,
            PendingContext {
                owner: owner.into(),
                session: session.into(),
                entry: entry.into(),
            },
            limits.max_entries,
            |p| *p.owner == *owner && *p.session == *session,
        );
        let mut pending = self.pending_contexts.lock();
        let mut bytes: usize = pending.iter().map(|p| p.entry.len()).sum();
        let mut oldest = 0;
        while bytes > MAX_PENDING_CONTEXT_BYTES && oldest < pending.len() {
            bytes -= pending[oldest].entry.len();
            oldest += 1;
        }
        pending.drain(..oldest);
    }

    /// The session context this client key wrote (Redis's, or the local one when Redis is out).
    pub async fn context(&self, owner: &str, session: &str) -> Vec<String> {
        if let Some(b) = self.shared() {
            if let Some(v) = self.bounded(b.context(owner, session)).await {
                return v;
            }
        }
        self.local.context(owner, session).await.unwrap_or_default()
    }

    /// A provider's model list cached by any replica (only with a shared backend: alone, the
    /// catalog itself is the cache).
    pub async fn models(&self, provider: &str) -> Option<Vec<String>> {
        let b = self.shared()?;
        self.bounded(b.models(provider)).await.flatten()
    }

    pub async fn put_models(&self, provider: &str, models: &[String], ttl: Duration) {
        if let Some(b) = self.shared() {
            let _ = self.bounded(b.put_models(provider, models, ttl)).await;
        }
    }

    /// Exchanges health with the other replicas; `None` when Redis is not available.
    pub(super) async fn sync_health(
        &self,
        batch_id: &str,
        deltas: &[(String, HealthDelta)],
    ) -> Option<Vec<(String, SharedHealth)>> {
        let b = self.shared()?;
        self.bounded(b.sync_health(batch_id, deltas)).await
    }

    pub(super) async fn heartbeat(&self) -> Option<u32> {
        let b = self.shared()?;
        self.bounded(b.heartbeat(&self.replica_id)).await
    }

    /// Tells the other replicas the configuration changed (they also poll, as a safety net).
    pub async fn publish_change(&self) {
        if let Some(b) = self.shared() {
            let _ = self.bounded(b.publish_change()).await;
        }
    }

    /// Asks Redis for a write (even while marked down): this replica's heartbeat. A PING would
    /// pass on a Redis that refuses writes (out of memory, read-only after a failover, a failed
    /// snapshot), and every recovery would end at the next write, four times a second.
    ///
    /// The first write may have to make the connection first (up to its connect timeout), and is
    /// given that long: cut short, each probe would start a new connection that never finishes.
    /// Redis is back only when a second write, on the connection made, answers within the
    /// requests' own budget: one slower than that would fail the next request and mark Redis
    /// down again, several times a second (each recovery a resynchronisation).
    pub(super) async fn probe(&self) -> bool {
        let Some(b) = self.shared_any() else { return false };
        let budget = self.settings.timeout;
        // Two connect tries (the manager retries once) with the pause between them, then the call.
        let connecting = 2 * super::redis::CONNECT_TIMEOUT + super::redis::CONNECT_RETRY_PAUSE;
        let first = tokio::time::timeout(connecting + budget, b.heartbeat(&self.replica_id)).await;
        let failure = match first {
            Ok(Ok(_)) => match tokio::time::timeout(budget, b.heartbeat(&self.replica_id)).await {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) => e,
                // Reachable, but slower than requests may wait: the connection is kept.
                Err(_) => {
                    self.failed(&StateError::Timeout(budget));
                    return false;
                }
            },
            Ok(Err(e)) => e,
            Err(_) => StateError::Timeout(budget),
        };
        self.failed(&failure);
        // A Redis whose host vanished leaves a connection that only times out, for as long as
        // TCP keeps it (minutes): the next probe goes on a new one.
        b.reconnect();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Context entries queued for Redis during an outage stay within a byte budget, the oldest
    /// giving way.
    #[tokio::test]
    async fn context_queued_during_an_outage_is_bounded_in_bytes() {
        let settings =
            StateSettings::from_env(&|k: &str| (k == "REDIS_URL").then(|| "redis://127.0.0.1:1".into())).unwrap();
        let state = State::new(
            settings,
            IntCounterVec::new(prometheus::Opts::new("e", "e"), &["backend"]).unwrap(),
        );
        let entry = "x".repeat(100 * 1024);
        for i in 0..800 {
            state.push_context("owner", &format!("session-{i}"), &entry).await;
        }
        let pending = state.pending_contexts.lock();
        let bytes: usize = pending.iter().map(|p| p.entry.len()).sum();
        assert!(bytes <= MAX_PENDING_CONTEXT_BYTES, "{bytes} bytes queued");
        assert_eq!(
            pending.last().map(|p| &*p.session),
            Some("session-799"),
            "the newest kept"
        );
    }

    #[test]
    fn tls_redis_urls_are_taken() {
        let url = |u: &'static str| move |k: &str| (k == "REDIS_URL").then(|| u.to_string());
        assert!(StateSettings::from_env(&url("rediss://user:pw@redis.example.com:6380/0")).is_ok());
        assert!(StateSettings::from_env(&url("redis://127.0.0.1:6379")).is_ok());
        let err = StateSettings::from_env(&url("http://x")).err().unwrap_or_default();
        assert!(
            err.contains("not a valid Redis URL") && !err.contains("http://x"),
            "{err}"
        );
    }
}
