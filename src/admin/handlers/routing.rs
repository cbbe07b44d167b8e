//! Routing dry runs and session stickiness (bindings live in shared state: every replica's
//! admin API shows and drops the same ones).

use std::collections::HashSet;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::http::{ApiError, Reply, Req};
use crate::app::App;
use crate::gateway::{is_response_key, session_key};
use crate::routing::{choose_dry, score, RouteError, RoutePlan, Sticky};
use crate::state::{split_binding_field, Owner};

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
    /// Whose binding of the session to follow (a client's name, as `GET /routing/sessions` shows
    /// it); needed only when several clients hold one for the model.
    #[serde(default)]
    client: Option<String>,
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
    let held = match &body.session_id {
        Some(s) => stored_bindings(app, session_key(s)).await?,
        None => Vec::new(),
    };
    let binding = match &body.session_id {
        Some(s) => binding_of(session_key(s), &held, &body.model, body.client.as_deref())?,
        None => None,
    };
    let sticky = body.session_id.as_deref().map(|session| Sticky { session, binding });
    let chosen = choose_dry(&plan, &[], sticky, now);
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

fn unavailable(e: crate::state::StateError) -> ApiError {
    tracing::warn!(error = %e, "session bindings unavailable");
    ApiError::Unavailable("shared state (redis) is unavailable; session bindings cannot be read or changed now")
}

/// A session's binding as stored: whose it is (`None` for a response's pin, which is any key's,
/// and for a binding from before bindings had owners), for which model, to which upstream.
struct Stored {
    client: Option<String>,
    model: String,
    upstream: String,
}

async fn stored_bindings(app: &App, session: &str) -> Result<Vec<Stored>, ApiError> {
    let all = app.state.bindings(session).await.map_err(unavailable)?;
    let snapshot = app.snapshot();
    Ok(all
        .into_iter()
        .map(|(field, upstream)| match split_binding_field(&field) {
            Some((owner, model)) => Stored {
                client: Some(match owner {
                    Owner::Client(name) => name.to_string(),
                    Owner::Key(id) => snapshot
                        .clients
                        .stored_key_name(id)
                        .map_or_else(|| format!("deleted key {id}"), str::to_string),
                }),
                model: model.to_string(),
                upstream,
            },
            None => Stored {
                client: None,
                model: field,
                upstream,
            },
        })
        .collect())
}

/// The binding a request of `client` for `model` follows. Without a client, the one binding held
/// for the model; several clients holding one is a question the caller must settle.
fn binding_of<'a>(
    session: &str,
    held: &'a [Stored],
    model: &str,
    client: Option<&str>,
) -> Result<Option<&'a str>, ApiError> {
    // A response's pin is any key's; a session's binding without an owner (written before
    // bindings had owners) is followed by nobody.
    let pin = is_response_key(session);
    let mut followed = held.iter().filter(|b| {
        b.model == model
            && match b.client.as_deref() {
                None => pin,
                Some(owner) => !pin && client.is_none_or(|c| owner == c),
            }
    });
    let first = followed.next();
    if followed.next().is_some() {
        return Err(ApiError::bad(
            "client",
            format!("several clients hold a binding of this session for `{model}`: name the one to follow"),
        ));
    }
    Ok(first.map(|b| b.upstream.as_str()))
}

fn split_upstream(u: &str) -> Value {
    match u.split_once('/') {
        Some((p, m)) => json!({"provider": p, "model": m}),
        None => json!({"provider": u, "model": null}),
    }
}

/// A session's bindings (model → upstream, as stored in shared state). With `?model=`, also the
/// upstream its next request for that model would try first: the binding while it is in
/// rotation, else the rendezvous hash's pick.
pub async fn session_get(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let session = session_key(req.param("session_id"));
    let all = stored_bindings(app, session).await?;
    let bindings: Vec<Value> = all
        .iter()
        .map(|b| json!({"client": b.client, "model": b.model, "upstream": split_upstream(&b.upstream)}))
        .collect();
    let mut out = json!({"session_id": session, "bindings": bindings});
    match req.query.get("model").filter(|m| !m.is_empty()) {
        Some(model) => {
            let client = req.query.get("client").map(String::as_str).filter(|c| !c.is_empty());
            let binding = binding_of(session, &all, model, client)?;
            // A response's continuations go to its maker alone, in whatever tier.
            let plan = match binding.filter(|_| is_response_key(session)) {
                Some(maker) => plan_for(app, model)?.pinned_to(maker),
                None => plan_for(app, model)?,
            };
            let sticky = Sticky { session, binding };
            let chosen = choose_dry(&plan, &[], Some(sticky), Instant::now()).ok();
            let honoured = chosen.is_some_and(|i| {
                binding
                    == Some(&*format!(
                        "{}/{}",
                        plan.candidates[i].provider.id, plan.candidates[i].model
                    ))
            });
            out["model"] = json!(model);
            out["binding"] = json!(if honoured { "stored" } else { "rendezvous_hash" });
            out["upstream"] = json!(chosen.map(|i| upstream(&plan, i)));
        }
        None if all.is_empty() => return Err(ApiError::NotFound(format!("session `{session}` has no binding"))),
        None => {}
    }
    Ok(Reply::ok(out))
}

/// Drops every binding of the session on every replica: its next request is placed by the hash
/// again and bound there.
pub async fn session_delete(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let session = session_key(req.param("session_id"));
    if session.is_empty() {
        return Err(ApiError::bad("session_id", "must not be empty"));
    }
    let deleted = app.state.unbind(session).await.map_err(unavailable)?;
    Ok(Reply::ok(json!({"session_id": session, "deleted": deleted})))
}
