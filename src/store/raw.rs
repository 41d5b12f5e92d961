//! Raw SQL for tests, benchmarks and tools — the one way code outside `store/` reaches the
//! database without a named store method: JeecgBoot rows a test sets up the way JeecgBoot or
//! an operator would, rows and server settings a test or benchmark inspects. dingsync's own
//! code never calls these: everything it runs is a named method of the store.
//!
//! Statements run as given: placeholders as the backend wants them ([`Store::sql`] rewrites
//! `?`), values bound as [`Arg`]s, rows decoded into any type every backend can decode
//! ([`AnyRow`]: tuples of the usual column types).

use super::tx::{bound, Tx};
use super::{Pools, Store, StoreResult};

pub use super::tx::{AnyRow, Arg};

/// A transaction of raw statements held open by a test (a slow writer, or JeecgBoot's own
/// button writing several rows at once); rolled back when dropped uncommitted.
pub struct RawTransaction(Tx);

impl RawTransaction {
    /// Runs one statement without parameters in the transaction.
    pub async fn execute(&mut self, statement: &str) -> StoreResult<u64> {
        self.0.execute(statement, &[]).await
    }

    /// Commits.
    pub async fn commit(self) -> StoreResult<()> {
        self.0.commit().await
    }
}

impl Store {
    /// Runs one statement with `args` bound in order; the rows it affected.
    pub async fn execute_with(&self, statement: &str, args: &[Arg<'_>]) -> StoreResult<u64> {
        Ok(super::on_pool!(self, |pool| bound!(
            sqlx::query(statement),
            args
        )
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// Runs a script of statements separated by `;`, without parameters (a schema dump).
    pub async fn execute_script(&self, script: &str) -> StoreResult<()> {
        super::on_pool!(self, |pool| sqlx::raw_sql(script)
            .execute(pool)
            .await
            .map(drop)?);
        Ok(())
    }

    /// Every row `statement` gives, with `args` bound in order.
    pub async fn fetch_rows<T: AnyRow>(
        &self,
        statement: &str,
        args: &[Arg<'_>],
    ) -> StoreResult<Vec<T>> {
        Ok(super::on_pool!(self, |pool| bound!(
            sqlx::query_as(statement),
            args
        )
        .fetch_all(pool)
        .await?))
    }

    /// The first column of the first row `statement` gives (`None`: no row), with `args`
    /// bound in order.
    pub async fn fetch_value<T>(&self, statement: &str, args: &[Arg<'_>]) -> StoreResult<Option<T>>
    where
        (T,): AnyRow,
        T: Send + Unpin,
    {
        Ok(super::on_pool!(self, |pool| bound!(
            sqlx::query_scalar(statement),
            args
        )
        .fetch_optional(pool)
        .await?))
    }

    /// Opens a transaction for raw statements ([`RawTransaction`]).
    pub async fn begin_raw(&self) -> StoreResult<RawTransaction> {
        let tx = match &self.pools {
            Pools::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pools::MySql(pool) => Tx::MySql(pool.begin().await?),
            Pools::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        };
        Ok(RawTransaction(tx))
    }
}
