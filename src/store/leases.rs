//! Named leases (`dingsync_lease`): one holder at a time until it expires, so that one
//! instance runs each cron tick and each tenant's run.

use std::time::Duration;

use crate::config::Backend;

use super::{ms, now_ms, Store, StoreResult};

impl Store {
    /// Takes or renews the lease `name` for `owner` for `ttl`; `true` when `owner` holds it.
    pub async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let insert = match self.backend() {
            Backend::MySql => "INSERT IGNORE INTO dingsync_lease (name, owner, expires_at) VALUES (?, ?, ?)",
            _ => "INSERT INTO dingsync_lease (name, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        };
        let insert = self.sql(insert);
        let take = self.sql("UPDATE dingsync_lease SET owner = ?, expires_at = ? WHERE name = ? AND (owner = ? OR expires_at < ?)");
        let now = now_ms();
        let until = now + ms(ttl);
        let taken = crate::store::on_pool!(self, |pool| {
            let inserted = sqlx::query(&insert)
                .bind(name)
                .bind(owner)
                .bind(until)
                .execute(pool)
                .await?
                .rows_affected();
            inserted == 1
                || sqlx::query(&take)
                    .bind(owner)
                    .bind(until)
                    .bind(name)
                    .bind(owner)
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected()
                    == 1
        });
        Ok(taken)
    }

    /// Gives the lease up, if `owner` holds it.
    pub async fn release_lease(&self, name: &str, owner: &str) -> StoreResult<bool> {
        let sql = self.sql("DELETE FROM dingsync_lease WHERE name = ? AND owner = ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(name)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected())
            == 1)
    }

    /// Gives up every lease `owner` holds, its runs' included (at shutdown); returns how many.
    pub async fn release_leases_of(&self, owner: &str) -> StoreResult<u64> {
        // Its runs' leases too: their owners are `<owner>/<run>`.
        let sql = self.sql("DELETE FROM dingsync_lease WHERE owner = ? OR owner LIKE ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(owner)
            .bind(format!("{owner}/%"))
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// The holder of a lease that has not expired.
    pub async fn lease_holder(&self, name: &str) -> StoreResult<Option<String>> {
        let sql = self.sql("SELECT owner FROM dingsync_lease WHERE name = ? AND expires_at >= ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_scalar(
            &sql
        )
        .bind(name)
        .bind(now_ms())
        .fetch_optional(pool)
        .await?))
    }

    /// Deletes leases that expired before `before` (epoch ms).
    pub async fn purge_leases(&self, before: i64) -> StoreResult<u64> {
        let sql = self.sql("DELETE FROM dingsync_lease WHERE expires_at < ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()))
    }
}
