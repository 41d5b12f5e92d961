//! One rulebook: every plan-rule case planned by a full run and by one-entity jobs, with the
//! same operations for each entity. A job's views are built here the way `sync::job` reads
//! them (its row, the department tree, its DingTalk twin found by link, mobile or username,
//! the siblings it may adopt, the subtree it may delete, the local users that may claim the
//! same DingTalk user); the full run sees everything.

use std::collections::HashSet;

use super::tests::{config, dept, names, post, rdept, ruser, snap, user, view};
use super::*;
use crate::config::PushConfig;
use crate::dingtalk::types::DtUser;
use crate::dingtalk::DingTalkError;
use crate::jeecg::{Link, LocalUser};
use crate::sync::around::{self, Source};
use crate::sync::model::{entity, mobile_key, RemoteDept};

/// One case: the whole local side and the whole of DingTalk, and what its full plan must
/// contain (in `names` form).
struct Case {
    name: &'static str,
    local: LocalView,
    remote: RemoteView,
    expect: Vec<&'static str>,
}

fn link(user: &str, userid: &str) -> Link {
    Link {
        user_id: user.into(),
        userid: userid.into(),
        unionid: None,
        tenant_id: 0,
    }
}

fn named(mut u: DtUser, name: &str) -> DtUser {
    u.name = name.into();
    u
}

fn cases() -> Vec<Case> {
    let mut cases = department_cases();
    cases.extend(refused_department_cases());
    cases.extend(people_cases());
    cases
}

/// Departments: creates, renames, moves, adoption.
fn department_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // Creates, parents first, and a user in the new department.
    cases.push(Case {
        name: "a new tree",
        local: view(
            vec![
                dept("c1", None, "Co", None),
                dept("c1d1", Some("c1"), "RD", None),
            ],
            vec![user("u1", "lihua", "13800000001", &["c1d1"])],
        ),
        remote: RemoteView::default(),
        expect: vec![
            "create c1 under Ding(1)",
            "create c1d1 under Local(\"c1\")",
            "create user lihua",
        ],
    });
    // Renamed, moved, adopted by name; a held DingTalk department is not adopted twice.
    let mut moved = view(
        vec![
            dept("a", None, "A new", Some(10)),
            dept("b", None, "B", Some(20)),
            dept("x", Some("b"), "X", Some(30)),
            dept("n", None, "N", None),
            dept("same", Some("b"), "Held", None),
            dept("holder", None, "Other name", Some(50)),
        ],
        vec![],
    );
    moved.depts[5].parent_id = Some("b".into());
    cases.push(Case {
        name: "renames, moves, adoption, a held name",
        local: moved,
        remote: RemoteView {
            depts: vec![
                rdept(10, 1, "A"),
                rdept(20, 1, "B"),
                rdept(30, 10, "X"),
                rdept(40, 1, "N"),
                rdept(50, 20, "Held"),
            ],
            ..Default::default()
        },
        expect: vec![
            "update a name=Some(\"A new\") parent=None",
            "update x name=None parent=Some(Ding(20))",
            "update n name=None parent=None",
            "create same under Ding(20)",
        ],
    });
    cases
}

/// Departments refused: names DingTalk refuses, cycles, sibling clashes, dead jobs.
fn refused_department_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // A name DingTalk refuses (60009): one refusal; its member goes to the parent.
    cases.push(Case {
        name: "a name DingTalk refuses",
        local: view(
            vec![
                dept("rd", None, "研发", Some(10)),
                dept("fe", Some("rd"), "研发-前端", None),
            ],
            vec![user("u1", "qianduan", "13800000002", &["fe"])],
        ),
        remote: RemoteView {
            depts: vec![rdept(10, 1, "研发")],
            ..Default::default()
        },
        expect: vec!["fail fe", "warn qianduan", "create user qianduan"],
    });
    // A cycle of parent_ids: both refused, their member at root 1; a sibling clash.
    cases.push(Case {
        name: "a cycle and two siblings of one name",
        local: view(
            vec![
                dept("p", Some("q"), "P", None),
                dept("q", Some("p"), "Q", None),
                dept("s1", None, "Same", None),
                dept("s2", None, "Same", None),
            ],
            vec![user("u1", "loop", "13800000003", &["p"])],
        ),
        remote: RemoteView::default(),
        expect: vec![
            "fail p",
            "fail q",
            "fail s2",
            "create s1 under Ding(1)",
            "warn loop",
        ],
    });
    // Siblings through a post: "dup" hangs under the post "boss", so its nearest pushed
    // parent is "co", like "dup2"'s: one name under one parent. A job of dup2's member reads
    // only the part of the tree around dup2, which must still hold dup.
    cases.push(Case {
        name: "siblings through a post",
        local: view(
            vec![
                dept("co", None, "Co", Some(10)),
                post("boss", "co"),
                dept("dup", Some("boss"), "Same", None),
                dept("dup2", Some("co"), "Same", None),
                dept("far", None, "Far", None),
            ],
            vec![user("u1", "inner", "13800000005", &["dup2"])],
        ),
        remote: RemoteView {
            depts: vec![rdept(10, 1, "Co")],
            ..Default::default()
        },
        expect: vec![
            "create dup under Ding(10)",
            "fail dup2",
            "warn inner",
            "create user inner",
        ],
    });
    // A department whose job is dead: refused like the rest, with DingTalk's reason.
    let mut dead = view(
        vec![dept("d", None, "Dead", None)],
        vec![user("u1", "indead", "13800000004", &["d"])],
    );
    dead.dead_depts
        .insert("d".into(), "errcode 60009: bad name".into());
    cases.push(Case {
        name: "a dead department",
        local: dead,
        remote: RemoteView::default(),
        expect: vec!["fail d", "warn indead", "create user indead"],
    });
    cases
}

/// People: identity by claim, hard deletes, and departments removed around them.
fn people_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // Identity: link, mobile, username; a username whose mobile is another person's; a
    // DingTalk user two local users reach (the stronger claim wins); no phone.
    let mut people = view(
        vec![dept("a", None, "A", Some(10))],
        vec![
            user("u1", "linked", "13900000001", &["a"]),
            user("u2", "bymobile", "13900000002", &["a"]),
            user("u3", "byname", "13900000003", &["a"]),
            user("u4", "mismatch", "13900000004", &["a"]),
            LocalUser {
                phone: None,
                ..user("u5", "dt-mobile", "", &["a"])
            },
            LocalUser {
                phone: None,
                ..user("u6", "nophone", "", &["a"])
            },
        ],
    );
    people.links.push(link("u1", "dt-linked"));
    cases.push(Case {
        name: "identity",
        local: people,
        remote: RemoteView {
            depts: vec![rdept(10, 1, "A")],
            users: vec![
                named(ruser("dt-linked", "13900000001", &[10]), "Old"),
                named(ruser("dt-mobile", "13900000002", &[10]), "Name bymobile"),
                named(ruser("byname", "", &[10]), "Name byname"),
                named(ruser("mismatch", "13700000000", &[10]), "Name mismatch"),
            ]
            .into(),
            ..Default::default()
        },
        expect: vec![
            "update user dt-linked {\"name\":\"Name linked\"}",
            "link dt-mobile",
            "link byname",
            "warn mismatch",
            "fail dt-mobile",
            "fail nophone",
        ],
    });
    // Hard deletes: one DingTalk user nobody claims goes; one a live user now claims stays.
    let mut gone = view(
        vec![dept("a", None, "A", Some(10))],
        vec![user("u2", "heir", "13600000002", &["a"])],
    );
    gone.user_snapshots
        .insert("u8".into(), snap("u8", "left", "h"));
    gone.user_snapshots
        .insert("u9".into(), snap("u9", "heir", "h"));
    gone.user_snapshots
        .insert("u2".into(), snap("u2", "heir", "h"));
    cases.push(Case {
        name: "hard deletes",
        local: gone,
        remote: RemoteView {
            depts: vec![rdept(10, 1, "A")],
            users: vec![
                ruser("left", "13600000001", &[10]),
                named(ruser("heir", "13600000002", &[10]), "Name heir"),
            ]
            .into(),
            ..Default::default()
        },
        expect: vec!["delete user left"],
    });
    // A department gone locally: its twin and the unlinked department under it go,
    // deepest first, members moved out; another local one stays.
    let mut removed = view(vec![dept("keep", None, "Keep", Some(10))], vec![]);
    removed
        .dept_snapshots
        .insert("g".into(), snap("g", "60", "h"));
    cases.push(Case {
        name: "a department gone locally",
        local: removed,
        remote: RemoteView {
            depts: vec![
                rdept(10, 1, "Keep"),
                rdept(60, 1, "Gone"),
                rdept(61, 60, "Below"),
            ],
            users: vec![ruser("member", "1", &[61, 10])].into(),
            ..Default::default()
        },
        expect: vec!["move member keep [10]", "delete 61", "delete 60"],
    });
    cases
}

/// DingTalk as a job reads it, from the whole organisation of a case: the job's own
/// lookups (`sync::around`) run against it.
struct Org<'a>(&'a RemoteView);

impl Source for Org<'_> {
    async fn dept(&self, id: i64) -> Result<Option<RemoteDept>, DingTalkError> {
        Ok(self.0.depts.iter().find(|d| d.dept_id == id).cloned())
    }

    async fn children(&self, parent: i64) -> Result<Vec<RemoteDept>, DingTalkError> {
        Ok(self
            .0
            .depts
            .iter()
            .filter(|d| d.parent_id == parent)
            .cloned()
            .collect())
    }

    async fn members(&self, dept: i64) -> Result<Vec<DtUser>, DingTalkError> {
        Ok(self
            .0
            .users
            .iter()
            .filter(|u| u.dept_id_list.contains(&dept))
            .collect())
    }

    async fn user(&self, userid: &str) -> Result<Option<DtUser>, DingTalkError> {
        Ok(self.0.users.get(userid))
    }

    async fn userid_by_mobile(&self, mobile: &str) -> Result<Option<String>, DingTalkError> {
        Ok(self.0.users.by_mobile(mobile).map(|u| u.userid))
    }
}

/// A department job's plan, its views read as `sync::job` reads them.
async fn dept_job(local: &LocalView, remote: &RemoteView, key: &str, rules: &Rules) -> Plan {
    let pushed = local.depts.iter().any(|d| d.id == key && tree::pushable(d));
    let view = around::dept_view(&Org(remote), local, key, pushed)
        .await
        .unwrap();
    let focus = Focus::Dept(key.to_string());
    if pushed {
        return PushPlanner::new(local, &view, rules, Scope::Departments, focus).1;
    }
    if view.depts.is_empty() || !(rules.push.departments && rules.push.delete_departments) {
        return Plan::default();
    }
    let (planner, _) = PushPlanner::new(local, &view, rules, Scope::Departments, focus);
    assert!(planner.blocked().is_empty());
    planner.finish(Vec::new(), &LocalView::default(), &view)
}

/// The local users (other than `key`) that may claim `twin`, with their links and snapshots
/// (as `read::add_claimers` finds them).
fn claimers(local: &LocalView, key: &str, twin: &DtUser, into: &mut LocalView) {
    let linked: HashSet<&str> = local
        .links
        .iter()
        .filter(|l| l.userid == twin.userid)
        .map(|l| l.user_id.as_str())
        .chain(
            local
                .user_snapshots
                .values()
                .filter(|s| s.ding_id == twin.userid)
                .map(|s| s.local_id.as_str()),
        )
        .collect();
    for other in local.users.iter().filter(|u| u.id != key) {
        let by_phone = !twin.mobile.is_empty()
            && other
                .phone
                .as_deref()
                .is_some_and(|p| mobile_key(p) == mobile_key(&twin.mobile));
        if linked.contains(other.id.as_str()) || by_phone || other.username == twin.userid {
            into.claimers.push(other.clone());
            into.links.extend(
                local
                    .links
                    .iter()
                    .filter(|l| l.user_id == other.id)
                    .cloned(),
            );
            if let Some(s) = local.user_snapshots.get(&other.id) {
                into.user_snapshots.insert(other.id.clone(), s.clone());
            }
        }
    }
}

/// A user job's plan (its row, or its hard delete when the row is gone), its views read as
/// `sync::job` reads them.
async fn user_job(local: &LocalView, remote: &RemoteView, key: &str, rules: &Rules) -> Plan {
    if !rules.push.users {
        return Plan::default();
    }
    let focus = Focus::User(key.to_string());
    let mut own = LocalView {
        links: local
            .links
            .iter()
            .filter(|l| l.user_id == key)
            .cloned()
            .collect(),
        user_snapshots: local
            .user_snapshots
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..LocalView::default()
    };
    let known: Vec<String> = own
        .links
        .iter()
        .map(|l| l.userid.clone())
        .chain(own.user_snapshots.values().map(|s| s.ding_id.clone()))
        .collect();
    let Some(row) = local.users.iter().find(|u| u.id == key) else {
        if !rules.push.delete_users_on_hard_delete {
            return Plan::default();
        }
        let twins = around::users(&Org(remote), &known).await.unwrap();
        let view = RemoteView {
            users: twins.clone().into(),
            ..RemoteView::partial()
        };
        let mut found = LocalView::default();
        for twin in &twins {
            claimers(local, key, twin, &mut found);
        }
        let (planner, _) =
            PushPlanner::new(&LocalView::default(), &view, rules, Scope::Users, focus);
        let gone = known.into_iter().map(|u| (key.to_string(), u)).collect();
        return planner.finish(gone, &found, &view);
    };
    // The part of the tree a job reads (`read::dept_view_around`), built the same way.
    let rows = crate::store::departments::DeptRows {
        index: crate::jeecg::DeptIndex::new(&local.depts),
        depts: local.depts.clone(),
        snapshots: local.dept_snapshots.values().cloned().collect(),
    };
    let mut depts = crate::sync::read::around_rows(&rows, &row.depart_ids, &[]);
    depts.tenant = local.tenant;
    depts.dead_depts = local.dead_depts.clone();
    let (mut planner, _) =
        PushPlanner::new(&depts, &RemoteView::partial(), rules, Scope::Users, focus);
    let twin = around::user_twin(&Org(remote), &known, row.phone.as_deref(), &row.username)
        .await
        .unwrap();
    let view = RemoteView {
        users: twin.clone().into_iter().collect::<Vec<_>>().into(),
        ..RemoteView::partial()
    };
    own.users = vec![row.clone()];
    if let Some(twin) = &twin {
        claimers(local, key, twin, &mut own);
    }
    Plan {
        ops: planner.users(&own, &view),
        ..Plan::default()
    }
}

/// The operations of `plan` about one entity: a department (`sys_depart.id`, or its DingTalk
/// id for deletes) or a user (`sys_user.id`, or its username in reports).
fn about(plan: &Plan, keys: &[&str]) -> Vec<String> {
    let rendered = names(plan);
    plan.ops
        .iter()
        .zip(rendered)
        .filter(|(op, _)| {
            let (kind, key) = match op {
                Op::CreateDept { local_id, .. }
                | Op::UpdateDept { local_id, .. }
                | Op::LinkDept { local_id, .. } => (entity::DEPT, local_id.clone()),
                Op::DeleteDept { dept_id, .. } => (entity::DEPT, dept_id.to_string()),
                Op::CreateUser { local_id, .. }
                | Op::UpdateUser { local_id, .. }
                | Op::LinkUser { local_id, .. }
                | Op::DeleteUser { local_id, .. } => (entity::USER, local_id.clone()),
                Op::MoveMembersOut { userid, .. } => (entity::USER, userid.clone()),
                Op::Fail { entity, key, .. } | Op::Warn { entity, key, .. } => {
                    (entity.as_str(), key.clone())
                }
                _ => ("other", String::new()),
            };
            let _ = kind;
            keys.contains(&key.as_str())
        })
        .map(|(_, name)| name)
        .collect()
}

/// The switch settings every case is planned under: the defaults first (whose outcomes
/// the cases spell out), then each switch off, and conflicts won by DingTalk.
fn variants() -> Vec<(&'static str, Rules)> {
    let with = |change: fn(&mut PushConfig)| {
        let mut push = super::tests::push_config();
        change(&mut push);
        super::tests::rules(push)
    };
    let mut dingtalk = config();
    dingtalk.policy.prefer = merge::Side::Dingtalk;
    vec![
        ("defaults", config()),
        ("users off", with(|p| p.users = false)),
        ("departments off", with(|p| p.departments = false)),
        ("deletes off", with(|p| p.delete_departments = false)),
        (
            "hard deletes off",
            with(|p| p.delete_users_on_hard_delete = false),
        ),
        (
            "no department deletes allowed",
            with(|p| p.max_department_deletes = 0),
        ),
        ("DingTalk wins conflicts", dingtalk),
    ]
}

#[tokio::test]
async fn every_rule_plans_the_same_in_a_full_run_and_in_one_entity_jobs() {
    for (variant, rules) in variants() {
        for case in cases() {
            same_in_runs_and_jobs(&case, variant, &rules).await;
        }
    }
}

async fn same_in_runs_and_jobs(case: &Case, variant: &str, rules: &Rules) {
    let name = format!("{} ({variant})", case.name);
    let full = plan_push(&case.local, &case.remote, rules, Scope::All);
    let rendered = names(&full);
    if variant == "defaults" {
        for expected in &case.expect {
            assert!(
                rendered.iter().any(|n| n == expected),
                "{name}: {expected:?} not in {rendered:?}"
            );
        }
    }
    let mut from_jobs: Vec<String> = Vec::new();
    for dept in &case.local.depts {
        let job = dept_job(&case.local, &case.remote, &dept.id, rules).await;
        let own = about(&job, &[&dept.id]);
        assert_eq!(
            own,
            about(&full, &[&dept.id]),
            "{name}: department {}",
            dept.id
        );
        from_jobs.extend(own);
    }
    let gone_depts: Vec<String> = case
        .local
        .dept_snapshots
        .keys()
        .filter(|k| !case.local.depts.iter().any(|d| d.id == **k))
        .cloned()
        .collect();
    for key in &gone_depts {
        let job = names(&dept_job(&case.local, &case.remote, key, rules).await);
        // The guard counts differently in a job (the synced departments gone locally): a
        // job may refuse what the run deletes, never delete what the run keeps.
        for op in &job {
            assert!(
                rendered.contains(op),
                "{name}: gone department {key}: {op:?} not in {rendered:?}"
            );
        }
        from_jobs.extend(job);
    }
    let rows: HashSet<&str> = case.local.users.iter().map(|u| u.id.as_str()).collect();
    let mut users: Vec<(String, String)> = case
        .local
        .users
        .iter()
        .map(|u| (u.id.clone(), u.username.clone()))
        .collect();
    users.extend(
        case.local
            .user_snapshots
            .keys()
            .filter(|k| !rows.contains(k.as_str()))
            .map(|k| (k.clone(), k.clone())),
    );
    for (id, username) in &users {
        let job = user_job(&case.local, &case.remote, id, rules).await;
        let keys = [id.as_str(), username.as_str()];
        let mut own = about(&job, &keys);
        let mut expected = about(&full, &keys);
        own.sort();
        expected.sort();
        assert_eq!(own, expected, "{name}: user {id}");
        from_jobs.extend(own);
    }
    // Nothing the full run does is left out by the jobs (member moves belong to the
    // department job that deletes).
    for op in &rendered {
        assert!(
            from_jobs.contains(op),
            "{name}: {op:?} planned by no job ({from_jobs:?})"
        );
    }
}

#[test]
fn refusals_carry_dingtalks_reason_and_users_are_placed_higher_up() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "a name DingTalk refuses")
        .unwrap();
    let plan = plan_push(&case.local, &case.remote, &config(), Scope::All);
    assert!(plan.ops.iter().any(|op| matches!(op, Op::Fail { key, reason, .. } if key == "fe" && reason.contains("60009"))), "{:?}", plan.ops);
    let create = plan.ops.iter().find_map(|op| match op {
        Op::CreateUser { fields, .. } => fields.depts.clone(),
        _ => None,
    });
    assert_eq!(
        create,
        Some(vec![DeptRef::Ding(10)]),
        "the member goes to 研发"
    );
    assert!(plan.ops.iter().any(|op| matches!(op, Op::Warn { reason, .. } if reason.contains("fe") && reason.contains("60009"))));
    let cycle = cases()
        .into_iter()
        .find(|c| c.name == "a cycle and two siblings of one name")
        .unwrap();
    let plan = plan_push(&cycle.local, &cycle.remote, &config(), Scope::All);
    let reasons: Vec<&str> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Fail { key, reason, .. } if key == "p" || key == "q" => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("department cycle") && r.contains("p (P)") && r.contains("q (Q)")),
        "{reasons:?}"
    );
}
