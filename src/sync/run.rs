//! One sync run for one tenant: read both views, plan, and (unless a dry run) apply, with a
//! `dingsync_run` row and `sync.run.started` / `sync.run.finished` events (a push here, a
//! pull in `pull_run`). Also what every run path asks first: the tenants to work
//! ([`tenants`]), whether a direction is switched off ([`switched_off`]), and the
//! per-tenant run lease ([`RunLease`]).

use crate::config::{Config, TenantConfig, TenantId, TenantRuleError};
use crate::dingtalk::{DingTalkClient, DingTalkError};
use crate::jeecg::AppConfigRow;
use crate::store::runs::RunCounts;
use crate::store::{Store, StoreError};

use super::apply::{apply as apply_plan, apply_streamed, ApplyCtx};
use super::model::{entity, Direction, LocalView, Op, RemoteView, Scope, Summary};
use super::plan::{push_twins, Focus, Plan, PushPlanner, Rules};
use super::read;

/// Why a run could not even start (switched off, or reading a side failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The tenant's `push.enabled` / `pull.enabled` is false.
    #[error("{0}")]
    SwitchedOff(SwitchedOff),
    /// DingTalk could not be read.
    #[error("reading DingTalk failed: {0}")]
    DingTalk(#[from] DingTalkError),
    /// The database could not be read or written.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct RunRequest {
    /// Push or pull.
    pub direction: Direction,
    /// Users, departments or both.
    pub scope: Scope,
    /// Plan only.
    pub dry_run: bool,
}

/// Why the tenants could not be told.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// `sys_third_app_config` could not be read.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Together they break the tenant rule (tenant 0 beside others); nothing is worked.
    #[error("{0} (tenants from the configuration and sys_third_app_config)")]
    Rule(TenantRuleError),
}

/// The tenants to work: `[[tenant]]` entries, plus `sys_third_app_config`'s DingTalk rows
/// when `tenants_from_database`, whatever their `status` (JeecgBoot's switch for its own
/// integration; it only decides who sends announcements, `messages::Sender`). The config wins
/// on equal ids; rows with placeholder credentials are skipped with a warning; their switches
/// are `[tenant_defaults]`. Tenant 0 beside
/// other tenants breaks the tenant rule: an error, and nothing is worked.
pub async fn tenants(config: &Config, store: &Store) -> Result<Vec<TenantConfig>, TenantsError> {
    tenants_warning(config, store, true).await
}

/// [`tenants`], with the skipped rows' warnings logged only when `warn` (the daemon's
/// re-read at each pull tick is quiet: the warnings were said at start and reload).
pub async fn tenants_warning(
    config: &Config,
    store: &Store,
    warn: bool,
) -> Result<Vec<TenantConfig>, TenantsError> {
    let mut tenants = config.tenants.clone();
    if config.tenants_from_database {
        for row in store.app_configs().await? {
            if tenants.iter().any(|t| t.id == row.tenant_id) {
                continue;
            }
            tenants.extend(tenant_of_row(config, row, warn));
        }
    }
    let ids: Vec<TenantId> = tenants.iter().map(|t| t.id).collect();
    if let Some(rule) = crate::config::tenant_zero_beside_others(&ids) {
        return Err(TenantsError::Rule(rule));
    }
    Ok(tenants)
}

/// The tenant a `sys_third_app_config` row stands for, with `[tenant_defaults]`'s switches;
/// none for placeholder credentials or an `agent_id` that is not a number (said as a
/// `config.warning` when `warn`).
fn tenant_of_row(config: &Config, row: AppConfigRow, warn: bool) -> Option<TenantConfig> {
    let skipped = |detail: &str| {
        if warn {
            tracing::warn!(
                event = "config.warning",
                tenant = row.tenant_id,
                detail,
                "configuration warning"
            );
        }
    };
    if row.is_placeholder() {
        skipped("sys_third_app_config holds placeholder credentials ('1' or empty) for this tenant; skipped");
        return None;
    }
    let Ok(agent_id) = row.agent_id.trim().parse::<i64>() else {
        skipped("sys_third_app_config.agent_id is not a number; tenant skipped");
        return None;
    };
    Some(TenantConfig {
        id: row.tenant_id,
        agent_id,
        client_id: row.client_id,
        client_secret: row.client_secret,
        push: config.tenant_defaults.push,
        pull: config.tenant_defaults.pull,
        source: crate::config::TenantSource::SysThirdAppConfig,
    })
}

/// A direction switched off for a tenant: its `push.enabled` / `pull.enabled` is false.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchedOff {
    /// The tenant.
    pub tenant: TenantId,
    /// The direction switched off.
    pub direction: Direction,
}

impl std::fmt::Display for SwitchedOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.direction {
            Direction::Push => "push",
            Direction::Pull => "pull",
        };
        write!(
            f,
            "{name} is switched off for tenant {} ({name}.enabled = false)",
            self.tenant
        )
    }
}

impl std::error::Error for SwitchedOff {}

/// Why `direction` is switched off for `tenant`, when it is: the tenant's `push.enabled` /
/// `pull.enabled`. Every path asks here — `sync`, `plan`, the crons, the daemon's jobs.
pub fn switched_off(tenant: &TenantConfig, direction: Direction) -> Option<SwitchedOff> {
    let enabled = match direction {
        Direction::Push => tenant.push.enabled,
        Direction::Pull => tenant.pull.enabled,
    };
    (!enabled).then_some(SwitchedOff {
        tenant: tenant.id,
        direction,
    })
}

/// The per-tenant run lease: one full run of a tenant at a time — a scheduled pull, a
/// scheduled reconcile or `dingsync sync`, in any process, and within one process too (each
/// run holds it under an owner of its own, `<holder>/<run token>`). Renewed every third of
/// its lifetime while held; a holder that died loses it when it expires.
pub struct RunLease {
    store: Store,
    name: String,
    owner: String,
    renew: tokio::task::JoinHandle<()>,
}

impl RunLease {
    /// The lease's name for `tenant`.
    pub fn name(tenant: TenantId) -> String {
        format!("run:{tenant}")
    }

    /// Takes the run lease of `tenant` for a run of `holder` (an instance, a `sync`
    /// process), unless another run holds it (`None`).
    pub async fn try_take(
        store: &Store,
        tenant: TenantId,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Self>, StoreError> {
        let name = Self::name(tenant);
        // `dingsync_lease.owner` holds 64 characters: the holder is shortened to fit.
        let holder: String = holder.chars().take(48).collect();
        let owner = format!("{holder}/{:08x}", rand::random::<u32>());
        if !store.acquire_lease(&name, &owner, ttl).await? {
            return Ok(None);
        }
        let renew = {
            let (store, name, owner) = (store.clone(), name.clone(), owner.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    // A renewal that fails on a busy database is tried again at the next
                    // third; one that finds the lease taken means this run outlived it.
                    if let Ok(false) = store.acquire_lease(&name, &owner, ttl).await {
                        tracing::warn!(event = "lease.lost", lease = %name, owner = %owner, "a run outlived its run lease (the process stalled, or the database was unreachable for longer than daemon.lease_ttl); another run may start beside it");
                        return;
                    }
                }
            })
        };
        Ok(Some(Self {
            store: store.clone(),
            name,
            owner,
            renew,
        }))
    }

    /// [`RunLease::try_take`], trying again every half second for up to `wait`.
    pub async fn take_within(
        store: &Store,
        tenant: TenantId,
        holder: &str,
        ttl: std::time::Duration,
        wait: std::time::Duration,
    ) -> Result<Option<Self>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lease) = Self::try_take(store, tenant, holder, ttl).await? {
                return Ok(Some(lease));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500).min(wait)).await;
        }
    }

    /// Whether a full pull of `tenant` holds the run lease now (holders name their
    /// direction first: `pull:…`).
    pub async fn pulling(store: &Store, tenant: TenantId) -> Result<bool, StoreError> {
        Ok(Self::holder(store, tenant)
            .await?
            .is_some_and(|h| h.starts_with("pull:")))
    }

    /// Who holds the run lease of `tenant` now, if anyone.
    pub async fn holder(store: &Store, tenant: TenantId) -> Result<Option<String>, StoreError> {
        store.lease_holder(&Self::name(tenant)).await
    }

    /// Gives the lease up.
    pub async fn release(self) {
        self.renew.abort();
        // An unreleased lease expires by itself.
        let _ = self.store.release_lease(&self.name, &self.owner).await;
    }
}

/// Users read, planned and applied at a time: local users by a push, DingTalk users by a
/// pull. A push holds up to four slices of local users at once (one planned, one waiting in
/// the channel, one with its claimers being read, the next one's users) and up to three of
/// operations; a pull about two of each.
pub const USER_SLICE: usize = 1000;

/// Reads both sides and plans (a dry run: the whole plan is held and returned).
pub async fn plan_run(ctx: &RunCtx<'_>, request: RunRequest) -> Result<Plan, RunError> {
    let (store, tenant) = (ctx.store, ctx.tenant);
    if let Some(off) = switched_off(tenant, request.direction) {
        return Err(RunError::SwitchedOff(off));
    }
    match request.direction {
        Direction::Push => {
            let (mut push, mut plan) = start_push(ctx, request).await?;
            let (sender, mut slices) = tokio::sync::mpsc::channel(1);
            let collect = async {
                while let Some((ops, _)) = slices.recv().await {
                    plan.ops.extend(ops);
                }
            };
            let (planned, ()) = tokio::join!(push.plan_users(store, sender), collect);
            planned?;
            plan.considered += push.planner.considered;
            let tail = push.finish(store).await?;
            plan.ops.extend(tail.ops);
            plan.refused_deletes = tail.refused_deletes;
            Ok(plan)
        }
        Direction::Pull => {
            let (mut pull, mut plan) = super::pull_run::start_pull(ctx, request).await?;
            while let Some(slice) = pull.next_slice(store).await? {
                plan.ops.extend(slice.ops);
                plan.considered += slice.considered;
            }
            Ok(plan)
        }
    }
}

pub use super::pull_run::report_hidden_mobiles;

/// A push in progress: DingTalk's side read once, the local users read slice by slice.
struct Push {
    planner: PushPlanner,
    remote: RemoteView,
    tenant: TenantId,
    /// Users a slice.
    slice: usize,
    /// Whether the push plans users at all (scope and switch).
    users: bool,
    /// Where the time went, in ms (`sync.run.finished`'s `phases`).
    phases: Phases,
}

/// Time spent per phase of a run, in ms.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Phases {
    /// Reading DingTalk (the walk and the member pages, at once).
    pub dingtalk: u128,
    /// Reading local slices (users, links, snapshots, claimers).
    pub local: u128,
    /// Planning.
    pub plan: u128,
    /// Writing locally (a pull's slices; a push's writes follow DingTalk's calls).
    pub write: u128,
}

impl Phases {
    pub(super) fn record(self, summary: &mut Summary, total: std::time::Duration) {
        summary.phases = [
            ("dingtalk_read", self.dingtalk),
            ("local_read", self.local),
            ("plan", self.plan),
            ("write", self.write),
            ("total", total.as_millis()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), u64::try_from(v).unwrap_or(u64::MAX)))
        .collect();
    }
}

/// Reads the departments of both sides and DingTalk's users, and plans the departments.
async fn start_push(ctx: &RunCtx<'_>, request: RunRequest) -> Result<(Push, Plan), RunError> {
    let RunCtx {
        store,
        client,
        config,
        tenant,
    } = *ctx;
    let local = read::dept_tree_view(store, tenant.id, true).await?;
    // Users are read for departments too: members move out before a delete.
    let started = std::time::Instant::now();
    let remote = read::remote_view(client, true).await?;
    let dingtalk = started.elapsed().as_millis();
    report_hidden_mobiles(tenant.id, &remote);
    let (planner, plan) = PushPlanner::new(
        &local,
        &remote,
        &Rules::of(config, tenant),
        request.scope,
        Focus::All,
    );
    let push = Push {
        planner,
        remote,
        tenant: tenant.id,
        slice: USER_SLICE,
        users: request.scope.users() && config.push.users,
        phases: Phases {
            dingtalk,
            ..Phases::default()
        },
    };
    Ok((push, plan))
}

impl Push {
    /// Plans the users a slice at a time and sends each slice's operations, with how many
    /// users it looked at, to `out` once planned. The slices are read ahead of the planning
    /// ([`read_slices`]). Stops early, without an error, when `out` is closed.
    async fn plan_users(
        &mut self,
        store: &Store,
        out: tokio::sync::mpsc::Sender<(Vec<Op>, usize)>,
    ) -> Result<(), RunError> {
        if !self.users {
            return Ok(());
        }
        let (views, mut slices) = tokio::sync::mpsc::channel(1);
        let reading = read_slices(store, self.tenant, self.slice, &self.remote, views);
        let (planner, remote, spent) = (&mut self.planner, &self.remote, &mut self.phases.plan);
        let planning = async move {
            while let Some(slice) = slices.recv().await {
                let started = std::time::Instant::now();
                let before = planner.considered;
                let ops = planner.users(&slice, remote);
                *spent += started.elapsed().as_millis();
                if out.send((ops, planner.considered - before)).await.is_err() {
                    break;
                }
            }
        };
        let (read, ()) = tokio::join!(reading, planning);
        self.phases.local += read?;
        Ok(())
    }

    /// Member moves, department deletes and deletes of users gone for good.
    async fn finish(self, store: &Store) -> Result<Plan, RunError> {
        let gone = if self.planner.deletes_gone_users() {
            store.gone_users(self.tenant).await?
        } else {
            Vec::new()
        };
        let twins: Vec<_> = gone
            .iter()
            .filter_map(|(_, userid)| self.remote.users.get(userid))
            .collect();
        let mut claimers = LocalView {
            tenant: self.tenant,
            ..LocalView::default()
        };
        read::add_claimers(store, self.tenant, &mut claimers, &twins).await?;
        Ok(self.planner.finish(gone, &claimers, &self.remote))
    }
}

/// Reads `tenant`'s users `size` at a time, each slice with the local users that may claim
/// its users' twins in `remote`, and sends it to `out` once whole. The next slice (users
/// after this one's, so untouched by its writes) is read meanwhile, on another connection.
/// Returns the time spent reading, in ms; stops early when `out` is closed.
async fn read_slices(
    store: &Store,
    tenant: TenantId,
    size: usize,
    remote: &RemoteView,
    out: tokio::sync::mpsc::Sender<LocalView>,
) -> Result<u128, RunError> {
    let started = std::time::Instant::now();
    let mut next = Some(read::user_slice(store, tenant, None, size).await?);
    let mut spent = started.elapsed().as_millis();
    while let Some(mut slice) = next.take() {
        let started = std::time::Instant::now();
        let Some(last) = slice.users.last().map(|u| u.id.clone()) else {
            break;
        };
        let more = slice.users.len() >= size;
        let twins = push_twins(&slice, remote);
        let following = async {
            if !more {
                return Ok(None);
            }
            read::user_slice(store, tenant, Some(&last), size)
                .await
                .map(Some)
        };
        let (claimers, following) = tokio::join!(
            read::add_claimers(store, tenant, &mut slice, &twins),
            following
        );
        claimers?;
        next = following?;
        spent += started.elapsed().as_millis();
        if out.send(slice).await.is_err() {
            break;
        }
    }
    Ok(spent)
}

/// What a run works with: the database, the tenant's DingTalk client, the configuration and
/// the tenant.
#[derive(Clone, Copy)]
pub struct RunCtx<'a> {
    /// The database.
    pub store: &'a Store,
    /// The tenant's DingTalk app.
    pub client: &'a DingTalkClient,
    /// The configuration.
    pub config: &'a Config,
    /// The tenant.
    pub tenant: &'a TenantConfig,
}

/// Called after each operation with (done, total).
pub type Progress<'a> = Option<&'a (dyn Fn(usize, usize) + Sync)>;

/// Plans and applies one run, recording it in `dingsync_run`. A push plans and applies its
/// users a slice at a time ([`USER_SLICE`]), so that its memory does not grow with the
/// organisation; a pull plans the whole run first.
pub async fn run_once(
    ctx: &RunCtx<'_>,
    request: RunRequest,
    progress: Progress<'_>,
) -> Result<Summary, RunError> {
    run_sliced(ctx, request, progress, USER_SLICE).await
}

/// [`run_once`] with `slice` users a slice instead of [`USER_SLICE`] (tests use small ones).
pub async fn run_sliced(
    ctx: &RunCtx<'_>,
    request: RunRequest,
    progress: Progress<'_>,
    slice: usize,
) -> Result<Summary, RunError> {
    let RunCtx {
        store,
        client,
        config,
        tenant,
    } = *ctx;
    if let Some(off) = switched_off(tenant, request.direction) {
        return Err(RunError::SwitchedOff(off));
    }
    let kind = format!("{:?}", request.direction).to_lowercase();
    tracing::info!(event = "sync.run.started", tenant = tenant.id, kind = %kind, scope = ?request.scope, dry_run = request.dry_run, "sync run started");
    let before = client.calls_by_route();
    if request.dry_run {
        plan_run(ctx, request).await?;
        return Ok(Summary::default());
    }
    let apply = ApplyCtx {
        client,
        store,
        tenant: tenant.id,
        new_user_password: &config.pull.new_user_password,
        progress,
        placed: None,
    };
    let (mut summary, refused, run_id) = match request.direction {
        Direction::Pull => super::pull_run::apply_pull(ctx, &apply, request, &kind, slice).await?,
        Direction::Push => apply_push(ctx, &apply, request, slice).await?,
    };
    // Reads belong to the run too.
    summary.api_calls.clear();
    for (route, calls) in client.calls_by_route() {
        let total = calls - before.get(route).copied().unwrap_or(0);
        if total > 0 {
            summary.api_calls.insert(route.to_string(), total);
        }
    }
    finish_run(ctx, &kind, &summary, refused.as_deref(), run_id).await?;
    Ok(summary)
}

/// A push: departments and user slices planned and applied as they come, then the tail
/// (member moves, deletes). Its summary, the refused deletes, its run row.
async fn apply_push(
    ctx: &RunCtx<'_>,
    apply: &ApplyCtx<'_>,
    request: RunRequest,
    slice: usize,
) -> Result<(Summary, Option<String>, i64), RunError> {
    let started = std::time::Instant::now();
    let (store, tenant) = (ctx.store, ctx.tenant);
    let (mut push, head) = start_push(ctx, request).await?;
    push.slice = slice.max(1);
    let run_id = store.start_run(tenant.id, "push").await?;
    let (sender, slices) = tokio::sync::mpsc::channel(1);
    let planning = async {
        // `sender` goes with the users' planning: the slices' apply ends with it.
        push.plan_users(store, sender).await?;
        let phases = push.phases;
        push.finish(store).await.map(|tail| (tail, phases))
    };
    let (tail, mut summary) = tokio::join!(planning, apply_streamed(apply, &head, slices));
    match tail {
        Ok((tail, phases)) => {
            phases.record(&mut summary, started.elapsed());
            let rest = apply_plan(apply, &tail).await;
            merge(&mut summary, rest);
            Ok((summary, tail.refused_deletes, run_id))
        }
        Err(error) => {
            slices_stopped(&mut summary, &error);
            Ok((summary, None, run_id))
        }
    }
}

/// Records the end of run `run_id` (its counts and calls), in metrics and the
/// `sync.run.finished` event.
async fn finish_run(
    ctx: &RunCtx<'_>,
    kind: &str,
    summary: &Summary,
    refused: Option<&str>,
    run_id: i64,
) -> Result<(), RunError> {
    let counts = RunCounts {
        created: summary.created,
        updated: summary.updated,
        deleted: summary.deleted,
        skipped: summary.skipped,
        failed: summary.failed,
    };
    let calls: std::collections::BTreeMap<&str, u64> = summary
        .api_calls
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    ctx.store
        .finish_run(run_id, &counts, &calls, refused)
        .await?;
    let total_calls: u64 = summary.api_calls.values().sum();
    crate::metrics::metrics().entities(ctx.tenant.id, kind, summary);
    tracing::info!(
        event = "sync.run.finished",
        tenant = ctx.tenant.id,
        kind = %kind,
        created = summary.created,
        updated = summary.updated,
        deleted = summary.deleted,
        skipped = summary.skipped,
        failed = summary.failed,
        calls = total_calls,
        phases_ms = %serde_json::to_string(&summary.phases).unwrap_or_default(),
        "sync run finished"
    );
    Ok(())
}

/// Notes that reading or planning the users' slices stopped on `error`: what was applied
/// stays, and the run says why (retryable).
pub(super) fn slices_stopped(summary: &mut Summary, error: &RunError) {
    summary
        .failures
        .push((entity::USER.into(), "*".into(), error.to_string()));
    summary.retryable = true;
}

/// Adds what the tail of a push did to what its slices did.
pub(super) fn merge(summary: &mut Summary, rest: Summary) {
    summary.created += rest.created;
    summary.updated += rest.updated;
    summary.deleted += rest.deleted;
    summary.skipped += rest.skipped;
    summary.failed += rest.failed;
    summary.failures.extend(rest.failures);
    summary.warnings.extend(rest.warnings);
    summary.retryable |= rest.retryable;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switched_off_direction_names_its_switch() {
        let cases = [
            (
                Direction::Push,
                "push is switched off for tenant 7 (push.enabled = false)",
            ),
            (
                Direction::Pull,
                "pull is switched off for tenant 7 (pull.enabled = false)",
            ),
        ];
        for (direction, text) in cases {
            let off = SwitchedOff {
                tenant: 7,
                direction,
            };
            assert_eq!(RunError::SwitchedOff(off).to_string(), text);
        }
    }
}
