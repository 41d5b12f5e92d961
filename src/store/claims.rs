//! Claiming due jobs ([`Store::claim`]): a lease for the claimer, `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL and MariaDB/MySQL (one writer statement on SQLite), so two claimers never get
//! the same job; a job whose entity still has a running job waits. When the next job is due
//! ([`Store::next_due`]).

use std::time::Duration;

use crate::config::{Backend, TenantId};

use super::queue::{in_list, Job, JOB_COLUMNS};
use super::Pools;
use super::{ms, now_ms, Store, StoreResult};

/// A claim as [`Store::claim`] prepared it.
#[derive(Clone, Copy)]
struct Claiming<'a> {
    /// The query of the due job ids (binds: now, the tenants, the limit).
    due: &'a str,
    /// The update's `SET` clause (binds: owner, lease end, now).
    set: &'a str,
    /// The claimer.
    owner: &'a str,
    /// The lease's end (ms).
    lease_until: i64,
    /// The time of the claim (ms).
    now: i64,
    /// Jobs at most.
    limit: i64,
    /// Only these tenants' jobs (empty: any).
    tenants: &'a [TenantId],
}

impl Store {
    /// Claims up to `limit` due jobs for `owner` with a lease of `lease`; only `tenants` when
    /// given. Two claimers never get the same job.
    pub async fn claim(
        &self,
        owner: &str,
        limit: i64,
        lease: Duration,
        tenants: Option<&[TenantId]>,
    ) -> StoreResult<Vec<Job>> {
        if tenants.is_some_and(<[TenantId]>::is_empty) {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let tenant_filter = tenants.map_or(String::new(), |t| {
            format!(" AND j.tenant_id IN ({})", in_list(t.len()))
        });
        let tenant_ids = tenants.unwrap_or(&[]);
        // A job whose entity is still being worked on (by another worker or instance) waits:
        // one entity's jobs never run at the same time (two sends of one announcement would
        // both go out).
        let due = format!(
            "SELECT j.id FROM dingsync_job j WHERE j.state = 'pending' AND j.run_at <= ?{tenant_filter} \
             AND NOT EXISTS (SELECT 1 FROM dingsync_job r WHERE r.state = 'running' AND r.entity_key = j.entity_key \
             AND r.kind = j.kind AND r.tenant_id = j.tenant_id) ORDER BY j.run_at, j.id LIMIT ?"
        );
        let claiming = Claiming {
            due: &due,
            set: "SET state = 'running', pending_key = NULL, lease_owner = ?, lease_until = ?, updated_at = ?",
            owner,
            lease_until: now + ms(lease),
            now,
            limit,
            tenants: tenant_ids,
        };
        if self.backend() == Backend::MySql {
            return self.claim_mysql(&claiming).await;
        }
        self.claim_returning(&claiming).await
    }

    /// [`Store::claim`] as one `UPDATE … RETURNING` (SQLite, and PostgreSQL with the due jobs
    /// locked `SKIP LOCKED`).
    async fn claim_returning(&self, claiming: &Claiming<'_>) -> StoreResult<Vec<Job>> {
        let Claiming {
            due,
            set,
            owner,
            lease_until,
            now,
            limit,
            tenants,
        } = *claiming;
        let lock = if self.backend() == Backend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql =
            format!("UPDATE dingsync_job {set} WHERE id IN ({due}{lock}) RETURNING {JOB_COLUMNS}");
        let sql = self.sql(&sql);
        let mut jobs: Vec<Job> = crate::store::on_pool!(self, |pool| {
            let mut query = sqlx::query_as::<_, Job>(&sql)
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(now);
            for tenant in tenants {
                query = query.bind(*tenant);
            }
            query.bind(limit).fetch_all(pool).await?
        });
        jobs.sort_by_key(|job| (job.run_at, job.id));
        Ok(jobs)
    }

    /// [`Store::claim`] on MariaDB/MySQL, which has no `RETURNING` on `UPDATE`: the due jobs
    /// locked `SKIP LOCKED`, updated, then read, in one transaction.
    async fn claim_mysql(&self, claiming: &Claiming<'_>) -> StoreResult<Vec<Job>> {
        let Claiming {
            due,
            set,
            owner,
            lease_until,
            now,
            limit,
            tenants,
        } = *claiming;
        let Pools::MySql(pool) = &self.pools else {
            unreachable!("called for MySQL only")
        };
        let mut tx = pool.begin().await?;
        let locked = format!("{due} FOR UPDATE SKIP LOCKED");
        let mut query = sqlx::query_scalar::<_, i64>(&locked).bind(now);
        for tenant in tenants {
            query = query.bind(*tenant);
        }
        let ids = query.bind(limit).fetch_all(&mut *tx).await?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let list = in_list(ids.len());
        let update_sql = format!("UPDATE dingsync_job {set} WHERE id IN ({list})");
        let select_sql = format!(
            "SELECT {JOB_COLUMNS} FROM dingsync_job WHERE id IN ({list}) ORDER BY run_at, id"
        );
        let mut update = sqlx::query(&update_sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now);
        let mut select = sqlx::query_as::<_, Job>(&select_sql);
        for id in &ids {
            update = update.bind(*id);
            select = select.bind(*id);
        }
        update.execute(&mut *tx).await?;
        let jobs = select.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(jobs)
    }

    /// The due time of the next pending job of `tenants` (epoch ms), if any.
    pub async fn next_due(&self, tenants: &[TenantId]) -> StoreResult<Option<i64>> {
        if tenants.is_empty() {
            return Ok(None);
        }
        let text = format!(
            "SELECT MIN(run_at) FROM dingsync_job WHERE state = 'pending' AND tenant_id IN ({})",
            in_list(tenants.len())
        );
        let sql = self.sql(&text);
        Ok(crate::store::on_pool!(self, |pool| {
            let mut query = sqlx::query_scalar::<_, Option<i64>>(&sql);
            for tenant in tenants {
                query = query.bind(*tenant);
            }
            query.fetch_one(pool).await?
        }))
    }
}
