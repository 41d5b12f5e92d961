//! Rules 2 and 4, DingTalk -> local. Departments: matched on `ding_identifier == dept_id`
//! or `source_identifier == id`; missing ones are created (unique org_code, `ding_identifier`
//! set, the new id written back to DingTalk as `source_identifier`), changed ones updated;
//! never deleted locally. Users: matched by link (link row or snapshot), then phone, then
//! username == userid; missing users are inserted (username = userid,
//! `pull.new_user_password`); passwords are never touched. Local rows DingTalk lacks are left
//! alone.
//!
//! Every field is merged against its base (`merge`): a pull writes what DingTalk changed and
//! leaves what JeecgBoot changed (the push sends it), so it never reverts a local edit; a
//! local mobile is never overwritten unless DingTalk is known to have changed it. A
//! department or user deleted locally (`del_flag = 1`) is not recreated; a DingTalk user
//! without a visible mobile (the app lacks the permission) is not inserted.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::dingtalk::types::DtUser;
use crate::jeecg::{LocalDept, LocalUser};

use super::super::model::{
    entity, mask_mobile, mask_value, mobile_key, same_mobile, sorted, DeptBase, FieldMerge,
    LocalRef, LocalUserFields, LocalView, Op, RemoteDept, RemoteView, Scope, UserBase, ROOT_DEPT,
};
use super::merge::{judge, Changed, Policy, Verdict};
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
pub fn plan_pull(local: &LocalView, remote: &RemoteView, policy: &Policy, scope: Scope) -> Plan {
    let (dept_ops, map) = departments(local, remote, policy);
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
        let people: Vec<DtUser> = remote.users.iter().collect();
        plan.ops.extend(users_slice(
            local,
            &people,
            &map,
            &mut HashMap::new(),
            policy,
        ));
        plan.considered += remote.users.len();
    }
    plan
}

/// The department part of a pull that plans its users slice by slice: the department
/// operations, and every walked DingTalk department -> its local department (existing, or
/// [`LocalRef::Created`] when the operations create it).
pub fn pull_departments(
    local: &LocalView,
    remote: &RemoteView,
    policy: &Policy,
) -> (Vec<Op>, HashMap<i64, LocalRef>) {
    departments(local, remote, policy)
}

/// The local departments a pull can match, by DingTalk id and by id (posts never; deleted
/// ones too, so that they are not created again).
struct LocalDepts<'a> {
    by_ding: HashMap<i64, &'a LocalDept>,
    by_id: HashMap<&'a str, &'a LocalDept>,
    placement: HashMap<String, Option<String>>,
    /// DingTalk departments whose local department is gone (its row deleted for good, its
    /// snapshot left): deleted locally, so not created again.
    removed: HashMap<i64, &'a str>,
}

impl<'a> LocalDepts<'a> {
    fn new(local: &'a LocalView) -> Self {
        let locals: Vec<&LocalDept> = local.depts.iter().filter(|d| !d.is_post()).collect();
        // A live department wins a DingTalk id over a deleted one.
        let mut by_ding: HashMap<i64, &LocalDept> = HashMap::new();
        for dept in &locals {
            if let Some(ding) = dept.ding_identifier {
                if by_ding.get(&ding).is_none_or(|held| held.is_deleted()) {
                    by_ding.insert(ding, dept);
                }
            }
        }
        let by_id: HashMap<&str, &LocalDept> = locals.iter().map(|d| (d.id.as_str(), *d)).collect();
        let removed = local
            .dept_snapshots
            .values()
            .filter(|s| !by_id.contains_key(s.local_id.as_str()))
            .filter_map(|s| Some((s.ding_id.parse().ok()?, s.local_id.as_str())))
            .collect();
        Self {
            by_ding,
            by_id,
            placement: super::dept_placement(&local.depts),
            removed,
        }
    }

    /// The DingTalk id a local department is placed under (1 at the top; 0 when its parent
    /// is not in DingTalk).
    fn parent_ding(&self, id: &str) -> i64 {
        match self.placement.get(id).cloned().flatten() {
            None => ROOT_DEPT,
            Some(parent) => self
                .by_id
                .get(parent.as_str())
                .and_then(|p| p.ding_identifier)
                .unwrap_or(0),
        }
    }
}

/// The departments' part of a pull: DingTalk's departments, parents first, each matched to
/// a local department (merged), created, or left out; and where each is locally.
fn departments(
    local: &LocalView,
    remote: &RemoteView,
    policy: &Policy,
) -> (Vec<Op>, HashMap<i64, LocalRef>) {
    let policy = &policy.depts();
    let by_id: HashMap<i64, &RemoteDept> = remote.depts.iter().map(|d| (d.dept_id, d)).collect();
    let remote_ids: HashSet<i64> = by_id.keys().copied().collect();
    let locals = LocalDepts::new(local);
    let mut ordered: Vec<&RemoteDept> = remote.depts.iter().collect();
    ordered.sort_by_key(|d| (depth(&by_id, d), d.dept_id));
    let mut pulled = PulledDepts::default();
    for dept in ordered {
        let parent = match placed_under(dept, &pulled.map, &pulled.gone, &locals, remote) {
            Under::Parent(parent) => parent,
            Under::Gone => {
                pulled.under_gone(dept);
                continue;
            }
            Under::Unknown => continue,
        };
        let matched = matching_local(dept, &locals, remote, &remote_ids)
            .filter(|l| !pulled.taken.contains(l.id.as_str()));
        match matched {
            Some(found) if found.is_deleted() => pulled.deleted_locally(found, dept),
            Some(found) => {
                pulled.taken.insert(found.id.as_str());
                pulled
                    .map
                    .insert(dept.dept_id, LocalRef::Local(found.id.clone()));
                let ops = merge_dept(local, &locals, (found, dept), parent, policy);
                pulled.ops.extend(ops);
            }
            None => pulled.unmatched(&locals, dept, parent),
        }
    }
    (pulled.ops, pulled.map)
}

/// The departments' pull as it is built, parents first.
#[derive(Default)]
struct PulledDepts<'a> {
    /// Each DingTalk department's local department (or the one to be created).
    map: HashMap<i64, LocalRef>,
    /// DingTalk departments that stay out: deleted locally, or under one that is.
    gone: HashSet<i64>,
    /// Local departments matched already.
    taken: HashSet<&'a str>,
    ops: Vec<Op>,
}

impl<'a> PulledDepts<'a> {
    /// DingTalk department `dept` sits under one deleted locally: reported, not created.
    fn under_gone(&mut self, dept: &RemoteDept) {
        self.gone.insert(dept.dept_id);
        self.ops.push(warn_dept(
            &dept.dept_id.to_string(),
            format!(
                "DingTalk department {} ({}) is under a department deleted locally; not created",
                dept.dept_id, dept.name
            ),
        ));
    }

    /// DingTalk department `dept` matches `found`, deleted locally: deleted locally stays
    /// deleted, reported, and nothing goes under it.
    fn deleted_locally(&mut self, found: &'a LocalDept, dept: &RemoteDept) {
        self.gone.insert(dept.dept_id);
        self.taken.insert(found.id.as_str());
        self.ops.push(warn_dept(
            &found.id,
            format!(
                "deleted locally (del_flag = 1); DingTalk department {} ({}) is not created again",
                dept.dept_id, dept.name
            ),
        ));
    }

    /// DingTalk department `dept` matches no local department: created under `parent`,
    /// unless its local department was deleted for good (before the push removed its twin),
    /// which stays deleted.
    fn unmatched(&mut self, locals: &LocalDepts<'_>, dept: &RemoteDept, parent: LocalRef) {
        if let Some(removed) = locals.removed.get(&dept.dept_id) {
            self.gone.insert(dept.dept_id);
            self.ops.push(warn_dept(&dept.dept_id.to_string(), format!("local department {removed} was deleted; DingTalk department {} ({}) is not created again (the push removes it)", dept.dept_id, dept.name)));
            return;
        }
        self.map
            .insert(dept.dept_id, LocalRef::Created(dept.dept_id));
        self.ops.push(Op::CreateLocalDept {
            dept_id: dept.dept_id,
            name: dept.name.clone(),
            parent,
            parent_dept_id: dept.parent_id,
        });
    }
}

/// Where a DingTalk department goes locally, as its parent tells.
enum Under {
    /// Under this local department (or at the top).
    Parent(LocalRef),
    /// Under a department deleted locally: nowhere.
    Gone,
    /// Outside what was read: left alone.
    Unknown,
}

/// Where `dept` goes, its parent placed before it (`map`) or gone (`gone`).
fn placed_under(
    dept: &RemoteDept,
    map: &HashMap<i64, LocalRef>,
    gone: &HashSet<i64>,
    locals: &LocalDepts<'_>,
    remote: &RemoteView,
) -> Under {
    if gone.contains(&dept.parent_id) {
        return Under::Gone;
    }
    if dept.parent_id == ROOT_DEPT {
        return Under::Parent(LocalRef::Top);
    }
    if let Some(parent) = map.get(&dept.parent_id) {
        return Under::Parent(parent.clone());
    }
    if !remote.partial {
        return Under::Unknown; // outside the walked tree
    }
    // A job reads only the departments it needs: a parent it did not read stands where a
    // local department links it (as a push job trusts links).
    match locals.by_ding.get(&dept.parent_id) {
        Some(parent) if parent.is_deleted() => Under::Gone,
        Some(parent) => Under::Parent(LocalRef::Local(parent.id.clone())),
        None => Under::Unknown,
    }
}

/// The local department of `dept`: linked to it, or found by the key the push gave DingTalk
/// (`source_identifier`) unless linked to a department DingTalk still has (in a job's view:
/// one not known to be gone).
fn matching_local<'a>(
    dept: &RemoteDept,
    locals: &LocalDepts<'a>,
    remote: &RemoteView,
    remote_ids: &HashSet<i64>,
) -> Option<&'a LocalDept> {
    let free = |linked: i64| {
        if remote.partial {
            remote.absent.contains(&linked)
        } else {
            !remote_ids.contains(&linked)
        }
    };
    let by_source = dept
        .source_identifier
        .as_deref()
        .and_then(|s| locals.by_id.get(s))
        .filter(|l| l.ding_identifier.is_none_or(free));
    locals.by_ding.get(&dept.dept_id).or(by_source).copied()
}

/// A job's department map for the DingTalk users `people`: every live local department
/// linked to a DingTalk department (a job's view trusts links, as a push job does), and the
/// departments of `people` no local department links, in the order met (a department pull
/// decides whether they are created).
pub fn linked_depts(local: &LocalView, people: &[DtUser]) -> (HashMap<i64, LocalRef>, Vec<i64>) {
    let locals = LocalDepts::new(local);
    let map: HashMap<i64, LocalRef> = locals
        .by_ding
        .iter()
        .filter(|(_, d)| !d.is_deleted())
        .map(|(ding, d)| (*ding, LocalRef::Local(d.id.clone())))
        .collect();
    let mut unknown = Vec::new();
    for id in people.iter().flat_map(|p| p.dept_id_list.iter().copied()) {
        if id != ROOT_DEPT && !locals.by_ding.contains_key(&id) && !unknown.contains(&id) {
            unknown.push(id);
        }
    }
    (map, unknown)
}

fn warn_dept(key: &str, reason: String) -> Op {
    Op::Warn {
        entity: entity::DEPT.into(),
        key: key.into(),
        reason,
    }
}

/// One matched department: its name and parent merged against the base (a local rename or
/// move is left for the push); the link and base recorded when stale.
fn merge_dept(
    local: &LocalView,
    locals: &LocalDepts<'_>,
    (found, dept): (&LocalDept, &RemoteDept),
    parent: LocalRef,
    policy: &Policy,
) -> Vec<Op> {
    let linked = found.ding_identifier == Some(dept.dept_id);
    let snapshot = local
        .dept_snapshots
        .get(&found.id)
        .filter(|s| s.ding_id == dept.dept_id.to_string());
    // A link without a base (synced before schema v5): the base is what DingTalk holds.
    let old = snapshot.and_then(|s| s.dept_base()).or_else(|| {
        (linked || snapshot.is_some()).then(|| DeptBase {
            name: dept.name.clone(),
            parent: dept.parent_id,
            order: found.order,
        })
    });
    let stored = snapshot.and_then(|s| s.dept_base()).is_some();
    let mut base = old.clone().unwrap_or_default();
    // The order goes from JeecgBoot to DingTalk only (DingTalk's lists do not show it): a
    // pull keeps the base's, so a local reorder not pushed yet stays pending.
    base.order = old.as_ref().map_or(found.order, |b| b.order);
    let mut merge = Vec::new();
    let name = pull_name((found, dept), old.as_ref(), policy, (&mut base, &mut merge));
    let current = match locals.placement.get(&found.id).cloned().flatten() {
        Some(id) => LocalRef::Local(id),
        None => LocalRef::Top,
    };
    let pulled = pull_parent(
        locals,
        (found, dept),
        old.as_ref(),
        policy,
        (&mut base, &mut merge),
    );
    let new_parent = if pulled { parent } else { current.clone() };
    if name != found.name || new_parent != current {
        return vec![Op::UpdateLocalDept {
            local_id: found.id.clone(),
            dept_id: dept.dept_id,
            name,
            parent: new_parent,
            parent_dept_id: base.parent,
            order: found.order,
            base,
            merge,
        }];
    }
    // A base only inferred (a link from before schema v5) is written down now, so that the
    // next change on either side is told from the other.
    let record = !linked || old.as_ref() != Some(&base) || !stored;
    kept_in_place(found, dept.dept_id, base, merge, record)
}

/// The name the local department is to have: DingTalk's when the merge takes it (the base's
/// name follows), else its own.
fn pull_name(
    (found, dept): (&LocalDept, &RemoteDept),
    old: Option<&DeptBase>,
    policy: &Policy,
    (base, merge): (&mut DeptBase, &mut Vec<FieldMerge>),
) -> String {
    let was = old.map(|b| b.name.as_str());
    let Some(verdict) = judge(found.name.as_str(), dept.name.as_str(), was, policy) else {
        base.name = dept.name.clone();
        return found.name.clone();
    };
    let values = [found.name.clone(), dept.name.clone()];
    merge.push(note(
        "name",
        values,
        was.map(str::to_string),
        verdict,
        verdict.pull(),
    ));
    if verdict.pull() {
        base.name = dept.name.clone();
        dept.name.clone()
    } else {
        found.name.clone()
    }
}

/// Whether the local department moves to DingTalk's parent (the merge takes it; the base's
/// parent follows whenever DingTalk's is agreed or taken).
fn pull_parent(
    locals: &LocalDepts<'_>,
    (found, dept): (&LocalDept, &RemoteDept),
    old: Option<&DeptBase>,
    policy: &Policy,
    (base, merge): (&mut DeptBase, &mut Vec<FieldMerge>),
) -> bool {
    let local_parent = locals.parent_ding(&found.id);
    let was = old.map(|b| &b.parent);
    let Some(verdict) = judge(&local_parent, &dept.parent_id, was, policy) else {
        base.parent = dept.parent_id;
        return false;
    };
    let values = [local_parent.to_string(), dept.parent_id.to_string()];
    let taken = verdict.pull();
    merge.push(note(
        "parent",
        values,
        was.map(ToString::to_string),
        verdict,
        taken,
    ));
    if taken {
        base.parent = dept.parent_id;
    }
    taken
}

/// A local department that stays as it is: its merge notes, and its link and base when
/// `record`.
fn kept_in_place(
    found: &LocalDept,
    dept_id: i64,
    base: DeptBase,
    merge: Vec<FieldMerge>,
    record: bool,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if !merge.is_empty() {
        ops.push(Op::Merge {
            entity: entity::DEPT.into(),
            key: found.id.clone(),
            fields: merge,
        });
    }
    if record {
        ops.push(Op::LinkDept {
            local_id: found.id.clone(),
            dept_id,
            base,
        });
    }
    ops
}

/// A field a pull looked at: written here (`pull`) or left for the push.
fn note(
    field: &str,
    [jeecgboot, dingtalk]: [String; 2],
    base: Option<String>,
    verdict: Verdict,
    taken: bool,
) -> FieldMerge {
    FieldMerge {
        field: field.into(),
        jeecgboot,
        dingtalk,
        base,
        changed: verdict.changed,
        action: if taken { "pull" } else { "left for the push" }.into(),
        resolves_conflict: verdict.conflict() && taken,
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
                mask_value(column, value.unwrap_or_default()),
                other.username
            )
        })
    })
}

/// What a DingTalk user's lookup found locally.
enum Found<'a> {
    /// Its local user, and whether by its link.
    User(&'a LocalUser, bool),
    /// A local user with its userid as username but another mobile: not the same person.
    Mismatch(&'a LocalUser),
    /// Nobody.
    Nobody,
}

/// What a pull of users judges by: the local users a slice can match, by link, phone and
/// username, and the department map both ways.
struct Matcher<'a> {
    by_id: HashMap<&'a str, &'a LocalUser>,
    link_of_user: HashMap<&'a str, &'a str>,
    user_of_link: HashMap<&'a str, &'a str>,
    by_phone: HashMap<Cow<'a, str>, &'a LocalUser>,
    by_username: HashMap<&'a str, &'a LocalUser>,
    ding_of: HashMap<&'a str, i64>,
    rows: HashSet<(&'a str, &'a str)>,
}

impl<'a> Matcher<'a> {
    fn new(local: &'a LocalView, map: &'a HashMap<i64, LocalRef>) -> Self {
        let rows = local
            .links
            .iter()
            .map(|l| (l.user_id.as_str(), l.userid.as_str()));
        let snapshots = local
            .user_snapshots
            .values()
            .map(|s| (s.local_id.as_str(), s.ding_id.as_str()));
        let pairs: Vec<(&str, &str)> = rows.chain(snapshots).collect();
        Self {
            by_id: local.users.iter().map(|u| (u.id.as_str(), u)).collect(),
            link_of_user: pairs.iter().copied().collect(),
            user_of_link: pairs.iter().map(|(u, d)| (*d, *u)).collect(),
            by_phone: local
                .users
                .iter()
                .filter_map(|u| Some((mobile_key(u.phone.as_deref()?), u)))
                .collect(),
            by_username: local
                .users
                .iter()
                .map(|u| (u.username.as_str(), u))
                .collect(),
            rows: local
                .links
                .iter()
                .map(|l| (l.user_id.as_str(), l.userid.as_str()))
                .collect(),
            ding_of: map
                .iter()
                .filter_map(|(ding, r)| match r {
                    LocalRef::Local(id) => Some((id.as_str(), *ding)),
                    _ => None,
                })
                .collect(),
        }
    }

    /// The local user a DingTalk user is: by its link, its mobile, or its userid as a
    /// username — never a username alone when both have a mobile and they differ.
    fn find(&self, person: &DtUser) -> Found<'a> {
        let by_link = self
            .user_of_link
            .get(person.userid.as_str())
            .and_then(|id| self.by_id.get(id))
            .copied();
        if let Some(found) = by_link {
            return Found::User(found, true);
        }
        if let Some(found) = (!person.mobile.is_empty())
            .then(|| self.by_phone.get(&mobile_key(&person.mobile)).copied())
            .flatten()
        {
            return Found::User(found, false);
        }
        match self.by_username.get(person.userid.as_str()).copied() {
            Some(found)
                if !person.mobile.is_empty()
                    && found
                        .phone
                        .as_deref()
                        .is_some_and(|p| !p.is_empty() && !same_mobile(p, &person.mobile)) =>
            {
                Found::Mismatch(found)
            }
            Some(found) => Found::User(found, false),
            None => Found::Nobody,
        }
    }
}

/// Plans the DingTalk users `people` (one slice of them, or all) against `local`, which
/// holds every local user any of them could match or clash with, their links and snapshots.
/// `claimed` (local id -> DingTalk userid) carries matches from one slice to the next.
pub fn users_slice(
    local: &LocalView,
    people: &[DtUser],
    map: &HashMap<i64, LocalRef>,
    claimed: &mut HashMap<String, String>,
    policy: &Policy,
) -> Vec<Op> {
    let matcher = Matcher::new(local, map);
    let mut ops = Vec::new();
    for person in people {
        let depts = placed_depts(person, map);
        let (found, linked) = match matcher.find(person) {
            Found::User(found, linked) => (found, linked),
            Found::Mismatch(found) => {
                ops.push(mismatch_warning(found, person));
                continue;
            }
            Found::Nobody => {
                ops.push(unmatched(local, &matcher, person, depts));
                continue;
            }
        };
        if let Some(refused) = refused_match(&matcher, claimed, found, person) {
            ops.push(refused);
            continue;
        }
        let pull = UserPull {
            local,
            matcher: &matcher,
            found,
            person,
            linked,
            policy,
        };
        ops.extend(pull.plan(&depts));
    }
    ops
}

/// The local departments of DingTalk user `person` that `map` places (the others are left
/// out of its memberships).
fn placed_depts(person: &DtUser, map: &HashMap<i64, LocalRef>) -> Vec<LocalRef> {
    person
        .dept_id_list
        .iter()
        .filter_map(|d| map.get(d).cloned())
        .collect()
}

/// The warning for a DingTalk user whose userid a local user has as username, with another
/// mobile: not the same person, so not linked.
fn mismatch_warning(found: &LocalUser, person: &DtUser) -> Op {
    warn(
        &person.userid,
        format!(
            "local user {} has this userid as username but mobile {}, and DingTalk user {} has mobile {}: not the same person, so not linked (fix the mobile, or link them by hand in sys_third_account)",
            found.username,
            mask_mobile(found.phone.as_deref().unwrap_or_default()),
            person.userid,
            mask_mobile(&person.mobile)
        ),
    )
}

/// A DingTalk user no local user is: inserted (placed in `depts`), unless its link names a
/// local user deleted for good.
fn unmatched(
    local: &LocalView,
    matcher: &Matcher<'_>,
    person: &DtUser,
    depts: Vec<LocalRef>,
) -> Op {
    match matcher.user_of_link.get(person.userid.as_str()) {
        // Linked to a local user deleted for good (before the push removed its twin):
        // deleted locally stays deleted.
        Some(id) => warn(
            &person.userid,
            format!(
                "local user {id} linked to DingTalk user {} was deleted; not created again",
                person.userid
            ),
        ),
        None => create_op(local, person, depts),
    }
}

/// Why local user `found`, matched to DingTalk user `person`, takes nothing from it: it is
/// linked to another DingTalk user, matched already to another one (else it is `claimed`
/// now), or deleted locally.
fn refused_match(
    matcher: &Matcher<'_>,
    claimed: &mut HashMap<String, String>,
    found: &LocalUser,
    person: &DtUser,
) -> Option<Op> {
    if let Some(other) = matcher
        .link_of_user
        .get(found.id.as_str())
        .filter(|u| **u != person.userid)
    {
        return Some(fail(&person.userid, format!("matches local user {} by phone or username, but that user is linked to DingTalk user {other}", found.username)));
    }
    if let Some(first) = claimed.insert(found.id.clone(), person.userid.clone()) {
        return Some(fail(
            &person.userid,
            format!(
                "local user {} is already matched to DingTalk user {first}",
                found.username
            ),
        ));
    }
    found.is_deleted().then(|| {
        warn(
            &person.userid,
            format!(
                "local user {} is deleted locally (del_flag = 1); not restored",
                found.username
            ),
        )
    })
}

/// A pull of one matched user: each field merged against its base.
struct UserPull<'a> {
    local: &'a LocalView,
    matcher: &'a Matcher<'a>,
    found: &'a LocalUser,
    person: &'a DtUser,
    linked: bool,
    policy: &'a Policy,
}

impl UserPull<'_> {
    fn plan(&self, depts: &[LocalRef]) -> Vec<Op> {
        let (found, person) = (self.found, self.person);
        let snapshot = self
            .local
            .user_snapshots
            .get(&found.id)
            .filter(|s| s.ding_id == person.userid);
        // A link without a base (synced before schema v5): the base is what DingTalk holds.
        let old = snapshot
            .and_then(|s| s.user_base())
            .or_else(|| (self.linked || snapshot.is_some()).then(|| UserBase::of(person)));
        let mut base = old.clone().unwrap_or_default();
        let mut fields = LocalUserFields::default();
        let mut merge = Vec::new();
        self.texts(old.as_ref(), &mut base, &mut fields, &mut merge);
        self.mobile(old.as_ref(), &mut base, &mut fields, &mut merge);
        self.memberships(old.as_ref(), depts, &mut base, &mut fields, &mut merge);
        if base.title.is_empty() && old.is_none() {
            base.title = person.title.clone();
        }
        if let Some(reason) = clash(&self.local.users, Some(&found.id), &fields) {
            return vec![fail(&person.userid, reason)];
        }
        // A base only inferred (a link from before schema v5) is written down now.
        let stored = snapshot.and_then(|s| s.user_base()).is_some();
        let stale = !self.linked || old.as_ref() != Some(&base) || !stored;
        if fields.is_empty() && !stale {
            return if merge.is_empty() {
                Vec::new()
            } else {
                vec![Op::Merge {
                    entity: entity::USER.into(),
                    key: found.id.clone(),
                    fields: merge,
                }]
            };
        }
        vec![Op::UpdateLocalUser {
            local_id: found.id.clone(),
            userid: person.userid.clone(),
            unionid: Some(person.unionid.clone()).filter(|u| !u.is_empty()),
            fields,
            link: !self
                .matcher
                .rows
                .contains(&(found.id.as_str(), person.userid.as_str())),
            base,
            merge,
        }]
    }

    /// realname, email, telephone, work_no: written when DingTalk's side stands (never an
    /// empty value: DingTalk hides fields the app may not read).
    fn texts(
        &self,
        old: Option<&UserBase>,
        base: &mut UserBase,
        fields: &mut LocalUserFields,
        merge: &mut Vec<FieldMerge>,
    ) {
        let (found, person) = (self.found, self.person);
        let texts: [(&str, &str, &str, &mut Option<String>); 4] = [
            ("name", &found.realname, &person.name, &mut fields.realname),
            (
                "email",
                found.email.as_deref().unwrap_or_default(),
                &person.email,
                &mut fields.email,
            ),
            (
                "telephone",
                found.telephone.as_deref().unwrap_or_default(),
                &person.telephone,
                &mut fields.telephone,
            ),
            (
                "job_number",
                found.work_no.as_deref().unwrap_or_default(),
                &person.job_number,
                &mut fields.work_no,
            ),
        ];
        for (field, local, remote, slot) in texts {
            let was = old.map(|b| base_text(b, field).to_string());
            let Some(verdict) = judge(local, remote, was.as_deref(), self.policy) else {
                set_base_text(base, field, remote);
                continue;
            };
            let take = verdict.pull() && !remote.is_empty();
            if take {
                *slot = Some(remote.to_string());
                set_base_text(base, field, remote);
            } else if verdict.pull() && was.is_none() {
                set_base_text(base, field, remote);
            }
            merge.push(note(
                field,
                [local.into(), remote.into()],
                was,
                verdict,
                take,
            ));
        }
    }

    /// The mobile: written only when DingTalk is known to have changed it (or JeecgBoot has
    /// none); never over a local number without a base to tell, never from a hidden mobile.
    fn mobile(
        &self,
        old: Option<&UserBase>,
        base: &mut UserBase,
        fields: &mut LocalUserFields,
        merge: &mut Vec<FieldMerge>,
    ) {
        let local = self.found.phone.as_deref().unwrap_or_default();
        let remote = self.person.mobile.as_str();
        if remote.is_empty() {
            return;
        }
        let was = old.map(|b| mobile_key(&b.mobile).into_owned());
        let (l, r) = (mobile_key(local), mobile_key(remote));
        let Some(verdict) = judge(l.as_ref(), r.as_ref(), was.as_deref(), self.policy) else {
            base.mobile = remote.to_string();
            return;
        };
        let known = matches!(
            verdict.changed,
            Changed::Dingtalk | Changed::Both | Changed::Master
        ) || local.is_empty();
        let take = verdict.pull() && known;
        if take {
            fields.phone = Some(remote.to_string());
            base.mobile = remote.to_string();
        }
        merge.push(FieldMerge {
            field: "mobile".into(),
            jeecgboot: mask_mobile(local),
            dingtalk: mask_mobile(remote),
            base: was.as_deref().map(mask_mobile),
            changed: verdict.changed,
            action: if take {
                "pull"
            } else if verdict.pull() {
                "kept: a local mobile is not overwritten without knowing DingTalk changed it"
            } else {
                "left for the push"
            }
            .into(),
            resolves_conflict: verdict.conflict() && take,
        });
    }

    /// Memberships of the departments both sides know: DingTalk's moves are followed (added
    /// and removed) when JeecgBoot did not move the user itself; with no base only added.
    fn memberships(
        &self,
        old: Option<&UserBase>,
        depts: &[LocalRef],
        base: &mut UserBase,
        fields: &mut LocalUserFields,
        merge: &mut Vec<FieldMerge>,
    ) {
        let person = self.person;
        let (local, remote, was) = self.known_memberships(old);
        let adds = self.added_depts(depts);
        let Some(verdict) = judge(&local, &remote, was.as_ref(), self.policy) else {
            fields.add_depts = adds;
            base.depts = sorted(person.dept_id_list.clone());
            return;
        };
        let take = verdict.pull();
        if take {
            fields.add_depts = adds;
            if was.is_some() {
                fields.remove_depts = self.removed_depts(&remote);
            }
            base.depts = sorted(person.dept_id_list.clone());
        }
        let values = [joined(&local), joined(&remote)];
        merge.push(note(
            "depts",
            values,
            was.as_deref().map(joined),
            verdict,
            take,
        ));
    }

    /// The user's memberships of departments both sides know, as sorted DingTalk ids:
    /// JeecgBoot's, DingTalk's, and the base's (`old`'s) when there is one.
    fn known_memberships(&self, old: Option<&UserBase>) -> (Vec<i64>, Vec<i64>, Option<Vec<i64>>) {
        let local: Vec<i64> = sorted(
            self.found
                .depart_ids
                .iter()
                .filter_map(|id| self.matcher.ding_of.get(id.as_str()).copied())
                .collect(),
        );
        let mapped: HashSet<i64> = self.matcher.ding_of.values().copied().collect();
        let known =
            |ids: &[i64]| sorted(ids.iter().copied().filter(|d| mapped.contains(d)).collect());
        let remote = known(&self.person.dept_id_list);
        let was = old.map(|b| known(&b.depts));
        (local, remote, was)
    }

    /// The departments of `depts` (DingTalk's, placed locally) the user is not in yet.
    fn added_depts(&self, depts: &[LocalRef]) -> Vec<LocalRef> {
        let found = self.found;
        depts
            .iter()
            .filter(|d| !matches!(d, LocalRef::Local(id) if found.depart_ids.contains(id)))
            .cloned()
            .collect()
    }

    /// The user's local departments whose DingTalk twins are not among `remote` (its
    /// DingTalk memberships): the ones DingTalk moved it out of.
    fn removed_depts(&self, remote: &[i64]) -> Vec<String> {
        self.found
            .depart_ids
            .iter()
            .filter(|id| {
                self.matcher
                    .ding_of
                    .get(id.as_str())
                    .is_some_and(|d| !remote.contains(d))
            })
            .cloned()
            .collect()
    }
}

/// Department ids as `plan` shows them: joined by commas.
fn joined(ids: &[i64]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn base_text<'b>(base: &'b UserBase, field: &str) -> &'b str {
    match field {
        "name" => &base.name,
        "email" => &base.email,
        "telephone" => &base.telephone,
        "job_number" => &base.job_number,
        _ => "",
    }
}

fn set_base_text(base: &mut UserBase, field: &str, value: &str) {
    let slot = match field {
        "name" => &mut base.name,
        "email" => &mut base.email,
        "telephone" => &mut base.telephone,
        "job_number" => &mut base.job_number,
        _ => return,
    };
    *slot = value.to_string();
}

/// A DingTalk user the local side lacks: inserted, unless it would break a unique key or
/// DingTalk shows it without a mobile (JeecgBoot needs one; the app may lack the permission).
fn create_op(local: &LocalView, person: &DtUser, depts: Vec<LocalRef>) -> Op {
    if person.mobile.is_empty() {
        return warn(
            &person.userid,
            "DingTalk shows no mobile for this user (the app lacks the 企业员工手机号信息 permission, or the user has none): not inserted locally".into(),
        );
    }
    let nonempty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let fields = LocalUserFields {
        realname: nonempty(&person.name),
        phone: nonempty(&person.mobile),
        email: nonempty(&person.email),
        telephone: nonempty(&person.telephone),
        work_no: nonempty(&person.job_number),
        add_depts: depts,
        remove_depts: Vec::new(),
    };
    match clash(&local.users, None, &fields) {
        Some(reason) => fail(&person.userid, reason),
        None => Op::CreateLocalUser {
            userid: person.userid.clone(),
            unionid: Some(person.unionid.clone()).filter(|u| !u.is_empty()),
            fields,
            base: UserBase::of(person),
        },
    }
}
