//! The store: every SQL statement dingsync runs, for SQLite, MariaDB/MySQL and PostgreSQL.
//!
//! [`Store`] holds one native sqlx pool; `on_pool!` runs the same statement on whichever
//! backend it is, with `?` placeholders rewritten to `$n` for PostgreSQL. Own tables use
//! portable types (BIGINT epoch milliseconds, VARCHAR, TEXT). Sub-modules, one per concept:
//! `schema` (init, triggers, uninstall), `jeecg_ddl` (JeecgBoot's tables for new databases),
//! the retry queue (`queue`; `claims`; `settle`, a claimed job's end; `queue_admin`, the
//! operators' view), `changes` (the change log's read side and its gaps), `leases`,
//! `snapshots` (and the sync base), `runs`, `events` (Stream events), JeecgBoot's rows
//! (`users` read, `user_writes`, `links`, `departments`, `apps`, `messages`: announcements,
//! deliveries, the outbox), batches of multi-row statements (`batch`: a pull's new users;
//! `link_batch`: a push's records; `update_batch`: a pull's updated users; their types
//! imported through `batch`), `write` (new ids and dingsync's marked writes), `tx` (one
//! transaction on whichever backend, for writes split into steps), `unnest` (PostgreSQL's
//! array inserts), `sample` (the sample organisation and the demo's scripted edits) and `raw`
//! (raw SQL for tests, benchmarks and tools). The pools are private
//! and `on_pool!` crate-private: code outside `store/` reaches the database only through the
//! store.

pub mod apps;
pub mod batch;
pub mod changes;
mod claims;
pub mod departments;
pub mod events;
pub mod jeecg_ddl;
pub mod leases;
mod link_batch;
pub mod links;
pub mod messages;
pub mod queue;
mod queue_admin;
pub mod raw;
pub mod runs;
pub mod sample;
pub mod schema;
mod settle;
pub mod snapshots;
mod tx;
mod unnest;
mod update_batch;
pub mod user_writes;
pub mod users;
mod write;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Executor;

use crate::config::{Backend, DatabaseConfig, DatabaseUrl};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A JeecgBoot table that dingsync needs is missing.
    #[error("JeecgBoot table {0} not found; is this the JeecgBoot database? (`dingsync init --with-jeecg-schema` creates the tables in a new one)")]
    MissingTable(String),
    /// A row would break one of JeecgBoot's unique keys.
    #[error("{table}.{column} {shown:?} already exists (unique key)", shown = crate::sync::model::mask_value(column, value))]
    UniqueClash {
        /// The table.
        table: &'static str,
        /// The unique column.
        column: &'static str,
        /// The clashing value.
        value: String,
    },
    /// No free org_code under a parent (the level is full).
    #[error("no free org_code under {0:?}")]
    OrgCodesExhausted(String),
    /// The database schema is newer than this dingsync.
    #[error("the database has dingsync schema version {found}, newer than this dingsync's {supported}; upgrade dingsync")]
    SchemaTooNew {
        /// In the database.
        found: i64,
        /// Known here.
        supported: i64,
    },
}

impl StoreError {
    /// Whether retrying later may succeed (the database was unreachable, a lock timed out).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database(error) => {
                matches!(
                    error,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                ) || error.as_database_error().is_some_and(|e| {
                    let code = e.code().unwrap_or_default();
                    // SQLite busy/locked, PostgreSQL serialization/deadlock/lock not
                    // available, MySQL's deadlock (SQLSTATE 40001) and its lock wait timeout
                    // (1205, whose SQLSTATE is the generic HY000).
                    matches!(
                        code.as_ref(),
                        "5" | "6" | "517" | "40001" | "40P01" | "55P03"
                    ) || e
                        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .is_some_and(|m| m.number() == 1205)
                })
            }
            _ => false,
        }
    }

    /// Whether the database refused the statement for breaking a unique key, or rolled the
    /// transaction back as a deadlock's (or a serialization failure's) victim.
    fn is_collision(&self) -> bool {
        matches!(self, Self::Database(error) if error.as_database_error().is_some_and(|e| {
            e.is_unique_violation()
                || matches!(e.code().unwrap_or_default().as_ref(), "40001" | "40P01")
        }))
    }
}

/// A result of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// Runs the transaction `attempt` again (4 times at most) while two transactions collide:
/// it broke a unique key another transaction committed after this one looked for it (no lock
/// covers a row that does not exist yet), or the database chose it as a deadlock's victim.
/// The next attempt sees the other's rows and merges into them.
pub(crate) async fn again_on_conflict<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut left: u64 = 4;
    loop {
        match attempt().await {
            Err(error) if left > 0 && error.is_collision() => {
                // Apart a little, so that two colliding transactions do not meet again.
                let pause = rand::Rng::random_range(&mut rand::rng(), 1..=10 * (5 - left));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                left -= 1;
            }
            outcome => return outcome,
        }
    }
}

/// The native pool of one backend.
#[derive(Clone, Debug)]
pub(crate) enum Pools {
    /// SQLite.
    Sqlite(SqlitePool),
    /// MariaDB / MySQL.
    MySql(MySqlPool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's native pool, whatever its backend. Private
/// to the crate (and the pools to the store): SQL outside `store/` goes through a named store
/// method, or, in tests and tools, through `raw`.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pools {
            $crate::store::Pools::Sqlite($pool) => $body,
            $crate::store::Pools::MySql($pool) => $body,
            $crate::store::Pools::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// PostgreSQL's `random_page_cost` for dingsync's sessions (see [`Store::connect_url`]).
const RANDOM_PAGE_COST: &str = "1.1";

/// How long a query waits for a connection: when the database is down this is how soon the
/// daemon hears of it (sqlx's default is 30 s).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Each tenant's department tree as last read, with the version it was read at.
type Trees = std::sync::Arc<
    std::sync::Mutex<
        std::collections::HashMap<
            crate::config::TenantId,
            (i64, std::sync::Arc<departments::DeptRows>),
        >,
    >,
>;

/// The database: JeecgBoot's tables and dingsync's own.
#[derive(Clone, Debug)]
pub struct Store {
    /// The pool (private: SQL goes through the store's methods).
    pools: Pools,
    backend: Backend,
    /// Each tenant's department tree as last read, with the version it was read at (see
    /// [`Store::dept_rows`]); shared by the clones of this store.
    trees: Trees,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A JeecgBoot text column read as absent when it is blank (JeecgBoot writes `''` as often
/// as NULL).
fn blank_to_none(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// A duration in milliseconds, saturating.
pub fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A SQLite pool of `max` connections (the marker is a row there, not a session setting).
async fn sqlite_pool(url: &DatabaseUrl, max: u32) -> StoreResult<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url.expose())?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL survives a process crash; only power loss may drop the
        // last commits. FULL would fsync every transaction.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A file cannot drop a connection; the ping before each statement
        // would only add a round trip to sqlx's SQLite worker thread.
        .test_before_acquire(false)
        .connect_with(options)
        .await?)
}

/// A MariaDB/MySQL pool of `max` connections; `as_dingsync` sets the writer marker on each.
async fn mysql_pool(url: &DatabaseUrl, max: u32, as_dingsync: bool) -> StoreResult<MySqlPool> {
    let options = MySqlConnectOptions::from_str(&url.expose().replacen("mariadb:", "mysql:", 1))?;
    let pool = MySqlPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT);
    let pool = pool.after_connect(move |conn, _| {
        Box::pin(async move {
            // An IN list of more than `eq_range_index_dive_limit` values (200 by
            // default; a slice's lists hold up to 500) is planned from index
            // statistics, and MariaDB then read a whole `third_type` or tenant
            // prefix instead of the listed keys (38 ms a query at 100k users):
            // always look. A server without the variable is still used.
            if let Err(error) = conn
                .execute("SET SESSION eq_range_index_dive_limit = 0")
                .await
            {
                tracing::debug!(error = %error, "eq_range_index_dive_limit not set");
            }
            if !as_dingsync {
                return Ok(());
            }
            // A lock wait fails fast (retryable 1205) rather than holding a
            // worker for InnoDB's default 50 s.
            conn.execute("SET @dingsync_writer = 1, SESSION innodb_lock_wait_timeout = 5")
                .await
                .map(drop)
        })
    });
    Ok(pool.connect_with(options).await?)
}

/// A PostgreSQL pool of `max` connections; `as_dingsync` sets the writer marker on each.
async fn postgres_pool(url: &DatabaseUrl, max: u32, as_dingsync: bool) -> StoreResult<PgPool> {
    // dingsync's queries look rows up by key, a few hundred keys at a time, in
    // tables the server keeps in memory. PostgreSQL's default random_page_cost (4,
    // for spinning disks) made it read all of sys_user for a list of 1,000 phones
    // once the table passed about 50,000 rows (40 ms, against 14 ms through the
    // index); 1.1 is the usual value for SSDs and cached data. It is set for
    // dingsync's own sessions only.
    let options =
        PgConnectOptions::from_str(url.expose())?.options([("random_page_cost", RANDOM_PAGE_COST)]);
    let options = if as_dingsync {
        options.options([("dingsync.writer", "on")])
    } else {
        options
    };
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?)
}

impl Store {
    /// Connects as dingsync. On MariaDB/MySQL and PostgreSQL every connection carries the
    /// session marker the change-log triggers respect, so dingsync's own writes are not
    /// logged as local changes (SQLite uses a marker row instead, see `write`).
    pub async fn connect(config: &DatabaseConfig) -> StoreResult<Self> {
        Self::connect_url(&config.url, config.pool_size.get(), true).await
    }

    /// Connects with `max` connections; `as_dingsync` sets the writer marker.
    pub async fn connect_url(url: &DatabaseUrl, max: u32, as_dingsync: bool) -> StoreResult<Self> {
        let backend = url.backend();
        let pools = match backend {
            Backend::Sqlite => Pools::Sqlite(sqlite_pool(url, max).await?),
            Backend::MySql => Pools::MySql(mysql_pool(url, max, as_dingsync).await?),
            Backend::Postgres => Pools::Postgres(postgres_pool(url, max, as_dingsync).await?),
        };
        Ok(Self {
            pools,
            backend,
            trees: std::sync::Arc::default(),
        })
    }

    /// The dialect.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `text` with `?` placeholders as this backend wants them.
    pub fn sql<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.backend != Backend::Postgres || !text.contains('?') {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 8);
        let mut n = 0;
        for ch in text.chars() {
            if ch == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(ch);
            }
        }
        Cow::Owned(out)
    }

    /// An integer column read as BIGINT, whatever its declared width.
    pub fn int(&self, column: &str) -> String {
        match self.backend {
            Backend::MySql => format!("CAST({column} AS SIGNED)"),
            Backend::Postgres => format!("CAST({column} AS BIGINT)"),
            Backend::Sqlite => format!("CAST({column} AS INTEGER)"),
        }
    }

    /// A column read as text, whatever its declared type.
    pub fn text(&self, column: &str) -> String {
        match self.backend {
            Backend::MySql => format!("CAST({column} AS CHAR)"),
            _ => format!("CAST({column} AS TEXT)"),
        }
    }

    /// Runs one statement without parameters.
    pub async fn execute(&self, statement: &str) -> StoreResult<u64> {
        Ok(on_pool!(self, |pool| pool
            .execute(statement)
            .await?
            .rows_affected()))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await);
    }
}
