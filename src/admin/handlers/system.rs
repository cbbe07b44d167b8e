//! Bootstrap: the first admin, and generating a `SECRET_KEY` value.

use serde::Deserialize;
use serde_json::json;

use super::users::{check_username, user_view};
use super::{blocking, store};
use crate::admin::guard::ROLE_ADMIN;
use crate::admin::http::{ApiError, Reply, Req};
use crate::app::App;
use crate::auth::password;
use crate::store::models::UserRow;
use crate::store::{new_id, now};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    #[serde(default = "default_admin")]
    username: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

fn default_admin() -> String {
    "admin".into()
}

/// Creates the first admin with a generated password, returned in this answer only.
pub async fn admin_init(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let body: InitBody = req.json()?;
    check_username(&body.username)?;
    let store = store(app)?;
    if store.count_users().await? > 0 {
        return Err(ApiError::Conflict("the system is already initialised".into()));
    }
    let secrets = app.secrets.clone();
    let (pw, hash) = blocking(move || {
        let pw = password::generate(&secrets)?;
        let hash = password::hash(&secrets, &pw)?;
        Ok::<_, crate::secrets::SecretError>((pw, hash))
    })
    .await??;
    let t = now();
    let row = UserRow {
        id: new_id(),
        username: body.username,
        email: body.email,
        display_name: body.display_name,
        password_hash: hash,
        role: ROLE_ADMIN.into(),
        disabled: false,
        token_version: 0,
        created_at: t,
        updated_at: t,
        key_allowed_providers: None,
        key_rate_limit_rps: None,
    };
    if !store.insert_first_user(&row).await? {
        return Err(ApiError::Conflict("the system is already initialised".into()));
    }
    tracing::info!(user = %row.username, "first admin created");
    Ok(Reply::created(json!({"user": user_view(&row), "password": pw})))
}

/// A fresh random value for `SECRET_KEY`. It is not applied: the operator sets it and restarts.
pub async fn secret_generate(_app: &App, _req: &Req) -> Result<Reply, ApiError> {
    let secret = crate::secrets::generate_secret()?;
    Ok(Reply::ok(json!({
        "secret_key": secret,
        "note": "Not applied. To move to it, set it as SECRET_KEY with the current one as SECRET_KEY_PREVIOUS, restart, and run `apiproxy rotate-secret` (README: Rotating SECRET_KEY); changing SECRET_KEY without that invalidates stored provider keys, client keys and tokens.",
    })))
}
