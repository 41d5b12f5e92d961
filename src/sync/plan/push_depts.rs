//! Rule 3, departments local -> DingTalk: a department DingTalk has is updated, one it lacks
//! is created (parents first, `source_identifier` = local id, top level under root 1); a
//! department DingTalk has and the local side lacks is deleted (deepest first, never the
//! root), unless the deletion guard refuses. Posts and deleted locals are not pushed.

use std::collections::{HashMap, HashSet};

use crate::config::PushConfig;
use crate::jeecg::LocalDept;

use super::super::model::{
    content_hash, DeptRef, LocalView, Op, RemoteDept, RemoteView, ROOT_DEPT,
};

/// What the department plan gives the rest of the push plan.
pub(super) struct DeptPlan {
    /// Creates and updates, parents first.
    pub ops: Vec<Op>,
    /// Every pushed local department -> where it is (or will be) in DingTalk.
    pub map: HashMap<String, DeptRef>,
    /// DingTalk departments to delete, deepest first.
    pub deletes: Vec<(i64, String)>,
    /// Why the deletes are refused, if they are.
    pub refusal: Option<String>,
}

/// The snapshot hash of a pushed department.
pub fn dept_hash(name: &str, parent: &DeptRef, order: i64) -> String {
    let parent = match parent {
        DeptRef::Ding(id) => format!("d{id}"),
        DeptRef::Local(id) => format!("l{id}"),
    };
    content_hash(&[name, &parent, &order.to_string()])
}

fn pushable(dept: &LocalDept) -> bool {
    !dept.is_post() && !dept.is_deleted()
}

/// Pushable local departments, parents before children; each with its nearest pushable
/// ancestor (None: top level).
fn ordered(local: &[LocalDept]) -> Vec<(&LocalDept, Option<&LocalDept>)> {
    let by_id: HashMap<&str, &LocalDept> = local.iter().map(|d| (d.id.as_str(), d)).collect();
    let ancestor = |dept: &LocalDept| -> Option<&LocalDept> {
        let mut seen = HashSet::new();
        let mut parent = dept.parent_id.as_deref();
        while let Some(id) = parent {
            if !seen.insert(id) {
                return None; // a cycle in local data: treat as top level
            }
            match by_id.get(id) {
                Some(p) if pushable(p) => return Some(p),
                Some(p) => parent = p.parent_id.as_deref(),
                None => return None,
            }
        }
        None
    };
    let mut with_depth: Vec<(usize, &LocalDept, Option<&LocalDept>)> = local
        .iter()
        .filter(|d| pushable(d))
        .map(|d| {
            let mut depth = 0;
            let mut current = ancestor(d);
            while let Some(p) = current {
                depth += 1;
                current = if depth > local.len() {
                    None
                } else {
                    ancestor(p)
                };
            }
            (depth, d, ancestor(d))
        })
        .collect();
    with_depth.sort_by(|a, b| (a.0, &a.1.org_code, &a.1.id).cmp(&(b.0, &b.1.org_code, &b.1.id)));
    with_depth.into_iter().map(|(_, d, p)| (d, p)).collect()
}

fn remote_depth(remote: &HashMap<i64, &RemoteDept>, id: i64) -> usize {
    let mut depth = 0;
    let mut current = remote.get(&id).map(|d| d.parent_id);
    while let Some(parent) = current.filter(|p| *p != ROOT_DEPT && depth <= remote.len()) {
        depth += 1;
        current = remote.get(&parent).map(|d| d.parent_id);
    }
    depth
}

/// Each pushable department's nearest pushable ancestor (None: top level), as the push
/// places it; the pull compares against the same placement so the two never fight.
pub(super) fn effective_parents(local: &[LocalDept]) -> HashMap<String, Option<String>> {
    ordered(local)
        .into_iter()
        .map(|(d, p)| (d.id.clone(), p.map(|p| p.id.clone())))
        .collect()
}

pub(super) fn plan(local: &LocalView, remote: &RemoteView, config: &PushConfig) -> DeptPlan {
    let remote_by_id: HashMap<i64, &RemoteDept> =
        remote.depts.iter().map(|d| (d.dept_id, d)).collect();
    let order = ordered(&local.depts);
    let mut map: HashMap<String, DeptRef> = HashMap::new();
    let mut used: HashSet<i64> = HashSet::new();
    // Known links first: ding_identifier, then the snapshot.
    for (dept, _) in &order {
        let snapshot = local
            .dept_snapshots
            .get(&dept.id)
            .and_then(|s| s.ding_id.parse::<i64>().ok());
        let known = [dept.ding_identifier, snapshot]
            .into_iter()
            .flatten()
            .find(|id| remote_by_id.contains_key(id) && !used.contains(id));
        if let Some(id) = known {
            used.insert(id);
            map.insert(dept.id.clone(), DeptRef::Ding(id));
        }
    }
    let mut ops = Vec::new();
    let mut sibling_names: HashSet<(Option<&str>, &str)> = HashSet::new();
    for (dept, parent) in &order {
        if !sibling_names.insert((parent.map(|p| p.id.as_str()), dept.name.as_str())) {
            // DingTalk refuses two siblings of one name (60021): say so instead of failing a call.
            ops.push(Op::Fail {
                entity: super::super::model::entity::DEPT.into(),
                key: dept.id.clone(),
                reason: format!("a sibling department is also named {:?}; DingTalk needs unique names under one parent", dept.name),
            });
            continue;
        }
        let parent_ref = match parent {
            None => DeptRef::Ding(ROOT_DEPT),
            Some(p) => match map.get(&p.id) {
                Some(found) => found.clone(),
                None => {
                    ops.push(Op::Fail {
                        entity: super::super::model::entity::DEPT.into(),
                        key: dept.id.clone(),
                        reason: format!("its parent department {} cannot be pushed", p.id),
                    });
                    continue;
                }
            },
        };
        let hash = dept_hash(&dept.name, &parent_ref, dept.order);
        match map.get(&dept.id).cloned() {
            Some(DeptRef::Ding(id)) => {
                let current = remote_by_id[&id];
                let name = (current.name != dept.name).then(|| dept.name.clone());
                let moved = parent_ref != DeptRef::Ding(current.parent_id);
                let snapshot_hash = local
                    .dept_snapshots
                    .get(&dept.id)
                    .map(|s| s.content_hash.as_str());
                if name.is_some() || moved || snapshot_hash != Some(hash.as_str()) {
                    if name.is_none()
                        && !moved
                        && dept.ding_identifier == Some(id)
                        && snapshot_hash.is_none()
                    {
                        // Linked, in place, only never snapshotted: record it without a call.
                        ops.push(Op::LinkDept {
                            local_id: dept.id.clone(),
                            dept_id: id,
                            hash,
                        });
                        continue;
                    }
                    ops.push(Op::UpdateDept {
                        local_id: dept.id.clone(),
                        dept_id: id,
                        name,
                        parent: moved.then(|| parent_ref.clone()),
                        order: Some(dept.order),
                        source_identifier: None,
                        hash,
                    });
                } else if dept.ding_identifier != Some(id) {
                    ops.push(Op::LinkDept {
                        local_id: dept.id.clone(),
                        dept_id: id,
                        hash,
                    });
                }
            }
            _ => {
                // Adopt a DingTalk department of the same name under the same parent (made
                // by hand, or by a create whose answer was lost); else create it.
                let adopt = match &parent_ref {
                    DeptRef::Ding(parent_id) => remote.depts.iter().find(|r| {
                        r.parent_id == *parent_id
                            && r.name == dept.name
                            && !used.contains(&r.dept_id)
                    }),
                    DeptRef::Local(_) => None,
                };
                match adopt {
                    Some(found) => {
                        used.insert(found.dept_id);
                        map.insert(dept.id.clone(), DeptRef::Ding(found.dept_id));
                        ops.push(Op::UpdateDept {
                            local_id: dept.id.clone(),
                            dept_id: found.dept_id,
                            name: None,
                            parent: None,
                            order: Some(dept.order),
                            source_identifier: Some(dept.id.clone()),
                            hash,
                        });
                    }
                    None => {
                        map.insert(dept.id.clone(), DeptRef::Local(dept.id.clone()));
                        ops.push(Op::CreateDept {
                            local_id: dept.id.clone(),
                            name: dept.name.clone(),
                            parent: parent_ref,
                            order: dept.order,
                            hash,
                        });
                    }
                }
            }
        }
    }
    // Moves must not run before the new parent exists: creates first, then updates by depth
    // (the order above is already parents-first, and creates keep their relative order).
    // A rename onto a name a DingTalk sibling still holds goes after the renames that free it.
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
                None => remote_by_id[dept_id].parent_id,
            };
            remote
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
    let mut deletes: Vec<(i64, String)> = remote
        .depts
        .iter()
        .filter(|r| !used.contains(&r.dept_id) && r.dept_id != ROOT_DEPT)
        .map(|r| (r.dept_id, r.name.clone()))
        .collect();
    deletes.sort_by_key(|(id, _)| (std::cmp::Reverse(remote_depth(&remote_by_id, *id)), *id));
    let refusal = deletion_refusal(deletes.len(), order.len(), config.max_department_deletes);
    DeptPlan {
        ops,
        map,
        deletes,
        refusal,
    }
}

/// The deletion guard: `deletes` DingTalk departments are about to go while the local tree
/// has `local` pushable departments. Refused (with the reason, naming the count) when the
/// local tree is empty or when more than `max` would go. A full push counts its plan's
/// deletes; the daemon counts the synced departments whose local row is gone.
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

/// One department's push, for a job: `current` is its DingTalk state when it has one,
/// `siblings` the DingTalk children of its parent (for adoption by name) when it has none.
pub fn plan_dept_job(
    dept: &LocalDept,
    parent: &DeptRef,
    current: Option<&RemoteDept>,
    siblings: &[RemoteDept],
    snapshot_hash: Option<&str>,
) -> Vec<Op> {
    let hash = dept_hash(&dept.name, parent, dept.order);
    match current {
        Some(current) => {
            let name = (current.name != dept.name).then(|| dept.name.clone());
            let moved = *parent != DeptRef::Ding(current.parent_id);
            if name.is_some() || moved || snapshot_hash != Some(hash.as_str()) {
                vec![Op::UpdateDept {
                    local_id: dept.id.clone(),
                    dept_id: current.dept_id,
                    name,
                    parent: moved.then(|| parent.clone()),
                    order: Some(dept.order),
                    source_identifier: None,
                    hash,
                }]
            } else if dept.ding_identifier != Some(current.dept_id) {
                vec![Op::LinkDept {
                    local_id: dept.id.clone(),
                    dept_id: current.dept_id,
                    hash,
                }]
            } else {
                Vec::new()
            }
        }
        None => match siblings
            .iter()
            .find(|s| s.name == dept.name && DeptRef::Ding(s.parent_id) == *parent)
        {
            Some(found) => vec![Op::UpdateDept {
                local_id: dept.id.clone(),
                dept_id: found.dept_id,
                name: None,
                parent: None,
                order: Some(dept.order),
                source_identifier: Some(dept.id.clone()),
                hash,
            }],
            None => vec![Op::CreateDept {
                local_id: dept.id.clone(),
                name: dept.name.clone(),
                parent: parent.clone(),
                order: dept.order,
                hash,
            }],
        },
    }
}

/// Deleting one DingTalk department, for a job: its members moved out first (other
/// memberships kept, root 1 only when none is left).
pub fn plan_dept_removal(
    dept_id: i64,
    name: &str,
    members: &[crate::dingtalk::types::DtUser],
) -> Vec<Op> {
    let mut ops: Vec<Op> = members
        .iter()
        .map(|user| {
            let mut keep: Vec<i64> = user
                .dept_id_list
                .iter()
                .copied()
                .filter(|d| *d != dept_id)
                .collect();
            if keep.is_empty() {
                keep.push(ROOT_DEPT);
            }
            Op::MoveMembersOut {
                userid: user.userid.clone(),
                keep,
            }
        })
        .collect();
    ops.push(Op::DeleteDept {
        dept_id,
        name: name.to_string(),
    });
    ops
}
