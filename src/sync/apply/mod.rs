//! Executing a plan: DingTalk calls through the client, local writes through the store,
//! links, `ding_identifier` and snapshots recorded as each entity succeeds. One failing
//! entity is recorded with its reason (and its later operations skipped); the rest continue.
//! No database transaction is held across a DingTalk call.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::config::TenantId;
use crate::dingtalk::types::{DeptUpdate, UserUpdate};
use crate::dingtalk::{DingTalkClient, DingTalkError, ErrorKind};
use crate::jeecg::{Link, NewDept, NewUser};
use crate::secret::Secret;
use crate::store::batch::{ChangeRecord, Inserted, LinkWrite, NewLinkedUser, UserChange};
use crate::store::links::LinkSaved;
use crate::store::snapshots::SnapshotWrite;
use crate::store::{Store, StoreError, StoreResult};

use super::model::{
    entity, DeptBase, DeptRef, LocalRef, LocalUserFields, Op, Summary, UserBase, UserFields,
    ROOT_DEPT,
};
use super::plan::Plan;
use super::written::{Counted, LinkRecord, Outcome, Written};

mod ops;

/// What applying needs.
pub struct ApplyCtx<'a> {
    /// DingTalk, for this tenant's app.
    pub client: &'a DingTalkClient,
    /// The database.
    pub store: &'a Store,
    /// The tenant.
    pub tenant: TenantId,
    /// Password of users created by a pull.
    pub new_user_password: &'a Secret,
    /// Called after each operation with (done, total).
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
    /// Called when a pull has inserted the local department of a DingTalk department (its
    /// id, the local id), before its `source_identifier` is written back.
    pub placed: Option<&'a OnPlaced<'a>>,
}

/// See [`ApplyCtx::placed`].
pub type OnPlaced<'a> = dyn Fn(i64, &str) + Sync + 'a;

/// Why one entity failed.
#[derive(Debug, thiserror::Error)]
enum EntityError {
    /// A DingTalk call failed.
    #[error("{0}")]
    DingTalk(#[from] DingTalkError),
    /// A database read or write failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A method was handed an operation of another kind (the dispatch prevents it).
    #[error("not {0}")]
    NotA(&'static str),
    /// A department this run was to create in DingTalk was not created (its create failed).
    #[error("department {0} was not created")]
    NotCreated(String),
    /// The DingTalk department a pull was to place locally first was not placed.
    #[error("parent department {0} was not created locally")]
    ParentNotPlaced(i64),
    /// A create's mobile belongs to a DingTalk user `getbymobile` does not show (60104);
    /// the mobile masked.
    #[error("mobile {0} already belongs to another DingTalk user (errcode 60104)")]
    MobileTaken(String),
    /// A create's mobile belongs to a DingTalk user linked to another local user (60104).
    #[error("mobile {masked} belongs to DingTalk user {userid}, already linked to local user {other} (errcode 60104)")]
    MobileLinked {
        /// The mobile, masked.
        masked: String,
        /// The DingTalk user holding it.
        userid: String,
        /// The local user linked to them.
        other: String,
    },
    /// The DingTalk department a create would adopt by name belongs to another local
    /// department (60021): not possible now, likely later (that one must change first).
    #[error("DingTalk department {dept_id} under the same parent is already named {name:?} and belongs to local department {holder} (errcode 60021)")]
    NameHeld {
        /// The DingTalk department of that name.
        dept_id: i64,
        /// The name.
        name: String,
        /// The local department holding it.
        holder: String,
    },
}

impl EntityError {
    /// Whether trying again later may succeed.
    fn is_retryable(&self) -> bool {
        match self {
            Self::DingTalk(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
            Self::NameHeld { .. } => true,
            Self::NotA(_)
            | Self::NotCreated(_)
            | Self::ParentNotPlaced(_)
            | Self::MobileTaken(_)
            | Self::MobileLinked { .. } => false,
        }
    }
}

/// What a run has done so far, shared by the operations in flight (each lock is held for
/// one field update, never across a call).
#[derive(Default)]
struct RunState {
    summary: Summary,
    /// The DingTalk departments users were given in this run (their base, once recorded).
    user_depts: HashMap<String, Vec<i64>>,
    /// Users DingTalk updated in this run whose record (a `LinkUser`) is still to come: they
    /// are counted with it.
    updated_users: HashSet<String>,
    created_depts: HashMap<String, i64>,
    created_local: HashMap<i64, String>,
    failed: HashSet<(String, String)>,
    deferred: Vec<Op>,
}

#[derive(Default)]
struct Run {
    state: Mutex<RunState>,
    /// A push's link, `ding_identifier` and snapshot writes not made yet (see
    /// [`super::written`]).
    written: Written,
    /// Held by the flush under way: one batch at a time.
    flushing: tokio::sync::Mutex<()>,
    /// Users that streamed slices change, and that they looked at.
    streamed_touched: AtomicUsize,
    streamed_considered: AtomicUsize,
}

/// Records where a local department is in DingTalk: `ding_identifier` and the snapshot.
async fn record_dept(
    store: &Store,
    tenant: TenantId,
    local_id: &str,
    dept_id: i64,
    base: &DeptBase,
) -> Result<(), StoreError> {
    store
        .link_dept(&dept_snapshot(tenant, local_id, dept_id, base))
        .await
}

/// The columns a pull sets on a local user.
fn columns_of(fields: &LocalUserFields) -> crate::jeecg::UserUpdate {
    crate::jeecg::UserUpdate {
        realname: fields.realname.clone(),
        phone: fields.phone.clone(),
        email: fields.email.clone(),
        telephone: fields.telephone.clone(),
        work_no: fields.work_no.clone(),
    }
}

/// A user's snapshot as its link names it, with `base`.
fn user_snapshot(link: &Link, base: &UserBase) -> SnapshotWrite {
    SnapshotWrite {
        tenant: link.tenant_id,
        entity: entity::USER,
        local_id: link.user_id.clone(),
        ding_id: link.userid.clone(),
        base: json(base),
    }
}

/// A department's snapshot: where local department `local_id` is in DingTalk, with `base`.
fn dept_snapshot(tenant: TenantId, local_id: &str, dept_id: i64, base: &DeptBase) -> SnapshotWrite {
    SnapshotWrite {
        tenant,
        entity: entity::DEPT,
        local_id: local_id.to_string(),
        ding_id: dept_id.to_string(),
        base: json(base),
    }
}

/// A base as the snapshot keeps it.
fn json<T: serde::Serialize>(base: &T) -> String {
    serde_json::to_string(base).unwrap_or_default()
}

fn entity_of(op: &Op) -> (String, String) {
    let (kind, key) = match op {
        Op::CreateDept { local_id, .. }
        | Op::UpdateDept { local_id, .. }
        | Op::LinkDept { local_id, .. } => (entity::DEPT, local_id.clone()),
        Op::DeleteDept { dept_id, .. }
        | Op::CreateLocalDept { dept_id, .. }
        | Op::UpdateLocalDept { dept_id, .. } => (entity::DEPT, dept_id.to_string()),
        Op::CreateUser { local_id, .. }
        | Op::UpdateUser { local_id, .. }
        | Op::LinkUser { local_id, .. }
        | Op::DeleteUser { local_id, .. } => (entity::USER, local_id.clone()),
        Op::MoveMembersOut { userid, .. }
        | Op::CreateLocalUser { userid, .. }
        | Op::UpdateLocalUser { userid, .. } => (entity::USER, userid.clone()),
        Op::Fail { entity, key, .. }
        | Op::Warn { entity, key, .. }
        | Op::Merge { entity, key, .. } => (entity.as_str(), key.clone()),
    };
    (kind.to_string(), key)
}

/// Logs each conflict this plan resolves (`sync.conflict`, once: the other direction leaves
/// the field), mobiles and e-mails masked.
fn conflicts(ctx: &ApplyCtx<'_>, entity: &str, key: &str, fields: &[super::model::FieldMerge]) {
    for field in fields.iter().filter(|f| f.resolves_conflict) {
        let shown = |value: &str| super::model::mask_value(&field.field, value);
        let winner = if field.action == "push" {
            "jeecgboot"
        } else {
            "dingtalk"
        };
        tracing::warn!(
            event = "sync.conflict",
            tenant = ctx.tenant,
            entity,
            key,
            field = %field.field,
            jeecgboot = %shown(&field.jeecgboot),
            dingtalk = %shown(&field.dingtalk),
            winner,
            "both sides changed a field since it was last synced; the configured side wins"
        );
    }
}

/// Writes the local id of a placed department back to DingTalk as its `source_identifier`,
/// as JeecgBoot's "同步到本地" does.
async fn write_back_source(
    client: &DingTalkClient,
    dept_id: i64,
    local_id: String,
) -> Result<(), EntityError> {
    let update = DeptUpdate {
        dept_id,
        source_identifier: Some(local_id),
        ..DeptUpdate::default()
    };
    client.dept_update(&update).await?;
    Ok(())
}

/// An e-mail address for logs: the first character of the local part and the domain.
/// Operations of one user in flight at once in a push (the limiter paces the calls; this
/// only keeps the paths busy while a call is on the wire).
const USER_CONCURRENCY: usize = 8;

/// Whether `op` can run in the two lanes of a push's first part: departments in plan order
/// in one lane, users concurrently in the other as soon as their departments exist.
fn laned(op: &Op) -> bool {
    match op {
        Op::CreateDept { .. }
        | Op::UpdateDept { .. }
        | Op::LinkDept { .. }
        | Op::CreateUser { .. }
        | Op::UpdateUser { .. }
        | Op::LinkUser { .. } => true,
        Op::Fail { entity: e, .. } | Op::Warn { entity: e, .. } | Op::Merge { entity: e, .. } => {
            e == entity::DEPT || e == entity::USER
        }
        _ => false,
    }
}

/// Local departments (created in this run) a user operation's department list names.
fn needs(op: &Op) -> Vec<&str> {
    let fields = match op {
        Op::CreateUser { fields, .. } | Op::UpdateUser { fields, .. } => fields,
        _ => return Vec::new(),
    };
    fields
        .depts
        .iter()
        .flatten()
        .filter_map(|d| match d {
            DeptRef::Local(id) => Some(id.as_str()),
            DeptRef::Ding(_) => None,
        })
        .collect()
}

/// More user operations of a push, planned while the first ones are applied: each item is
/// one slice's operations (every user's operations together) and how many users it looked at.
pub type UserSlices = tokio::sync::mpsc::Receiver<(Vec<Op>, usize)>;

/// Applies `plan`; returns what happened (also the counts of the run row).
///
/// A push's department and user operations run in two lanes at once, so that DingTalk's
/// per-path limits are used in parallel: departments in plan order (parents first), users
/// (each user's operations in order, up to [`USER_CONCURRENCY`] users at a time) once every
/// department they name is settled. Member moves and deletes then run in order, as does all
/// of a pull.
pub async fn apply(ctx: &ApplyCtx<'_>, plan: &Plan) -> Summary {
    apply_with(ctx, plan, None).await
}

/// [`apply`] for a push planned in slices: `plan` holds the department operations (and
/// nothing after them), `users` brings the user operations slice by slice, applied in the
/// user lane as they arrive. Only a slice or two of operations is held at any time.
pub async fn apply_streamed(ctx: &ApplyCtx<'_>, plan: &Plan, users: UserSlices) -> Summary {
    apply_with(ctx, plan, Some(users)).await
}

async fn apply_with(ctx: &ApplyCtx<'_>, plan: &Plan, users: Option<UserSlices>) -> Summary {
    let before = ctx.client.calls_by_route();
    let run = Run::default();
    let total = AtomicUsize::new(plan.ops.len());
    let done = AtomicUsize::new(0);
    let tick = || {
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(progress) = ctx.progress {
            progress(n, total.load(Ordering::Relaxed).max(n));
        }
    };
    let split = plan
        .ops
        .iter()
        .position(|op| !laned(op))
        .unwrap_or(plan.ops.len());
    let (head, tail) = plan.ops.split_at(split);
    run.lanes(ctx, head, users, &total, &tick).await;
    if !tail.is_empty() && tail.iter().all(pulls_a_user) {
        run.pull_users(ctx, tail, &tick).await;
    } else {
        run.in_order(ctx, tail, &tick).await;
    }
    // Renames that met a sibling's name are tried once more, after the renames that free it.
    let deferred = std::mem::take(&mut run.state().deferred);
    for op in deferred {
        if let Err(error) = run.execute(ctx, &op).await {
            run.record_failure(ctx, &op, &error.to_string());
        }
    }
    run.flush(ctx, true).await;
    let mut summary = run.summary(ctx, plan);
    let after = ctx.client.calls_by_route();
    summary.api_calls = after
        .iter()
        .map(|(route, n)| {
            (
                route.to_string(),
                n - before.get(route).copied().unwrap_or(0),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect::<BTreeMap<_, _>>();
    summary
}

/// The department lane's ops in plan order, which of them creates each local department
/// (its 1-based place in the lane), and the user lane's ops.
fn by_lane(ops: &[Op]) -> (Vec<&Op>, HashMap<String, usize>, Vec<Op>) {
    let mut dept_ops: Vec<&Op> = Vec::new();
    let mut provider: HashMap<String, usize> = HashMap::new();
    let mut user_ops: Vec<Op> = Vec::new();
    for op in ops {
        if entity_of(op).0 == entity::DEPT {
            if let Op::CreateDept { local_id, .. } = op {
                provider.insert(local_id.clone(), dept_ops.len() + 1);
            }
            dept_ops.push(op);
        } else {
            user_ops.push(op.clone());
        }
    }
    (dept_ops, provider, user_ops)
}

/// Whether `op` belongs to a pull's slice of users: a write of a local user, or a warning,
/// refusal or conflict about a user.
fn pulls_a_user(op: &Op) -> bool {
    match op {
        Op::CreateLocalUser { .. } | Op::UpdateLocalUser { .. } => true,
        Op::Fail { entity: e, .. } | Op::Warn { entity: e, .. } | Op::Merge { entity: e, .. } => {
            e == entity::USER
        }
        _ => false,
    }
}

/// How many of the first `ops` are of one kind (`is`): a run applied together.
fn leading(ops: &[Op], is: impl Fn(&Op) -> bool) -> usize {
    ops.iter().take_while(|op| is(op)).count()
}

/// Whether `op` changes its entity (links and warnings alone do not).
fn touches(op: &Op) -> bool {
    !matches!(
        op,
        Op::LinkDept { .. } | Op::LinkUser { .. } | Op::Warn { .. } | Op::Merge { .. }
    )
}

/// One user's operations and the number of department-lane steps they wait for.
type Group = (usize, Vec<Op>);

/// User groups held back while their departments are created (a push's first slices name
/// departments from all over the tree; without this, those users held every slot while the
/// department lane worked, and the user lane idled).
const WAITING: usize = 4000;

/// The next group from `queue` that can start at once; the ones that cannot are moved to
/// `waiting` while it has room (when it is full, the next one is returned anyway, and waits
/// in its slot).
fn next_ready(
    queue: &mut VecDeque<Group>,
    waiting: &mut Vec<Group>,
    settled: usize,
) -> Option<Group> {
    while let Some(group) = queue.pop_front() {
        if group.0 <= settled || waiting.len() >= WAITING {
            return Some(group);
        }
        waiting.push(group);
    }
    None
}

/// The user lane's groups: queued in plan order, or waiting aside for their departments;
/// the department lane's progress, and the slices still to come.
struct UserLane<'a> {
    queue: VecDeque<Group>,
    /// Groups whose departments are not settled yet (at most [`WAITING`]), so that users
    /// that can go meanwhile, from later slices too, take the slots.
    waiting: Vec<Group>,
    /// How many department-lane operations are settled.
    depts: tokio::sync::watch::Receiver<usize>,
    /// Whether the department lane has ended.
    depts_done: bool,
    /// Slices of a streamed push not taken yet (`None` once they have all come).
    more: Option<UserSlices>,
    /// Which department-lane operation creates each local department.
    provider: &'a HashMap<String, usize>,
}

impl UserLane<'_> {
    /// The next group that may take a free slot: a waiting one whose departments are
    /// settled now, else the next from the queue ([`next_ready`]).
    fn next_group(&mut self) -> Option<Group> {
        let settled = *self.depts.borrow();
        match self.waiting.iter().position(|(ready, _)| *ready <= settled) {
            Some(i) => Some(self.waiting.swap_remove(i)),
            None => next_ready(&mut self.queue, &mut self.waiting, settled),
        }
    }
}

/// The next slice, or never when there is none to take.
async fn recv(slices: Option<&mut UserSlices>) -> Option<(Vec<Op>, usize)> {
    match slices {
        Some(slices) => slices.recv().await,
        None => std::future::pending().await,
    }
}

/// Groups user operations by user, each with the department step it waits for, the users
/// whose departments settle first first.
fn user_groups(ops: Vec<Op>, provider: &HashMap<String, usize>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of: HashMap<(String, String), usize> = HashMap::new();
    for op in ops {
        let ready = needs(&op)
            .into_iter()
            .filter_map(|id| provider.get(id).copied())
            .max()
            .unwrap_or(0);
        let index = *group_of.entry(entity_of(&op)).or_insert_with(|| {
            groups.push((0, Vec::new()));
            groups.len() - 1
        });
        let group = &mut groups[index];
        group.0 = group.0.max(ready);
        group.1.push(op);
    }
    groups.sort_by_key(|(ready, _)| *ready);
    groups
}

impl Run {
    /// Applies `ops` in order: a pull's new users and new departments in batches (one
    /// transaction each), the rest one by one.
    async fn in_order(&self, ctx: &ApplyCtx<'_>, ops: &[Op], tick: &(dyn Fn() + Sync)) {
        let mut rest = ops;
        while let Some(op) = rest.first() {
            let creates = leading(rest, |op| matches!(op, Op::CreateLocalUser { .. }));
            if creates > 1 {
                self.create_local_users(ctx, &rest[..creates], tick).await;
                rest = &rest[creates..];
                continue;
            }
            let placed = leading(rest, |op| matches!(op, Op::CreateLocalDept { .. }));
            if placed > 1 {
                self.create_local_depts(ctx, &rest[..placed], tick).await;
                rest = &rest[placed..];
                continue;
            }
            self.step(ctx, op).await;
            tick();
            rest = &rest[1..];
        }
    }

    /// What the run did: its counts (updated users no record followed included), the
    /// refused deletes, and the users and departments it looked at and left alone.
    fn summary(&self, ctx: &ApplyCtx<'_>, plan: &Plan) -> Summary {
        // Updated users no record followed (none is planned without one; should it be).
        let unrecorded = std::mem::take(&mut self.state().updated_users).len();
        self.state().summary.updated += i64::try_from(unrecorded).unwrap_or(0);
        let mut summary = std::mem::take(&mut self.state().summary);
        if let Some(reason) = &plan.refused_deletes {
            tracing::error!(event = "sync.delete_refused", tenant = ctx.tenant, reason = %reason, "department deletion refused by the guard");
            summary
                .failures
                .push((entity::DEPT.into(), "*".into(), reason.clone()));
        }
        let touched = plan
            .ops
            .iter()
            .filter(|op| touches(op))
            .map(entity_of)
            .collect::<HashSet<_>>()
            .len()
            + self.streamed_touched.load(Ordering::Relaxed);
        let considered = plan.considered + self.streamed_considered.load(Ordering::Relaxed);
        summary.skipped = i64::try_from(considered.saturating_sub(touched)).unwrap_or(0);
        summary
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `ops` (all [`laned`]) in the department lane and the user lane at once; the
    /// user lane then takes the slices arriving on `more`.
    async fn lanes(
        &self,
        ctx: &ApplyCtx<'_>,
        ops: &[Op],
        more: Option<UserSlices>,
        total: &AtomicUsize,
        tick: &(dyn Fn() + Sync),
    ) {
        let (dept_ops, provider, user_ops) = by_lane(ops);
        let queue: VecDeque<Group> = user_groups(user_ops, &provider).into();
        let (settled, watch) = tokio::sync::watch::channel(0usize);
        let lane = UserLane {
            queue,
            waiting: Vec::new(),
            depts: watch,
            depts_done: false,
            more,
            provider: &provider,
        };
        tokio::join!(
            self.dept_lane(ctx, dept_ops, settled, tick),
            self.user_lane(ctx, lane, total, tick)
        );
    }

    /// The department lane: `ops` one at a time in plan order, `settled` counting the ones
    /// done (dropped at the end: the lane is over).
    async fn dept_lane(
        &self,
        ctx: &ApplyCtx<'_>,
        ops: Vec<&Op>,
        settled: tokio::sync::watch::Sender<usize>,
        tick: &(dyn Fn() + Sync),
    ) {
        for (index, op) in ops.into_iter().enumerate() {
            self.step(ctx, op).await;
            tick();
            settled.send_replace(index + 1);
        }
    }

    /// The user lane: up to [`USER_CONCURRENCY`] user groups at a time, each started once
    /// its departments are settled; then the slices arriving on `lane.more` (their
    /// operations added to `total`).
    async fn user_lane(
        &self,
        ctx: &ApplyCtx<'_>,
        mut lane: UserLane<'_>,
        total: &AtomicUsize,
        tick: &(dyn Fn() + Sync),
    ) {
        // Futures are made as slots free up, not all at once: each holds a whole call's
        // state, and a 100,000-user push made them all up front (500 MiB).
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < USER_CONCURRENCY {
                let Some((ready, ops)) = lane.next_group() else {
                    break;
                };
                running.push(self.user_group(ctx, ready, ops, lane.depts.clone(), tick));
            }
            let take_slice = lane.queue.is_empty() && lane.waiting.len() < WAITING;
            let slices = lane.more.as_mut().filter(|_| take_slice);
            let watch_depts = !lane.waiting.is_empty() && !lane.depts_done;
            if running.is_empty() && slices.is_none() && !watch_depts {
                // The queue is empty too (the loop above fills every slot it can).
                if lane.waiting.is_empty() {
                    break;
                }
                // Cannot happen (once the department lane is done, every group is
                // ready); should it, run them rather than wait for nothing.
                lane.queue.extend(lane.waiting.drain(..));
                continue;
            }
            tokio::select! {
                Some(()) = running.next(), if !running.is_empty() => {}
                slice = recv(slices) => match slice {
                    Some((ops, considered)) => {
                        total.fetch_add(ops.len(), Ordering::Relaxed);
                        lane.queue.extend(self.streamed(ops, considered, lane.provider));
                    }
                    None => lane.more = None,
                },
                changed = lane.depts.changed(), if watch_depts => lane.depts_done = changed.is_err(),
            }
        }
    }

    /// A slice of users streamed in: grouped per user, counted as considered and touched.
    fn streamed(
        &self,
        ops: Vec<Op>,
        considered: usize,
        provider: &HashMap<String, usize>,
    ) -> Vec<Group> {
        self.streamed_considered
            .fetch_add(considered, Ordering::Relaxed);
        let groups = user_groups(ops, provider);
        let touched = groups.iter().filter(|(_, g)| g.iter().any(touches)).count();
        self.streamed_touched.fetch_add(touched, Ordering::Relaxed);
        groups
    }

    /// One user's operations, in order, once the department lane has settled `ready` ops.
    async fn user_group(
        &self,
        ctx: &ApplyCtx<'_>,
        ready: usize,
        ops: Vec<Op>,
        mut settled: tokio::sync::watch::Receiver<usize>,
        tick: &(dyn Fn() + Sync),
    ) {
        // Err only when the lane has ended, and then every department is settled.
        let _ = settled.wait_for(|n| *n >= ready).await;
        for op in &ops {
            self.step(ctx, op).await;
            tick();
        }
    }

    async fn step(&self, ctx: &ApplyCtx<'_>, op: &Op) {
        let key = entity_of(op);
        if self.reported(ctx, op, &key) || self.state().failed.contains(&key) {
            return;
        }
        match self.execute(ctx, op).await {
            Ok(()) => {
                // Said once the winner is applied: a failed write says nothing, and its
                // retry says it then.
                if let Op::UpdateUser { merge, .. }
                | Op::UpdateDept { merge, .. }
                | Op::UpdateLocalUser { merge, .. }
                | Op::UpdateLocalDept { merge, .. } = op
                {
                    let (kind, k) = &key;
                    conflicts(ctx, kind, k, merge);
                }
            }
            Err(EntityError::DingTalk(error))
                if error.kind == ErrorKind::DeptNameExists
                    && matches!(op, Op::UpdateDept { .. })
                    && !self.state().deferred.contains(op) =>
            {
                self.state().deferred.push(op.clone());
            }
            Err(error) => {
                self.state().summary.retryable |= error.is_retryable();
                self.record_failure(ctx, op, &error.to_string());
            }
        }
    }

    /// Reports a refusal, a warning or a merge (ops that only tell); whether `op` was one.
    fn reported(&self, ctx: &ApplyCtx<'_>, op: &Op, key: &(String, String)) -> bool {
        match op {
            Op::Fail {
                entity,
                key: k,
                reason,
            } => {
                self.state().failed.insert(key.clone());
                self.state().summary.failed += 1;
                self.state()
                    .summary
                    .failures
                    .push((entity.clone(), k.clone(), reason.clone()));
                tracing::warn!(event = "sync.entity.failed", tenant = ctx.tenant, entity = %entity, key = %k, reason = %reason, "entity cannot be synced");
            }
            Op::Warn {
                entity,
                key: k,
                reason,
            } => {
                // A warning about an entity whose write failed is said again at its retry.
                if !self.state().failed.contains(key) {
                    self.state()
                        .summary
                        .warnings
                        .push((entity.clone(), k.clone(), reason.clone()));
                    tracing::warn!(event = "sync.entity.warning", tenant = ctx.tenant, entity = %entity, key = %k, reason = %reason, "entity synced with a warning");
                }
            }
            Op::Merge {
                entity,
                key: k,
                fields,
            } => conflicts(ctx, entity, k, fields),
            _ => return false,
        }
        true
    }

    fn record_failure(&self, ctx: &ApplyCtx<'_>, op: &Op, reason: &str) {
        self.record_failure_of(ctx, entity_of(op), reason);
    }

    fn record_failure_of(&self, ctx: &ApplyCtx<'_>, (kind, key): (String, String), reason: &str) {
        tracing::warn!(event = "sync.entity.failed", tenant = ctx.tenant, entity = %kind, key = %key, reason = %reason, "entity cannot be synced");
        self.state().summary.failed += 1;
        self.state()
            .summary
            .failures
            .push((kind.clone(), key.clone(), reason.to_string()));
        self.state().failed.insert((kind, key));
    }

    fn resolve(&self, dept: &DeptRef) -> Result<i64, EntityError> {
        match dept {
            DeptRef::Ding(id) => Ok(*id),
            DeptRef::Local(local) => self
                .state()
                .created_depts
                .get(local)
                .copied()
                .ok_or_else(|| EntityError::NotCreated(local.clone())),
        }
    }

    fn resolve_list(&self, depts: &[DeptRef]) -> Vec<i64> {
        let mut ids: Vec<i64> = depts.iter().filter_map(|d| self.resolve(d).ok()).collect();
        ids.dedup();
        if ids.is_empty() {
            ids.push(ROOT_DEPT);
        }
        ids
    }

    fn resolve_local(&self, parent: &LocalRef) -> Result<Option<String>, EntityError> {
        match parent {
            LocalRef::Top => Ok(None),
            LocalRef::Local(id) => Ok(Some(id.clone())),
            LocalRef::Created(ding) => self
                .state()
                .created_local
                .get(ding)
                .cloned()
                .map(Some)
                .ok_or(EntityError::ParentNotPlaced(*ding)),
        }
    }

    fn user_update(&self, userid: &str, fields: &UserFields) -> UserUpdate {
        UserUpdate {
            userid: userid.to_string(),
            name: fields.name.clone(),
            telephone: fields.telephone.clone(),
            job_number: fields.job_number.clone(),
            title: fields.title.clone(),
            email: fields.email.clone(),
            dept_id_list: fields.depts.as_ref().map(|d| self.resolve_list(d)),
        }
    }

    /// A DingTalk department placed locally (a `CreateLocalDept`): its row, linked by
    /// `ding_identifier`, and its snapshot with the base; the local id.
    async fn insert_local_dept(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Result<String, EntityError> {
        let Op::CreateLocalDept {
            dept_id,
            name,
            parent,
            parent_dept_id,
        } = op
        else {
            return Err(EntityError::NotA("a department to place"));
        };
        let parent_id = self.resolve_local(parent)?;
        let dept = ctx
            .store
            .insert_department(&NewDept {
                name: name.clone(),
                parent_id,
                order: 0,
                ding_identifier: *dept_id,
                tenant_id: ctx.tenant,
            })
            .await?;
        self.state().created_local.insert(*dept_id, dept.id.clone());
        let base = DeptBase {
            name: name.clone(),
            parent: *parent_dept_id,
            order: 0,
        };
        record_dept(ctx.store, ctx.tenant, &dept.id, *dept_id, &base).await?;
        if let Some(placed) = ctx.placed {
            placed(*dept_id, &dept.id);
        }
        Ok(dept.id)
    }

    /// New local departments of a pull (`CreateLocalDept` ops): inserted one after the other
    /// (a parent before its children), while their `source_identifier` write-backs to
    /// DingTalk — rate-limited calls — go out beside the inserts, up to
    /// [`USER_CONCURRENCY`] at once, instead of each waiting for the one before.
    async fn create_local_depts(&self, ctx: &ApplyCtx<'_>, ops: &[Op], tick: &(dyn Fn() + Sync)) {
        // (index of the op, DingTalk id, local id) of each department placed.
        let (placed, mut write_backs) =
            tokio::sync::mpsc::unbounded_channel::<(usize, i64, String)>();
        let inserts = async move {
            for (index, op) in ops.iter().enumerate() {
                match self.insert_local_dept(ctx, op).await {
                    Ok(local_id) => {
                        if let Op::CreateLocalDept { dept_id, .. } = op {
                            let _ = placed.send((index, *dept_id, local_id));
                        }
                    }
                    Err(error) => {
                        self.state().summary.retryable |= error.is_retryable();
                        self.record_failure(ctx, op, &error.to_string());
                        tick();
                    }
                }
            }
        };
        let client = ctx.client;
        let sending = async {
            let mut running = FuturesUnordered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    next = write_backs.recv(), if open && running.len() < USER_CONCURRENCY => match next {
                        Some((index, dept_id, local_id)) => running.push(async move {
                            (index, write_back_source(client, dept_id, local_id).await)
                        }),
                        None => open = false,
                    },
                    Some((index, result)) = running.next(), if !running.is_empty() => {
                        match result {
                            Ok(()) => self.state().summary.created += 1,
                            Err(error) => {
                                self.state().summary.retryable |= error.is_retryable();
                                self.record_failure(ctx, &ops[index], &error.to_string());
                            }
                        }
                        tick();
                    }
                    else => break,
                }
            }
        };
        tokio::join!(inserts, sending);
    }

    /// The rows a `CreateLocalUser` inserts (`None` for any other operation): the user,
    /// in the local departments its DingTalk ones resolved to, its link and base.
    fn new_linked_user(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Option<NewLinkedUser> {
        let Op::CreateLocalUser {
            userid,
            unionid,
            fields,
            base,
        } = op
        else {
            return None;
        };
        Some(NewLinkedUser {
            user: NewUser {
                username: userid.clone(),
                realname: fields.realname.clone().unwrap_or_else(|| userid.clone()),
                phone: fields.phone.clone(),
                email: fields.email.clone(),
                telephone: fields.telephone.clone(),
                work_no: fields.work_no.clone(),
                depart_ids: self.local_depts(&fields.add_depts),
                tenant_id: ctx.tenant,
            },
            userid: userid.clone(),
            unionid: unionid.clone(),
            base: json(base),
        })
    }

    /// New local users of a pull (`CreateLocalUser` ops) in one batch
    /// (`Store::insert_linked_users`); a user the batch does not take, or every user when
    /// the batch fails as a whole, goes the single-row way.
    async fn create_local_users(&self, ctx: &ApplyCtx<'_>, ops: &[Op], tick: &(dyn Fn() + Sync)) {
        let batch: Vec<NewLinkedUser> = ops
            .iter()
            .filter_map(|op| self.new_linked_user(ctx, op))
            .collect();
        let answers = match ctx
            .store
            .insert_linked_users(ctx.tenant, &batch, ctx.new_user_password)
            .await
        {
            Ok(answers) => answers,
            Err(error) => {
                tracing::warn!(event = "sync.batch.failed", tenant = ctx.tenant, users = ops.len(), error = %error, "a batch failed; its users go one by one");
                for op in ops {
                    self.step(ctx, op).await;
                    tick();
                }
                return;
            }
        };
        for (op, answer) in ops.iter().zip(answers) {
            match answer {
                Inserted::Id(_) => self.state().summary.created += 1,
                Inserted::Clash(error) => {
                    self.state().summary.retryable |= error.is_retryable();
                    self.record_failure(ctx, op, &error.to_string());
                }
                Inserted::Alone => self.step(ctx, op).await,
            }
            tick();
        }
    }

    /// A slice of a pull's users (no operation of one user waits for another's): its
    /// refusals, warnings and conflicts first, then its updates in one batch, then its new
    /// users in another (the planner already refused a new user whose value a local user
    /// holds).
    async fn pull_users(&self, ctx: &ApplyCtx<'_>, ops: &[Op], tick: &(dyn Fn() + Sync)) {
        let (writes, notes): (Vec<&Op>, Vec<&Op>) = ops
            .iter()
            .partition(|op| matches!(op, Op::CreateLocalUser { .. } | Op::UpdateLocalUser { .. }));
        for op in notes {
            self.step(ctx, op).await;
            tick();
        }
        let (updates, creates): (Vec<Op>, Vec<Op>) = writes
            .into_iter()
            .cloned()
            .partition(|op| matches!(op, Op::UpdateLocalUser { .. }));
        if !updates.is_empty() {
            self.update_local_users(ctx, &updates, tick).await;
        }
        if !creates.is_empty() {
            self.create_local_users(ctx, &creates, tick).await;
        }
    }

    /// A pull's updates of local users (a run of `UpdateLocalUser` ops) in one transaction
    /// (`Store::update_linked_users`): a user setting a value another user holds fails
    /// alone; when the batch cannot be written, its users go one by one.
    async fn update_local_users(&self, ctx: &ApplyCtx<'_>, ops: &[Op], tick: &(dyn Fn() + Sync)) {
        let failed = |op: &&Op| self.state().failed.contains(&entity_of(op));
        let (skipped, ops): (Vec<&Op>, Vec<&Op>) = ops.iter().partition(failed);
        skipped.iter().for_each(|_| tick());
        let changes: Vec<UserChange> = ops
            .iter()
            .filter_map(|op| self.user_change(ctx, op))
            .collect();
        let answers = match ctx.store.update_linked_users(&changes).await {
            Ok(Some(answers)) if answers.len() == ops.len() => answers,
            outcome => {
                if let Err(error) = outcome {
                    tracing::warn!(event = "sync.batch.failed", tenant = ctx.tenant, users = ops.len(), error = %error, "a batch failed; its users go one by one");
                }
                for op in ops {
                    self.step(ctx, op).await;
                    tick();
                }
                return;
            }
        };
        for ((op, change), answer) in ops.into_iter().zip(&changes).zip(answers) {
            let Op::UpdateLocalUser { .. } = op else {
                continue;
            };
            self.updated_local_user(ctx, op, change, answer).await;
            tick();
        }
    }

    /// What the batch answered for one `UpdateLocalUser` (`op`, written as `change`):
    /// counted and its conflicts told, or failed; a link another user's row holds is
    /// settled by [`Run::held_by`].
    async fn updated_local_user(
        &self,
        ctx: &ApplyCtx<'_>,
        op: &Op,
        change: &UserChange,
        answer: StoreResult<LinkSaved>,
    ) {
        let Op::UpdateLocalUser {
            fields,
            merge,
            base,
            ..
        } = op
        else {
            return;
        };
        let held = match (answer, &change.record) {
            (Ok(LinkSaved::HeldBy(other)), ChangeRecord::Link(write)) => {
                self.held_by(ctx, &write.link, base, other).await
            }
            (Ok(_), _) => Ok(()),
            (Err(error), _) => Err(error.into()),
        };
        match held {
            Ok(()) => {
                if !fields.is_empty() {
                    self.state().summary.updated += 1;
                }
                let (kind, key) = entity_of(op);
                conflicts(ctx, &kind, &key, merge);
            }
            Err(error) => {
                self.state().summary.retryable |= error.is_retryable();
                self.record_failure(ctx, op, &error.to_string());
            }
        }
    }

    /// What an `UpdateLocalUser` op writes, for a batch.
    fn user_change(&self, ctx: &ApplyCtx<'_>, op: &Op) -> Option<UserChange> {
        let Op::UpdateLocalUser {
            local_id,
            userid,
            unionid,
            fields,
            link,
            base,
            ..
        } = op
        else {
            return None;
        };
        let row = Link {
            user_id: local_id.clone(),
            userid: userid.clone(),
            unionid: unionid.clone(),
            tenant_id: ctx.tenant,
        };
        let snapshot = user_snapshot(&row, base);
        let record = if *link {
            ChangeRecord::Link(LinkWrite {
                link: row,
                realname: fields.realname.clone().unwrap_or_default(),
                snapshot,
            })
        } else {
            ChangeRecord::Base(snapshot)
        };
        Some(UserChange {
            id: local_id.clone(),
            fields: columns_of(fields),
            add_depts: self.local_depts(&fields.add_depts),
            remove_depts: fields.remove_depts.clone(),
            record,
        })
    }

    fn local_depts(&self, refs: &[LocalRef]) -> Vec<String> {
        refs.iter()
            .filter_map(|r| self.resolve_local(r).ok().flatten())
            .collect()
    }

    async fn update_local_user(
        &self,
        store: &Store,
        local_id: &str,
        fields: &LocalUserFields,
    ) -> Result<(), EntityError> {
        store
            .update_user_fields(
                local_id,
                &columns_of(fields),
                &self.local_depts(&fields.add_depts),
                &fields.remove_depts,
            )
            .await?;
        Ok(())
    }

    /// Writes a link row and, in the same transaction, the user's snapshot with `base`; when
    /// another tenant's row holds the DingTalk userid (JeecgBoot keeps one per userid), that
    /// row is left alone and a warning says so — the link of this tenant lives in dingsync's
    /// snapshot.
    async fn save_link(
        &self,
        ctx: &ApplyCtx<'_>,
        link: &Link,
        realname: &str,
        base: &UserBase,
    ) -> Result<(), EntityError> {
        let snapshot = user_snapshot(link, base);
        let saved = ctx
            .store
            .save_link_and_base(link, realname, Some(&snapshot))
            .await?;
        if let LinkSaved::HeldBy(other) = saved {
            self.held_by(ctx, link, base, other).await?;
        }
        Ok(())
    }

    /// [`Run::save_link`] after a DingTalk call: kept for the next batch of records (see
    /// [`super::written`]), which is written now if it is due.
    /// `counted`: the summary's count the entity takes (and gives back if its record fails).
    async fn record_link(
        &self,
        ctx: &ApplyCtx<'_>,
        link: Link,
        realname: String,
        base: UserBase,
        counted: Counted,
    ) {
        self.count(counted, 1);
        let snapshot = user_snapshot(&link, &base);
        let record = LinkRecord {
            key: (entity::USER.to_string(), link.user_id.clone()),
            counted,
            write: LinkWrite {
                link,
                realname,
                snapshot,
            },
            base,
        };
        if self.written.link(record) {
            self.flush(ctx, false).await;
        }
    }

    /// [`record_dept`] after a DingTalk call, kept for the next batch like [`Run::record_link`].
    async fn record_dept(
        &self,
        ctx: &ApplyCtx<'_>,
        local_id: &str,
        dept_id: i64,
        base: &DeptBase,
        counted: Counted,
    ) {
        self.count(counted, 1);
        let snapshot = dept_snapshot(ctx.tenant, local_id, dept_id, base);
        if self.written.dept(
            (entity::DEPT.to_string(), local_id.to_string()),
            counted,
            snapshot,
        ) {
            self.flush(ctx, false).await;
        }
    }

    /// Writes the records kept so far; an entity whose record could not be written is
    /// failed with the reason (its next run finds DingTalk already right and records it
    /// then). `wait`: wait for a flush under way (else leave the records to the next).
    async fn flush(&self, ctx: &ApplyCtx<'_>, wait: bool) {
        let _turn = if wait {
            self.flushing.lock().await
        } else {
            match self.flushing.try_lock() {
                Ok(turn) => turn,
                Err(_) => return,
            }
        };
        for outcome in self.written.flush(ctx.store).await {
            let (key, counted, error) = match outcome {
                Outcome::HeldBy(record, other) => {
                    let LinkRecord {
                        key,
                        counted,
                        write,
                        base,
                    } = *record;
                    match self.held_by(ctx, &write.link, &base, other).await {
                        Ok(()) => continue,
                        Err(error) => (key, counted, error),
                    }
                }
                Outcome::Failed(key, counted, error) => (key, counted, EntityError::Store(error)),
            };
            self.count(counted, -1);
            self.state().summary.retryable |= error.is_retryable();
            self.record_failure_of(ctx, key, &error.to_string());
        }
    }

    /// Adds `n` to the summary's count `counted` names.
    fn count(&self, counted: Counted, n: i64) {
        let mut state = self.state();
        match counted {
            Counted::Nothing => {}
            Counted::Created => state.summary.created += n,
            Counted::Updated => state.summary.updated += n,
        }
    }

    /// Another tenant's row holds the userid `link` names (JeecgBoot keeps one row per
    /// userid): warns once, and keeps the link in the snapshot's base.
    async fn held_by(
        &self,
        ctx: &ApplyCtx<'_>,
        link: &Link,
        base: &UserBase,
        other: TenantId,
    ) -> Result<(), EntityError> {
        // Said once: the base remembers whose row holds the userid.
        if base.link_held_by != Some(other) {
            let reason = format!(
                "sys_third_account already links DingTalk userid {} for tenant {other} (JeecgBoot keeps one row per userid); that row is left alone and tenant {}'s link is kept in dingsync's snapshot",
                link.userid, ctx.tenant
            );
            tracing::warn!(event = "sync.entity.warning", tenant = ctx.tenant, entity = entity::USER, key = %link.user_id, reason = %reason, "entity synced with a warning");
            self.state()
                .summary
                .warnings
                .push((entity::USER.into(), link.user_id.clone(), reason));
        }
        let held = UserBase {
            link_held_by: Some(other),
            ..base.clone()
        };
        ctx.store
            .put_snapshot(
                ctx.tenant,
                entity::USER,
                &link.user_id,
                &link.userid,
                &json(&held),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::mask_mobile;
    use super::*;

    fn group(ready: usize) -> Group {
        (ready, Vec::new())
    }

    #[test]
    fn entity_errors_say_what_they_said_and_only_a_held_name_waits_to_be_retried() {
        let cases = [
            (EntityError::NotA("a user to create"), "not a user to create", false),
            (EntityError::NotCreated("d1".into()), "department d1 was not created", false),
            (
                EntityError::ParentNotPlaced(7),
                "parent department 7 was not created locally",
                false,
            ),
            (
                EntityError::MobileTaken(mask_mobile("13800000001")),
                "mobile 138****0001 already belongs to another DingTalk user (errcode 60104)",
                false,
            ),
            (
                EntityError::MobileLinked {
                    masked: mask_mobile("13800000001"),
                    userid: "u1".into(),
                    other: "l2".into(),
                },
                "mobile 138****0001 belongs to DingTalk user u1, already linked to local user l2 (errcode 60104)",
                false,
            ),
            (
                EntityError::NameHeld {
                    dept_id: 5,
                    name: "Sales".into(),
                    holder: "d2".into(),
                },
                "DingTalk department 5 under the same parent is already named \"Sales\" and belongs to local department d2 (errcode 60021)",
                true,
            ),
        ];
        for (error, text, retryable) in cases {
            assert_eq!(error.to_string(), text);
            assert_eq!(error.is_retryable(), retryable, "{text}");
        }
    }

    #[test]
    fn users_whose_departments_are_not_settled_wait_aside_and_ready_ones_go_first() {
        let mut queue: VecDeque<Group> = [5, 0, 7, 1].map(group).into();
        let mut waiting = Vec::new();
        let ready = |g: Option<Group>| g.map(|(r, _)| r);
        assert_eq!(ready(next_ready(&mut queue, &mut waiting, 1)), Some(0));
        assert_eq!(ready(next_ready(&mut queue, &mut waiting, 1)), Some(1));
        assert_eq!(ready(next_ready(&mut queue, &mut waiting, 1)), None);
        let aside: Vec<usize> = waiting.iter().map(|(r, _)| *r).collect();
        assert_eq!(aside, vec![5, 7], "held back, in order");
        // A full waiting list no longer grows: the next group takes its slot and waits there.
        let mut full: Vec<Group> = (0..WAITING).map(|_| group(9)).collect();
        let mut queue: VecDeque<Group> = [8].map(group).into();
        assert_eq!(ready(next_ready(&mut queue, &mut full, 1)), Some(8));
        assert_eq!(full.len(), WAITING);
    }
}
