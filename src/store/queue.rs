//! The retry queue (`dingsync_job`). Jobs carry keys, not payloads: (tenant, kind, key).
//! At most one *pending* job per (tenant, kind, key): `pending_key` is set while pending and
//! unique, so a re-enqueue coalesces and keeps the earliest due time. Claims take a lease
//! (FOR UPDATE SKIP LOCKED on PostgreSQL and MariaDB/MySQL, one writer statement on SQLite);
//! failures back off with full jitter, capped; permanent errors and spent attempts go dead
//! with the reason. Every step is one statement or one transaction: a crash loses no job.
//! Here: the types, `enqueue`, leases renewed and reclaimed, purges; claims are in `claims`,
//! a claimed job's end in `settle`, the operators' view in `queue_admin` (its types
//! re-exported here, the one path callers import them by).

use std::time::Duration;

use rand::Rng;

use crate::config::{Backend, TenantId};

use super::{again_on_conflict, ms, now_ms, Store, StoreResult};

pub use super::queue_admin::{JobCounts, JobFilter, QueueStats};

/// A job's state.
pub mod state {
    /// Waiting until `run_at`.
    pub const PENDING: &str = "pending";
    /// Claimed by a worker until `lease_until`.
    pub const RUNNING: &str = "running";
    /// Given up; an operator can retry it.
    pub const DEAD: &str = "dead";
    /// Finished.
    pub const DONE: &str = "done";
}

/// A job row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Job {
    /// Id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: i64,
    /// What to do (`user`, `dept`, `announce`, ...).
    pub kind: String,
    /// Which entity (a JeecgBoot id).
    pub entity_key: String,
    /// pending / running / dead / done.
    pub state: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Due time (epoch ms).
    pub run_at: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Lease holder while running.
    pub lease_owner: Option<String>,
    /// Times it waited for something (a department DingTalk lacks yet).
    pub waits: i64,
    /// When its first change was committed (epoch ms; coalesced changes keep the first).
    pub created_at: i64,
}

pub(super) const JOB_COLUMNS: &str =
    "id, tenant_id, kind, entity_key, state, attempts, run_at, last_error, lease_owner, waits, created_at";

/// Retry policy of failed jobs.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts before a job goes dead.
    pub max_attempts: u32,
    /// First delay ceiling.
    pub base: Duration,
    /// Largest delay ceiling.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The delay ceiling after `attempts` failures: `min(cap, base * 2^(attempts-1))`.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exponent).min(self.cap)
    }

    /// A delay with full jitter: uniform in `0..=ceiling`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let ceiling = ms(self.ceiling(attempts)).max(0);
        Duration::from_millis(u64::try_from(rand::rng().random_range(0..=ceiling)).unwrap_or(0))
    }
}

/// What became of a failed job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Pending again, due then (epoch ms).
    Retry {
        /// Due time.
        run_at: i64,
        /// Failures so far.
        attempts: i64,
    },
    /// Dead, with the reason kept.
    Dead {
        /// Failures so far.
        attempts: i64,
    },
    /// The lease was no longer ours (expired and reclaimed): nothing changed.
    LeaseLost,
}

/// How long jobs may wait for something (a department DingTalk lacks yet).
#[derive(Clone, Copy, Debug)]
pub struct WaitPolicy {
    /// Waits before a job goes dead.
    pub max_waits: u32,
    /// Longest single wait.
    pub cap: Duration,
    /// Whether this wait counts (doubling the delay, up to `max_waits`); a poll does not.
    pub counted: bool,
}

pub(super) fn pending_key(tenant_id: TenantId, kind: &str, key: &str) -> String {
    format!("{tenant_id}:{kind}:{key}")
}

pub(super) fn in_list(count: usize) -> String {
    vec!["?"; count].join(", ")
}

impl Store {
    pub(super) fn begin_statement(&self) -> &'static str {
        if self.backend() == Backend::Sqlite {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        }
    }

    /// Reads `columns` of the pending job with a given `pending_key` other than job `id`
    /// (binds: the key, the id), locked on PostgreSQL and MariaDB. On MariaDB the lock covers
    /// the key even while no row has it (a gap lock: a concurrent enqueue of the key waits for
    /// this transaction); PostgreSQL locks only a row that exists, and an enqueue committed
    /// meanwhile makes the update that follows break the unique key, which
    /// `again_on_conflict` answers by running the transaction again. Every statement after
    /// it is conditional on the job's state, so a job that changed hands meanwhile is left
    /// alone (the transaction is rolled back).
    pub(super) fn pending_of_key(&self, columns: &str) -> String {
        let lock = if self.backend() == Backend::Sqlite {
            ""
        } else {
            " FOR UPDATE"
        };
        self.sql(&format!(
            "SELECT {columns} FROM dingsync_job WHERE pending_key = ? AND id <> ?{lock}"
        ))
        .into_owned()
    }

    /// The coalescing INSERT of `enqueue` (binds: tenant, kind, key, pending key, run_at,
    /// created_at, updated_at).
    pub(super) fn enqueue_sql(&self) -> std::borrow::Cow<'static, str> {
        let sql = match self.backend() {
            Backend::MySql => {
                "INSERT INTO dingsync_job (tenant_id, kind, entity_key, pending_key, state, attempts, run_at, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON DUPLICATE KEY UPDATE run_at = LEAST(run_at, VALUES(run_at))"
            }
            Backend::Postgres => {
                "INSERT INTO dingsync_job (tenant_id, kind, entity_key, pending_key, state, attempts, run_at, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT (pending_key) DO UPDATE SET run_at = LEAST(dingsync_job.run_at, excluded.run_at)"
            }
            Backend::Sqlite => {
                "INSERT INTO dingsync_job (tenant_id, kind, entity_key, pending_key, state, attempts, run_at, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT (pending_key) DO UPDATE SET run_at = MIN(run_at, excluded.run_at)"
            }
        };
        std::borrow::Cow::Owned(self.sql(sql).into_owned())
    }

    /// The dead jobs (id, tenant, kind, key): a change of an entity's row supersedes its
    /// dead job, so an entity has at most one, its latest. Read without locks, then deleted
    /// by id ([`Store::delete_job_sql`]): a range DELETE takes gap locks on MariaDB that
    /// made concurrent claims wait.
    pub(super) fn dead_jobs_sql(&self) -> &'static str {
        "SELECT id, tenant_id, kind, entity_key FROM dingsync_job WHERE state = 'dead'"
    }

    /// Deletes one job by id (bind: id).
    pub(super) fn delete_job_sql(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Owned(
            self.sql("DELETE FROM dingsync_job WHERE id = ?")
                .into_owned(),
        )
    }

    /// Enqueues (tenant, kind, key) due at `run_at`; coalesces with a pending job for the
    /// same entity, keeping the earlier due time. An entity whose job is dead is left alone
    /// (`false`): only a change of its row or `queue retry` brings it back.
    pub async fn enqueue(
        &self,
        tenant_id: TenantId,
        kind: &str,
        key: &str,
        run_at: i64,
    ) -> StoreResult<bool> {
        again_on_conflict(|| self.enqueue_once(tenant_id, kind, key, run_at)).await
    }

    /// One attempt of `enqueue`.
    async fn enqueue_once(
        &self,
        tenant_id: TenantId,
        kind: &str,
        key: &str,
        run_at: i64,
    ) -> StoreResult<bool> {
        let dead = self.sql("SELECT COUNT(*) FROM dingsync_job WHERE state = 'dead' AND tenant_id = ? AND kind = ? AND entity_key = ?");
        let sql = self.enqueue_sql();
        let now = now_ms();
        let pending = pending_key(tenant_id, kind, key);
        crate::store::on_pool!(self, |pool| {
            let dead: i64 = sqlx::query_scalar(&dead)
                .bind(tenant_id)
                .bind(kind)
                .bind(key)
                .fetch_one(pool)
                .await?;
            if dead > 0 {
                return Ok(false);
            }
            sqlx::query(&sql)
                .bind(tenant_id)
                .bind(kind)
                .bind(key)
                .bind(&pending)
                .bind(run_at)
                .bind(now)
                .bind(now)
                .execute(pool)
                .await?;
            Ok(true)
        })
    }

    /// The dead jobs of one kind in `tenant`: their keys and last errors.
    pub async fn dead_keys(
        &self,
        tenant_id: TenantId,
        kind: &str,
    ) -> StoreResult<Vec<(String, Option<String>)>> {
        let sql = self.sql("SELECT entity_key, last_error FROM dingsync_job WHERE state = 'dead' AND tenant_id = ? AND kind = ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(kind)
            .fetch_all(pool)
            .await?))
    }

    /// Renews the lease of a running job.
    pub async fn renew_job(&self, id: i64, owner: &str, lease: Duration) -> StoreResult<bool> {
        let sql = self.sql("UPDATE dingsync_job SET lease_until = ? WHERE id = ? AND state = 'running' AND lease_owner = ?");
        let until = now_ms() + ms(lease);
        Ok(crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(until)
            .bind(id)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected())
            == 1)
    }

    /// Running jobs whose lease expired go back to pending (or are merged into a pending job
    /// for the same entity). Returns how many.
    pub async fn reclaim_expired(&self) -> StoreResult<u64> {
        again_on_conflict(|| self.reclaim_expired_once()).await
    }

    /// One attempt of `reclaim_expired`.
    async fn reclaim_expired_once(&self) -> StoreResult<u64> {
        let expired = self.sql("SELECT id, tenant_id, kind, entity_key FROM dingsync_job WHERE state = 'running' AND lease_until < ?");
        let exists = self.pending_of_key("id");
        // Conditional: the owner may have settled the job since it was read.
        let delete = self
            .sql("DELETE FROM dingsync_job WHERE id = ? AND state = 'running' AND lease_until < ?");
        let revive = self.sql(
            "UPDATE dingsync_job SET state = 'pending', pending_key = ?, lease_owner = NULL, lease_until = NULL, run_at = ?, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_until < ?",
        );
        let now = now_ms();
        let begin = self.begin_statement();
        crate::store::on_pool!(self, |pool| {
            let mut tx = pool.begin_with(begin).await?;
            let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(&expired)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
            let mut reclaimed = 0;
            for (id, tenant_id, kind, key) in &rows {
                let pending = pending_key(*tenant_id, kind, key);
                let pending_job: Option<i64> = sqlx::query_scalar(&exists)
                    .bind(&pending)
                    .bind(*id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let changed = if pending_job.is_some() {
                    sqlx::query(&delete)
                        .bind(*id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                } else {
                    sqlx::query(&revive)
                        .bind(&pending)
                        .bind(now)
                        .bind(now)
                        .bind(*id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                };
                reclaimed += changed.rows_affected();
            }
            tx.commit().await?;
            Ok(reclaimed)
        })
    }

    /// Deletes done and dead jobs last touched before `before` (epoch ms).
    pub async fn purge_finished(&self, before: i64) -> StoreResult<u64> {
        let sql =
            self.sql("DELETE FROM dingsync_job WHERE state IN ('done', 'dead') AND updated_at < ?");
        Ok(crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
        };
        let ceilings: Vec<u64> = (1..=7).map(|a| policy.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, vec![2, 4, 8, 16, 32, 60, 60]);
        for attempt in 1..=10 {
            assert!(policy.delay(attempt) <= policy.ceiling(attempt));
        }
        assert_eq!(policy.ceiling(200), Duration::from_secs(60));
    }
}
