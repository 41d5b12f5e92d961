//! Snapshots (`dingsync_snapshot`): what dingsync last synced for each entity — its
//! DingTalk id and the sync base (the fields last agreed with DingTalk, JSON) — read by
//! entity, local id or DingTalk id, written alone or in the transaction of the link it
//! belongs to (`put_snapshot_in`), and forgotten when the DingTalk twin is deleted.

use crate::config::{Backend, TenantId};

use super::tx::{Arg, Tx};
use super::{now_ms, Store, StoreResult};

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
    /// Hash of the synced content (of `base`, from schema v5 on).
    pub content_hash: String,
    /// Epoch ms.
    pub synced_at: i64,
    /// The fields last agreed with DingTalk, as JSON (schema v5; none before).
    pub base: Option<String>,
}

/// A snapshot to write: an entity's DingTalk id and its sync base (JSON).
#[derive(Clone, Debug)]
pub struct SnapshotWrite {
    /// Tenant.
    pub tenant: TenantId,
    /// `user` or `dept`.
    pub entity: &'static str,
    /// JeecgBoot id.
    pub local_id: String,
    /// DingTalk userid or department id.
    pub ding_id: String,
    /// The base, as JSON.
    pub base: String,
}

/// The head of an insert of snapshots; rows follow (tenant, entity, local id, DingTalk id,
/// hash, time, base).
pub(super) const SNAPSHOT_INSERT: &str = "INSERT INTO dingsync_snapshot (tenant_id, entity, local_id, ding_id, content_hash, synced_at, base) VALUES";

impl Store {
    /// Records what was synced for one entity: its DingTalk id and base (JSON).
    pub async fn put_snapshot(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_id: &str,
        ding_id: &str,
        base: &str,
    ) -> StoreResult<()> {
        let sql = self.put_snapshot_sql();
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(tenant_id)
            .bind(entity)
            .bind(local_id)
            .bind(ding_id)
            .bind(crate::sync::model::content_hash(&[base]))
            .bind(now_ms())
            .bind(base)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// The upsert of [`Store::put_snapshot`] (binds: tenant, entity, local id, DingTalk id,
    /// hash, time, base).
    pub(super) fn put_snapshot_sql(&self) -> String {
        let sql = format!(
            "{SNAPSHOT_INSERT} (?, ?, ?, ?, ?, ?, ?){}",
            self.snapshot_upsert()
        );
        self.sql(&sql).into_owned()
    }

    /// What an insert of snapshots does with an entity that has one: the dialect's upsert.
    pub(super) fn snapshot_upsert(&self) -> &'static str {
        match self.backend() {
            Backend::MySql => {
                " ON DUPLICATE KEY UPDATE ding_id = VALUES(ding_id), content_hash = VALUES(content_hash), \
                 synced_at = VALUES(synced_at), base = VALUES(base)"
            }
            _ => {
                " ON CONFLICT (tenant_id, entity, local_id) DO UPDATE SET ding_id = excluded.ding_id, \
                 content_hash = excluded.content_hash, synced_at = excluded.synced_at, base = excluded.base"
            }
        }
    }

    /// Writes `snapshot` (with its base) in `tx`.
    pub(super) async fn put_snapshot_in(
        &self,
        tx: &mut Tx,
        snapshot: &SnapshotWrite,
    ) -> StoreResult<()> {
        let hash = crate::sync::model::content_hash(&[&snapshot.base]);
        let args = [
            Arg::Int(snapshot.tenant),
            Arg::Text(snapshot.entity),
            Arg::Text(&snapshot.local_id),
            Arg::Text(&snapshot.ding_id),
            Arg::Text(&hash),
            Arg::Int(super::now_ms()),
            Arg::Text(&snapshot.base),
        ];
        tx.execute(&self.put_snapshot_sql(), &args).await?;
        Ok(())
    }

    /// All snapshots of one tenant and entity kind.
    pub async fn snapshots(&self, tenant_id: TenantId, entity: &str) -> StoreResult<Vec<Snapshot>> {
        let sql = self.sql(
            "SELECT tenant_id, entity, local_id, ding_id, content_hash, synced_at, base FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ?",
        );
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_as::<
            _,
            Snapshot,
        >(&sql)
        .bind(tenant_id)
        .bind(entity)
        .fetch_all(pool)
        .await?))
    }

    /// The snapshots of `local_ids` (one slice of a run's users).
    pub async fn snapshots_of(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_ids: &[&str],
    ) -> StoreResult<Vec<Snapshot>> {
        self.snapshots_by("local_id", (tenant_id, entity), local_ids)
            .await
    }

    /// The snapshots of one tenant and entity kind whose DingTalk id is among `ding_ids`
    /// (who claims these DingTalk users).
    pub async fn snapshots_to(
        &self,
        tenant_id: TenantId,
        entity: &str,
        ding_ids: &[&str],
    ) -> StoreResult<Vec<Snapshot>> {
        self.snapshots_by("ding_id", (tenant_id, entity), ding_ids)
            .await
    }

    /// The snapshots of `(tenant, entity)` whose `column` is one of `values` (none when
    /// empty).
    async fn snapshots_by(
        &self,
        column: &'static str,
        (tenant_id, entity): (TenantId, &str),
        values: &[&str],
    ) -> StoreResult<Vec<Snapshot>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT tenant_id, entity, local_id, ding_id, content_hash, synced_at, base FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ? AND {column} IN ({})",
            super::write::placeholders(values.len())
        );
        let sql = self.sql(&sql);
        Ok(crate::store::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, Snapshot>(&sql)
                .persistent(false)
                .bind(tenant_id)
                .bind(entity);
            for value in values {
                query = query.bind(*value);
            }
            query.fetch_all(pool).await?
        }))
    }

    /// `(sys_user.id, userid)` of the user links and snapshots of `tenant_id` (links of
    /// every tenant for 0) whose `sys_user` row is gone: users deleted for good.
    pub async fn gone_users(&self, tenant_id: TenantId) -> StoreResult<Vec<(String, String)>> {
        let links = format!(
            "SELECT a.sys_user_id, a.third_user_id FROM sys_third_account a WHERE a.third_type = ?{} AND a.sys_user_id IS NOT NULL AND a.third_user_id IS NOT NULL AND a.third_user_id <> '' AND NOT EXISTS (SELECT 1 FROM sys_user u WHERE u.id = a.sys_user_id)",
            if tenant_id != 0 { " AND a.tenant_id = ?" } else { "" }
        );
        let snapshots = "SELECT s.local_id, s.ding_id FROM dingsync_snapshot s WHERE s.tenant_id = ? AND s.entity = 'user' AND NOT EXISTS (SELECT 1 FROM sys_user u WHERE u.id = s.local_id)";
        let (links, snapshots) = (self.sql(&links), self.sql(snapshots));
        Ok(crate::store::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, (String, String)>(&links)
                .bind(crate::jeecg::THIRD_TYPE_DINGTALK);
            if tenant_id != 0 {
                query = query.bind(tenant_id);
            }
            let mut gone = query.fetch_all(pool).await?;
            gone.extend(
                sqlx::query_as::<_, (String, String)>(&snapshots)
                    .bind(tenant_id)
                    .fetch_all(pool)
                    .await?,
            );
            gone
        }))
    }

    /// One entity's snapshot.
    pub async fn snapshot_of(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_id: &str,
    ) -> StoreResult<Option<Snapshot>> {
        let sql = self.sql(
            "SELECT tenant_id, entity, local_id, ding_id, content_hash, synced_at, base FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ? AND local_id = ?",
        );
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_as::<
            _,
            Snapshot,
        >(&sql)
        .bind(tenant_id)
        .bind(entity)
        .bind(local_id)
        .fetch_optional(pool)
        .await?))
    }

    /// Forgets one entity's snapshot.
    pub async fn delete_snapshot(
        &self,
        tenant_id: TenantId,
        entity: &str,
        local_id: &str,
    ) -> StoreResult<()> {
        self.delete_snapshots(tenant_id, entity, "local_id", local_id)
            .await
    }

    /// Forgets the snapshots of one DingTalk entity (deleted in DingTalk).
    pub async fn forget_ding_id(
        &self,
        tenant_id: TenantId,
        entity: &str,
        ding_id: &str,
    ) -> StoreResult<()> {
        self.delete_snapshots(tenant_id, entity, "ding_id", ding_id)
            .await
    }

    async fn delete_snapshots(
        &self,
        tenant_id: TenantId,
        entity: &str,
        column: &'static str,
        value: &str,
    ) -> StoreResult<()> {
        let text = format!(
            "DELETE FROM dingsync_snapshot WHERE tenant_id = ? AND entity = ? AND {column} = ?"
        );
        let sql = self.sql(&text);
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(tenant_id)
            .bind(entity)
            .bind(value)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }
}
