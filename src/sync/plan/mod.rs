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

pub use pull::{plan_pull, pull_departments, users_slice as pull_users_slice};
pub use push_depts::{deletion_refusal, dept_hash, plan_dept_job, plan_dept_removal};
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

/// Plans a push of `scope` for one tenant, all of `local` at once.
pub fn plan_push(
    local: &LocalView,
    remote: &RemoteView,
    config: &PushConfig,
    scope: Scope,
) -> Plan {
    let (mut planner, mut plan) = PushPlanner::new(local, remote, config, scope);
    plan.ops.extend(planner.users(local, remote));
    plan.considered += planner.considered;
    let tail = planner.finish(push_users::gone_users(local), remote);
    plan.ops.extend(tail.ops);
    plan.refused_deletes = tail.refused_deletes;
    plan
}

/// A push planned in parts, so that a run never holds every local user at once: the
/// departments first ([`PushPlanner::new`]), then the users slice by slice
/// ([`PushPlanner::users`]), then member moves, department deletes and user deletes
/// ([`PushPlanner::finish`]). The same rules as [`plan_push`], which is the three in a row.
pub struct PushPlanner {
    config: PushConfig,
    scope: Scope,
    map: HashMap<String, DeptRef>,
    deletes: Vec<(i64, String)>,
    refusal: Option<String>,
    claims: push_users::Claims,
    /// Users planned so far (for the "skipped" count).
    pub considered: usize,
}

impl PushPlanner {
    /// Plans the departments of `local` (its users are not looked at) and returns the
    /// planner with the department creates and updates.
    pub fn new(
        local: &LocalView,
        remote: &RemoteView,
        config: &PushConfig,
        scope: Scope,
    ) -> (Self, Plan) {
        let depts = push_depts::plan(local, remote, config);
        let mut plan = Plan::default();
        let departments = scope.departments() && config.departments;
        if departments {
            plan.ops.extend(depts.ops);
            plan.considered += depts.map.len();
        }
        let mut claims = push_users::Claims::default();
        if departments && config.delete_departments && depts.refusal.is_none() {
            claims.doomed = depts.deletes.iter().map(|(id, _)| *id).collect();
        }
        let planner = Self {
            config: config.clone(),
            scope,
            map: depts.map,
            deletes: depts.deletes,
            refusal: depts.refusal,
            claims,
            considered: 0,
        };
        (planner, plan)
    }

    /// Plans one slice of users (`slice.users` with their links and snapshots).
    pub fn users(&mut self, slice: &LocalView, remote: &RemoteView) -> Vec<Op> {
        if !(self.scope.users() && self.config.users) {
            return Vec::new();
        }
        self.considered += slice.users.iter().filter(|u| !u.is_deleted()).count();
        push_users::plan_slice(slice, remote, &self.map, &mut self.claims)
    }

    /// Whether this push deletes the DingTalk users whose local row is gone (the caller
    /// looks them up only then).
    pub fn deletes_gone_users(&self) -> bool {
        self.scope.users() && self.config.users && self.config.delete_users_on_hard_delete
    }

    /// The rest, once every slice is planned: members moved out of departments about to
    /// go, the department deletes (or the guard's refusal), and deletes of DingTalk users
    /// whose local row is gone (`gone`: `(sys_user.id, userid)` of such links/snapshots).
    pub fn finish(self, gone: Vec<(String, String)>, remote: &RemoteView) -> Plan {
        let mut plan = Plan::default();
        if self.deletes_gone_users() {
            plan.ops
                .extend(push_users::hard_deletes(gone, remote, &self.claims));
        }
        if self.scope.departments() && self.config.departments && self.config.delete_departments {
            match self.refusal {
                Some(reason) => plan.refused_deletes = Some(reason),
                None => {
                    let deleted: HashSet<String> = plan
                        .ops
                        .iter()
                        .filter_map(|op| match op {
                            Op::DeleteUser { userid, .. } => Some(userid.clone()),
                            _ => None,
                        })
                        .collect();
                    plan.ops.extend(
                        move_members_out(remote, &self.deletes, &self.claims.final_depts)
                            .into_iter()
                            .filter(|op| {
                                !matches!(op, Op::MoveMembersOut { userid, .. } if deleted.contains(userid))
                            }),
                    );
                    plan.ops.extend(
                        self.deletes
                            .into_iter()
                            .map(|(dept_id, name)| Op::DeleteDept { dept_id, name }),
                    );
                }
            }
        }
        plan
    }
}

/// Plans one user's push, for a job: `local` holds that user (and its link and snapshot),
/// `remote` its DingTalk twin if found, `map` its departments' DingTalk ids.
pub fn plan_user_job(
    local: &LocalView,
    remote: &RemoteView,
    map: &HashMap<String, DeptRef>,
    config: &PushConfig,
) -> Plan {
    let mut claims = push_users::Claims::default();
    Plan {
        ops: push_users::plan(local, remote, map, config, &mut claims),
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
    for (userid, listed) in remote.users.memberships() {
        let current: Vec<i64> = match final_depts.get(userid) {
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
            None => listed.to_vec(),
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
                .get(userid)
                .is_none_or(|p| p.iter().all(|d| matches!(d, DeptRef::Ding(_))))
        {
            keep.push(ROOT_DEPT);
        }
        if !keep.is_empty() {
            ops.push(Op::MoveMembersOut {
                userid: userid.to_string(),
                keep,
            });
        }
    }
    ops
}
