//! Users, client API keys, revoked tokens and the change marker.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::found;
use super::models::*;
use super::schema::*;
use super::{with_conn, Store, StoreError};

impl Store {
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        with_conn!(self, |c| Ok(users::table.count().get_result(c).await?))
    }

    pub async fn insert_user(&self, row: &UserRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            diesel::insert_into(users::table).values(row).execute(c).await?;
            Ok(())
        })
    }

    /// Creates the first user only while there is none; `false` when a user already exists.
    /// The check and the insert share a transaction that first locks the configuration version's
    /// row, so racing inits (replicas, or an attacker racing the operator) take turns: under
    /// PostgreSQL's default isolation two transactions would otherwise both count no user and both
    /// insert theirs.
    pub async fn insert_first_user(&self, row: &UserRow) -> Result<bool, StoreError> {
        let result = with_conn!(self, |c| {
            use diesel_async::AsyncConnection;
            c.transaction::<_, StoreError, _>(async |c| {
                diesel::update(config_version::table.find(1))
                    .set(config_version::version.eq(config_version::version + 1))
                    .execute(c)
                    .await?;
                let n: i64 = users::table.count().get_result(c).await?;
                if n > 0 {
                    return Ok(false);
                }
                diesel::insert_into(users::table).values(row).execute(c).await?;
                Ok(true)
            })
            .await
        });
        match result {
            // Lost a race with another replica: someone else created the first user.
            Err(StoreError::Conflict) => Ok(false),
            other => other,
        }
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        with_conn!(self, |c| Ok(users::table
            .order(users::created_at.asc())
            .select(UserRow::as_select())
            .load(c)
            .await?))
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        with_conn!(self, |c| Ok(users::table
            .find(id)
            .select(UserRow::as_select())
            .first(c)
            .await
            .optional()?))
    }

    pub async fn get_user_by_name(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        with_conn!(self, |c| Ok(users::table
            .filter(users::username.eq(username))
            .select(UserRow::as_select())
            .first(c)
            .await
            .optional()?))
    }

    /// Applies `changes`; with `revoke`, every token the user holds stops working: the token
    /// version goes up in the same statement, from the stored value (two changes at once each
    /// bump it; one computed from an earlier read could give a token issued in between back its
    /// validity).
    pub async fn update_user(&self, id: &str, changes: &UserChanges, revoke: bool) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            let n = if revoke {
                diesel::update(users::table.find(id))
                    .set((changes, users::token_version.eq(users::token_version + 1)))
                    .execute(c)
                    .await?
            } else {
                diesel::update(users::table.find(id)).set(changes).execute(c).await?
            };
            found(n)
        })
    }

    pub async fn count_api_keys(&self) -> Result<i64, StoreError> {
        with_conn!(self, |c| Ok(api_keys::table.count().get_result(c).await?))
    }

    pub async fn insert_api_key(&self, row: &ApiKeyRow) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            diesel::insert_into(api_keys::table).values(row).execute(c).await?;
            Ok(())
        })
    }

    /// Inserts the key unless its user already has `max`; `false` then. The count and the insert
    /// share a transaction that first locks the user's row, so creates racing on one user (or on
    /// several replicas) take turns instead of all counting `max - 1`.
    pub async fn insert_api_key_within(&self, row: &ApiKeyRow, max: usize) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            use diesel_async::AsyncConnection;
            c.transaction::<_, StoreError, _>(async |c| {
                diesel::update(users::table.find(&row.user_id))
                    .set(users::updated_at.eq(users::updated_at))
                    .execute(c)
                    .await?;
                let n: i64 = api_keys::table
                    .filter(api_keys::user_id.eq(&row.user_id))
                    .count()
                    .get_result(c)
                    .await?;
                if n >= max as i64 {
                    return Ok(false);
                }
                diesel::insert_into(api_keys::table).values(row).execute(c).await?;
                Ok(true)
            })
            .await
        })
    }

    pub async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRow>, StoreError> {
        with_conn!(self, |c| Ok(api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .order(api_keys::created_at.asc())
            .select(ApiKeyRow::as_select())
            .load(c)
            .await?))
    }

    pub async fn get_api_key(&self, user_id: &str, key_id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        with_conn!(self, |c| Ok(api_keys::table
            .filter(api_keys::user_id.eq(user_id))
            .filter(api_keys::id.eq(key_id))
            .select(ApiKeyRow::as_select())
            .first(c)
            .await
            .optional()?))
    }

    /// Applies `changes` to a key. With `only_narrowing` (a user changing their own key) the
    /// write also requires, in the same statement, that it re-enables nothing and moves no expiry
    /// later than the key has at that moment, so an admin's disable that lands between a user's
    /// check and write is never undone. `NotFound` when no row was written.
    pub async fn update_api_key(
        &self,
        user_id: &str,
        key_id: &str,
        changes: &ApiKeyChanges,
        only_narrowing: bool,
    ) -> Result<(), StoreError> {
        use diesel::dsl::not;
        use diesel::sql_types::Bool;
        let reenables = only_narrowing && changes.disabled == Some(false);
        let moves_expiry = only_narrowing && changes.expires_at.is_some();
        let new_expiry = changes.expires_at.flatten();
        with_conn!(self, |c| {
            let n = diesel::update(
                api_keys::table
                    .filter(api_keys::user_id.eq(user_id))
                    .filter(api_keys::id.eq(key_id))
                    .filter(not(reenables.into_sql::<Bool>()).or(api_keys::disabled.eq(false)))
                    .filter(
                        not(moves_expiry.into_sql::<Bool>())
                            .or(api_keys::expires_at.is_null())
                            .or(api_keys::expires_at.ge(new_expiry).assume_not_null()),
                    ),
            )
            .set(changes)
            .execute(c)
            .await?;
            found(n)
        })
    }

    pub async fn delete_api_key(&self, user_id: &str, key_id: &str) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            let n = diesel::delete(
                api_keys::table
                    .filter(api_keys::user_id.eq(user_id))
                    .filter(api_keys::id.eq(key_id)),
            )
            .execute(c)
            .await?;
            found(n)
        })
    }

    /// Keys that may authenticate: not disabled, and their user not disabled. Expiry is checked at
    /// request time, since it passes without any write.
    pub async fn usable_api_keys(&self) -> Result<Vec<(ApiKeyRow, UserKeyLimits)>, StoreError> {
        with_conn!(self, |c| Ok(api_keys::table
            .inner_join(users::table.on(users::id.eq(api_keys::user_id)))
            .filter(api_keys::disabled.eq(false))
            .filter(users::disabled.eq(false))
            .select((ApiKeyRow::as_select(), UserKeyLimits::as_select()))
            .load(c)
            .await?))
    }

    /// Revokes a token; false when it already was. The insert is the claim: of requests racing
    /// to revoke (and use) the same refresh token, exactly one gets true.
    pub async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        let row = (revoked_tokens::jti.eq(jti), revoked_tokens::expires_at.eq(expires_at));
        // In a block of its own: a `?` in `with_conn!`'s body returns from the function, past the
        // match below.
        let result: Result<(), StoreError> = with_conn!(self, |c| {
            async {
                diesel::insert_into(revoked_tokens::table)
                    .values(row)
                    .execute(c)
                    .await?;
                // Forget revocations of tokens that have expired anyway. Best effort: the claim above
                // is made, and failing the caller now would spend their token for nothing.
                let expired = revoked_tokens::table.filter(revoked_tokens::expires_at.lt(super::now() - 60));
                if let Err(e) = diesel::delete(expired).execute(c).await {
                    tracing::warn!(error = %e, "forgetting expired token revocations failed");
                }
                Ok(())
            }
            .await
        });
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether any of a token's revocation entries (its `jti`, its sign-in's) is revoked.
    pub async fn is_revoked(&self, entries: &[String]) -> Result<bool, StoreError> {
        with_conn!(self, |c| {
            let n: i64 = revoked_tokens::table
                .filter(revoked_tokens::jti.eq_any(entries))
                .count()
                .get_result(c)
                .await?;
            Ok(n > 0)
        })
    }

    /// The change marker: bumped by every admin write, polled by every replica.
    pub async fn config_version(&self) -> Result<i64, StoreError> {
        with_conn!(self, |c| Ok(config_version::table
            .find(1)
            .select(config_version::version)
            .first(c)
            .await?))
    }

    pub async fn bump_config_version(&self) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            diesel::update(config_version::table.find(1))
                .set(config_version::version.eq(config_version::version + 1))
                .execute(c)
                .await?;
            Ok(())
        })
    }
}
