//! A pull run: DingTalk read once, its departments placed, then its users planned and
//! written a slice at a time — the next slice planned while the current one is written (in
//! batches: `Store::insert_linked_users`). Into a database whose departments are not linked
//! to DingTalk yet (a first pull), the departments are placed as the walk finds them (each
//! department's children, with whatever else arrived while the last batch was applied) while
//! it is still reading, so that their `source_identifier` write-backs overlap the reading
//! instead of following it. Either way every department and user is planned by
//! the same planner as `plan pull` and the daemon's pull jobs.

use std::collections::{HashMap, HashSet};

use crate::config::{Config, TenantConfig, TenantId};
use crate::dingtalk::DingTalkClient;
use crate::store::Store;

use super::apply::{apply, ApplyCtx};
use super::model::{entity, LocalRef, Op, RemoteDept, RemoteView, Summary};
use super::plan::{pull_departments, pull_users_slice, Plan, Rules};
use super::read;
use super::run::{merge, Phases, RunError, RunRequest, USER_SLICE};

/// Logs `pull.mobile_hidden` once a run when DingTalk shows users without a mobile: the
/// app lacks the permission to read them, so users are matched by link and username only
/// and none is inserted without a phone.
pub fn report_hidden_mobiles(tenant: TenantId, remote: &RemoteView) {
    let hidden = remote.users.iter().filter(|u| u.mobile.is_empty()).count();
    if hidden > 0 {
        tracing::warn!(
            event = "pull.mobile_hidden",
            tenant,
            count = hidden,
            users = remote.users.len(),
            "DingTalk shows users without a mobile: grant the app 企业员工手机号信息 (qyapi_get_member_by_mobile / the mobile permission) in DingTalk's developer console; until then users are matched by link and username only and none is inserted without a phone"
        );
    }
}

/// A pull in progress: DingTalk's side read once, its users planned a slice at a time
/// against the local users each slice can match.
pub(super) struct Pull {
    remote: RemoteView,
    policy: super::plan::merge::Policy,
    tenant: TenantId,
    users: bool,
    map: HashMap<i64, LocalRef>,
    claimed: HashMap<String, String>,
    next: usize,
    slice: usize,
    phases: Phases,
}

/// Reads DingTalk and the local departments, and plans the departments.
pub(super) async fn start_pull(
    store: &Store,
    client: &DingTalkClient,
    config: &Config,
    tenant: &TenantConfig,
    request: RunRequest,
) -> Result<(Pull, Plan), RunError> {
    let policy = Rules::of(config, tenant).policy;
    let local = read::dept_tree_view(store, tenant.id, true).await?;
    let started = std::time::Instant::now();
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
    let dingtalk = started.elapsed().as_millis();
    report_hidden_mobiles(tenant.id, &remote);
    let (ops, mut map) = pull_departments(&local, &remote, &policy);
    let plan = if request.scope.departments() {
        Plan {
            ops,
            refused_deletes: None,
            considered: remote.depts.len(),
        }
    } else {
        // Nothing is created: only the departments that exist.
        map.retain(|_, r| !matches!(r, LocalRef::Created(_)));
        Plan::default()
    };
    let pull = Pull {
        remote,
        tenant: tenant.id,
        users: request.scope.users(),
        map,
        claimed: HashMap::new(),
        next: 0,
        slice: USER_SLICE,
        policy,
        phases: Phases {
            dingtalk,
            ..Phases::default()
        },
    };
    Ok((pull, plan))
}

impl Pull {
    /// After the departments are applied: where each DingTalk department now is locally
    /// (one whose create failed is left out, so its members are not added to it).
    async fn departments_applied(&mut self, store: &Store) -> Result<(), RunError> {
        let local = read::dept_tree_view(store, self.tenant, true).await?;
        self.map = pull_departments(&local, &self.remote, &self.policy).1;
        self.map.retain(|_, r| !matches!(r, LocalRef::Created(_)));
        Ok(())
    }

    /// The next slice of DingTalk users planned.
    pub(super) async fn next_slice(&mut self, store: &Store) -> Result<Option<Plan>, RunError> {
        if !self.users || self.next >= self.remote.users.len() {
            return Ok(None);
        }
        let people = self.remote.users.slice(self.next, self.slice);
        self.next += people.len();
        let started = std::time::Instant::now();
        let local = read::pull_candidates(store, self.tenant, &people).await?;
        self.phases.local += started.elapsed().as_millis();
        let started = std::time::Instant::now();
        let ops = pull_users_slice(&local, &people, &self.map, &mut self.claimed, &self.policy);
        self.phases.plan += started.elapsed().as_millis();
        Ok(Some(Plan {
            ops,
            refused_deletes: None,
            considered: people.len(),
        }))
    }
}

/// Whether a pull places its departments level by level while reading: when no live local
/// department is linked to DingTalk yet (a first pull), nothing local can stand for a
/// department DingTalk has not shown yet.
async fn by_levels(store: &Store, tenant: TenantId) -> Result<bool, RunError> {
    let rows = store.dept_rows(tenant).await?;
    Ok(!rows
        .depts
        .iter()
        .any(|d| !d.is_post() && !d.is_deleted() && d.ding_identifier.is_some()))
}

/// Reads DingTalk while placing its departments level by level (see the module
/// documentation); the departments' operations applied so far, and the pull of the users.
async fn start_pull_by_levels(
    ctx: &ApplyCtx<'_>,
    config: &Config,
    tenant: &TenantConfig,
    request: RunRequest,
) -> Result<(Pull, Summary, usize), RunError> {
    let started = std::time::Instant::now();
    let policy = Rules::of(config, tenant).policy;
    // Local departments that are not linked can be matched only by the `source_identifier`
    // DingTalk keeps: read it for each level then.
    let unlinked = store_has_live_departments(ctx.store, tenant.id).await?;
    let (levels_tx, mut levels) = tokio::sync::mpsc::unbounded_channel::<Vec<RemoteDept>>();
    let read = read::remote_view_by_levels(ctx.client, Some(levels_tx));
    let place = async {
        let mut remote = RemoteView::default();
        let mut applied: HashSet<String> = HashSet::new();
        let mut summary = Summary::default();
        let mut ops_total = 0;
        while let Some(mut level) = levels.recv().await {
            // Whatever else the walk found meanwhile goes with it: one plan and one apply for
            // all, so a slow database takes bigger batches instead of falling behind.
            while let Ok(more) = levels.try_recv() {
                level.extend(more);
            }
            if unlinked {
                read::fetch_sources_of(ctx.client, &mut level).await?;
            }
            remote.depts.extend(level);
            if !request.scope.departments() {
                continue;
            }
            let local = read::dept_tree_view(ctx.store, tenant.id, true).await?;
            let ops: Vec<Op> = pull_departments(&local, &remote, &policy)
                .0
                .into_iter()
                .filter(|op| applied.insert(serde_json::to_string(op).unwrap_or_default()))
                .collect();
            ops_total += ops.len();
            let plan = Plan {
                ops,
                refused_deletes: None,
                considered: 0,
            };
            merge(&mut summary, apply(ctx, &plan).await);
        }
        Ok::<_, RunError>((remote.depts, summary, ops_total))
    };
    let (mut remote, (depts, summary, ops)) =
        tokio::try_join!(async { read.await.map_err(RunError::from) }, place)?;
    // The levels carried `source_identifier` where it was read.
    remote.depts = depts;
    report_hidden_mobiles(tenant.id, &remote);
    let pull = Pull {
        remote,
        tenant: tenant.id,
        users: request.scope.users(),
        map: HashMap::new(),
        claimed: HashMap::new(),
        next: 0,
        slice: USER_SLICE,
        policy,
        phases: Phases {
            dingtalk: started.elapsed().as_millis(),
            ..Phases::default()
        },
    };
    Ok((pull, summary, ops))
}

async fn store_has_live_departments(store: &Store, tenant: TenantId) -> Result<bool, RunError> {
    let rows = store.dept_rows(tenant).await?;
    Ok(rows.depts.iter().any(|d| !d.is_post() && !d.is_deleted()))
}

/// Applies a pull: the departments, then the users a slice at a time, the next slice
/// planned while the current one is written. Returns the summary and the run's id.
pub(super) async fn apply_pull(
    ctx: &ApplyCtx<'_>,
    config: &Config,
    tenant: &TenantConfig,
    request: RunRequest,
    kind: &str,
    slice: usize,
) -> Result<(Summary, Option<String>, i64), RunError> {
    let store = ctx.store;
    let run_started = std::time::Instant::now();
    let (mut pull, mut summary, head_ops, run_id) = if by_levels(store, tenant.id).await? {
        let run_id = store.start_run(tenant.id, kind).await?;
        let (pull, summary, ops) = start_pull_by_levels(ctx, config, tenant, request).await?;
        (pull, summary, ops, run_id)
    } else {
        let (pull, head) = start_pull(store, ctx.client, config, tenant, request).await?;
        let run_id = store.start_run(tenant.id, kind).await?;
        let summary = apply(ctx, &head).await;
        (pull, summary, head.ops.len(), run_id)
    };
    pull.slice = slice.max(1);
    // Progress over the whole run, not per slice.
    let total = head_ops + pull.remote.users.len();
    let (sender, mut slices) = tokio::sync::mpsc::channel::<Plan>(1);
    let planning = async {
        pull.departments_applied(store).await?;
        while let Some(plan) = pull.next_slice(store).await? {
            if sender.send(plan).await.is_err() {
                break;
            }
        }
        drop(sender);
        Ok::<_, RunError>(())
    };
    let writing = async {
        let mut done = head_ops;
        let mut written = Summary::default();
        let mut write_ms = 0;
        while let Some(plan) = slices.recv().await {
            let offset = done;
            let report = |n: usize, _: usize| {
                if let Some(progress) = ctx.progress {
                    progress(offset + n, total.max(offset + n));
                }
            };
            let slice_ctx = ApplyCtx {
                progress: Some(&report),
                ..*ctx
            };
            let started = std::time::Instant::now();
            merge(&mut written, apply(&slice_ctx, &plan).await);
            write_ms += started.elapsed().as_millis();
            done += plan.ops.len();
        }
        (written, write_ms)
    };
    let (planned, (written, write_ms)) = tokio::join!(planning, writing);
    merge(&mut summary, written);
    let phases = Phases {
        write: write_ms,
        ..pull.phases
    };
    phases.record(&mut summary, run_started.elapsed());
    if let Err(error) = planned {
        // Reading a slice failed: what was applied stays; the run says why.
        summary
            .failures
            .push((entity::USER.into(), "*".into(), error.to_string()));
        summary.retryable = true;
    }
    Ok((summary, None, run_id))
}
