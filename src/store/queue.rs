//! The retry queue (`dingsync_job`). Jobs carry keys, not payloads: (tenant, kind, key).
//! At most one *pending* job per (tenant, kind, key): `pending_key` is set while pending and
//! unique, so a re-enqueue coalesces and keeps the earliest due time. Claims take a lease
//! (FOR UPDATE SKIP LOCKED on PostgreSQL and MariaDB/MySQL, one writer statement on SQLite);
//! failures back off with full jitter, capped; permanent errors and spent attempts go dead
//! with the reason. Every step is one statement or one transaction: a crash loses no job.

use std::time::Duration;

use rand::Rng;

use crate::config::{Backend, TenantId};

use super::tx::{Arg, Tx};
use super::{again_on_conflict, ms, now_ms, Store, StoreResult};

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

const JOB_COLUMNS: &str =
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

/// How a running job ends when it does not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    /// Dead after this many attempts and waits.
    Dead { attempts: i64, waits: i64 },
    /// Pending again, due then.
    Pending {
        attempts: i64,
        waits: i64,
        run_at: i64,
    },
}

/// The running job [`Store::settle`] ends, as its transaction read it.
struct Settling<'a> {
    /// The job's id.
    id: i64,
    /// The lease owner that ends it.
    owner: &'a str,
    /// Its tenant.
    tenant_id: TenantId,
    /// Its kind.
    kind: &'a str,
    /// Its entity key.
    key: &'a str,
    /// The note to keep as its last error.
    note: &'a str,
    /// The time of the settling (ms).
    now: i64,
}

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

pub(super) fn pending_key(tenant_id: TenantId, kind: &str, key: &str) -> String {
    format!("{tenant_id}:{kind}:{key}")
}

/// `(tenant, kind, state, jobs)` rows.
pub type JobCounts = Vec<(TenantId, String, String, i64)>;

fn in_list(count: usize) -> String {
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
    fn pending_of_key(&self, columns: &str) -> String {
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

    /// Marks a running job done; `false` when the lease was no longer `owner`'s.
    pub async fn complete(&self, id: i64, owner: &str) -> StoreResult<bool> {
        let sql = self.sql(
            "UPDATE dingsync_job SET state = 'done', lease_owner = NULL, lease_until = NULL, last_error = NULL, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        );
        let done = crate::store::on_pool!(self, |pool| sqlx::query(&sql)
            .bind(now_ms())
            .bind(id)
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Records a failure: pending again after a jittered backoff, or dead when `permanent`
    /// or the attempts are spent. A pending job for the same entity that arrived meanwhile is
    /// merged into this one (earliest due time wins).
    pub async fn fail(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        permanent: bool,
        policy: &RetryPolicy,
    ) -> StoreResult<FailOutcome> {
        let decide = |attempts: i64, waits: i64| {
            let attempts = attempts + 1;
            let settle = if permanent || attempts >= i64::from(policy.max_attempts) {
                Settle::Dead { attempts, waits }
            } else {
                let delay = policy.delay(u32::try_from(attempts).unwrap_or(u32::MAX));
                Settle::Pending {
                    attempts,
                    waits,
                    run_at: now_ms() + ms(delay),
                }
            };
            (settle, error)
        };
        Ok(match self.settle(id, owner, &decide).await? {
            None => FailOutcome::LeaseLost,
            Some(Settle::Dead { attempts, .. }) => FailOutcome::Dead { attempts },
            Some(Settle::Pending {
                attempts, run_at, ..
            }) => FailOutcome::Retry { run_at, attempts },
        })
    }

    /// Puts a running job back to pending without counting an attempt (it is waiting for
    /// something, not failing): after `delay` doubled for each wait so far (at most
    /// `policy.cap`), merged with a pending job for the same entity. A job that has waited
    /// `policy.max_waits` times is dead with `note`: nothing waits forever.
    pub async fn postpone(
        &self,
        id: i64,
        owner: &str,
        delay: Duration,
        note: &str,
        policy: &WaitPolicy,
    ) -> StoreResult<FailOutcome> {
        let decide = |attempts: i64, waits: i64| {
            if !policy.counted {
                return Settle::Pending {
                    attempts,
                    waits,
                    run_at: now_ms() + ms(delay.min(policy.cap)),
                };
            }
            if waits >= i64::from(policy.max_waits) {
                return Settle::Dead { attempts, waits };
            }
            let exponent = u32::try_from(waits).unwrap_or(30).min(30);
            let wait = delay.saturating_mul(1u32 << exponent).min(policy.cap);
            Settle::Pending {
                attempts,
                waits: waits + 1,
                run_at: now_ms() + ms(wait),
            }
        };
        let gave_up = format!("{note} (gave up after {} waits)", policy.max_waits);
        let settled = self
            .settle(id, owner, &|attempts, waits| {
                let settle = decide(attempts, waits);
                let note = match settle {
                    Settle::Dead { .. } => gave_up.as_str(),
                    Settle::Pending { .. } => note,
                };
                (settle, note)
            })
            .await?;
        Ok(match settled {
            None => FailOutcome::LeaseLost,
            Some(Settle::Dead { attempts, .. }) => FailOutcome::Dead { attempts },
            Some(Settle::Pending {
                attempts, run_at, ..
            }) => FailOutcome::Retry { run_at, attempts },
        })
    }

    /// Ends a running job of `owner` as `decide` says (given its attempts and waits so far;
    /// with the note to keep), in one transaction; `None` when the lease is no longer
    /// `owner`'s. Going back to pending merges a pending job for the same entity into this
    /// one (earliest due time wins).
    async fn settle<'n>(
        &self,
        id: i64,
        owner: &str,
        decide: &(dyn Fn(i64, i64) -> (Settle, &'n str) + Sync),
    ) -> StoreResult<Option<Settle>> {
        again_on_conflict(|| self.settle_once(id, owner, decide)).await
    }

    /// One attempt of `settle`.
    async fn settle_once<'n>(
        &self,
        id: i64,
        owner: &str,
        decide: &(dyn Fn(i64, i64) -> (Settle, &'n str) + Sync),
    ) -> StoreResult<Option<Settle>> {
        let select = self.sql("SELECT tenant_id, kind, entity_key, attempts, waits FROM dingsync_job WHERE id = ? AND state = 'running' AND lease_owner = ?");
        let now = now_ms();
        let mut tx = self.begin_tx(self.begin_statement()).await?;
        let row: Option<(i64, String, String, i64, i64)> = tx
            .fetch_optional(&select, &[Arg::Int(id), Arg::Text(owner)])
            .await?;
        let Some((tenant_id, kind, key, attempts, waits)) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let (settle, note) = decide(attempts, waits);
        let job = Settling {
            id,
            owner,
            tenant_id,
            kind: &kind,
            key: &key,
            note,
            now,
        };
        let settled = match settle {
            Settle::Dead { attempts, waits } => {
                self.settle_dead(&mut tx, &job, attempts, waits).await?
            }
            Settle::Pending {
                attempts,
                waits,
                run_at,
            } => {
                self.settle_pending(&mut tx, &job, (attempts, waits), run_at)
                    .await?
            }
        };
        let Some(settled) = settled else {
            // Reclaimed meanwhile: not this owner's any more (rolled back).
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(settled))
    }

    /// `job` dead, the older dead job of its entity deleted (one dead job per entity: its
    /// latest); `None` when the job is no longer `job.owner`'s.
    async fn settle_dead(
        &self,
        tx: &mut Tx,
        job: &Settling<'_>,
        attempts: i64,
        waits: i64,
    ) -> StoreResult<Option<Settle>> {
        let delete = self.sql("DELETE FROM dingsync_job WHERE id = ?");
        let dead = self.sql(
            "UPDATE dingsync_job SET state = 'dead', attempts = ?, waits = ?, last_error = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        );
        let dead_of = self.sql("SELECT id FROM dingsync_job WHERE state = 'dead' AND tenant_id = ? AND kind = ? AND entity_key = ? AND id <> ?");
        let entity = [
            Arg::Int(job.tenant_id),
            Arg::Text(job.kind),
            Arg::Text(job.key),
            Arg::Int(job.id),
        ];
        let older: Vec<i64> = tx.fetch_scalars(&dead_of, &entity).await?;
        for old in older {
            tx.execute(&delete, &[Arg::Int(old)]).await?;
        }
        let args = [
            Arg::Int(attempts),
            Arg::Int(waits),
            Arg::Text(job.note),
            Arg::Int(job.now),
            Arg::Int(job.id),
            Arg::Text(job.owner),
        ];
        let updated = tx.execute(&dead, &args).await?;
        Ok((updated > 0).then_some(Settle::Dead { attempts, waits }))
    }

    /// `job` pending again at `run_at` with `(attempts, waits)`, a pending job of its entity
    /// merged into it (the earliest due time wins); `None` when the job is no longer
    /// `job.owner`'s.
    async fn settle_pending(
        &self,
        tx: &mut Tx,
        job: &Settling<'_>,
        (attempts, waits): (i64, i64),
        mut run_at: i64,
    ) -> StoreResult<Option<Settle>> {
        let other = self.pending_of_key("id, run_at");
        let delete = self.sql("DELETE FROM dingsync_job WHERE id = ?");
        let pending_sql = self.sql(
            "UPDATE dingsync_job SET state = 'pending', pending_key = ?, attempts = ?, waits = ?, last_error = ?, run_at = ?, \
             lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ? AND state = 'running' AND lease_owner = ?",
        );
        let pending = pending_key(job.tenant_id, job.kind, job.key);
        let existing: Option<(i64, i64)> = tx
            .fetch_optional(&other, &[Arg::Text(&pending), Arg::Int(job.id)])
            .await?;
        if let Some((other_id, other_run_at)) = existing {
            run_at = run_at.min(other_run_at);
            tx.execute(&delete, &[Arg::Int(other_id)]).await?;
        }
        let args = [
            Arg::Text(&pending),
            Arg::Int(attempts),
            Arg::Int(waits),
            Arg::Text(job.note),
            Arg::Int(run_at),
            Arg::Int(job.now),
            Arg::Int(job.id),
            Arg::Text(job.owner),
        ];
        let updated = tx.execute(&pending_sql, &args).await?;
        Ok((updated > 0).then_some(Settle::Pending {
            attempts,
            waits,
            run_at,
        }))
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

use super::Pools;

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
