//! The push handlers of the daemon's jobs: one user or one department, planned by the same
//! planner as a full push ([`PushPlanner`] with a [`Focus`] on the entity) over views read
//! around it — its row, the local department tree, its DingTalk twin (by link, mobile or
//! username; by `ding_identifier` or snapshot), the siblings it may adopt, the subtree it may
//! delete, and the local users that may claim the same DingTalk user. A job that finds
//! nothing to do writes nothing; one that needs a department DingTalk lacks waits for that
//! department's job (at most `queue.max_waits` times).

use std::time::Duration;

use crate::dingtalk::DingTalkError;
use crate::job::{JobCtx, JobKind, JobOutcome};
use crate::store::{now_ms, StoreError};

use super::apply::{apply, ApplyCtx};
use super::around;
use super::model::{entity, Direction, LocalView, Op, RemoteView, Scope, Summary};
use super::plan::{tree::pushable, Focus, Plan, PushPlanner, Rules};
use super::read;

/// How long a job first waits for a department that is not in DingTalk yet.
const WAIT_FOR_DEPT: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub(super) enum JobError {
    #[error("{0}")]
    DingTalk(#[from] DingTalkError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl JobError {
    pub(super) fn into_outcome(self) -> JobOutcome {
        let permanent = match &self {
            JobError::DingTalk(e) => !e.is_retryable(),
            JobError::Store(e) => !e.is_retryable(),
        };
        JobOutcome::Failed {
            permanent,
            reason: self.to_string(),
        }
    }
}

/// Pushes one user (key: `sys_user.id`).
pub async fn push_user(ctx: &JobCtx<'_>, key: &str) -> JobOutcome {
    // The planner would plan nothing: no DingTalk call, no wait.
    if super::run::switched_off(ctx.tenant, Direction::Push).is_some() || !ctx.config.push.users {
        return JobOutcome::Done(Summary::default());
    }
    user_job(ctx, key)
        .await
        .unwrap_or_else(JobError::into_outcome)
}

/// Pushes one department (key: `sys_depart.id`).
pub async fn push_dept(ctx: &JobCtx<'_>, key: &str) -> JobOutcome {
    if super::run::switched_off(ctx.tenant, Direction::Push).is_some() {
        return JobOutcome::Done(Summary::default());
    }
    dept_job(ctx, key)
        .await
        .unwrap_or_else(JobError::into_outcome)
}

/// Waits for the jobs of departments DingTalk lacks (enqueued unless one is already there).
async fn wait_for_depts(ctx: &JobCtx<'_>, ids: &[String]) -> Result<JobOutcome, JobError> {
    for id in ids {
        ctx.store
            .enqueue(ctx.tenant.id, JobKind::Dept.as_str(), id, now_ms())
            .await?;
    }
    Ok(JobOutcome::Wait {
        delay: WAIT_FOR_DEPT,
        reason: format!("department {} is not in DingTalk yet", ids.join(", ")),
    })
}

/// Applies a job's plan; a plan that needs departments DingTalk lacks waits for their jobs.
pub(super) async fn run_plan(ctx: &JobCtx<'_>, plan: &Plan) -> Result<JobOutcome, JobError> {
    let needed = plan.needs_created();
    if !needed.is_empty() {
        return wait_for_depts(ctx, &needed).await;
    }
    if plan.ops.is_empty() && plan.refused_deletes.is_none() {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    let apply_ctx = ApplyCtx {
        client: ctx.client,
        store: ctx.store,
        tenant: ctx.tenant.id,
        new_user_password: &ctx.config.pull.new_user_password,
        progress: None,
        placed: None,
    };
    let summary = apply(&apply_ctx, plan).await;
    if summary.failures.is_empty() {
        return Ok(JobOutcome::Done(summary));
    }
    let reason = summary
        .failures
        .iter()
        .map(|(_, _, r)| r.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Ok(JobOutcome::Failed {
        permanent: !summary.retryable,
        reason,
    })
}

async fn user_job(ctx: &JobCtx<'_>, key: &str) -> Result<JobOutcome, JobError> {
    let (store, client, tenant) = (ctx.store, ctx.client, ctx.tenant.id);
    // Only this user's rows and the department tree: a job must not cost more with a
    // bigger organisation.
    let mut own = read::users_links(store, tenant, &[key]).await?;
    let known: Vec<String> = link_userids(&own, key);
    let Some(user) = store.load_user(key).await? else {
        return hard_delete(ctx, key, known).await;
    };
    if user.is_deleted() || !store.user_in_tenant(key, tenant).await? {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    // The part of the tree that decides where this user's departments are.
    let depts = read::dept_view_around(store, tenant, &user.depart_ids, &[]).await?;
    let mut remote = RemoteView::partial();
    let (mut planner, _) = PushPlanner::new(
        &depts,
        &remote,
        &Rules::of(ctx.config, ctx.tenant),
        Scope::Users,
        Focus::User(key.to_string()),
    );
    let missing = planner.missing_depts(&user);
    if !missing.is_empty() {
        // Waits before any DingTalk call: its departments come first.
        return wait_for_depts(ctx, &missing).await;
    }
    let twin = around::user_twin(client, &known, user.phone.as_deref(), &user.username).await?;
    remote.users = twin.into_iter().collect::<Vec<_>>().into();
    own.users = vec![user];
    read::add_claimers(
        store,
        tenant,
        &mut own,
        &remote.users.iter().collect::<Vec<_>>(),
    )
    .await?;
    let ops = planner.users(&own, &remote);
    let plan = Plan {
        ops,
        refused_deletes: None,
        considered: planner.considered,
    };
    run_plan(ctx, &plan).await
}

/// A user deleted for good: its DingTalk twin (by link or snapshot) goes, unless a live
/// local user has claimed it since — the full push's rule, through its planner.
async fn hard_delete(
    ctx: &JobCtx<'_>,
    key: &str,
    known: Vec<String>,
) -> Result<JobOutcome, JobError> {
    if known.is_empty() || !ctx.config.push.delete_users_on_hard_delete {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    let (store, client, tenant) = (ctx.store, ctx.client, ctx.tenant.id);
    let twins = around::users(client, &known).await?;
    let remote = RemoteView {
        users: twins.clone().into(),
        ..RemoteView::partial()
    };
    let mut claimers = LocalView {
        tenant,
        ..LocalView::default()
    };
    read::add_claimers(store, tenant, &mut claimers, &twins).await?;
    let (planner, _) = PushPlanner::new(
        &LocalView::default(),
        &remote,
        &Rules::of(ctx.config, ctx.tenant),
        Scope::Users,
        Focus::User(key.to_string()),
    );
    let gone = known.into_iter().map(|u| (key.to_string(), u)).collect();
    let plan = planner.finish(gone, &claimers, &remote);
    if plan.ops.is_empty() {
        // Nothing to delete: DingTalk lacks it, or a live user claims it; forget ours.
        store.delete_snapshot(tenant, entity::USER, key).await?;
    }
    run_plan(ctx, &plan).await
}

async fn dept_job(ctx: &JobCtx<'_>, key: &str) -> Result<JobOutcome, JobError> {
    let local = read::dept_tree_view(ctx.store, ctx.tenant.id, true).await?;
    let pushed = local.depts.iter().any(|d| d.id == key && pushable(d));
    let remote = around::dept_view(ctx.client, &local, key, pushed).await?;
    if !pushed {
        return remove_dept(ctx, key, &local, remote).await;
    }
    let rules = Rules::of(ctx.config, ctx.tenant);
    let focus = Focus::Dept(key.to_string());
    let (_, plan) = PushPlanner::new(&local, &remote, &rules, Scope::Departments, focus);
    let placed_now = plan.ops.iter().any(|op| match op {
        Op::CreateDept { local_id, .. } => local_id == key,
        Op::UpdateDept {
            local_id,
            source_identifier: Some(_),
            ..
        } => local_id == key,
        _ => false,
    });
    let outcome = run_plan(ctx, &plan).await?;
    if let JobOutcome::Done(summary) = &outcome {
        if placed_now {
            arrived(ctx, key, &local).await?;
        }
        if summary.created + summary.updated > 0 {
            rejudge(ctx).await?;
        }
    }
    Ok(outcome)
}

/// A department DingTalk now has for the first time: what a full run would push with it is
/// pushed now — its members (placed higher up while it was missing or refused) and the
/// departments under it that waited for it.
async fn arrived(ctx: &JobCtx<'_>, key: &str, local: &LocalView) -> Result<(), JobError> {
    let (store, tenant) = (ctx.store, ctx.tenant.id);
    let now = now_ms();
    for child in local
        .depts
        .iter()
        .filter(|d| d.parent_id.as_deref() == Some(key) && d.ding_identifier.is_none())
    {
        store
            .enqueue(tenant, JobKind::Dept.as_str(), &child.id, now)
            .await?;
    }
    for user in store.members_of(key).await? {
        store
            .enqueue(tenant, JobKind::User.as_str(), &user, now)
            .await?;
    }
    Ok(())
}

/// A department changed in DingTalk: the departments the planner refused (a cycle, a
/// sibling of one name, a refused parent) may be pushable now — their dead jobs run again
/// (the planner judges them anew; one still refused is dead again, with no DingTalk write).
/// Departments DingTalk itself refused stay dead until their row changes or `queue retry`.
async fn rejudge(ctx: &JobCtx<'_>) -> Result<(), JobError> {
    let filter = crate::store::queue::JobFilter {
        state: Some(crate::store::queue::state::DEAD.into()),
        tenant_id: Some(ctx.tenant.id),
        kind: Some(JobKind::Dept.as_str().into()),
        limit: Some(1000),
    };
    for job in ctx.store.list_jobs(&filter).await? {
        if !read::dingtalk_refusal(job.last_error.as_deref().unwrap_or_default()) {
            ctx.store.retry_dead(job.id).await?;
        }
    }
    Ok(())
}

/// A department gone locally (deleted, logically deleted, or now a post): its DingTalk twin
/// and what DingTalk has under it that no local department holds go, members moved out
/// first — through the full push's planner, deletion guard included.
async fn remove_dept(
    ctx: &JobCtx<'_>,
    key: &str,
    local: &LocalView,
    remote: RemoteView,
) -> Result<JobOutcome, JobError> {
    let (store, tenant) = (ctx.store, ctx.tenant.id);
    if remote.depts.is_empty() {
        // DingTalk lacks its twin: nothing to delete; forget ours.
        store.delete_snapshot(tenant, entity::DEPT, key).await?;
        return Ok(JobOutcome::Done(Summary::default()));
    }
    if !(ctx.config.push.departments && ctx.config.push.delete_departments) {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    let (planner, _) = PushPlanner::new(
        local,
        &remote,
        &Rules::of(ctx.config, ctx.tenant),
        Scope::Departments,
        Focus::Dept(key.to_string()),
    );
    let blocked = planner.blocked().to_vec();
    if !blocked.is_empty() {
        return wait_for_blocked(ctx, &blocked, &remote).await;
    }
    let plan = planner.finish(Vec::new(), &LocalView::default(), &remote);
    if let Some(reason) = &plan.refused_deletes {
        tracing::error!(event = "sync.delete_refused", tenant, key, reason = %reason, "department deletion refused by the guard");
        return Ok(JobOutcome::Failed {
            permanent: true,
            reason: format!("deletion guard: {reason}"),
        });
    }
    let outcome = run_plan(ctx, &plan).await?;
    if matches!(outcome, JobOutcome::Done(_)) {
        store.delete_snapshot(tenant, entity::DEPT, key).await?;
        if local.depts.iter().any(|d| d.id == key) {
            store.set_ding_identifier(key, None).await?;
        }
    }
    Ok(outcome)
}

/// A delete that must wait: the local departments in `blocked`, whose DingTalk twins sit
/// under the department to delete (`remote`'s first), are queued (their jobs move them out),
/// and this job waits for them.
async fn wait_for_blocked(
    ctx: &JobCtx<'_>,
    blocked: &[String],
    remote: &RemoteView,
) -> Result<JobOutcome, JobError> {
    for id in blocked {
        ctx.store
            .enqueue(ctx.tenant.id, JobKind::Dept.as_str(), id, now_ms())
            .await?;
    }
    Ok(JobOutcome::Wait {
        delay: WAIT_FOR_DEPT,
        reason: format!(
            "department {} must move out of DingTalk department {} first",
            blocked.join(", "),
            remote.depts.first().map_or(0, |d| d.dept_id)
        ),
    })
}

/// The DingTalk userids `view` links `key` to: its link row, then its snapshot.
fn link_userids(view: &LocalView, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = view
        .links
        .iter()
        .filter(|l| l.user_id == key)
        .map(|l| l.userid.clone())
        .collect();
    for snapshot in view.user_snapshots.values().filter(|s| s.local_id == key) {
        if !ids.contains(&snapshot.ding_id) {
            ids.push(snapshot.ding_id.clone());
        }
    }
    ids
}
