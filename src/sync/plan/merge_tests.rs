//! The three-way merge as the plans apply it: every field class (text, mobile, department
//! list, department parent), each side changed, both, conflicts under both policies, a
//! master side when a direction is off, hidden mobiles, rows deleted locally — what a push
//! sends and what a pull writes.

use super::merge::{Policy, Side};
use super::tests::{based, dept, names, push_config, rdept, ruser, user, view};
use super::*;
use crate::dingtalk::types::DtUser;
use crate::jeecg::{Link, LocalUser};
use crate::sync::model::{DeptBase, RemoteDept, UserBase};

/// A user linked and synced: local `lihua` (u1) in department a (DingTalk 10), DingTalk
/// `lihua` in 10, both with the base's values; `change` edits them before planning.
struct Synced {
    local: LocalView,
    remote_user: DtUser,
    remote_depts: Vec<RemoteDept>,
}

fn synced() -> Synced {
    let mut local = view(
        vec![
            dept("a", None, "A", Some(10)),
            dept("b", None, "B", Some(20)),
        ],
        vec![LocalUser {
            realname: "李华".into(),
            email: Some("lihua@x.cn".into()),
            ..user("u1", "lihua", "13800000001", &["a"])
        }],
    );
    local.links.push(Link {
        user_id: "u1".into(),
        userid: "lihua".into(),
        unionid: None,
        tenant_id: 0,
    });
    let base = UserBase {
        name: "李华".into(),
        mobile: "13800000001".into(),
        email: "lihua@x.cn".into(),
        depts: vec![10],
        ..UserBase::default()
    };
    local
        .user_snapshots
        .insert("u1".into(), based("u1", "lihua", &base));
    for (id, ding, name) in [("a", 10, "A"), ("b", 20, "B")] {
        local.dept_snapshots.insert(
            id.into(),
            based(
                id,
                &ding.to_string(),
                &DeptBase {
                    name: name.into(),
                    parent: 1,
                    order: 0,
                },
            ),
        );
    }
    let remote_user = DtUser {
        name: "李华".into(),
        email: "lihua@x.cn".into(),
        ..ruser("lihua", "13800000001", &[10])
    };
    Synced {
        local,
        remote_user,
        remote_depts: vec![rdept(10, 1, "A"), rdept(20, 1, "B")],
    }
}

fn policy(prefer: Side, master: Option<Side>) -> Policy {
    Policy {
        prefer,
        master,
        dept_master: master,
    }
}

/// (push plan, pull plan) of a synced state after `change`, under `policy`, as names
/// without the link/base records.
fn plans(change: impl Fn(&mut Synced), policy: Policy) -> (Vec<String>, Vec<String>) {
    let mut state = synced();
    change(&mut state);
    let remote = RemoteView {
        depts: state.remote_depts.clone(),
        users: vec![state.remote_user.clone()].into(),
        ..RemoteView::default()
    };
    let rules = Rules {
        push: push_config(),
        policy,
    };
    let push = plan_push(&state.local, &remote, &rules, Scope::All);
    let pull = plan_pull(&state.local, &remote, &policy, Scope::All);
    let shown = |plan: &Plan| -> Vec<String> {
        names(plan)
            .into_iter()
            .filter(|n| !n.starts_with("link") && !n.starts_with("LinkDept"))
            .collect()
    };
    (shown(&push), shown(&pull_view(&pull)))
}

/// A pull plan in the same `names` form, its local writes spelled out.
fn pull_view(plan: &Plan) -> Plan {
    Plan {
        ops: plan
            .ops
            .iter()
            .filter(|op| !matches!(op, Op::UpdateLocalUser { fields, .. } if fields.is_empty()))
            .cloned()
            .collect(),
        ..plan.clone()
    }
}

fn one(names: &[String]) -> String {
    names.join(" | ")
}

#[test]
fn text_fields_each_side_both_and_conflicts() {
    let default = Policy::default();
    let dingtalk = policy(Side::Dingtalk, None);
    type Change = fn(&mut Synced);
    let local_edit: Change = |s| s.local.users[0].realname = "李华华".into();
    let console_edit: Change = |s| s.remote_user.name = "李小华".into();
    let same_edit: Change = |s| {
        s.local.users[0].realname = "李同".into();
        s.remote_user.name = "李同".into();
    };
    let both_edit: Change = |s| {
        s.local.users[0].realname = "本地".into();
        s.remote_user.name = "钉钉".into();
    };
    // (case, change, policy, push contains, pull contains)
    let cases: Vec<(&str, Change, Policy, &str, &str)> = vec![
        (
            "JeecgBoot changed it",
            local_edit,
            default,
            r#"update user lihua {"name":"李华华"}"#,
            "left u1: name left for the push",
        ),
        (
            "DingTalk changed it",
            console_edit,
            default,
            "left u1: name left for the pull",
            "pull realname 李小华",
        ),
        ("both, to the same", same_edit, default, "", ""),
        (
            "both: JeecgBoot wins",
            both_edit,
            default,
            r#"update user lihua {"name":"本地"}"#,
            "left u1: name left for the push",
        ),
        (
            "both: DingTalk wins",
            both_edit,
            dingtalk,
            "left u1: name left for the pull",
            "pull realname 钉钉",
        ),
    ];
    for (case, change, policy, push, pull) in cases {
        let (pushed, pulled) = plans(change, policy);
        let (pushed, pulled) = (one(&pushed), one(&pulled));
        assert!(
            pushed.contains(push) && (push.is_empty() == pushed.is_empty()),
            "{case}: push {pushed}"
        );
        assert!(
            pulled.contains(pull) && (pull.is_empty() == pulled.is_empty()),
            "{case}: pull {pulled}"
        );
    }
}

#[test]
fn a_master_side_restores_its_values() {
    // Pull off: JeecgBoot is the master, a console edit is reverted by the push.
    let (pushed, _) = plans(
        |s| s.remote_user.name = "李小华".into(),
        policy(Side::Jeecgboot, Some(Side::Jeecgboot)),
    );
    assert!(
        one(&pushed).contains(r#"update user lihua {"name":"李华"}"#),
        "{pushed:?}"
    );
    // Push off: DingTalk is the master, a local edit is overwritten by the pull.
    let (_, pulled) = plans(
        |s| s.local.users[0].realname = "李华华".into(),
        policy(Side::Jeecgboot, Some(Side::Dingtalk)),
    );
    assert!(one(&pulled).contains("pull realname 李华"), "{pulled:?}");
}

#[test]
fn mobiles_stay_local_are_reported_once_and_hidden_ones_are_no_difference() {
    let default = Policy::default();
    // JeecgBoot changed it: DingTalk cannot take it (reported), the pull leaves it.
    let local_edit = |s: &mut Synced| s.local.users[0].phone = Some("13900000009".into());
    let (pushed, pulled) = plans(local_edit, default);
    assert!(pushed.iter().any(|n| n == "warn u1"), "{pushed:?}");
    assert!(!one(&pulled).contains("pull phone"), "{pulled:?}");
    // Reported once: with the base that remembers it, the next push says nothing.
    let told = |s: &mut Synced| {
        local_edit(s);
        let base = UserBase {
            name: "李华".into(),
            mobile: "13800000001".into(),
            email: "lihua@x.cn".into(),
            depts: vec![10],
            mobile_refused: Some("13900000009".into()),
            ..UserBase::default()
        };
        s.local
            .user_snapshots
            .insert("u1".into(), based("u1", "lihua", &base));
    };
    let (pushed, _) = plans(told, default);
    assert!(!pushed.iter().any(|n| n == "warn u1"), "{pushed:?}");
    // DingTalk changed it (an admin in the console): the pull takes it.
    let (_, pulled) = plans(|s| s.remote_user.mobile = "13700000007".into(), default);
    assert!(
        one(&pulled).contains("pull phone 13700000007"),
        "{pulled:?}"
    );
    // Without a base, a local mobile is never overwritten.
    let no_base = |s: &mut Synced| {
        s.remote_user.mobile = "13700000007".into();
        s.local.user_snapshots.clear();
        s.local.links.clear();
    };
    let (_, pulled) = plans(no_base, default);
    assert!(!one(&pulled).contains("pull phone"), "{pulled:?}");
    // Hidden (no permission): no difference either way.
    let (pushed, pulled) = plans(|s| s.remote_user.mobile.clear(), default);
    assert!(
        pushed.is_empty() && pulled.is_empty(),
        "{pushed:?} {pulled:?}"
    );
}

#[test]
fn department_lists_follow_the_side_that_moved_the_user() {
    let default = Policy::default();
    let (pushed, pulled) = plans(|s| s.local.users[0].depart_ids = vec!["b".into()], default);
    assert!(
        one(&pushed).contains(r#"update user lihua {"depts":[{"ding":20}]}"#),
        "{pushed:?}"
    );
    assert!(
        one(&pulled).contains("left u1: depts left for the push"),
        "{pulled:?}"
    );
    let (pushed, pulled) = plans(|s| s.remote_user.dept_id_list = vec![20], default);
    assert!(
        one(&pushed).contains("left u1: depts left for the pull"),
        "{pushed:?}"
    );
    assert!(
        one(&pulled).contains("pull add [Local(\"b\")] remove [\"a\"]"),
        "{pulled:?}"
    );
}

#[test]
fn department_names_and_parents_follow_the_side_that_changed_them() {
    let default = Policy::default();
    let (pushed, pulled) = plans(|s| s.local.depts[1].parent_id = Some("a".into()), default);
    assert!(
        one(&pushed).contains("update b name=None parent=Some(Ding(10))"),
        "{pushed:?}"
    );
    assert!(
        one(&pulled).contains("left b: parent left for the push"),
        "{pulled:?}"
    );
    let (pushed, pulled) = plans(|s| s.remote_depts[1] = rdept(20, 10, "B2"), default);
    assert!(
        one(&pushed).contains("left b: name left for the pull, parent left for the pull"),
        "{pushed:?}"
    );
    assert!(
        one(&pulled).contains("pull dept b B2 under Local(\"a\")"),
        "{pulled:?}"
    );
}

#[test]
fn a_pull_inserts_no_phoneless_user_and_restores_no_deleted_row() {
    let mut state = synced();
    state.local.depts[1].del_flag = "1".into();
    state.local.users[0].del_flag = 1;
    let remote = RemoteView {
        depts: vec![
            rdept(10, 1, "A"),
            rdept(20, 1, "B"),
            rdept(21, 20, "Under B"),
        ],
        users: vec![
            state.remote_user.clone(),
            DtUser {
                name: "新人".into(),
                ..ruser("hidden", "", &[10])
            },
        ]
        .into(),
        ..RemoteView::default()
    };
    let pulled = names(&plan_pull(
        &state.local,
        &remote,
        &Policy::default(),
        Scope::All,
    ));
    assert_eq!(
        pulled.iter().filter(|n| n.starts_with("warn")).count(),
        4,
        "b deleted, 21 under it, lihua deleted, hidden without a mobile: {pulled:?}"
    );
    assert!(!pulled.iter().any(|n| n.contains("Create")), "{pulled:?}");
}

#[test]
fn a_pull_restores_no_row_deleted_for_good_before_the_push_removed_its_twin() {
    // Department b and user lihua deleted for good locally (rows gone, snapshots and link
    // left): DingTalk still has them, since the push has not run yet.
    let mut state = synced();
    state.local.depts.retain(|d| d.id != "b");
    state.local.users.clear();
    let remote = RemoteView {
        depts: vec![
            rdept(10, 1, "A"),
            rdept(20, 1, "B"),
            rdept(21, 20, "Under B"),
        ],
        users: vec![state.remote_user.clone()].into(),
        ..RemoteView::default()
    };
    let pulled = names(&plan_pull(
        &state.local,
        &remote,
        &Policy::default(),
        Scope::All,
    ));
    assert_eq!(
        pulled.iter().filter(|n| n.starts_with("warn")).count(),
        3,
        "b deleted, 21 under it, lihua deleted: {pulled:?}"
    );
    assert!(
        !pulled.iter().any(|n| n.to_lowercase().contains("create")),
        "{pulled:?}"
    );
}
