//! From a requested model name to the upstreams that may serve it: logical models, `provider/model`
//! and zero-config routing over the providers whose model lists contain the name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::health::{HealthRegistry, UpstreamHealth};
use crate::config::{ApiStyle, Config};
use crate::upstream::{CatalogVersion, ModelCatalog, Provider, ProviderExtras};

/// One way to serve a request: a provider and the model name it knows.
#[derive(Clone)]
pub struct Candidate {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
    pub weight: f64,
    /// Tier: 0 first; a higher tier only when every candidate above has failed or is out of rotation.
    pub priority: u32,
    pub health: Arc<UpstreamHealth>,
}

/// How a model name was resolved; also a bounded metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Logical,
    ProviderPrefixed,
    ZeroConfig,
}

/// The candidates for one request, sorted by tier.
#[derive(Clone)]
pub struct RoutePlan {
    /// The name the client asked for (a known logical model or model id, never arbitrary input).
    pub label: Arc<str>,
    pub kind: RouteKind,
    pub candidates: Arc<[Candidate]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("The model `{0}` does not exist or no provider serves it")]
    UnknownModel(String),
    #[error("This API key may not use any provider that serves `{0}`")]
    NotAllowed(String),
}

impl RoutePlan {
    /// The plan limited to the providers a client key may use (candidates keep their order).
    pub fn restricted_to(self, allowed: &HashSet<String>) -> Result<RoutePlan, RouteError> {
        let label = self.label.to_string();
        self.filtered(|c| allowed.contains(&*c.provider.id))
            .ok_or(RouteError::NotAllowed(label))
    }

    /// The plan with only the candidates `keep` takes, in their order; `None` when none is left.
    pub fn filtered(self, keep: impl Fn(&Candidate) -> bool) -> Option<RoutePlan> {
        if self.candidates.iter().all(&keep) {
            return Some(self);
        }
        let kept: Vec<Candidate> = self.candidates.iter().filter(|c| keep(c)).cloned().collect();
        (!kept.is_empty()).then(|| RoutePlan {
            candidates: kept.into(),
            ..self
        })
    }

    /// The plan with only the candidate `upstream` (`provider/model`, as bindings name them) names,
    /// in whatever tier; as it was when none is.
    pub fn pinned_to(self, upstream: &str) -> RoutePlan {
        let Some((provider, model)) = upstream.split_once('/') else {
            return self;
        };
        let whole = self.clone();
        self.filtered(|c| &*c.provider.id == provider && &*c.model == model)
            .unwrap_or(whole)
    }

    /// The plan with each candidate's health detached: chosen by the upstreams' health as it
    /// stands, but judging none of them (see `UpstreamHealth::detached`).
    pub fn with_detached_health(self) -> RoutePlan {
        let candidates: Vec<Candidate> = self
            .candidates
            .iter()
            .map(|c| Candidate {
                health: Arc::new(c.health.detached()),
                ..c.clone()
            })
            .collect();
        RoutePlan {
            candidates: candidates.into(),
            ..self
        }
    }
}

#[derive(Clone)]
pub struct RouteTable {
    providers: Vec<Arc<Provider>>,
    by_id: HashMap<Arc<str>, Arc<Provider>>,
    logical: HashMap<String, RoutePlan>,
    zero_config: ZeroConfigPlans,
}

/// Most zero-config plans kept (only models some provider lists are kept at all).
const MAX_ZERO_CONFIG_PLANS: usize = 10_000;

/// Zero-config plans already made, for the catalog they were made from: a request for a listed
/// model would otherwise look its providers and their health up and build the same plan again.
/// A new catalog (discovery) or a new table (a configuration change) starts afresh; the health a
/// plan holds is the registry's own, which never drops an entry.
#[derive(Default)]
struct ZeroConfigPlans(parking_lot::RwLock<PlansOf>);

/// Plans by model name, and the catalog they were made from.
type PlansOf = (Option<CatalogVersion>, HashMap<Box<str>, RoutePlan>);

impl Clone for ZeroConfigPlans {
    /// A copy of a table starts with no plans (they would be the same, made again on demand).
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl ZeroConfigPlans {
    fn get(&self, model: &str, version: &CatalogVersion) -> Option<RoutePlan> {
        let kept = self.0.read();
        match &kept.0 {
            Some(made_from) if made_from.same(version) => kept.1.get(model).cloned(),
            _ => None,
        }
    }

    /// Keeps `plan`, made from the catalog `version`, unless the catalog has changed since.
    fn keep(&self, model: &str, version: CatalogVersion, now: &CatalogVersion, plan: &RoutePlan) {
        if !version.same(now) {
            return;
        }
        let mut kept = self.0.write();
        if !kept.0.as_ref().is_some_and(|v| v.same(&version)) {
            kept.1.clear();
            kept.0 = Some(version);
        }
        if kept.1.len() < MAX_ZERO_CONFIG_PLANS {
            kept.1.insert(model.into(), plan.clone());
        }
    }
}

impl RouteTable {
    pub fn build(config: &Config, health: &HealthRegistry) -> Result<Self, String> {
        Self::build_with(config, &HashMap::new(), health)
    }

    /// As `build`, with what the database adds to some providers (by id).
    pub fn build_with(
        config: &Config,
        extras: &HashMap<String, ProviderExtras>,
        health: &HealthRegistry,
    ) -> Result<Self, String> {
        let none = ProviderExtras::default();
        let providers = config
            .providers
            .iter()
            .map(|p| {
                Provider::build(p, extras.get(&p.id).unwrap_or(&none))
                    .map(Arc::new)
                    .map_err(|e| format!("provider {}: {e}", p.id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let by_id: HashMap<_, _> = providers.iter().map(|p| (p.id.clone(), p.clone())).collect();
        let mut logical = HashMap::new();
        for lm in &config.logical_models {
            let mut candidates = lm
                .upstreams
                .iter()
                .map(|u| {
                    let provider = by_id
                        .get(u.provider.as_str())
                        .ok_or_else(|| format!("logical model {}: unknown provider {}", lm.id, u.provider))?
                        .clone();
                    let model: Arc<str> = u.model.as_str().into();
                    Ok(Candidate {
                        health: health.get(&provider.id, &model),
                        provider,
                        model,
                        weight: u.weight,
                        priority: u.priority,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            candidates.sort_by_key(|c| c.priority);
            logical.insert(
                lm.id.clone(),
                RoutePlan {
                    label: lm.id.as_str().into(),
                    kind: RouteKind::Logical,
                    candidates: candidates.into(),
                },
            );
        }
        // Model aliases behave like logical models over every provider that declares them; a real
        // logical model of the same name wins.
        let mut aliased: HashMap<&str, Vec<Candidate>> = HashMap::new();
        for p in &providers {
            for (alias, model) in &p.aliases {
                let model: Arc<str> = model.as_str().into();
                aliased.entry(alias.as_str()).or_default().push(Candidate {
                    health: health.get(&p.id, &model),
                    provider: p.clone(),
                    model,
                    weight: p.weight,
                    priority: 0,
                });
            }
        }
        for (alias, candidates) in aliased {
            logical.entry(alias.to_string()).or_insert_with(|| RoutePlan {
                label: alias.into(),
                kind: RouteKind::Logical,
                candidates: candidates.into(),
            });
        }
        Ok(Self {
            providers,
            by_id,
            logical,
            zero_config: ZeroConfigPlans::default(),
        })
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    pub fn provider(&self, id: &str) -> Option<&Arc<Provider>> {
        self.by_id.get(id)
    }

    pub fn logical_ids(&self) -> impl Iterator<Item = &str> {
        self.logical.keys().map(String::as_str)
    }

    /// A logical model's (or alias's) plan.
    pub fn logical(&self, id: &str) -> Option<&RoutePlan> {
        self.logical.get(id)
    }

    /// The `/models` body a key limited to `allowed` providers sees: the listed models it could
    /// route somewhere, decided by the same plan a request for each would get.
    pub fn listing_for(&self, allowed: &HashSet<String>, catalog: &ModelCatalog, health: &HealthRegistry) -> Bytes {
        catalog.listing_where(|id| {
            self.plan(id, catalog, health)
                .and_then(|plan| plan.restricted_to(allowed))
                .is_ok()
        })
    }

    /// Resolves `model`: a logical model first, then `provider/model`, then zero-config. A name
    /// that some provider lists whole (OpenRouter's `anthropic/claude-sonnet-4.5`) goes to those
    /// providers when the provider its prefix names is known not to serve the rest (its model
    /// list lacks it); otherwise the prefix pins it (its list names the rest, or is not known:
    /// still being discovered, or discovery failed).
    pub fn plan(&self, model: &str, catalog: &ModelCatalog, health: &HealthRegistry) -> Result<RoutePlan, RouteError> {
        if let Some(plan) = self.logical.get(model) {
            return Ok(plan.clone());
        }
        // A name without `/` can only be routed zero-config: its plan depends on the catalog
        // alone (and this table), so the one made before for the same catalog is it.
        let version = (!model.contains('/')).then(|| catalog.version());
        if let Some(plan) = version.as_ref().and_then(|v| self.zero_config.get(model, v)) {
            return Ok(plan);
        }
        let providers = catalog.providers_for(model);
        if let Some((provider_id, physical)) = model.split_once('/') {
            if let Some(provider) = self.by_id.get(provider_id) {
                // Models the provider does not list have health entries of their own only up to a
                // bound (`get_unlisted`), so arbitrary client strings cannot grow the registry.
                let listed = catalog.providers_for(physical).contains(&provider.id);
                let pinned = listed || providers.is_empty() || !catalog.knows_models_of(provider);
                if !physical.is_empty() && pinned {
                    // A Gemini upstream takes the model in its URL: a name that is no path segment
                    // (`x y`, `m:countTokens?`) would change what is called, so it names no model.
                    if provider.style == ApiStyle::Gemini && !fits_a_gemini_path(physical) {
                        return Err(RouteError::UnknownModel(model.to_string()));
                    }
                    return Ok(self.single(provider, physical, listed, model, health));
                }
            }
        }
        if providers.is_empty() {
            return Err(RouteError::UnknownModel(model.to_string()));
        }
        let model_arc: Arc<str> = model.into();
        let candidates: Vec<_> = providers
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .map(|p| Candidate {
                health: health.get(&p.id, &model_arc),
                provider: p.clone(),
                model: model_arc.clone(),
                weight: p.weight,
                priority: 0,
            })
            .collect();
        if candidates.is_empty() {
            return Err(RouteError::UnknownModel(model.to_string()));
        }
        let plan = RoutePlan {
            label: model_arc,
            kind: RouteKind::ZeroConfig,
            candidates: candidates.into(),
        };
        if let Some(version) = version {
            self.zero_config.keep(model, version, &catalog.version(), &plan);
        }
        Ok(plan)
    }

    fn single(&self, p: &Arc<Provider>, model: &str, listed: bool, label: &str, health: &HealthRegistry) -> RoutePlan {
        let model: Arc<str> = model.into();
        let health = match listed {
            true => health.get(&p.id, &model),
            false => health.get_unlisted(&p.id, &model),
        };
        RoutePlan {
            label: label.into(),
            kind: RouteKind::ProviderPrefixed,
            candidates: vec![Candidate {
                health,
                provider: p.clone(),
                model,
                weight: p.weight,
                priority: 0,
            }]
            .into(),
        }
    }
}

/// A model name that can stand in a Gemini URL as it is (`models/` prefix allowed).
fn fits_a_gemini_path(name: &str) -> bool {
    let name = name.strip_prefix("models/").unwrap_or(name);
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::health::HealthPolicy;
    use std::time::Duration;

    fn setup() -> (RouteTable, ModelCatalog, HealthRegistry) {
        setup_with(
            r#"
providers:
  - {id: a, base_url: "http://127.0.0.1:1", models: [m1, shared]}
  # Listed twice: still one candidate.
  - {id: b, base_url: "http://127.0.0.1:2", models: [shared, shared]}
  - {id: or, base_url: "http://127.0.0.1:3", models: ["a/remote", "a/m1"]}
logical_models:
  - id: fast
    upstreams:
      - {provider: b, model: shared, priority: 1}
      - {provider: a, model: m1, weight: 2}
"#,
        )
    }

    /// A table, its catalog and health registry for this configuration.
    fn setup_with(yaml: &str) -> (RouteTable, ModelCatalog, HealthRegistry) {
        let config: Config = serde_yaml::from_str(yaml).unwrap();
        let health = HealthRegistry::new(HealthPolicy {
            default_cooldown: Duration::from_secs(1),
            failure_threshold: 3,
            open_for: Duration::from_secs(1),
        });
        let table = RouteTable::build(&config, &health).unwrap();
        let catalog = ModelCatalog::default();
        catalog.rebuild(table.providers(), table.logical_ids());
        (table, catalog, health)
    }

    /// A zero-config plan is made once for a catalog and made again when the catalog changes
    /// (a provider discovers the model, or stops listing it).
    #[test]
    fn a_zero_config_plan_follows_the_catalog() {
        let (t, c, health) = setup_with(
            r#"
providers:
  - {id: a, base_url: "http://127.0.0.1:1", models: [m]}
  - {id: d, base_url: "http://127.0.0.1:2"}
"#,
        );
        let ids = |plan: RoutePlan| {
            plan.candidates
                .iter()
                .map(|c| c.provider.id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(t.plan("m", &c, &health).unwrap()), ["a"]);
        let first = t.plan("m", &c, &health).unwrap();
        let again = t.plan("m", &c, &health).unwrap();
        assert!(Arc::ptr_eq(&first.candidates, &again.candidates), "made once");
        assert!(t.plan("fresh", &c, &health).is_err());
        let d: Arc<str> = "d".into();
        c.set_discovered(&d, vec!["m".into(), "fresh".into()]);
        c.rebuild(t.providers(), t.logical_ids());
        assert_eq!(ids(t.plan("m", &c, &health).unwrap()), ["a", "d"]);
        assert_eq!(ids(t.plan("fresh", &c, &health).unwrap()), ["d"]);
        c.set_discovered(&d, vec![]);
        c.rebuild(t.providers(), t.logical_ids());
        assert_eq!(ids(t.plan("m", &c, &health).unwrap()), ["a"]);
        assert!(t.plan("fresh", &c, &health).is_err());
    }

    #[test]
    fn resolves_each_kind() {
        let (t, c, h) = setup();
        let p = t.plan("fast", &c, &h).unwrap();
        assert_eq!(p.kind, RouteKind::Logical);
        assert_eq!(
            p.candidates.iter().map(|c| c.priority).collect::<Vec<_>>(),
            vec![0, 1],
            "sorted by tier"
        );

        let p = t.plan("b/anything-goes", &c, &h).unwrap();
        assert_eq!(p.kind, RouteKind::ProviderPrefixed);
        assert_eq!(
            (&*p.candidates[0].provider.id, &*p.candidates[0].model),
            ("b", "anything-goes")
        );

        let p = t.plan("shared", &c, &h).unwrap();
        assert_eq!(p.kind, RouteKind::ZeroConfig);
        assert_eq!(p.candidates.len(), 2);

        assert_eq!(
            t.plan("nope", &c, &h).err(),
            Some(RouteError::UnknownModel("nope".into()))
        );
        assert!(t.plan("zz/m1", &c, &h).is_err());
    }

    /// Names a provider does not list (Azure deployments) are judged each on its own, up to a
    /// bound past which the rest share one entry.
    #[test]
    fn unlisted_names_have_health_of_their_own_up_to_a_bound() {
        let (t, c, h) = setup();
        let health = |model: &str| t.plan(model, &c, &h).unwrap().candidates[0].health.clone();
        assert!(!Arc::ptr_eq(&health("b/dep-a"), &health("b/dep-b")));
        assert!(Arc::ptr_eq(&health("b/dep-a"), &health("b/dep-a")));
        for i in 0..40 {
            health(&format!("b/more-{i}"));
        }
        assert!(
            Arc::ptr_eq(&health("b/past-1"), &health("b/past-2")),
            "past the bound, one entry"
        );
        assert!(
            !Arc::ptr_eq(&health("b/dep-a"), &health("b/past-1")),
            "earlier names keep theirs"
        );
        // Another provider's names are counted apart.
        assert!(!Arc::ptr_eq(&health("a/dep-a"), &health("a/dep-b")));
    }

    /// OpenRouter-style ids (`vendor/model`) whose prefix is also a provider's id.
    #[test]
    fn a_name_listed_whole_goes_where_it_is_listed() {
        let (t, c, h) = setup();
        let p = t.plan("a/remote", &c, &h).unwrap();
        assert_eq!(
            p.kind,
            RouteKind::ZeroConfig,
            "a does not list `remote`; or lists `a/remote`"
        );
        assert_eq!(
            (&*p.candidates[0].provider.id, &*p.candidates[0].model),
            ("or", "a/remote")
        );
        let only_or: HashSet<String> = ["or".to_string()].into();
        assert!(p.restricted_to(&only_or).is_ok(), "a key limited to `or` may use it");

        let p = t.plan("a/m1", &c, &h).unwrap();
        assert_eq!(p.kind, RouteKind::ProviderPrefixed, "a lists m1: the prefix pins it");
        assert_eq!((&*p.candidates[0].provider.id, &*p.candidates[0].model), ("a", "m1"));

        let p = t.plan("a/unlisted", &c, &h).unwrap();
        assert_eq!(
            p.kind,
            RouteKind::ProviderPrefixed,
            "listed nowhere: the prefix decides"
        );

        // A provider whose models are not known (discovery pending or failed) is not known to
        // lack one: its prefix pins the name.
        let config: Config = serde_yaml::from_str(
            r#"
providers:
  - {id: a, base_url: "http://127.0.0.1:1"}
  - {id: or, base_url: "http://127.0.0.1:3", models: ["a/remote"]}
"#,
        )
        .unwrap();
        let t = RouteTable::build(&config, &h).unwrap();
        c.rebuild(t.providers(), t.logical_ids());
        let p = t.plan("a/remote", &c, &h).unwrap();
        assert_eq!(p.kind, RouteKind::ProviderPrefixed);
        assert_eq!(&*p.candidates[0].provider.id, "a");
    }

    #[test]
    fn restriction_filters_candidates() {
        let (t, c, h) = setup();
        let only_a: HashSet<String> = ["a".to_string()].into();
        let p = t.plan("fast", &c, &h).unwrap().restricted_to(&only_a).unwrap();
        assert_eq!(p.candidates.len(), 1);
        assert_eq!(&*p.candidates[0].provider.id, "a");
        let none: HashSet<String> = ["zz".to_string()].into();
        assert_eq!(
            t.plan("fast", &c, &h).unwrap().restricted_to(&none).err(),
            Some(RouteError::NotAllowed("fast".into()))
        );
    }
}
