//! The in-process backend: the same behaviour as Redis for one replica, with bounded maps. It is
//! also the fallback every replica uses while Redis is unreachable.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Admission, Admitted, ContextLimits, StateBackend, StateError};
use crate::limit::Buckets;
use crate::routing::health::{HealthDelta, SharedHealth};

/// Most sessions (bindings or contexts) kept; beyond it expired ones go, then the oldest.
const MAX_SESSIONS: usize = 100_000;
const ALPHA: f64 = 0.25;

struct Expiring<T> {
    value: T,
    until: Instant,
}

/// Most bytes of context entries kept in all: 100,000 sessions of up to 1,000 entries each would
/// otherwise let one client cycling session ids fill memory. Past it, the sessions expiring
/// soonest go.
const MAX_CONTEXT_BYTES: usize = 256 * 1024 * 1024;

/// Sessions' context entries, by (client key, session), and their total size.
#[derive(Default)]
struct Contexts {
    map: HashMap<(String, String), Expiring<VecDeque<String>>>,
    bytes: usize,
}

impl Contexts {
    fn count(&mut self) {
        self.bytes = self.map.values().flat_map(|e| &e.value).map(String::len).sum();
    }

    /// Back under `limit` bytes: expired sessions first, then the half expiring soonest, until
    /// it fits.
    fn shrink_to(&mut self, limit: usize, now: Instant) {
        if self.bytes <= limit {
            return;
        }
        self.map.retain(|_, e| e.until > now);
        self.count();
        while self.bytes > limit && self.map.len() > 1 {
            drop_soonest_half(&mut self.map);
            self.count();
        }
    }
}

/// A session's bindings: model → (upstream, when it was decided, Unix ms).
type SessionBindings = HashMap<String, (String, u64)>;

#[derive(Default)]
pub struct LocalBackend {
    buckets: Buckets,
    bindings: Mutex<HashMap<String, Expiring<SessionBindings>>>,
    contexts: Mutex<Contexts>,
    models: Mutex<HashMap<String, Expiring<Vec<String>>>>,
    health: Mutex<HashMap<String, SharedHealth>>,
    /// The last health batches folded in, so one sent again is not folded twice.
    health_batches: Mutex<std::collections::VecDeque<String>>,
}

/// Health batch ids remembered (a replica resends only its latest).
const HEALTH_BATCHES_KEPT: usize = 256;

/// Keeps a map under `MAX_SESSIONS`: expired entries first, then the ones expiring soonest.
fn bound<K: Clone + Eq + std::hash::Hash, T>(map: &mut HashMap<K, Expiring<T>>, now: Instant) {
    if map.len() < MAX_SESSIONS {
        return;
    }
    map.retain(|_, e| e.until > now);
    if map.len() >= MAX_SESSIONS {
        drop_soonest_half(map);
    }
}

/// Drops the half of the entries expiring soonest.
fn drop_soonest_half<K, T>(map: &mut HashMap<K, Expiring<T>>) {
    let mut untils: Vec<Instant> = map.values().map(|e| e.until).collect();
    untils.sort_unstable();
    if let Some(&cutoff) = untils.get(untils.len() / 2) {
        map.retain(|_, e| e.until > cutoff);
    }
}

impl LocalBackend {
    /// Takes one token from a bucket refilled at `per_second` (burst: one second's worth).
    pub fn take(&self, bucket: &str, per_second: u32) -> Result<(), Duration> {
        self.buckets.take(bucket, f64::from(per_second))
    }

    fn binding(&self, session: &str, model: &str) -> Option<String> {
        let map = self.bindings.lock();
        let e = map.get(session).filter(|e| e.until > Instant::now())?;
        e.value.get(model).map(|(upstream, _)| upstream.clone())
    }
}

/// The shared-health arithmetic, the same as the Redis script's.
pub fn fold_health(cur: Option<SharedHealth>, d: &HealthDelta) -> SharedHealth {
    let mut s = cur.unwrap_or(SharedHealth {
        latency_ms: -1.0,
        ..SharedHealth::default()
    });
    let keep = 1.0 - ALPHA;
    s.error_rate = 1.0 - (1.0 - s.error_rate) * keep.powi(d.failures.min(64) as i32);
    s.error_rate *= keep.powi(d.successes.min(64) as i32);
    if d.successes > 0 {
        s.latency_ms = if s.latency_ms < 0.0 {
            d.latency_ms
        } else {
            s.latency_ms + (1.0 - keep.powi(d.successes.min(64) as i32)) * (d.latency_ms - s.latency_ms)
        };
    }
    s.cooldown_until_ms = s.cooldown_until_ms.max(d.cooldown_until_ms);
    if d.open_until_ms > 0 {
        s.open_until_ms = s.open_until_ms.max(d.open_until_ms);
    } else if d.closed {
        s.open_until_ms = 0;
    }
    s
}

#[async_trait]
impl StateBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn admit(&self, q: Admission<'_>) -> Result<Admitted, StateError> {
        let named = [q.limit, q.user_limit].into_iter().flatten();
        let limited = self
            .buckets
            .take_all(named.map(|(name, rps)| (name, f64::from(rps))))
            .err();
        let binding = q.session.and_then(|(s, m)| self.binding(s, m));
        let pinned = q.pin.and_then(|(p, m)| self.binding(p, m));
        Ok(Admitted {
            limited,
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
        let now = Instant::now();
        let mut map = self.bindings.lock();
        bound(&mut map, now);
        let e = map.entry(session.to_string()).or_insert_with(|| Expiring {
            value: HashMap::new(),
            until: now,
        });
        if e.until <= now {
            e.value.clear();
        }
        if e.value.get(model).is_some_and(|(_, at)| *at > at_ms) {
            return Ok(());
        }
        e.value.insert(model.to_string(), (upstream.to_string(), at_ms));
        e.until = now + ttl;
        Ok(())
    }

    async fn bindings(&self, session: &str) -> Result<Vec<(String, String)>, StateError> {
        let map = self.bindings.lock();
        let mut out: Vec<(String, String)> = map
            .get(session)
            .filter(|e| e.until > Instant::now())
            .map(|e| e.value.iter().map(|(m, (u, _))| (m.clone(), u.clone())).collect())
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// This replica's own map only: what it queued for Redis is the facade's to drop.
    async fn unbind(&self, session: &str, _at_ms: u64, _ttl: Duration) -> Result<bool, StateError> {
        let removed = self.bindings.lock().remove(session);
        Ok(removed.is_some_and(|e| e.until > Instant::now() && !e.value.is_empty()))
    }

    async fn push_context(
        &self,
        owner: &str,
        session: &str,
        entry: &str,
        limits: ContextLimits,
    ) -> Result<(), StateError> {
        let now = Instant::now();
        let mut contexts = self.contexts.lock();
        let sessions = contexts.map.len();
        bound(&mut contexts.map, now);
        if contexts.map.len() != sessions {
            contexts.count();
        }
        let e = contexts
            .map
            .entry((owner.to_string(), session.to_string()))
            .or_insert_with(|| Expiring {
                value: VecDeque::new(),
                until: now,
            });
        let mut freed = 0;
        if e.until <= now {
            freed += e.value.iter().map(String::len).sum::<usize>();
            e.value.clear();
        }
        e.value.push_back(entry.to_string());
        while e.value.len() > limits.max_entries {
            freed += e.value.pop_front().map_or(0, |old| old.len());
        }
        e.until = now + limits.ttl;
        contexts.bytes = (contexts.bytes + entry.len()).saturating_sub(freed);
        contexts.shrink_to(MAX_CONTEXT_BYTES, now);
        Ok(())
    }

    async fn context(&self, owner: &str, session: &str) -> Result<Vec<String>, StateError> {
        let contexts = self.contexts.lock();
        Ok(contexts
            .map
            .get(&(owner.to_string(), session.to_string()))
            .filter(|e| e.until > Instant::now())
            .map(|e| e.value.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn put_models(&self, provider: &str, models: &[String], ttl: Duration) -> Result<(), StateError> {
        self.models.lock().insert(
            provider.to_string(),
            Expiring {
                value: models.to_vec(),
                until: Instant::now() + ttl,
            },
        );
        Ok(())
    }

    async fn models(&self, provider: &str) -> Result<Option<Vec<String>>, StateError> {
        let map = self.models.lock();
        Ok(map
            .get(provider)
            .filter(|e| e.until > Instant::now())
            .map(|e| e.value.clone()))
    }

    async fn sync_health(
        &self,
        batch_id: &str,
        deltas: &[(String, HealthDelta)],
    ) -> Result<Vec<(String, SharedHealth)>, StateError> {
        let mut map = self.health.lock();
        let mut batches = self.health_batches.lock();
        if !batches.iter().any(|b| b == batch_id) {
            if batches.len() == HEALTH_BATCHES_KEPT {
                batches.pop_front();
            }
            batches.push_back(batch_id.to_string());
            for (k, d) in deltas {
                let next = fold_health(map.get(k).copied(), d);
                map.insert(k.clone(), next);
            }
        }
        Ok(map.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    async fn heartbeat(&self, _replica: &str) -> Result<u32, StateError> {
        Ok(1)
    }

    async fn publish_change(&self) -> Result<(), StateError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The total is kept as entries come and go, and past the budget the sessions expiring soonest
    /// go first, the newest kept.
    #[tokio::test]
    async fn context_entries_stay_within_their_byte_budget() {
        let backend = LocalBackend::default();
        let limits = ContextLimits {
            max_entries: 2,
            ttl: Duration::from_secs(60),
        };
        for (session, entry) in [("a", "x".repeat(100)), ("a", "y".repeat(50)), ("a", "z".repeat(10))] {
            backend.push_context("k", session, &entry, limits).await.unwrap();
        }
        let mut contexts = backend.contexts.lock();
        assert_eq!(contexts.bytes, 60, "the oldest of a's three entries gave way");
        let now = Instant::now();
        for (i, session) in ["old", "mid", "new"].iter().enumerate() {
            contexts.map.insert(
                ("k".into(), session.to_string()),
                Expiring {
                    value: VecDeque::from(["e".repeat(1000)]),
                    until: now + Duration::from_secs(10 * (i as u64 + 1)),
                },
            );
        }
        contexts.count();
        assert_eq!(contexts.bytes, 3060);
        contexts.shrink_to(2500, now);
        assert!(contexts.bytes <= 2500, "{}", contexts.bytes);
        assert!(!contexts.map.contains_key(&("k".into(), "old".into())));
        assert!(contexts.map.contains_key(&("k".into(), "a".into())), "the newest stays");
    }
}
