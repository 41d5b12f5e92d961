//! A pull run: DingTalk read once, its departments placed, then its users planned and
//! written a slice at a time — the next slice planned while the current one is written (in
//! batches: `Store::insert_linked_users`). Into a database whose departments are not linked
//! to DingTalk yet (a first pull), everything happens at once ([`first_pull`]): the
//! departments are placed as the walk finds them (each department's children, with whatever
//! else arrived while the last batch was applied), and each user is planned and written as
//! soon as its departments are placed, while DingTalk is still being read. Either way every
//! department and user is planned by the same planner as `plan pull` and the daemon's pull
//! jobs.

use std::collections::{HashMap, HashSet};

use crate::config::TenantId;
use crate::dingtalk::types::DtUser;
use crate::store::Store;

use super::apply::{apply, ApplyCtx};
use super::model::{LocalRef, LocalView, Op, RemoteDept, RemoteView, Summary, ROOT_DEPT};
use super::plan::{pull_departments, pull_users_slice, Plan, Rules};
use super::read;
use super::run::{merge, slices_stopped, Phases, RunCtx, RunError, RunRequest, USER_SLICE};

/// Logs `pull.mobile_hidden` once a run when DingTalk shows users without a mobile: the
/// app lacks the permission to read them, so users are matched by link and username only
/// and none is inserted without a phone.
pub fn report_hidden_mobiles(tenant: TenantId, remote: &RemoteView) {
    let hidden = remote.users.iter().filter(|u| u.mobile.is_empty()).count();
    report_hidden(tenant, hidden, remote.users.len());
}

/// [`report_hidden_mobiles`] from counts: `hidden` of `users` showed no mobile.
fn report_hidden(tenant: TenantId, hidden: usize, users: usize) {
    if hidden > 0 {
        tracing::warn!(
            event = "pull.mobile_hidden",
            tenant,
            count = hidden,
            users,
            "DingTalk shows users without a mobile: grant the app 企业员工手机号信息 (qyapi_get_member_by_mobile / the mobile permission) in DingTalk's developer console; until then users are matched by link and username only and none is inserted without a phone"
        );
    }
}

/// A pull in progress: DingTalk's side read once, its users planned a slice at a time
/// against the local users each slice can match.
pub(super) struct Pull {
    remote: RemoteView,
    users: bool,
    map: HashMap<i64, LocalRef>,
    next: usize,
    planner: SlicePlanner,
}

/// Plans DingTalk users a slice at a time (any pull, streamed or not): the matches made so
/// far carry from one slice to the next.
struct SlicePlanner {
    policy: super::plan::merge::Policy,
    tenant: TenantId,
    claimed: HashMap<String, String>,
    slice: usize,
    phases: Phases,
}

/// Reads DingTalk and the local departments, and plans the departments.
pub(super) async fn start_pull(
    ctx: &RunCtx<'_>,
    request: RunRequest,
) -> Result<(Pull, Plan), RunError> {
    let RunCtx {
        store,
        client,
        config,
        tenant,
    } = *ctx;
    let policy = Rules::of(config, tenant).policy;
    let local = read::dept_tree_view(store, tenant.id, true).await?;
    let started = std::time::Instant::now();
    let mut remote = read::remote_view(client, request.scope.users()).await?;
    if needs_sources(&local, &remote) {
        let known: HashSet<i64> = local
            .depts
            .iter()
            .filter_map(|d| d.ding_identifier)
            .collect();
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
    let mut planner = SlicePlanner::new(policy, tenant.id, USER_SLICE);
    planner.phases.dingtalk = dingtalk;
    let pull = Pull {
        remote,
        users: request.scope.users(),
        map,
        next: 0,
        planner,
    };
    Ok((pull, plan))
}

/// Whether a pull must read DingTalk's `source_identifier`s (`department/get`): only for a
/// live local department that no DingTalk department is linked to; with none (an empty
/// database, or all linked), none is needed.
fn needs_sources(local: &LocalView, remote: &RemoteView) -> bool {
    let remote_ids: HashSet<i64> = remote.depts.iter().map(|d| d.dept_id).collect();
    local
        .depts
        .iter()
        .filter(|d| !d.is_post() && !d.is_deleted())
        .any(|d| d.ding_identifier.is_none_or(|id| !remote_ids.contains(&id)))
}

/// Where each of `remote`'s departments is locally now; one still to be created (its
/// create failed) is left out, so that its members go without it.
async fn placed_now(
    store: &Store,
    tenant: TenantId,
    remote: &RemoteView,
    policy: &super::plan::merge::Policy,
) -> Result<HashMap<i64, LocalRef>, RunError> {
    let local = read::dept_tree_view(store, tenant, true).await?;
    let mut map = pull_departments(&local, remote, policy).1;
    map.retain(|_, r| !matches!(r, LocalRef::Created(_)));
    Ok(map)
}

impl Pull {
    /// The next slice of DingTalk users planned.
    pub(super) async fn next_slice(&mut self, store: &Store) -> Result<Option<Plan>, RunError> {
        if !self.users || self.next >= self.remote.users.len() {
            return Ok(None);
        }
        let people = self.remote.users.slice(self.next, self.planner.slice);
        self.next += people.len();
        Ok(Some(self.planner.plan(store, &people, &self.map).await?))
    }
}

impl SlicePlanner {
    fn new(policy: super::plan::merge::Policy, tenant: TenantId, slice: usize) -> Self {
        Self {
            policy,
            tenant,
            claimed: HashMap::new(),
            slice: slice.max(1),
            phases: Phases::default(),
        }
    }

    /// The DingTalk users `people` planned, their departments placed as `map` says.
    async fn plan(
        &mut self,
        store: &Store,
        people: &[DtUser],
        map: &HashMap<i64, LocalRef>,
    ) -> Result<Plan, RunError> {
        let started = std::time::Instant::now();
        let local = read::pull_candidates(store, self.tenant, people).await?;
        self.phases.local += started.elapsed().as_millis();
        let started = std::time::Instant::now();
        let ops = pull_users_slice(&local, people, map, &mut self.claimed, &self.policy);
        self.phases.plan += started.elapsed().as_millis();
        Ok(Plan {
            ops,
            refused_deletes: None,
            considered: people.len(),
        })
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

/// News from a first pull's placer to its planner.
enum Placement {
    /// DingTalk departments that exist locally (placed by an earlier batch, or matched).
    Known(HashMap<i64, LocalRef>),
    /// One DingTalk department's local department was just inserted.
    One(i64, String),
    /// The walk is complete and every department found was placed: where they all are.
    Complete(HashMap<i64, LocalRef>),
}

/// The users a first pull has read but cannot plan yet, each filed under the first of its
/// departments that is not placed, so that a placed department releases only its own.
#[derive(Default)]
struct Waiting {
    map: HashMap<i64, LocalRef>,
    complete: bool,
    by_dept: HashMap<i64, Vec<DtUser>>,
    count: usize,
}

impl Waiting {
    /// Files `user` as ready (each of its departments is placed, or is the root; or every
    /// department that will ever be is placed: one that was not stays out of its
    /// memberships, as in any pull), or under its first unplaced department.
    fn arrive(&mut self, user: DtUser, ready: &mut Vec<DtUser>) {
        let missing = (!self.complete)
            .then(|| {
                user.dept_id_list
                    .iter()
                    .copied()
                    .find(|d| *d != ROOT_DEPT && !self.map.contains_key(d))
            })
            .flatten();
        match missing {
            None => ready.push(user),
            Some(dept) => {
                self.by_dept.entry(dept).or_default().push(user);
                self.count += 1;
            }
        }
    }

    /// Takes in the placer's news; the users it releases go to `ready`.
    fn hear(&mut self, news: Placement, ready: &mut Vec<DtUser>) {
        let placed: Vec<(i64, LocalRef)> = match news {
            Placement::Known(map) => map.into_iter().collect(),
            Placement::One(dept, local) => vec![(dept, LocalRef::Local(local))],
            Placement::Complete(map) => {
                self.complete = true;
                self.map = map;
                let all: Vec<DtUser> = self.by_dept.drain().flat_map(|(_, u)| u).collect();
                self.count = 0;
                ready.extend(all);
                return;
            }
        };
        for (dept, local) in placed {
            if matches!(local, LocalRef::Created(_)) || self.map.contains_key(&dept) {
                continue;
            }
            self.map.insert(dept, local);
            for user in self.by_dept.remove(&dept).unwrap_or_default() {
                self.count -= 1;
                self.arrive(user, ready);
            }
        }
    }
}

/// Users a first pull keeps waiting for their departments, at most; beyond, the member
/// pages wait in DingTalk.
const WAITING_CAP: usize = 5_000;

/// A first pull (see the module documentation): the walk and the member pages are read,
/// the departments placed, and the users planned and written, all at once. A user is
/// planned as soon as each of its departments is inserted locally; the slices are written
/// one at a time, the next planned meanwhile. A failed read or placing returns the error
/// (what was applied stays, and users whose departments were not all placed are left for
/// the next run).
async fn first_pull(
    run: &RunCtx<'_>,
    ctx: &ApplyCtx<'_>,
    request: RunRequest,
    slice: usize,
) -> Result<Summary, RunError> {
    let (config, tenant) = (run.config, run.tenant);
    let started = std::time::Instant::now();
    let (levels_tx, levels) = tokio::sync::mpsc::unbounded_channel::<Vec<RemoteDept>>();
    let (users_tx, users) = tokio::sync::mpsc::channel::<Vec<DtUser>>(8);
    let (placed_tx, placed) = tokio::sync::mpsc::unbounded_channel::<Placement>();
    let (slices_tx, slices) = tokio::sync::mpsc::channel::<Plan>(1);
    let read = async {
        let read = if request.scope.users() {
            read::remote_view_by_levels(ctx.client, Some(levels_tx), Some(users_tx))
                .await
                .map(drop)
        } else {
            drop(users_tx);
            read::departments_by_levels(ctx.client, levels_tx)
                .await
                .map(drop)
        };
        let dingtalk = started.elapsed().as_millis();
        read.map(|()| dingtalk).map_err(RunError::from)
    };
    let place = place_departments(run, ctx, request, levels, placed_tx);
    let mut planner = SlicePlanner::new(Rules::of(config, tenant).policy, tenant.id, slice);
    let known = std::sync::atomic::AtomicUsize::new(0);
    let arrivals = Arrivals { users, placed };
    let plan = plan_arrivals(ctx.store, &mut planner, arrivals, slices_tx, &known);
    let write = write_slices(ctx, slices, 0, &known);
    let (read, placed, planned, (written, write_ms)) = tokio::join!(read, place, plan, write);
    let mut summary = placed?;
    let dingtalk = read?;
    let phases = Phases {
        dingtalk,
        write: write_ms,
        ..planner.phases
    };
    merge(&mut summary, written);
    phases.record(&mut summary, started.elapsed());
    if let Err(error) = planned {
        slices_stopped(&mut summary, &error);
    }
    Ok(summary)
}

/// Places the departments the walk sends down `levels`, each with whatever else arrived
/// while the last ones were applied (a slow database takes bigger batches instead of falling
/// behind), and tells the planner on `placed` where they are: those that exist before each
/// batch is applied, each one as it is inserted (its `source_identifier` write-back may
/// still be under way), and all of them once the walk's end (an empty level) is applied.
/// The departments' summary.
async fn place_departments(
    run: &RunCtx<'_>,
    ctx: &ApplyCtx<'_>,
    request: RunRequest,
    mut levels: tokio::sync::mpsc::UnboundedReceiver<Vec<RemoteDept>>,
    placed: tokio::sync::mpsc::UnboundedSender<Placement>,
) -> Result<Summary, RunError> {
    let tenant = run.tenant;
    let policy = Rules::of(run.config, tenant).policy;
    // Local departments that are not linked can be matched only by the `source_identifier`
    // DingTalk keeps: read it for each level then.
    let unlinked = store_has_live_departments(ctx.store, tenant.id).await?;
    let mut remote = RemoteView::default();
    let mut applied: HashSet<String> = HashSet::new();
    let mut summary = Summary::default();
    let mut complete = false;
    // The planner is gone only when the pull stopped.
    let inserted = |dept: i64, local: &str| {
        let _ = placed.send(Placement::One(dept, local.to_string()));
    };
    let place_ctx = ApplyCtx {
        placed: Some(&inserted),
        ..*ctx
    };
    while !complete {
        let Some((mut level, last)) = next_levels(&mut levels).await else {
            // The walk failed: what is placed stays, and users still waiting stay out.
            return Ok(summary);
        };
        complete = last;
        if unlinked {
            read::fetch_sources_of(ctx.client, &mut level).await?;
        }
        remote.depts.extend(level);
        let local = read::dept_tree_view(ctx.store, tenant.id, true).await?;
        let (ops, map) = pull_departments(&local, &remote, &policy);
        let _ = placed.send(Placement::Known(map));
        if !request.scope.departments() {
            continue;
        }
        let plan = not_applied(ops, &mut applied);
        merge(&mut summary, apply(&place_ctx, &plan).await);
    }
    let map = placed_now(ctx.store, tenant.id, &remote, &policy).await?;
    let _ = placed.send(Placement::Complete(map));
    Ok(summary)
}

/// The operations of `ops` not in `applied` yet, as a plan (now in `applied`): each level's
/// plan covers the levels before it, whose operations were applied with them.
fn not_applied(ops: Vec<Op>, applied: &mut HashSet<String>) -> Plan {
    let ops: Vec<Op> = ops
        .into_iter()
        .filter(|op| applied.insert(serde_json::to_string(op).unwrap_or_default()))
        .collect();
    Plan {
        ops,
        refused_deletes: None,
        considered: 0,
    }
}

/// The next level the walk sent, with whatever else arrived meanwhile, and whether the walk's
/// end (an empty level) is among them; `None` when the walk ended without it (it failed).
async fn next_levels(
    levels: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<RemoteDept>>,
) -> Option<(Vec<RemoteDept>, bool)> {
    let first = levels.recv().await?;
    let (mut level, mut complete) = (Vec::new(), false);
    for more in std::iter::once(first).chain(std::iter::from_fn(|| levels.try_recv().ok())) {
        complete |= more.is_empty();
        level.extend(more);
    }
    Some((level, complete))
}

/// What a first pull's planner hears: DingTalk's member pages as they are read, and the
/// placer's news.
struct Arrivals {
    users: tokio::sync::mpsc::Receiver<Vec<DtUser>>,
    placed: tokio::sync::mpsc::UnboundedReceiver<Placement>,
}

/// Plans the users arriving on `arrivals.users` a slice at a time as the placer's news on
/// `arrivals.placed` makes them ready (see [`Waiting::arrive`]), and sends each slice's plan
/// down `slices`. `known` counts the users arrived (the progress' total).
async fn plan_arrivals(
    store: &Store,
    planner: &mut SlicePlanner,
    arrivals: Arrivals,
    slices: tokio::sync::mpsc::Sender<Plan>,
    known: &std::sync::atomic::AtomicUsize,
) -> Result<(), RunError> {
    let Arrivals {
        mut users,
        mut placed,
    } = arrivals;
    let mut heard = Heard::new();
    loop {
        while heard.slice_due(planner.slice) {
            let people = heard.take_slice(planner.slice);
            let plan = planner.plan(store, &people, &heard.waiting.map).await?;
            if slices.send(plan).await.is_err() {
                return Ok(());
            }
        }
        if heard.finished() {
            break;
        }
        tokio::select! {
            page = users.recv(), if heard.users_open && heard.waiting.count < WAITING_CAP => match page {
                Some(page) => heard.page(page, known),
                None => heard.users_open = false,
            },
            news = placed.recv(), if heard.placer_open => match news {
                Some(news) => {
                    heard.news(news);
                    while let Ok(more) = placed.try_recv() {
                        heard.news(more);
                    }
                }
                None => heard.placer_gone(),
            },
        }
    }
    heard.report(planner.tenant);
    Ok(())
}

/// What a first pull's planner has heard so far: the users waiting for their departments,
/// those ready to plan, whether the reader and the placer still speak, and the counts for
/// `pull.mobile_hidden`.
struct Heard {
    waiting: Waiting,
    ready: Vec<DtUser>,
    users_open: bool,
    placer_open: bool,
    /// Users arrived without a mobile, of `arrived`.
    hidden: usize,
    arrived: usize,
}

impl Heard {
    fn new() -> Self {
        Self {
            waiting: Waiting::default(),
            ready: Vec::new(),
            users_open: true,
            placer_open: true,
            hidden: 0,
            arrived: 0,
        }
    }

    /// Whether a slice of `size` users is to be planned now: that many are ready, or no
    /// more will come from the reader.
    fn slice_due(&self, size: usize) -> bool {
        self.ready.len() >= size || (!self.users_open && !self.ready.is_empty())
    }

    /// The next slice of ready users, at most `size`.
    fn take_slice(&mut self, size: usize) -> Vec<DtUser> {
        self.ready.drain(..size.min(self.ready.len())).collect()
    }

    /// Whether nothing more can be planned: the reader is done, and no one waits or no
    /// placer is left to release them.
    fn finished(&self) -> bool {
        !self.users_open && (self.waiting.count == 0 || !self.placer_open)
    }

    /// A page of members read: counted (`known`: the progress' total), and each filed.
    fn page(&mut self, page: Vec<DtUser>, known: &std::sync::atomic::AtomicUsize) {
        self.arrived += page.len();
        self.hidden += page.iter().filter(|u| u.mobile.is_empty()).count();
        known.fetch_add(page.len(), std::sync::atomic::Ordering::Relaxed);
        for user in page {
            self.waiting.arrive(user, &mut self.ready);
        }
    }

    /// The placer's news, releasing the users it places.
    fn news(&mut self, news: Placement) {
        self.waiting.hear(news, &mut self.ready);
    }

    /// The placer is gone before the end of the walk was placed: it failed.
    fn placer_gone(&mut self) {
        self.placer_open = false;
        // The placer failed: no one waiting will be placed, so reading on is for nothing
        // (the loop ends, and dropping `users` stops the reader).
        self.users_open &= self.waiting.complete;
    }

    /// `pull.mobile_hidden`, and `pull.users_unplaced` when users still wait.
    fn report(&self, tenant: TenantId) {
        report_hidden(tenant, self.hidden, self.arrived);
        if self.waiting.count > 0 {
            tracing::warn!(event = "pull.users_unplaced", tenant, count = self.waiting.count, "users not pulled: their departments were not all placed (the walk or a department's placing failed); the next pull takes them");
        }
    }
}

/// Operations a pull writes before it first refreshes the database's statistics
/// ([`Store::refresh_statistics`]); then each time it has doubled them.
const STATISTICS_FROM: usize = 1000;

/// Writes the slices arriving on `slices`, one at a time; progress counts from `done`
/// operations against `known` more. Their summary, and the time spent writing.
async fn write_slices(
    ctx: &ApplyCtx<'_>,
    mut slices: tokio::sync::mpsc::Receiver<Plan>,
    mut done: usize,
    known: &std::sync::atomic::AtomicUsize,
) -> (Summary, u128) {
    let start = done;
    let mut written = Summary::default();
    let mut write_ms = 0;
    // Operations written when the tables' statistics were last refreshed.
    let mut analyzed = 0;
    while let Some(plan) = slices.recv().await {
        let offset = done;
        let total = start + known.load(std::sync::atomic::Ordering::Relaxed);
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
        done += plan.ops.len();
        // Each time the pull has doubled what it wrote (from STATISTICS_FROM on), so that
        // the next slices' lookups are planned for the tables as they now are.
        if done - start >= (2 * analyzed).max(STATISTICS_FROM) {
            analyzed = done - start;
            if let Err(error) = ctx.store.refresh_statistics().await {
                // Statistics only make reads faster: the pull goes on without them.
                tracing::debug!(event = "store.statistics_failed", tenant = ctx.tenant, error = %error, "refreshing the database's planner statistics failed; the pull goes on");
            }
        }
        write_ms += started.elapsed().as_millis();
    }
    (written, write_ms)
}

/// Records run `run_id` as ended by `error` (what was applied stays).
async fn record_stopped(store: &Store, tenant: TenantId, run_id: i64, error: &RunError) {
    let why = format!("stopped: {error}");
    let counts = crate::store::runs::RunCounts::default();
    if let Err(failed) = store
        .finish_run(
            run_id,
            &counts,
            &std::collections::BTreeMap::new(),
            Some(&why),
        )
        .await
    {
        tracing::warn!(event = "sync.run.record_failed", tenant, run = run_id, error = %failed, "cannot record the end of the run");
    }
}

async fn store_has_live_departments(store: &Store, tenant: TenantId) -> Result<bool, RunError> {
    let rows = store.dept_rows(tenant).await?;
    Ok(rows.depts.iter().any(|d| !d.is_post() && !d.is_deleted()))
}

/// Applies a pull: a first pull as [`first_pull`] does; else the departments, then the
/// users a slice at a time, the next slice planned while the current one is written.
/// Returns the summary and the run's id.
pub(super) async fn apply_pull(
    run: &RunCtx<'_>,
    ctx: &ApplyCtx<'_>,
    request: RunRequest,
    kind: &str,
    slice: usize,
) -> Result<(Summary, Option<String>, i64), RunError> {
    let (store, tenant) = (ctx.store, run.tenant);
    if by_levels(store, tenant.id).await? {
        let run_id = store.start_run(tenant.id, kind).await?;
        return match first_pull(run, ctx, request, slice).await {
            Ok(summary) => Ok((summary, None, run_id)),
            Err(error) => {
                record_stopped(store, tenant.id, run_id, &error).await;
                Err(error)
            }
        };
    }
    let run_started = std::time::Instant::now();
    let (mut pull, head) = start_pull(run, request).await?;
    let run_id = store.start_run(tenant.id, kind).await?;
    let mut summary = apply(ctx, &head).await;
    pull.planner.slice = slice.max(1);
    let known = std::sync::atomic::AtomicUsize::new(pull.remote.users.len());
    let (sender, slices) = tokio::sync::mpsc::channel::<Plan>(1);
    let planning = async {
        pull.map = placed_now(store, tenant.id, &pull.remote, &pull.planner.policy).await?;
        while let Some(plan) = pull.next_slice(store).await? {
            if sender.send(plan).await.is_err() {
                break;
            }
        }
        drop(sender);
        Ok::<_, RunError>(())
    };
    let writing = write_slices(ctx, slices, head.ops.len(), &known);
    let (planned, (written, write_ms)) = tokio::join!(planning, writing);
    merge(&mut summary, written);
    let phases = Phases {
        write: write_ms,
        ..pull.planner.phases
    };
    phases.record(&mut summary, run_started.elapsed());
    if let Err(error) = planned {
        slices_stopped(&mut summary, &error);
    }
    Ok((summary, None, run_id))
}
