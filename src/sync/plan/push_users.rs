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
    content_hash, entity, DeptRef, LocalView, Op, RemoteView, UserFields, ROOT_DEPT,
};

/// What the user plan gives the rest of the push plan.
pub(super) struct UserPlan {
    /// The operations.
    pub ops: Vec<Op>,
    /// userid -> the departments it will have after this plan (for member moves).
    pub final_depts: HashMap<String, Vec<DeptRef>>,
}

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

pub(super) fn plan(
    local: &LocalView,
    remote: &RemoteView,
    map: &HashMap<String, DeptRef>,
    config: &PushConfig,
) -> UserPlan {
    let by_userid: HashMap<&str, &DtUser> = remote
        .users
        .iter()
        .map(|u| (u.userid.as_str(), u))
        .collect();
    let by_mobile: HashMap<&str, &DtUser> = remote
        .users
        .iter()
        .filter(|u| !u.mobile.is_empty())
        .map(|u| (u.mobile.as_str(), u))
        .collect();
    let links: HashMap<&str, &str> = local
        .links
        .iter()
        .map(|l| (l.user_id.as_str(), l.userid.as_str()))
        .collect();
    let mut claimed: HashMap<String, String> = HashMap::new();
    let mut ops = Vec::new();
    let mut final_depts = HashMap::new();
    for user in local.users.iter().filter(|u| !u.is_deleted()) {
        let depts = desired_depts(user, map);
        let hash = user_hash(user, map);
        let linked = links.get(user.id.as_str()).copied();
        let matched = linked
            .and_then(|id| by_userid.get(id))
            .or_else(|| user.phone.as_deref().and_then(|p| by_mobile.get(p)))
            .or_else(|| by_userid.get(user.username.as_str()))
            .copied();
        let Some(found) = matched else {
            match user.phone.as_deref().filter(|p| !p.is_empty()) {
                None => ops.push(fail(
                    &user.username,
                    "no phone: DingTalk needs a mobile to create a user".into(),
                )),
                Some(_) if user.username.is_empty() => {
                    ops.push(fail(&user.id, "no username to use as userid".into()))
                }
                Some(_) if claimed.contains_key(&user.username) => ops.push(fail(
                    &user.username,
                    format!(
                        "userid {} is already taken by local user {}",
                        user.username, claimed[&user.username]
                    ),
                )),
                Some(phone) => {
                    claimed.insert(user.username.clone(), user.username.clone());
                    final_depts.insert(user.username.clone(), depts.clone());
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
        if let Some(other) = claimed.get(&found.userid) {
            ops.push(fail(
                &user.username,
                format!(
                    "DingTalk user {} is already matched to local user {other}",
                    found.userid
                ),
            ));
            continue;
        }
        claimed.insert(found.userid.clone(), user.username.clone());
        let fields = changes(user, found, &depts);
        final_depts.insert(
            found.userid.clone(),
            fields.depts.clone().unwrap_or_else(|| {
                found
                    .dept_id_list
                    .iter()
                    .map(|d| DeptRef::Ding(*d))
                    .collect()
            }),
        );
        if let Some(phone) = user.phone.as_deref() {
            if !found.mobile.is_empty() && phone != found.mobile {
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
    if config.delete_users_on_hard_delete {
        let existing: HashSet<&str> = local.all_user_ids.iter().map(String::as_str).collect();
        let mut gone: Vec<(&str, &str)> = local
            .user_snapshots
            .values()
            .map(|s| (s.local_id.as_str(), s.ding_id.as_str()))
            .chain(
                local
                    .links
                    .iter()
                    .map(|l| (l.user_id.as_str(), l.userid.as_str())),
            )
            .filter(|(local_id, userid)| {
                !existing.contains(local_id) && by_userid.contains_key(userid)
            })
            .collect();
        gone.sort_unstable();
        gone.dedup_by_key(|(_, userid)| *userid);
        for (local_id, userid) in gone {
            if !claimed.contains_key(userid) {
                ops.push(Op::DeleteUser {
                    local_id: local_id.to_string(),
                    userid: userid.to_string(),
                });
            }
        }
    }
    UserPlan { ops, final_depts }
}
