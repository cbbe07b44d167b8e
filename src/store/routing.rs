//! Logical models and their upstreams.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::found;
use super::models::*;
use super::schema::*;
use super::{with_conn, Store, StoreError};

/// A logical model with its upstreams in their stored order.
#[derive(Clone, Debug)]
pub struct LogicalBundle {
    pub row: LogicalModelRow,
    pub upstreams: Vec<UpstreamRow>,
}

impl Store {
    pub async fn insert_logical(&self, b: &LogicalBundle) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            c.transaction::<_, StoreError, _>(async |c| {
                diesel::insert_into(logical_models::table)
                    .values(&b.row)
                    .execute(c)
                    .await?;
                for u in &b.upstreams {
                    diesel::insert_into(logical_model_upstreams::table)
                        .values(u)
                        .execute(c)
                        .await?;
                }
                Ok(())
            })
            .await
        })
    }

    /// Replaces the description and the whole upstream list.
    pub async fn update_logical(&self, b: &LogicalBundle) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            c.transaction::<_, StoreError, _>(async |c| {
                let n = diesel::update(logical_models::table.find(&b.row.id))
                    .set((
                        logical_models::description.eq(&b.row.description),
                        logical_models::updated_at.eq(b.row.updated_at),
                    ))
                    .execute(c)
                    .await?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                diesel::delete(
                    logical_model_upstreams::table.filter(logical_model_upstreams::logical_model_id.eq(&b.row.id)),
                )
                .execute(c)
                .await?;
                for u in &b.upstreams {
                    diesel::insert_into(logical_model_upstreams::table)
                        .values(u)
                        .execute(c)
                        .await?;
                }
                Ok(())
            })
            .await
        })
    }

    pub async fn delete_logical(&self, id: &str) -> Result<(), StoreError> {
        with_conn!(self, |c| {
            c.transaction::<_, StoreError, _>(async |c| {
                diesel::delete(logical_model_upstreams::table.filter(logical_model_upstreams::logical_model_id.eq(id)))
                    .execute(c)
                    .await?;
                let n = diesel::delete(logical_models::table.find(id)).execute(c).await?;
                found(n)
            })
            .await
        })
    }

    pub async fn logical_bundles(&self) -> Result<Vec<LogicalBundle>, StoreError> {
        // One snapshot: a logical model read while it changes must not come with half its upstreams.
        let (rows, ups) = with_conn!(self, |c| {
            use super::SnapshotReads;
            use diesel_async::AsyncConnection;
            c.transaction::<_, StoreError, _>(async |c| {
                c.read_one_snapshot().await?;
                let rows: Vec<LogicalModelRow> = logical_models::table
                    .order(logical_models::created_at.asc())
                    .select(LogicalModelRow::as_select())
                    .load(c)
                    .await?;
                let ups: Vec<UpstreamRow> = logical_model_upstreams::table
                    .order(logical_model_upstreams::position.asc())
                    .select(UpstreamRow::as_select())
                    .load(c)
                    .await?;
                Ok((rows, ups))
            })
            .await
        })?;
        let mut by: HashMap<String, Vec<UpstreamRow>> = HashMap::new();
        for u in ups {
            by.entry(u.logical_model_id.clone()).or_default().push(u);
        }
        Ok(rows
            .into_iter()
            .map(|row| LogicalBundle {
                upstreams: by.remove(&row.id).unwrap_or_default(),
                row,
            })
            .collect())
    }
}
