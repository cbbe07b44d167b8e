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

    /// Pushes this replica's health deltas (with those a failed push left over) and adopts the
    /// merged view. Local traffic never waits for this.
    async fn sync_health(&self, carry: &mut HashMap<String, HealthDelta>) {
        let state = &self.app.state;
        for (k, d) in self.app.health.take_deltas(Instant::now(), unix_ms()) {
            carry.entry(k).or_default().merge(&d);
        }
        let deltas: Vec<(String, HealthDelta)> = carry.iter().map(|(k, d)| (k.clone(), *d)).collect();
        if let Some(shared) = state.sync_health(&deltas).await {
            carry.clear();
            self.app.health.apply_shared(&shared, Instant::now(), unix_ms());
        }
    }

    /// After an outage: bindings made meanwhile go back to Redis, and the snapshot is rebuilt in
    /// case a change notification was missed. Health deltas were kept and go with the next sync.
    async fn resync(&self) {
        self.app.state.replay_bindings().await;
        if self.app.store().is_some() {
            if let Err(e) = crate::live::reload(&self.app).await {
                tracing::warn!(error = %e, "snapshot rebuild after the redis outage failed; the poll will retry");
            }
        }
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
                    let alive = tokio::time::timeout(Duration::from_millis(500), sink.ping::<String>()).await;
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
    if let Err(e) = crate::live::reload(app).await {
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

        let mut carry = HashMap::new();
        let mut tick = tokio::time::interval(state.settings.health_sync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_beat = Instant::now() - HEARTBEAT;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    if !state.shared_up() {
                        if !(state.probe().await && state.answered()) {
                            continue;
                        }
                        self.resync().await;
                    }
                    self.sync_health(&mut carry).await;
                    if last_beat.elapsed() >= HEARTBEAT {
                        last_beat = Instant::now();
                        if let Some(n) = state.heartbeat().await {
                            state.set_replicas(n);
                        }
                    }
                }
            }
        }
        subscriber.abort();
    }
}
