//! What a job reads of DingTalk around its entity: a user's twin (by its links, its mobile,
//! its username — the first that exists, as a full run picks it), a department's twin, the
//! siblings it may adopt, and the subtree a deleted department takes with it. Read through
//! [`Source`], so that the planner's tests build a job's view exactly as a job does, from an
//! organisation held in memory.

use std::future::Future;

use crate::dingtalk::types::DtUser;
use crate::dingtalk::{DingTalkClient, DingTalkError, ErrorKind};

use super::model::{LocalView, RemoteDept, RemoteView, ROOT_DEPT};
use super::remote_users::RemoteUsersBuilder;

/// Where a job reads DingTalk: the client, or in tests an organisation in memory.
pub(crate) trait Source {
    /// A department, if DingTalk has it.
    fn dept(&self, id: i64) -> impl Future<Output = Result<Option<RemoteDept>, DingTalkError>>;
    /// The departments directly under `parent`.
    fn children(&self, parent: i64)
        -> impl Future<Output = Result<Vec<RemoteDept>, DingTalkError>>;
    /// The direct members of a department.
    fn members(&self, dept: i64) -> impl Future<Output = Result<Vec<DtUser>, DingTalkError>>;
    /// A user, if DingTalk has it.
    fn user(&self, userid: &str) -> impl Future<Output = Result<Option<DtUser>, DingTalkError>>;
    /// The userid of the user with this mobile, if any.
    fn userid_by_mobile(
        &self,
        mobile: &str,
    ) -> impl Future<Output = Result<Option<String>, DingTalkError>>;
}

impl Source for DingTalkClient {
    async fn dept(&self, id: i64) -> Result<Option<RemoteDept>, DingTalkError> {
        match self.dept_get(id).await {
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

    async fn children(&self, parent: i64) -> Result<Vec<RemoteDept>, DingTalkError> {
        Ok(self
            .dept_listsub(parent)
            .await?
            .into_iter()
            .map(|d| RemoteDept {
                dept_id: d.dept_id,
                name: d.name,
                parent_id: d.parent_id.unwrap_or(parent),
                source_identifier: None,
            })
            .collect())
    }

    async fn members(&self, dept: i64) -> Result<Vec<DtUser>, DingTalkError> {
        self.user_list_all(dept).await
    }

    async fn user(&self, userid: &str) -> Result<Option<DtUser>, DingTalkError> {
        match self.user_get(userid).await {
            Ok(user) => Ok(Some(user)),
            Err(error) if error.kind == ErrorKind::UserNotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn userid_by_mobile(&self, mobile: &str) -> Result<Option<String>, DingTalkError> {
        self.user_by_mobile(mobile).await
    }
}

/// The DingTalk user a local user can match, in JeecgBoot's order (its links, its mobile,
/// its username): the first that exists, as a full run would pick it.
pub(crate) async fn user_twin(
    source: &impl Source,
    links: &[String],
    phone: Option<&str>,
    username: &str,
) -> Result<Option<DtUser>, DingTalkError> {
    for userid in links {
        if let Some(found) = source.user(userid).await? {
            return Ok(Some(found));
        }
    }
    if let Some(phone) = phone.filter(|p| !p.is_empty()) {
        if let Some(userid) = source.userid_by_mobile(phone).await? {
            if let Some(found) = source.user(&userid).await? {
                return Ok(Some(found));
            }
        }
    }
    if username.is_empty() {
        return Ok(None);
    }
    source.user(username).await
}

/// The DingTalk users `userids` that DingTalk still has.
pub(crate) async fn users(
    source: &impl Source,
    userids: &[String],
) -> Result<Vec<DtUser>, DingTalkError> {
    let mut found = Vec::new();
    for userid in userids {
        found.extend(source.user(userid).await?);
    }
    Ok(found)
}

/// The DingTalk id of the department a pushed department hangs under (root 1 at the top),
/// when the local side knows it.
pub(crate) fn parent_ding_id(local: &LocalView, key: &str) -> Option<i64> {
    let placement = super::plan::dept_placement(&local.depts);
    match placement.get(key).cloned().flatten() {
        None => Some(ROOT_DEPT),
        Some(parent) => {
            let row = local.depts.iter().find(|d| d.id == parent)?;
            row.ding_identifier.or_else(|| {
                local
                    .dept_snapshots
                    .get(&parent)
                    .and_then(|s| s.ding_id.parse().ok())
            })
        }
    }
}

/// What a department job reads: its twin (by `ding_identifier` or snapshot; recorded as
/// absent when DingTalk lacks it); for a department still pushed without a twin, the
/// siblings it may adopt; for one gone locally, its twin's subtree with the members.
pub(crate) async fn dept_view(
    source: &impl Source,
    local: &LocalView,
    key: &str,
    pushed: bool,
) -> Result<RemoteView, DingTalkError> {
    let row = local.depts.iter().find(|d| d.id == key);
    let twin_id = row.and_then(|d| d.ding_identifier).or_else(|| {
        local
            .dept_snapshots
            .get(key)
            .and_then(|s| s.ding_id.parse().ok())
    });
    let mut view = RemoteView::partial();
    let twin = match twin_id {
        Some(id) => source.dept(id).await?,
        None => None,
    };
    match (twin_id, twin) {
        (_, Some(twin)) if !pushed => return subtree(source, twin).await,
        (_, Some(twin)) => view.depts.push(twin),
        (Some(id), None) => {
            view.absent.insert(id);
        }
        (None, None) => {}
    }
    if pushed && view.depts.is_empty() {
        if let Some(parent) = parent_ding_id(local, key) {
            view.depts.extend(source.children(parent).await?);
        }
    }
    Ok(view)
}

/// A DingTalk department and every department under it, with their members.
async fn subtree(source: &impl Source, top: RemoteDept) -> Result<RemoteView, DingTalkError> {
    let mut depts = vec![top];
    let mut index = 0;
    while let Some(parent) = depts.get(index).map(|d| d.dept_id) {
        depts.extend(source.children(parent).await?);
        index += 1;
    }
    let mut builder = RemoteUsersBuilder::default();
    for dept in &depts {
        for user in source.members(dept.dept_id).await? {
            builder.push(user);
        }
    }
    Ok(RemoteView {
        depts,
        users: builder.finish(),
        ..RemoteView::partial()
    })
}

/// What a pull job reads of DingTalk's departments: `ids`, and the parents of each up to
/// one a live local department links (`linked`) or the root, so that the pull planner can
/// place a department it creates; ids DingTalk lacks are recorded as absent.
pub(crate) async fn dept_chain(
    source: &impl Source,
    linked: impl Fn(i64) -> bool,
    ids: &[i64],
) -> Result<RemoteView, DingTalkError> {
    let mut view = RemoteView::partial();
    let mut seen = std::collections::HashSet::new();
    let mut queue: Vec<i64> = ids.to_vec();
    while let Some(id) = queue.pop() {
        if id == ROOT_DEPT || !seen.insert(id) {
            continue;
        }
        match source.dept(id).await? {
            Some(dept) => {
                if dept.parent_id != ROOT_DEPT && !linked(dept.parent_id) {
                    queue.push(dept.parent_id);
                }
                view.depts.push(dept);
            }
            None => {
                view.absent.insert(id);
            }
        }
    }
    Ok(view)
}
