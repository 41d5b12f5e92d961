//! `dingsync plan` and `dingsync sync`: JeecgBoot's "同步" buttons for operators — what would
//! change as a table (or JSON), and running it with progress and a summary.

use std::io::IsTerminal;

use crate::config::{Loaded, TenantConfig, TenantId};
use crate::dingtalk::DingTalkClient;
use crate::store::Store;
use crate::sync::model::{Direction, Op, Scope, Summary};
use crate::sync::plan::Plan;
use crate::sync::run::{
    plan_run, run_once, switched_off, tenants, RunCtx, RunError, RunLease, RunRequest,
};

use super::{connect, CliError, Refusal, UsageError};

/// Arguments shared by `plan` and `sync`.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// push (local -> DingTalk) or pull (DingTalk -> local).
    #[arg(value_enum)]
    pub direction: Direction,
    /// users, departments or all.
    #[arg(value_enum, default_value = "all")]
    pub scope: Scope,
    /// Only this tenant (JeecgBoot tenant_id); default: every configured tenant.
    #[arg(long)]
    pub tenant: Option<TenantId>,
    /// How long `sync` waits for another run of a tenant (the daemon's scheduled pull or
    /// reconcile, another `sync`) to finish before it gives up with exit 75
    /// [default: twice daemon.lease_ttl, so a run whose process died is taken over].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,
}

/// The database and the tenants to work (`only` one of them).
async fn setup(
    loaded: &Loaded,
    only: Option<TenantId>,
) -> Result<(Store, Vec<TenantConfig>), CliError> {
    let store = connect(loaded).await?;
    let chosen: Vec<TenantConfig> = tenants(&loaded.config, &store)
        .await?
        .into_iter()
        .filter(|t| only.is_none_or(|id| t.id == id))
        .collect();
    if chosen.is_empty() {
        return Err(UsageError::NoSuchTenant(only).into());
    }
    Ok((store, chosen))
}

fn describe(op: &Op) -> (String, String, String) {
    let json = serde_json::to_value(op).unwrap_or_default();
    let name = json
        .get("op")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    let key = ["local_id", "userid", "dept_id", "key"]
        .iter()
        .find_map(|k| {
            json.get(*k)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        })
        .unwrap_or_default();
    let mut details = json.as_object().cloned().unwrap_or_default();
    for k in ["op", "hash", "local_id", "userid", "key", "base", "merge"] {
        details.remove(k);
    }
    if name == "merge" {
        // Shown field by field under the line.
        details.remove("fields");
    }
    (name, key, serde_json::Value::Object(details).to_string())
}

/// The per-field lines of an operation that merged fields: who changed what, and what this
/// plan does with it.
fn merge_lines(op: &Op) -> Vec<String> {
    let fields = match op {
        Op::UpdateUser { merge, .. }
        | Op::UpdateDept { merge, .. }
        | Op::UpdateLocalUser { merge, .. }
        | Op::UpdateLocalDept { merge, .. } => merge,
        Op::Merge { fields, .. } => fields,
        _ => return Vec::new(),
    };
    fields
        .iter()
        .map(|f| {
            use crate::sync::plan::merge::Changed;
            let changed = match f.changed {
                Changed::Jeecgboot => "JeecgBoot changed it",
                Changed::Dingtalk => "DingTalk changed it",
                Changed::Both => "CONFLICT: both changed it",
                Changed::Unknown => "no base yet",
                Changed::Master => "the master side decides",
            };
            format!(
                "{:<12} JeecgBoot {:?} | DingTalk {:?} | base {} -> {} ({changed})",
                f.field,
                f.jeecgboot,
                f.dingtalk,
                f.base
                    .as_deref()
                    .map_or("none".into(), |b| format!("{b:?}")),
                f.action
            )
        })
        .collect()
}

fn print_plan(tenant: TenantId, plan: &Plan) {
    println!(
        "tenant {tenant}: {} operation(s), {} DingTalk write(s)",
        plan.ops.len(),
        plan.dingtalk_writes()
    );
    if let Some(reason) = &plan.refused_deletes {
        println!("  deletion guard: {reason}");
    }
    if plan.ops.is_empty() {
        println!("  nothing to do");
        return;
    }
    println!("  {:<18} {:<34} details", "operation", "entity");
    for op in &plan.ops {
        let (name, key, details) = describe(op);
        let details: String = details.chars().take(110).collect();
        println!("  {name:<18} {key:<34} {details}");
        for line in merge_lines(op) {
            println!("      {line}");
        }
    }
}

/// `dingsync plan`.
pub(super) async fn plan(loaded: &Loaded, args: &SyncArgs, json: bool) -> Result<(), CliError> {
    let (store, tenants) = setup(loaded, args.tenant).await?;
    let request = RunRequest {
        direction: args.direction,
        scope: args.scope,
        dry_run: true,
    };
    let mut plans = Vec::new();
    for tenant in &tenants {
        let client = DingTalkClient::for_tenant(&loaded.config, tenant)?;
        let ctx = RunCtx {
            store: &store,
            client: &client,
            config: &loaded.config,
            tenant,
        };
        match plan_run(&ctx, request).await {
            Ok(plan) => plans.push((tenant.id, plan)),
            Err(RunError::SwitchedOff(why)) => {
                eprintln!("tenant {}: {why}; nothing planned", tenant.id)
            }
            Err(source) => {
                return Err(CliError::Run {
                    tenant: tenant.id,
                    source,
                })
            }
        }
    }
    store.close().await;
    if json {
        let out: Vec<serde_json::Value> = plans
            .iter()
            .map(|(t, p)| serde_json::json!({ "tenant": t, "plan": p }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for (tenant, plan) in &plans {
            print_plan(*tenant, plan);
        }
    }
    Ok(())
}

fn print_summary(tenant: TenantId, summary: &Summary) {
    let calls: u64 = summary.api_calls.values().sum();
    println!(
        "tenant {tenant}: created {}, updated {}, deleted {}, skipped {}, failed {}; {calls} DingTalk call(s)",
        summary.created, summary.updated, summary.deleted, summary.skipped, summary.failed
    );
    for (route, n) in &summary.api_calls {
        println!("  {n:>6}  {route}");
    }
    for (entity, key, reason) in &summary.failures {
        println!("  FAILED  {entity} {key}: {reason}");
    }
    for (entity, key, reason) in &summary.warnings {
        println!("  WARNING {entity} {key}: {reason}");
    }
}

/// Takes the tenant's run lease, waiting up to `wait` for another run to end; exit 75
/// (naming the holder) when it does not.
async fn run_lease(
    store: &Store,
    tenant: TenantId,
    owner: &str,
    ttl: std::time::Duration,
    wait: std::time::Duration,
) -> Result<RunLease, CliError> {
    let unavailable = |error| CliError::Run {
        tenant,
        source: RunError::Store(error),
    };
    if let Some(lease) = RunLease::try_take(store, tenant, owner, ttl)
        .await
        .map_err(unavailable)?
    {
        return Ok(lease);
    }
    let holder = |store| async move {
        RunLease::holder(store, tenant)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "another process".into())
    };
    eprintln!(
        "dingsync: tenant {tenant}: waiting for the run held by {} to finish (at most {})",
        holder(store).await,
        humantime::format_duration(wait)
    );
    match RunLease::take_within(store, tenant, owner, ttl, wait)
        .await
        .map_err(unavailable)?
    {
        Some(lease) => Ok(lease),
        None => {
            let holder = holder(store).await;
            tracing::warn!(event = "sync.run.busy", tenant, holder = %holder, "another run of this tenant is still going");
            Err(CliError::Busy {
                tenant,
                holder,
                waited: wait,
            })
        }
    }
}

/// `dingsync sync`: each tenant's run in turn, under its run lease; 65 when an entity failed.
pub(super) async fn sync(loaded: &Loaded, args: &SyncArgs, dry_run: bool) -> Result<(), CliError> {
    if dry_run {
        return plan(loaded, args, false).await;
    }
    let (store, tenants) = setup(loaded, args.tenant).await?;
    // A run that cannot start is told at once and the next tenant goes on.
    let (mut not_run, mut entities_failed) = (Vec::new(), false);
    for tenant in &tenants {
        if let Some(why) = switched_off(tenant, args.direction) {
            println!("tenant {}: {why}; skipped", tenant.id);
            continue;
        }
        match sync_tenant(loaded, &store, tenant, args).await {
            Ok(summary) => entities_failed |= summary.failed > 0 || !summary.failures.is_empty(),
            Err(CliError::Run {
                source: RunError::SwitchedOff(why),
                ..
            }) => println!("tenant {}: {why}; skipped", tenant.id),
            Err(error @ CliError::Run { .. }) => {
                super::error::report(&error);
                not_run.push(tenant.id);
            }
            Err(error) => {
                store.close().await;
                return Err(error);
            }
        }
    }
    store.close().await;
    if !not_run.is_empty() {
        return Err(CliError::NotRun(not_run));
    }
    if entities_failed {
        return Err(Refusal::EntitiesFailed.into());
    }
    Ok(())
}

/// One tenant's run of `sync`, with a progress bar on a terminal; its summary printed.
async fn sync_tenant(
    loaded: &Loaded,
    store: &Store,
    tenant: &TenantConfig,
    args: &SyncArgs,
) -> Result<Summary, CliError> {
    let client = DingTalkClient::for_tenant(&loaded.config, tenant)?;
    // The direction leads the holder's name: pull jobs give way to a full pull.
    let owner = format!(
        "{}:sync:{}",
        format!("{:?}", args.direction).to_lowercase(),
        std::process::id()
    );
    let ttl = loaded.config.daemon.lease_ttl;
    let lease = run_lease(store, tenant.id, &owner, ttl, args.wait.unwrap_or(ttl * 2)).await?;
    let bar = progress_bar(tenant.id);
    let progress = |done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let request = RunRequest {
        direction: args.direction,
        scope: args.scope,
        dry_run: false,
    };
    let ctx = RunCtx {
        store,
        client: &client,
        config: &loaded.config,
        tenant,
    };
    let result = run_once(&ctx, request, Some(&progress)).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    lease.release().await;
    let summary = result.map_err(|source| CliError::Run {
        tenant: tenant.id,
        source,
    })?;
    print_summary(tenant.id, &summary);
    Ok(summary)
}

/// A progress bar for `tenant`'s run, on a terminal only.
fn progress_bar(tenant: TenantId) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("tenant {tenant}"));
        bar
    })
}
