//! One queued job: a user or a department, pushed on its own (the daemon's unit of work).
//! The job carries only its key; the executor reads the current local row, the DingTalk
//! twin (by link, mobile or username; by `ding_identifier` or snapshot), plans with the same
//! rules as a full push, and applies. A job that finds nothing to do writes nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::config::{Config, TenantConfig};
use crate::dingtalk::{DingTalkClient, DingTalkError, ErrorKind};
use crate::store::{now_ms, Store, StoreError};

use super::apply::{apply, ApplyCtx};
use super::model::{entity, DeptRef, LocalView, RemoteDept, RemoteView, Summary, ROOT_DEPT};
use super::plan::{
    deletion_refusal, dept_placement, plan_dept_job, plan_dept_removal, plan_user_job, Plan,
};

/// Job kinds.
pub mod kind {
    /// Push one user (key: `sys_user.id`).
    pub const USER: &str = "user";
    /// Push one department (key: `sys_depart.id`).
    pub const DEPT: &str = "dept";
    /// Deliver or recall one announcement (key: `sys_announcement.id`).
    pub const ANNOUNCE: &str = "announce";
    /// Deliver one outbox row (key: `dingsync_outbox.id`).
    pub const OUTBOX: &str = "outbox";
}

/// How long a user job waits for a department that is not in DingTalk yet.
const WAIT_FOR_DEPT: Duration = Duration::from_millis(200);

/// What became of a job.
#[derive(Debug)]
pub enum JobOutcome {
    /// Finished (possibly with nothing to do).
    Done(Summary),
    /// Not yet possible (a department it needs is on its way); try again after `delay`.
    Wait {
        /// When to look again.
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// Failed.
    Failed {
        /// No point retrying without a change.
        permanent: bool,
        /// Why.
        reason: String,
    },
}

/// What executing a job needs.
pub struct JobCtx<'a> {
    /// The database.
    pub store: &'a Store,
    /// DingTalk for the job's tenant.
    pub client: &'a DingTalkClient,
    /// The configuration.
    pub config: &'a Config,
    /// The job's tenant.
    pub tenant: &'a TenantConfig,
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("{0}")]
    DingTalk(#[from] DingTalkError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl JobError {
    fn into_outcome(self) -> JobOutcome {
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

/// Executes one job.
pub async fn execute(ctx: &JobCtx<'_>, kind: &str, key: &str) -> JobOutcome {
    let result = match kind {
        kind::USER => user_job(ctx, key).await,
        kind::DEPT => dept_job(ctx, key).await,
        kind::ANNOUNCE => Ok(crate::messages::announce_job(ctx, key).await),
        kind::OUTBOX => Ok(crate::messages::outbox_job(ctx, key).await),
        other => Ok(JobOutcome::Failed {
            permanent: true,
            reason: format!("unknown job kind {other:?}"),
        }),
    };
    result.unwrap_or_else(JobError::into_outcome)
}

async fn run_plan(ctx: &JobCtx<'_>, plan: &Plan) -> JobOutcome {
    if plan.ops.is_empty() {
        return JobOutcome::Done(Summary::default());
    }
    let apply_ctx = ApplyCtx {
        client: ctx.client,
        store: ctx.store,
        tenant: ctx.tenant.id,
        new_user_password: &ctx.config.pull.new_user_password,
        progress: None,
    };
    let summary = apply(&apply_ctx, plan).await;
    if summary.failures.is_empty() {
        return JobOutcome::Done(summary);
    }
    let reason = summary
        .failures
        .iter()
        .map(|(_, _, r)| r.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    JobOutcome::Failed {
        permanent: !summary.retryable,
        reason,
    }
}

async fn find_user(
    client: &DingTalkClient,
    userid: &str,
) -> Result<Option<crate::dingtalk::types::DtUser>, DingTalkError> {
    match client.user_get(userid).await {
        Ok(user) => Ok(Some(user)),
        Err(error) if error.kind == ErrorKind::UserNotFound => Ok(None),
        Err(error) => Err(error),
    }
}

async fn user_job(ctx: &JobCtx<'_>, key: &str) -> Result<JobOutcome, JobError> {
    let (store, client, tenant) = (ctx.store, ctx.client, ctx.tenant.id);
    // Only this user's rows: a job must not cost more with a bigger organisation.
    let link = store.link_of(tenant, key).await?;
    let snapshot = store.snapshot_of(tenant, entity::USER, key).await?;
    let Some(user) = store.load_user(key).await? else {
        return hard_delete(
            ctx,
            key,
            link.map(|l| l.userid).or(snapshot.map(|s| s.ding_id)),
        )
        .await;
    };
    if user.is_deleted() || !store.user_in_tenant(key, tenant).await? {
        return Ok(JobOutcome::Done(Summary::default()));
    }
    let depts = store.departments_by_id(tenant, &user.depart_ids).await?;
    let mut map: HashMap<String, DeptRef> = HashMap::new();
    for id in &user.depart_ids {
        let Some(dept) = depts
            .iter()
            .find(|d| &d.id == id)
            .filter(|d| !d.is_post() && !d.is_deleted())
        else {
            continue;
        };
        match dept.ding_identifier {
            Some(ding) => {
                map.insert(id.clone(), DeptRef::Ding(ding));
            }
            None => {
                store.enqueue(tenant, kind::DEPT, id, now_ms()).await?;
                return Ok(JobOutcome::Wait {
                    delay: WAIT_FOR_DEPT,
                    reason: format!("department {id} is not in DingTalk yet"),
                });
            }
        }
    }
    let mut remote = None;
    if let Some(link) = &link {
        remote = find_user(client, &link.userid).await?;
    }
    if remote.is_none() {
        if let Some(phone) = user.phone.as_deref().filter(|p| !p.is_empty()) {
            if let Some(userid) = client.user_by_mobile(phone).await? {
                remote = find_user(client, &userid).await?;
            }
        }
    }
    if remote.is_none() && !user.username.is_empty() {
        remote = find_user(client, &user.username).await?;
    }
    let local = LocalView {
        tenant,
        all_user_ids: vec![user.id.clone()],
        links: link.into_iter().collect(),
        user_snapshots: snapshot
            .map(|s| (s.local_id.clone(), s))
            .into_iter()
            .collect(),
        users: vec![user],
        ..LocalView::default()
    };
    let remote = RemoteView {
        depts: Vec::new(),
        users: remote.into_iter().collect::<Vec<_>>().into(),
    };
    Ok(run_plan(ctx, &plan_user_job(&local, &remote, &map, &ctx.config.push)).await)
}

async fn hard_delete(
    ctx: &JobCtx<'_>,
    key: &str,
    userid: Option<String>,
) -> Result<JobOutcome, JobError> {
    let Some(userid) = userid.filter(|_| ctx.config.push.delete_users_on_hard_delete) else {
        return Ok(JobOutcome::Done(Summary::default()));
    };
    match ctx.client.user_delete(&userid).await {
        Ok(()) => {}
        Err(error) if error.kind == ErrorKind::UserNotFound => {}
        Err(error) => return Err(error.into()),
    }
    ctx.store
        .delete_snapshot(ctx.tenant.id, entity::USER, key)
        .await?;
    Ok(JobOutcome::Done(Summary {
        deleted: 1,
        ..Summary::default()
    }))
}

async fn remote_dept(
    client: &DingTalkClient,
    id: i64,
) -> Result<Option<RemoteDept>, DingTalkError> {
    match client.dept_get(id).await {
        Ok(d) => Ok(Some(RemoteDept {
            dept_id: d.dept_id,
            name: d.name,
            parent_id: d.parent_id.unwrap_or(ROOT_DEPT),
            source_identifier: d.source_identifier,
        })),
        Err(error) if error.kind == ErrorKind::DeptNotFound => Ok(None),
        Err(error) => Err(error),
    }
}

async fn dept_job(ctx: &JobCtx<'_>, key: &str) -> Result<JobOutcome, JobError> {
    let (store, client, tenant) = (ctx.store, ctx.client, ctx.tenant.id);
    let depts = store.load_departments(tenant).await?;
    let snapshot = store.snapshot_of(tenant, entity::DEPT, key).await?;
    let dept = depts.iter().find(|d| d.id == key);
    let Some(dept) = dept.filter(|d| !d.is_post() && !d.is_deleted()) else {
        let ding = dept
            .and_then(|d| d.ding_identifier)
            .or_else(|| snapshot.and_then(|s| s.ding_id.parse().ok()));
        return remove_dept(ctx, key, ding, &depts).await;
    };
    let placement = dept_placement(&depts);
    let parent = match placement.get(key).cloned().flatten() {
        None => DeptRef::Ding(ROOT_DEPT),
        Some(parent_id) => match depts
            .iter()
            .find(|d| d.id == parent_id)
            .and_then(|p| p.ding_identifier)
        {
            Some(ding) => DeptRef::Ding(ding),
            None => {
                store
                    .enqueue(tenant, kind::DEPT, &parent_id, now_ms())
                    .await?;
                return Ok(JobOutcome::Wait {
                    delay: WAIT_FOR_DEPT,
                    reason: format!("parent department {parent_id} is not in DingTalk yet"),
                });
            }
        },
    };
    let known = dept
        .ding_identifier
        .or_else(|| snapshot.as_ref().and_then(|s| s.ding_id.parse().ok()));
    let current = match known {
        Some(id) => remote_dept(client, id).await?,
        None => None,
    };
    let siblings = match (&current, &parent) {
        (None, DeptRef::Ding(parent_id)) => client
            .dept_listsub(*parent_id)
            .await?
            .into_iter()
            .map(|d| RemoteDept {
                dept_id: d.dept_id,
                name: d.name,
                parent_id: d.parent_id.unwrap_or(*parent_id),
                source_identifier: None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let ops = plan_dept_job(
        dept,
        &parent,
        current.as_ref(),
        &siblings,
        snapshot.as_ref().map(|s| s.content_hash.as_str()),
    );
    Ok(run_plan(
        ctx,
        &Plan {
            ops,
            refused_deletes: None,
            considered: 1,
        },
    )
    .await)
}

async fn remove_dept(
    ctx: &JobCtx<'_>,
    key: &str,
    ding: Option<i64>,
    depts: &[crate::jeecg::LocalDept],
) -> Result<JobOutcome, JobError> {
    let (store, client, tenant) = (ctx.store, ctx.client, ctx.tenant.id);
    let Some(ding) = ding.filter(|d| *d != ROOT_DEPT && ctx.config.push.delete_departments) else {
        return Ok(JobOutcome::Done(Summary::default()));
    };
    let Some(current) = remote_dept(client, ding).await? else {
        store.delete_snapshot(tenant, entity::DEPT, key).await?;
        return Ok(JobOutcome::Done(Summary::default()));
    };
    // The full push's deletion guard, applied to the deletes under way: the departments
    // dingsync synced (a snapshot; removed once DingTalk's department is gone) whose local
    // row is gone, this one included. A wipe of the local tree makes every one of these
    // jobs dead with the reason, and DingTalk keeps its departments.
    let pushable: HashSet<&str> = depts
        .iter()
        .filter(|d| !d.is_post() && !d.is_deleted())
        .map(|d| d.id.as_str())
        .collect();
    let synced: HashSet<String> = store
        .snapshots(tenant, entity::DEPT)
        .await?
        .into_iter()
        .map(|s| s.local_id)
        .chain(std::iter::once(key.to_owned()))
        .collect();
    let going = synced
        .iter()
        .filter(|id| !pushable.contains(id.as_str()))
        .count();
    if let Some(reason) = deletion_refusal(
        going,
        pushable.len(),
        ctx.config.push.max_department_deletes,
    ) {
        tracing::error!(event = "sync.delete_refused", tenant, key, reason = %reason, "department deletion refused by the guard");
        return Ok(JobOutcome::Failed {
            permanent: true,
            reason: format!("deletion guard: {reason}"),
        });
    }
    if !client.dept_listsubid(ding).await?.is_empty() {
        // Deepest first: the sub-departments' own jobs delete them, then this one goes.
        return Ok(JobOutcome::Failed {
            permanent: false,
            reason: format!("DingTalk department {ding} still has sub-departments"),
        });
    }
    let members = client.user_list_all(ding).await?;
    let outcome = run_plan(
        ctx,
        &Plan {
            ops: plan_dept_removal(ding, &current.name, &members),
            refused_deletes: None,
            considered: 1,
        },
    )
    .await;
    if matches!(outcome, JobOutcome::Done(_)) {
        store.delete_snapshot(tenant, entity::DEPT, key).await?;
        if depts.iter().any(|d| d.id == key) {
            store.set_ding_identifier(key, None).await?;
        }
    }
    Ok(outcome)
}
