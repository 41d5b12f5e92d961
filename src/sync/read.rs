//! Gathering the two views: the local one from the store (a handful of queries), the remote
//! one from DingTalk's list APIs — a breadth-first walk of `department/listsub` from the
//! root and, at the same time, `v2/user/list` (100 a page) for each department as soon as
//! the walk finds it; never one `user/get` per user.
//! `department/get` is called only for departments a pull cannot match otherwise (it is the
//! only API that returns `source_identifier`).

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::config::TenantId;
use crate::dingtalk::types::DtUser;
use crate::dingtalk::{DingTalkClient, DingTalkError};
use crate::jeecg::LocalDept;
use crate::store::departments::DeptRows;
use crate::store::snapshots::Snapshot;
use crate::store::{Store, StoreResult};

use super::model::{entity, mobile_key, LocalView, RemoteDept, RemoteView, ROOT_DEPT};
use super::remote_users::{RemoteUsers, RemoteUsersBuilder};

/// Calls in flight at once while reading (the rate limiter still spaces them).
const READ_CONCURRENCY: usize = 8;

/// The department tree of `tenant` as a push judges it (no users): every department, posts
/// and deleted rows included; the snapshots the rules need (all of them with
/// `all_snapshots` — a full run, a department job —, else only those of departments without
/// a `ding_identifier`, which the snapshot alone places in DingTalk); and the departments
/// whose job DingTalk refused (dead), with the reason.
pub async fn dept_tree_view(
    store: &Store,
    tenant: TenantId,
    all_snapshots: bool,
) -> StoreResult<LocalView> {
    // Kept in memory while no one writes a department or its snapshot (`Store::dept_rows`):
    // a job costs the same in a small and a large organisation.
    let rows = store.dept_rows(tenant).await?;
    let depts = rows.depts.clone();
    let snapshots: Vec<_> = if all_snapshots {
        rows.snapshots.clone()
    } else {
        let unlinked: HashSet<&str> = depts
            .iter()
            .filter(|d| d.ding_identifier.is_none())
            .map(|d| d.id.as_str())
            .collect();
        rows.snapshots
            .iter()
            .filter(|s| unlinked.contains(s.local_id.as_str()))
            .cloned()
            .collect()
    };
    Ok(LocalView {
        tenant,
        dept_snapshots: by_local(snapshots),
        depts,
        dead_depts: dead_depts(store, tenant).await?,
        ..LocalView::default()
    })
}

/// The departments whose job DingTalk refused (dead), with the reason: only what DingTalk
/// itself refused, since the planner's own refusals are judged anew.
async fn dead_depts(store: &Store, tenant: TenantId) -> StoreResult<HashMap<String, String>> {
    Ok(store
        .dead_keys(tenant, crate::job::JobKind::Dept.as_str())
        .await?
        .into_iter()
        .filter_map(|(key, error)| {
            let error = error.unwrap_or_default();
            dingtalk_refusal(&error).then_some((key, error))
        })
        .collect())
}

/// The part of `tenant`'s department tree a job judges by ([`crate::jeecg::DeptIndex`]):
/// around the local departments `ids` and those linked to the DingTalk departments `dings`,
/// with their snapshots, the snapshots naming `dings` (a department deleted for good leaves
/// only its snapshot), and the dead department jobs. The planner judges these departments
/// exactly as it would in the whole tree, at a cost that does not grow with the tree.
pub async fn dept_view_around(
    store: &Store,
    tenant: TenantId,
    ids: &[String],
    dings: &[i64],
) -> StoreResult<LocalView> {
    let rows = store.dept_rows(tenant).await?;
    let mut view = around_rows(&rows, ids, dings);
    view.tenant = tenant;
    view.dead_depts = dead_depts(store, tenant).await?;
    Ok(view)
}

/// [`dept_view_around`] over rows in memory (the planner's tests build jobs' views with it).
pub fn around_rows(rows: &DeptRows, ids: &[String], dings: &[i64]) -> LocalView {
    let index = &rows.index;
    let named: HashSet<String> = dings.iter().map(ToString::to_string).collect();
    let snapshot_ids = rows
        .snapshots
        .iter()
        .filter(|s| named.contains(&s.ding_id))
        .filter_map(|s| index.row(&s.local_id));
    let start: Vec<usize> = ids
        .iter()
        .filter_map(|id| index.row(id))
        .chain(dings.iter().flat_map(|d| index.linked(*d).iter().copied()))
        .chain(snapshot_ids)
        .collect();
    let kept = index.around(&rows.depts, start);
    let depts: Vec<LocalDept> = kept.iter().map(|i| rows.depts[*i].clone()).collect();
    let kept_ids: HashSet<&str> = depts.iter().map(|d| d.id.as_str()).collect();
    let snapshots: Vec<Snapshot> = rows
        .snapshots
        .iter()
        .filter(|s| kept_ids.contains(s.local_id.as_str()) || named.contains(&s.ding_id))
        .cloned()
        .collect();
    LocalView {
        dept_snapshots: by_local(snapshots),
        depts,
        ..LocalView::default()
    }
}

/// Whether a dead job's error is DingTalk's answer to a call (`topapi/...: errcode N ...`),
/// not a refusal of the planner's own, which every run judges anew.
pub fn dingtalk_refusal(error: &str) -> bool {
    error.contains("topapi/") && error.contains("errcode")
}

/// The links and snapshots of the users `ids` in `tenant` (no user rows).
pub async fn users_links(store: &Store, tenant: TenantId, ids: &[&str]) -> StoreResult<LocalView> {
    let mut links = Vec::new();
    let mut snapshots = Vec::new();
    // One after the other: read at once on two connections, they made the 100k runs slower
    // on every database (the server shares the cores with the reading and the writing).
    for part in ids.chunks(IN_LIST) {
        links.extend(store.links_of(tenant, part).await?);
        snapshots.extend(store.snapshots_of(tenant, entity::USER, part).await?);
    }
    Ok(LocalView {
        tenant,
        user_snapshots: by_local(snapshots),
        links,
        ..LocalView::default()
    })
}

/// Adds to `view` the local users of `tenant` that could claim the DingTalk users `twins`
/// (linked to one by a link row or a snapshot, or holding its mobile or its username), with
/// their links and snapshots: a slice of a push, a job, or a hard delete judges identity
/// against them.
pub async fn add_claimers(
    store: &Store,
    tenant: TenantId,
    view: &mut LocalView,
    twins: &[crate::dingtalk::types::DtUser],
) -> StoreResult<()> {
    for part in twins.chunks(IN_LIST) {
        let userids: Vec<&str> = part.iter().map(|p| p.userid.as_str()).collect();
        let keys: Vec<String> = part
            .iter()
            .map(|p| mobile_key(&p.mobile).into_owned())
            .collect();
        let mut phones: Vec<&str> = part
            .iter()
            .map(|p| p.mobile.as_str())
            .chain(keys.iter().map(String::as_str))
            .filter(|m| !m.is_empty())
            .collect();
        phones.sort_unstable();
        phones.dedup();
        let claimers = store.claimer_ids(tenant, &userids, &phones).await?;
        let known: HashSet<&str> = view
            .users
            .iter()
            .chain(&view.claimers)
            .map(|u| u.id.as_str())
            .collect();
        // Only the rows the view lacks (usually none: the slice's own users claim their
        // twins): a long list of ids is one PostgreSQL reads the whole table for.
        let ids: Vec<&str> = claimers
            .iter()
            .map(String::as_str)
            .filter(|id| !known.contains(*id))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let fresh = store.users_matching(tenant, &[("id", ids)]).await?;
        let fresh_ids: Vec<&str> = fresh.iter().map(|u| u.id.as_str()).collect();
        let more = users_links(store, tenant, &fresh_ids).await?;
        view.links.extend(more.links);
        for (id, snapshot) in more.user_snapshots {
            view.user_snapshots.entry(id).or_insert(snapshot);
        }
        view.claimers.extend(fresh);
    }
    Ok(())
}

/// IN lists are bounded to this many values whatever the slice size.
const IN_LIST: usize = 500;

/// One slice of `tenant`'s users (ids after `after`, at most `limit`), with their links and
/// snapshots: what a push plans its users from, a slice at a time.
pub async fn user_slice(
    store: &Store,
    tenant: TenantId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<LocalView> {
    let users = store.user_slice(tenant, after, limit).await?;
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let mut view = users_links(store, tenant, &ids).await?;
    view.users = users;
    Ok(view)
}

/// The local users of `tenant` that the DingTalk users `people` can match (by link, phone
/// or username) or clash with (phone, email, work_no), with their links: what a pull plans
/// one slice of DingTalk users against.
pub async fn pull_candidates(
    store: &Store,
    tenant: TenantId,
    people: &[crate::dingtalk::types::DtUser],
) -> StoreResult<LocalView> {
    let userids: Vec<&str> = people.iter().map(|p| p.userid.as_str()).collect();
    let mut links = store.links_to(tenant, &userids).await?;
    let linked_snapshots = store.snapshots_to(tenant, entity::USER, &userids).await?;
    let nonempty = |get: fn(&crate::dingtalk::types::DtUser) -> &str| -> Vec<&str> {
        people.iter().map(get).filter(|v| !v.is_empty()).collect()
    };
    // Phones as DingTalk shows them and as JeecgBoot keeps them (`+86-138...` / `138...`).
    let keys: Vec<String> = people
        .iter()
        .map(|p| (mobile_key(&p.mobile), &p.mobile))
        .filter(|(key, mobile)| !key.is_empty() && key != mobile.as_str())
        .map(|(key, _)| key.into_owned())
        .collect();
    let mut phones = nonempty(|p| &p.mobile);
    phones.extend(keys.iter().map(String::as_str));
    let mut ids: Vec<&str> = links.iter().map(|l| l.user_id.as_str()).collect();
    ids.extend(linked_snapshots.iter().map(|s| s.local_id.as_str()));
    ids.sort_unstable();
    ids.dedup();
    let columns = [
        ("id", ids),
        ("phone", phones),
        ("username", userids.clone()),
        ("email", nonempty(|p| &p.email)),
        ("work_no", nonempty(|p| &p.job_number)),
    ];
    let users = store.users_matching(tenant, &columns).await?;
    let snapshots = links_and_bases(store, tenant, &users, &mut links).await?;
    Ok(LocalView {
        tenant,
        users,
        links,
        user_snapshots: by_local(snapshots),
        ..LocalView::default()
    })
}

/// The links and bases of the local `users` a pull slice may match: `links` (read by
/// DingTalk userid) completed with the links of matched users linked to another DingTalk
/// user (such a match is refused), and the snapshots of all of them.
async fn links_and_bases(
    store: &Store,
    tenant: TenantId,
    users: &[crate::jeecg::LocalUser],
    links: &mut Vec<crate::jeecg::Link>,
) -> StoreResult<Vec<Snapshot>> {
    let known: HashSet<&str> = links.iter().map(|l| l.user_id.as_str()).collect();
    let more: Vec<&str> = users
        .iter()
        .map(|u| u.id.as_str())
        .filter(|id| !known.contains(id))
        .collect();
    let mut extra = Vec::new();
    for part in more.chunks(IN_LIST) {
        extra.extend(store.links_of(tenant, part).await?);
    }
    links.extend(extra);
    let all: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let mut snapshots = Vec::new();
    for part in all.chunks(IN_LIST) {
        snapshots.extend(store.snapshots_of(tenant, entity::USER, part).await?);
    }
    Ok(snapshots)
}

fn by_local(
    snaps: Vec<crate::store::snapshots::Snapshot>,
) -> HashMap<String, crate::store::snapshots::Snapshot> {
    snaps.into_iter().map(|s| (s.local_id.clone(), s)).collect()
}

/// The departments DingTalk lists directly under `parent` (`listsub`).
async fn children_of(
    client: &DingTalkClient,
    parent: i64,
) -> Result<Vec<RemoteDept>, DingTalkError> {
    let subs = client.dept_listsub(parent).await?;
    Ok(subs
        .into_iter()
        .map(|d| RemoteDept {
            dept_id: d.dept_id,
            name: d.name,
            parent_id: d.parent_id.unwrap_or(parent),
            source_identifier: None,
        })
        .collect())
}

/// Every department below the root, by a breadth-first walk of `listsub`; each one found is
/// also sent to `found` (when given), so that its members can be listed meanwhile, and each
/// answer's new departments to `levels` (when given) as a level, then an empty level once
/// the walk is complete.
async fn remote_departments(
    client: &DingTalkClient,
    found: Option<&tokio::sync::mpsc::UnboundedSender<i64>>,
    levels: Option<tokio::sync::mpsc::UnboundedSender<Vec<RemoteDept>>>,
) -> Result<Vec<RemoteDept>, DingTalkError> {
    // A queue, not level by level: each department's children are listed as soon as it is
    // found, READ_CONCURRENCY at a time, answers taken in the order asked (so the walk's
    // order does not depend on timing). A department's children always come after it.
    let mut all = Vec::new();
    let mut queue = std::collections::VecDeque::from([ROOT_DEPT]);
    let mut seen: HashSet<i64> = HashSet::from([ROOT_DEPT]);
    let mut running = futures_util::stream::FuturesOrdered::new();
    loop {
        while running.len() < READ_CONCURRENCY {
            let Some(parent) = queue.pop_front() else {
                break;
            };
            running.push_back(children_of(client, parent));
        }
        let Some(children) = running.next().await else {
            break;
        };
        let start = all.len();
        for dept in children? {
            if seen.insert(dept.dept_id) {
                if let Some(found) = found {
                    // The receiver is gone only when listing members failed; the walk's
                    // own result is then dropped too.
                    let _ = found.send(dept.dept_id);
                }
                queue.push_back(dept.dept_id);
                all.push(dept);
            }
        }
        if let Some(levels) = &levels {
            if all.len() > start {
                let _ = levels.send(all[start..].to_vec());
            }
        }
    }
    if let Some(levels) = &levels {
        // An empty level: the walk is complete (a failed walk ends without it).
        let _ = levels.send(Vec::new());
    }
    Ok(all)
}

/// Every user of the organisation, once: the members of each department id that arrives
/// on `ids`, packed as each department's pages arrive (never all pages at once).
async fn remote_users(
    client: &DingTalkClient,
    ids: tokio::sync::mpsc::UnboundedReceiver<i64>,
) -> Result<RemoteUsers, DingTalkError> {
    let ids = stream::unfold(ids, |mut ids| async move {
        ids.recv().await.map(|id| (id, ids))
    });
    let mut builder = RemoteUsersBuilder::default();
    let pages = ids
        .map(|id| client.user_list_all(id))
        .buffered(READ_CONCURRENCY);
    let mut pages = std::pin::pin!(pages);
    while let Some(members) = pages.try_next().await? {
        for user in members {
            builder.push(user);
        }
    }
    Ok(builder.finish())
}

/// The userids met so far, as 128 bits of two keyed hashes each: a set of 100,000 userid
/// `String`s held 6.5 MiB, this 2.2 MiB (the chance that any two of 100,000 userids meet is
/// about 10^-29).
#[derive(Default)]
struct Seen {
    keys: (std::hash::RandomState, std::hash::RandomState),
    set: HashSet<u128>,
}

impl Seen {
    /// Whether `userid` is met for the first time.
    fn first(&mut self, userid: &str) -> bool {
        use std::hash::BuildHasher;
        let high = u128::from(self.keys.0.hash_one(userid)) << 64;
        self.set
            .insert(high | u128::from(self.keys.1.hash_one(userid)))
    }
}

/// The members of each department id that arrives on `ids`, each user once: a department's
/// users not seen before are sent down `fresh` as its pages arrive. While `fresh` is full no
/// new department is started (users wait in DingTalk, not in memory), but the pages already
/// asked for are still driven to their end: a call left half-way could hold the token lock
/// or the rate limiter's turn that every other call waits for. Ends early, without error,
/// when the receiver is gone (the pull stopped).
async fn send_users(
    client: &DingTalkClient,
    mut ids: tokio::sync::mpsc::UnboundedReceiver<i64>,
    fresh: tokio::sync::mpsc::Sender<Vec<DtUser>>,
) -> Result<(), DingTalkError> {
    let mut running = futures_util::stream::FuturesOrdered::new();
    let mut backlog: std::collections::VecDeque<Vec<DtUser>> = std::collections::VecDeque::new();
    let mut seen = Seen::default();
    let mut ids_open = true;
    while ids_open || !running.is_empty() || !backlog.is_empty() {
        tokio::select! {
            id = ids.recv(), if ids_open && backlog.is_empty() && running.len() < READ_CONCURRENCY => match id {
                Some(id) => running.push_back(client.user_list_all(id)),
                None => ids_open = false,
            },
            Some(members) = running.next(), if !running.is_empty() => {
                let new: Vec<DtUser> = members?
                    .into_iter()
                    .filter(|u| seen.first(&u.userid))
                    .collect();
                if !new.is_empty() {
                    backlog.push_back(new);
                }
            },
            permit = fresh.reserve(), if !backlog.is_empty() => match permit {
                Ok(permit) => permit.send(backlog.pop_front().unwrap_or_default()),
                Err(_) => return Ok(()),
            },
        }
    }
    Ok(())
}

/// The remote view: departments, and users when `with_users`. The walk (`listsub`) and the
/// member pages (`v2/user/list`) are two paths with their own limits, so they run at once:
/// a department's members are listed as soon as the walk finds it.
pub async fn remote_view(
    client: &DingTalkClient,
    with_users: bool,
) -> Result<RemoteView, DingTalkError> {
    if !with_users {
        return Ok(RemoteView {
            depts: remote_departments(client, None, None).await?,
            ..RemoteView::default()
        });
    }
    remote_view_by_levels(client, None, None).await
}

/// Every department below the root (no users), each department's children also sent down
/// `levels` as soon as they are listed, and an empty level when the walk is complete.
pub async fn departments_by_levels(
    client: &DingTalkClient,
    levels: tokio::sync::mpsc::UnboundedSender<Vec<RemoteDept>>,
) -> Result<Vec<RemoteDept>, DingTalkError> {
    remote_departments(client, None, Some(levels)).await
}

/// [`remote_view`] with users, sending each department's children down `levels` as soon as
/// they are listed (a parent always comes before its children), so that a pull can place
/// departments while the rest of DingTalk is still being read; with `users`, each
/// department's users not seen before go down `users` as its pages arrive (the view's
/// `users` then stay empty).
pub async fn remote_view_by_levels(
    client: &DingTalkClient,
    levels: Option<tokio::sync::mpsc::UnboundedSender<Vec<RemoteDept>>>,
    users: Option<tokio::sync::mpsc::Sender<Vec<DtUser>>>,
) -> Result<RemoteView, DingTalkError> {
    let (found, ids) = tokio::sync::mpsc::unbounded_channel();
    // The root's own members first.
    let _ = found.send(ROOT_DEPT);
    let walk = async move { remote_departments(client, Some(&found), levels).await };
    let (depts, users) = match users {
        None => tokio::try_join!(walk, remote_users(client, ids))?,
        Some(fresh) => {
            let (depts, ()) = tokio::try_join!(walk, send_users(client, ids, fresh))?;
            (depts, RemoteUsers::default())
        }
    };
    Ok(RemoteView {
        depts,
        users,
        ..RemoteView::default()
    })
}

/// Fills `source_identifier` of each of `depts` (`department/get`).
pub async fn fetch_sources_of(
    client: &DingTalkClient,
    depts: &mut [RemoteDept],
) -> Result<(), DingTalkError> {
    let ids: Vec<i64> = depts.iter().map(|d| d.dept_id).collect();
    let found: Vec<Option<String>> = stream::iter(ids)
        .map(|id| async move {
            client
                .dept_get(id)
                .await
                .map(|d| d.source_identifier.filter(|s| !s.is_empty()))
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    for (dept, source) in depts.iter_mut().zip(found) {
        dept.source_identifier = source;
    }
    Ok(())
}

/// Fills `source_identifier` of the departments no local `ding_identifier` points at.
pub async fn fetch_sources(
    client: &DingTalkClient,
    remote: &mut RemoteView,
    known: &HashSet<i64>,
) -> Result<(), DingTalkError> {
    let unknown: Vec<i64> = remote
        .depts
        .iter()
        .map(|d| d.dept_id)
        .filter(|id| !known.contains(id))
        .collect();
    let found: Vec<(i64, Option<String>)> = stream::iter(unknown)
        .map(|id| async move {
            client
                .dept_get(id)
                .await
                .map(|d| (id, d.source_identifier.filter(|s| !s.is_empty())))
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let found: HashMap<i64, Option<String>> = found.into_iter().collect();
    for dept in &mut remote.depts {
        if let Some(source) = found.get(&dept.dept_id) {
            dept.source_identifier.clone_from(source);
        }
    }
    Ok(())
}
