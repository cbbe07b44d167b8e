//! Request-rate limits: per client key (behind `RateLimiter`, so the in-process limiter can later be
//! replaced by one shared through Redis) and per provider key (`TokenBucket`, always local).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

/// A limiter of requests per second, by bucket name (a client key id).
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Takes one request from `bucket`'s allowance of `per_second` (burst: one second's worth).
    /// `Err` carries how long until a request would be allowed.
    async fn acquire(&self, bucket: &str, per_second: u32) -> Result<(), Duration>;
}

/// A token bucket refilled continuously at `rate` per second, holding at most `rate` tokens.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: u32) -> Self {
        Self {
            state: Mutex::new((f64::from(rate.max(1)), Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&self, rate: u32, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(rate.max(1));
        let mut s = self.state.lock();
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * rate).min(rate);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.0) / rate))
        }
    }
}

/// Counters in this process. Each replica limits on its own until a shared limiter replaces it.
#[derive(Default)]
pub struct LocalLimiter {
    buckets: Mutex<HashMap<String, std::sync::Arc<TokenBucket>>>,
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn acquire(&self, bucket: &str, per_second: u32) -> Result<(), Duration> {
        let b = {
            let mut map = self.buckets.lock();
            map.entry(bucket.to_string())
                .or_insert_with(|| std::sync::Arc::new(TokenBucket::new(per_second)))
                .clone()
        };
        b.take(per_second, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_rate_then_refills() {
        let b = TokenBucket::new(2);
        let t0 = Instant::now();
        assert!(b.take(2, t0).is_ok());
        assert!(b.take(2, t0).is_ok());
        let wait = b.take(2, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(b.take(2, t0 + Duration::from_millis(600)).is_ok());
    }

    #[tokio::test]
    async fn local_limiter_keeps_buckets_apart() {
        let l = LocalLimiter::default();
        assert!(l.acquire("a", 1).await.is_ok());
        assert!(l.acquire("a", 1).await.is_err());
        assert!(l.acquire("b", 1).await.is_ok());
    }
}
