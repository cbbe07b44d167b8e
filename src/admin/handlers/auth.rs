//! Login, token refresh and logout.

use serde::Deserialize;
use serde_json::json;

use super::{blocking, store};
use std::time::Instant;

use crate::admin::guard::Caller;
use crate::admin::http::{ApiError, Reply, Req};
use crate::admin::throttle::LoginFailures;
use crate::app::App;
use crate::auth::jwt::{sign_in_entry, Claims, Subject, TokenKind};
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
    // Before a password slot is taken: a name under attack costs no hashing. The try counts as a
    // failure from here on, until it succeeds.
    let attempt = failures
        .begin(&body.username, req.peer, Instant::now())
        .map_err(|wait| ApiError::TooManyLogins {
            retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        })?;
    let user = match check_password(app, body).await {
        Ok(Some(user)) => user,
        // A wrong password (or name) stays counted.
        Ok(None) => return Err(ApiError::Unauthorized("wrong username or password")),
        // No password was checked (the database, or every password slot busy): not a failure.
        Err(e) => {
            failures.abandon(attempt);
            return Err(e);
        }
    };
    failures.succeeded(attempt);
    let subject = Subject {
        id: &user.id,
        role: &user.role,
        ver: user.token_version,
    };
    let pair = app
        .tokens
        .issue(&subject, None, now())
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

/// The user the body names, when its password is theirs and they may sign in.
async fn check_password(app: &App, body: LoginBody) -> Result<Option<crate::store::models::UserRow>, ApiError> {
    let user = store(app)?.get_user_by_name(&body.username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok =
        blocking(move || password::verify(&body.password, hash.as_deref().unwrap_or(password::dummy_hash()))).await?;
    Ok(user.filter(|u| ok && !u.disabled))
}

/// The body of `/auth/refresh` and `/auth/revoke`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

/// The claims of the refresh token a body carries (signature, expiry and kind checked).
fn refresh_claims(app: &App, req: &Req) -> Result<Claims, ApiError> {
    let body: RefreshBody = req.json()?;
    app.tokens
        .verify(&body.refresh_token, TokenKind::Refresh)
        .map_err(|_| ApiError::Unauthorized("invalid or expired refresh token"))
}

/// Rotates the refresh token: the presented one is revoked, a new pair of the same sign-in is
/// issued. A refresh token presented again (stolen, replayed, or a retry racing its first use)
/// ends its whole sign-in: the thief's pair and the owner's alike (RFC 9700 §4.14.2).
pub async fn refresh(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let claims = refresh_claims(app, req)?;
    let store = store(app)?;
    if store.is_revoked(&claims.revocation_entries()).await? {
        end_sign_in(app, &claims.jti, claims.exp, claims.sid.as_deref()).await?;
        return Err(ApiError::Unauthorized("refresh token has been revoked"));
    }
    let user = store
        .get_user(&claims.sub)
        .await?
        .filter(|u| !u.disabled && u.token_version == claims.ver)
        .ok_or(ApiError::Unauthorized("refresh token has been revoked"))?;
    // Used by a request racing this one: only the one that revoked it gets a new pair, and the
    // reuse ends the sign-in that pair belongs to.
    if !store.revoke_token(&claims.jti, claims.exp).await? {
        end_sign_in(app, &claims.jti, claims.exp, claims.sid.as_deref()).await?;
        return Err(ApiError::Unauthorized("refresh token has been revoked"));
    }
    let subject = Subject {
        id: &user.id,
        role: &user.role,
        ver: user.token_version,
    };
    let pair = app
        .tokens
        .issue(&subject, claims.sign_in(), now())
        .map_err(|_| ApiError::Internal)?;
    Ok(Reply::ok(json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
    })))
}

/// Revokes a token and every other token of its sign-in (a token from before sign-ins were
/// tracked: itself alone). The sign-in's entry is kept until the longest refresh token it could
/// have been issued has expired. Already revoked is revoked.
async fn end_sign_in(app: &App, jti: &str, exp: i64, sid: Option<&str>) -> Result<(), ApiError> {
    let store = store(app)?;
    store.revoke_token(jti, exp).await?;
    if let Some(sid) = sid {
        let ttl = &app.tokens.ttl;
        let until = now() + ttl.access_s.max(ttl.refresh_s) + 60;
        store.revoke_token(&sign_in_entry(sid), until).await?;
    }
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Ends the caller's sign-in (every token it has bought), and the sign-in of a refresh token given
/// in the body when it is another of the caller's.
pub async fn logout(app: &App, req: &Req, caller: &Caller) -> Result<Reply, ApiError> {
    let body: LogoutBody = req.json()?;
    // Already revoked (a second logout racing this one) is still logged out.
    end_sign_in(app, &caller.jti, caller.exp, caller.sid.as_deref()).await?;
    if let Some(rt) = body.refresh_token {
        let claims = app
            .tokens
            .verify(&rt, TokenKind::Refresh)
            .map_err(|_| ApiError::bad("refresh_token", "is not a valid refresh token"))?;
        if claims.sub != caller.user_id {
            return Err(ApiError::bad("refresh_token", "belongs to another user"));
        }
        end_sign_in(app, &claims.jti, claims.exp, claims.sid.as_deref()).await?;
    }
    Ok(Reply::ok(json!({"logged_out": true})))
}

/// Ends a refresh token's sign-in with that token alone: signing out needs no live access token.
pub async fn revoke(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let claims = refresh_claims(app, req)?;
    end_sign_in(app, &claims.jti, claims.exp, claims.sid.as_deref()).await?;
    Ok(Reply::ok(json!({"revoked": true})))
}
