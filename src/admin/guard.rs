//! Who is calling the admin API: a valid, unrevoked access token of an enabled user. The role is
//! read from the database, not the token, so a demotion takes effect at once.

use super::http::{ApiError, Req};
use crate::app::App;
use crate::auth::jwt::TokenKind;

pub const ROLE_ADMIN: &str = "admin";
pub const ROLE_USER: &str = "user";

pub struct Caller {
    pub user_id: String,
    pub role: String,
    /// The access token's id, expiry and sign-in, for logout.
    pub jti: String,
    pub exp: i64,
    pub sid: Option<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == ROLE_ADMIN
    }

    /// Admins act for anyone; users only for themselves.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.is_admin() || self.user_id == user_id
    }
}

pub async fn authenticate(app: &App, req: &Req) -> Result<Caller, ApiError> {
    let token = req
        .bearer
        .as_deref()
        .ok_or(ApiError::Unauthorized("missing bearer token"))?;
    let claims = app
        .tokens
        .verify(token, TokenKind::Access)
        .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
    let store = app.store().ok_or(ApiError::Unavailable("the database is not ready"))?;
    if store.is_revoked(&claims.revocation_entries()).await? {
        return Err(ApiError::Unauthorized("token has been revoked"));
    }
    let user = store
        .get_user(&claims.sub)
        .await?
        .ok_or(ApiError::Unauthorized("invalid or expired token"))?;
    if user.disabled || user.token_version != claims.ver {
        return Err(ApiError::Unauthorized("token has been revoked"));
    }
    Ok(Caller {
        user_id: user.id,
        role: user.role,
        jti: claims.jti,
        exp: claims.exp,
        sid: claims.sid,
    })
}
