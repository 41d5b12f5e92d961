//! Pure planning: (local view, remote view, snapshots, config) -> ordered operations.
//! **No I/O here**: everything the rules need is in the views.
//!
//! A push plan runs: department creates and updates (parents first), user creates and
//! updates, members moved out of departments about to go, department deletes (deepest
//! first), user deletes. A pull plan runs: local department creates and updates, then users.

mod pull;
mod push_depts;
mod push_users;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use crate::config::PushConfig;

use super::model::{DeptRef, LocalView, Op, RemoteView, Scope, ROOT_DEPT};

pub use pull::plan_pull;
pub use push_depts::{dept_hash, plan_dept_job, plan_dept_removal};
pub use push_users::user_hash;

/// A planned run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// Set when the deletion guard refused the department deletes (nothing is deleted).
    pub refused_deletes: Option<String>,
    /// Entities looked at (for the "skipped" count).
    pub considered: usize,
}

impl Plan {
    /// Operations that call a DingTalk write API.
    pub fn dingtalk_writes(&self) -> usize {
        self.ops.iter().filter(|op| op.writes_dingtalk()).count()
    }
}

/// Plans a push of `scope` for one tenant.
pub fn plan_push(
    local: &LocalView,
    remote: &RemoteView,
    config: &PushConfig,
    scope: Scope,
) -> Plan {
    let depts = push_depts::plan(local, remote, config);
    let mut plan = Plan::default();
    if scope.departments() && config.departments {
        plan.ops.extend(depts.ops);
        plan.considered += depts.map.len();
    }
    let mut final_depts: HashMap<String, Vec<DeptRef>> = HashMap::new();
    if scope.users() && config.users {
        let users = push_users::plan(local, remote, &depts.map, config);
        final_depts = users.final_depts;
        plan.considered += local.users.iter().filter(|u| !u.is_deleted()).count();
        plan.ops.extend(users.ops);
    }
    if scope.departments() && config.departments && config.delete_departments {
        match depts.refusal {
            Some(reason) => plan.refused_deletes = Some(reason),
            None => {
                plan.ops
                    .extend(move_members_out(remote, &depts.deletes, &final_depts));
                plan.ops
                    .extend(depts.deletes.iter().map(|(dept_id, name)| Op::DeleteDept {
                        dept_id: *dept_id,
                        name: name.clone(),
                    }));
            }
        }
    }
    plan
}

/// Plans one user's push, for a job: `local` holds that user (and its link and snapshot),
/// `remote` its DingTalk twin if found, `map` its departments' DingTalk ids.
pub fn plan_user_job(
    local: &LocalView,
    remote: &RemoteView,
    map: &HashMap<String, DeptRef>,
    config: &PushConfig,
) -> Plan {
    Plan {
        ops: push_users::plan(local, remote, map, config).ops,
        refused_deletes: None,
        considered: 1,
    }
}

/// Each pushable department's nearest pushable ancestor (None: top level).
pub fn dept_placement(depts: &[crate::jeecg::LocalDept]) -> HashMap<String, Option<String>> {
    push_depts::effective_parents(depts)
}

/// For every DingTalk user still in a department about to be deleted (after the user
/// updates of this plan), a membership diff: other memberships kept, root 1 only when none
/// is left. Members of deleted departments are never thrown to root wholesale.
fn move_members_out(
    remote: &RemoteView,
    deletes: &[(i64, String)],
    final_depts: &HashMap<String, Vec<DeptRef>>,
) -> Vec<Op> {
    let doomed: HashSet<i64> = deletes.iter().map(|(id, _)| *id).collect();
    let mut ops = Vec::new();
    for user in &remote.users {
        let current: Vec<i64> = match final_depts.get(&user.userid) {
            Some(planned) => planned
                .iter()
                .filter_map(|d| {
                    if let DeptRef::Ding(id) = d {
                        Some(*id)
                    } else {
                        None
                    }
                })
                .collect(),
            None => user.dept_id_list.clone(),
        };
        if !current.iter().any(|d| doomed.contains(d)) {
            continue;
        }
        let mut keep: Vec<i64> = current
            .into_iter()
            .filter(|d| !doomed.contains(d))
            .collect();
        if keep.is_empty()
            && final_depts
                .get(&user.userid)
                .is_none_or(|p| p.iter().all(|d| matches!(d, DeptRef::Ding(_))))
        {
            keep.push(ROOT_DEPT);
        }
        if !keep.is_empty() {
            ops.push(Op::MoveMembersOut {
                userid: user.userid.clone(),
                keep,
            });
        }
    }
    ops
}
