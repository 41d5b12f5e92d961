//! Table-driven tests of every plan rule.

use super::*;
use crate::dingtalk::types::DtUser;
use crate::jeecg::{Link, LocalDept, LocalUser};
use crate::store::snapshots::Snapshot;
use crate::sync::model::{LocalRef, RemoteDept};

pub(super) fn dept(id: &str, parent: Option<&str>, name: &str, ding: Option<i64>) -> LocalDept {
    LocalDept {
        id: id.into(),
        parent_id: parent.map(str::to_string),
        name: name.into(),
        org_category: if parent.is_some() { "2" } else { "1" }.into(),
        org_code: id.to_uppercase(),
        del_flag: "0".into(),
        ding_identifier: ding,
        ..LocalDept::default()
    }
}

pub(super) fn post(id: &str, parent: &str) -> LocalDept {
    LocalDept {
        org_category: "3".into(),
        ..dept(id, Some(parent), id, None)
    }
}

pub(super) fn rdept(id: i64, parent: i64, name: &str) -> RemoteDept {
    RemoteDept {
        dept_id: id,
        name: name.into(),
        parent_id: parent,
        source_identifier: None,
    }
}

pub(super) fn user(id: &str, username: &str, phone: &str, depts: &[&str]) -> LocalUser {
    LocalUser {
        id: id.into(),
        username: username.into(),
        realname: format!("Name {username}"),
        phone: Some(phone.into()),
        depart_ids: depts.iter().map(|d| d.to_string()).collect(),
        status: Some(1),
        ..LocalUser::default()
    }
}

pub(super) fn ruser(userid: &str, mobile: &str, depts: &[i64]) -> DtUser {
    DtUser {
        userid: userid.into(),
        name: format!("Name {userid}"),
        mobile: mobile.into(),
        dept_id_list: depts.to_vec(),
        ..DtUser::default()
    }
}

pub(super) fn view(depts: Vec<LocalDept>, users: Vec<LocalUser>) -> LocalView {
    let all_user_ids = users.iter().map(|u| u.id.clone()).collect();
    LocalView {
        depts,
        users,
        all_user_ids,
        ..LocalView::default()
    }
}

pub(super) fn push_config() -> PushConfig {
    PushConfig {
        users: true,
        departments: true,
        delete_departments: true,
        max_department_deletes: 10,
        delete_users_on_hard_delete: true,
        reconcile_cron: String::new(),
    }
}

/// The default rules: `[push]` at its defaults, JeecgBoot winning conflicts, no master.
pub(super) fn config() -> Rules {
    rules(push_config())
}

pub(super) fn rules(push: PushConfig) -> Rules {
    Rules {
        push,
        policy: merge::Policy::default(),
    }
}

/// Records what applying `plan` would record: links and bases.
pub(super) fn snapshot_all(local: &mut LocalView, plan: &Plan) {
    for op in &plan.ops {
        match op {
            Op::UpdateDept {
                local_id,
                dept_id,
                base,
                ..
            }
            | Op::LinkDept {
                local_id,
                dept_id,
                base,
            } => {
                local.dept_snapshots.insert(
                    local_id.clone(),
                    based(local_id, &dept_id.to_string(), base),
                );
            }
            Op::LinkUser {
                local_id,
                userid,
                base,
                ..
            } => {
                local
                    .user_snapshots
                    .insert(local_id.clone(), based(local_id, userid, base));
            }
            _ => {}
        }
    }
}

/// A snapshot without a base (synced before schema v5).
pub(super) fn snap(local_id: &str, ding: &str, hash: &str) -> Snapshot {
    Snapshot {
        tenant_id: 0,
        entity: String::new(),
        local_id: local_id.into(),
        ding_id: ding.into(),
        content_hash: hash.into(),
        synced_at: 0,
        base: None,
    }
}

/// A snapshot with `base`.
pub(super) fn based<T: serde::Serialize>(local_id: &str, ding: &str, base: &T) -> Snapshot {
    Snapshot {
        base: Some(serde_json::to_string(base).unwrap()),
        ..snap(local_id, ding, "")
    }
}

pub(super) fn names(plan: &Plan) -> Vec<String> {
    plan.ops
        .iter()
        .map(|op| match op {
            Op::CreateDept {
                local_id, parent, ..
            } => format!("create {local_id} under {parent:?}"),
            Op::UpdateDept {
                local_id,
                name,
                parent,
                ..
            } => format!("update {local_id} name={name:?} parent={parent:?}"),
            Op::DeleteDept { dept_id, .. } => format!("delete {dept_id}"),
            Op::MoveMembersOut { userid, keep } => format!("move {userid} keep {keep:?}"),
            Op::Fail { key, .. } => format!("fail {key}"),
            Op::Warn { key, .. } => format!("warn {key}"),
            Op::CreateUser { userid, .. } => format!("create user {userid}"),
            Op::UpdateUser { userid, fields, .. } => format!(
                "update user {userid} {}",
                serde_json::to_string(fields).unwrap()
            ),
            Op::LinkUser { userid, .. } => format!("link {userid}"),
            Op::DeleteUser { userid, .. } => format!("delete user {userid}"),
            Op::UpdateLocalUser { fields, .. } => {
                let mut parts = Vec::new();
                for (field, value) in [
                    ("realname", &fields.realname),
                    ("phone", &fields.phone),
                    ("email", &fields.email),
                    ("telephone", &fields.telephone),
                    ("work_no", &fields.work_no),
                ] {
                    if let Some(value) = value {
                        parts.push(format!("pull {field} {value}"));
                    }
                }
                if !fields.add_depts.is_empty() || !fields.remove_depts.is_empty() {
                    parts.push(format!(
                        "pull add {:?} remove {:?}",
                        fields.add_depts, fields.remove_depts
                    ));
                }
                if parts.is_empty() {
                    "record base".to_string()
                } else {
                    parts.join(", ")
                }
            }
            Op::UpdateLocalDept {
                local_id,
                name,
                parent,
                ..
            } => format!("pull dept {local_id} {name} under {parent:?}"),
            Op::Merge { key, fields, .. } => format!(
                "left {key}: {}",
                fields
                    .iter()
                    .map(|f| format!("{} {}", f.field, f.action))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn departments_are_created_parents_first_posts_and_deleted_skipped() {
    let mut gone = dept("gone", Some("c1"), "Gone", None);
    gone.del_flag = "1".into();
    let local = view(
        vec![
            dept("c1d1", Some("c1"), "RD", None),
            dept("c1", None, "Co", None),
            post("p1", "c1d1"),
            gone,
            dept("c1d1t", Some("c1d1"), "QA", None),
        ],
        vec![],
    );
    let plan = plan_push(
        &local,
        &RemoteView::default(),
        &config(),
        Scope::Departments,
    );
    assert_eq!(
        names(&plan),
        vec![
            "create c1 under Ding(1)",
            "create c1d1 under Local(\"c1\")",
            "create c1d1t under Local(\"c1d1\")",
        ]
    );
}

#[test]
fn a_department_moved_between_parents_is_one_update() {
    let local = view(
        vec![
            dept("a", None, "A", Some(10)),
            dept("b", None, "B", Some(20)),
            dept("x", Some("b"), "X", Some(30)),
        ],
        vec![],
    );
    let remote = RemoteView {
        depts: vec![rdept(10, 1, "A"), rdept(20, 1, "B"), rdept(30, 10, "X")],
        users: Default::default(),
        ..Default::default()
    };
    let plan = plan_push(&local, &remote, &config(), Scope::Departments);
    let moves: Vec<String> = names(&plan)
        .into_iter()
        .filter(|n| n.starts_with("update x"))
        .collect();
    assert_eq!(moves, vec!["update x name=None parent=Some(Ding(20))"]);
    assert_eq!(
        plan.dingtalk_writes(),
        1,
        "A and B are in place: linked without a call"
    );
}

#[test]
fn renames_onto_a_siblings_name() {
    // Two local siblings with one name: DingTalk would refuse it; the second fails with a reason.
    let local = view(
        vec![
            dept("a", None, "Same", Some(10)),
            dept("b", None, "Same", Some(20)),
        ],
        vec![],
    );
    let remote = RemoteView {
        depts: vec![rdept(10, 1, "Same"), rdept(20, 1, "Other")],
        users: Default::default(),
        ..Default::default()
    };
    let plan = plan_push(&local, &remote, &config(), Scope::Departments);
    assert!(
        names(&plan).contains(&"fail b".to_string()),
        "{:?}",
        names(&plan)
    );
    // A chain of renames (B -> C, then A -> B): the one that frees a name goes first.
    let local = view(
        vec![
            dept("a", None, "B", Some(10)),
            dept("b", None, "C", Some(20)),
        ],
        vec![],
    );
    let remote = RemoteView {
        depts: vec![rdept(10, 1, "A"), rdept(20, 1, "B")],
        users: Default::default(),
        ..Default::default()
    };
    let plan = plan_push(&local, &remote, &config(), Scope::Departments);
    let updates: Vec<String> = names(&plan)
        .into_iter()
        .filter(|n| n.starts_with("update"))
        .collect();
    assert_eq!(
        updates,
        vec![
            "update b name=Some(\"C\") parent=None",
            "update a name=Some(\"B\") parent=None"
        ]
    );
}

#[test]
fn a_deep_subtree_is_deleted_leaf_first_after_members_move() {
    let local = view(vec![dept("keep", None, "Keep", Some(10))], vec![]);
    let remote = RemoteView {
        depts: vec![
            rdept(10, 1, "Keep"),
            rdept(20, 1, "A"),
            rdept(21, 20, "B"),
            rdept(22, 21, "C"),
            rdept(23, 22, "D"),
        ],
        users: vec![ruser("alone", "1", &[22]), ruser("multi", "2", &[23, 10])].into(),
        ..Default::default()
    };
    let plan = plan_push(&local, &remote, &config(), Scope::Departments);
    assert_eq!(
        names(&plan)
            .into_iter()
            .filter(|n| !n.starts_with("Link"))
            .collect::<Vec<_>>(),
        vec![
            "move alone keep [1]",
            "move multi keep [10]",
            "delete 23",
            "delete 22",
            "delete 21",
            "delete 20"
        ]
    );
}

#[test]
fn the_deletion_guard_refuses_and_deletes_nothing() {
    let remote = RemoteView {
        depts: (0..12)
            .map(|n| rdept(100 + n, 1, &format!("D{n}")))
            .collect(),
        users: Default::default(),
        ..Default::default()
    };
    let local = view(vec![dept("keep", None, "Keep", None)], vec![]);
    let plan = plan_push(&local, &remote, &config(), Scope::All);
    assert!(
        plan.refused_deletes
            .as_deref()
            .unwrap()
            .contains("12 DingTalk departments"),
        "{plan:?}"
    );
    assert!(!plan
        .ops
        .iter()
        .any(|op| matches!(op, Op::DeleteDept { .. } | Op::MoveMembersOut { .. })));
    let empty = view(vec![], vec![]);
    let plan = plan_push(
        &empty,
        &RemoteView {
            depts: vec![rdept(5, 1, "X")],
            users: Default::default(),
            ..Default::default()
        },
        &config(),
        Scope::All,
    );
    assert!(plan.refused_deletes.as_deref().unwrap().contains("empty"));
    assert_eq!(plan.dingtalk_writes(), 0);
}

#[test]
fn a_user_in_three_departments_with_one_deleted() {
    let mut gone = dept("c", None, "C", Some(30));
    gone.del_flag = "1".into();
    let local = view(
        vec![
            dept("a", None, "A", Some(10)),
            dept("b", None, "B", Some(20)),
            gone,
        ],
        vec![user("u1", "zhang", "138", &["a", "b", "c"])],
    );
    let remote = RemoteView {
        depts: vec![rdept(10, 1, "A"), rdept(20, 1, "B"), rdept(30, 1, "C")],
        users: vec![ruser("zhang", "138", &[10, 20, 30])].into(),
        ..Default::default()
    };
    let plan = plan_push(&local, &remote, &config(), Scope::All);
    let ops = names(&plan);
    assert!(
        ops.contains(&r#"update user zhang {"depts":[{"ding":10},{"ding":20}]}"#.to_string()),
        "{ops:?}"
    );
    assert!(ops.contains(&"delete 30".to_string()));
    assert!(
        !ops.iter().any(|o| o.starts_with("move")),
        "the user update already leaves C: {ops:?}"
    );
}

#[test]
fn users_match_by_link_then_mobile_then_username_and_only_differences_are_sent() {
    let mut local = view(
        vec![dept("a", None, "A", Some(10))],
        vec![
            user("u1", "linked", "1001", &["a"]),
            user("u2", "bymobile", "1002", &["a"]),
            user("u3", "byname", "1003", &["a"]),
            user("u4", "newbie", "1004", &["a"]),
        ],
    );
    local.links.push(Link {
        user_id: "u1".into(),
        userid: "dt-linked".into(),
        unionid: None,
        tenant_id: 0,
    });
    let mut renamed = ruser("dt-linked", "9999", &[10]);
    renamed.name = "Old name".into();
    let remote = RemoteView {
        depts: vec![rdept(10, 1, "A")],
        users: vec![
            renamed,
            DtUser {
                name: "Name bymobile".into(),
                ..ruser("dt-mobile", "1002", &[10])
            },
            DtUser {
                name: "Name byname".into(),
                mobile: String::new(),
                ..ruser("byname", "", &[10])
            },
        ]
        .into(),
        ..Default::default()
    };
    let plan = plan_push(&local, &remote, &config(), Scope::Users);
    let ops = names(&plan);
    assert_eq!(
        ops,
        vec![
            r#"update user dt-linked {"name":"Name linked"}"#,
            "link dt-linked",
            "warn u1",
            "link dt-mobile",
            "link byname",
            "create user newbie",
        ],
        "{ops:?}"
    );
    // A mobile that differs is reported (after the update and link that remember it), never
    // sent: DingTalk cannot change it (40022).
    assert!(
        matches!(&plan.ops[2], Op::Warn { reason, .. } if reason.contains("cannot change a mobile"))
    );
    // Applied and snapshotted, the same state plans no DingTalk write (and no loop on the mobile).
    snapshot_all(&mut local, &plan);
    local.links.extend(
        ["dt-mobile", "byname"]
            .iter()
            .zip(["u2", "u3"])
            .map(|(d, u)| Link {
                user_id: u.into(),
                userid: d.to_string(),
                unionid: None,
                tenant_id: 0,
            }),
    );
    let mut remote = remote;
    let mut users: Vec<DtUser> = remote.users.iter().collect();
    for user in &mut users {
        if user.userid == "dt-linked" {
            user.name = "Name linked".into();
        }
    }
    users.push(DtUser {
        name: "Name newbie".into(),
        ..ruser("newbie", "1004", &[10])
    });
    remote.users = users.into();
    let plan = plan_push(&local, &remote, &config(), Scope::Users);
    assert_eq!(plan.dingtalk_writes(), 0, "{:?}", names(&plan));
}

#[test]
fn deleted_frozen_and_hard_deleted_users() {
    let mut deleted = user("u1", "gone", "1", &[]);
    deleted.del_flag = 1;
    let mut frozen = user("u2", "frozen", "2", &[]);
    frozen.status = Some(2);
    let mut local = view(vec![dept("a", None, "A", Some(10))], vec![deleted, frozen]);
    local
        .user_snapshots
        .insert("u9".into(), snap("u9", "hard", "h"));
    let remote = RemoteView {
        depts: vec![rdept(10, 1, "A")],
        users: vec![ruser("hard", "9", &[10]), ruser("gone", "1", &[10])].into(),
        ..Default::default()
    };
    let plan = plan_push(&local, &remote, &config(), Scope::Users);
    assert_eq!(
        names(&plan),
        vec!["create user frozen", "delete user hard"],
        "logically deleted: not pushed, not deleted"
    );
    let keep = rules(PushConfig {
        delete_users_on_hard_delete: false,
        ..push_config()
    });
    assert_eq!(
        names(&plan_push(&local, &remote, &keep, Scope::Users)),
        vec!["create user frozen"]
    );
}

#[test]
fn a_user_without_a_mapped_department_goes_to_root_and_one_without_a_phone_fails() {
    let mut no_phone = user("u2", "nophone", "", &[]);
    no_phone.phone = None;
    let local = view(
        vec![post("p", "x")],
        vec![user("u1", "inpost", "1", &["p"]), no_phone],
    );
    let plan = plan_push(&local, &RemoteView::default(), &config(), Scope::Users);
    match &plan.ops[0] {
        Op::CreateUser { fields, .. } => assert_eq!(fields.depts, Some(vec![DeptRef::Ding(1)])),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&plan.ops[1], Op::Fail { reason, .. } if reason.contains("mobile")));
}

#[test]
fn pull_creates_updates_and_never_deletes_departments() {
    let mut local = view(
        vec![
            dept("a", None, "A", Some(10)),
            dept("only-local", None, "Local", None),
            dept("src", None, "Src", None),
        ],
        vec![],
    );
    local.depts[0].name = "Old A".into();
    let mut by_source = rdept(30, 1, "Src");
    by_source.source_identifier = Some("src".into());
    let remote = RemoteView {
        depts: vec![
            rdept(10, 1, "A"),
            rdept(20, 10, "New"),
            rdept(21, 20, "Newer"),
            by_source,
        ],
        users: Default::default(),
        ..Default::default()
    };
    let plan = plan_pull(
        &local,
        &remote,
        &merge::Policy::default(),
        Scope::Departments,
    );
    let ops: Vec<String> = plan
        .ops
        .iter()
        .map(|op| match op {
            Op::CreateLocalDept {
                dept_id, parent, ..
            } => format!("create {dept_id} under {parent:?}"),
            Op::UpdateLocalDept { local_id, name, .. } => format!("update {local_id} {name}"),
            Op::LinkDept { local_id, .. } => format!("link {local_id}"),
            Op::Merge { key, fields, .. } => format!(
                "left {key}: {}",
                fields
                    .iter()
                    .map(|f| format!("{} {}", f.field, f.action))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            "left a: name left for the push",
            "link a",
            "link src",
            "create 20 under Local(\"a\")",
            "create 21 under Created(20)"
        ],
        "a, linked before bases existed: its base is DingTalk's, so the local rename is \
         JeecgBoot's change (the push sends it); src, matched by source_identifier, is linked"
    );
}

#[test]
fn pull_users_insert_match_and_refuse_a_duplicate_phone() {
    let mut local = view(
        vec![dept("a", None, "A", Some(10))],
        vec![
            user("u1", "lisi", "1001", &[]),
            user("u2", "wang", "1002", &["a"]),
        ],
    );
    local.links.push(Link {
        user_id: "u2".into(),
        userid: "dt-wang".into(),
        unionid: None,
        tenant_id: 0,
    });
    let remote = RemoteView {
        depts: vec![rdept(10, 1, "A")],
        users: vec![
            DtUser {
                name: "Name lisi".into(),
                ..ruser("dt-lisi", "1001", &[10])
            },
            ruser("dt-other", "1002", &[10]),
            DtUser {
                email: "new@x".into(),
                ..ruser("dt-new", "1003", &[10])
            },
        ]
        .into(),
        ..Default::default()
    };
    let plan = plan_pull(&local, &remote, &merge::Policy::default(), Scope::Users);
    assert!(
        matches!(&plan.ops[0], Op::UpdateLocalUser { local_id, link: true, fields, .. } if local_id == "u1" && fields.add_depts == vec![LocalRef::Local("a".into())])
    );
    // DingTalk users are planned in userid order: dt-lisi, dt-new, dt-other.
    assert!(
        matches!(&plan.ops[1], Op::CreateLocalUser { userid, fields, .. } if userid == "dt-new" && fields.email.as_deref() == Some("new@x"))
    );
    assert!(
        matches!(&plan.ops[2], Op::Fail { key, reason, .. } if key == "dt-other" && reason.contains("linked to DingTalk user dt-wang")),
        "{:?}",
        plan.ops[2]
    );
    // Unchanged and linked: nothing.
    let mut linked = local.clone();
    linked.links.push(Link {
        user_id: "u1".into(),
        userid: "dt-lisi".into(),
        unionid: None,
        tenant_id: 0,
    });
    linked.users[0].depart_ids = vec!["a".into()];
    let lisi = RemoteView {
        depts: remote.depts.clone(),
        users: vec![remote.users.get("dt-lisi").unwrap()].into(),
        ..Default::default()
    };
    let plan = plan_pull(&linked, &lisi, &merge::Policy::default(), Scope::Users);
    // Linked before bases existed: the base is recorded once (no local field written).
    match &plan.ops[..] {
        [Op::UpdateLocalUser {
            fields, base, link, ..
        }] => {
            assert!(fields.is_empty() && !link, "{fields:?}");
            linked
                .user_snapshots
                .insert("u1".into(), based("u1", "dt-lisi", base));
        }
        other => panic!("{other:?}"),
    }
    let plan = plan_pull(&linked, &lisi, &merge::Policy::default(), Scope::Users);
    assert!(plan.ops.is_empty(), "{:?}", plan.ops);
}

#[test]
fn the_deletion_guard_table() {
    // (departments about to go, pushable local departments, max) -> refused because of ...
    let cases: [(usize, usize, u32, Option<&str>); 6] = [
        (0, 0, 10, None),
        (1, 0, 10, Some("local department tree is empty")),
        (10, 5, 10, None),
        (11, 5, 10, Some("11 DingTalk departments would be deleted")),
        (2, 1, 1, Some("more than push.max_department_deletes = 1")),
        (1, 1, 1, None),
    ];
    for (deletes, local, max, expected) in cases {
        let refusal = deletion_refusal(deletes, local, max);
        match expected {
            None => assert_eq!(refusal, None, "{deletes} / {local} / {max}"),
            Some(text) => assert!(
                refusal.as_deref().is_some_and(|r| r.contains(text)),
                "{deletes} / {local} / {max}: {refusal:?}"
            ),
        }
    }
}

#[test]
fn mobiles_compare_without_the_mainland_prefix_and_separators() {
    use crate::sync::model::mobile_key;
    for (mobile, key) in [
        ("13800000001", "13800000001"),
        ("+86-13800000001", "13800000001"),
        ("+86 138 0000 0001", "13800000001"),
        ("008613800000001", "13800000001"),
        ("+852-51234567", "+85251234567"),
        ("+86-1234", "+861234"),
        ("", ""),
    ] {
        assert_eq!(mobile_key(mobile), key, "{mobile}");
    }
    // DingTalk shows `+86-…` (an organisation registered outside mainland China), JeecgBoot
    // keeps `1380…`: the same person. Push matches by mobile and reports no difference; pull
    // matches by phone and leaves JeecgBoot's number as it is.
    let local = view(
        vec![dept("a", None, "A", Some(10))],
        vec![user("u1", "lihua", "13800000001", &["a"])],
    );
    let remote = RemoteView {
        depts: vec![rdept(10, 1, "A")],
        users: vec![DtUser {
            name: "Name lihua".into(),
            ..ruser("dt-lihua", "+86-13800000001", &[10])
        }]
        .into(),
        ..Default::default()
    };
    let push = plan_push(&local, &remote, &config(), Scope::Users);
    assert_eq!(names(&push), vec!["link dt-lihua"]);
    let pull = plan_pull(&local, &remote, &merge::Policy::default(), Scope::Users);
    assert!(
        matches!(&pull.ops[..], [Op::UpdateLocalUser { local_id, fields, .. }] if local_id == "u1" && fields.phone.is_none()),
        "{:?}",
        pull.ops
    );
}
