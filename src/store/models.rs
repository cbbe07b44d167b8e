//! Rows as stored. Secret-bearing rows do not derive `Debug`, so they cannot end up in a log line.

use diesel::prelude::*;

use super::schema::*;

#[derive(Queryable, Selectable, Insertable, Clone)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub role: String,
    pub disabled: bool,
    pub token_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Providers every API key of this user is limited to (JSON list; `None`: no user limit).
    pub key_allowed_providers: Option<String>,
    /// Requests per second every API key of this user is limited to.
    pub key_rate_limit_rps: Option<i32>,
}

/// The limits a user's every API key obeys (see `UserRow`), and the name its keys are shown under.
#[derive(Queryable, Selectable, Clone, Debug, Default)]
#[diesel(table_name = users)]
pub struct UserKeyLimits {
    pub key_allowed_providers: Option<String>,
    pub key_rate_limit_rps: Option<i32>,
    /// The owner's username: a key is known as `username/key name` in metrics and logs, so that
    /// no user's key can pass for another's (or for a config file's client).
    pub username: String,
}

impl UserKeyLimits {
    /// The user's requests per second, across all of the user's keys.
    pub fn rate_limit_rps(&self) -> Option<u32> {
        positive_rps(self.key_rate_limit_rps)
    }
}

/// A stored limit as requests per second; none, zero or negative is no limit.
fn positive_rps(stored: Option<i32>) -> Option<u32> {
    stored.and_then(|r| u32::try_from(r).ok()).filter(|r| *r > 0)
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub email: Option<Option<String>>,
    pub display_name: Option<Option<String>>,
    pub password_hash: Option<String>,
    pub role: Option<String>,
    pub disabled: Option<bool>,
    pub updated_at: Option<i64>,
    pub key_allowed_providers: Option<Option<String>>,
    pub key_rate_limit_rps: Option<Option<i32>>,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// HMAC-SHA256 of the key (hex); the key itself is never stored.
    pub key_hash: String,
    pub prefix: String,
    pub expires_at: Option<i64>,
    pub disabled: bool,
    /// JSON array of provider ids; `None` allows every provider.
    pub allowed_providers: Option<String>,
    pub rate_limit_rps: Option<i32>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyChanges {
    pub name: Option<String>,
    pub expires_at: Option<Option<i64>>,
    pub disabled: Option<bool>,
    pub allowed_providers: Option<Option<String>>,
    pub rate_limit_rps: Option<Option<i32>>,
    pub updated_at: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = providers)]
pub struct ProviderRow {
    pub id: String,
    pub base_url: String,
    pub api_style: String,
    pub provider_type: String,
    pub weight: f64,
    /// JSON: timeouts, retryable status codes, headers, paths, static models.
    pub settings: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Queryable, Selectable, Insertable, Clone)]
#[diesel(table_name = provider_api_keys)]
pub struct ProviderKeyRow {
    pub id: String,
    pub provider_id: String,
    /// base64(nonce ‖ AEAD ciphertext), bound to `id`.
    pub encrypted_key: String,
    /// A masked form for people (`sk-…abcd`), never the key.
    pub hint: String,
    pub qps_limit: Option<i32>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = provider_api_keys)]
pub struct ProviderKeyChanges {
    pub encrypted_key: Option<String>,
    pub hint: Option<String>,
    pub qps_limit: Option<Option<i32>>,
    pub disabled: Option<bool>,
    pub updated_at: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = provider_models)]
pub struct ProviderModelRow {
    pub id: String,
    pub provider_id: String,
    pub model: String,
    pub alias: Option<String>,
    pub disabled: bool,
    /// JSON object of static metadata (context length, prices…), as given.
    pub metadata: Option<String>,
    pub created_at: i64,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = logical_models)]
pub struct LogicalModelRow {
    pub id: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug)]
#[diesel(table_name = logical_model_upstreams)]
pub struct UpstreamRow {
    pub id: String,
    pub logical_model_id: String,
    pub provider_id: String,
    pub model: String,
    pub weight: f64,
    pub priority: i32,
    pub position: i32,
}

impl UserRow {
    /// The limits every API key of this user obeys.
    pub fn key_limits(&self) -> UserKeyLimits {
        UserKeyLimits {
            key_allowed_providers: self.key_allowed_providers.clone(),
            key_rate_limit_rps: self.key_rate_limit_rps,
            username: self.username.clone(),
        }
    }
}

/// What a client key may do, as the proxy enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveLimits {
    /// Providers it may reach; `None`: all.
    pub allowed_providers: Option<Vec<String>>,
    /// Requests per second; `None`: no limit.
    pub rate_limit_rps: Option<u32>,
}

impl ApiKeyRow {
    /// The key's own limits within its user's: the providers in both lists, the lower rate.
    pub fn effective_limits(&self, user: &UserKeyLimits) -> EffectiveLimits {
        // An unreadable list allows nothing: fail closed.
        let list = |j: &Option<String>| {
            j.as_deref()
                .map(|j| serde_json::from_str::<Vec<String>>(j).unwrap_or_default())
        };
        let allowed_providers = match (list(&self.allowed_providers), list(&user.key_allowed_providers)) {
            (Some(own), Some(users)) => Some(own.into_iter().filter(|p| users.contains(p)).collect()),
            (own, users) => own.or(users),
        };
        let rate_limit_rps = match (positive_rps(self.rate_limit_rps), user.rate_limit_rps()) {
            (Some(own), Some(users)) => Some(own.min(users)),
            (own, users) => own.or(users),
        };
        EffectiveLimits {
            allowed_providers,
            rate_limit_rps,
        }
    }
}
