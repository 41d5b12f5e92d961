//! Pure planning: (local view, remote view, snapshots, config) -> ordered operations.
//! **No I/O here**: everything the rules need is in the views.
//!
//! A push plan runs: department creates and updates (parents first), user creates and
//! updates, members moved out of departments about to go, department deletes (deepest
//! first), user deletes. A pull plan runs: local department creates and updates, then users.

pub mod merge;
#[cfg(test)]
mod merge_tests;
mod pull;
mod push_depts;
mod push_users;
#[cfg(test)]
mod scope_tests;
#[cfg(test)]
mod tests;
pub mod tree;

use std::collections::{HashMap, HashSet};

use crate::config::PushConfig;

use super::model::{DeptRef, LocalView, Op, RemoteView, Scope, ROOT_DEPT};

pub use pull::{linked_depts, plan_pull, pull_departments, users_slice as pull_users_slice};
pub use push_depts::deletion_refusal;

/// What a plan obeys besides the views: `[push]`, and how differences between the sides are
/// settled for the tenant (`[sync] conflict`, and a master side when a direction is off).
#[derive(Clone, Debug)]
pub struct Rules {
    /// `[push]`.
    pub push: PushConfig,
    /// The merge policy.
    pub policy: merge::Policy,
}

impl Rules {
    /// The rules of `tenant` under `config`.
    pub fn of(config: &crate::config::Config, tenant: &crate::config::TenantConfig) -> Self {
        // Whichever direction cannot carry a side's edits makes the other side master.
        let master = |pushed: bool| match (tenant.push.enabled && pushed, tenant.pull.enabled) {
            (true, false) => Some(merge::Side::Jeecgboot),
            (false, true) => Some(merge::Side::Dingtalk),
            _ => None,
        };
        Self {
            push: config.push.clone(),
            policy: merge::Policy {
                prefer: match config.sync.conflict {
                    crate::config::ConflictWinner::Jeecgboot => merge::Side::Jeecgboot,
                    crate::config::ConflictWinner::Dingtalk => merge::Side::Dingtalk,
                },
                master: master(config.push.users),
                dept_master: master(config.push.departments),
            },
        }
    }
}

/// Which entities a plan is about: everything (a full run), or the one entity of a job. A
/// job builds the same views, restricted to its entity and the rows its rules need, and the
/// same functions plan it; only the operations of the entity in focus come out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Focus {
    /// Every entity (a full run or a dry run).
    All,
    /// One department, by `sys_depart.id` (a department job).
    Dept(String),
    /// One user, by `sys_user.id` (a user job).
    User(String),
}

impl Focus {
    /// Whether department `id`'s operations are wanted.
    pub fn dept(&self, id: &str) -> bool {
        match self {
            Focus::All => true,
            Focus::Dept(key) => key == id,
            Focus::User(_) => false,
        }
    }

    /// Whether user `id`'s operations are wanted.
    pub fn user(&self, id: &str) -> bool {
        match self {
            Focus::All => true,
            Focus::User(key) => key == id,
            Focus::Dept(_) => false,
        }
    }
}

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

    /// Local departments this plan needs created in DingTalk before it can run, but does not
    /// create itself (a job's: it waits for their jobs).
    pub fn needs_created(&self) -> Vec<String> {
        let created: HashSet<&str> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::CreateDept { local_id, .. } => Some(local_id.as_str()),
                _ => None,
            })
            .collect();
        let mut needed: Vec<String> = Vec::new();
        let mut need = |r: &DeptRef| {
            if let DeptRef::Local(id) = r {
                if !created.contains(id.as_str()) && !needed.contains(id) {
                    needed.push(id.clone());
                }
            }
        };
        for op in &self.ops {
            match op {
                Op::CreateDept { parent, .. } => need(parent),
                Op::UpdateDept {
                    parent: Some(parent),
                    ..
                } => need(parent),
                Op::CreateUser { fields, .. } | Op::UpdateUser { fields, .. } => {
                    fields.depts.iter().flatten().for_each(&mut need)
                }
                _ => {}
            }
        }
        needed
    }
}

/// The DingTalk users that the users of `slice` match (by link, mobile or username): the
/// caller adds to the slice the local users that could claim them too
/// ([`LocalView::claimers`]) before planning it.
pub fn push_twins(slice: &LocalView, remote: &RemoteView) -> Vec<crate::dingtalk::types::DtUser> {
    push_users::twins(slice, remote)
}

/// Plans a push of `scope` for one tenant, all of `local` at once (tests and small dry runs;
/// `local.users` doubles as the claimers).
pub fn plan_push(local: &LocalView, remote: &RemoteView, rules: &Rules, scope: Scope) -> Plan {
    let (mut planner, mut plan) = PushPlanner::new(local, remote, rules, scope, Focus::All);
    plan.ops.extend(planner.users(local, remote));
    plan.considered += planner.considered;
    let tail = planner.finish(push_users::gone_users(local), local, remote);
    plan.ops.extend(tail.ops);
    plan.refused_deletes = tail.refused_deletes;
    plan
}

/// A push planned in parts, so that a run never holds every local user at once: the
/// departments first ([`PushPlanner::new`]), then the users slice by slice
/// ([`PushPlanner::users`]), then member moves, department deletes and user deletes
/// ([`PushPlanner::finish`]). The same rules as [`plan_push`], which is the three in a row.
/// A job is the same three parts with a [`Focus`] on its entity.
pub struct PushPlanner {
    config: PushConfig,
    policy: merge::Policy,
    scope: Scope,
    focus: Focus,
    map: HashMap<String, DeptRef>,
    fallback: HashMap<String, String>,
    deletes: Vec<(i64, String)>,
    refusal: Option<String>,
    blocked: Vec<String>,
    claims: push_users::Claims,
    /// Users planned so far (for the "skipped" count).
    pub considered: usize,
}

impl PushPlanner {
    /// Plans the departments of `local` (its users are not looked at) and returns the
    /// planner with the department creates, updates and refusals of the focus.
    pub fn new(
        local: &LocalView,
        remote: &RemoteView,
        rules: &Rules,
        scope: Scope,
        focus: Focus,
    ) -> (Self, Plan) {
        let config = &rules.push;
        let depts = push_depts::plan(local, remote, rules, &focus);
        let mut plan = Plan::default();
        let departments = scope.departments() && config.departments;
        if departments {
            plan.considered += match focus {
                Focus::All => depts.map.len(),
                Focus::Dept(_) => 1,
                Focus::User(_) => 0,
            };
            plan.ops.extend(depts.ops);
        }
        let mut claims = push_users::Claims::default();
        if departments && config.delete_departments && depts.refusal.is_none() {
            claims.doomed = depts.deletes.iter().map(|(id, _)| *id).collect();
        }
        let planner = Self {
            config: config.clone(),
            policy: rules.policy,
            scope,
            focus,
            map: depts.map,
            fallback: depts.fallback,
            deletes: depts.deletes,
            refusal: depts.refusal,
            blocked: depts.blocked,
            claims,
            considered: 0,
        };
        (planner, plan)
    }

    /// Plans one slice of users (`slice.users` with their links and snapshots, and the
    /// claimers of the DingTalk users they match).
    pub fn users(&mut self, slice: &LocalView, remote: &RemoteView) -> Vec<Op> {
        if !(self.scope.users() && self.config.users) {
            return Vec::new();
        }
        self.considered += slice
            .users
            .iter()
            .filter(|u| !u.is_deleted() && self.focus.user(&u.id))
            .count();
        let depts = push_users::Depts {
            map: &self.map,
            fallback: &self.fallback,
            policy: &self.policy,
        };
        push_users::plan_slice(slice, remote, &depts, &self.focus, &mut self.claims)
    }

    /// The departments DingTalk lacks and this plan would create that `user` is to be
    /// placed in (its own, or the parent a refused one falls back to): a job waits for them
    /// before it looks the user up.
    pub fn missing_depts(&self, user: &crate::jeecg::LocalUser) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for id in &user.depart_ids {
            if let Some(DeptRef::Local(target)) = self.map.get(id) {
                if !missing.contains(target) {
                    missing.push(target.clone());
                }
            }
        }
        missing
    }

    /// Whether this push deletes the DingTalk users whose local row is gone (the caller
    /// looks them up only then).
    pub fn deletes_gone_users(&self) -> bool {
        self.scope.users() && self.config.users && self.config.delete_users_on_hard_delete
    }

    /// Departments that must move before this plan's deletes (a job waits for their jobs).
    pub fn blocked(&self) -> &[String] {
        &self.blocked
    }

    /// The rest, once every slice is planned: members moved out of departments about to
    /// go, the department deletes (or the guard's refusal), and deletes of DingTalk users
    /// whose local row is gone (`gone`: `(sys_user.id, userid)` of such links/snapshots;
    /// `claimers`: the live local users that match those DingTalk users).
    pub fn finish(
        self,
        gone: Vec<(String, String)>,
        claimers: &LocalView,
        remote: &RemoteView,
    ) -> Plan {
        let mut plan = Plan::default();
        if self.deletes_gone_users() {
            let gone = gone
                .into_iter()
                .filter(|(local_id, _)| self.focus.user(local_id))
                .collect();
            plan.ops
                .extend(push_users::hard_deletes(gone, claimers, remote));
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

/// Each pushable department's nearest pushable ancestor (None: top level).
pub fn dept_placement(depts: &[crate::jeecg::LocalDept]) -> HashMap<String, Option<String>> {
    tree::DeptTree::new(depts, &HashMap::new()).placement()
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
