//! One row per sync run (`dingsync_run`): started, finished with its counts or error; the
//! last runs and last successes for `status` and the metrics.

use std::collections::BTreeMap;

use crate::config::TenantId;

use super::{now_ms, Store, StoreResult};

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

/// A finished run, for `dingsync status`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct RunRow {
    /// push / pull / reconcile.
    pub kind: String,
    /// Epoch ms.
    pub finished_at: Option<i64>,
    /// Created.
    pub created: i64,
    /// Updated.
    pub updated: i64,
    /// Deleted.
    pub deleted: i64,
    /// Failed.
    pub failed: i64,
    /// Error of the run, if any.
    pub error: Option<String>,
}

impl Store {
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
                crate::store::on_pool!(self, |pool| sqlx::query_scalar(&sql)
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
        crate::store::on_pool!(self, |pool| sqlx::query(&sql)
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

    /// `(tenant, kind, finished_at)` of each tenant's last run of each kind that finished
    /// without a failure or an error.
    pub async fn last_successes(&self) -> StoreResult<Vec<(TenantId, String, i64)>> {
        let sql = "SELECT tenant_id, kind, MAX(finished_at) FROM dingsync_run \
                   WHERE finished_at IS NOT NULL AND failed = 0 AND error IS NULL GROUP BY tenant_id, kind";
        let rows: Vec<(TenantId, String, Option<i64>)> =
            crate::store::on_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .filter_map(|(tenant, kind, at)| Some((tenant, kind, at?)))
            .collect())
    }

    /// The latest finished run of each kind for `tenant`: (kind, finished_at, created,
    /// updated, deleted, failed, error).
    pub async fn last_runs(&self, tenant: TenantId) -> StoreResult<Vec<RunRow>> {
        let sql = self.sql(
            "SELECT r.kind, r.finished_at, r.created, r.updated, r.deleted, r.failed, r.error FROM dingsync_run r \
             WHERE r.tenant_id = ? AND r.id = (SELECT MAX(x.id) FROM dingsync_run x WHERE x.tenant_id = r.tenant_id AND x.kind = r.kind AND x.finished_at IS NOT NULL) ORDER BY r.kind",
        );
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_as::<
            _,
            RunRow,
        >(&sql)
        .bind(tenant)
        .fetch_all(pool)
        .await?))
    }
}
