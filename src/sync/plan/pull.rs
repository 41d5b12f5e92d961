//! Rules 2 and 4, DingTalk -> local. Departments: matched on `ding_identifier == dept_id`
//! or `source_identifier == id`; missing ones are created (unique org_code, `ding_identifier`
//! set, the new id written back to DingTalk as `source_identifier`), changed ones updated;
//! never deleted locally. Users: matched by link, then phone, then username == userid; the
//! fields JeecgBoot updates are updated, memberships added; missing users are inserted
//! (username = userid, `pull.new_user_password`); passwords are never touched. Local rows
//! DingTalk lacks are left alone.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::dingtalk::types::DtUser;
use crate::jeecg::{LocalDept, LocalUser};

use super::super::model::{
    entity, mobile_key, same_mobile, LocalRef, LocalUserFields, LocalView, Op, RemoteDept,
    RemoteView, Scope, ROOT_DEPT,
};
use super::Plan;

fn depth(by_id: &HashMap<i64, &RemoteDept>, dept: &RemoteDept) -> usize {
    let mut depth = 0;
    let mut parent = dept.parent_id;
    while parent != ROOT_DEPT && depth <= by_id.len() {
        depth += 1;
        parent = by_id.get(&parent).map_or(ROOT_DEPT, |p| p.parent_id);
    }
    depth
}

/// Plans a pull of `scope` for one tenant.
pub fn plan_pull(local: &LocalView, remote: &RemoteView, scope: Scope) -> Plan {
    let (dept_ops, map) = departments(local, remote);
    let mut plan = Plan::default();
    if scope.departments() {
        plan.ops.extend(dept_ops);
        plan.considered += remote.depts.len();
    }
    if scope.users() {
        let map = if scope.departments() {
            map
        } else {
            map.into_iter()
                .filter(|(_, r)| !matches!(r, LocalRef::Created(_)))
                .collect()
        };
        plan.ops.extend(users(local, remote, &map));
        plan.considered += remote.users.len();
    }
    plan
}

fn departments(local: &LocalView, remote: &RemoteView) -> (Vec<Op>, HashMap<i64, LocalRef>) {
    let by_id: HashMap<i64, &RemoteDept> = remote.depts.iter().map(|d| (d.dept_id, d)).collect();
    let remote_ids: HashSet<i64> = by_id.keys().copied().collect();
    let locals: Vec<&LocalDept> = local
        .depts
        .iter()
        .filter(|d| !d.is_post() && !d.is_deleted())
        .collect();
    let by_ding: HashMap<i64, &LocalDept> = locals
        .iter()
        .filter_map(|d| Some((d.ding_identifier?, *d)))
        .collect();
    let by_local: HashMap<&str, &LocalDept> = locals.iter().map(|d| (d.id.as_str(), *d)).collect();
    let placement = super::dept_placement(&local.depts);
    let mut ordered: Vec<&RemoteDept> = remote.depts.iter().collect();
    ordered.sort_by_key(|d| (depth(&by_id, d), d.dept_id));
    let mut map: HashMap<i64, LocalRef> = HashMap::new();
    let mut taken: HashSet<&str> = HashSet::new();
    let mut ops = Vec::new();
    for dept in ordered {
        let parent = if dept.parent_id == ROOT_DEPT {
            LocalRef::Top
        } else {
            match map.get(&dept.parent_id) {
                Some(parent) => parent.clone(),
                None => continue, // outside the walked tree
            }
        };
        let by_source = dept
            .source_identifier
            .as_deref()
            .and_then(|s| by_local.get(s))
            .filter(|l| l.ding_identifier.is_none_or(|d| !remote_ids.contains(&d)));
        let matched = by_ding
            .get(&dept.dept_id)
            .or(by_source)
            .copied()
            .filter(|l| !taken.contains(l.id.as_str()));
        match matched {
            Some(found) => {
                taken.insert(found.id.as_str());
                map.insert(dept.dept_id, LocalRef::Local(found.id.clone()));
                let current_parent = match placement.get(&found.id).cloned().flatten() {
                    Some(id) => LocalRef::Local(id),
                    None => LocalRef::Top,
                };
                if found.name != dept.name
                    || current_parent != parent
                    || found.ding_identifier != Some(dept.dept_id)
                {
                    ops.push(Op::UpdateLocalDept {
                        local_id: found.id.clone(),
                        dept_id: dept.dept_id,
                        name: dept.name.clone(),
                        parent,
                        parent_dept_id: dept.parent_id,
                        order: found.order,
                    });
                }
            }
            None => {
                map.insert(dept.dept_id, LocalRef::Created(dept.dept_id));
                ops.push(Op::CreateLocalDept {
                    dept_id: dept.dept_id,
                    name: dept.name.clone(),
                    parent,
                    parent_dept_id: dept.parent_id,
                });
            }
        }
    }
    (ops, map)
}

fn fail(key: &str, reason: String) -> Op {
    Op::Fail {
        entity: entity::USER.into(),
        key: key.into(),
        reason,
    }
}

fn changed(remote: &str, local: Option<&str>) -> Option<String> {
    (!remote.is_empty() && Some(remote) != local).then(|| remote.to_string())
}

/// Another local user (not `except`) already holding `value` in a unique column.
fn holder<'a>(
    users: &'a [LocalUser],
    except: Option<&str>,
    value: Option<&str>,
    get: fn(&LocalUser) -> Option<&str>,
) -> Option<&'a LocalUser> {
    let value = value?;
    users
        .iter()
        .find(|u| Some(u.id.as_str()) != except && get(u) == Some(value))
}

/// Reads one unique column of a local user.
type Column = fn(&LocalUser) -> Option<&str>;

fn clash(users: &[LocalUser], except: Option<&str>, fields: &LocalUserFields) -> Option<String> {
    let checks: [(&str, Option<&str>, Column); 3] = [
        ("phone", fields.phone.as_deref(), |u| u.phone.as_deref()),
        ("email", fields.email.as_deref(), |u| u.email.as_deref()),
        ("work_no", fields.work_no.as_deref(), |u| {
            u.work_no.as_deref()
        }),
    ];
    checks.into_iter().find_map(|(column, value, get)| {
        holder(users, except, value, get).map(|other| {
            format!(
                "sys_user.{column} {:?} already belongs to local user {}",
                value.unwrap_or_default(),
                other.username
            )
        })
    })
}

fn users(local: &LocalView, remote: &RemoteView, map: &HashMap<i64, LocalRef>) -> Vec<Op> {
    users_slice(
        local,
        &remote.users.iter().collect::<Vec<_>>(),
        map,
        &mut HashMap::new(),
    )
}

/// The department part of a pull that plans its users slice by slice: the department
/// operations, and every walked DingTalk department -> its local department (existing, or
/// [`LocalRef::Created`] when the operations create it).
pub fn pull_departments(
    local: &LocalView,
    remote: &RemoteView,
) -> (Vec<Op>, HashMap<i64, LocalRef>) {
    departments(local, remote)
}

/// Plans the DingTalk users `people` (one slice of them, or all) against `local`, which
/// holds every local user any of them could match or clash with, and their links.
/// `claimed` (local id -> DingTalk userid) carries matches from one slice to the next.
pub fn users_slice(
    local: &LocalView,
    people: &[DtUser],
    map: &HashMap<i64, LocalRef>,
    claimed: &mut HashMap<String, String>,
) -> Vec<Op> {
    let by_id: HashMap<&str, &LocalUser> = local.users.iter().map(|u| (u.id.as_str(), u)).collect();
    let link_of_user: HashMap<&str, &str> = local
        .links
        .iter()
        .map(|l| (l.user_id.as_str(), l.userid.as_str()))
        .collect();
    let user_of_link: HashMap<&str, &str> = local
        .links
        .iter()
        .map(|l| (l.userid.as_str(), l.user_id.as_str()))
        .collect();
    let by_phone: HashMap<Cow<str>, &LocalUser> = local
        .users
        .iter()
        .filter_map(|u| Some((mobile_key(u.phone.as_deref()?), u)))
        .collect();
    let by_username: HashMap<&str, &LocalUser> = local
        .users
        .iter()
        .map(|u| (u.username.as_str(), u))
        .collect();
    let mut ops = Vec::new();
    for person in people {
        let depts: Vec<LocalRef> = person
            .dept_id_list
            .iter()
            .filter_map(|d| map.get(d).cloned())
            .collect();
        let by_link = user_of_link
            .get(person.userid.as_str())
            .and_then(|id| by_id.get(id))
            .copied();
        let matched = by_link
            .or_else(|| {
                (!person.mobile.is_empty())
                    .then(|| by_phone.get(&mobile_key(&person.mobile)).copied())
                    .flatten()
            })
            .or_else(|| by_username.get(person.userid.as_str()).copied());
        match matched {
            Some(found) => {
                if let Some(other) = link_of_user
                    .get(found.id.as_str())
                    .filter(|u| **u != person.userid)
                {
                    ops.push(fail(&person.userid, format!("matches local user {} by phone or username, but that user is linked to DingTalk user {other}", found.username)));
                    continue;
                }
                if let Some(first) = claimed.insert(found.id.clone(), person.userid.clone()) {
                    ops.push(fail(
                        &person.userid,
                        format!(
                            "local user {} is already matched to DingTalk user {first}",
                            found.username
                        ),
                    ));
                    continue;
                }
                ops.extend(update_op(local, found, person, &depts, by_link.is_some()));
            }
            None => ops.push(create_op(local, person, depts)),
        }
    }
    ops
}

fn update_op(
    local: &LocalView,
    found: &LocalUser,
    person: &DtUser,
    depts: &[LocalRef],
    linked: bool,
) -> Option<Op> {
    let fields = LocalUserFields {
        realname: changed(&person.name, Some(&found.realname)),
        phone: changed(&person.mobile, found.phone.as_deref())
            .filter(|m| !same_mobile(m, found.phone.as_deref().unwrap_or_default())),
        email: changed(&person.email, found.email.as_deref()),
        telephone: changed(&person.telephone, found.telephone.as_deref()),
        work_no: changed(&person.job_number, found.work_no.as_deref()),
        add_depts: depts
            .iter()
            .filter(|d| !matches!(d, LocalRef::Local(id) if found.depart_ids.contains(id)))
            .cloned()
            .collect(),
    };
    if let Some(reason) = clash(&local.users, Some(&found.id), &fields) {
        return Some(fail(&person.userid, reason));
    }
    (!fields.is_empty() || !linked).then(|| Op::UpdateLocalUser {
        local_id: found.id.clone(),
        userid: person.userid.clone(),
        unionid: Some(person.unionid.clone()).filter(|u| !u.is_empty()),
        fields,
        link: !linked,
    })
}

fn create_op(local: &LocalView, person: &DtUser, depts: Vec<LocalRef>) -> Op {
    let nonempty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let fields = LocalUserFields {
        realname: nonempty(&person.name),
        phone: nonempty(&person.mobile),
        email: nonempty(&person.email),
        telephone: nonempty(&person.telephone),
        work_no: nonempty(&person.job_number),
        add_depts: depts,
    };
    match clash(&local.users, None, &fields) {
        Some(reason) => fail(&person.userid, reason),
        None => Op::CreateLocalUser {
            userid: person.userid.clone(),
            unionid: Some(person.unionid.clone()).filter(|u| !u.is_empty()),
            fields,
        },
    }
}
