//! Users (admin only). Users are disabled, never deleted, so what they did stays attributable.

use serde::Deserialize;
use serde_json::{json, Value};

use super::api_keys::{check_allowed, check_rps, json_list};
use super::{blocking, commit, nullable, store};
use crate::admin::guard::{Caller, ROLE_ADMIN, ROLE_USER};
use crate::admin::http::{ApiError, Reply, Req};
use crate::app::App;
use crate::auth::password::{self, MIN_PASSWORD_LEN};
use crate::store::models::{UserChanges, UserRow};
use crate::store::{new_id, now};

/// A user as the API shows it: never the password hash.
pub fn user_view(u: &UserRow) -> Value {
    json!({
        "id": u.id, "username": u.username, "email": u.email, "display_name": u.display_name,
        "role": u.role, "disabled": u.disabled, "created_at": u.created_at, "updated_at": u.updated_at,
        "key_allowed_providers": json_list(u.key_allowed_providers.as_deref()),
        "key_rate_limit_rps": u.key_rate_limit_rps,
    })
}

pub fn check_username(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if !ok {
        return Err(ApiError::bad(
            "username",
            "must be 1-64 characters of letters, digits, `_`, `-`, `.` or `@`",
        ));
    }
    Ok(())
}

fn check_role(role: &str) -> Result<(), ApiError> {
    if role != ROLE_ADMIN && role != ROLE_USER {
        return Err(ApiError::bad("role", "must be `admin` or `user`"));
    }
    Ok(())
}

/// Longest password taken (each is hashed; a passphrase is far shorter).
const MAX_PASSWORD_LEN: usize = 1024;

fn check_password(pw: &str) -> Result<(), ApiError> {
    let n = pw.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&n) {
        return Err(ApiError::bad(
            "password",
            format!("must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

/// Control characters, line and paragraph separators, and the characters that reorder text
/// (direction marks, bidi embeddings, overrides and isolates).
pub(super) fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// A user's `email` or `display_name`: at most `max` bytes, nothing unprintable.
fn check_text(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::bad(field, format!("must be at most {max} bytes"))),
        Some(v) if v.chars().any(unprintable) => Err(ApiError::bad(
            field,
            "must not contain control or text-direction characters",
        )),
        _ => Ok(()),
    }
}

async fn hash(app: &App, pw: String) -> Result<String, ApiError> {
    let secrets = app.secrets.clone();
    Ok(blocking(move || password::hash(&secrets, &pw)).await??)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    key_allowed_providers: Option<Vec<String>>,
    #[serde(default)]
    key_rate_limit_rps: Option<u32>,
}

pub async fn create(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let body: CreateBody = req.json()?;
    check_username(&body.username)?;
    check_text("email", body.email.as_deref(), 254)?;
    check_text("display_name", body.display_name.as_deref(), 200)?;
    let role = body.role.unwrap_or_else(|| ROLE_USER.into());
    check_role(&role)?;
    let (pw, generated) = match body.password {
        Some(p) => {
            check_password(&p)?;
            (p, false)
        }
        None => (password::generate(&app.secrets)?, true),
    };
    let t = now();
    let row = UserRow {
        id: new_id(),
        username: body.username,
        email: body.email,
        display_name: body.display_name,
        password_hash: hash(app, pw.clone()).await?,
        role,
        disabled: false,
        token_version: 0,
        created_at: t,
        updated_at: t,
        key_allowed_providers: check_allowed(app, "key_allowed_providers", &body.key_allowed_providers)?,
        key_rate_limit_rps: check_rps("key_rate_limit_rps", body.key_rate_limit_rps)?,
    };
    store(app)?.insert_user(&row).await.map_err(|e| match e {
        crate::store::StoreError::Conflict => ApiError::Conflict("this username is taken".into()),
        e => e.into(),
    })?;
    let mut v = json!({ "user": user_view(&row) });
    if generated {
        v["password"] = json!(pw);
    }
    Ok(Reply::created(v))
}

pub async fn list(app: &App) -> Result<Reply, ApiError> {
    let users = store(app)?.list_users().await?;
    Ok(Reply::ok(json!({
        "users": users.iter().map(user_view).collect::<Vec<_>>()
    })))
}

pub async fn get(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let u = store(app)?
        .get_user(req.param("id"))
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
    Ok(Reply::ok(user_view(&u)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    display_name: Option<Option<String>>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    key_allowed_providers: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    key_rate_limit_rps: Option<Option<u32>>,
}

async fn apply(app: &App, caller: &Caller, id: &str, body: UpdateBody) -> Result<Reply, ApiError> {
    let store = store(app)?;
    let user = store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
    if let Some(r) = &body.role {
        check_role(r)?;
        if caller.user_id == id && r != ROLE_ADMIN {
            return Err(ApiError::bad("role", "you cannot demote yourself"));
        }
    }
    if body.disabled == Some(true) && caller.user_id == id {
        return Err(ApiError::bad("disabled", "you cannot disable yourself"));
    }
    if let Some(p) = &body.password {
        check_password(p)?;
    }
    check_text("email", body.email.as_ref().and_then(Option::as_deref), 254)?;
    check_text(
        "display_name",
        body.display_name.as_ref().and_then(Option::as_deref),
        200,
    )?;
    // A new password, a role change or disabling revokes every token the user holds.
    let revoke =
        body.password.is_some() || body.role.as_ref().is_some_and(|r| *r != user.role) || body.disabled == Some(true);
    // The user's API keys start or stop working on the proxy, or their limits change.
    let keys_changed = body.disabled.is_some_and(|d| d != user.disabled)
        || body.key_allowed_providers.is_some()
        || body.key_rate_limit_rps.is_some();
    let changes = UserChanges {
        email: body.email,
        display_name: body.display_name,
        password_hash: match body.password {
            Some(p) => Some(hash(app, p).await?),
            None => None,
        },
        role: body.role,
        disabled: body.disabled,
        updated_at: Some(now()),
        key_allowed_providers: match &body.key_allowed_providers {
            Some(list) => Some(check_allowed(app, "key_allowed_providers", list)?),
            None => None,
        },
        key_rate_limit_rps: match body.key_rate_limit_rps {
            Some(r) => Some(check_rps("key_rate_limit_rps", r)?),
            None => None,
        },
    };
    store.update_user(id, &changes, revoke).await?;
    if keys_changed {
        commit(app).await?;
    }
    let u = store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
    Ok(Reply::ok(user_view(&u)))
}

pub async fn update(app: &App, req: &Req, caller: &Caller) -> Result<Reply, ApiError> {
    let body: UpdateBody = req.json()?;
    apply(app, caller, req.param("id"), body).await
}

pub async fn disable(app: &App, req: &Req, caller: &Caller) -> Result<Reply, ApiError> {
    let body = UpdateBody {
        disabled: Some(true),
        ..Default::default()
    };
    apply(app, caller, req.param("id"), body).await
}
