//! The queue as operators and monitoring see it: `dingsync queue list|retry|drop`
//! ([`Store::list_jobs`], [`Store::retry_dead`], [`Store::retry_all_dead`],
//! [`Store::drop_job`]), `dingsync status` ([`Store::queue_stats`]) and the metrics
//! ([`Store::job_counts`]). A dead job retried merges into a pending job of its entity, as a
//! settled one does.

use crate::config::TenantId;

use super::queue::{pending_key, state, Job, JOB_COLUMNS};
use super::{again_on_conflict, now_ms, Store, StoreResult};

/// Which jobs to list.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<String>,
    /// Only this tenant.
    pub tenant_id: Option<TenantId>,
    /// Only this kind.
    pub kind: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<i64>,
}

/// `(tenant, kind, state, jobs)` rows.
pub type JobCounts = Vec<(TenantId, String, String, i64)>;

/// (state, jobs, earliest due time) of one state.
type StateCount = (String, i64, Option<i64>);

/// Queue figures of one tenant, for `dingsync status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Pending jobs.
    pub pending: i64,
    /// Running jobs.
    pub running: i64,
    /// Dead jobs.
    pub dead: i64,
    /// Due time of the oldest pending job (epoch ms).
    pub oldest_pending_run_at: Option<i64>,
    /// The last failure of a dead or retrying job.
    pub last_error: Option<String>,
}

impl Store {
    /// Jobs matching `filter`, oldest due first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM dingsync_job WHERE 1 = 1");
        if filter.state.is_some() {
            sql.push_str(" AND state = ?");
        }
        if filter.tenant_id.is_some() {
            sql.push_str(" AND tenant_id = ?");
        }
        if filter.kind.is_some() {
            sql.push_str(" AND kind = ?");
        }
        sql.push_str(" ORDER BY run_at, id LIMIT ?");
        let sql = self.sql(&sql);
        Ok(crate::store::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, Job>(&sql);
            if let Some(state) = &filter.state {
                query = query.bind(state.clone());
            }
            if let Some(tenant) = filter.tenant_id {
                query = query.bind(tenant);
            }
            if let Some(kind) = &filter.kind {
                query = query.bind(kind.clone());
            }
            query
                .bind(filter.limit.unwrap_or(100))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Puts a dead job back to pending, due now, attempts reset. When the entity already has
    /// a pending job, the dead one is simply removed (the pending one does the work).
    pub async fn retry_dead(&self, id: i64) -> StoreResult<bool> {
        again_on_conflict(|| self.retry_dead_once(id)).await
    }

    /// One attempt of `retry_dead`.
    async fn retry_dead_once(&self, id: i64) -> StoreResult<bool> {
        let select = self.sql(
            "SELECT tenant_id, kind, entity_key FROM dingsync_job WHERE id = ? AND state = 'dead'",
        );
        let exists = self.pending_of_key("id");
        let delete = self.sql("DELETE FROM dingsync_job WHERE id = ? AND state = 'dead'");
        let revive = self.sql(
            "UPDATE dingsync_job SET state = 'pending', pending_key = ?, attempts = 0, waits = 0, run_at = ?, updated_at = ? WHERE id = ? AND state = 'dead'",
        );
        let now = now_ms();
        let begin = self.begin_statement();
        crate::store::on_pool!(self, |pool| {
            let mut tx = pool.begin_with(begin).await?;
            let row: Option<(i64, String, String)> = sqlx::query_as(&select)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((tenant_id, kind, key)) = row else {
                tx.commit().await?;
                return Ok(false);
            };
            let pending = pending_key(tenant_id, &kind, &key);
            let pending_job: Option<i64> = sqlx::query_scalar(&exists)
                .bind(&pending)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let changed = if pending_job.is_some() {
                sqlx::query(&delete).bind(id).execute(&mut *tx).await?
            } else {
                sqlx::query(&revive)
                    .bind(&pending)
                    .bind(now)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
            };
            // Retried or superseded meanwhile: nothing was done here.
            let done = changed.rows_affected() == 1;
            tx.commit().await?;
            Ok(done)
        })
    }

    /// Retries every dead job (of one tenant when given); returns how many.
    pub async fn retry_all_dead(&self, tenant_id: Option<TenantId>) -> StoreResult<u64> {
        let filter = JobFilter {
            state: Some(state::DEAD.into()),
            tenant_id,
            limit: Some(i64::MAX),
            ..JobFilter::default()
        };
        let mut count = 0;
        for job in self.list_jobs(&filter).await? {
            count += u64::from(self.retry_dead(job.id).await?);
        }
        Ok(count)
    }

    /// Deletes a job that is not running; `false` when there is none (or it is running).
    pub async fn drop_job(&self, id: i64) -> StoreResult<bool> {
        let sql = self.sql("DELETE FROM dingsync_job WHERE id = ? AND state <> 'running'");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected())
            == 1)
    }

    /// Jobs by `(tenant, kind, state, count)`, and `(tenant, created_at)` of each tenant's
    /// oldest pending job: what a metrics scrape reads.
    pub async fn job_counts(&self) -> StoreResult<(JobCounts, Vec<(TenantId, i64)>)> {
        let counts =
            "SELECT tenant_id, kind, state, COUNT(*) FROM dingsync_job GROUP BY tenant_id, kind, state";
        let oldest = "SELECT tenant_id, MIN(created_at) FROM dingsync_job WHERE state = 'pending' GROUP BY tenant_id";
        let (counts, oldest): (JobCounts, Vec<(TenantId, Option<i64>)>) =
            crate::store::on_pool!(self, |pool| (
                sqlx::query_as(counts).fetch_all(pool).await?,
                sqlx::query_as(oldest).fetch_all(pool).await?
            ));
        Ok((
            counts,
            oldest
                .into_iter()
                .filter_map(|(tenant, at)| Some((tenant, at?)))
                .collect(),
        ))
    }

    /// Queue figures of `tenant`.
    pub async fn queue_stats(&self, tenant: TenantId) -> StoreResult<QueueStats> {
        let counts = self.sql("SELECT state, COUNT(*), MIN(run_at) FROM dingsync_job WHERE tenant_id = ? GROUP BY state");
        let error = self.sql("SELECT last_error FROM dingsync_job WHERE tenant_id = ? AND last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 1");
        let (rows, last_error): (Vec<StateCount>, Option<Option<String>>) =
            crate::store::on_pool!(self, |pool| (
                sqlx::query_as(&counts).bind(tenant).fetch_all(pool).await?,
                sqlx::query_scalar(&error)
                    .bind(tenant)
                    .fetch_optional(pool)
                    .await?
            ));
        let mut stats = QueueStats {
            last_error: last_error.flatten(),
            ..QueueStats::default()
        };
        for (state_name, count, min_run_at) in rows {
            match state_name.as_str() {
                state::PENDING => {
                    stats.pending = count;
                    stats.oldest_pending_run_at = min_run_at;
                }
                state::RUNNING => stats.running = count,
                state::DEAD => stats.dead = count,
                _ => {}
            }
        }
        Ok(stats)
    }
}
