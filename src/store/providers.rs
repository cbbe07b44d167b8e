//! Providers with their encrypted keys and model metadata.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::found;
use super::models::*;
use super::schema::*;
use super::{with_conn, Store, StoreError};

/// A provider row with everything that hangs off it.
#[derive(Clone)]
pub struct ProviderBundle {
    pub row: ProviderRow,
    pub keys: Vec<ProviderKeyRow>,
    pub models: Vec<ProviderModelRow>,
}

/// What `Store::reseal_providers` rewrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Provider keys sealed again.
    pub keys: usize,
    /// Provider keys left as they were.
    pub keys_left: usize,
    /// Providers whose settings were sealed again.
    pub settings: usize,
}

/// A provider update: the new row, and the new model list when it changes.
pub struct ProviderWrite<'a> {
    pub row: &'a ProviderRow,
    /// The stored `settings` the write was made from: sealed anew (with fresh nonces) by every
    /// write, so a write that landed meanwhile shows as a difference, and this one is refused
    /// rather than undoing it.
    pub read_settings: &'a str,
    pub models: Option<&'a [ProviderModelRow]>,
    /// Keys that replace every stored key of the provider, when given.
    pub keys: Option<&'a [ProviderKeyRow]>,
}

/// How long `rotate-secret` may take to reseal every provider key in its one transaction.
const RESEAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

impl Store {
    pub async fn insert_provider(&self, b: &ProviderBundle) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            c.transaction::<_, StoreError, _>(async |c| {
                diesel::insert_into(providers::table).values(&b.row).execute(c).await?;
                for k in &b.keys {
                    diesel::insert_into(provider_api_keys::table)
                        .values(k)
                        .execute(c)
                        .await?;
                }
                for m in &b.models {
                    diesel::insert_into(provider_models::table).values(m).execute(c).await?;
                }
                Ok(())
            })
            .await
        })
    }

    pub async fn update_provider(&self, w: ProviderWrite<'_>) -> Result<(), StoreError> {
        let r = w.row;
        with_conn!(self, |c| {
            c.transaction::<_, StoreError, _>(async |c| {
                let n = diesel::update(
                    providers::table
                        .find(&r.id)
                        .filter(providers::settings.eq(w.read_settings)),
                )
                .set((
                    providers::base_url.eq(&r.base_url),
                    providers::api_style.eq(&r.api_style),
                    providers::provider_type.eq(&r.provider_type),
                    providers::weight.eq(r.weight),
                    providers::settings.eq(&r.settings),
                    providers::updated_at.eq(r.updated_at),
                ))
                .execute(c)
                .await?;
                if n == 0 {
                    let there: i64 = providers::table.find(&r.id).count().get_result(c).await?;
                    return Err(if there == 0 {
                        StoreError::NotFound
                    } else {
                        StoreError::Stale
                    });
                }
                if let Some(models) = w.models {
                    diesel::delete(provider_models::table.filter(provider_models::provider_id.eq(&r.id)))
                        .execute(c)
                        .await?;
                    for m in models {
                        diesel::insert_into(provider_models::table).values(m).execute(c).await?;
                    }
                }
                if let Some(keys) = w.keys {
                    diesel::delete(provider_api_keys::table.filter(provider_api_keys::provider_id.eq(&r.id)))
                        .execute(c)
                        .await?;
                    for k in keys {
                        diesel::insert_into(provider_api_keys::table)
                            .values(k)
                            .execute(c)
                            .await?;
                    }
                }
                Ok(())
            })
            .await
        })
    }

    pub async fn delete_provider(&self, id: &str) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            c.transaction::<_, StoreError, _>(async |c| {
                diesel::delete(provider_api_keys::table.filter(provider_api_keys::provider_id.eq(id)))
                    .execute(c)
                    .await?;
                diesel::delete(provider_models::table.filter(provider_models::provider_id.eq(id)))
                    .execute(c)
                    .await?;
                let n = diesel::delete(providers::table.find(id)).execute(c).await?;
                found(n)
            })
            .await
        })
    }

    pub async fn provider_bundles(&self) -> Result<Vec<ProviderBundle>, StoreError> {
        // One snapshot: a provider read while it is deleted must not come without its keys.
        let (rows, keys, models) = with_conn!(self, |c| {
            use super::SnapshotReads;
            use diesel_async::AsyncConnection;
            c.transaction::<_, StoreError, _>(async |c| {
                c.read_one_snapshot().await?;
                let rows: Vec<ProviderRow> = providers::table
                    .order(providers::created_at.asc())
                    .select(ProviderRow::as_select())
                    .load(c)
                    .await?;
                let keys: Vec<ProviderKeyRow> = provider_api_keys::table
                    .order(provider_api_keys::created_at.asc())
                    .select(ProviderKeyRow::as_select())
                    .load(c)
                    .await?;
                let models: Vec<ProviderModelRow> = provider_models::table
                    .order(provider_models::model.asc())
                    .select(ProviderModelRow::as_select())
                    .load(c)
                    .await?;
                Ok((rows, keys, models))
            })
            .await
        })?;
        let mut keys_by: HashMap<String, Vec<ProviderKeyRow>> = HashMap::new();
        for k in keys {
            keys_by.entry(k.provider_id.clone()).or_default().push(k);
        }
        let mut models_by: HashMap<String, Vec<ProviderModelRow>> = HashMap::new();
        for m in models {
            models_by.entry(m.provider_id.clone()).or_default().push(m);
        }
        Ok(rows
            .into_iter()
            .map(|row| ProviderBundle {
                keys: keys_by.remove(&row.id).unwrap_or_default(),
                models: models_by.remove(&row.id).unwrap_or_default(),
                row,
            })
            .collect())
    }

    pub async fn provider_bundle(&self, id: &str) -> Result<Option<ProviderBundle>, StoreError> {
        Ok(self.provider_bundles().await?.into_iter().find(|b| b.row.id == id))
    }

    /// Seals every provider key and every provider's `settings` again, in one transaction:
    /// `reseal_key` and `reseal_settings` give the new form, `None` to leave one as it is, or an
    /// error that aborts the whole change. Each write is a compare-and-swap on the value that was
    /// read: one an admin changes meanwhile is read and resealed again, never overwritten with its
    /// old value.
    pub async fn reseal_providers(
        &self,
        reseal_key: impl Fn(&ProviderKeyRow) -> Result<Option<String>, String> + Sync,
        reseal_settings: impl Fn(&ProviderRow) -> Result<Option<String>, String> + Sync,
    ) -> Result<Resealed, StoreError> {
        /// Tries per item before giving up on one that keeps changing.
        const TRIES: usize = 5;
        const CHANGING: &str = "kept changing while it was resealed; run rotate-secret again";
        let (reseal_key, reseal_settings) = (&reseal_key, &reseal_settings);
        // A command run by hand, once, over every key: a remote database's round trips add up
        // past the request path's limit with a few hundred keys.
        with_conn!(self, within RESEAL_TIMEOUT, |c| {
            c.transaction::<_, StoreError, _>(async |c| {
                let mut done = Resealed::default();
                let rows: Vec<ProviderRow> = providers::table.select(ProviderRow::as_select()).load(c).await?;
                'providers: for mut row in rows {
                    for _ in 0..TRIES {
                        let Some(settings) = reseal_settings(&row).map_err(StoreError::Aborted)? else {
                            continue 'providers;
                        };
                        let n = diesel::update(
                            providers::table
                                .find(&row.id)
                                .filter(providers::settings.eq(&row.settings)),
                        )
                        .set((providers::settings.eq(settings), providers::updated_at.eq(super::now())))
                        .execute(c)
                        .await?;
                        if n == 1 {
                            done.settings += 1;
                            continue 'providers;
                        }
                        // Changed (or deleted) since it was read: read it again.
                        match providers::table
                            .find(&row.id)
                            .select(ProviderRow::as_select())
                            .first(c)
                            .await
                            .optional()?
                        {
                            Some(again) => row = again,
                            None => continue 'providers,
                        }
                    }
                    return Err(StoreError::Aborted(format!(
                        "the settings of provider {} {CHANGING}",
                        row.id
                    )));
                }
                let keys: Vec<ProviderKeyRow> = provider_api_keys::table
                    .select(ProviderKeyRow::as_select())
                    .load(c)
                    .await?;
                'keys: for mut key in keys {
                    for _ in 0..TRIES {
                        let Some(sealed) = reseal_key(&key).map_err(StoreError::Aborted)? else {
                            done.keys_left += 1;
                            continue 'keys;
                        };
                        let n = diesel::update(
                            provider_api_keys::table
                                .find(&key.id)
                                .filter(provider_api_keys::encrypted_key.eq(&key.encrypted_key)),
                        )
                        .set((
                            provider_api_keys::encrypted_key.eq(sealed),
                            provider_api_keys::updated_at.eq(super::now()),
                        ))
                        .execute(c)
                        .await?;
                        if n == 1 {
                            done.keys += 1;
                            continue 'keys;
                        }
                        match provider_api_keys::table
                            .find(&key.id)
                            .select(ProviderKeyRow::as_select())
                            .first(c)
                            .await
                            .optional()?
                        {
                            Some(again) => key = again,
                            None => continue 'keys,
                        }
                    }
                    return Err(StoreError::Aborted(format!("provider key {} {CHANGING}", key.id)));
                }
                Ok(done)
            })
            .await
        })
    }

    pub async fn insert_provider_key(&self, row: &ProviderKeyRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            diesel::insert_into(provider_api_keys::table)
                .values(row)
                .execute(c)
                .await?;
            Ok(())
        })
    }

    pub async fn update_provider_key(
        &self,
        provider_id: &str,
        key_id: &str,
        changes: &ProviderKeyChanges,
    ) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            let n = diesel::update(
                provider_api_keys::table
                    .filter(provider_api_keys::provider_id.eq(provider_id))
                    .filter(provider_api_keys::id.eq(key_id)),
            )
            .set(changes)
            .execute(c)
            .await?;
            found(n)
        })
    }

    pub async fn delete_provider_key(&self, provider_id: &str, key_id: &str) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            let n = diesel::delete(
                provider_api_keys::table
                    .filter(provider_api_keys::provider_id.eq(provider_id))
                    .filter(provider_api_keys::id.eq(key_id)),
            )
            .execute(c)
            .await?;
            found(n)
        })
    }
}
