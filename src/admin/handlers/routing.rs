//! Routing dry runs and session stickiness.

use std::collections::HashSet;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::http::{ApiError, Reply, Req};
use crate::app::App;
use crate::routing::{choose_dry, score, RouteError, RoutePlan};

fn plan_for(app: &App, model: &str) -> Result<RoutePlan, ApiError> {
    app.snapshot()
        .routes
        .plan(model, &app.catalog, &app.health)
        .map_err(|e| ApiError::NotFound(e.to_string()))
}

fn upstream(plan: &RoutePlan, i: usize) -> Value {
    let c = &plan.candidates[i];
    json!({"provider": &*c.provider.id, "model": &*c.model})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    model: String,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    allowed_providers: Option<Vec<String>>,
}

/// What `upstream_peer` would choose for this request now, and how every candidate scores. Nothing
/// is changed: no probe slot is claimed, no health recorded.
pub async fn decide(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let body: DecideBody = req.json()?;
    if body.model.is_empty() {
        return Err(ApiError::bad("model", "must not be empty"));
    }
    let mut plan = plan_for(app, &body.model)?;
    if let Some(list) = &body.allowed_providers {
        let allowed: HashSet<String> = list.iter().cloned().collect();
        plan = plan.restricted_to(&allowed).map_err(|e| match e {
            RouteError::NotAllowed(_) => ApiError::bad("allowed_providers", e.to_string()),
            e => ApiError::NotFound(e.to_string()),
        })?;
    }
    let now = Instant::now();
    let session = body.session_id.as_deref().map(|s| app.sessions.hash_key(s));
    let chosen = choose_dry(&plan, session.as_deref(), now);
    let candidates: Vec<Value> = score(&plan, &[], now)
        .into_iter()
        .map(|(s, _)| {
            let c = &plan.candidates[s.index];
            json!({
                "provider": &*c.provider.id, "model": &*c.model, "weight": c.weight,
                "priority": s.priority, "effective_weight": s.effective_weight, "available": s.available,
                "health": c.health.view(now),
            })
        })
        .collect();
    Ok(Reply::ok(json!({
        "model": body.model,
        "route_kind": format!("{:?}", plan.kind).to_lowercase(),
        "session_id": body.session_id,
        "chosen": chosen.as_ref().ok().map(|i| upstream(&plan, *i)),
        "retry_after_ms": chosen.err().and_then(|e| e.retry_after).map(|d| d.as_millis() as u64),
        "candidates": candidates,
    })))
}

fn model_param(req: &Req) -> Result<&str, ApiError> {
    req.query
        .get("model")
        .map(String::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad("model", "query parameter `model` is required: stickiness is per model"))
}

/// Sessions are bound by rendezvous hashing, not stored: this reports the upstream the hash picks
/// for the session and model right now (the one its next request would try first).
pub async fn session_get(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let session = req.param("session_id");
    let model = model_param(req)?;
    let plan = plan_for(app, model)?;
    let key = app.sessions.hash_key(session);
    let chosen = choose_dry(&plan, Some(&key), Instant::now());
    Ok(Reply::ok(json!({
        "session_id": session,
        "model": model,
        "binding": "rendezvous_hash",
        "reset": app.sessions.is_overridden(session),
        "upstream": chosen.ok().map(|i| upstream(&plan, i)),
    })))
}

/// Drops the binding by re-salting the session's hash: its next request is placed afresh and sticks
/// there. Held by this replica only.
pub async fn session_delete(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let session = req.param("session_id");
    if session.is_empty() {
        return Err(ApiError::bad("session_id", "must not be empty"));
    }
    let before = app.sessions.reset(session);
    Ok(Reply::ok(
        json!({"session_id": session, "reset": true, "was_reset_before": before}),
    ))
}
