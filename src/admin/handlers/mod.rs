//! Admin API handlers, one module per resource. Each validates its input (400 naming the field),
//! writes through the store, then calls `live::commit` so the proxy sees the change at once.

pub mod api_keys;
pub mod auth;
pub mod logical;
pub mod provider_keys;
pub mod providers;
pub mod routing;
pub mod system;
pub mod users;

use serde::{Deserialize, Deserializer};

use super::http::ApiError;
use crate::app::App;
use crate::store::Store;

pub fn store(app: &App) -> Result<&Store, ApiError> {
    app.store().ok_or(ApiError::Unavailable("the database is not ready"))
}

/// Writes are visible on this replica when this returns, and on the others within a second.
pub async fn commit(app: &App) -> Result<(), ApiError> {
    crate::live::commit(app).await.map_err(ApiError::from)
}

/// For `PUT` bodies: absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Ids people choose (providers, logical models): 1–64 characters, no `/` or whitespace.
pub fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || id.contains('/') || id.chars().any(char::is_whitespace) {
        return Err(ApiError::bad(
            field,
            "must be 1-64 characters without `/` or whitespace",
        ));
    }
    Ok(())
}

/// Password checks and hashes run at once at most: each takes ~19 MiB and a core for tens of
/// milliseconds (argon2), in the process that also serves the proxy, and logins need no token; a
/// flood of them must not take the proxy's memory and cores.
static PASSWORD_WORK: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// How long a request waits for its turn before it is told to come back.
const PASSWORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs slow, blocking work (password hashing) off the async workers, a bounded number at once.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let _turn = tokio::time::timeout(PASSWORD_WAIT, PASSWORD_WORK.acquire())
        .await
        .map_err(|_| ApiError::Unavailable("too many password checks at once; try again shortly"))?
        .map_err(|_| ApiError::Internal)?;
    tokio::task::spawn_blocking(f).await.map_err(|_| ApiError::Internal)
}
