//! One sync run for one tenant: read both views, plan, and (unless a dry run) apply, with a
//! `dingsync_run` row and `sync.run.started` / `sync.run.finished` events.

use std::collections::HashSet;

use crate::config::{Config, TenantConfig};
use crate::dingtalk::{DingTalkClient, DingTalkError};
use crate::secret::Secret;
use crate::store::state::RunCounts;
use crate::store::{Store, StoreError};

use super::apply::{apply, ApplyCtx};
use super::model::{Direction, Scope, Summary};
use super::plan::{plan_pull, plan_push, Plan};
use super::read;

/// Why a run could not even start (reading a side failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
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

/// The tenants to work: `[[tenant]]` entries, plus `sys_third_app_config` rows when
/// `tenants_from_database` (the config wins on equal ids).
pub async fn tenants(config: &Config, store: &Store) -> Result<Vec<TenantConfig>, StoreError> {
    let mut tenants = config.tenants.clone();
    if config.tenants_from_database {
        for row in store.app_configs().await? {
            if tenants.iter().any(|t| t.id == row.tenant_id) {
                continue;
            }
            let Ok(agent_id) = row.agent_id.trim().parse::<i64>() else {
                tracing::warn!(
                    event = "config.warning",
                    tenant = row.tenant_id,
                    detail = "sys_third_app_config.agent_id is not a number; tenant skipped",
                    "configuration warning"
                );
                continue;
            };
            tenants.push(TenantConfig {
                id: row.tenant_id,
                agent_id,
                client_id: row.client_id,
                client_secret: row.client_secret,
                push: crate::config::Switch { enabled: true },
                pull: crate::config::Switch { enabled: true },
            });
        }
    }
    Ok(tenants)
}

/// Reads both sides and plans.
pub async fn plan_run(
    store: &Store,
    client: &DingTalkClient,
    config: &Config,
    tenant: &TenantConfig,
    request: RunRequest,
) -> Result<Plan, RunError> {
    let local = read::local_view(store, tenant.id).await?;
    match request.direction {
        Direction::Push => {
            // Users are read for departments too: members move out before a delete.
            let remote = read::remote_view(client, true).await?;
            Ok(plan_push(&local, &remote, &config.push, request.scope))
        }
        Direction::Pull => {
            let mut remote = read::remote_view(client, request.scope.users()).await?;
            let known: HashSet<i64> = local
                .depts
                .iter()
                .filter_map(|d| d.ding_identifier)
                .collect();
            // `source_identifier` only matters for a local department that no DingTalk
            // department is linked to; with none (an empty database, or all linked), no
            // `department/get` is needed.
            let remote_ids: HashSet<i64> = remote.depts.iter().map(|d| d.dept_id).collect();
            let unlinked = local
                .depts
                .iter()
                .filter(|d| !d.is_post() && !d.is_deleted())
                .any(|d| d.ding_identifier.is_none_or(|id| !remote_ids.contains(&id)));
            if unlinked {
                read::fetch_sources(client, &mut remote, &known).await?;
            }
            Ok(plan_pull(&local, &remote, request.scope))
        }
    }
}

/// Plans and applies one run, recording it in `dingsync_run`.
pub async fn run_once(
    store: &Store,
    client: &DingTalkClient,
    config: &Config,
    tenant: &TenantConfig,
    request: RunRequest,
    progress: Option<&(dyn Fn(usize, usize) + Sync)>,
) -> Result<(Plan, Summary), RunError> {
    let kind = format!("{:?}", request.direction).to_lowercase();
    tracing::info!(event = "sync.run.started", tenant = tenant.id, kind = %kind, scope = ?request.scope, dry_run = request.dry_run, "sync run started");
    let before = client.calls_by_route();
    let plan = plan_run(store, client, config, tenant, request).await?;
    if request.dry_run {
        return Ok((plan, Summary::default()));
    }
    let run_id = store.start_run(tenant.id, &kind).await?;
    let password: &Secret = &config.pull.new_user_password;
    let ctx = ApplyCtx {
        client,
        store,
        tenant: tenant.id,
        new_user_password: password,
        progress,
    };
    let mut summary = apply(&ctx, &plan).await;
    // Reads belong to the run too.
    for (route, calls) in client.calls_by_route() {
        let total = calls - before.get(route).copied().unwrap_or(0);
        if total > 0 {
            summary.api_calls.insert(route.to_string(), total);
        }
    }
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
    let error = plan.refused_deletes.as_deref();
    store.finish_run(run_id, &counts, &calls, error).await?;
    let total_calls: u64 = summary.api_calls.values().sum();
    tracing::info!(
        event = "sync.run.finished",
        tenant = tenant.id,
        kind = %kind,
        created = summary.created,
        updated = summary.updated,
        deleted = summary.deleted,
        skipped = summary.skipped,
        failed = summary.failed,
        calls = total_calls,
        "sync run finished"
    );
    Ok((plan, summary))
}
