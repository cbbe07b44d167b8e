//! `apiproxy rotate-secret`: moves everything stored under the previous `SECRET_KEY` onto the new
//! one. It runs with the environment the gateway runs with after the change — `SECRET_KEY` the new
//! secret, `SECRET_KEY_PREVIOUS` the old one — so replicas can be rolled onto that pair first
//! (they read keys sealed under either) and the command run once afterwards.

use crate::live::ProviderSettings;
use crate::secrets::{check_secret, Opened, Secrets};
use crate::server::storage_env;
use crate::store::Store;

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Provider keys sealed again under `SECRET_KEY`.
    pub resealed: usize,
    /// Provider keys already under `SECRET_KEY` (a rotation run twice changes nothing).
    pub already_current: usize,
    /// Providers whose header values were sealed again under `SECRET_KEY`.
    pub settings_resealed: usize,
    /// Minted client keys: stored only as tags under the secret they were minted with, they stay
    /// valid while `SECRET_KEY_PREVIOUS` is given.
    pub client_keys: i64,
}

impl std::fmt::Display for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "provider keys sealed again under SECRET_KEY: {}, already under it: {}.\n\
             Providers whose header values were sealed again: {}.\n\
             Minted client keys: {}. Those minted before the rotation are accepted while \
             SECRET_KEY_PREVIOUS is set; mint new ones, then remove it.",
            self.resealed, self.already_current, self.settings_resealed, self.client_keys
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("{0} is not set: set SECRET_KEY to the new secret and SECRET_KEY_PREVIOUS to the one in use (when the gateway generated it, the data folder's secret_key file)")]
    Missing(&'static str),
    #[error("{name}: {message}")]
    Secret { name: &'static str, message: String },
    #[error("SECRET_KEY and SECRET_KEY_PREVIOUS are the same")]
    Same,
    #[error("{0}")]
    Environment(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// Seals every stored provider key and header value under `SECRET_KEY`, in one transaction (a key that opens with
/// neither secret stops it with nothing changed), and announces the change to running replicas.
pub fn rotate_secret() -> Result<Rotation, RotateError> {
    let env = storage_env().map_err(RotateError::Environment)?;
    let current = env.secret_key.ok_or(RotateError::Missing("SECRET_KEY"))?;
    let previous = env
        .previous_secret_key
        .ok_or(RotateError::Missing("SECRET_KEY_PREVIOUS"))?;
    for (name, value) in [("SECRET_KEY", &current), ("SECRET_KEY_PREVIOUS", &previous)] {
        check_secret(value).map_err(|e| RotateError::Secret {
            name,
            message: e.to_string(),
        })?;
    }
    if current == previous {
        return Err(RotateError::Same);
    }
    let secrets = Secrets::from_root(current.as_bytes()).with_previous(previous.as_bytes());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| RotateError::Environment(e.to_string()))?;
    runtime.block_on(async {
        let store = Store::open(&env.database_url).await?;
        let done = store
            .reseal_providers(
                |key| match secrets.open(&key.encrypted_key, &key.id) {
                    Ok((_, Opened::Current)) => Ok(None),
                    Ok((plain, Opened::Previous)) => {
                        secrets.encrypt(&plain, &key.id).map(Some).map_err(|e| e.to_string())
                    }
                    Err(_) => Err(format!(
                        "provider key {} of provider {} opens with neither SECRET_KEY nor SECRET_KEY_PREVIOUS",
                        key.id, key.provider_id
                    )),
                },
                |provider| {
                    ProviderSettings::reseal(&provider.settings, &provider.id, &secrets)
                        .map_err(|e| format!("provider {}: {e}", provider.id))
                },
            )
            .await?;
        store.bump_config_version().await?;
        Ok(Rotation {
            resealed: done.keys,
            already_current: done.keys_left,
            settings_resealed: done.settings,
            client_keys: store.count_api_keys().await?,
        })
    })
}
