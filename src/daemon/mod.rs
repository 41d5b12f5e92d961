//! The daemon: `run(config, shutdown)` wires the change-log watcher, the reader that turns
//! changes into jobs, DingTalk's events (Stream mode) that become pull jobs, the workers,
//! the scheduler and tenant ownership, and drains on shutdown. It decides nothing about sync rules (that is `sync`), and holds no durable
//! state of its own: work lives in the database, channels only wake.

mod events;
mod http;
mod schedule;

pub use schedule::Reload;
mod watch;
mod workers;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TenantConfig, TenantId};
use crate::dingtalk::DingTalkClient;
use crate::store::queue::RetryPolicy;
use crate::store::schema::SCHEMA_VERSION;

use crate::store::{Store, StoreError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The database is unreachable or failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// `dingsync init` has not been run (or an older schema is installed).
    #[error("dingsync's tables are at version {found}, this dingsync needs {needed}: run `dingsync init`")]
    NotInitialised {
        /// Installed version.
        found: i64,
        /// Needed version.
        needed: i64,
    },
    /// A DingTalk client could not be built.
    #[error("{0}")]
    DingTalk(#[from] crate::dingtalk::DingTalkError),
    /// The tenants break a rule (tenant 0 beside others, with `sys_third_app_config`).
    #[error("{0} (tenants from the configuration and sys_third_app_config)")]
    Tenants(crate::config::TenantRuleError),
    /// `metrics.listen` could not be bound.
    #[error("metrics.listen = {address}: {error}")]
    Listen {
        /// The configured address.
        address: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
}

impl From<crate::sync::run::TenantsError> for DaemonError {
    fn from(error: crate::sync::run::TenantsError) -> Self {
        match error {
            crate::sync::run::TenantsError::Store(error) => Self::Store(error),
            crate::sync::run::TenantsError::Rule(rule) => Self::Tenants(rule),
        }
    }
}

/// Change rows read per transaction.
const CHANGE_BATCH: i64 = 500;
/// Gaps in change ids: the reader waits 3 s at a fresh one (a transaction still committing),
/// then passes it and watches it for an hour for rows a longer transaction commits late.
const GAPS: crate::store::changes::GapRules = crate::store::changes::GapRules {
    hold_ms: 3_000,
    keep_ms: 3_600_000,
};
/// Longest wait between attempts to reach the database while it is down: the change-log
/// reader and the workers retry with doubling delays up to this, so that work resumes within
/// a few seconds of the database's return.
const STORE_RETRY_CAP: std::time::Duration = std::time::Duration::from_secs(5);

/// The configuration in force, swapped whole on reload.
pub(crate) struct Runtime {
    pub config: Config,
    pub tenants: Vec<TenantConfig>,
    pub clients: HashMap<TenantId, Arc<DingTalkClient>>,
}

impl Runtime {
    async fn build(config: Config, store: &Store) -> Result<Self, DaemonError> {
        let tenants = crate::sync::run::tenants(&config, store).await?;
        let mut clients = HashMap::new();
        for tenant in &tenants {
            clients.insert(
                tenant.id,
                Arc::new(DingTalkClient::for_tenant(&config, tenant)?),
            );
        }
        Ok(Self {
            config,
            tenants,
            clients,
        })
    }

    pub fn tenant(&self, id: TenantId) -> Option<(&TenantConfig, Arc<DingTalkClient>)> {
        let tenant = self.tenants.iter().find(|t| t.id == id)?;
        Some((tenant, Arc::clone(self.clients.get(&id)?)))
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        let queue = &self.config.queue;
        RetryPolicy {
            max_attempts: queue.max_attempts.get(),
            base: queue.backoff_base,
            cap: queue.backoff_cap,
        }
    }
}

/// What every task shares.
pub(crate) struct Shared {
    pub store: Store,
    pub runtime: RwLock<Arc<Runtime>>,
    pub owned: RwLock<Vec<TenantId>>,
    /// When each owned tenant's lease was last renewed.
    pub renewed: std::sync::Mutex<HashMap<TenantId, std::time::Instant>>,
    pub wake_reader: Notify,
    pub wake_workers: Notify,
    /// Ownership or the configuration changed: the Stream connections are looked at again.
    pub wake_streams: Notify,
    /// `sys_third_app_config` no longer matches the tenants in force: reload.
    pub tenants_changed: Notify,
    /// Each tenant's first access token was tried (until then `/readyz` says starting).
    pub tokens_tried: std::sync::atomic::AtomicBool,
    pub instance: String,
    pub shutdown: CancellationToken,
    /// Since when the database has been failing (None: reachable).
    pub store_outage: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Shared {
    pub fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(
            &self
                .runtime
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Notes that the database failed `what`: the first failure of an outage is logged once
    /// as `store.unavailable` (each retry is also logged by its caller).
    pub fn store_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        let mut outage = self
            .store_outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if outage.is_none() {
            *outage = Some(std::time::Instant::now());
            tracing::error!(event = "store.unavailable", during = what, error = %error, "the database is unreachable; retrying, nothing is lost (the change-log cursor and the queue are in it)");
        }
    }

    /// Notes that the database answered: ends an outage with `store.available`.
    pub fn store_ok(&self) {
        let mut outage = self
            .store_outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(since) = outage.take() {
            tracing::info!(
                event = "store.available",
                outage_ms = since.elapsed().as_millis() as u64,
                "the database is back; resuming where dingsync left off"
            );
        }
    }

    pub fn owned(&self) -> Vec<TenantId> {
        self.owned
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A name for this process in leases: host and pid, unique enough among instances.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Runs until `shutdown` is cancelled; then stops claiming, drains in-flight jobs up to
/// `daemon.drain_timeout`, releases leases and closes the pool.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reload: Reload,
) -> Result<(), DaemonError> {
    let shared = start(config, &shutdown).await?;
    let rt = shared.runtime();
    let http = serve_metrics(&shared, rt.config.metrics.listen).await?;
    tracing::info!(event = "daemon.started", instance = %shared.instance, tenants = ?rt.tenants.iter().map(|t| t.id).collect::<Vec<_>>(), workers = rt.config.queue.workers.get(), "daemon started");
    let ids: Vec<TenantId> = rt.tenants.iter().map(|t| t.id).collect();
    crate::messages::log_senders(&rt.config, &shared.store, &ids).await;
    schedule::own_tenants(&shared).await;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch::watch(Arc::clone(&shared)));
    tasks.spawn(watch::read_changes(Arc::clone(&shared)));
    tasks.spawn(schedule::ownership(Arc::clone(&shared)));
    tasks.spawn(schedule::maintenance(Arc::clone(&shared)));
    tasks.spawn(events::supervise(Arc::clone(&shared)));
    let cron = Arc::new(tokio::sync::Mutex::new(Some(
        schedule::Cron::start(Arc::clone(&shared)).await,
    )));
    tasks.spawn(schedule::reloader(
        Arc::clone(&shared),
        reload,
        Arc::clone(&cron),
    ));
    let workers = workers::spawn(Arc::clone(&shared));
    notify_systemd(&shared).await;

    shutdown.cancelled().await;
    tracing::info!(
        event = "shutdown.started",
        "shutting down: no new jobs are claimed"
    );
    if let Some(cron) = cron.lock().await.take() {
        cron.stop().await;
    }
    let drain = rt.config.daemon.drain_timeout;
    let drained = workers::drain(workers, drain).await;
    tracing::info!(
        event = "shutdown.drained",
        complete = drained,
        drain_timeout_ms = drain.as_millis() as u64,
        "in-flight jobs finished"
    );
    tasks.shutdown().await;
    if let Some(http) = http {
        let _ = http.await;
    }
    schedule::release_all(&shared).await;
    shared.store.close().await;
    tracing::info!(event = "shutdown.complete", "shutdown complete");
    Ok(())
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen`, when set.
async fn serve_metrics(
    shared: &Arc<Shared>,
    listen: Option<std::net::SocketAddr>,
) -> Result<Option<tokio::task::JoinHandle<()>>, DaemonError> {
    let Some(address) = listen else {
        return Ok(None);
    };
    let server = http::start(Arc::clone(shared), address)
        .await
        .map_err(|error| DaemonError::Listen { address, error })?;
    Ok(Some(server))
}

/// Connects, checks the schema is this dingsync's, and builds what the daemon's tasks share.
async fn start(config: Config, shutdown: &CancellationToken) -> Result<Arc<Shared>, DaemonError> {
    let store = Store::connect(&config.database).await?;
    let version = store.schema_version().await?;
    if version != SCHEMA_VERSION {
        return Err(DaemonError::NotInitialised {
            found: version,
            needed: SCHEMA_VERSION,
        });
    }
    let runtime = Runtime::build(config, &store).await?;
    Ok(Arc::new(Shared {
        store,
        runtime: RwLock::new(Arc::new(runtime)),
        owned: RwLock::new(Vec::new()),
        renewed: std::sync::Mutex::new(HashMap::new()),
        wake_reader: Notify::new(),
        wake_workers: Notify::new(),
        wake_streams: Notify::new(),
        tenants_changed: Notify::new(),
        tokens_tried: std::sync::atomic::AtomicBool::new(false),
        instance: instance_name(),
        shutdown: shutdown.clone(),
        store_outage: std::sync::Mutex::new(None),
    }))
}

/// READY=1 once the first token of each tenant was tried (a tenant with bad credentials is
/// logged and does not hold the others back), then STATUS= lines with the queue and
/// watchdog pings.
async fn notify_systemd(shared: &Arc<Shared>) {
    let runtime = shared.runtime();
    for tenant in &runtime.tenants {
        if let Some((_, client)) = runtime.tenant(tenant.id) {
            if let Err(error) = client.ensure_token().await {
                tracing::error!(event = "dingtalk.token.failed", tenant = tenant.id, errcode = error.errcode, error = %error, "cannot get an access token; check agent_id, client_id, client_secret and the IP whitelist");
            }
        }
    }
    shared
        .tokens_tried
        .store(true, std::sync::atomic::Ordering::Release);
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("started"),
        ],
    );
    let mut usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec) && usec > 0;
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let period = if watchdog {
            Duration::from_micros(usec / 2)
        } else {
            Duration::from_secs(30)
        };
        let mut tick = tokio::time::interval(period);
        let mut last_status = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if watchdog {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            if last_status.elapsed() >= Duration::from_secs(30) {
                last_status = std::time::Instant::now();
                let _ = sd_notify::notify(
                    false,
                    &[sd_notify::NotifyState::Status(&status_line(&shared).await)],
                );
            }
        }
    });
}

/// "tenants 0,3 owned; 2 pending, 0 dead; last push 35 s ago".
async fn status_line(shared: &Shared) -> String {
    let owned = shared.owned();
    let (mut pending, mut dead, mut last_run) = (0, 0, None::<i64>);
    for tenant in &owned {
        if let Ok(stats) = shared.store.queue_stats(*tenant).await {
            pending += stats.pending;
            dead += stats.dead;
        }
        if let Ok(runs) = shared.store.last_runs(*tenant).await {
            last_run = runs
                .iter()
                .filter_map(|r| r.finished_at)
                .chain(last_run)
                .max();
        }
    }
    let ago = last_run.map_or("never".into(), |t| {
        format!("{} s ago", (crate::store::now_ms() - t) / 1000)
    });
    format!("tenants {owned:?} owned; {pending} pending, {dead} dead; last run {ago}")
}
