//! Logical models: the config file's (read-only here) and the database's.

use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use super::api_keys::not_found;
use super::{check_id, commit, store};
use crate::admin::http::{ApiError, Reply, Req};
use crate::app::App;
use crate::store::models::{LogicalModelRow, UpstreamRow};
use crate::store::{new_id, now, LogicalBundle};

fn in_file(app: &App, id: &str) -> bool {
    app.config.logical_models.iter().any(|l| l.id == id)
}

fn file_view(app: &App, id: &str) -> Option<Value> {
    let l = app.config.logical_models.iter().find(|l| l.id == id)?;
    Some(json!({
        "id": l.id, "source": "config", "description": null,
        "upstreams": l.upstreams.iter().map(|u| json!({
            "provider": u.provider, "model": u.model, "weight": u.weight, "priority": u.priority,
        })).collect::<Vec<_>>(),
    }))
}

fn stored_view(app: &App, b: &LogicalBundle) -> Value {
    let snap = app.snapshot();
    json!({
        "id": b.row.id, "source": "database", "description": b.row.description,
        "active": snap.sources.db_logical.contains(&b.row.id),
        "shadowed": snap.sources.shadowed_logical.contains(&b.row.id),
        "upstreams": b.upstreams.iter().map(|u| json!({
            "provider": u.provider_id, "model": u.model, "weight": u.weight, "priority": u.priority,
        })).collect::<Vec<_>>(),
        "created_at": b.row.created_at, "updated_at": b.row.updated_at,
    })
}

async fn find(app: &App, id: &str) -> Result<Option<LogicalBundle>, ApiError> {
    Ok(store(app)?
        .logical_bundles()
        .await?
        .into_iter()
        .find(|b| b.row.id == id))
}

pub async fn list(app: &App) -> Result<Reply, ApiError> {
    let mut out: Vec<Value> = app
        .config
        .logical_models
        .iter()
        .filter_map(|l| file_view(app, &l.id))
        .collect();
    for b in store(app)?.logical_bundles().await? {
        out.push(stored_view(app, &b));
    }
    Ok(Reply::ok(json!({ "logical_models": out })))
}

pub async fn get(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    if let Some(v) = file_view(app, id) {
        return Ok(Reply::ok(v));
    }
    let b = find(app, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no logical model `{id}`")))?;
    Ok(Reply::ok(stored_view(app, &b)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamInput {
    provider: String,
    model: String,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    priority: u32,
}

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: String,
    #[serde(default)]
    description: Option<String>,
    upstreams: Vec<UpstreamInput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    /// Absent: kept; `null`: cleared.
    #[serde(default, deserialize_with = "super::nullable")]
    description: Option<Option<String>>,
    upstreams: Vec<UpstreamInput>,
}

fn upstream_rows(app: &App, id: &str, ups: Vec<UpstreamInput>) -> Result<Vec<UpstreamRow>, ApiError> {
    if ups.is_empty() {
        return Err(ApiError::bad("upstreams", "needs at least one upstream"));
    }
    let snap = app.snapshot();
    let rows = ups
        .into_iter()
        .enumerate()
        .map(|(i, u)| {
            if snap.routes.provider(&u.provider).is_none() {
                return Err(ApiError::bad(
                    format!("upstreams[{i}].provider"),
                    format!("no provider has id `{}`", u.provider),
                ));
            }
            if u.model.is_empty() {
                return Err(ApiError::bad(format!("upstreams[{i}].model"), "must not be empty"));
            }
            if !(u.weight.is_finite() && u.weight > 0.0) {
                return Err(ApiError::bad(
                    format!("upstreams[{i}].weight"),
                    "must be a positive number",
                ));
            }
            Ok(UpstreamRow {
                id: new_id(),
                logical_model_id: id.to_string(),
                provider_id: u.provider,
                model: u.model,
                weight: u.weight,
                priority: u.priority.min(i32::MAX as u32) as i32,
                position: i as i32,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // After each row's own checks, as the config file orders them.
    let pairs = rows.iter().map(|r| (r.provider_id.as_str(), r.model.as_str()));
    if let Some(j) = crate::config::repeated_upstream(pairs) {
        return Err(ApiError::bad(
            format!("upstreams[{j}]"),
            crate::config::REPEATED_UPSTREAM,
        ));
    }
    Ok(rows)
}

pub async fn create(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let body: CreateBody = req.json()?;
    check_id("id", &body.id)?;
    if in_file(app, &body.id) {
        return Err(ApiError::Conflict(format!(
            "logical model `{}` is defined in the config file",
            body.id
        )));
    }
    let t = now();
    let b = LogicalBundle {
        upstreams: upstream_rows(app, &body.id, body.upstreams)?,
        row: LogicalModelRow {
            id: body.id.clone(),
            description: body.description,
            created_at: t,
            updated_at: t,
        },
    };
    store(app)?.insert_logical(&b).await.map_err(|e| match e {
        crate::store::StoreError::Conflict => ApiError::Conflict(format!("logical model `{}` already exists", body.id)),
        e => e.into(),
    })?;
    commit(app).await?;
    Ok(Reply::created(stored_view(app, &b)))
}

fn ensure_stored(app: &App, id: &str) -> Result<(), ApiError> {
    if in_file(app, id) {
        return Err(ApiError::Conflict(format!(
            "logical model `{id}` is defined in the config file; change it there"
        )));
    }
    Ok(())
}

pub async fn update(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    ensure_stored(app, id)?;
    let body: UpdateBody = req.json()?;
    let existing = find(app, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no logical model `{id}`")))?;
    let b = LogicalBundle {
        upstreams: upstream_rows(app, id, body.upstreams)?,
        row: LogicalModelRow {
            description: body.description.unwrap_or(existing.row.description),
            updated_at: now(),
            ..existing.row
        },
    };
    store(app)?
        .update_logical(&b)
        .await
        .map_err(|e| not_found(e, "no such logical model"))?;
    commit(app).await?;
    Ok(Reply::ok(stored_view(app, &b)))
}

pub async fn delete(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    ensure_stored(app, id)?;
    store(app)?
        .delete_logical(id)
        .await
        .map_err(|e| not_found(e, "no such logical model"))?;
    commit(app).await?;
    Ok(Reply::no_content())
}

/// The upstreams as routed now, each with the health the scheduler sees.
pub async fn upstreams(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let id = req.param("id");
    let snap = app.snapshot();
    let now = Instant::now();
    if let Some(plan) = snap.routes.logical(id) {
        let list: Vec<Value> = plan
            .candidates
            .iter()
            .map(|c| {
                json!({"provider": &*c.provider.id, "model": &*c.model, "weight": c.weight,
                       "priority": c.priority, "health": c.health.view(now)})
            })
            .collect();
        return Ok(Reply::ok(json!({"id": id, "active": true, "upstreams": list})));
    }
    // A stored model that is not routed (e.g. all its providers are gone): its rows, no health.
    let b = find(app, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no logical model `{id}`")))?;
    let v = stored_view(app, &b);
    Ok(Reply::ok(
        json!({"id": id, "active": false, "upstreams": v["upstreams"]}),
    ))
}
