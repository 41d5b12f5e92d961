//! Ending a claimed job, each in one statement or one transaction: `complete`, `fail` (back
//! to pending after a jittered, capped delay, or dead with the reason: [`RetryPolicy`]) and
//! `postpone` (a bounded wait: [`WaitPolicy`]). Only the lease's owner ends a job; one going
//! back to pending merges a pending job of its entity into it (earliest due time wins).

use std::time::Duration;

use crate::config::TenantId;

use super::queue::{pending_key, FailOutcome, RetryPolicy, WaitPolicy};
use super::tx::{Arg, Tx};
use super::{again_on_conflict, ms, now_ms, Store, StoreResult};

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

impl Store {
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
}
