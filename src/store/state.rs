//! dingsync's bookkeeping besides the queue: the change log (read side), named leases,
//! snapshots of what was last synced, and one row per sync run.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{Backend, TenantId};

use super::{ms, now_ms, Store, StoreResult};

/// A `dingsync_change` row written by a trigger.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Change {
    /// Monotonic id.
    pub id: i64,
    /// The JeecgBoot table.
    pub table_name: String,
    /// The entity key (user id for membership tables).
    pub row_key: String,
    /// I, U or D.
    pub op: String,
    /// The row's tenant, where the table has one.
    pub tenant_id: Option<i64>,
    /// Epoch ms.
    pub changed_at: i64,
}

/// A snapshot: what dingsync last synced for one entity.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Snapshot {
    /// Tenant.
    pub tenant_id: i64,
    /// `user` or `dept`.
    pub entity: String,
    /// JeecgBoot id.
    pub local_id: String,
    /// DingTalk userid or dept id.
    pub ding_id: String,
    /// Hash of the synced content.
    pub content_hash: String,
    /// Epoch ms.
    pub synced_at: i64,
}

/// Counts of one sync run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Created.
    pub created: i64,
    /// Updated.
    pub updated: i64,
    /// Deleted.
    pub deleted: i64,
    /// Nothing to do.
    pub skipped: i64,
    /// Failed.
    pub failed: i64,
}

impl Store {
    /// Change rows after `after`, oldest first, at most `limit`.
    pub async fn changes_after(&self, after: i64, limit: i64) -> StoreResult<Vec<Change>> {
        let sql = self.sql(
            "SELECT id, table_name, row_key, op, tenant_id, changed_at FROM dingsync_change WHERE id > ? ORDER BY id LIMIT ?",
        );
        Ok(crate::on_pool!(self, |pool| sqlx::query_as::<_, Change>(
            &sql
        )
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// Deletes change rows older than `before` (epoch ms).
    pub async fn purge_changes(&self, before: i64) -> StoreResult<u64> {
        let sql = self.sql("DELETE FROM dingsync_change WHERE changed_at < ?");
        Ok(crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()))
    }

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
        let taken = crate::on_pool!(self, |pool| {
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
        Ok(crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(name)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected())
            == 1)
    }

    /// The holder of a lease that has not expired.
    pub async fn lease_holder(&self, name: &str) -> StoreResult<Option<String>> {
        let sql = self.sql("SELECT owner FROM dingsync_lease WHERE name = ? AND expires_at >= ?");
        Ok(crate::on_pool!(self, |pool| sqlx::query_scalar(&sql)
            .bind(name)
            .bind(now_ms())
            .fetch_optional(pool)
            .await?))
    }

    /// Records what was synced for one entity.
    pub async fn put_snapshot(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_id: &str,
        ding_id: &str,
        hash: &str,
    ) -> StoreResult<()> {
        let sql = match self.backend() {
            Backend::MySql => {
                "INSERT INTO dingsync_snapshot (tenant_id, entity, local_id, ding_id, content_hash, synced_at) VALUES (?, ?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE ding_id = VALUES(ding_id), content_hash = VALUES(content_hash), synced_at = VALUES(synced_at)"
            }
            _ => {
                "INSERT INTO dingsync_snapshot (tenant_id, entity, local_id, ding_id, content_hash, synced_at) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (tenant_id, entity, local_id) DO UPDATE SET ding_id = excluded.ding_id, \
                 content_hash = excluded.content_hash, synced_at = excluded.synced_at"
            }
        };
        let sql = self.sql(sql);
        crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(tenant_id)
            .bind(entity)
            .bind(local_id)
            .bind(ding_id)
            .bind(hash)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// All snapshots of one tenant and entity kind.
    pub async fn snapshots(&self, tenant_id: TenantId, entity: &str) -> StoreResult<Vec<Snapshot>> {
        let sql = self.sql(
            "SELECT tenant_id, entity, local_id, ding_id, content_hash, synced_at FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ?",
        );
        Ok(crate::on_pool!(self, |pool| sqlx::query_as::<_, Snapshot>(
            &sql
        )
        .bind(tenant_id)
        .bind(entity)
        .fetch_all(pool)
        .await?))
    }

    /// Forgets one entity's snapshot.
    pub async fn delete_snapshot(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_id: &str,
    ) -> StoreResult<()> {
        let sql = self.sql(
            "DELETE FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ? AND local_id = ?",
        );
        crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(tenant_id)
            .bind(entity)
            .bind(local_id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Opens a `dingsync_run` row; returns its id.
    pub async fn start_run(&self, tenant_id: TenantId, kind: &str) -> StoreResult<i64> {
        let now = now_ms();
        let id = match &self.pools {
            super::Pools::MySql(pool) => {
                let sql = "INSERT INTO dingsync_run (tenant_id, kind, started_at) VALUES (?, ?, ?)";
                let done = sqlx::query(sql)
                    .bind(tenant_id)
                    .bind(kind)
                    .bind(now)
                    .execute(pool)
                    .await?;
                i64::try_from(done.last_insert_id()).unwrap_or(i64::MAX)
            }
            _ => {
                let sql = self.sql("INSERT INTO dingsync_run (tenant_id, kind, started_at) VALUES (?, ?, ?) RETURNING id");
                crate::on_pool!(self, |pool| sqlx::query_scalar(&sql)
                    .bind(tenant_id)
                    .bind(kind)
                    .bind(now)
                    .fetch_one(pool)
                    .await?)
            }
        };
        Ok(id)
    }

    /// Closes a run row with its counts, API calls by route and error.
    pub async fn finish_run(
        &self,
        id: i64,
        counts: &RunCounts,
        calls: &BTreeMap<&str, u64>,
        error: Option<&str>,
    ) -> StoreResult<()> {
        let sql = self.sql(
            "UPDATE dingsync_run SET finished_at = ?, created = ?, updated = ?, deleted = ?, skipped = ?, failed = ?, \
             api_calls = ?, error = ? WHERE id = ?",
        );
        let calls = serde_json::to_string(calls).unwrap_or_default();
        crate::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(now_ms())
            .bind(counts.created)
            .bind(counts.updated)
            .bind(counts.deleted)
            .bind(counts.skipped)
            .bind(counts.failed)
            .bind(&calls)
            .bind(error)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }
}
