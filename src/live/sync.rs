//! The store service: opens the database inside Pingora's runtime, builds the first snapshot before
//! the proxy accepts traffic, then polls the change marker every second so replicas sharing a
//! database converge. Admin writes call `commit`, which bumps the marker and rebuilds at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;

use super::merge::{merge, DbState};
use crate::app::{App, Snapshot};
use crate::auth::ClientKeys;
use crate::routing::RouteTable;
use crate::store::{DatabaseUrl, Store, StoreError};

const POLL: Duration = Duration::from_secs(1);

/// Rebuilds the snapshot from the config file and the database, and swaps it in.
pub async fn reload(app: &App) -> Result<(), StoreError> {
    rebuild(app, false).await
}

/// Rebuilds the snapshot when the change marker moved since the last rebuild: a replica's own
/// announcement, or one it has already polled, rebuilds nothing again.
pub async fn reload_if_changed(app: &App) -> Result<(), StoreError> {
    rebuild(app, true).await
}

/// A rebuild the database stopped is counted, so that replicas serving a configuration they cannot
/// refresh show it on `/metrics`, not only in their logs.
async fn rebuild(app: &App, only_if_changed: bool) -> Result<(), StoreError> {
    let result = load_and_swap(app, only_if_changed).await;
    if result.is_err() {
        count_failed_rebuild(app);
    }
    result
}

fn count_failed_rebuild(app: &App) {
    app.metrics.config_reloads.with_label_values(&["failed"]).inc();
    app.metrics.state_errors.with_label_values(&["database"]).inc();
}

async fn load_and_swap(app: &App, only_if_changed: bool) -> Result<(), StoreError> {
    let store = app
        .store()
        .ok_or_else(|| StoreError::Pool("the store is not open yet".into()))?;
    let _guard = app.reload_lock.lock().await;
    // Read the marker first: a write landing while we load bumps it again and triggers another pass.
    // (Read under the lock: a rebuild that ran while this one waited may have loaded it already.)
    let version = store.config_version().await?;
    if only_if_changed && version == app.loaded_version.load(Ordering::Relaxed) {
        return Ok(());
    }
    let db = DbState {
        keys: store.usable_api_keys().await?,
        providers: store.provider_bundles().await?,
        logical: store.logical_bundles().await?,
    };
    let merged = merge(&app.config, &db, &app.secrets);
    // Client keys are taken whatever becomes of the routes: a key disabled or deleted in a write
    // whose routes are rejected must still stop working.
    let clients = ClientKeys::with_stored(app.secrets.client_mac().clone(), &app.config.clients, &merged.keys)
        .accepting_previous(app.secrets.previous_client_mac().cloned());
    match RouteTable::build_with(&merged.config, &merged.extras, &app.health) {
        Ok(routes) => {
            tracing::debug!(
                version,
                providers = routes.providers().len(),
                keys = clients.len(),
                "snapshot rebuilt"
            );
            app.swap(Snapshot {
                clients,
                routes,
                sources: merged.sources,
            });
        }
        Err(e) => {
            tracing::error!(error = %e, "routes from the database rejected; keeping the previous ones");
            app.metrics.config_reloads.with_label_values(&["rejected"]).inc();
            app.swap_clients(clients);
        }
    }
    app.loaded_version.store(version, Ordering::Relaxed);
    Ok(())
}

/// After an admin write: bump the marker (other replicas poll it), rebuild this replica now, and
/// announce the change on Redis so the others rebuild without waiting for their poll. The write
/// itself is already saved: if the database goes away right after it, the announcement is retried
/// in the background until it answers, so the change is never left unseen.
pub async fn commit(app: &App) -> Result<(), StoreError> {
    let store = app
        .store()
        .ok_or_else(|| StoreError::Pool("the store is not open yet".into()))?;
    if let Err(e) = store.bump_config_version().await {
        tracing::warn!(error = %e, "change saved but not announced (database went away); the store service retries");
        app.unannounced.store(true, Ordering::Relaxed);
        return Ok(());
    }
    // Saved and announced: a failed rebuild here is retried by the poll (the marker moved). Only if
    // changed: the poll may have rebuilt from the moved marker between the bump and here, and
    // what it loaded already holds this write (saved before the bump).
    if let Err(e) = reload_if_changed(app).await {
        tracing::warn!(error = %e, "snapshot rebuild after a write failed; the poll retries");
    }
    app.state.publish_change().await;
    Ok(())
}

pub struct StoreService {
    app: Arc<App>,
    url: DatabaseUrl,
}

impl StoreService {
    pub fn new(app: Arc<App>, url: DatabaseUrl) -> Self {
        Self { app, url }
    }

    async fn open(&self) -> Result<(), StoreError> {
        let store = Store::open(&self.url).await?;
        tracing::info!(database = %self.url.redacted(), backend = store.backend(), "database ready");
        self.app.set_store(store);
        reload(&self.app).await
    }

    async fn poll(&self) {
        let Some(store) = self.app.store() else { return };
        if self.app.unannounced.load(Ordering::Relaxed) {
            if store.bump_config_version().await.is_err() {
                // Still unreadable: counted as the rebuild it stops would be.
                count_failed_rebuild(&self.app);
                return;
            }
            self.app.unannounced.store(false, Ordering::Relaxed);
            self.app.state.publish_change().await;
        }
        if let Err(e) = reload_if_changed(&self.app).await {
            tracing::warn!(error = %e, "snapshot rebuild failed; will retry");
        }
    }
}

#[async_trait]
impl BackgroundService for StoreService {
    async fn start_with_ready_notifier(&self, mut shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        if let Err(e) = self.open().await {
            // Without its database the gateway would silently refuse every minted key: stop instead.
            tracing::error!(database = %self.url.redacted(), error = %e, "cannot open the database");
            eprintln!("apiproxy: cannot open the database {}: {e}", self.url.redacted());
            std::process::exit(1);
        }
        ready.notify_ready();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.poll().await,
            }
        }
    }
}
