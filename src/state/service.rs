//! The state service: opens Redis inside Pingora's runtime (the connection's tasks live there),
//! then, in the background, exchanges routing health with the other replicas, counts live
//! replicas, listens for configuration changes, and resynchronises after a Redis outage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;

use super::RedisBackend;
use crate::app::App;
use crate::routing::health::{unix_ms, HealthDelta};

/// How often replicas say they are alive (and learn how many there are).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the subscriber waits before reconnecting, and how often it checks its connection.
const SUBSCRIBER_RETRY: Duration = Duration::from_millis(500);
const SUBSCRIBER_PING: Duration = Duration::from_secs(1);

pub struct StateService {
    app: Arc<App>,
}

impl StateService {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// Pushes this replica's health deltas and adopts the merged view. Local traffic never waits
    /// for this.
    async fn sync_health(&self, outbox: &mut HealthOutbox) {
        outbox.add(self.app.health.take_deltas(Instant::now(), unix_ms()));
        let (id, deltas) = outbox.batch();
        if let Some(shared) = self.app.state.sync_health(id, deltas).await {
            outbox.acknowledged();
            // A batch sent again after a timeout brings a view without what happened here since
            // (a circuit opened meanwhile, which that view would close): adopted next time.
            if outbox.delivered_all() {
                self.app.health.apply_shared(&shared, Instant::now(), unix_ms());
            }
        }
    }
}

/// After an outage: bindings made meanwhile go back to Redis, and the snapshot is rebuilt in case
/// a change notification was missed. Health deltas were kept and go with the next sync. Runs on
/// its own task: the replay may take seconds, and the heartbeat must go on meanwhile (a replica
/// silent for 5 s is no longer counted, and the others take its share of every key's rate).
async fn resync(app: Arc<App>) {
    app.state.replay().await;
    if app.store().is_some() {
        if let Err(e) = crate::live::reload(&app).await {
            tracing::warn!(error = %e, "snapshot rebuild after the redis outage failed; the poll will retry");
        }
    }
}

/// How long after this replica (re)registers the count of replicas may only go up: the others
/// register again within a heartbeat or so, and counting too few meanwhile gives each a larger
/// share of every key's rate than is theirs.
const RECOUNT: Duration = Duration::from_secs(5);

/// Health deltas on their way to shared state: one batch at a time, sent again under the same id
/// until it is acknowledged, so a call that timed out after Redis applied it is not counted twice.
/// Deltas taken meanwhile wait, merged, for the next batch.
#[derive(Default)]
struct HealthOutbox {
    unacknowledged: Option<(String, Vec<(String, HealthDelta)>)>,
    waiting: HashMap<String, HealthDelta>,
}

impl HealthOutbox {
    fn add(&mut self, deltas: impl IntoIterator<Item = (String, HealthDelta)>) {
        for (k, d) in deltas {
            self.waiting.entry(k).or_default().merge(&d);
        }
    }

    /// The batch to send: the unacknowledged one, else the waiting deltas under a new id (an
    /// empty batch still fetches the view).
    fn batch(&mut self) -> (&str, &[(String, HealthDelta)]) {
        let waiting = &mut self.waiting;
        let (id, deltas) = self
            .unacknowledged
            .get_or_insert_with(|| (format!("{:032x}", rand::random::<u128>()), waiting.drain().collect()));
        (id, deltas)
    }

    fn acknowledged(&mut self) {
        self.unacknowledged = None;
    }

    /// Every delta taken has reached shared state: a view fetched now includes them.
    fn delivered_all(&self) -> bool {
        self.unacknowledged.is_none() && self.waiting.is_empty()
    }
}

/// Listens on the changes channel and rebuilds the snapshot on each message. A dedicated
/// connection (pub/sub needs its own), reconnected when it fails or stops answering pings.
async fn subscribe(app: Arc<App>, client: redis::Client, channel: String) {
    let mut first = true;
    loop {
        let connected = tokio::time::timeout(Duration::from_secs(1), async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            _ => {
                tokio::time::sleep(SUBSCRIBER_RETRY).await;
                continue;
            }
        };
        tracing::debug!("subscribed to configuration changes");
        if !first {
            // Changes made while we were not listening.
            reload(&app).await;
        }
        first = false;
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(SUBSCRIBER_PING);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(_) => reload(&app).await,
                    None => break,
                },
                _ = ping.tick() => {
                    // A subscribed connection answers PING with `["pong", ""]` (RESP2), not
                    // `PONG`: any reply that is not an error means it is alive.
                    let alive = tokio::time::timeout(Duration::from_millis(500), sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::debug!("configuration change subscription lost; reconnecting");
        tokio::time::sleep(SUBSCRIBER_RETRY).await;
    }
}

async fn reload(app: &App) {
    if app.store().is_none() {
        return;
    }
    // The replica's own announcement (it rebuilt when it wrote) rebuilds nothing again.
    if let Err(e) = crate::live::reload_if_changed(app).await {
        tracing::warn!(error = %e, "snapshot rebuild after a change notification failed; the poll will retry");
    }
}

#[async_trait]
impl BackgroundService for StateService {
    async fn start_with_ready_notifier(&self, mut shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let state = &self.app.state;
        let Some(url) = state.settings.redis_url.clone() else {
            tracing::info!("shared state: in-process (set REDIS_URL to share it between replicas)");
            ready.notify_ready();
            return;
        };
        let backend = match RedisBackend::open(&url, &state.settings.prefix, state.settings.timeout) {
            Ok(b) => b,
            Err(e) => {
                // A malformed URL is caught at start-up; anything else: serve locally.
                tracing::error!(error = %e, "cannot use REDIS_URL; serving from local state");
                ready.notify_ready();
                return;
            }
        };
        let subscriber = tokio::spawn(subscribe(
            self.app.clone(),
            backend.client().clone(),
            backend.changes_channel(),
        ));
        state.set_shared(Arc::new(backend));
        if state.probe().await {
            tracing::info!(prefix = %state.settings.prefix, "shared state: redis");
        }
        ready.notify_ready();

        let mut outbox = HealthOutbox::default();
        let mut tick = tokio::time::interval(state.settings.health_sync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Its own clock, not the health sync's: `HEALTH_SYNC_MS` may be longer than the silence
        // after which a replica is no longer counted, and each would then count itself alone.
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registered = Instant::now();
        let mut resyncing: Option<tokio::task::JoinHandle<()>> = None;
        // A recovery while a resync still runs (Redis went away again during it) wants one more
        // once it ends: what the outage queued after the running one took its queues.
        let mut resync_wanted = false;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    if !state.shared_up() {
                        if !(state.probe().await && state.answered()) {
                            continue;
                        }
                        registered = Instant::now();
                        resync_wanted = true;
                    }
                    if resync_wanted && resyncing.as_ref().is_none_or(|r| r.is_finished()) {
                        resync_wanted = false;
                        resyncing = Some(tokio::spawn(resync(self.app.clone())));
                    }
                    self.sync_health(&mut outbox).await;
                }
                _ = beat.tick() => {
                    if !state.shared_up() {
                        continue;
                    }
                    if let Some(n) = state.heartbeat().await {
                        let n = if registered.elapsed() < RECOUNT { n.max(state.replicas()) } else { n };
                        state.set_replicas(n);
                    }
                }
            }
        }
        subscriber.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(n: u32) -> HealthDelta {
        HealthDelta {
            failures: n,
            ..HealthDelta::default()
        }
    }

    #[test]
    fn an_unacknowledged_batch_is_sent_again_as_it_was() {
        let mut outbox = HealthOutbox::default();
        outbox.add([("p/m".to_string(), failures(2))]);
        let (first_id, first) = outbox.batch();
        let (first_id, first) = (first_id.to_string(), first.to_vec());
        assert_eq!(first.len(), 1);
        // Not acknowledged (the call timed out): new deltas wait; the same batch goes again.
        outbox.add([("p/m".to_string(), failures(1))]);
        let (id, again) = outbox.batch();
        assert_eq!((id, again[0].1.failures), (first_id.as_str(), 2));
        outbox.acknowledged();
        assert!(!outbox.delivered_all(), "the view that comes back lacks what waited");
        let (id, next) = outbox.batch();
        assert_ne!(id, first_id);
        assert_eq!(next[0].1.failures, 1, "what waited goes next, once");
        outbox.acknowledged();
        assert!(outbox.delivered_all());
        assert!(outbox.batch().1.is_empty());
    }
}
