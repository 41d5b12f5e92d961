//! Gathering the two views: the local one from the store (a handful of queries), the remote
//! one from DingTalk's list APIs — a breadth-first walk of `department/listsub` from the
//! root, then `v2/user/list` (100 a page) per department; never one `user/get` per user.
//! `department/get` is called only for departments a pull cannot match otherwise (it is the
//! only API that returns `source_identifier`).

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::config::TenantId;
use crate::dingtalk::{DingTalkClient, DingTalkError};
use crate::store::{Store, StoreResult};

use super::model::{entity, LocalView, RemoteDept, RemoteView, ROOT_DEPT};

/// Calls in flight at once while reading (the rate limiter still spaces them).
const READ_CONCURRENCY: usize = 8;

/// The local view of `tenant`.
pub async fn local_view(store: &Store, tenant: TenantId) -> StoreResult<LocalView> {
    let depts = store.load_departments(tenant).await?;
    let users = store.load_users(tenant).await?;
    let all_user_ids = if tenant == 0 {
        users.iter().map(|u| u.id.clone()).collect()
    } else {
        store
            .load_users(0)
            .await?
            .into_iter()
            .map(|u| u.id)
            .collect()
    };
    let links = store.links(tenant).await?;
    let by_local = |snaps: Vec<crate::store::state::Snapshot>| {
        snaps
            .into_iter()
            .map(|s| (s.local_id.clone(), s))
            .collect::<HashMap<_, _>>()
    };
    Ok(LocalView {
        tenant,
        dept_snapshots: by_local(store.snapshots(tenant, entity::DEPT).await?),
        user_snapshots: by_local(store.snapshots(tenant, entity::USER).await?),
        depts,
        users,
        all_user_ids,
        links,
    })
}

/// Every department below the root, by a breadth-first walk of `listsub`.
pub async fn remote_departments(client: &DingTalkClient) -> Result<Vec<RemoteDept>, DingTalkError> {
    let mut all = Vec::new();
    let mut level = vec![ROOT_DEPT];
    let mut seen: HashSet<i64> = HashSet::from([ROOT_DEPT]);
    while !level.is_empty() {
        let children: Vec<Vec<RemoteDept>> = stream::iter(level.iter().copied())
            .map(|parent| async move {
                let subs = client.dept_listsub(parent).await?;
                Ok::<_, DingTalkError>(
                    subs.into_iter()
                        .map(|d| RemoteDept {
                            dept_id: d.dept_id,
                            name: d.name,
                            parent_id: d.parent_id.unwrap_or(parent),
                            source_identifier: None,
                        })
                        .collect(),
                )
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        level = Vec::new();
        for dept in children.into_iter().flatten() {
            if seen.insert(dept.dept_id) {
                level.push(dept.dept_id);
                all.push(dept);
            }
        }
    }
    Ok(all)
}

/// Every user of the organisation, once, from the members of the root and of `depts`.
pub async fn remote_users(
    client: &DingTalkClient,
    depts: &[RemoteDept],
) -> Result<Vec<crate::dingtalk::types::DtUser>, DingTalkError> {
    let ids: Vec<i64> = std::iter::once(ROOT_DEPT)
        .chain(depts.iter().map(|d| d.dept_id))
        .collect();
    let pages: Vec<Vec<crate::dingtalk::types::DtUser>> = stream::iter(ids)
        .map(|id| client.user_list_all(id))
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let mut seen = HashSet::new();
    Ok(pages
        .into_iter()
        .flatten()
        .filter(|u| seen.insert(u.userid.clone()))
        .collect())
}

/// The remote view: departments, and users when `with_users`.
pub async fn remote_view(
    client: &DingTalkClient,
    with_users: bool,
) -> Result<RemoteView, DingTalkError> {
    let depts = remote_departments(client).await?;
    let users = if with_users {
        remote_users(client, &depts).await?
    } else {
        Vec::new()
    };
    Ok(RemoteView { depts, users })
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
