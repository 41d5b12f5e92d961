//! Rule 1, users local -> DingTalk: matched by link row, then mobile, then userid ==
//! username (JeecgBoot's order); updated with only the fields that differ, or created with
//! userid = username. Logically deleted users are not pushed; frozen and resigned ones are.
//! A user deleted locally for good is deleted in DingTalk (`push.delete_users_on_hard_delete`).
//! DingTalk users the local side lacks are left alone.

use std::collections::{HashMap, HashSet};

use crate::config::PushConfig;
use crate::dingtalk::types::DtUser;
use crate::jeecg::LocalUser;

use super::super::model::{
    content_hash, entity, same_mobile, DeptRef, LocalView, Op, RemoteView, UserFields, ROOT_DEPT,
};

/// The snapshot hash of a pushed user: its pushed fields and the local departments that
/// map (local ids, so the hash does not change when a department is first created).
pub fn user_hash(user: &LocalUser, map: &HashMap<String, DeptRef>) -> String {
    let mut depts: Vec<&str> = user
        .depart_ids
        .iter()
        .filter(|id| map.contains_key(*id))
        .map(String::as_str)
        .collect();
    depts.sort_unstable();
    depts.dedup();
    content_hash(&[
        &user.username,
        &user.realname,
        user.phone.as_deref().unwrap_or_default(),
        user.telephone.as_deref().unwrap_or_default(),
        user.work_no.as_deref().unwrap_or_default(),
        user.email.as_deref().unwrap_or_default(),
        &user.positions.join(","),
        &depts.join(","),
    ])
}

/// The departments a user is pushed with: memberships that map, root 1 when none does.
fn desired_depts(user: &LocalUser, map: &HashMap<String, DeptRef>) -> Vec<DeptRef> {
    let mut depts: Vec<DeptRef> = Vec::new();
    for id in &user.depart_ids {
        if let Some(dept) = map.get(id) {
            if !depts.contains(dept) {
                depts.push(dept.clone());
            }
        }
    }
    if depts.is_empty() {
        depts.push(DeptRef::Ding(ROOT_DEPT));
    }
    depts
}

fn differs(local: Option<&str>, remote: &str) -> Option<String> {
    local
        .filter(|l| !l.is_empty() && *l != remote)
        .map(str::to_string)
}

fn changes(user: &LocalUser, remote: &DtUser, depts: &[DeptRef]) -> UserFields {
    let title = (!user.positions.is_empty()).then(|| user.positions.join(","));
    let same_depts = depts
        .iter()
        .all(|d| matches!(d, DeptRef::Ding(id) if remote.dept_id_list.contains(id)))
        && remote
            .dept_id_list
            .iter()
            .all(|id| depts.contains(&DeptRef::Ding(*id)));
    UserFields {
        name: differs(Some(&user.realname), &remote.name),
        telephone: differs(user.telephone.as_deref(), &remote.telephone),
        job_number: differs(user.work_no.as_deref(), &remote.job_number),
        title: differs(title.as_deref(), &remote.title),
        email: differs(user.email.as_deref(), &remote.email),
        depts: (!same_depts).then(|| depts.to_vec()),
    }
}

fn full_fields(user: &LocalUser, depts: &[DeptRef]) -> UserFields {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    UserFields {
        name: Some(user.realname.clone()),
        telephone: nonempty(&user.telephone),
        job_number: nonempty(&user.work_no),
        title: (!user.positions.is_empty()).then(|| user.positions.join(",")),
        email: nonempty(&user.email),
        depts: Some(depts.to_vec()),
    }
}

fn fail(key: &str, reason: String) -> Op {
    Op::Fail {
        entity: entity::USER.into(),
        key: key.into(),
        reason,
    }
}

/// What the user plan keeps from one slice of users to the next, and gives the rest of the
/// push plan.
#[derive(Default)]
pub(super) struct Claims {
    /// Whether a local user has matched each DingTalk user, by its position in
    /// `remote.users` (one byte a user: a 100,000-user re-push claims them all).
    matched: Vec<bool>,
    /// The last local id planned (a user repeated by the tenant join is planned once).
    last: Option<String>,
    /// DingTalk departments about to be deleted (only users in them need `final_depts`).
    pub doomed: HashSet<i64>,
    /// userid -> the departments it will have after this plan, for users now in a doomed
    /// department (for member moves).
    pub final_depts: HashMap<String, Vec<DeptRef>>,
}

/// Plans `local.users` (a slice of the tenant's users, or all of them) against DingTalk.
/// Hard deletes are planned apart, by [`hard_deletes`].
pub(super) fn plan_slice(
    local: &LocalView,
    remote: &RemoteView,
    map: &HashMap<String, DeptRef>,
    claims: &mut Claims,
) -> Vec<Op> {
    let links: HashMap<&str, &str> = local
        .links
        .iter()
        .map(|l| (l.user_id.as_str(), l.userid.as_str()))
        .collect();
    let mut ops = Vec::new();
    for user in local.users.iter().filter(|u| !u.is_deleted()) {
        if claims.last.as_deref() == Some(user.id.as_str()) {
            continue;
        }
        claims.last = Some(user.id.clone());
        let depts = desired_depts(user, map);
        let hash = user_hash(user, map);
        let linked = links.get(user.id.as_str()).copied();
        let matched = linked
            .and_then(|id| remote.users.get(id))
            .or_else(|| {
                user.phone
                    .as_deref()
                    .and_then(|p| remote.users.by_mobile(p))
            })
            .or_else(|| remote.users.get(&user.username));
        let Some(found) = matched else {
            match user.phone.as_deref().filter(|p| !p.is_empty()) {
                None => ops.push(fail(
                    &user.username,
                    "no phone: DingTalk needs a mobile to create a user".into(),
                )),
                Some(_) if user.username.is_empty() => {
                    ops.push(fail(&user.id, "no username to use as userid".into()))
                }
                // userid = username: `sys_user.username` is unique, so no two creates
                // of a run share a userid.
                Some(phone) => {
                    ops.push(Op::CreateUser {
                        local_id: user.id.clone(),
                        userid: user.username.clone(),
                        mobile: phone.to_string(),
                        fields: full_fields(user, &depts),
                        hash,
                    });
                }
            }
            continue;
        };
        let position = remote.users.position(&found.userid).unwrap_or(usize::MAX);
        if claims.matched.len() < remote.users.len() {
            claims.matched.resize(remote.users.len(), false);
        }
        match claims.matched.get_mut(position) {
            Some(taken) if *taken => {
                ops.push(fail(
                    &user.username,
                    format!(
                        "DingTalk user {} is already matched to another local user (by its link, phone or username)",
                        found.userid
                    ),
                ));
                continue;
            }
            Some(taken) => *taken = true,
            None => {}
        }
        let fields = changes(user, &found, &depts);
        if found.dept_id_list.iter().any(|d| claims.doomed.contains(d)) {
            claims.final_depts.insert(
                found.userid.clone(),
                fields.depts.clone().unwrap_or_else(|| {
                    found
                        .dept_id_list
                        .iter()
                        .map(|d| DeptRef::Ding(*d))
                        .collect()
                }),
            );
        }
        if let Some(phone) = user.phone.as_deref() {
            if !found.mobile.is_empty() && !same_mobile(phone, &found.mobile) {
                ops.push(Op::Warn {
                    entity: entity::USER.into(),
                    key: user.username.clone(),
                    reason: format!("local phone differs from DingTalk's mobile of {}; DingTalk cannot change a mobile (delete and re-add the user there)", found.userid),
                });
            }
        }
        let updating = !fields.is_empty();
        if updating {
            ops.push(Op::UpdateUser {
                local_id: user.id.clone(),
                userid: found.userid.clone(),
                fields,
                hash: hash.clone(),
            });
        }
        // The link row and snapshot follow every update, and are refreshed when stale.
        let stale = linked != Some(found.userid.as_str())
            || local
                .user_snapshots
                .get(&user.id)
                .is_none_or(|s| s.content_hash != hash);
        if updating || stale {
            ops.push(Op::LinkUser {
                local_id: user.id.clone(),
                userid: found.userid.clone(),
                unionid: Some(found.unionid.clone()).filter(|u| !u.is_empty()),
                realname: user.realname.clone(),
                hash,
            });
        }
    }
    ops
}

/// Deletes of DingTalk users whose local row is gone for good: `gone` holds the
/// `(sys_user.id, userid)` of links and snapshots without a `sys_user` row. Users that a
/// remaining local user has claimed, or that DingTalk no longer has, are left alone.
pub(super) fn hard_deletes(
    mut gone: Vec<(String, String)>,
    remote: &RemoteView,
    claims: &Claims,
) -> Vec<Op> {
    gone.retain(|(_, userid)| remote.users.contains(userid));
    gone.sort_unstable();
    gone.dedup_by(|a, b| a.1 == b.1);
    gone.into_iter()
        .filter(|(_, userid)| {
            remote
                .users
                .position(userid)
                .is_none_or(|p| !claims.matched.get(p).copied().unwrap_or(false))
        })
        .map(|(local_id, userid)| Op::DeleteUser { local_id, userid })
        .collect()
}

/// The `(sys_user.id, userid)` of `local`'s links and snapshots whose user row is gone.
pub(super) fn gone_users(local: &LocalView) -> Vec<(String, String)> {
    let existing: HashSet<&str> = local.all_user_ids.iter().map(String::as_str).collect();
    local
        .user_snapshots
        .values()
        .map(|s| (s.local_id.as_str(), s.ding_id.as_str()))
        .chain(
            local
                .links
                .iter()
                .map(|l| (l.user_id.as_str(), l.userid.as_str())),
        )
        .filter(|(local_id, _)| !existing.contains(local_id))
        .map(|(l, u)| (l.to_string(), u.to_string()))
        .collect()
}

/// Plans every user of `local` (a job's one user, or a whole view in tests and dry runs).
pub(super) fn plan(
    local: &LocalView,
    remote: &RemoteView,
    map: &HashMap<String, DeptRef>,
    config: &PushConfig,
    claims: &mut Claims,
) -> Vec<Op> {
    let mut ops = plan_slice(local, remote, map, claims);
    if config.delete_users_on_hard_delete {
        ops.extend(hard_deletes(gone_users(local), remote, claims));
    }
    ops
}
