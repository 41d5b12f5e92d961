//! Rule 1, users local -> DingTalk: matched by link (link row or snapshot), then mobile,
//! then userid == username (JeecgBoot's order); updated with only the fields that differ, or
//! created with userid = username. Logically deleted users are not pushed; frozen and
//! resigned ones are. A user deleted locally for good is deleted in DingTalk
//! (`push.delete_users_on_hard_delete`) unless a live local user has claimed its twin.
//! DingTalk users the local side lacks are left alone.
//!
//! Identity safety, the same in a full run and in a job: a DingTalk user goes to the local
//! user with the strongest claim on it (link, then mobile, then username; the lowest id among
//! equals), whichever slice or job looks at it; a username alone never links two people whose
//! mobiles differ.

use std::collections::{HashMap, HashSet};

use crate::dingtalk::types::DtUser;
use crate::jeecg::LocalUser;

use super::super::model::{
    content_hash, entity, mask_mobile, same_mobile, DeptRef, LocalView, Op, RemoteView, UserFields,
    ROOT_DEPT,
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

fn warn(key: &str, reason: String) -> Op {
    Op::Warn {
        entity: entity::USER.into(),
        key: key.into(),
        reason,
    }
}

/// How a local user found its DingTalk twin, in JeecgBoot's order: also the strength of its
/// claim on that DingTalk user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    Link,
    Mobile,
    Username,
}

impl Route {
    fn describe(self) -> &'static str {
        match self {
            Route::Link => "its link",
            Route::Mobile => "its phone",
            Route::Username => "its username",
        }
    }
}

/// What a local user's lookup found in DingTalk.
enum Twin {
    /// Its twin, and how it was found.
    Found(DtUser, Route),
    /// A DingTalk user with its username whose mobile is another one: not the same person.
    Mismatch(DtUser),
    /// Nobody.
    None,
}

/// The links of a view, by local id: link rows and snapshots (a tenant whose link row
/// another tenant's row blocks keeps the link in its snapshot).
struct Links<'a> {
    by_user: HashMap<&'a str, Vec<&'a str>>,
    rows: HashMap<&'a str, &'a str>,
}

impl<'a> Links<'a> {
    fn new(local: &'a LocalView) -> Self {
        let mut by_user: HashMap<&str, Vec<&str>> = HashMap::new();
        let rows: HashMap<&str, &str> = local
            .links
            .iter()
            .map(|l| (l.user_id.as_str(), l.userid.as_str()))
            .collect();
        let snapshots = local
            .user_snapshots
            .values()
            .map(|s| (s.local_id.as_str(), s.ding_id.as_str()));
        for (user, userid) in local
            .links
            .iter()
            .map(|l| (l.user_id.as_str(), l.userid.as_str()))
            .chain(snapshots)
        {
            let list = by_user.entry(user).or_default();
            if !list.contains(&userid) {
                list.push(userid);
            }
        }
        Self { by_user, rows }
    }

    /// The link row's userid of `user`, if it has one.
    fn row(&self, user: &str) -> Option<&'a str> {
        self.rows.get(user).copied()
    }

    fn of(&self, user: &str) -> &[&'a str] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }
}

/// The DingTalk twin of `user`: by link, then mobile, then username (refused when both have
/// a mobile and they differ).
fn twin(user: &LocalUser, links: &Links<'_>, remote: &RemoteView) -> Twin {
    if let Some(found) = links.of(&user.id).iter().find_map(|u| remote.users.get(u)) {
        return Twin::Found(found, Route::Link);
    }
    if let Some(found) = user
        .phone
        .as_deref()
        .and_then(|p| remote.users.by_mobile(p))
    {
        return Twin::Found(found, Route::Mobile);
    }
    match remote.users.get(&user.username) {
        Some(found) => match user.phone.as_deref().filter(|p| !p.is_empty()) {
            Some(phone) if !found.mobile.is_empty() && !same_mobile(phone, &found.mobile) => {
                Twin::Mismatch(found)
            }
            _ => Twin::Found(found, Route::Username),
        },
        None => Twin::None,
    }
}

/// Every candidate's twin, and for each DingTalk user the live local user with the
/// strongest claim on it: the one whose own twin it is, by link, then mobile, then username,
/// then the lowest id. Computed once per view, whatever its size.
struct Claimed<'a> {
    twins: HashMap<&'a str, Twin>,
    best: HashMap<String, (&'a LocalUser, Route)>,
}

impl<'a> Claimed<'a> {
    fn new(local: &'a LocalView, links: &Links<'_>, remote: &RemoteView) -> Self {
        let mut seen = HashSet::new();
        let mut twins = HashMap::new();
        let mut best: HashMap<String, (&LocalUser, Route)> = HashMap::new();
        for candidate in local.users.iter().chain(&local.claimers) {
            if candidate.is_deleted() || !seen.insert(candidate.id.as_str()) {
                continue;
            }
            let found = twin(candidate, links, remote);
            if let Twin::Found(user, route) = &found {
                let stronger = best
                    .get(&user.userid)
                    .is_none_or(|(held, by)| (*route, &candidate.id) < (*by, &held.id));
                if stronger {
                    best.insert(user.userid.clone(), (candidate, *route));
                }
            }
            twins.insert(candidate.id.as_str(), found);
        }
        Self { twins, best }
    }

    /// Who claims DingTalk user `userid`, if anyone does.
    fn claimer(&self, userid: &str) -> Option<(&'a LocalUser, Route)> {
        self.best.get(userid).copied()
    }
}

/// The DingTalk users the live users of `local` find as their twins: whose claimers a slice
/// must see before it is planned.
pub(super) fn twins(local: &LocalView, remote: &RemoteView) -> Vec<DtUser> {
    let links = Links::new(local);
    let mut seen = HashSet::new();
    local
        .users
        .iter()
        .filter(|u| !u.is_deleted())
        .filter_map(|u| match twin(u, &links, remote) {
            Twin::Found(found, _) => seen.insert(found.userid.clone()).then_some(found),
            _ => None,
        })
        .collect()
}

/// What the user plan keeps from one slice of users to the next, and gives the rest of the
/// push plan.
#[derive(Default)]
pub(super) struct Claims {
    /// The last local id planned (a user repeated by the tenant join is planned once).
    last: Option<String>,
    /// DingTalk departments about to be deleted (only users in them need `final_depts`).
    pub doomed: HashSet<i64>,
    /// userid -> the departments it will have after this plan, for users now in a doomed
    /// department (for member moves).
    pub final_depts: HashMap<String, Vec<DeptRef>>,
}

/// What the department plan tells the user plan.
pub(super) struct Depts<'a> {
    /// Every pushed local department -> its place in DingTalk.
    pub map: &'a HashMap<String, DeptRef>,
    /// Departments DingTalk lacks and would refuse, with the reason.
    pub fallback: &'a HashMap<String, String>,
}

/// Plans `local.users` in focus (a slice of the tenant's users, or one) against DingTalk.
/// `local.claimers` holds the other live local users that could claim the same DingTalk
/// users. Hard deletes are planned apart, by [`hard_deletes`].
pub(super) fn plan_slice(
    local: &LocalView,
    remote: &RemoteView,
    depts: &Depts<'_>,
    focus: &super::Focus,
    claims: &mut Claims,
) -> Vec<Op> {
    let links = Links::new(local);
    let mut claimed = Claimed::new(local, &links, remote);
    let mut ops = Vec::new();
    for user in local.users.iter().filter(|u| !u.is_deleted()) {
        if claims.last.as_deref() == Some(user.id.as_str()) || !focus.user(&user.id) {
            continue;
        }
        claims.last = Some(user.id.clone());
        ops.extend(fallback_warnings(user, depts));
        let found = claimed.twins.remove(user.id.as_str()).unwrap_or(Twin::None);
        let (found, route) = match found {
            Twin::Found(found, route) => (found, route),
            Twin::Mismatch(found) => {
                ops.push(warn(
                    &user.username,
                    format!(
                        "DingTalk user {} has this username but mobile {}, and local user {} has mobile {}: not the same person, so not linked (fix the mobile, or link them by hand in sys_third_account)",
                        found.userid,
                        mask_mobile(&found.mobile),
                        user.username,
                        mask_mobile(user.phone.as_deref().unwrap_or_default())
                    ),
                ));
                continue;
            }
            Twin::None => {
                ops.push(create(user, depts.map));
                continue;
            }
        };
        if let Some((other, by)) = claimed
            .claimer(&found.userid)
            .filter(|(c, _)| c.id != user.id)
        {
            ops.push(fail(
                &user.username,
                format!(
                    "DingTalk user {} is already matched to local user {} (by {}); {} matched it by {}",
                    found.userid,
                    other.username,
                    by.describe(),
                    user.username,
                    route.describe()
                ),
            ));
            continue;
        }
        ops.extend(update(local, &links, user, &found, depts.map, claims));
    }
    ops
}

/// A warning for each of `user`'s departments that DingTalk lacks and would refuse: the user
/// goes to its nearest pushed ancestor instead.
fn fallback_warnings(user: &LocalUser, depts: &Depts<'_>) -> Vec<Op> {
    user.depart_ids
        .iter()
        .filter_map(|id| {
            let reason = depts.fallback.get(id)?;
            Some(warn(
                &user.username,
                format!("department {id} is not in DingTalk ({reason}); the user is placed in its nearest pushed parent department instead"),
            ))
        })
        .collect()
}

/// The create of a user DingTalk lacks (userid = username).
fn create(user: &LocalUser, map: &HashMap<String, DeptRef>) -> Op {
    match user.phone.as_deref().filter(|p| !p.is_empty()) {
        None => fail(
            &user.username,
            "no phone: DingTalk needs a mobile to create a user".into(),
        ),
        Some(_) if user.username.is_empty() => {
            fail(&user.id, "no username to use as userid".into())
        }
        // userid = username: `sys_user.username` is unique, so no two creates of a run
        // share a userid.
        Some(phone) => Op::CreateUser {
            local_id: user.id.clone(),
            userid: user.username.clone(),
            mobile: phone.to_string(),
            fields: full_fields(user, &desired_depts(user, map)),
            hash: user_hash(user, map),
        },
    }
}

/// The update (and link) of a user DingTalk has.
fn update(
    local: &LocalView,
    links: &Links<'_>,
    user: &LocalUser,
    found: &DtUser,
    map: &HashMap<String, DeptRef>,
    claims: &mut Claims,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let depts = desired_depts(user, map);
    let hash = user_hash(user, map);
    let fields = changes(user, found, &depts);
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
            ops.push(warn(&user.username, format!("local phone differs from DingTalk's mobile of {}; DingTalk cannot change a mobile (delete and re-add the user there)", found.userid)));
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
    let stale = links.row(&user.id) != Some(found.userid.as_str())
        || local
            .user_snapshots
            .get(&user.id)
            .is_none_or(|s| s.content_hash != hash || s.ding_id != found.userid);
    if updating || stale {
        ops.push(Op::LinkUser {
            local_id: user.id.clone(),
            userid: found.userid.clone(),
            unionid: Some(found.unionid.clone()).filter(|u| !u.is_empty()),
            realname: user.realname.clone(),
            hash,
        });
    }
    ops
}

/// Deletes of DingTalk users whose local row is gone for good: `gone` holds the
/// `(sys_user.id, userid)` of links and snapshots without a `sys_user` row; `local.claimers`
/// the live local users that match those DingTalk users. Users that one of them claims, or
/// that DingTalk no longer has, are left alone.
pub(super) fn hard_deletes(
    mut gone: Vec<(String, String)>,
    local: &LocalView,
    remote: &RemoteView,
) -> Vec<Op> {
    let links = Links::new(local);
    let claimed = Claimed::new(local, &links, remote);
    gone.retain(|(_, userid)| remote.users.contains(userid));
    gone.sort_unstable();
    gone.dedup_by(|a, b| a.1 == b.1);
    gone.into_iter()
        .filter(|(_, userid)| claimed.claimer(userid).is_none())
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
