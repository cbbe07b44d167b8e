//! Client API keys of a user. Admins manage anyone's; users only their own (someone else's keys
//! answer 404, so ids cannot be probed). The key itself appears once, in the create answer.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{commit, nullable, store};
use crate::admin::guard::Caller;
use crate::admin::http::{ApiError, Reply, Req};
use crate::app::App;
use crate::auth::keys::{mint, Expiry};
use crate::store::models::{ApiKeyChanges, ApiKeyRow, UserKeyLimits, UserRow};
use crate::store::{new_id, now};

const MAX_RPS: u32 = 1_000_000;

/// A stored JSON list of provider ids as the API shows it.
pub(super) fn json_list(stored: Option<&str>) -> Option<Vec<String>> {
    stored.map(|j| serde_json::from_str(j).unwrap_or_default())
}

/// A key as the API shows it: its own limits, and what is enforced within its user's.
fn view(k: &ApiKeyRow, user: &UserKeyLimits) -> Value {
    let allowed = json_list(k.allowed_providers.as_deref());
    let effective = k.effective_limits(user);
    json!({
        "id": k.id, "user_id": k.user_id, "name": k.name, "prefix": k.prefix,
        "expires_at": k.expires_at, "expired": k.expires_at.is_some_and(|t| t <= now()),
        "disabled": k.disabled, "allowed_providers": allowed, "rate_limit_rps": k.rate_limit_rps,
        "created_at": k.created_at, "updated_at": k.updated_at,
        "effective": {"allowed_providers": effective.allowed_providers, "rate_limit_rps": effective.rate_limit_rps},
    })
}

/// The target user, if the caller may act for them; 404 otherwise.
async fn target(app: &App, req: &Req, caller: &Caller) -> Result<UserRow, ApiError> {
    let id = req.param("id");
    if !caller.may_act_for(id) {
        return Err(ApiError::NotFound("no such user".into()));
    }
    store(app)?
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user".into()))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(ApiError::bad("name", "must be 1-100 characters"));
    }
    // Shown in logs and in `/metrics` (the `client` label): no control or text-direction characters
    // that would make a line read other than it is.
    if name.chars().any(super::users::unprintable) {
        return Err(ApiError::bad(
            "name",
            "must not contain control or text-direction characters",
        ));
    }
    Ok(())
}

pub(super) fn check_rps(field: &str, rps: Option<u32>) -> Result<Option<i32>, ApiError> {
    match rps {
        Some(r) if r == 0 || r > MAX_RPS => Err(ApiError::bad(field, format!("must be between 1 and {MAX_RPS}"))),
        Some(r) => Ok(Some(r as i32)),
        None => Ok(None),
    }
}

/// Every listed provider must exist now (from the file or the database).
pub(super) fn check_allowed(app: &App, field: &str, list: &Option<Vec<String>>) -> Result<Option<String>, ApiError> {
    let Some(list) = list else { return Ok(None) };
    let snap = app.snapshot();
    for (i, p) in list.iter().enumerate() {
        if snap.routes.provider(p).is_none() {
            return Err(ApiError::bad(
                format!("{field}[{i}]"),
                format!("no provider has id `{p}`"),
            ));
        }
    }
    serde_json::to_string(list).map(Some).map_err(|_| ApiError::Internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    /// `expiry` is the original gateway's name for it.
    #[serde(default = "never", alias = "expiry")]
    expires: Expiry,
    #[serde(default)]
    allowed_providers: Option<Vec<String>>,
    #[serde(default)]
    rate_limit_rps: Option<u32>,
}

fn never() -> Expiry {
    Expiry::Never
}

/// Most API keys one user may have (disabled and expired ones count until deleted).
pub const MAX_KEYS_PER_USER: usize = 200;

pub async fn create(app: &App, req: &Req, caller: &Caller) -> Result<Reply, ApiError> {
    let user = target(app, req, caller).await?;
    let user_id = user.id.clone();
    let body: CreateBody = req.json()?;
    check_name(&body.name)?;
    let rps = check_rps("rate_limit_rps", body.rate_limit_rps)?;
    let allowed = check_allowed(app, "allowed_providers", &body.allowed_providers)?;
    let minted = mint(&app.secrets)?;
    let t = now();
    let row = ApiKeyRow {
        id: new_id(),
        user_id,
        name: body.name,
        key_hash: minted.tag_hex,
        prefix: minted.prefix,
        expires_at: body.expires.from(t),
        disabled: false,
        allowed_providers: allowed,
        rate_limit_rps: rps,
        created_at: t,
        updated_at: t,
    };
    // Every key is in every replica's snapshot: a user's keys are bounded.
    if !store(app)?.insert_api_key_within(&row, MAX_KEYS_PER_USER).await? {
        return Err(ApiError::Conflict(format!(
            "a user has at most {MAX_KEYS_PER_USER} API keys; delete ones no longer used"
        )));
    }
    commit(app).await?;
    let mut v = view(&row, &user.key_limits());
    v["key"] = json!(minted.secret);
    Ok(Reply::created(v))
}

pub async fn list(app: &App, req: &Req, caller: &Caller) -> Result<Reply, ApiError> {
    let user = target(app, req, caller).await?;
    let user_id = user.id.clone();
    let keys = store(app)?.list_api_keys(&user_id).await?;
    Ok(Reply::ok(
        json!({ "api_keys": keys.iter().map(|k| view(k, &user.key_limits())).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, alias = "expiry")]
    expires: Option<Expiry>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    allowed_providers: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    rate_limit_rps: Option<Option<u32>>,
}

pub async fn update(app: &App, req: &Req, caller: &Caller) -> Result<Reply, ApiError> {
    let user = target(app, req, caller).await?;
    let user_id = user.id.clone();
    let body: UpdateBody = req.json()?;
    if let Some(n) = &body.name {
        check_name(n)?;
    }
    let t = now();
    let changes = ApiKeyChanges {
        name: body.name,
        expires_at: body.expires.map(|e| e.from(t)),
        disabled: body.disabled,
        allowed_providers: match &body.allowed_providers {
            Some(list) => Some(check_allowed(app, "allowed_providers", list)?),
            None => None,
        },
        rate_limit_rps: match body.rate_limit_rps {
            Some(r) => Some(check_rps("rate_limit_rps", r)?),
            None => None,
        },
        updated_at: Some(t),
    };
    let key_id = req.param("key_id");
    let store = store(app)?;
    let only_narrowing = !caller.is_admin();
    if only_narrowing {
        let current = store
            .get_api_key(&user_id, key_id)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such API key".into()))?;
        only_narrows(&current, &changes)?;
    }
    match store.update_api_key(&user_id, key_id, &changes, only_narrowing).await {
        Ok(()) => {}
        // The key changed since the check above (an admin disabled it, say): judged again.
        Err(crate::store::StoreError::NotFound) if only_narrowing => {
            let current = store
                .get_api_key(&user_id, key_id)
                .await?
                .ok_or_else(|| ApiError::NotFound("no such API key".into()))?;
            only_narrows(&current, &changes)?;
            return Err(ApiError::Conflict(
                "the key changed meanwhile; read it and try again".into(),
            ));
        }
        Err(e) => return Err(not_found(e, "no such API key")),
    }
    commit(app).await?;
    let row = store
        .get_api_key(&user_id, key_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such API key".into()))?;
    Ok(Reply::ok(view(&row, &user.key_limits())))
}

/// A user may disable their own key or bring its expiry closer, but not undo either: a key an admin
/// stopped (a leaked one, say) stays stopped until an admin says otherwise.
fn only_narrows(current: &ApiKeyRow, changes: &ApiKeyChanges) -> Result<(), ApiError> {
    if current.disabled && changes.disabled == Some(false) {
        return Err(ApiError::Forbidden("only an admin re-enables a disabled key"));
    }
    let later = match (changes.expires_at, current.expires_at) {
        (Some(None), Some(_)) => true,
        (Some(Some(new)), Some(old)) => new > old,
        _ => false,
    };
    if later {
        return Err(ApiError::Forbidden("only an admin moves a key's expiry later"));
    }
    Ok(())
}

pub async fn delete(app: &App, req: &Req, caller: &Caller) -> Result<Reply, ApiError> {
    let user = target(app, req, caller).await?;
    let user_id = user.id.clone();
    store(app)?
        .delete_api_key(&user_id, req.param("key_id"))
        .await
        .map_err(|e| not_found(e, "no such API key"))?;
    commit(app).await?;
    Ok(Reply::no_content())
}

pub fn not_found(e: crate::store::StoreError, what: &str) -> ApiError {
    match e {
        crate::store::StoreError::NotFound => ApiError::NotFound(what.into()),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The original gateway's body (`{"name": …, "expiry": "MONTH"}`) mints the same key.
    #[test]
    fn the_original_gateway_s_expiry_is_understood() {
        let b: CreateBody = serde_json::from_value(json!({"name": "k", "expiry": "MONTH"})).unwrap();
        assert_eq!(b.expires, Expiry::Month);
        let b: UpdateBody = serde_json::from_value(json!({"expiry": "week"})).unwrap();
        assert_eq!(b.expires, Some(Expiry::Week));
        assert!(serde_json::from_value::<CreateBody>(json!({"name": "k", "expiry": "Month"})).is_err());
    }
}
