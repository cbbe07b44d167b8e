//! What the services share: settings, the configuration snapshot the request path reads, live
//! upstream health, the model catalog and metrics.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};

use crate::auth::ClientKeys;
use crate::config::{Config, ServerSettings};
use crate::metrics::Metrics;
use crate::routing::{HealthPolicy, HealthRegistry, RouteTable};
use crate::upstream::ModelCatalog;

/// A consistent view of keys and routes; swapped whole when the configuration changes, so a request
/// never sees half an update and never touches a database.
pub struct Snapshot {
    pub clients: ClientKeys,
    pub routes: RouteTable,
}

pub struct App {
    pub settings: ServerSettings,
    /// Browser-like headers for upstream requests (`MASK_AS_BROWSER`).
    pub mask_headers: Vec<(HeaderName, HeaderValue)>,
    snapshot: ArcSwap<Snapshot>,
    pub health: HealthRegistry,
    pub catalog: ModelCatalog,
    pub metrics: Metrics,
}

const DEFAULT_BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

impl App {
    pub fn new(config: &Config) -> Result<Arc<Self>, String> {
        let s = &config.server;
        let health = HealthRegistry::new(HealthPolicy {
            default_cooldown: Duration::from_secs(s.default_cooldown_s),
            failure_threshold: s.circuit_failure_threshold.max(1),
            open_for: Duration::from_secs(s.circuit_open_s.max(1)),
        });
        let routes = RouteTable::build(config, &health)?;
        let clients = ClientKeys::new(ClientKeys::random_mac_key(), &config.clients);
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
        Ok(Arc::new(Self {
            settings: s.clone(),
            mask_headers,
            snapshot: ArcSwap::from_pointee(Snapshot { clients, routes }),
            health,
            catalog,
            metrics: Metrics::new(),
        }))
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Rebuilds the model index after discovery or a configuration change.
    pub fn rebuild_catalog(&self) {
        let snap = self.snapshot();
        self.catalog.rebuild(snap.routes.providers(), snap.routes.logical_ids());
    }
}
