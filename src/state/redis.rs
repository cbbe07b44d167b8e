//! The Redis backend: one `ConnectionManager` (a multiplexed connection that reconnects by
//! itself), every key under a prefix, every multi-step update an atomic Lua script. Calls carry a
//! response timeout; the `State` facade adds its own bound and the fallback.

use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::scripts;
use super::{Admission, Admitted, ContextLimits, StateBackend, StateError};
use crate::routing::health::{HealthDelta, SharedHealth};

/// A replica not heard from for this long is no longer counted.
const REPLICA_SILENCE: Duration = Duration::from_secs(5);

impl From<redis::RedisError> for StateError {
    fn from(e: redis::RedisError) -> Self {
        // The error's text names the command's failure, never the URL or the password.
        StateError::Redis(e.to_string())
    }
}

pub struct RedisBackend {
    /// Replaced when a probe fails (`reconnect`): the manager reconnects by itself only when its
    /// connection errs, never when it merely goes silent (a host gone without a reset).
    conn: ArcSwap<ConnectionManager>,
    config: ConnectionManagerConfig,
    client: redis::Client,
    prefix: String,
    admit: Script,
    bind: Script,
    unbind: Script,
    push_context: Script,
    sync_health: Script,
    heartbeat: Script,
}

/// How long ago `at_ms` (this replica's clock, Unix ms) was: what Redis is told instead of the
/// time itself, so that it dates the event by its own clock.
fn age_ms(at_ms: u64) -> u64 {
    crate::routing::health::unix_ms().saturating_sub(at_ms)
}

/// The health hash stores what the script wrote; numbers may come back as floats.
#[derive(serde::Deserialize)]
struct StoredHealth {
    latency_ms: f64,
    error_rate: f64,
    cooldown_until_ms: f64,
    open_until_ms: f64,
}

/// Longest a new connection to Redis may take to be made (TCP, TLS, handshake).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest pause before the one retry of a connection that failed.
pub(super) const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(500);

impl RedisBackend {
    /// Opens a lazily connecting manager. Must run inside the runtime that will keep driving the
    /// connection (a Pingora service's), never a throw-away one.
    pub fn open(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StateError> {
        let client = redis::Client::open(url).map_err(|e| StateError::Redis(format!("REDIS_URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(CONNECT_RETRY_PAUSE);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            conn: ArcSwap::from_pointee(conn),
            config,
            client,
            prefix: prefix.to_string(),
            admit: Script::new(scripts::ADMIT),
            bind: Script::new(scripts::BIND),
            unbind: Script::new(scripts::UNBIND),
            push_context: Script::new(scripts::PUSH_CONTEXT),
            sync_health: Script::new(scripts::SYNC_HEALTH),
            heartbeat: Script::new(scripts::HEARTBEAT),
        })
    }

    fn conn(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.conn.load())
    }

    /// For the subscriber's own connection (pub/sub needs one of its own).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                k.push(':');
            }
            k.push_str(p);
        }
        k
    }

    /// The channel configuration changes are announced on.
    pub fn changes_channel(&self) -> String {
        self.key(&["changes"])
    }
}

#[async_trait]
impl StateBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn admit(&self, q: Admission<'_>) -> Result<Admitted, StateError> {
        let (bucket, rate) = q.limit.unwrap_or(("", 0));
        let (user_bucket, user_rate) = q.user_limit.unwrap_or(("", 0));
        let (session, model) = q.session.unwrap_or(("", ""));
        let (pin, pin_model) = q.pin.unwrap_or(("", ""));
        let mut conn = self.conn();
        let (allowed, wait_ms, binding, pinned): (i64, i64, Option<String>, Option<String>) = self
            .admit
            .key(self.key(&["rl", bucket]))
            .key(self.key(&["sess", session]))
            .key(self.key(&["rl", user_bucket]))
            .key(self.key(&["sess", pin]))
            .arg(rate)
            .arg(model)
            .arg(user_rate)
            .arg(pin_model)
            .invoke_async(&mut conn)
            .await?;
        Ok(Admitted {
            limited: (allowed == 0).then(|| Duration::from_millis(wait_ms.max(1) as u64)),
            binding,
            pinned,
        })
    }

    async fn bind(
        &self,
        session: &str,
        model: &str,
        upstream: &str,
        at_ms: u64,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        // Sent as an age: Redis dates it by its own clock.
        self.bind
            .key(self.key(&["sess", session]))
            .key(self.key(&["sess_at", session]))
            .arg(model)
            .arg(upstream)
            .arg(age_ms(at_ms))
            .arg(ttl.as_millis() as u64)
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    async fn bindings(&self, session: &str) -> Result<Vec<(String, String)>, StateError> {
        let mut conn = self.conn();
        let map: std::collections::BTreeMap<String, String> = conn.hgetall(self.key(&["sess", session])).await?;
        Ok(map.into_iter().collect())
    }

    async fn unbind(&self, session: &str, at_ms: u64, ttl: Duration) -> Result<bool, StateError> {
        let mut conn = self.conn();
        let n: i64 = self
            .unbind
            .key(self.key(&["sess", session]))
            .key(self.key(&["sess_at", session]))
            .arg(age_ms(at_ms))
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(n > 0)
    }

    async fn push_context(
        &self,
        owner: &str,
        session: &str,
        entry: &str,
        limits: ContextLimits,
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let _: i64 = self
            .push_context
            .key(self.key(&["ctx", owner, session]))
            .arg(entry)
            .arg(limits.max_entries.max(1))
            .arg(limits.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn context(&self, owner: &str, session: &str) -> Result<Vec<String>, StateError> {
        let mut conn = self.conn();
        Ok(conn.lrange(self.key(&["ctx", owner, session]), 0, -1).await?)
    }

    async fn put_models(&self, provider: &str, models: &[String], ttl: Duration) -> Result<(), StateError> {
        let body = serde_json::to_string(models).map_err(|e| StateError::Reply(e.to_string()))?;
        let mut conn = self.conn();
        let _: () = conn
            .pset_ex(self.key(&["models", provider]), body, ttl.as_millis().max(1) as u64)
            .await?;
        Ok(())
    }

    async fn models(&self, provider: &str) -> Result<Option<Vec<String>>, StateError> {
        let mut conn = self.conn();
        let body: Option<String> = conn.get(self.key(&["models", provider])).await?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| StateError::Reply(e.to_string())))
            .transpose()
    }

    async fn sync_health(
        &self,
        batch_id: &str,
        deltas: &[(String, HealthDelta)],
    ) -> Result<Vec<(String, SharedHealth)>, StateError> {
        let batch = serde_json::to_string(deltas).map_err(|e| StateError::Reply(e.to_string()))?;
        let mut conn = self.conn();
        let flat: Vec<String> = self
            .sync_health
            .key(self.key(&["health"]))
            .key(self.key(&["health_batch", batch_id]))
            .arg(batch)
            .arg(0.25)
            .invoke_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            let s: StoredHealth = serde_json::from_str(&pair[1]).map_err(|e| StateError::Reply(e.to_string()))?;
            out.push((
                pair[0].clone(),
                SharedHealth {
                    latency_ms: s.latency_ms,
                    error_rate: s.error_rate,
                    cooldown_until_ms: s.cooldown_until_ms.max(0.0) as u64,
                    open_until_ms: s.open_until_ms.max(0.0) as u64,
                },
            ));
        }
        Ok(out)
    }

    fn reconnect(&self) {
        // Lazy: the new connection is made by the next call, the old one dropped with its manager.
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(conn) => self.conn.store(std::sync::Arc::new(conn)),
            Err(e) => tracing::debug!(error = %e, "a new redis connection could not be set up"),
        }
    }

    async fn heartbeat(&self, replica: &str) -> Result<u32, StateError> {
        let mut conn = self.conn();
        let n: u32 = self
            .heartbeat
            .key(self.key(&["replicas"]))
            .arg(replica)
            .arg(REPLICA_SILENCE.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(n.max(1))
    }

    async fn publish_change(&self) -> Result<(), StateError> {
        let mut conn = self.conn();
        let _: i64 = conn.publish(self.changes_channel(), "config").await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StateError> {
        let mut conn = self.conn();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
