//! Login, token refresh and logout.

use serde::Deserialize;
use serde_json::json;

use super::{blocking, store};
use std::time::Instant;

use crate::admin::guard::Caller;
use crate::admin::http::{ApiError, Reply, Req};
use crate::admin::throttle::LoginFailures;
use crate::app::App;
use crate::auth::jwt::TokenKind;
use crate::auth::password;
use crate::store::now;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

pub async fn login(app: &App, req: &Req, failures: &LoginFailures) -> Result<Reply, ApiError> {
    let body: LoginBody = req.json()?;
    // Before a password slot is taken: a name under attack costs no hashing.
    failures
        .check(&body.username, Instant::now())
        .map_err(|wait| ApiError::TooManyLogins {
            retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        })?;
    let store = store(app)?;
    let user = store.get_user_by_name(&body.username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok =
        blocking(move || password::verify(&body.password, hash.as_deref().unwrap_or(password::dummy_hash()))).await?;
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        _ => {
            failures.failed(&body.username, Instant::now());
            return Err(ApiError::Unauthorized("wrong username or password"));
        }
    };
    failures.succeeded(&body.username);
    let pair = app
        .tokens
        .issue(&user.id, &user.role, user.token_version, now())
        .map_err(|_| ApiError::Internal)?;
    Ok(Reply::ok(json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "user_id": user.id,
        "role": user.role,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

/// Rotates the refresh token: the presented one is revoked, a new pair is issued.
pub async fn refresh(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let body: RefreshBody = req.json()?;
    let claims = app
        .tokens
        .verify(&body.refresh_token, TokenKind::Refresh)
        .map_err(|_| ApiError::Unauthorized("invalid or expired refresh token"))?;
    let store = store(app)?;
    if store.is_revoked(&claims.jti).await? {
        return Err(ApiError::Unauthorized("refresh token has been revoked"));
    }
    let user = store
        .get_user(&claims.sub)
        .await?
        .filter(|u| !u.disabled && u.token_version == claims.ver)
        .ok_or(ApiError::Unauthorized("refresh token has been revoked"))?;
    // Used by a request racing this one: only the one that revoked it gets a new pair.
    if !store.revoke_token(&claims.jti, claims.exp).await? {
        return Err(ApiError::Unauthorized("refresh token has been revoked"));
    }
    let pair = app
        .tokens
        .issue(&user.id, &user.role, user.token_version, now())
        .map_err(|_| ApiError::Internal)?;
    Ok(Reply::ok(json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

pub async fn logout(app: &App, req: &Req, caller: &Caller) -> Result<Reply, ApiError> {
    let body: LogoutBody = req.json()?;
    let store = store(app)?;
    // Already revoked (a second logout racing this one) is still logged out.
    store.revoke_token(&caller.jti, caller.exp).await?;
    if let Some(rt) = body.refresh_token {
        let claims = app
            .tokens
            .verify(&rt, TokenKind::Refresh)
            .map_err(|_| ApiError::bad("refresh_token", "is not a valid refresh token"))?;
        if claims.sub != caller.user_id {
            return Err(ApiError::bad("refresh_token", "belongs to another user"));
        }
        store.revoke_token(&claims.jti, claims.exp).await?;
    }
    Ok(Reply::ok(json!({"logged_out": true})))
}
