//! Config file + database → one configuration. On an id clash the config file wins: it is the
//! deployed, reviewed source, and the admin API refuses to create clashing items anyway; a database
//! item shadowed by a later file edit is reported as `shadowed`.

use std::collections::{HashMap, HashSet};

use super::settings::ProviderSettings;
use crate::app::Sources;
use crate::auth::StoredClientKey;
use crate::config::{ApiStyle, Config, LogicalModelConfig, ProviderConfig, ProviderType, UpstreamConfig};
use crate::secrets::Secrets;
use crate::store::models::{ApiKeyRow, UserKeyLimits};
use crate::store::{LogicalBundle, ProviderBundle};
use crate::upstream::{Provider, ProviderExtras};

/// What the database holds that the snapshot needs.
#[derive(Default)]
pub struct DbState {
    /// Usable client keys, each with its user's limits.
    pub keys: Vec<(ApiKeyRow, UserKeyLimits)>,
    pub providers: Vec<ProviderBundle>,
    pub logical: Vec<LogicalBundle>,
}

pub struct Merged {
    pub config: Config,
    pub extras: HashMap<String, ProviderExtras>,
    pub keys: Vec<StoredClientKey>,
    pub sources: Sources,
}

pub fn parse_style(s: &str) -> Option<ApiStyle> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

pub fn parse_type(s: &str) -> Option<ProviderType> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// A stored provider as a `ProviderConfig` with its keys decrypted, plus its extras.
pub fn provider_from_db(b: &ProviderBundle, secrets: &Secrets) -> Result<(ProviderConfig, ProviderExtras), String> {
    let settings = ProviderSettings::open(&b.row.settings, &b.row.id, secrets).map_err(|e| e.to_string())?;
    let mut api_keys = Vec::new();
    let mut key_qps = Vec::new();
    for k in b.keys.iter().filter(|k| !k.disabled) {
        match secrets.decrypt(&k.encrypted_key, &k.id) {
            Ok(secret) => {
                api_keys.push(secret);
                key_qps.push(k.qps_limit.and_then(|q| u32::try_from(q).ok()).filter(|q| *q > 0));
            }
            // Never the key itself: only which row could not be opened.
            Err(e) => tracing::error!(provider = %b.row.id, key_id = %k.id, error = %e, "provider key skipped"),
        }
    }
    let enabled: Vec<String> = b
        .models
        .iter()
        .filter(|m| !m.disabled)
        .map(|m| m.model.clone())
        .collect();
    let extras = ProviderExtras {
        key_qps,
        hidden_models: b
            .models
            .iter()
            .filter(|m| m.disabled)
            .map(|m| m.model.clone())
            .collect(),
        aliases: b
            .models
            .iter()
            .filter(|m| !m.disabled)
            .filter_map(|m| Some((m.alias.clone()?, m.model.clone())))
            .collect(),
    };
    let config = ProviderConfig {
        id: b.row.id.clone(),
        base_url: b.row.base_url.clone(),
        api_style: parse_style(&b.row.api_style).ok_or("unknown api_style")?,
        api_keys,
        weight: b.row.weight,
        models: (!enabled.is_empty()).then_some(enabled),
        timeouts: settings.timeouts,
        retryable_status_codes: settings.retryable_status_codes,
        headers: settings.headers,
        paths: settings.paths,
        provider_type: parse_type(&b.row.provider_type).ok_or("unknown provider_type")?,
        responses_api: settings.responses_api,
    };
    Ok((config, extras))
}

/// A stored key as the proxy enforces it: its own limits within its user's.
pub fn stored_key((row, user): &(ApiKeyRow, UserKeyLimits)) -> StoredClientKey {
    let limits = row.effective_limits(user);
    StoredClientKey {
        id: row.id.clone(),
        name: format!("{}/{}", user.username, row.name),
        tag_hex: row.key_hash.clone(),
        expires_at: row.expires_at,
        allowed_providers: limits.allowed_providers,
        rate_limit_rps: limits.rate_limit_rps,
        user_limit: user.rate_limit_rps().map(|rps| (row.user_id.clone(), rps)),
    }
}

pub fn merge(file: &Config, db: &DbState, secrets: &Secrets) -> Merged {
    let mut config = file.clone();
    let mut sources = Sources::default();
    let mut extras = HashMap::new();
    let file_providers: HashSet<&str> = file.providers.iter().map(|p| p.id.as_str()).collect();
    for b in &db.providers {
        if file_providers.contains(b.row.id.as_str()) {
            sources.shadowed_providers.insert(b.row.id.clone());
            continue;
        }
        let built = provider_from_db(b, secrets).and_then(|(pc, ex)| {
            Provider::build(&pc, &ex)?;
            Ok((pc, ex))
        });
        match built {
            Ok((pc, ex)) => {
                sources.db_providers.insert(pc.id.clone());
                extras.insert(pc.id.clone(), ex);
                config.providers.push(pc);
            }
            Err(e) => tracing::error!(provider = %b.row.id, error = %e, "stored provider skipped"),
        }
    }
    let known: HashSet<String> = config.providers.iter().map(|p| p.id.clone()).collect();
    let file_logical: HashSet<&str> = file.logical_models.iter().map(|l| l.id.as_str()).collect();
    for l in &db.logical {
        if file_logical.contains(l.row.id.as_str()) {
            sources.shadowed_logical.insert(l.row.id.clone());
            continue;
        }
        let upstreams: Vec<UpstreamConfig> = l
            .upstreams
            .iter()
            .filter(|u| known.contains(&u.provider_id))
            .map(|u| UpstreamConfig {
                provider: u.provider_id.clone(),
                model: u.model.clone(),
                weight: u.weight,
                priority: u32::try_from(u.priority).unwrap_or(0),
            })
            .collect();
        if upstreams.len() < l.upstreams.len() {
            tracing::warn!(logical_model = %l.row.id, "upstreams of unknown providers left out");
        }
        if upstreams.is_empty() {
            tracing::warn!(logical_model = %l.row.id, "logical model has no usable upstream; not routed");
            continue;
        }
        sources.db_logical.insert(l.row.id.clone());
        config.logical_models.push(LogicalModelConfig {
            id: l.row.id.clone(),
            upstreams,
        });
    }
    Merged {
        config,
        extras,
        keys: db.keys.iter().map(stored_key).collect(),
        sources,
    }
}
