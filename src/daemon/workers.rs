//! The workers: each claims one due job at a time (tenants this instance owns), executes it
//! with the sync engine, and completes, retries (backoff) or buries it (dead, with the
//! reason). An error slows a worker but never kills it; shutdown stops the claiming and lets
//! the job in hand finish, up to the drain deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::Instrument;

use crate::job::{execute, JobCtx, JobOutcome};
use crate::store::now_ms;
use crate::store::queue::{FailOutcome, Job};

use super::{Runtime, Shared};

/// Idle workers look for due jobs at least this often (jobs retried later become due).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Starts `queue.workers` workers.
pub(super) fn spawn(shared: Arc<Shared>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for n in 0..shared.runtime().config.queue.workers.get() {
        set.spawn(worker(Arc::clone(&shared), n));
    }
    set
}

/// Waits for the workers to stop, at most `deadline`; `false` when some were cut off.
pub(super) async fn drain(mut set: JoinSet<()>, deadline: Duration) -> bool {
    let all = async { while set.join_next().await.is_some() {} };
    if tokio::time::timeout(deadline, all).await.is_ok() {
        return true;
    }
    set.abort_all();
    false
}

async fn worker(shared: Arc<Shared>, n: u32) {
    let owner = format!("{}#{n}", shared.instance);
    let mut error_backoff = Duration::from_millis(100);
    while !shared.shutdown.is_cancelled() {
        let tenants = shared.owned();
        let lease = shared.runtime().config.daemon.lease_ttl;
        let claimed = shared.store.claim(&owner, 1, lease, Some(&tenants)).await;
        let job = match claimed {
            Ok(mut jobs) if !jobs.is_empty() => {
                shared.store_ok();
                error_backoff = Duration::from_millis(100);
                jobs.remove(0)
            }
            Ok(_) => {
                shared.store_ok();
                error_backoff = Duration::from_millis(100);
                // Sleep until the next job is due (a retry, a user waiting for its
                // department), at most IDLE_POLL; a new change wakes us sooner.
                let next = shared.store.next_due(&tenants).await.ok().flatten();
                let nap = next.map_or(IDLE_POLL, |due| {
                    Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0).clamp(5, 1000))
                });
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = shared.wake_workers.notified() => {}
                    _ = tokio::time::sleep(nap.min(IDLE_POLL)) => {}
                }
                continue;
            }
            Err(error) => {
                shared.store_failed("claiming jobs", &error);
                tracing::warn!(event = "job.claim_failed", error = %error, retry_in_ms = error_backoff.as_millis() as u64, "cannot claim jobs");
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(error_backoff) => {}
                }
                error_backoff = (error_backoff * 2).min(super::STORE_RETRY_CAP);
                continue;
            }
        };
        let span = tracing::info_span!("job", job.id = job.id, job.kind = %job.kind, tenant = job.tenant_id, key = %job.entity_key);
        run_job(&shared, &owner, job).instrument(span).await;
    }
}

/// A job's entities by outcome, and for a push that changed DingTalk, the time from the
/// local commit to now.
fn record_metrics(job: &Job, outcome: &JobOutcome) {
    let metrics = crate::metrics::metrics();
    match outcome {
        JobOutcome::Done(summary) => {
            // A full pull asked for by an event counts itself as a run (kind pull).
            if job.kind != "pull_all" {
                metrics.entities(job.tenant_id, &job.kind, summary);
            }
            let pushed = matches!(job.kind.as_str(), "user" | "dept")
                && summary.created + summary.updated + summary.deleted > 0;
            if pushed {
                metrics.change_applied((now_ms() - job.created_at) as f64 / 1000.0);
            }
        }
        // A failure is counted when the job goes dead (below), not at each attempt.
        JobOutcome::Failed { .. } | JobOutcome::Poll { .. } | JobOutcome::Wait { .. } => {}
    }
}

async fn run_job(shared: &Shared, owner: &str, job: Job) {
    let runtime = shared.runtime();
    let Some((tenant, client)) = runtime.tenant(job.tenant_id) else {
        let _ = shared
            .store
            .fail(
                job.id,
                owner,
                "tenant no longer configured",
                true,
                &runtime.retry_policy(),
            )
            .await;
        return;
    };
    let started = std::time::Instant::now();
    let ctx = JobCtx {
        store: &shared.store,
        client: &client,
        config: &runtime.config,
        tenant,
    };
    let renew = keep_lease(
        &shared.store,
        owner,
        job.id,
        runtime.config.daemon.lease_ttl,
    );
    let outcome = execute(&ctx, &job.kind, &job.entity_key).await;
    renew.abort();
    record_metrics(&job, &outcome);
    let recorded = record((shared, &runtime), owner, &job, outcome, started).await;
    if let Err(error) = recorded {
        // The lease expires and the job is reclaimed: nothing is lost.
        shared.store_failed("recording a job's outcome", &error);
        tracing::warn!(event = "job.record_failed", error = %error, "cannot record the job's outcome; it will be reclaimed");
    }
}

/// Writes what became of `job`: done, looked at again later, waiting, retried or dead, by
/// the policies of the configuration it ran under (`runtime`).
async fn record(
    (shared, runtime): (&Shared, &Runtime),
    owner: &str,
    job: &Job,
    outcome: JobOutcome,
    started: std::time::Instant,
) -> Result<(), crate::store::StoreError> {
    match outcome {
        JobOutcome::Done(summary) => {
            tracing::info!(
                event = "job.done",
                created = summary.created,
                updated = summary.updated,
                deleted = summary.deleted,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "job done"
            );
            shared.store.complete(job.id, owner).await.map(drop)
        }
        JobOutcome::Poll { delay, reason } => {
            let policy = crate::store::queue::WaitPolicy {
                max_waits: u32::MAX,
                cap: crate::job::POLL_CAP,
                counted: false,
            };
            tracing::debug!(event = "job.polling", delay_ms = delay.as_millis() as u64, reason = %reason, "job looks again later");
            shared
                .store
                .postpone(job.id, owner, delay, &reason, &policy)
                .await
                .map(drop)
        }
        JobOutcome::Wait { delay, reason } => {
            wait((shared, runtime), owner, job, delay, &reason).await
        }
        JobOutcome::Failed { permanent, reason } => {
            let policy = runtime.retry_policy();
            let failed = shared
                .store
                .fail(job.id, owner, &reason, permanent, &policy)
                .await;
            failed.map(|outcome| settled(job, outcome, permanent, &reason))
        }
    }
}

/// Keeps a long job's lease: renewed every third of it while the job runs. A renewal the
/// database could not take (busy, a connection not free in time) is tried again sooner; only
/// a lease found gone ends the renewing. Aborted when the job ends.
fn keep_lease(
    store: &crate::store::Store,
    owner: &str,
    id: i64,
    lease: Duration,
) -> tokio::task::JoinHandle<()> {
    let (store, owner) = (store.clone(), owner.to_string());
    tokio::spawn(async move {
        let mut wait = lease / 3;
        loop {
            tokio::time::sleep(wait).await;
            match store.renew_job(id, &owner, lease).await {
                Ok(true) => wait = lease / 3,
                Err(error) if error.is_retryable() => {
                    wait = (lease / 10).min(Duration::from_secs(1));
                    tracing::debug!(event = "job.renew_failed", job = id, error = %error, retry_in_ms = wait.as_millis() as u64, "cannot renew the job's lease; trying again");
                }
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(event = "job.renew_failed", job = id, error = %error, "cannot renew the job's lease; another worker may take the job when it expires");
                    return;
                }
            }
        }
    })
}

/// A job that waits for something else (bounded by `queue.max_waits`): postponed, or dead
/// once it has waited too often.
async fn wait(
    (shared, runtime): (&Shared, &Runtime),
    owner: &str,
    job: &Job,
    delay: Duration,
    reason: &str,
) -> Result<(), crate::store::StoreError> {
    let queue = &runtime.config.queue;
    let policy = crate::store::queue::WaitPolicy {
        max_waits: queue.max_waits.get(),
        cap: queue.wait_cap,
        counted: true,
    };
    match shared
        .store
        .postpone(job.id, owner, delay, reason, &policy)
        .await?
    {
        FailOutcome::Retry { run_at, .. } => {
            tracing::info!(event = "job.waiting", delay_ms = (run_at - now_ms()).max(0), waits = job.waits + 1, reason = %reason, "job waits");
        }
        FailOutcome::Dead { attempts } => {
            crate::metrics::metrics().job_failed(job.tenant_id, &job.kind);
            tracing::error!(event = "job.dead", attempt = attempts, permanent = true, waits = job.waits, error = %reason, "job waited too long and is dead; `dingsync queue retry` after fixing the cause");
        }
        FailOutcome::LeaseLost => lease_lost(),
    }
    Ok(())
}

/// Logs what became of a failed job: retried later, or dead.
fn settled(job: &Job, outcome: FailOutcome, permanent: bool, reason: &str) {
    match outcome {
        FailOutcome::Retry { run_at, attempts } => {
            tracing::warn!(event = "job.retry", attempt = attempts, delay_ms = (run_at - now_ms()).max(0), error = %reason, "job failed; will retry");
        }
        FailOutcome::Dead { attempts } => {
            crate::metrics::metrics().job_failed(job.tenant_id, &job.kind);
            tracing::error!(event = "job.dead", attempt = attempts, permanent, error = %reason, "job is dead; `dingsync queue retry` after fixing the cause");
        }
        FailOutcome::LeaseLost => lease_lost(),
    }
}

fn lease_lost() {
    tracing::warn!(
        event = "job.lease_lost",
        "the job's lease expired while it ran; another worker has it"
    );
}
