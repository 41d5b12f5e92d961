//! Rule 3, departments local -> DingTalk: a department DingTalk has is updated, one it lacks
//! is created (parents first, `source_identifier` = local id, top level under root 1); a
//! department DingTalk has and the local side lacks is deleted (deepest first, never the
//! root), unless the deletion guard refuses. Posts and deleted locals are not pushed; what
//! DingTalk would refuse (see `tree`) is reported, and its users go to its nearest pushed
//! ancestor.
//!
//! The same function plans a full run (DingTalk's whole tree read) and a job (one department,
//! DingTalk read around it: its twin, the siblings it may adopt, the subtree it may delete);
//! in a job's partial view, departments that were not read are trusted from the local links.

use std::collections::{HashMap, HashSet};

use crate::jeecg::LocalDept;

use super::super::model::{
    entity, DeptBase, DeptRef, FieldMerge, LocalView, Op, RemoteDept, RemoteView, ROOT_DEPT,
};
use super::merge::{judge, Policy, Verdict};
use super::tree::DeptTree;
use super::Focus;

/// What the department plan gives the rest of the push plan.
pub(super) struct DeptPlan {
    /// Creates and updates (parents first) and refusals, of the departments in focus.
    pub ops: Vec<Op>,
    /// Every pushed local department -> where it is (or will be) in DingTalk; a refused one
    /// that DingTalk lacks -> its nearest pushed ancestor's place (or root 1).
    pub map: HashMap<String, DeptRef>,
    /// Refused departments that DingTalk lacks, with the reason (their users are placed
    /// higher up, with a warning).
    pub fallback: HashMap<String, String>,
    /// DingTalk departments to delete, deepest first.
    pub deletes: Vec<(i64, String)>,
    /// Why the deletes are refused, if they are.
    pub refusal: Option<String>,
    /// Local departments whose DingTalk twins sit under a department about to be deleted:
    /// they must move first (a job waits for theirs).
    pub blocked: Vec<String>,
}

/// DingTalk's departments as one plan sees them: what was read, and whether the rest exists.
struct Remote<'a> {
    view: &'a RemoteView,
    by_id: HashMap<i64, &'a RemoteDept>,
}

impl<'a> Remote<'a> {
    fn new(view: &'a RemoteView) -> Self {
        Self {
            view,
            by_id: view.depts.iter().map(|d| (d.dept_id, d)).collect(),
        }
    }

    /// Whether DingTalk has department `id`: read and found, or (in a partial view) not read
    /// and not known to be gone.
    fn exists(&self, id: i64) -> bool {
        self.by_id.contains_key(&id) || (self.view.partial && !self.view.absent.contains(&id))
    }

    fn get(&self, id: i64) -> Option<&'a RemoteDept> {
        self.by_id.get(&id).copied()
    }

    fn depth(&self, id: i64) -> usize {
        let mut depth = 0;
        let mut current = self.get(id).map(|d| d.parent_id);
        while let Some(parent) = current.filter(|p| *p != ROOT_DEPT && depth <= self.by_id.len()) {
            depth += 1;
            current = self.get(parent).map(|d| d.parent_id);
        }
        depth
    }
}

/// The DingTalk id a local department is known by: `ding_identifier`, else its snapshot.
fn known_ding_ids(dept: &LocalDept, local: &LocalView) -> [Option<i64>; 2] {
    let snapshot = local
        .dept_snapshots
        .get(&dept.id)
        .and_then(|s| s.ding_id.parse::<i64>().ok());
    [dept.ding_identifier, snapshot]
}

/// Known links first (`ding_identifier`, then the snapshot), for every pushed department:
/// where each is in DingTalk, and which DingTalk departments are taken (by whom).
fn known_links(
    tree: &DeptTree<'_>,
    local: &LocalView,
    remote: &Remote<'_>,
) -> (HashMap<String, DeptRef>, HashMap<i64, String>) {
    let mut map = HashMap::new();
    let mut owner: HashMap<i64, String> = HashMap::new();
    for dept in tree.order() {
        let known = known_ding_ids(dept, local)
            .into_iter()
            .flatten()
            .find(|id| remote.exists(*id) && !owner.contains_key(id));
        if let Some(id) = known {
            owner.insert(id, dept.id.clone());
            map.insert(dept.id.clone(), DeptRef::Ding(id));
        }
    }
    (map, owner)
}

/// Plans the departments of a push: ops for the departments in `focus`, the place of every
/// pushed department, and the deletes (all unmatched DingTalk departments in a full run; the
/// focus's twin and its subtree in a job).
pub(super) fn plan(
    local: &LocalView,
    remote: &RemoteView,
    rules: &super::Rules,
    focus: &Focus,
) -> DeptPlan {
    let tree = DeptTree::new(&local.depts, &local.dead_depts);
    let remote = Remote::new(remote);
    let (map, owner) = known_links(&tree, local, &remote);
    let mut placing = Placing {
        map,
        owner,
        ops: Vec::new(),
        fallback: HashMap::new(),
    };
    let views = DeptViews {
        tree: &tree,
        local,
        remote: &remote,
        rules,
    };
    for dept in tree.order() {
        placing.place(&views, dept, focus.dept(dept.id.as_str()));
    }
    sort_ops(&mut placing.ops, &remote);
    let deleting = Deleting {
        tree: &tree,
        local,
        remote: &remote,
        owner: &placing.owner,
        max: rules.push.max_department_deletes,
    };
    let gone = deleting.plan(focus);
    placing.into_plan(gone)
}

/// The departments' plan as it is built, parents first.
struct Placing {
    /// Each local department's place in DingTalk.
    map: HashMap<String, DeptRef>,
    /// DingTalk department -> the local department holding it.
    owner: HashMap<i64, String>,
    ops: Vec<Op>,
    /// Departments DingTalk lacks and will not get, with the reason.
    fallback: HashMap<String, String>,
}

/// What a department plan judges by: the local tree, the local view, DingTalk's
/// departments, and the rules.
struct DeptViews<'a> {
    tree: &'a DeptTree<'a>,
    local: &'a LocalView,
    remote: &'a Remote<'a>,
    rules: &'a super::Rules,
}

impl Placing {
    /// Places local department `dept`, whose parent is placed already (the order is
    /// parents-first): refused, updated or linked where DingTalk has it, left to its parent
    /// when departments are not pushed, else adopted or created. Operations only `in_focus`.
    fn place(&mut self, views: &DeptViews<'_>, dept: &LocalDept, in_focus: bool) {
        let id = dept.id.as_str();
        // Parents come first, so theirs is known.
        let parent = views
            .tree
            .parent(id)
            .and_then(|p| self.map.get(p).cloned())
            .unwrap_or(DeptRef::Ding(ROOT_DEPT));
        if let Some(reason) = views.tree.refusal(id) {
            self.refuse(id, parent, reason, in_focus);
            return;
        }
        match self.map.get(id).cloned() {
            Some(DeptRef::Ding(ding)) => {
                if let Some(current) = views.remote.get(ding).filter(|_| in_focus) {
                    let policy = views.rules.policy.depts();
                    let ops = update_or_link(views.local, dept, current, &parent, &policy);
                    self.ops.extend(ops);
                }
            }
            // Departments are not pushed: one DingTalk lacks stays missing, and its users go
            // to its nearest pushed parent (as for a refused one).
            _ if !views.rules.push.departments => self.fall_back(
                id,
                parent,
                "departments are not pushed ([push] departments = false)",
            ),
            _ => self.adopt_or_create(views.remote, dept, parent, in_focus),
        }
    }

    /// The department plan: what was placed, and the deletes `gone`.
    fn into_plan(self, gone: Deletes) -> DeptPlan {
        DeptPlan {
            ops: self.ops,
            map: self.map,
            fallback: self.fallback,
            deletes: gone.deletes,
            refusal: gone.refusal,
            blocked: gone.blocked,
        }
    }

    /// Department `id` is one DingTalk would refuse: failed (when in focus), its users
    /// placed under `parent` unless it is linked already.
    fn refuse(&mut self, id: &str, parent: DeptRef, reason: &str, in_focus: bool) {
        if in_focus {
            self.ops.push(Op::Fail {
                entity: entity::DEPT.into(),
                key: id.to_string(),
                reason: reason.to_string(),
            });
        }
        if !self.map.contains_key(id) {
            self.fall_back(id, parent, reason);
        }
    }

    /// Department `id` is not pushed: its users go to `parent`, for `reason`.
    fn fall_back(&mut self, id: &str, parent: DeptRef, reason: &str) {
        self.map.insert(id.to_string(), parent);
        self.fallback.insert(id.to_string(), reason.to_string());
    }

    /// A department DingTalk lacks: adopts a DingTalk department of the same name under the
    /// same parent that no other local department holds (made by hand, or by a create whose
    /// answer was lost); else creates it.
    fn adopt_or_create(
        &mut self,
        remote: &Remote<'_>,
        dept: &LocalDept,
        parent: DeptRef,
        in_focus: bool,
    ) {
        let id = dept.id.as_str();
        let adopt = match &parent {
            DeptRef::Ding(parent_id) => remote.view.depts.iter().find(|r| {
                r.parent_id == *parent_id
                    && r.name == dept.name
                    && !self.owner.contains_key(&r.dept_id)
            }),
            DeptRef::Local(_) => None,
        };
        let Some(found) = adopt else {
            self.map
                .insert(id.to_string(), DeptRef::Local(id.to_string()));
            if in_focus {
                self.ops.push(Op::CreateDept {
                    local_id: id.to_string(),
                    name: dept.name.clone(),
                    parent,
                    order: dept.order,
                });
            }
            return;
        };
        self.owner.insert(found.dept_id, id.to_string());
        self.map
            .insert(id.to_string(), DeptRef::Ding(found.dept_id));
        if in_focus {
            let parent_id = match &parent {
                DeptRef::Ding(p) => *p,
                DeptRef::Local(_) => 0,
            };
            self.ops.push(Op::UpdateDept {
                local_id: id.to_string(),
                dept_id: found.dept_id,
                name: None,
                parent: None,
                order: Some(dept.order),
                source_identifier: Some(id.to_string()),
                base: DeptBase {
                    name: dept.name.clone(),
                    parent: parent_id,
                    order: dept.order,
                },
                merge: Vec::new(),
            });
        }
    }
}

/// The update (or the link only) of a department DingTalk has: its name and parent merged
/// against the base (a console rename or move is left for the pull), its order sent when
/// JeecgBoot changed it (DingTalk's listing does not show it).
fn update_or_link(
    local: &LocalView,
    dept: &LocalDept,
    current: &RemoteDept,
    parent: &DeptRef,
    policy: &Policy,
) -> Vec<Op> {
    let old = local
        .dept_snapshots
        .get(&dept.id)
        .filter(|s| s.ding_id == current.dept_id.to_string())
        .and_then(|s| s.dept_base());
    let mut base = old.clone().unwrap_or(DeptBase {
        name: current.name.clone(),
        parent: current.parent_id,
        order: dept.order,
    });
    let mut merge = Vec::new();
    let name = settle_name(dept, current, old.as_ref(), policy, (&mut base, &mut merge));
    let moved = settle_parent(
        parent,
        current,
        old.as_ref(),
        policy,
        (&mut base, &mut merge),
    );
    // The order: JeecgBoot's only (DingTalk's listing does not show it), sent when it
    // changed since the base. Without a base (synced before bases) it is taken as agreed.
    let order = old
        .as_ref()
        .is_some_and(|b| b.order != dept.order)
        .then_some(dept.order);
    base.order = dept.order;
    if name.is_some() || moved.is_some() || order.is_some() {
        return vec![Op::UpdateDept {
            local_id: dept.id.clone(),
            dept_id: current.dept_id,
            name,
            parent: moved,
            order,
            source_identifier: None,
            base,
            merge,
        }];
    }
    in_place(dept, current.dept_id, old.as_ref(), base, merge)
}

/// A department DingTalk has as it should be: its merge notes, and its link and base
/// recorded when they changed, without a call.
fn in_place(
    dept: &LocalDept,
    dept_id: i64,
    old: Option<&DeptBase>,
    base: DeptBase,
    merge: Vec<FieldMerge>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if !merge.is_empty() {
        ops.push(Op::Merge {
            entity: entity::DEPT.into(),
            key: dept.id.clone(),
            fields: merge,
        });
    }
    let linked = dept.ding_identifier == Some(dept_id);
    if !linked || old != Some(&base) {
        ops.push(Op::LinkDept {
            local_id: dept.id.clone(),
            dept_id,
            base,
        });
    }
    ops
}

/// Notes the verdict on one field (`values`: JeecgBoot's, DingTalk's) in `merge`; whether
/// JeecgBoot's value is to be pushed (else it is left for the pull).
fn noted(
    merge: &mut Vec<FieldMerge>,
    field: &str,
    [jeecgboot, dingtalk]: [String; 2],
    base: Option<String>,
    verdict: Verdict,
) -> bool {
    let push = verdict.push();
    merge.push(FieldMerge {
        field: field.into(),
        jeecgboot,
        dingtalk,
        base,
        changed: verdict.changed,
        action: if push { "push" } else { "left for the pull" }.into(),
        resolves_conflict: verdict.conflict() && push,
    });
    push
}

/// The name to send, if JeecgBoot's is to be pushed; the base's name follows.
fn settle_name(
    dept: &LocalDept,
    current: &RemoteDept,
    old: Option<&DeptBase>,
    policy: &Policy,
    (base, merge): (&mut DeptBase, &mut Vec<FieldMerge>),
) -> Option<String> {
    let was = old.map(|b| b.name.as_str());
    let Some(verdict) = judge(dept.name.as_str(), current.name.as_str(), was, policy) else {
        base.name = dept.name.clone();
        return None;
    };
    let values = [dept.name.clone(), current.name.clone()];
    noted(merge, "name", values, was.map(str::to_string), verdict).then(|| {
        base.name = dept.name.clone();
        dept.name.clone()
    })
}

/// The parent to move the department under, if it is to move; the base's parent follows.
fn settle_parent(
    parent: &DeptRef,
    current: &RemoteDept,
    old: Option<&DeptBase>,
    policy: &Policy,
    (base, merge): (&mut DeptBase, &mut Vec<FieldMerge>),
) -> Option<DeptRef> {
    let wanted = match parent {
        DeptRef::Ding(id) => Some(*id),
        DeptRef::Local(_) => None,
    };
    let verdict = match wanted {
        Some(id) => judge(&id, &current.parent_id, old.map(|b| &b.parent), policy),
        None => judge(&0, &current.parent_id, None, policy),
    };
    let Some(verdict) = verdict else {
        base.parent = current.parent_id;
        return None;
    };
    let values = [format!("{parent:?}"), current.parent_id.to_string()];
    let was = old.map(|b| b.parent.to_string());
    noted(merge, "parent", values, was, verdict).then(|| {
        base.parent = wanted.unwrap_or(0);
        parent.clone()
    })
}

/// Moves must not run before the new parent exists: refusals and creates first, then updates
/// by depth (the order is already parents-first, and creates keep their relative order). A
/// rename onto a name a DingTalk sibling still holds goes after the renames that free it.
fn sort_ops(ops: &mut [Op], remote: &Remote<'_>) {
    let takes_held_name = |op: &Op| match op {
        Op::UpdateDept {
            dept_id,
            name: Some(name),
            parent,
            ..
        } => {
            let parent_id = match parent {
                Some(DeptRef::Ding(p)) => *p,
                Some(DeptRef::Local(_)) => return false,
                None => match remote.get(*dept_id) {
                    Some(current) => current.parent_id,
                    None => return false,
                },
            };
            remote
                .view
                .depts
                .iter()
                .any(|r| r.parent_id == parent_id && r.name == *name && r.dept_id != *dept_id)
        }
        _ => false,
    };
    ops.sort_by_key(|op| match op {
        Op::Fail { .. } => 0,
        Op::CreateDept { .. } => 1,
        op if takes_held_name(op) => 3,
        _ => 2,
    });
}

/// The deletes of a plan and the guard's verdict on them.
struct Deletes {
    deletes: Vec<(i64, String)>,
    refusal: Option<String>,
    blocked: Vec<String>,
}

/// What the deletes of a plan are judged by: the local tree, the views, which DingTalk
/// departments a local one holds, and the guard's limit (`push.max_department_deletes`).
struct Deleting<'a> {
    tree: &'a DeptTree<'a>,
    local: &'a LocalView,
    remote: &'a Remote<'a>,
    /// DingTalk department -> the local department holding it.
    owner: &'a HashMap<i64, String>,
    max: u32,
}

impl Deleting<'_> {
    /// The deletes `focus` asks for: every unmatched DingTalk department in a full run; a
    /// job of a department gone locally, its twin's subtree; any other job, none.
    fn plan(&self, focus: &Focus) -> Deletes {
        match focus {
            Focus::All => self.unmatched(),
            Focus::Dept(key) if !self.tree.contains(key) => match self.twin(key) {
                Some(twin) => self.subtree(key, twin),
                None => Deletes::none(),
            },
            _ => Deletes::none(),
        }
    }

    /// A full run's deletes: every DingTalk department no local one holds (never the root),
    /// deepest first.
    fn unmatched(&self) -> Deletes {
        let mut deletes: Vec<(i64, String)> = self
            .remote
            .view
            .depts
            .iter()
            .filter(|r| !self.owner.contains_key(&r.dept_id) && r.dept_id != ROOT_DEPT)
            .map(|r| (r.dept_id, r.name.clone()))
            .collect();
        deletes.sort_by_key(|(id, _)| (std::cmp::Reverse(self.remote.depth(*id)), *id));
        let refusal = deletion_refusal(deletes.len(), self.tree.len(), self.max);
        Deletes {
            deletes,
            refusal,
            blocked: Vec::new(),
        }
    }

    /// The DingTalk twin of department `key` (gone locally) that a job may delete: known by
    /// its row's `ding_identifier` or its snapshot, read, not the root, and held by no other
    /// local department.
    fn twin(&self, key: &str) -> Option<i64> {
        let row = self.local.depts.iter().find(|d| d.id == *key);
        let twin = row.and_then(|d| d.ding_identifier).or_else(|| {
            self.local
                .dept_snapshots
                .get(key)
                .and_then(|s| s.ding_id.parse().ok())
        });
        twin.filter(|t| {
            *t != ROOT_DEPT && self.remote.get(*t).is_some() && !self.owner.contains_key(t)
        })
    }

    /// A job's deletes: the twin of a department gone locally, and the DingTalk departments
    /// under it that no local department holds (deepest first). One that a local department
    /// holds must move out first: the job waits for that department's own job.
    fn subtree(&self, key: &str, twin: i64) -> Deletes {
        let members = self.below(twin);
        let blocked: Vec<String> = members
            .iter()
            .filter_map(|id| self.owner.get(id).cloned())
            .collect();
        if !blocked.is_empty() {
            return Deletes {
                deletes: Vec::new(),
                refusal: None,
                blocked,
            };
        }
        let mut deletes: Vec<(i64, String)> = members
            .iter()
            .filter_map(|id| self.remote.get(*id).map(|d| (d.dept_id, d.name.clone())))
            .collect();
        deletes.sort_by_key(|(id, _)| (std::cmp::Reverse(self.remote.depth(*id)), *id));
        // The daemon's count: the departments dingsync synced whose local row is gone (their
        // jobs are on the way), this one included, and what else goes with it.
        let synced_gone: HashSet<&str> = self
            .local
            .dept_snapshots
            .keys()
            .map(String::as_str)
            .filter(|id| !self.tree.contains(id))
            .chain(std::iter::once(key))
            .collect();
        let count = synced_gone.len() + deletes.len().saturating_sub(1);
        let refusal = deletion_refusal(count, self.tree.len(), self.max);
        Deletes {
            deletes,
            refusal,
            blocked: Vec::new(),
        }
    }

    /// DingTalk department `twin` and every department read under it, parents first.
    fn below(&self, twin: i64) -> Vec<i64> {
        let mut members = vec![twin];
        let mut index = 0;
        while let Some(parent) = members.get(index).copied() {
            let below: Vec<i64> = self
                .remote
                .view
                .depts
                .iter()
                .filter(|d| d.parent_id == parent && !members.contains(&d.dept_id))
                .map(|d| d.dept_id)
                .collect();
            members.extend(below);
            index += 1;
        }
        members
    }
}

impl Deletes {
    /// No deletes, nothing refused, nothing waited for.
    fn none() -> Self {
        Self {
            deletes: Vec::new(),
            refusal: None,
            blocked: Vec::new(),
        }
    }
}

/// The deletion guard: `deletes` DingTalk departments are about to go while the local tree
/// has `local` pushable departments. Refused (with the reason, naming the count) when the
/// local tree is empty or when more than `max` would go. A full run counts its plan's
/// deletes; a job counts the synced departments whose local row is gone.
pub fn deletion_refusal(deletes: usize, local: usize, max: u32) -> Option<String> {
    if deletes == 0 {
        None
    } else if local == 0 {
        Some(format!(
            "the local department tree is empty; refusing to delete {deletes} DingTalk departments"
        ))
    } else if deletes > max as usize {
        Some(format!(
            "{deletes} DingTalk departments would be deleted, more than push.max_department_deletes = {max}; nothing deleted"
        ))
    } else {
        None
    }
}
