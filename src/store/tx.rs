//! One open transaction on whichever backend the store has ([`Tx`]), so that a
//! multi-statement write can be split into named steps that each take `&mut Tx`: the steps
//! run in the same transaction, in the same order, with the same statement text as one long
//! function would. Values are bound as [`Arg`]s, each with the Rust type the statement bound
//! before (text, optional text, or a 64-bit integer), so the wire types stay the same.
//!
//! It owns no SQL of its own: callers pass statements already rewritten by [`Store::sql`].
//! Dropping a `Tx` without [`Tx::commit`] rolls it back, as dropping sqlx's transaction does.

use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, MySql, Postgres, Sqlite, Transaction};

use super::{Pools, Store, StoreResult};

/// A value bound to a statement (of a transaction split into steps, or of `raw`).
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    /// Text (bound as `&str`).
    Text(&'a str),
    /// Text or NULL (bound as `Option<&str>`).
    OptText(Option<&'a str>),
    /// An integer (bound as `i64`).
    Int(i64),
}

/// An open transaction on the store's backend.
pub(super) enum Tx {
    /// SQLite.
    Sqlite(Transaction<'static, Sqlite>),
    /// MariaDB / MySQL.
    MySql(Transaction<'static, MySql>),
    /// PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$tx` bound to the native transaction, whatever its backend.
macro_rules! on_tx {
    ($self:expr, |$tx:ident| $body:expr) => {
        match $self {
            Tx::Sqlite($tx) => $body,
            Tx::MySql($tx) => $body,
            Tx::Postgres($tx) => $body,
        }
    };
}

/// `$query` with `$args` bound in order, each as its [`Arg`] type.
macro_rules! bound {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match *arg {
                Arg::Text(value) => query.bind(value),
                Arg::OptText(value) => query.bind(value),
                Arg::Int(value) => query.bind(value),
            };
        }
        query
    }};
}
pub(super) use bound;

/// A row type every backend can decode.
pub trait AnyRow:
    Send
    + Unpin
    + for<'r> FromRow<'r, SqliteRow>
    + for<'r> FromRow<'r, MySqlRow>
    + for<'r> FromRow<'r, PgRow>
{
}

impl<T> AnyRow for T where
    T: Send
        + Unpin
        + for<'r> FromRow<'r, SqliteRow>
        + for<'r> FromRow<'r, MySqlRow>
        + for<'r> FromRow<'r, PgRow>
{
}

impl Store {
    /// Opens a transaction with `begin` (`BEGIN`, or SQLite's `BEGIN IMMEDIATE`).
    pub(super) async fn begin_tx(&self, begin: &'static str) -> StoreResult<Tx> {
        Ok(match &self.pools {
            Pools::Sqlite(pool) => Tx::Sqlite(pool.begin_with(begin).await?),
            Pools::MySql(pool) => Tx::MySql(pool.begin_with(begin).await?),
            Pools::Postgres(pool) => Tx::Postgres(pool.begin_with(begin).await?),
        })
    }
}

impl Tx {
    /// Runs `sql` with `args`; the rows it affected.
    pub(super) async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> StoreResult<u64> {
        Ok(on_tx!(self, |tx| bound!(sqlx::query(sql), args)
            .execute(&mut **tx)
            .await?
            .rows_affected()))
    }

    /// Every row `sql` gives.
    pub(super) async fn fetch_all<T: AnyRow>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> StoreResult<Vec<T>> {
        Ok(on_tx!(self, |tx| bound!(sqlx::query_as(sql), args)
            .fetch_all(&mut **tx)
            .await?))
    }

    /// The first row `sql` gives, if any.
    pub(super) async fn fetch_optional<T: AnyRow>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> StoreResult<Option<T>> {
        Ok(on_tx!(self, |tx| bound!(sqlx::query_as(sql), args)
            .fetch_optional(&mut **tx)
            .await?))
    }

    /// The first column of every row `sql` gives.
    pub(super) async fn fetch_scalars<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> StoreResult<Vec<T>>
    where
        (T,): AnyRow,
        T: Send + Unpin,
    {
        Ok(on_tx!(self, |tx| bound!(sqlx::query_scalar(sql), args)
            .fetch_all(&mut **tx)
            .await?))
    }

    /// The first column of the first row `sql` gives, if any.
    pub(super) async fn fetch_optional_scalar<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> StoreResult<Option<T>>
    where
        (T,): AnyRow,
        T: Send + Unpin,
    {
        Ok(on_tx!(self, |tx| bound!(sqlx::query_scalar(sql), args)
            .fetch_optional(&mut **tx)
            .await?))
    }

    /// Commits.
    pub(super) async fn commit(self) -> StoreResult<()> {
        on_tx!(self, |tx| tx.commit().await?);
        Ok(())
    }
}
