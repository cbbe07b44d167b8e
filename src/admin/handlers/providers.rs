//! Providers: the config file's (read-only here) and the database's, with their models, live probe
//! and routing health.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::api_keys::not_found;
use super::{check_id, commit, nullable, store};
use crate::admin::http::{ApiError, Reply, Req};
use crate::admin::AdminState;
use crate::app::App;
use crate::config::{ApiStyle, Paths, ProviderConfig, ProviderType, Timeouts};
use crate::live::merge::provider_from_db;
use crate::live::{ProviderSettings, SettingsError};
use crate::secrets::{mask, Secrets};
use crate::store::models::{ProviderKeyRow, ProviderModelRow, ProviderRow};
use crate::store::{new_id, now, ProviderBundle, ProviderWrite};
use crate::upstream::{fetch_raw_models, Endpoint, Provider, ProviderExtras};

pub fn source_of(app: &App, id: &str) -> &'static str {
    if app.config.providers.iter().any(|p| p.id == id) {
        "config"
    } else {
        "database"
    }
}

/// Refuses changes to a provider defined in the config file.
pub fn ensure_stored(app: &App, id: &str) -> Result<(), ApiError> {
    if source_of(app, id) == "config" {
        return Err(ApiError::Conflict(format!(
            "provider `{id}` is defined in the config file; change it there"
        )));
    }
    Ok(())
}

pub fn key_view(k: &ProviderKeyRow) -> Value {
    json!({
        "id": k.id, "provider_id": k.provider_id, "hint": k.hint, "qps_limit": k.qps_limit,
        "disabled": k.disabled, "created_at": k.created_at, "updated_at": k.updated_at,
    })
}

fn model_view(m: &ProviderModelRow) -> Value {
    json!({
        "model": m.model, "alias": m.alias, "disabled": m.disabled,
        "metadata": m.metadata.as_deref().and_then(|j| serde_json::from_str::<Value>(j).ok()),
    })
}

/// The live view of a provider in the current snapshot: what the old read-only `/providers` showed.
fn live_view(app: &App, p: &Provider) -> Value {
    let now = Instant::now();
    json!({
        "id": &*p.id,
        "source": source_of(app, &p.id),
        "active": true,
        "base_url": p.endpoint.url(&p.endpoint.base_path),
        "api_style": p.style,
        "provider_type": p.provider_type,
        "weight": p.weight,
        "keys_in_rotation": p.usable_keys(),
        "models": app.catalog.models_of(p).map(|m| m.to_vec()),
        "upstreams": app.health.of_provider(&p.id, now)
            .into_iter()
            .map(|(model, h)| json!({"model": model, "health": h}))
            .collect::<Vec<_>>(),
    })
}

fn stored_view(secrets: &Secrets, b: &ProviderBundle, shadowed: bool) -> Value {
    json!({
        "id": b.row.id,
        "source": "database",
        "active": false,
        "shadowed": shadowed,
        "base_url": b.row.base_url,
        "api_style": b.row.api_style,
        "provider_type": b.row.provider_type,
        "weight": b.row.weight,
        "settings": stored_settings_view(secrets, b),
        "keys": b.keys.iter().map(key_view).collect::<Vec<_>>(),
        "stored_models": b.models.iter().map(model_view).collect::<Vec<_>>(),
    })
}

/// Stored settings as shown, or why they cannot be read (a header sealed under another secret).
fn stored_settings_view(secrets: &Secrets, b: &ProviderBundle) -> Value {
    match ProviderSettings::open(&b.row.settings, &b.row.id, secrets) {
        Ok(settings) => settings_view(&settings),
        Err(e) => json!({ "unreadable": e.to_string() }),
    }
}

/// Settings as shown: header values masked as keys are, since a provider that authenticates with a header of
/// its own (`api-key`, a proxy's token) carries its secret there.
fn settings_view(settings: &ProviderSettings) -> Value {
    let mut v = json!(settings);
    if let Some(headers) = v.get_mut("headers").and_then(Value::as_object_mut) {
        for value in headers.values_mut() {
            *value = json!(mask(value.as_str().unwrap_or_default()));
        }
    }
    v
}

/// Header values sent back as they were shown (masked) keep the stored value, so a settings object
/// read, edited and written back does not replace a secret with its mask.
fn unmask(sent: BTreeMap<String, String>, stored: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    sent.into_iter()
        .map(|(name, value)| match stored.get(&name) {
            Some(kept) if mask(kept) == value => (name, kept.clone()),
            _ => (name, value),
        })
        .collect()
}

pub async fn list(app: &App) -> Result<Reply, ApiError> {
    let snap = app.snapshot();
    let mut out: Vec<Value> = snap.routes.providers().iter().map(|p| live_view(app, p)).collect();
    let live: HashSet<&str> = snap.routes.providers().iter().map(|p| &*p.id).collect();
    // Stored providers not in the snapshot: shadowed by the file, or unusable (reported, not hidden).
    for b in store(app)?.provider_bundles().await? {
        if !live.contains(b.row.id.as_str()) || snap.sources.shadowed_providers.contains(&b.row.id) {
            out.push(stored_view(
                &app.secrets,
                &b,
                snap.sources.shadowed_providers.contains(&b.row.id),
            ));
        }
    }
    Ok(Reply::ok(json!({ "providers": out })))
}

pub async fn get(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    let snap = app.snapshot();
    let stored = store(app)?.provider_bundle(id).await?;
    let mut v = match (snap.routes.provider(id), &stored) {
        (Some(p), _) => live_view(app, p),
        (None, Some(b)) => stored_view(&app.secrets, b, false),
        (None, None) => return Err(ApiError::NotFound(format!("no provider `{id}`"))),
    };
    if let (Some(b), "database") = (&stored, source_of(app, id)) {
        v["settings"] = stored_settings_view(&app.secrets, b);
        v["keys"] = json!(b.keys.iter().map(key_view).collect::<Vec<_>>());
        v["stored_models"] = json!(b.models.iter().map(model_view).collect::<Vec<_>>());
    }
    if source_of(app, id) == "config" {
        v["shadowed_stored_provider"] = json!(stored.is_some());
    }
    Ok(Reply::ok(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    key: String,
    #[serde(default)]
    qps_limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelInput {
    model: String,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: String,
    base_url: String,
    #[serde(default)]
    api_style: ApiStyle,
    #[serde(default)]
    provider_type: ProviderType,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    api_keys: Vec<KeyInput>,
    #[serde(default)]
    models: Vec<ModelInput>,
    #[serde(default)]
    timeouts: Option<Timeouts>,
    #[serde(default)]
    retryable_status_codes: Option<Vec<u16>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    paths: Option<Paths>,
    #[serde(default)]
    responses_api: Option<bool>,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_style: Option<ApiStyle>,
    #[serde(default)]
    provider_type: Option<ProviderType>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    models: Option<Option<Vec<ModelInput>>>,
    #[serde(default)]
    timeouts: Option<TimeoutsPatch>,
    #[serde(default)]
    retryable_status_codes: Option<Vec<u16>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    paths: Option<PathsPatch>,
    #[serde(default)]
    responses_api: Option<bool>,
    /// Replaces every stored key (required with a `base_url` on another host).
    #[serde(default)]
    api_keys: Option<Vec<KeyInput>>,
}

/// An update of some timeouts: the others keep their values.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TimeoutsPatch {
    connect_ms: Option<u64>,
    first_byte_ms: Option<u64>,
    idle_ms: Option<u64>,
}

impl From<Timeouts> for TimeoutsPatch {
    fn from(t: Timeouts) -> Self {
        Self {
            connect_ms: Some(t.connect_ms),
            first_byte_ms: Some(t.first_byte_ms),
            idle_ms: Some(t.idle_ms),
        }
    }
}

/// An update of some path overrides: the others keep theirs; `null` removes one.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathsPatch {
    #[serde(default, deserialize_with = "nullable")]
    chat: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    responses: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    models: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    messages: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    gemini: Option<Option<String>>,
}

impl From<Paths> for PathsPatch {
    fn from(p: Paths) -> Self {
        Self {
            chat: Some(p.chat),
            responses: Some(p.responses),
            models: Some(p.models),
            messages: Some(p.messages),
            gemini: Some(p.gemini),
        }
    }
}

/// The settings a create or update body may override; absent fields keep what `settings` had.
struct SettingsPatch {
    timeouts: Option<TimeoutsPatch>,
    retryable_status_codes: Option<Vec<u16>>,
    headers: Option<BTreeMap<String, String>>,
    paths: Option<PathsPatch>,
    responses_api: Option<bool>,
}

impl SettingsPatch {
    fn apply(self, settings: &mut ProviderSettings) {
        if let Some(t) = self.timeouts {
            let now = &mut settings.timeouts;
            now.connect_ms = t.connect_ms.unwrap_or(now.connect_ms);
            now.first_byte_ms = t.first_byte_ms.unwrap_or(now.first_byte_ms);
            now.idle_ms = t.idle_ms.unwrap_or(now.idle_ms);
        }
        if let Some(r) = self.retryable_status_codes {
            settings.retryable_status_codes = r;
        }
        if let Some(h) = self.headers {
            settings.headers = h;
        }
        if let Some(p) = self.paths {
            let now = &mut settings.paths;
            for (new, old) in [
                (p.chat, &mut now.chat),
                (p.responses, &mut now.responses),
                (p.models, &mut now.models),
                (p.messages, &mut now.messages),
                (p.gemini, &mut now.gemini),
            ] {
                if let Some(new) = new {
                    *old = new;
                }
            }
        }
        if let Some(r) = self.responses_api {
            settings.responses_api = r;
        }
    }
}

fn check_settings(base_url: &str, weight: f64, s: &ProviderSettings) -> Result<(), ApiError> {
    Endpoint::parse(base_url).map_err(|m| ApiError::bad("base_url", m))?;
    if !(weight.is_finite() && weight > 0.0) {
        return Err(ApiError::bad("weight", "must be a positive number"));
    }
    let t = &s.timeouts;
    if t.connect_ms == 0 || t.first_byte_ms == 0 || t.idle_ms == 0 {
        return Err(ApiError::bad("timeouts", "every timeout must be above 0 ms"));
    }
    for (k, v) in &s.headers {
        crate::upstream::check_extra_header(k, v).map_err(|m| ApiError::bad(format!("headers.{k}"), m))?;
    }
    for (field, path) in [
        ("chat", &s.paths.chat),
        ("responses", &s.paths.responses),
        ("models", &s.paths.models),
        ("messages", &s.paths.messages),
        ("gemini", &s.paths.gemini),
    ] {
        if let Some(p) = path {
            crate::upstream::check_path(p).map_err(|m| ApiError::bad(format!("paths.{field}"), m))?;
        }
    }
    crate::config::check_retryable_statuses(&s.retryable_status_codes)
        .map_err(|m| ApiError::bad("retryable_status_codes", m))
}

pub fn check_key(field: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 4096 || http::HeaderValue::from_str(&format!("Bearer {key}")).is_err() {
        return Err(ApiError::bad(
            field,
            "must be a non-empty value allowed in an HTTP header",
        ));
    }
    Ok(())
}

pub fn check_qps(field: &str, q: Option<u32>) -> Result<Option<i32>, ApiError> {
    match q {
        Some(0) => Err(ApiError::bad(field, "must be at least 1")),
        Some(q) => Ok(Some(q.min(i32::MAX as u32) as i32)),
        None => Ok(None),
    }
}

fn model_rows(provider_id: &str, models: Vec<ModelInput>, t: i64) -> Result<Vec<ProviderModelRow>, ApiError> {
    let mut seen = HashSet::new();
    models
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if m.model.is_empty() || !seen.insert(m.model.clone()) {
                return Err(ApiError::bad(
                    format!("models[{i}].model"),
                    "must be non-empty and unique",
                ));
            }
            if let Some(a) = &m.alias {
                check_id(&format!("models[{i}].alias"), a)?;
            }
            Ok(ProviderModelRow {
                id: new_id(),
                provider_id: provider_id.to_string(),
                model: m.model,
                alias: m.alias,
                disabled: m.disabled,
                metadata: m.metadata.map(|v| v.to_string()),
                created_at: t,
            })
        })
        .collect()
}

/// Final guard: the stored form must build into a run-time provider.
fn check_builds(app: &App, b: &ProviderBundle) -> Result<(), ApiError> {
    let (pc, ex): (ProviderConfig, ProviderExtras) =
        provider_from_db(b, &app.secrets).map_err(|m| ApiError::bad("body", m))?;
    Provider::build(&pc, &ex).map_err(|m| ApiError::bad("body", m))?;
    Ok(())
}

fn style_str(s: ApiStyle) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn type_str(t: ProviderType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

pub async fn create(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let body: CreateBody = req.json()?;
    check_id("id", &body.id)?;
    if app.config.providers.iter().any(|p| p.id == body.id) {
        return Err(ApiError::Conflict(format!(
            "provider `{}` is defined in the config file",
            body.id
        )));
    }
    let mut settings = ProviderSettings::default();
    SettingsPatch {
        timeouts: body.timeouts.map(TimeoutsPatch::from),
        retryable_status_codes: body.retryable_status_codes,
        headers: body.headers,
        paths: body.paths.map(PathsPatch::from),
        responses_api: body.responses_api,
    }
    .apply(&mut settings);
    check_settings(&body.base_url, body.weight, &settings)?;
    let t = now();
    let keys = key_rows(app, &body.id, body.api_keys, t)?;
    let bundle = ProviderBundle {
        row: ProviderRow {
            id: body.id.clone(),
            base_url: body.base_url,
            api_style: style_str(body.api_style),
            provider_type: type_str(body.provider_type),
            weight: body.weight,
            settings: settings.seal(&body.id, &app.secrets)?,
            created_at: t,
            updated_at: t,
        },
        models: model_rows(&body.id, body.models, t)?,
        keys,
    };
    check_builds(app, &bundle)?;
    store(app)?.insert_provider(&bundle).await.map_err(|e| match e {
        crate::store::StoreError::Conflict => ApiError::Conflict(format!("provider `{}` already exists", body.id)),
        e => e.into(),
    })?;
    commit(app).await?;
    let mut v = stored_view(&app.secrets, &bundle, false);
    v["active"] = json!(app.snapshot().routes.provider(&body.id).is_some());
    Ok(Reply::created(v))
}

/// Stored rows of the `api_keys` of a create or update body, sealed.
fn key_rows(app: &App, provider_id: &str, keys: Vec<KeyInput>, t: i64) -> Result<Vec<ProviderKeyRow>, ApiError> {
    let mut rows = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        check_key(&format!("api_keys[{i}].key"), &k.key)?;
        let id = new_id();
        rows.push(ProviderKeyRow {
            encrypted_key: app.secrets.encrypt(&k.key, &id)?,
            hint: mask(&k.key),
            qps_limit: check_qps(&format!("api_keys[{i}].qps_limit"), k.qps_limit)?,
            id,
            provider_id: provider_id.to_string(),
            disabled: false,
            created_at: t,
            updated_at: t,
        });
    }
    Ok(rows)
}

/// Refuses to send a provider's stored secrets to another host: a `base_url` that moves it to
/// another scheme, host or port must come with its keys (`api_keys`) and its header values
/// (`headers`, none masked) given anew. Otherwise whoever may change a provider, without ever
/// seeing its keys, could point it at a server of theirs and read them from the requests.
/// Headers given as the API shows them keep a stored value where it is masked (`…`).
fn keeps_a_masked_value(headers: &BTreeMap<String, String>) -> bool {
    headers.values().any(|v| v.contains('…'))
}

fn check_move(stored: &ProviderBundle, body: &UpdateBody, sealed_headers: bool) -> Result<(), ApiError> {
    let Some(to) = &body.base_url else {
        return Ok(());
    };
    let (Ok(from), Ok(to)) = (Endpoint::parse(&stored.row.base_url), Endpoint::parse(to)) else {
        // An unreadable URL is refused by `check_settings`.
        return Ok(());
    };
    if (from.tls, &from.host, from.port) == (to.tls, &to.host, to.port) {
        return Ok(());
    }
    if !stored.keys.is_empty() && body.api_keys.is_none() {
        return Err(ApiError::Conflict(format!(
            "`base_url` moves provider `{}` to another host, where its stored keys would be sent: give its `api_keys` anew in the same request",
            stored.row.id
        )));
    }
    let headers_kept = match &body.headers {
        None => sealed_headers,
        Some(h) => keeps_a_masked_value(h),
    };
    if headers_kept {
        return Err(ApiError::Conflict(format!(
            "`base_url` moves provider `{}` to another host, where its stored header values would be sent: give its `headers` anew in the same request",
            stored.row.id
        )));
    }
    Ok(())
}

pub async fn update(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    ensure_stored(app, id)?;
    let body: UpdateBody = req.json()?;
    let store = store(app)?;
    let mut b = store
        .provider_bundle(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no provider `{id}`")))?;
    let mut settings = match ProviderSettings::open(&b.row.settings, id, &app.secrets) {
        Ok(settings) => settings,
        // Headers sealed under a secret no longer at hand: a body that gives every header anew
        // (no masked value to keep) replaces them, which brings the provider back.
        Err(SettingsError::Sealed(_)) if body.headers.as_ref().is_some_and(|h| !keeps_a_masked_value(h)) => {
            ProviderSettings::open_without_headers(&b.row.settings)?
        }
        Err(e) => return Err(e.into()),
    };
    check_move(&b, &body, !settings.headers.is_empty())?;
    SettingsPatch {
        timeouts: body.timeouts,
        retryable_status_codes: body.retryable_status_codes,
        headers: body.headers.map(|h| unmask(h, &settings.headers)),
        paths: body.paths,
        responses_api: body.responses_api,
    }
    .apply(&mut settings);
    if let Some(u) = body.base_url {
        b.row.base_url = u;
    }
    if let Some(s) = body.api_style {
        b.row.api_style = style_str(s);
    }
    if let Some(t) = body.provider_type {
        b.row.provider_type = type_str(t);
    }
    if let Some(w) = body.weight {
        b.row.weight = w;
    }
    check_settings(&b.row.base_url, b.row.weight, &settings)?;
    let t = now();
    let read_settings = std::mem::replace(&mut b.row.settings, settings.seal(id, &app.secrets)?);
    b.row.updated_at = t;
    let models = match body.models {
        Some(list) => Some(model_rows(id, list.unwrap_or_default(), t)?),
        None => None,
    };
    if let Some(m) = &models {
        b.models = m.clone();
    }
    let keys = match body.api_keys {
        Some(list) => Some(key_rows(app, id, list, t)?),
        None => None,
    };
    if let Some(k) = &keys {
        b.keys = k.clone();
    }
    check_builds(app, &b)?;
    store
        .update_provider(ProviderWrite {
            row: &b.row,
            read_settings: &read_settings,
            models: models.as_deref(),
            keys: keys.as_deref(),
        })
        .await
        .map_err(|e| not_found(e, "no such provider"))?;
    commit(app).await?;
    let mut v = stored_view(&app.secrets, &b, false);
    v["active"] = json!(app.snapshot().routes.provider(id).is_some());
    Ok(Reply::ok(v))
}

pub async fn delete(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    ensure_stored(app, id)?;
    let uses = users_of(app, id).await?;
    if !uses.is_empty() {
        // Its references would stay behind, dead (a logical model with no upstream, a key allowed
        // nothing), and quietly come back to life with the next provider of the same id.
        return Err(ApiError::Conflict(format!(
            "provider `{id}` is still named by {}: change those first",
            uses.join(", ")
        )));
    }
    store(app)?
        .delete_provider(id)
        .await
        .map_err(|e| not_found(e, "no such provider"))?;
    commit(app).await?;
    Ok(Reply::no_content())
}

/// What names provider `id`: logical models (the file's and stored ones), users' key limits and
/// API keys' allowed providers.
async fn users_of(app: &App, id: &str) -> Result<Vec<String>, ApiError> {
    let store = store(app)?;
    let names = |list: &Option<String>| {
        list.as_deref()
            .and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
            .is_some_and(|l| l.iter().any(|p| p == id))
    };
    let mut uses: Vec<String> = app
        .config
        .logical_models
        .iter()
        .filter(|l| l.upstreams.iter().any(|u| u.provider == id))
        .map(|l| format!("logical model `{}`", l.id))
        .collect();
    for b in store.logical_bundles().await? {
        if b.upstreams.iter().any(|u| u.provider_id == id) {
            uses.push(format!("logical model `{}`", b.row.id));
        }
    }
    for user in store.list_users().await? {
        if names(&user.key_allowed_providers) {
            uses.push(format!("the key limits of user `{}`", user.username));
        }
        for key in store.list_api_keys(&user.id).await? {
            if names(&key.allowed_providers) {
                uses.push(format!("API key `{}` of user `{}`", key.name, user.username));
            }
        }
    }
    Ok(uses)
}

fn live_provider(app: &App, id: &str) -> Result<std::sync::Arc<Provider>, ApiError> {
    app.snapshot()
        .routes
        .provider(id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no active provider `{id}`")))
}

/// The provider's own model list as it sent it, cached for `MODELS_CACHE_TTL`; plus stored metadata.
pub async fn models(admin: &AdminState, req: &Req) -> Result<Reply, ApiError> {
    let app = &*admin.app;
    let id = req.param("id");
    let p = live_provider(app, id)?;
    let ttl = Duration::from_secs(app.settings.models_cache_ttl_s.max(1));
    let refresh = req.query.get("refresh").is_some_and(|v| v == "true" || v == "1");
    let cached = admin.raw_models.lock().get(id).cloned();
    let (fetched_at, raw) = match cached {
        // Fetched from this very provider: any change of configuration builds it anew.
        Some((at, from, raw))
            if !refresh && at.elapsed() < ttl && std::sync::Weak::ptr_eq(&from, &Arc::downgrade(&p)) =>
        {
            (at, raw)
        }
        _ => {
            let (status, body) = fetch_raw_models(&admin.http, &p)
                .await
                .map_err(|e| ApiError::Upstream(format!("provider `{id}` model list: {e}")))?;
            if !(200..300).contains(&status) {
                return Err(ApiError::Upstream(format!(
                    "provider `{id}` model list: status {status}"
                )));
            }
            let raw: Value = serde_json::from_slice(&body)
                .map_err(|_| ApiError::Upstream(format!("provider `{id}` model list is not JSON")))?;
            let at = Instant::now();
            admin
                .raw_models
                .lock()
                .insert(id.to_string(), (at, Arc::downgrade(&p), raw.clone()));
            (at, raw)
        }
    };
    let stored = match store(app)?.provider_bundle(id).await? {
        Some(b) => b.models.iter().map(model_view).collect::<Vec<_>>(),
        None => Vec::new(),
    };
    Ok(Reply::ok(json!({
        "provider": id,
        "age_s": fetched_at.elapsed().as_secs(),
        "raw": raw,
        "routed_models": app.catalog.models_of(&p).map(|m| m.to_vec()),
        "stored_models": stored,
    })))
}

/// A live probe: one GET of the model-list endpoint, with its status and latency.
pub async fn health(admin: &AdminState, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    let p = live_provider(&admin.app, id)?;
    let started = Instant::now();
    let probe = tokio::time::timeout(Duration::from_secs(5), fetch_raw_models(&admin.http, &p)).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let v = match probe {
        Ok(Ok((status, _))) => json!({
            "provider": id, "status": if (200..300).contains(&status) { "up" } else { "degraded" },
            "http_status": status, "latency_ms": latency_ms,
        }),
        Ok(Err(e)) => json!({"provider": id, "status": "down", "error": e, "latency_ms": latency_ms}),
        Err(_) => json!({"provider": id, "status": "down", "error": "timed out after 5 s", "latency_ms": latency_ms}),
    };
    Ok(Reply::ok(v))
}

/// The routing health the scheduler uses for each of the provider's upstreams.
pub async fn metrics(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    let p = live_provider(app, id)?;
    let now = Instant::now();
    Ok(Reply::ok(json!({
        "provider": id,
        "weight": p.weight,
        "keys_in_rotation": p.usable_keys(),
        "upstreams": app.health.of_provider(id, now)
            .into_iter()
            .map(|(model, h)| json!({"model": model, "health": h}))
            .collect::<Vec<_>>(),
    })))
}

/// `parse_style`/`parse_type` are used by the merge; keep the API's strings in step with them.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::merge::{parse_style, parse_type};

    #[test]
    fn style_strings_round_trip() {
        for s in [
            ApiStyle::Openai,
            ApiStyle::Responses,
            ApiStyle::Anthropic,
            ApiStyle::Gemini,
        ] {
            assert_eq!(parse_style(&style_str(s)), Some(s));
        }
        for t in [ProviderType::Native, ProviderType::Aggregator] {
            assert_eq!(parse_type(&type_str(t)), Some(t));
        }
    }
}
