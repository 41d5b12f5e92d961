//! Time-driven work: tenant ownership (a renewed lease per tenant, so several instances on
//! one database split the tenants and one takes over within the lease time when another
//! dies), the cron runs (pull, full push reconcile) under leases so one instance fires each
//! tick and a run still going is not started twice, maintenance, and configuration reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::{Config, ConfigError, TenantId};
use crate::store::now_ms;
use crate::sync::model::{Direction, Scope};
use crate::sync::run::{run_once, RunLease, RunRequest};

use super::{Runtime, Shared};

/// How the daemon gets a new configuration.
#[derive(Clone)]
pub struct Reload {
    /// Notified on SIGHUP.
    pub trigger: Arc<Notify>,
    /// Loads and validates the configuration again.
    pub load: Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    /// The file to watch for edits.
    pub watch_path: Option<PathBuf>,
}

impl Reload {
    /// No reloading (tests that do not need it).
    pub fn none(config: &Config) -> Self {
        let config = config.clone();
        Self {
            trigger: Arc::new(Notify::new()),
            load: Arc::new(move || Ok(config.clone())),
            watch_path: None,
        }
    }
}

fn lease_name(tenant: TenantId) -> String {
    format!("tenant:{tenant}")
}

/// Takes or renews the lease of every configured tenant; logs gains and losses.
pub(super) async fn own_tenants(shared: &Shared) {
    let runtime = shared.runtime();
    let ttl = runtime.config.daemon.lease_ttl;
    let mut owned = Vec::new();
    let now = std::time::Instant::now();
    let mut renewed = shared
        .renewed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for tenant in &runtime.tenants {
        match shared
            .store
            .acquire_lease(&lease_name(tenant.id), &shared.instance, ttl)
            .await
        {
            Ok(true) => {
                owned.push(tenant.id);
                renewed.insert(tenant.id, now);
            }
            Ok(false) => {
                renewed.remove(&tenant.id);
            }
            Err(error) => {
                // The lease is still ours until it expires: a database blip does not drop
                // the tenant (nor close its Stream connection) before another instance
                // could have it.
                if renewed
                    .get(&tenant.id)
                    .is_some_and(|at| now.duration_since(*at) < ttl)
                {
                    owned.push(tenant.id);
                }
                tracing::warn!(event = "lease.failed", tenant = tenant.id, error = %error, "cannot renew the tenant lease")
            }
        }
    }
    *shared
        .renewed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = renewed;
    let before = shared.owned();
    for id in owned.iter().filter(|id| !before.contains(id)) {
        tracing::info!(event = "lease.acquired", tenant = *id, instance = %shared.instance, "this instance now works the tenant");
    }
    for id in before.iter().filter(|id| !owned.contains(id)) {
        tracing::warn!(event = "lease.lost", tenant = *id, instance = %shared.instance, "this instance no longer works the tenant");
    }
    if before != owned {
        shared.wake_workers.notify_waiters();
        shared.wake_streams.notify_one();
    }
    *shared
        .owned
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = owned;
}

/// Renews tenant leases every third of their lifetime.
pub(super) async fn ownership(shared: Arc<Shared>) {
    loop {
        let period = shared.runtime().config.daemon.lease_ttl / 3;
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => own_tenants(&shared).await,
        }
    }
}

/// Gives every lease of this instance up (shutdown), so another instance takes over at
/// once: by owner, not by the tenants it believes it owns (a renewal that failed, e.g. on a
/// busy database, drops a tenant from that list while the lease row is still ours).
pub(super) async fn release_all(shared: &Shared) {
    if let Err(error) = shared.store.release_leases_of(&shared.instance).await {
        tracing::warn!(event = "lease.failed", instance = %shared.instance, error = %error, "cannot release the leases at shutdown; they expire after daemon.lease_ttl");
    }
}

/// Every lease lifetime (at most a minute): reclaim expired job leases (a dead instance's jobs
/// come back within about two lease lifetimes), purge done jobs and consumed change rows older
/// than `daemon.retention`, and expired leases.
pub(super) async fn maintenance(shared: Arc<Shared>) {
    let period = shared
        .runtime()
        .config
        .daemon
        .lease_ttl
        .min(Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let retention = crate::store::ms(shared.runtime().config.daemon.retention);
        let before = now_ms() - retention;
        let store = &shared.store;
        let result = async {
            let reclaimed = store.reclaim_expired().await?;
            let done = store.purge_finished(before).await?;
            let cursor = store.change_cursor().await?;
            let changes = store.purge_changes(before, cursor).await?;
            let leases = store.purge_leases(before).await?;
            store.purge_events(before).await?;
            Ok::<_, crate::store::StoreError>((reclaimed, done, changes, leases))
        }
        .await;
        match result {
            Ok((reclaimed, done, changes, leases)) => {
                if reclaimed > 0 {
                    tracing::warn!(
                        event = "job.reclaimed",
                        jobs = reclaimed,
                        "expired job leases reclaimed"
                    );
                }
                tracing::debug!(
                    event = "maintenance.done",
                    purged_jobs = done,
                    purged_changes = changes,
                    purged_leases = leases,
                    "maintenance done"
                );
            }
            Err(error) => {
                tracing::warn!(event = "maintenance.failed", error = %error, "maintenance failed")
            }
        }
    }
}

/// The cron scheduler of the configuration in force.
pub(super) struct Cron {
    scheduler: Option<JobScheduler>,
}

impl Cron {
    /// Schedules, per tenant, the pull (when `pull.enabled`) and the push reconcile (when
    /// `push.enabled`).
    pub async fn start(shared: Arc<Shared>) -> Self {
        match Self::schedule(shared).await {
            Ok(scheduler) => Self {
                scheduler: Some(scheduler),
            },
            Err(error) => {
                tracing::error!(event = "schedule.failed", error = %error, "cannot start the scheduler; scheduled pulls are off");
                Self { scheduler: None }
            }
        }
    }

    async fn schedule(
        shared: Arc<Shared>,
    ) -> Result<JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        let runtime = shared.runtime();
        for tenant in &runtime.tenants {
            let runs = [
                (
                    Direction::Pull,
                    runtime.config.pull.cron.as_str(),
                    tenant.pull.enabled,
                ),
                (
                    Direction::Push,
                    runtime.config.push.reconcile_cron.as_str(),
                    tenant.push.enabled,
                ),
            ];
            for (direction, cron, enabled) in runs {
                if !enabled {
                    continue;
                }
                let (shared, id) = (Arc::clone(&shared), tenant.id);
                let job = cron_job(cron, runtime.config.daemon.timezone, move || {
                    let shared = Arc::clone(&shared);
                    Box::pin(async move { scheduled_run(shared, id, direction).await })
                })?;
                scheduler.add(job).await?;
            }
        }
        if runtime.config.tenants_from_database {
            // A tenant added, removed or given new credentials in JeecgBoot's UI is picked up
            // at the next pull tick, without a restart.
            let shared = Arc::clone(&shared);
            let job = cron_job(
                runtime.config.pull.cron.as_str(),
                runtime.config.daemon.timezone,
                move || {
                    let shared = Arc::clone(&shared);
                    Box::pin(async move { check_tenants(&shared).await })
                },
            )?;
            scheduler.add(job).await?;
        }
        scheduler.start().await?;
        Ok(scheduler)
    }

    /// Stops firing (runs in progress finish on their own).
    pub async fn stop(mut self) {
        if let Some(mut scheduler) = self.scheduler.take() {
            let _ = scheduler.shutdown().await;
        }
    }
}

/// Reads `sys_third_app_config` again; a tenant set that differs from the one in force
/// (ids, apps, credentials) reloads the configuration as SIGHUP would.
async fn check_tenants(shared: &Shared) {
    let runtime = shared.runtime();
    let now = match crate::sync::run::tenants_warning(&runtime.config, &shared.store, false).await {
        Ok(now) => now,
        // The database is down: the next tick looks again.
        Err(crate::sync::run::TenantsError::Store(_)) => return,
        // A rule broken: the reload path rejects it and says why (config.rejected).
        Err(crate::sync::run::TenantsError::Rule(_)) => {
            shared.tenants_changed.notify_one();
            return;
        }
    };
    let key = |tenants: &[crate::config::TenantConfig]| {
        let mut key: Vec<_> = tenants
            .iter()
            .map(|t| {
                (
                    t.id,
                    t.agent_id,
                    t.client_id.clone(),
                    t.client_secret.expose().to_string(),
                )
            })
            .collect();
        key.sort();
        key
    };
    if key(&now) != key(&runtime.tenants) {
        tracing::info!(
            event = "config.reload_requested",
            reason = "sys_third_app_config changed",
            "the tenants in sys_third_app_config changed; reloading"
        );
        shared.tenants_changed.notify_one();
    }
}

/// A cron job firing `run` on `cron` (six fields) in `zone`: `0 10 3 * * *` is 03:10 there.
fn cron_job(
    cron: &str,
    zone: chrono_tz::Tz,
    run: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync
        + 'static,
) -> Result<Job, tokio_cron_scheduler::JobSchedulerError> {
    Job::new_async_tz(cron, zone, move |_, _| run())
}

/// One scheduled run, if this instance owns the tenant, nobody fired this tick yet, and the
/// previous run is over.
pub(super) async fn scheduled_run(shared: Arc<Shared>, tenant_id: TenantId, direction: Direction) {
    if shared.shutdown.is_cancelled() || !shared.owned().contains(&tenant_id) {
        return;
    }
    let kind = format!("{direction:?}").to_lowercase();
    let store = &shared.store;
    // The tick: the scheduled second (instances fire within a fraction of a second of it).
    let tick = (now_ms() + 500) / 1000;
    let fired = store
        .acquire_lease(
            &format!("cron:{kind}:{tenant_id}:{tick}"),
            &shared.instance,
            Duration::from_secs(3600),
        )
        .await;
    if !matches!(fired, Ok(true)) {
        return;
    }
    let runtime = shared.runtime();
    let ttl = runtime.config.daemon.lease_ttl;
    let holder = format!("{kind}:{}", shared.instance);
    let lease = match RunLease::try_take(store, tenant_id, &holder, ttl).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            let holder = RunLease::holder(store, tenant_id).await.ok().flatten();
            tracing::warn!(event = "schedule.skipped", tenant = tenant_id, kind = %kind, holder = holder.as_deref(), "another run of this tenant is still going; this tick is skipped");
            return;
        }
        Err(error) => {
            tracing::warn!(event = "schedule.skipped", tenant = tenant_id, kind = %kind, error = %error, "cannot take the tenant's run lease; this tick is skipped");
            return;
        }
    };
    if let Some((tenant, client)) = runtime.tenant(tenant_id) {
        let request = RunRequest {
            direction,
            scope: Scope::All,
            dry_run: false,
        };
        let ctx = crate::sync::run::RunCtx {
            store,
            client: &client,
            config: &runtime.config,
            tenant,
        };
        if let Err(error) = run_once(&ctx, request, None).await {
            tracing::error!(event = "sync.run.failed", tenant = tenant_id, kind = %kind, error = %error, "scheduled run failed");
        }
    }
    lease.release().await;
}

/// Reloads the configuration on SIGHUP and when the file changes; a valid one replaces the
/// runtime (tenants, credentials, rate limits, crons), an invalid one is logged and ignored.
pub(super) async fn reloader(shared: Arc<Shared>, reload: Reload, cron: Arc<Mutex<Option<Cron>>>) {
    let file_changed = Arc::new(Notify::new());
    let _watcher = reload
        .watch_path
        .as_ref()
        .and_then(|path| watch_file(path, Arc::clone(&file_changed)));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = reload.trigger.notified() => {}
            _ = shared.tenants_changed.notified() => {}
            _ = file_changed.notified() => {
                // Editors write in several steps: let them finish.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let config = match (reload.load)() {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(event = "config.rejected", error = %error, "new configuration rejected; the old one stays in force");
                continue;
            }
        };
        match Runtime::build(config, &shared.store).await {
            Ok(runtime) => {
                let tenants: Vec<TenantId> = runtime.tenants.iter().map(|t| t.id).collect();
                *shared
                    .runtime
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(runtime);
                own_tenants(&shared).await;
                shared.wake_streams.notify_one();
                let mut slot = cron.lock().await;
                if let Some(old) = slot.take() {
                    old.stop().await;
                }
                *slot = Some(Cron::start(Arc::clone(&shared)).await);
                tracing::info!(event = "config.reloaded", tenants = ?tenants, "configuration reloaded");
                let runtime = shared.runtime();
                // The new clients try their tokens now, so /readyz tells the truth at once.
                for (id, client) in &runtime.clients {
                    if let Err(error) = client.ensure_token().await {
                        tracing::error!(event = "dingtalk.token.failed", tenant = *id, errcode = error.errcode, error = %error, "cannot get an access token; check agent_id, client_id, client_secret and the IP whitelist");
                    }
                }
                crate::messages::log_senders(&runtime.config, &shared.store, &tenants).await;
            }
            Err(error) => {
                tracing::error!(event = "config.rejected", error = %error, "new configuration rejected; the old one stays in force")
            }
        }
    }
}

fn watch_file(path: &std::path::Path, changed: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let name = path.file_name()?.to_os_string();
    let dir = path
        .parent()
        .map(PathBuf::from)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()));
            if ours && (event.kind.is_modify() || event.kind.is_create()) {
                changed.notify_one();
            }
        }
    })
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .ok()?;
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;

    #[tokio::test]
    async fn crons_fire_in_the_configured_zone() {
        let mut scheduler = JobScheduler::new().await.unwrap();
        let mut next = Vec::new();
        for zone in [chrono_tz::UTC, chrono_tz::Asia::Shanghai] {
            let job = cron_job("0 10 3 * * *", zone, || Box::pin(async {})).unwrap();
            let id = job.guid();
            scheduler.add(job).await.unwrap();
            let at = scheduler.next_tick_for_job(id).await.unwrap().unwrap();
            next.push((at.hour(), at.minute()));
        }
        // 03:10 in UTC is 03:10 UTC; 03:10 in Beijing is 19:10 UTC (the day before).
        assert_eq!(next, vec![(3, 10), (19, 10)]);
    }
}
