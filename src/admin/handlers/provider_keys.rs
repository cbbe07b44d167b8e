//! Keys of a stored provider: encrypted at rest, shown only as a masked hint, with a QPS limit each.

use serde::Deserialize;
use serde_json::json;

use super::api_keys::not_found;
use super::providers::{check_key, check_qps, ensure_stored, key_view};
use super::{commit, nullable, store};
use crate::admin::http::{ApiError, Reply, Req};
use crate::app::App;
use crate::secrets::mask;
use crate::store::models::{ProviderKeyChanges, ProviderKeyRow};
use crate::store::{new_id, now, ProviderBundle};

async fn bundle(app: &App, req: &Req) -> Result<ProviderBundle, ApiError> {
    let id = req.param("id");
    ensure_stored(app, id)?;
    store(app)?
        .provider_bundle(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no provider `{id}`")))
}

pub async fn list(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let b = bundle(app, req).await?;
    Ok(Reply::ok(
        json!({"keys": b.keys.iter().map(key_view).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    key: String,
    #[serde(default)]
    qps_limit: Option<u32>,
}

pub async fn create(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let b = bundle(app, req).await?;
    let body: CreateBody = req.json()?;
    check_key("key", &body.key)?;
    let t = now();
    let id = new_id();
    let row = ProviderKeyRow {
        encrypted_key: app.secrets.encrypt(&body.key, &id)?,
        hint: mask(&body.key),
        qps_limit: check_qps("qps_limit", body.qps_limit)?,
        id,
        provider_id: b.row.id,
        disabled: false,
        created_at: t,
        updated_at: t,
    };
    store(app)?.insert_provider_key(&row).await?;
    commit(app).await?;
    Ok(Reply::created(key_view(&row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    key: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    qps_limit: Option<Option<u32>>,
    #[serde(default)]
    disabled: Option<bool>,
}

pub async fn update(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let b = bundle(app, req).await?;
    let key_id = req.param("key_id");
    let body: UpdateBody = req.json()?;
    let (encrypted_key, hint) = match &body.key {
        Some(k) => {
            check_key("key", k)?;
            (Some(app.secrets.encrypt(k, key_id)?), Some(mask(k)))
        }
        None => (None, None),
    };
    let changes = ProviderKeyChanges {
        encrypted_key,
        hint,
        qps_limit: match body.qps_limit {
            Some(q) => Some(check_qps("qps_limit", q)?),
            None => None,
        },
        disabled: body.disabled,
        updated_at: Some(now()),
    };
    let store = store(app)?;
    store
        .update_provider_key(&b.row.id, key_id, &changes)
        .await
        .map_err(|e| not_found(e, "no such provider key"))?;
    commit(app).await?;
    let after = store
        .provider_bundle(&b.row.id)
        .await?
        .and_then(|b| b.keys.into_iter().find(|k| k.id == key_id))
        .ok_or_else(|| ApiError::NotFound("no such provider key".into()))?;
    Ok(Reply::ok(key_view(&after)))
}

pub async fn delete(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let b = bundle(app, req).await?;
    store(app)?
        .delete_provider_key(&b.row.id, req.param("key_id"))
        .await
        .map_err(|e| not_found(e, "no such provider key"))?;
    commit(app).await?;
    Ok(Reply::no_content())
}
