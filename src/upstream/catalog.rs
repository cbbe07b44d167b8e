//! Which provider serves which model: static lists from the config plus lists discovered from the
//! providers, and the aggregated OpenAI-style `/models` listing built from them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::json;

use super::Provider;
use crate::formats::WireFormat;

#[derive(Default)]
struct Index {
    /// model id -> ids of the providers that list it.
    providers_by_model: HashMap<String, Vec<Arc<str>>>,
    /// Every listed id with its owner, sorted by id.
    listed: Vec<(String, String)>,
    /// The `/models` response body, ready to send.
    listing: Bytes,
}

pub struct ModelCatalog {
    discovered: ArcSwap<HashMap<Arc<str>, Arc<Vec<String>>>>,
    index: ArcSwap<Index>,
}

impl Default for ModelCatalog {
    fn default() -> Self {
        Self {
            discovered: ArcSwap::from_pointee(HashMap::new()),
            index: ArcSwap::from_pointee(Index::default()),
        }
    }
}

/// Which catalog something was read from: equal only for the same one (each rebuild makes a new
/// catalog; the one held here stays alive, so its address cannot be reused by another).
#[derive(Clone)]
pub struct CatalogVersion(Arc<Index>);

impl CatalogVersion {
    pub fn same(&self, other: &CatalogVersion) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl ModelCatalog {
    /// The catalog as it is now (see [CatalogVersion]).
    pub fn version(&self) -> CatalogVersion {
        CatalogVersion(self.index.load_full())
    }

    /// Providers whose model list contains `model`, in configuration order.
    pub fn providers_for(&self, model: &str) -> Vec<Arc<str>> {
        self.index
            .load()
            .providers_by_model
            .get(model)
            .cloned()
            .unwrap_or_default()
    }

    /// The aggregated `/models` body.
    pub fn listing(&self) -> Bytes {
        self.index.load().listing.clone()
    }

    /// The `/models` body with only the ids `keep` accepts (for a key limited to some providers).
    pub fn listing_where(&self, keep: impl Fn(&str) -> bool) -> Bytes {
        listing_body(self.index.load().listed.iter().filter(|(id, _)| keep(id)))
    }

    /// The models a provider offers: its static list, else the discovered one.
    pub fn models_of(&self, provider: &Provider) -> Option<Arc<Vec<String>>> {
        let list = match &provider.static_models {
            Some(list) => Arc::new(list.clone()),
            None => self.discovered.load().get(&provider.id).cloned()?,
        };
        if provider.hidden_models.is_empty() {
            return Some(list);
        }
        Some(Arc::new(
            list.iter()
                .filter(|m| !provider.hidden_models.contains(*m))
                .cloned()
                .collect(),
        ))
    }

    /// Whether the provider's models are known (a static list, or a discovered one that names
    /// any): one still being discovered, or whose discovery failed, is not known to lack a model.
    pub fn knows_models_of(&self, provider: &Provider) -> bool {
        match &provider.static_models {
            Some(list) => !list.is_empty(),
            None => self.discovered.load().get(&provider.id).is_some_and(|l| !l.is_empty()),
        }
    }

    /// Drops what was discovered for these providers (see `App::swap`).
    pub fn forget(&self, providers: &[Arc<str>]) {
        if !providers.iter().any(|p| self.discovered.load().contains_key(p)) {
            return;
        }
        self.discovered.rcu(|current| {
            let mut map = HashMap::clone(current);
            map.retain(|id, _| !providers.contains(id));
            map
        });
    }

    pub fn set_discovered(&self, provider: &Arc<str>, models: Vec<String>) {
        let models = Arc::new(models);
        self.discovered.rcu(|current| {
            let mut map = HashMap::clone(current);
            map.insert(provider.clone(), models.clone());
            map
        });
    }

    /// Rebuilds the model index and the listing from the current providers and logical models.
    pub fn rebuild<'a>(&self, providers: &[Arc<Provider>], logical_models: impl Iterator<Item = &'a str>) {
        let discovered = self.discovered.load();
        let mut providers_by_model: HashMap<String, Vec<Arc<str>>> = HashMap::new();
        // BTreeMap: a stable, sorted listing; first provider to list a model owns it.
        let mut listed: BTreeMap<String, String> = BTreeMap::new();
        for p in providers {
            let models = match &p.static_models {
                Some(list) => list.as_slice(),
                None => discovered.get(&p.id).map_or(&[][..], |l| l.as_slice()),
            };
            for m in models.iter().filter(|m| !p.hidden_models.contains(*m)) {
                // A model listed twice (in the file, or by a server that repeats a page) is still
                // one candidate: twice would double its weight and make it its own "next" one.
                let serving = providers_by_model.entry(m.clone()).or_default();
                if !serving.contains(&p.id) {
                    serving.push(p.id.clone());
                }
                listed.entry(m.clone()).or_insert_with(|| p.id.to_string());
            }
        }
        for p in providers {
            for (alias, _) in &p.aliases {
                listed.entry(alias.clone()).or_insert_with(|| p.id.to_string());
            }
        }
        for id in logical_models {
            listed.insert(id.to_string(), "apiproxy".to_string());
        }
        let listed: Vec<(String, String)> = listed.into_iter().collect();
        let listing = listing_body(listed.iter());
        self.index.store(Arc::new(Index {
            providers_by_model,
            listed,
            listing,
        }));
    }
}

/// An OpenAI-style `/models` body of `(id, owner)` entries.
fn listing_body<'a>(entries: impl Iterator<Item = &'a (String, String)>) -> Bytes {
    let data: Vec<_> = entries
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// An OpenAI-style `/models` body (`listing_body`) in another API's shape: Anthropic's
/// (`type: "model"`, `display_name`, `created_at`, paging fields) or Gemini's (`models[].name` as
/// `models/{id}`, the methods a gateway model takes).
pub fn listing_as(openai: &Bytes, format: WireFormat) -> Bytes {
    let v: serde_json::Value = serde_json::from_slice(openai).unwrap_or_default();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .map(|d| d.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    let body = match format {
        WireFormat::Anthropic => {
            let data: Vec<_> = ids
                .iter()
                .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"}))
                .collect();
            json!({"data": data, "has_more": false, "first_id": ids.first(), "last_id": ids.last()})
        }
        WireFormat::Gemini => {
            let models: Vec<_> = ids
                .iter()
                .map(|id| {
                    json!({"name": format!("models/{id}"), "displayName": id,
                           "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]})
                })
                .collect();
            json!({ "models": models })
        }
        WireFormat::OpenAiChat | WireFormat::OpenAiResponses => return openai.clone(),
    };
    Bytes::from(body.to_string())
}

/// Parses a provider's model list: OpenAI (`data[].id`), Anthropic (`data[].id`) and Gemini
/// (`models[].name`, `models/` prefix dropped) shapes.
pub fn parse_model_list(body: &[u8]) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let items = v.get("data").or_else(|| v.get("models"))?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|m| {
                let id = m.get("id").or_else(|| m.get("name"))?.as_str()?;
                Some(id.strip_prefix("models/").unwrap_or(id).to_string())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_given_in_each_api_s_shape() {
        let openai = listing_body(
            [
                ("claude-x".to_string(), "p".to_string()),
                ("gem-y".to_string(), "q".to_string()),
            ]
            .iter(),
        );
        let a: serde_json::Value = serde_json::from_slice(&listing_as(&openai, WireFormat::Anthropic)).unwrap();
        assert_eq!(
            a["data"][0],
            json!({"type": "model", "id": "claude-x", "display_name": "claude-x", "created_at": "1970-01-01T00:00:00Z"})
        );
        assert_eq!(
            (a["has_more"].as_bool(), a["last_id"].as_str()),
            (Some(false), Some("gem-y"))
        );
        let g: serde_json::Value = serde_json::from_slice(&listing_as(&openai, WireFormat::Gemini)).unwrap();
        assert_eq!(g["models"][1]["name"], "models/gem-y");
        assert_eq!(
            parse_model_list(&listing_as(&openai, WireFormat::Gemini)).unwrap(),
            ["claude-x", "gem-y"]
        );
        assert_eq!(listing_as(&openai, WireFormat::OpenAiChat), openai);
    }

    #[test]
    fn parses_list_shapes() {
        assert_eq!(
            parse_model_list(br#"{"object":"list","data":[{"id":"a"},{"id":"b"}]}"#).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            parse_model_list(br#"{"models":[{"name":"models/gemini-pro"}]}"#).unwrap(),
            vec!["gemini-pro"]
        );
        assert!(parse_model_list(b"not json").is_none());
    }
}
