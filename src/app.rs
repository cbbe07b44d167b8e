//! What the services share: settings, the configuration snapshot the request path reads, live
//! upstream health, the model catalog, metrics, shared state (in-process or Redis), and (for the
//! admin service) secrets and the store.

use std::collections::HashSet;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};

use crate::auth::jwt::{TokenTtl, Tokens};
use crate::auth::ClientKeys;
use crate::config::{Config, ServerSettings};
use crate::metrics::Metrics;
use crate::routing::{HealthPolicy, HealthRegistry, RouteTable};
use crate::secrets::Secrets;
use crate::state::{State, StateSettings};
use crate::store::Store;
use crate::upstream::{MediaFetcher, ModelCatalog};

/// Where the items of a snapshot came from, for the admin API.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// Providers and logical models that come from the database (the rest come from the file).
    pub db_providers: HashSet<String>,
    pub db_logical: HashSet<String>,
    /// Database items hidden by a config-file item with the same id (the file wins).
    pub shadowed_providers: HashSet<String>,
    pub shadowed_logical: HashSet<String>,
}

/// A consistent view of keys and routes; swapped whole when the configuration changes, so a request
/// never sees half an update and never touches a database.
pub struct Snapshot {
    pub clients: ClientKeys,
    pub routes: RouteTable,
    pub sources: Sources,
}

pub struct App {
    pub settings: ServerSettings,
    /// The configuration file as loaded; the database's items are merged into it on every rebuild.
    pub config: Config,
    /// Browser-like headers for upstream requests (`MASK_AS_BROWSER`).
    pub mask_headers: Vec<(HeaderName, HeaderValue)>,
    snapshot: ArcSwap<Snapshot>,
    pub health: HealthRegistry,
    pub catalog: ModelCatalog,
    pub metrics: Metrics,
    pub secrets: Arc<Secrets>,
    pub tokens: Tokens,
    /// Rate limits, session bindings and context, shared model lists and health exchange.
    pub state: State,
    /// Set once the store service has connected and migrated.
    store: OnceLock<Store>,
    /// The `config_version` the current snapshot was built from.
    pub loaded_version: AtomicI64,
    /// A saved admin write whose change marker could not be bumped yet (the database went away).
    pub unannounced: std::sync::atomic::AtomicBool,
    /// Serialises snapshot rebuilds.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Wakes discovery when providers change, so new ones are resolved and listed at once.
    pub topology_changed: tokio::sync::Notify,
    /// The same change, for the loop that resolves the providers' hosts (a new provider needs its
    /// addresses whatever model list is being read).
    pub hosts_changed: tokio::sync::Notify,
    /// Fetches the images a Gemini upstream cannot fetch itself.
    pub media: MediaFetcher,
}

const DEFAULT_BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

impl App {
    pub fn new(
        config: &Config,
        secrets: Arc<Secrets>,
        ttl: TokenTtl,
        state: StateSettings,
    ) -> Result<Arc<Self>, String> {
        let s = &config.server;
        let health = HealthRegistry::new(HealthPolicy {
            default_cooldown: Duration::from_secs(s.default_cooldown_s),
            failure_threshold: s.circuit_failure_threshold.max(1),
            open_for: Duration::from_secs(s.circuit_open_s.max(1)),
        });
        let routes = RouteTable::build(config, &health)?;
        let clients = ClientKeys::new(secrets.client_mac().clone(), &config.clients);
        let catalog = ModelCatalog::default();
        catalog.rebuild(routes.providers(), routes.logical_ids());
        let mut mask_headers = Vec::new();
        if config.mask.as_browser {
            let ua = config.mask.user_agent.as_deref().unwrap_or(DEFAULT_BROWSER_UA);
            let pairs = [
                (http::header::USER_AGENT, Some(ua)),
                (http::header::ORIGIN, config.mask.origin.as_deref()),
                (http::header::REFERER, config.mask.referer.as_deref()),
            ];
            for (name, value) in pairs {
                if let Some(v) = value {
                    let v =
                        HeaderValue::from_str(v).map_err(|_| format!("MASK value for {name} is not a valid header"))?;
                    mask_headers.push((name, v));
                }
            }
        }
        let metrics = Metrics::new();
        let state = State::new(state, metrics.state_errors.clone());
        let media = MediaFetcher::new(config.server.fetch_private_media, metrics.media.clone())?;
        Ok(Arc::new(Self {
            settings: s.clone(),
            config: config.clone(),
            mask_headers,
            snapshot: ArcSwap::from_pointee(Snapshot {
                clients,
                routes,
                sources: Sources::default(),
            }),
            health,
            catalog,
            metrics,
            tokens: Tokens::new(secrets.jwt_key(), ttl),
            secrets,
            state,
            store: OnceLock::new(),
            loaded_version: AtomicI64::new(-1),
            unannounced: std::sync::atomic::AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            topology_changed: tokio::sync::Notify::new(),
            hosts_changed: tokio::sync::Notify::new(),
            media,
        }))
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Installs a new snapshot. Resolved provider addresses carry over, so a provider whose
    /// endpoint did not change keeps serving without waiting for DNS; so does its keys' state
    /// (refused keys resting, rate budgets spent).
    pub fn swap(&self, next: Snapshot) {
        let prev = self.snapshot();
        // Discovery is woken only for a provider that is new or listed otherwise: most changes
        // (a client key, a logical model) leave every model list as it is.
        let mut relist = false;
        // A provider new (or made again under its old id), or listed by another server or at
        // another path: the list discovered for its id before says nothing of it.
        let mut stale = Vec::new();
        for p in next.routes.providers() {
            relist |= prev.routes.provider(&p.id).is_none_or(|old| !p.listed_as(old));
            if prev.routes.provider(&p.id).is_none_or(|old| !p.lists_where(old)) {
                stale.push(p.id.clone());
            }
            if let Some(old) = prev.routes.provider(&p.id).filter(|old| !Arc::ptr_eq(p, old)) {
                if !p.asked_as_with_keys(old) {
                    self.health.reset_provider(&p.id);
                }
                p.carry_key_state(old);
                if old.endpoint.host == p.endpoint.host && old.endpoint.port == p.endpoint.port {
                    if let Some(addrs) = old.addrs() {
                        p.set_addrs(addrs);
                    }
                }
            }
        }
        // Token series of removed keys are pruned at scrape time (`admin`): a request still on
        // the old snapshot may label one after the swap.
        self.snapshot.store(Arc::new(next));
        self.metrics.config_reloads.with_label_values(&["applied"]).inc();
        self.catalog.forget(&stale);
        self.rebuild_catalog();
        if relist {
            self.topology_changed.notify_one();
            self.hosts_changed.notify_one();
        }
    }

    /// Installs new client keys with the routes as they are (the database's routes were rejected,
    /// but a key disabled or deleted must still stop working).
    pub fn swap_clients(&self, clients: ClientKeys) {
        let prev = self.snapshot();
        self.snapshot.store(Arc::new(Snapshot {
            clients,
            routes: prev.routes.clone(),
            sources: prev.sources.clone(),
        }));
    }

    /// Rebuilds the model index after discovery or a configuration change.
    pub fn rebuild_catalog(&self) {
        let snap = self.snapshot();
        self.catalog.rebuild(snap.routes.providers(), snap.routes.logical_ids());
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.get()
    }

    pub fn set_store(&self, store: Store) {
        let _ = self.store.set(store);
    }
}
