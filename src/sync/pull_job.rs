//! The pull handlers of the daemon's jobs, asked for by DingTalk's address-book events: one
//! DingTalk user or department, read fresh (`user/get`, `department/get`: an event's own data
//! lacks the mobile and the departments) and planned by the full pull's planner over a view
//! of that entity — the same matching, three-way merge, switches and tenant rules. What the
//! pull never does, a job does not either: nothing is deleted locally (a user or department
//! DingTalk no longer has is reported), a row deleted locally stays deleted.
//!
//! A user whose DingTalk departments are not local yet waits for their department jobs
//! (when the planner would create them); a user whose local twin has a push job queued lets
//! that push go first, so that an event answering dingsync's own write never races a newer
//! local edit.

use std::collections::HashMap;
use std::time::Duration;

use crate::dingtalk::types::DtUser;
use crate::job::{JobCtx, JobKind, JobOutcome};
use crate::store::now_ms;

use super::around::{self, Source};
use super::job::{run_plan, JobError};
use super::model::{entity, Direction, Op, Scope, Summary, ROOT_DEPT};
use super::plan::{linked_depts, plan_pull, pull_departments, pull_users_slice, Plan, Rules};
use super::read;
use super::run::{run_once, switched_off, RunLease, RunRequest};

/// How long a user's pull first waits for its departments' pulls.
const WAIT_FOR_DEPT: Duration = Duration::from_millis(200);
/// How soon a pull looks again while a push of the same person is running (one queued for
/// later is waited for until it is due).
const AFTER_PUSH: Duration = Duration::from_millis(100);
/// How often a pull job looks again while a full pull of the tenant runs (which writes
/// the same rows; the job then finds them done).
const AFTER_FULL_PULL: Duration = Duration::from_secs(1);
/// How often a full pull asked for by an event looks again while another run holds the
/// tenant's run lease.
const AFTER_RUN: Duration = Duration::from_secs(5);

fn off(ctx: &JobCtx<'_>) -> bool {
    switched_off(ctx.tenant, Direction::Pull).is_some()
}

/// A full pull of the tenant is running: it writes the same rows, so the job waits for it
/// (never two creators of one local row).
async fn full_pull_running(ctx: &JobCtx<'_>) -> Result<Option<JobOutcome>, JobError> {
    Ok(RunLease::pulling(ctx.store, ctx.tenant.id)
        .await?
        .then(|| JobOutcome::Poll {
            delay: AFTER_FULL_PULL,
            reason: "a full pull of the tenant is running".into(),
        }))
}

/// A push of one of `locals` (kind `kind`) is pending or running: it goes first (it sends
/// what JeecgBoot changed and leaves what DingTalk changed, and its base is the one this
/// pull then merges against).
async fn push_first(
    ctx: &JobCtx<'_>,
    kind: JobKind,
    locals: &[String],
) -> Result<Option<JobOutcome>, JobError> {
    for local in locals {
        if let Some(due) = ctx
            .store
            .job_due(ctx.tenant.id, kind.as_str(), local)
            .await?
        {
            let wait = u64::try_from(due - now_ms()).unwrap_or(0);
            return Ok(Some(JobOutcome::Poll {
                delay: AFTER_PUSH
                    .max(Duration::from_millis(wait))
                    .min(crate::job::POLL_CAP),
                reason: format!("a push of local {kind} {local} is queued; it goes first"),
            }));
        }
    }
    Ok(None)
}

/// Pulls one DingTalk user (key: the userid).
pub async fn pull_user(ctx: &JobCtx<'_>, userid: &str) -> JobOutcome {
    if off(ctx) {
        return JobOutcome::Done(Summary::default());
    }
    user_job(ctx, userid)
        .await
        .unwrap_or_else(JobError::into_outcome)
}

/// Pulls one DingTalk department (key: its dept_id).
pub async fn pull_dept(ctx: &JobCtx<'_>, key: &str) -> JobOutcome {
    if off(ctx) {
        return JobOutcome::Done(Summary::default());
    }
    let Ok(id) = key.parse::<i64>() else {
        return JobOutcome::Failed {
            permanent: true,
            reason: format!("{key:?} is not a DingTalk department id"),
        };
    };
    dept_job(ctx, id)
        .await
        .unwrap_or_else(JobError::into_outcome)
}

/// A full pull, for an address-book event that names nobody; after the run another holds.
pub async fn pull_all(ctx: &JobCtx<'_>) -> JobOutcome {
    if off(ctx) {
        return JobOutcome::Done(Summary::default());
    }
    let ttl = ctx.config.daemon.lease_ttl;
    let lease = match RunLease::try_take(ctx.store, ctx.tenant.id, "pull:event", ttl).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            return JobOutcome::Poll {
                delay: AFTER_RUN,
                reason: "another run of the tenant holds its run lease".into(),
            }
        }
        Err(error) => return JobError::from(error).into_outcome(),
    };
    let request = RunRequest {
        direction: Direction::Pull,
        scope: Scope::All,
        dry_run: false,
    };
    let run = super::run::RunCtx {
        store: ctx.store,
        client: ctx.client,
        config: ctx.config,
        tenant: ctx.tenant,
    };
    let result = run_once(&run, request, None).await;
    lease.release().await;
    match result {
        Ok(summary) => JobOutcome::Done(summary),
        Err(error) => JobOutcome::Failed {
            permanent: false,
            reason: error.to_string(),
        },
    }
}

async fn user_job(ctx: &JobCtx<'_>, userid: &str) -> Result<JobOutcome, JobError> {
    let (store, tenant) = (ctx.store, ctx.tenant.id);
    // A push of the same person goes first: it sends what JeecgBoot changed and leaves
    // what DingTalk changed, and its base is then the one this pull merges against.
    let mut twins: Vec<String> = store
        .links_to(tenant, &[userid])
        .await?
        .into_iter()
        .map(|l| l.user_id)
        .collect();
    twins.extend(
        store
            .snapshots_to(tenant, entity::USER, &[userid])
            .await?
            .into_iter()
            .map(|s| s.local_id),
    );
    if let Some(wait) = full_pull_running(ctx).await? {
        return Ok(wait);
    }
    if let Some(wait) = push_first(ctx, JobKind::User, &twins).await? {
        return Ok(wait);
    }
    let Some(person) = ctx.client.user(userid).await? else {
        return gone(ctx, entity::USER, userid, &twins).await;
    };
    let local = read::pull_candidates(store, tenant, std::slice::from_ref(&person)).await?;
    let tree = depts_around(ctx, &local, &person).await?;
    let (map, unknown) = linked_depts(&tree, std::slice::from_ref(&person));
    if !unknown.is_empty() {
        let created = depts_to_create(ctx, &unknown).await?;
        if let Some(wait) = wait_for_depts(ctx, &created).await? {
            return Ok(wait);
        }
    }
    let policy = Rules::of(ctx.config, ctx.tenant).policy;
    let people: [DtUser; 1] = [person];
    let ops = pull_users_slice(&local, &people, &map, &mut HashMap::new(), &policy);
    // Read before DingTalk answered: a push queued meanwhile still goes first.
    let matched: Vec<String> = local.users.iter().map(|u| u.id.clone()).collect();
    if let Some(wait) = push_first(ctx, JobKind::User, &matched).await? {
        return Ok(wait);
    }
    let plan = Plan {
        ops,
        refused_deletes: None,
        considered: 1,
    };
    run_plan(ctx, &plan).await
}

/// The departments a user job judges by: DingTalk's of the person, the local ones of whoever
/// it may be, and those of their bases.
async fn depts_around(
    ctx: &JobCtx<'_>,
    local: &super::model::LocalView,
    person: &DtUser,
) -> Result<super::model::LocalView, JobError> {
    let ids: Vec<String> = local
        .users
        .iter()
        .flat_map(|u| u.depart_ids.iter().cloned())
        .collect();
    let mut dings = person.dept_id_list.clone();
    dings.extend(
        local
            .user_snapshots
            .values()
            .filter_map(|s| s.user_base())
            .flat_map(|b| b.depts),
    );
    Ok(read::dept_view_around(ctx.store, ctx.tenant.id, &ids, &dings).await?)
}

/// The DingTalk departments among `unknown` that the pull planner would create or link
/// locally (their department jobs do it); the others (under a department deleted locally,
/// gone from DingTalk) are left out of the user's departments, as a full pull leaves them.
async fn depts_to_create(ctx: &JobCtx<'_>, unknown: &[i64]) -> Result<Vec<i64>, JobError> {
    let (tree, chain) = chain_view(ctx, unknown).await?;
    let policy = Rules::of(ctx.config, ctx.tenant).policy;
    let (_, map) = pull_departments(&tree, &chain, &policy);
    Ok(unknown
        .iter()
        .copied()
        .filter(|id| map.contains_key(id))
        .collect())
}

/// Waits for the pull jobs of DingTalk departments not local yet (enqueued unless one is
/// already there).
/// `None` when none is on its way (each one's job is dead): the user is placed without
/// them, as a full pull places a user without a department it could not create.
async fn wait_for_depts(ctx: &JobCtx<'_>, ids: &[i64]) -> Result<Option<JobOutcome>, JobError> {
    let mut coming = Vec::new();
    for id in ids {
        if ctx
            .store
            .enqueue(
                ctx.tenant.id,
                JobKind::PullDept.as_str(),
                &id.to_string(),
                now_ms(),
            )
            .await?
        {
            coming.push(id.to_string());
        }
    }
    Ok((!coming.is_empty()).then(|| JobOutcome::Wait {
        delay: WAIT_FOR_DEPT,
        reason: format!("DingTalk department {} is not local yet", coming.join(", ")),
    }))
}

async fn dept_job(ctx: &JobCtx<'_>, id: i64) -> Result<JobOutcome, JobError> {
    if id == ROOT_DEPT {
        // The organisation itself: no local department stands for it.
        return Ok(JobOutcome::Done(Summary::default()));
    }
    if let Some(wait) = full_pull_running(ctx).await? {
        return Ok(wait);
    }
    let (tree, view) = chain_view(ctx, &[id]).await?;
    // A push of the department itself (a local rename on its way) goes first.
    let linked: Vec<String> = tree
        .depts
        .iter()
        .filter(|d| d.ding_identifier == Some(id))
        .map(|d| d.id.clone())
        .collect();
    if let Some(wait) = push_first(ctx, JobKind::Dept, &linked).await? {
        return Ok(wait);
    }
    if view.absent.contains(&id) {
        let linked: Vec<String> = tree
            .depts
            .iter()
            .filter(|d| d.ding_identifier == Some(id) && !d.is_deleted())
            .map(|d| d.id.clone())
            .collect();
        return gone(ctx, entity::DEPT, &id.to_string(), &linked).await;
    }
    let policy = Rules::of(ctx.config, ctx.tenant).policy;
    let plan = plan_pull(&tree, &view, &policy, Scope::Departments);
    run_plan(ctx, &plan).await
}

/// DingTalk's departments `ids` with their parents up to one a live local department links
/// (`around::dept_chain`), and the part of the local tree that judges them: the departments
/// linked to any of them, those their `source_identifier` names, and what surrounds those.
async fn chain_view(
    ctx: &JobCtx<'_>,
    ids: &[i64],
) -> Result<(super::model::LocalView, super::model::RemoteView), JobError> {
    let rows = ctx.store.dept_rows(ctx.tenant.id).await?;
    let linked = |ding: i64| {
        rows.index
            .linked(ding)
            .iter()
            .any(|i| !rows.depts[*i].is_post() && !rows.depts[*i].is_deleted())
    };
    let chain = around::dept_chain(ctx.client, linked, ids).await?;
    // The local rows as they are now, after DingTalk answered (a write meanwhile moved the
    // tree's version, so this reads them again).
    let rows = ctx.store.dept_rows(ctx.tenant.id).await?;
    let mut dings: Vec<i64> = chain.depts.iter().map(|d| d.dept_id).collect();
    dings.extend(chain.depts.iter().map(|d| d.parent_id));
    dings.extend(chain.absent.iter().copied());
    let sources: Vec<String> = chain
        .depts
        .iter()
        .filter_map(|d| d.source_identifier.clone())
        .collect();
    let mut tree = read::around_rows(&rows, &sources, &dings);
    tree.tenant = ctx.tenant.id;
    Ok((tree, chain))
}

/// DingTalk no longer has a user or department that `locals` link: a pull deletes nothing
/// locally, so it is reported (nothing when no live local row links it: dingsync's own
/// delete, or one never synced).
async fn gone(
    ctx: &JobCtx<'_>,
    kind: &str,
    ding_id: &str,
    locals: &[String],
) -> Result<JobOutcome, JobError> {
    let mut ops = Vec::new();
    for local in locals {
        let live = match kind {
            entity::USER => ctx
                .store
                .load_user(local)
                .await?
                .is_some_and(|u| !u.is_deleted()),
            _ => true,
        };
        if live {
            ops.push(Op::Warn {
                entity: kind.into(),
                key: local.clone(),
                reason: format!(
                    "DingTalk no longer has {kind} {ding_id} (removed or left in DingTalk); the local row is kept, since a pull never deletes locally"
                ),
            });
        }
    }
    let plan = Plan {
        ops,
        refused_deletes: None,
        considered: 1,
    };
    run_plan(ctx, &plan).await
}
