//! The token bucket behind every request-rate limit kept in process: client keys without Redis
//! (`state::LocalBackend`) and provider keys (each replica takes its share of the key's limit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The slowest refill a bucket takes (one token an hour): a rate of zero would never refill.
const MIN_RATE: f64 = 1.0 / 3600.0;

/// A token bucket refilled continuously at `rate` per second (a fraction too: a replica's share of
/// a small limit), holding at most `rate` tokens and never less than one.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64) -> Self {
        Self {
            state: Mutex::new((rate.max(1.0), Instant::now())),
        }
    }

    /// Continues where `other` is (its tokens and their time): the same limit, rebuilt.
    pub fn take_over(&self, other: &TokenBucket) {
        if std::ptr::eq(self, other) {
            return;
        }
        let state = *other.state.lock();
        *self.state.lock() = state;
    }

    /// How long until a token is there (zero when one is), without taking it.
    pub fn wait(&self, rate: f64, now: Instant) -> Duration {
        let rate = rate.max(MIN_RATE);
        let s = self.state.lock();
        let tokens = (s.0 + now.saturating_duration_since(s.1).as_secs_f64() * rate).min(rate.max(1.0));
        Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.0))
    }

    /// Returns a token taken for a request that did not go on after all.
    pub fn give_back(&self, rate: f64) {
        let mut s = self.state.lock();
        s.0 = (s.0 + 1.0).min(rate.max(MIN_RATE).max(1.0));
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&self, rate: f64, now: Instant) -> Result<(), Duration> {
        let rate = rate.max(MIN_RATE);
        let mut s = self.state.lock();
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * rate).min(rate.max(1.0));
        // Never back: a thread that read the clock before another took the lock would otherwise
        // have the time between credited twice.
        s.1 = s.1.max(now);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.0) / rate))
        }
    }
}

/// Names remembered by [Buckets]; past it the map starts afresh (each bucket full again).
const MAX_NAMED_BUCKETS: usize = 100_000;

/// Token buckets by name (a client key, a user), each made full on first use.
#[derive(Default)]
pub struct Buckets {
    map: Mutex<HashMap<String, Arc<TokenBucket>>>,
}

impl Buckets {
    fn bucket(&self, name: &str, rate: f64) -> Arc<TokenBucket> {
        let mut map = self.map.lock();
        if map.len() >= MAX_NAMED_BUCKETS && !map.contains_key(name) {
            map.clear();
        }
        map.entry(name.to_string())
            .or_insert_with(|| Arc::new(TokenBucket::new(rate)))
            .clone()
    }

    /// Takes a token from the bucket `name` refilled at `rate` per second, or says how long until
    /// one is there.
    pub fn take(&self, name: &str, rate: f64) -> Result<(), Duration> {
        self.bucket(name, rate).take(rate, Instant::now())
    }

    /// Takes a token from every bucket named, or from none: one that refuses gives back what the
    /// ones before it gave (nothing is allocated: this is on the request path).
    pub fn take_all<'a>(&self, named: impl Iterator<Item = (&'a str, f64)> + Clone) -> Result<(), Duration> {
        for (i, (name, rate)) in named.clone().enumerate() {
            if let Err(wait) = self.take(name, rate) {
                for (name, rate) in named.take(i) {
                    self.bucket(name, rate).give_back(rate);
                }
                return Err(wait);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A take with an earlier clock reading than the last (threads racing to the lock) credits
    /// nothing twice.
    #[test]
    fn a_late_clock_reading_credits_no_time_twice() {
        let b = TokenBucket::new(1.0);
        let t0 = Instant::now();
        assert!(b.take(1.0, t0).is_ok());
        let t1 = t0 + Duration::from_millis(900);
        assert!(b.take(1.0, t1).is_err());
        // A thread that read the clock at t0 + 500 ms gets the lock late: nothing is credited.
        assert!(b.take(1.0, t0 + Duration::from_millis(500)).is_err());
        // Only at t0 + 1 s is a token back (before the fix, the 400 ms between counted twice).
        assert!(b.take(1.0, t0 + Duration::from_millis(950)).is_err());
        assert!(b.take(1.0, t0 + Duration::from_millis(1001)).is_ok());
    }

    /// A bucket taking over from itself (a provider kept as it was across a rebuild) is left as it
    /// is; it locked its own mutex twice before.
    #[test]
    fn a_bucket_takes_over_from_itself_without_locking_up() {
        let b = TokenBucket::new(1.0);
        let now = Instant::now();
        assert!(b.take(1.0, now).is_ok());
        b.take_over(&b);
        assert!(b.take(1.0, now).is_err(), "still spent");
    }

    #[test]
    fn bucket_allows_rate_then_refills() {
        let b = TokenBucket::new(2.0);
        let t0 = Instant::now();
        assert!(b.take(2.0, t0).is_ok());
        assert!(b.take(2.0, t0).is_ok());
        let wait = b.take(2.0, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(b.take(2.0, t0 + Duration::from_millis(600)).is_ok());
    }

    #[test]
    fn waiting_is_told_without_spending() {
        let b = TokenBucket::new(1.0);
        let t0 = Instant::now();
        assert_eq!(b.wait(1.0, t0), Duration::ZERO);
        assert_eq!(b.wait(1.0, t0), Duration::ZERO, "asking took nothing");
        assert!(b.take(1.0, t0).is_ok());
        let wait = b.wait(1.0, t0 + Duration::from_millis(400));
        assert!(
            wait > Duration::from_millis(550) && wait <= Duration::from_millis(600),
            "{wait:?}"
        );
    }
}
