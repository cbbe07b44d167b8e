// APIProxy patch (see PATCHED.md): idle upstream connections parked without a task each.

//! The keep-alive pool of [super::TransportConnector].
//!
//! Stock Pingora spawns a task for every released connection that watches it for closure, and wakes
//! that task again when the connection is reused: an `Arc<Mutex>`, a oneshot, a `Notify`, a timer
//! and two task wake-ups per proxied request. Here an idle connection is parked in a map instead.
//! Its health is checked when it is taken (a non-blocking read, which costs no system call when the
//! reactor saw nothing arrive on it) and by one sweeper task per pool, once a second, which also
//! enforces the idle timeout and closes connections the server has closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;

/// How often parked connections are checked for closure and idle timeout.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Parked {
    stream: Stream,
    since: Instant,
    timeout: Option<Duration>,
}

impl Parked {
    fn expired(&self, now: Instant) -> bool {
        self.timeout
            .is_some_and(|t| now.saturating_duration_since(self.since) >= t)
    }
}

#[derive(Default)]
struct Parking {
    /// Per reuse key, oldest first: the most recently used connection is taken first.
    by_key: HashMap<u64, Vec<Parked>>,
    total: usize,
}

pub(crate) struct IdlePool {
    capacity: usize,
    parking: Mutex<Parking>,
    sweeper_started: AtomicBool,
    unexpected_data: Arc<AtomicU64>,
    on_unused_close: Option<PoolCallback>,
}

impl IdlePool {
    pub(crate) fn new(
        capacity: usize,
        unexpected_data: Arc<AtomicU64>,
        on_unused_close: Option<PoolCallback>,
    ) -> Self {
        IdlePool {
            capacity,
            parking: Mutex::new(Parking::default()),
            sweeper_started: AtomicBool::new(false),
            unexpected_data,
            on_unused_close,
        }
    }

    /// The most recently parked connection for `key` that is still usable.
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        loop {
            let parked = {
                let mut parking = self.parking.lock();
                let list = parking.by_key.get_mut(&key)?;
                let parked = list.pop()?;
                if list.is_empty() {
                    parking.by_key.remove(&key);
                }
                parking.total -= 1;
                parked
            };
            let mut parked = parked;
            if !parked.expired(Instant::now())
                && test_reusable_stream(&mut parked.stream, &self.unexpected_data)
            {
                return Some(parked.stream);
            }
            self.closed_unused(parked);
        }
    }

    /// Parks `stream` under `key`; the oldest parked connection is closed when the pool is full.
    pub(crate) fn park(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        timeout: Option<Duration>,
    ) {
        self.start_sweeper();
        let evicted = {
            let mut parking = self.parking.lock();
            parking.by_key.entry(key).or_default().push(Parked {
                stream,
                since: Instant::now(),
                timeout,
            });
            parking.total += 1;
            if parking.total > self.capacity {
                parking.evict_oldest()
            } else {
                None
            }
        };
        if let Some(parked) = evicted {
            self.closed_unused(parked);
        }
    }

    fn closed_unused(&self, parked: Parked) {
        if let Some(callback) = &self.on_unused_close {
            callback(parked.since.elapsed());
        }
        drop(parked);
    }

    /// Closes expired connections and those the server closed or wrote to.
    fn sweep(&self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let mut parking = self.parking.lock();
            let mut removed = 0;
            parking.by_key.retain(|_, list| {
                let mut i = 0;
                while i < list.len() {
                    let parked = &mut list[i];
                    if parked.expired(now)
                        || !test_reusable_stream(&mut parked.stream, &self.unexpected_data)
                    {
                        gone.push(list.remove(i));
                        removed += 1;
                    } else {
                        i += 1;
                    }
                }
                !list.is_empty()
            });
            parking.total -= removed;
        }
        for parked in gone {
            self.closed_unused(parked);
        }
    }

    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        pingora_runtime::current_handle().spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.parking.lock().total
    }
}

impl Parking {
    fn evict_oldest(&mut self) -> Option<Parked> {
        let key = *self
            .by_key
            .iter()
            .filter_map(|(k, list)| list.first().map(|p| (k, p.since)))
            .min_by_key(|(_, since)| *since)?
            .0;
        let list = self.by_key.get_mut(&key)?;
        let parked = list.remove(0);
        if list.is_empty() {
            self.by_key.remove(&key);
        }
        self.total -= 1;
        Some(parked)
    }
}
