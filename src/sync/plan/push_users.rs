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
    entity, mask_mobile, mobile_key, same_mobile, sorted, DeptRef, LocalView, Op, RemoteView,
    UserBase, UserFields, ROOT_DEPT,
};
use super::merge::{judge, FieldMerge, Policy, Verdict};

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

impl Claims {
    /// For a user now in a department about to be deleted: the departments it will have
    /// after this plan (`sent`, else the ones it has), for the member moves.
    fn note_final_depts(&mut self, found: &DtUser, sent: Option<&Vec<DeptRef>>) {
        if !found.dept_id_list.iter().any(|d| self.doomed.contains(d)) {
            return;
        }
        let depts = sent.cloned().unwrap_or_else(|| {
            found
                .dept_id_list
                .iter()
                .map(|d| DeptRef::Ding(*d))
                .collect()
        });
        self.final_depts.insert(found.userid.clone(), depts);
    }
}

/// What the department plan and the tenant tell the user plan.
pub(super) struct Depts<'a> {
    /// Every pushed local department -> its place in DingTalk.
    pub map: &'a HashMap<String, DeptRef>,
    /// Departments DingTalk lacks and would refuse, with the reason.
    pub fallback: &'a HashMap<String, String>,
    /// How differences are settled.
    pub policy: &'a Policy,
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
                ops.push(mismatch_warning(user, &found));
                continue;
            }
            Twin::None => {
                ops.push(create(user, depts.map));
                continue;
            }
        };
        if let Some(refused) = claimed_by_another(&claimed, user, &found, route) {
            ops.push(refused);
            continue;
        }
        ops.extend(update(local, &links, (user, &found), depts, claims));
    }
    ops
}

/// The warning for local user `user` whose username a DingTalk user `found` has, with
/// another mobile: not the same person, so not linked.
fn mismatch_warning(user: &LocalUser, found: &DtUser) -> Op {
    warn(
        &user.username,
        format!(
            "DingTalk user {} has this username but mobile {}, and local user {} has mobile {}: not the same person, so not linked (fix the mobile, or link them by hand in sys_third_account)",
            found.userid,
            mask_mobile(&found.mobile),
            user.username,
            mask_mobile(user.phone.as_deref().unwrap_or_default())
        ),
    )
}

/// The refusal when `user`'s twin `found` (by `route`) is claimed more strongly by another
/// local user.
fn claimed_by_another(
    claimed: &Claimed<'_>,
    user: &LocalUser,
    found: &DtUser,
    route: Route,
) -> Option<Op> {
    let (other, by) = claimed
        .claimer(&found.userid)
        .filter(|(c, _)| c.id != user.id)?;
    Some(fail(
        &user.username,
        format!(
            "DingTalk user {} is already matched to local user {} (by {}); {} matched it by {}",
            found.userid,
            other.username,
            by.describe(),
            user.username,
            route.describe()
        ),
    ))
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
        Some(phone) => {
            let fields = full_fields(user, &desired_depts(user, map));
            let base = UserBase {
                name: user.realname.clone(),
                mobile: phone.to_string(),
                telephone: fields.telephone.clone().unwrap_or_default(),
                email: fields.email.clone().unwrap_or_default(),
                job_number: fields.job_number.clone().unwrap_or_default(),
                title: fields.title.clone().unwrap_or_default(),
                // Filled with the departments as created.
                depts: Vec::new(),
                mobile_refused: None,
                link_held_by: None,
            };
            Op::CreateUser {
                local_id: user.id.clone(),
                userid: user.username.clone(),
                mobile: phone.to_string(),
                fields,
                base,
            }
        }
    }
}

/// The update (and link) of a user DingTalk has: each field merged against its base.
fn update(
    local: &LocalView,
    links: &Links<'_>,
    (user, found): (&LocalUser, &DtUser),
    depts: &Depts<'_>,
    claims: &mut Claims,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let wanted = desired_depts(user, depts.map);
    let snapshot = local
        .user_snapshots
        .get(&user.id)
        .filter(|s| s.ding_id == found.userid);
    let base = snapshot.and_then(|s| s.user_base());
    let mut merge = UserMerge::new(base.as_ref(), depts.policy);
    merge.texts(user, found);
    // Said after the update and the link that remember it: a failed update says it again
    // at its retry, a done one never again.
    let mobile_warning = merge.mobile(user, found);
    merge.depts(&wanted, found);
    let UserMerge {
        fields,
        base: new_base,
        fields_merged,
        ..
    } = merge;
    claims.note_final_depts(found, fields.depts.as_ref());
    let updating = !fields.is_empty();
    if updating {
        ops.push(Op::UpdateUser {
            local_id: user.id.clone(),
            userid: found.userid.clone(),
            fields,
            merge: fields_merged,
        });
    } else if !fields_merged.is_empty() {
        ops.push(Op::Merge {
            entity: entity::USER.into(),
            key: user.id.clone(),
            fields: fields_merged,
        });
    }
    // The link row and the base follow every update, and are refreshed when stale (a link
    // row another tenant's row keeps from being written is not looked for again).
    let row_missing =
        links.row(&user.id) != Some(found.userid.as_str()) && new_base.link_held_by.is_none();
    let stale = row_missing || base.as_ref() != Some(&new_base);
    if updating || stale {
        ops.push(link_user(user, found, new_base));
    }
    if let Some(warning) = mobile_warning {
        ops.push(warn(&user.id, warning));
    }
    ops
}

/// The record of `user`'s link to `found`, with the base.
fn link_user(user: &LocalUser, found: &DtUser, base: UserBase) -> Op {
    Op::LinkUser {
        local_id: user.id.clone(),
        userid: found.userid.clone(),
        unionid: Some(found.unionid.clone()).filter(|u| !u.is_empty()),
        realname: user.realname.clone(),
        base,
    }
}

/// A push's merge of one user: the fields to send, the base once done, and what it did with
/// each field that differs.
struct UserMerge<'a> {
    old: Option<&'a UserBase>,
    policy: &'a Policy,
    fields: UserFields,
    base: UserBase,
    fields_merged: Vec<FieldMerge>,
}

impl<'a> UserMerge<'a> {
    fn new(old: Option<&'a UserBase>, policy: &'a Policy) -> Self {
        Self {
            old,
            policy,
            fields: UserFields::default(),
            base: old.cloned().unwrap_or_default(),
            fields_merged: Vec::new(),
        }
    }

    fn note(
        &mut self,
        field: &str,
        [local, remote]: [&str; 2],
        base: Option<&str>,
        (verdict, action): (Verdict, &str),
    ) {
        // As `plan` shows them: mobiles masked, as the pull's are.
        let shown = |value: &str| {
            if field == "mobile" {
                mask_mobile(value)
            } else {
                value.to_string()
            }
        };
        self.fields_merged.push(FieldMerge {
            field: field.to_string(),
            jeecgboot: shown(local),
            dingtalk: shown(remote),
            base: base.map(shown),
            changed: verdict.changed,
            action: action.to_string(),
            resolves_conflict: verdict.conflict() && action == "push",
        });
    }

    /// name, telephone, job_number, title, email: sent when JeecgBoot's side stands (never
    /// an empty value: DingTalk keeps its own then).
    fn texts(&mut self, user: &LocalUser, found: &DtUser) {
        let title = user.positions.join(",");
        let texts: [(&str, &str, &str); 5] = [
            ("name", &user.realname, &found.name),
            (
                "telephone",
                user.telephone.as_deref().unwrap_or_default(),
                &found.telephone,
            ),
            (
                "job_number",
                user.work_no.as_deref().unwrap_or_default(),
                &found.job_number,
            ),
            ("title", &title, &found.title),
            (
                "email",
                user.email.as_deref().unwrap_or_default(),
                &found.email,
            ),
        ];
        for (field, local, remote) in texts {
            let old = self.old.map(|b| text_of(b, field).to_string());
            let Some(verdict) = judge(local, remote, old.as_deref(), self.policy) else {
                set_text(&mut self.base, field, local);
                continue;
            };
            let action = if verdict.push() && !local.is_empty() {
                set_field(&mut self.fields, field, local);
                set_text(&mut self.base, field, local);
                "push"
            } else if verdict.push() {
                // Cleared locally: DingTalk keeps its value (a push never sends an empty one),
                // and with no base yet DingTalk's value is taken as agreed, so that the pull
                // does not fill the cleared field again either.
                if old.is_none() {
                    set_text(&mut self.base, field, remote);
                }
                "kept: an empty value is never sent"
            } else {
                "left for the pull"
            };
            self.note(field, [local, remote], old.as_deref(), (verdict, action));
        }
    }

    /// The mobile: DingTalk cannot change it (40022), so a JeecgBoot-side change is reported
    /// once (the base remembers it) and the pull leaves the local value alone. A hidden
    /// mobile (no permission) is no difference.
    fn mobile(&mut self, user: &LocalUser, found: &DtUser) -> Option<String> {
        let local = user.phone.as_deref().unwrap_or_default();
        if found.mobile.is_empty() || local.is_empty() {
            return None;
        }
        let old = self.old.map(|b| mobile_key(&b.mobile).into_owned());
        let (l, r) = (mobile_key(local), mobile_key(&found.mobile));
        let Some(verdict) = judge(l.as_ref(), r.as_ref(), old.as_deref(), self.policy) else {
            self.base.mobile = local.to_string();
            self.base.mobile_refused = None;
            return None;
        };
        if !verdict.push() {
            let action = (verdict, "left for the pull");
            self.note("mobile", [local, &found.mobile], old.as_deref(), action);
            return None;
        }
        let action = (verdict, "kept: DingTalk cannot change a mobile");
        self.note("mobile", [local, &found.mobile], old.as_deref(), action);
        if old.is_none() {
            // DingTalk's number is the one agreed: a pull sees JeecgBoot's as its change.
            self.base.mobile = found.mobile.clone();
        }
        let told = self.old.and_then(|b| b.mobile_refused.as_deref()) == Some(local);
        self.base.mobile_refused = Some(local.to_string());
        (!told).then(|| format!(
            "local phone {} differs from DingTalk's mobile {} of {}; DingTalk cannot change a mobile (errcode 40022: delete and re-add the user there); reported once",
            mask_mobile(local),
            mask_mobile(&found.mobile),
            found.userid
        ))
    }

    /// The department list, compared as sets of DingTalk ids (a department created in this
    /// run counts as a JeecgBoot-side change).
    fn depts(&mut self, wanted: &[DeptRef], found: &DtUser) {
        let local: Option<Vec<i64>> = wanted
            .iter()
            .map(|d| match d {
                DeptRef::Ding(id) => Some(*id),
                DeptRef::Local(_) => None,
            })
            .collect::<Option<Vec<i64>>>()
            .map(sorted);
        let remote = sorted(found.dept_id_list.clone());
        let old = self.old.map(|b| sorted(b.depts.clone()));
        let verdict = match &local {
            Some(local) => judge(local, &remote, old.as_ref(), self.policy),
            None => judge(&[0][..], &remote[..], None, self.policy),
        };
        let show = |ids: &[i64]| {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let Some(verdict) = verdict else {
            self.base.depts = remote;
            return;
        };
        let local_text = local
            .as_deref()
            .map_or_else(|| "(departments being created)".into(), show);
        let action = if verdict.push() {
            self.fields.depts = Some(wanted.to_vec());
            // The departments as created are filled in once applied.
            self.base.depts = local.unwrap_or_default();
            "push"
        } else {
            "left for the pull"
        };
        let remote_text = show(&remote);
        let was = old.as_deref().map(show);
        self.note(
            "depts",
            [&local_text, &remote_text],
            was.as_deref(),
            (verdict, action),
        );
    }
}

/// A text field of a base, by name.
fn text_of<'b>(base: &'b UserBase, field: &str) -> &'b str {
    match field {
        "name" => &base.name,
        "telephone" => &base.telephone,
        "job_number" => &base.job_number,
        "title" => &base.title,
        "email" => &base.email,
        _ => "",
    }
}

fn set_text(base: &mut UserBase, field: &str, value: &str) {
    let slot = match field {
        "name" => &mut base.name,
        "telephone" => &mut base.telephone,
        "job_number" => &mut base.job_number,
        "title" => &mut base.title,
        "email" => &mut base.email,
        _ => return,
    };
    *slot = value.to_string();
}

fn set_field(fields: &mut UserFields, field: &str, value: &str) {
    let slot = match field {
        "name" => &mut fields.name,
        "telephone" => &mut fields.telephone,
        "job_number" => &mut fields.job_number,
        "title" => &mut fields.title,
        "email" => &mut fields.email,
        _ => return,
    };
    *slot = Some(value.to_string());
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
