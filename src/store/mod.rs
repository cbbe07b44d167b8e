//! Persistent state for the admin service: users, client API keys, providers (with encrypted keys
//! and model metadata) and logical models, in SQLite or PostgreSQL through diesel-async.
//!
//! One `table!` schema serves both backends; each query is written once and expanded per backend by
//! `with_conn!`, because diesel's async connections are concrete types. The request path never comes
//! here: it reads the in-memory snapshot that `live` rebuilds from this store.

mod identity;
pub mod models;
mod pg_connect;
mod providers;
mod routing;
pub mod schema;

use std::path::Path;
use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

pub use providers::{ProviderBundle, ProviderWrite, Resealed};
pub use routing::LogicalBundle;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

type SqliteConn = SyncConnectionWrapper<diesel::SqliteConnection>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DATABASE_URL: {0}")]
    Url(String),
    #[error("database connection: {0}")]
    Pool(String),
    #[error("migrations: {0}")]
    Migration(String),
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("query: {0}")]
    Query(diesel::result::Error),
    /// A multi-row change stopped by its caller; nothing was written.
    #[error("{0}; nothing was changed")]
    Aborted(String),
    /// The row changed since it was read (another write landed between): nothing was written.
    #[error("changed meanwhile")]
    Stale,
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => StoreError::Conflict,
            Error::NotFound => StoreError::NotFound,
            // The server went away under a pooled connection: the database is down, not the query.
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => StoreError::Pool(info.message().to_string()),
            // A row it must change stayed locked past `lock_timeout` (see `pg_connect`): the
            // database is busy, and nothing was written.
            Error::DatabaseError(_, info) if info.message().ends_with("due to lock timeout") => {
                StoreError::Pool(info.message().to_string())
            }
            e => StoreError::Query(e),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        StoreError::Pool(e.to_string())
    }
}

#[derive(Clone)]
enum Db {
    Pg(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// Longest a database operation may take, from taking a connection to its last row. A database
/// that stops answering without closing its connections (a frozen host, a partition) would
/// otherwise hold an admin call or a configuration poll until TCP gives up, minutes later.
pub(crate) const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// Gives an operation's future its result type (so `?` inside it knows its error type).
pub(crate) fn operation<T, F: std::future::Future<Output = Result<T, StoreError>>>(f: F) -> F {
    f
}

/// Runs `$body` with `$c` bound to a pooled connection of whichever backend is configured, within
/// `OP_TIMEOUT` (or the `within` given). `$body` is the operation's future's body: `?` and
/// `return` inside it end the operation, and its value is the operation's `Result`. A connection
/// whose operation ran out of time is not put back in the pool (it may be mid-query).
macro_rules! with_conn {
    ($store:expr, |$c:ident| $body:expr) => {
        $crate::store::with_conn!($store, within $crate::store::OP_TIMEOUT, |$c| $body)
    };
    ($store:expr, within $limit:expr, |$c:ident| $body:expr) => {
        match &$store.db {
            $crate::store::Db::Pg(pool) => {
                let mut conn = pool.get().await?;
                let done = {
                    let $c = &mut *conn;
                    ::tokio::time::timeout($limit, $crate::store::operation(async { $body })).await
                };
                $crate::store::settle(done, conn, $limit)
            }
            $crate::store::Db::Sqlite(pool) => {
                let mut conn = pool.get().await?;
                let done = {
                    let $c = &mut *conn;
                    ::tokio::time::timeout($limit, $crate::store::operation(async { $body })).await
                };
                $crate::store::settle(done, conn, $limit)
            }
        }
    };
}
pub(crate) use with_conn;

/// Reads of several tables that must see one state of the database (a provider and its keys).
pub(crate) trait SnapshotReads {
    /// Called first in a transaction: its reads then see one snapshot.
    async fn read_one_snapshot(&mut self) -> diesel::QueryResult<()>;
}

impl SnapshotReads for AsyncPgConnection {
    /// PostgreSQL's default isolation gives each statement its own snapshot.
    async fn read_one_snapshot(&mut self) -> diesel::QueryResult<()> {
        self.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
    }
}

impl SnapshotReads for SqliteConn {
    /// A SQLite transaction reads one snapshot already (WAL).
    async fn read_one_snapshot(&mut self) -> diesel::QueryResult<()> {
        Ok(())
    }
}

/// An operation's result; on a timeout, its connection leaves the pool.
pub(crate) fn settle<T, M: deadpool::managed::Manager>(
    done: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
    conn: deadpool::managed::Object<M>,
    limit: Duration,
) -> Result<T, StoreError> {
    match done {
        Ok(result) => result,
        Err(_) => {
            drop(deadpool::managed::Object::take(conn));
            Err(StoreError::Pool(format!(
                "no answer from the database within {} s",
                limit.as_secs()
            )))
        }
    }
}

/// Which backend a `DATABASE_URL` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    /// A file path.
    Sqlite(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        // SQLAlchemy names its driver in the scheme (`postgresql+psycopg://`, the original
        // gateway's form): the server is the same.
        if let Some(rest) = url.strip_prefix("postgresql+").and_then(|r| r.split_once("://")) {
            return Ok(Self::Postgres(format!("postgresql://{}", rest.1)));
        }
        match url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Some(path) if !path.is_empty() => Ok(Self::Sqlite(path.to_string())),
            _ => Err(StoreError::Url(
                "must start with sqlite:// (a file) or postgres:// (a server)".into(),
            )),
        }
    }

    /// The URL without a password, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{p}"),
            Self::Postgres(u) => {
                let Ok(mut url) = url::Url::parse(u) else {
                    return "postgres://(unreadable URL, not shown)".into();
                };
                let userinfo = !url.username().is_empty() || url.password().is_some();
                let _ = url.set_username("");
                let _ = url.set_password(None);
                // libpq-style URLs may carry the password as a parameter too.
                if url.query().is_some() {
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| {
                            let v = if k == "password" {
                                "redacted".into()
                            } else {
                                v.into_owned()
                            };
                            (k.into_owned(), v)
                        })
                        .collect();
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                let shown = url.to_string();
                if userinfo {
                    shown.replacen("://", "://…@", 1)
                } else {
                    shown
                }
            }
        }
    }
}

/// Key of the PostgreSQL advisory lock replicas take to migrate one at a time ("apiproxy").
const MIGRATION_LOCK: i64 = 0x6170_6970_726f_7879;

#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens the pool (creating the SQLite file and its folder when needed) and applies the
    /// embedded migrations. Call it on the runtime that will keep running: PostgreSQL connections
    /// spawn their driver task on the current runtime.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let db = match url {
            DatabaseUrl::Postgres(u) => {
                let target = std::sync::Arc::new(pg_connect::PgTarget::parse(u)?);
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                config.custom_setup = Box::new(move |_| {
                    let target = target.clone();
                    async move { target.connect().await }.boxed()
                });
                let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(u.clone(), config);
                let pool = Pool::builder(manager)
                    .max_size(8)
                    .wait_timeout(Some(Duration::from_secs(5)))
                    // Opening a connection and checking a pooled one (a query) are bounded too.
                    .create_timeout(Some(Duration::from_secs(5)))
                    .recycle_timeout(Some(Duration::from_secs(5)))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Pool(e.to_string()))?;
                Db::Pg(pool)
            }
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Pool(format!("{}: {e}", dir.display())))?;
                }
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.custom_setup = Box::new(|url| {
                    async move {
                        let mut c = SqliteConn::establish(url).await?;
                        // Per-connection settings: wait on a busy writer, enforce foreign keys.
                        c.batch_execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                        )
                        .await
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(c)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::<SqliteConn>::new_with_config(path.clone(), config);
                let pool = Pool::builder(manager)
                    .max_size(4)
                    .wait_timeout(Some(Duration::from_secs(5)))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| StoreError::Pool(e.to_string()))?;
                Db::Sqlite(pool)
            }
        };
        let store = Store { db };
        store.migrate().await?;
        Ok(store)
    }

    /// `AsyncMigrationHarness` blocks in place: this needs the multi-thread runtime Pingora gives
    /// its services.
    async fn migrate(&self) -> Result<(), StoreError> {
        let err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
        match &self.db {
            Db::Pg(pool) => {
                // Replicas starting together on an empty database would each create the tables
                // (and all but one fail): one migrates at a time, under a session advisory lock,
                // and the others then find nothing pending.
                let mut conn = pool.get().await?;
                // Another replica's migration may take longer than a lock wait is allowed.
                conn.batch_execute("SET lock_timeout = 0").await?;
                diesel_async::RunQueryDsl::execute(
                    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")),
                    &mut conn,
                )
                .await?;
                let mut h = AsyncMigrationHarness::new(conn);
                let migrated = h.run_pending_migrations(PG_MIGRATIONS).map(|_| ()).map_err(err);
                let mut conn = h.into_inner();
                diesel_async::RunQueryDsl::execute(
                    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")),
                    &mut conn,
                )
                .await?;
                conn.batch_execute(&pg_connect::set_lock_timeout()).await?;
                migrated?;
            }
            Db::Sqlite(pool) => {
                let conn = pool.get().await?;
                let mut h = AsyncMigrationHarness::new(conn);
                h.run_pending_migrations(SQLITE_MIGRATIONS).map_err(err)?;
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Pg(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A fresh random id: 128 bits, hex.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// An update or delete that touched no row: the item does not exist.
pub(crate) fn found(rows: usize) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db").unwrap(),
            DatabaseUrl::Sqlite("data/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert_eq!(
            DatabaseUrl::parse("postgresql+psycopg://u:pw@db:5432/apiproxy").unwrap(),
            DatabaseUrl::Postgres("postgresql://u:pw@db:5432/apiproxy".into()),
            "SQLAlchemy's driver-named scheme"
        );
        let pg = DatabaseUrl::parse("postgres://u:pw@127.0.0.1/db").unwrap();
        assert_eq!(pg.redacted(), "postgres://…@127.0.0.1/db");
        let pg = DatabaseUrl::parse("postgres://127.0.0.1/db?user=u&password=s3cret&sslmode=require").unwrap();
        assert_eq!(
            pg.redacted(),
            "postgres://127.0.0.1/db?user=u&password=redacted&sslmode=require"
        );
    }
}
