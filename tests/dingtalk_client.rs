//! The DingTalk client against the simulator over real HTTP: every endpoint's success path,
//! every errcode the issue names provoked and classified, token expiry shared by concurrent
//! callers, injected faults retried until success.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{client, start_sim, APPKEY, APPSECRET};
use dingsync::dingtalk::types::{
    DeptCreate, DeptUpdate, Message, Recipients, UserCreate, UserUpdate,
};
use dingsync::dingtalk::{DingTalkClient, ErrorKind, Repeat};
use dingsync::sim::{FaultAction, FaultRule, SimOptions};
use serde_json::json;

/// A simulator whose rate limit is far above the test client's: these tests are about other
/// rules (the limit itself has its own test), and a loaded CI machine must not turn them into
/// throttling tests.
fn unthrottled() -> SimOptions {
    SimOptions {
        qps_per_path: 100_000,
        ..SimOptions::default()
    }
}

fn user(userid: &str, mobile: &str, dept: i64) -> UserCreate {
    UserCreate {
        userid: userid.into(),
        name: format!("User {userid}"),
        mobile: mobile.into(),
        dept_id_list: vec![dept],
        ..UserCreate::default()
    }
}

fn calls_on(server: &dingsync::sim::SimServer, path: &str) -> dingsync::sim::CallCount {
    server
        .sim
        .calls(APPKEY)
        .get(path)
        .copied()
        .unwrap_or_default()
}

/// Two departments made, read, listed and one moved: (研发部, 质量组 under the root).
async fn departments_succeed(dt: &DingTalkClient) -> (i64, i64) {
    let rd = dt
        .dept_create(&DeptCreate {
            name: "研发部".into(),
            parent_id: 1,
            order: Some(3),
            source_identifier: Some("local-rd".into()),
        })
        .await
        .unwrap();
    let qa = dt
        .dept_create(&DeptCreate {
            name: "测试组".into(),
            parent_id: rd,
            ..DeptCreate::default()
        })
        .await
        .unwrap();
    let got = dt.dept_get(rd).await.unwrap();
    assert_eq!(
        (got.name.as_str(), got.parent_id, got.order),
        ("研发部", Some(1), Some(3))
    );
    assert_eq!(got.source_identifier.as_deref(), Some("local-rd"));
    assert_eq!(dt.dept_listsubid(1).await.unwrap(), vec![rd]);
    let sub = dt.dept_listsub(rd).await.unwrap();
    assert_eq!(
        (sub.len(), sub[0].dept_id, sub[0].name.as_str()),
        (1, qa, "测试组")
    );
    dt.dept_update(&DeptUpdate {
        dept_id: qa,
        name: Some("质量组".into()),
        parent_id: Some(1),
        ..DeptUpdate::default()
    })
    .await
    .unwrap();
    assert_eq!(dt.dept_get(qa).await.unwrap().parent_id, Some(1));
    (rd, qa)
}

/// 150 users made in `rd`, one updated into `qa` too, then read, listed (100 a page),
/// found by mobile and counted.
async fn users_succeed(dt: &DingTalkClient, server: &dingsync::sim::SimServer, rd: i64, qa: i64) {
    for n in 0..150 {
        dt.user_create(&user(&format!("u{n:03}"), &format!("138{n:08}"), rd))
            .await
            .unwrap();
    }
    let mut update = UserUpdate {
        userid: "u000".into(),
        title: Some("工程师".into()),
        ..UserUpdate::default()
    };
    update.dept_id_list = Some(vec![rd, qa]);
    dt.user_update(&update).await.unwrap();
    let u0 = dt.user_get("u000").await.unwrap();
    assert_eq!(
        (u0.title.as_str(), u0.dept_id_list.clone()),
        ("工程师", vec![rd, qa])
    );
    let members = dt.user_list_all(rd).await.unwrap();
    assert_eq!(members.len(), 150);
    assert_eq!(
        calls_on(server, "topapi/v2/user/list").calls,
        2,
        "100 a page"
    );
    assert_eq!(dt.user_listid(qa).await.unwrap(), vec!["u000".to_string()]);
    assert_eq!(
        dt.user_by_mobile("13800000007").await.unwrap().as_deref(),
        Some("u007")
    );
    assert_eq!(dt.user_by_mobile("13999999999").await.unwrap(), None);
    assert_eq!(dt.user_count(false).await.unwrap(), 150);
    assert_eq!(dt.user_count(true).await.unwrap(), 0);
}

/// A work notice sent (with its progress and results, and the same one again refused for
/// the day), and one to everybody recalled.
async fn messages_succeed(dt: &DingTalkClient, server: &dingsync::sim::SimServer) {
    let to = Recipients {
        userids: vec!["u001".into(), "ghost".into()],
        ..Recipients::default()
    };
    let task = dt.send(&to, &Message::text("hello")).await.unwrap();
    assert_eq!(dt.send_progress(task).await.unwrap().status, 2);
    let result = dt.send_result(task).await.unwrap();
    assert_eq!(result.unread_user_id_list, vec!["u001".to_string()]);
    assert_eq!(result.invalid_user_id_list, vec!["ghost".to_string()]);
    // The same content to the same user on the same day is not delivered again.
    let again = dt.send(&to, &Message::text("hello")).await.unwrap();
    let result = dt.send_result(again).await.unwrap();
    assert_eq!(result.forbidden_user_id_list, vec!["u001".to_string()]);
    assert_eq!(result.forbidden_list[0].code, 143_106);
    let all = dt
        .send(
            &Recipients {
                to_all: true,
                ..Recipients::default()
            },
            &Message::markdown("t", "### t"),
        )
        .await
        .unwrap();
    dt.recall(all).await.unwrap();
    assert!(server.sim.app(APPKEY).unwrap().notifications.tasks[&all].recalled);
}

#[tokio::test]
async fn every_endpoint_succeeds() {
    let server = start_sim(unthrottled()).await;
    let dt = client(&server, 1000);
    let (rd, qa) = departments_succeed(&dt).await;
    users_succeed(&dt, &server, rd, qa).await;
    messages_succeed(&dt, &server).await;
    dt.user_update(&UserUpdate {
        userid: "u000".into(),
        dept_id_list: Some(vec![rd]),
        ..UserUpdate::default()
    })
    .await
    .unwrap();
    dt.dept_delete(qa).await.unwrap();
    dt.user_delete("u149").await.unwrap();
    let org = server.sim.app(APPKEY).unwrap().org;
    assert!(!org.depts.contains_key(&qa) && !org.users.contains_key("u149"));
    assert_eq!(
        calls_on(&server, "gettoken").calls,
        1,
        "one token for the whole run"
    );
}

#[tokio::test]
async fn new_style_token_endpoint() {
    let server = start_sim(unthrottled()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1.0/oauth2/accessToken", server.url);
    let ok: serde_json::Value = http
        .post(&url)
        .json(&json!({ "appKey": APPKEY, "appSecret": APPSECRET }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["expireIn"], 7200);
    let token = ok["accessToken"].as_str().unwrap();
    // The token works on oapi, and asking again returns the same token.
    let again: serde_json::Value = http
        .get(format!(
            "{}/gettoken?appkey={APPKEY}&appsecret={APPSECRET}",
            server.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["access_token"], token);
    let bad = http
        .post(&url)
        .json(&json!({ "appKey": APPKEY, "appSecret": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<serde_json::Value>().await.unwrap()["code"],
        "invalidClientIdOrSecret"
    );
}

/// Sends a raw call (bypassing the client's own checks) and returns (kind, errcode).
async fn raw(
    dt: &DingTalkClient,
    route: &'static str,
    body: serde_json::Value,
) -> (ErrorKind, Option<i64>) {
    let error = dt.call(route, &body, Repeat::Safe).await.expect_err(route);
    (error.kind, error.errcode)
}

const CREATE: &str = "topapi/v2/user/create";
const UPDATE: &str = "topapi/v2/user/update";
const DCREATE: &str = "topapi/v2/department/create";
const DUPDATE: &str = "topapi/v2/department/update";
const DDELETE: &str = "topapi/v2/department/delete";

/// A refused call: the route, its body, the kind and errcode it must answer.
type RuleCase = (&'static str, serde_json::Value, ErrorKind, i64);

/// The organisation the rule cases run against: departments A and B (under A), and user
/// zhangsan in A with an e-mail and an extension. Returns (A, B).
async fn rule_org(dt: &DingTalkClient) -> (i64, i64) {
    let dept = dt
        .dept_create(&DeptCreate {
            name: "A".into(),
            parent_id: 1,
            ..DeptCreate::default()
        })
        .await
        .unwrap();
    let child = dt
        .dept_create(&DeptCreate {
            name: "B".into(),
            parent_id: dept,
            ..DeptCreate::default()
        })
        .await
        .unwrap();
    let mut first = user("zhangsan", "13800000001", dept);
    first.email = Some("z@example.com".into());
    first.telephone = Some("8001".into());
    dt.user_create(&first).await.unwrap();
    (dept, child)
}

/// Rule cases of user/create, with `dept` a department that exists.
fn create_rule_cases(dept: i64) -> Vec<RuleCase> {
    use ErrorKind::*;
    let base = |userid: &str, mobile: &str| json!({ "userid": userid, "name": "X", "mobile": mobile, "dept_id_list": dept.to_string() });
    vec![
        (
            CREATE,
            json!({ "userid": "x", "mobile": "13800000009", "dept_id_list": "1" }),
            Validation,
            40035,
        ),
        (
            CREATE,
            json!({ "userid": "x", "name": "a".repeat(81), "mobile": "13800000009", "dept_id_list": "1" }),
            Validation,
            60112,
        ),
        (
            CREATE,
            json!({ "userid": "x".repeat(65), "name": "X", "mobile": "13800000009", "dept_id_list": "1" }),
            Validation,
            400002,
        ),
        (CREATE, base("zhangsan", "13800000002"), UserIdExists, 60102),
        (CREATE, base("lisi", "13800000001"), MobileExists, 60104),
        (CREATE, base("lisi", "12345"), Validation, 60103),
        (
            CREATE,
            {
                let mut b = base("lisi", "13800000002");
                b["email"] = json!("z@example.com");
                b
            },
            EmailExists,
            60106,
        ),
        (
            CREATE,
            {
                let mut b = base("lisi", "13800000002");
                b["telephone"] = json!("8001");
                b
            },
            TelephoneExists,
            40100,
        ),
        (
            CREATE,
            {
                let mut b = base("lisi", "13800000002");
                b["dept_id_list"] = json!("424242");
                b
            },
            DeptNotFound,
            60003,
        ),
        (
            CREATE,
            {
                let ids: Vec<String> = (0..101).map(|_| dept.to_string()).collect();
                let mut b = base("lisi", "13800000002");
                b["dept_id_list"] = json!(ids.join(","));
                b
            },
            Validation,
            40035,
        ),
    ]
}

/// Rule cases of the other user routes and of the department routes (`child` under `dept`).
fn other_rule_cases(dept: i64, child: i64) -> Vec<RuleCase> {
    use ErrorKind::*;
    vec![
        (
            UPDATE,
            json!({ "userid": "zhangsan", "mobile": "13900000000" }),
            MobileNotUpdatable,
            40022,
        ),
        (
            UPDATE,
            json!({ "userid": "nobody", "name": "Y" }),
            UserNotFound,
            60121,
        ),
        (
            "topapi/v2/user/get",
            json!({ "userid": "nobody" }),
            UserNotFound,
            60121,
        ),
        (
            "topapi/v2/user/delete",
            json!({ "userid": "nobody" }),
            UserNotFound,
            60121,
        ),
        (
            "topapi/v2/user/list",
            json!({ "dept_id": dept, "cursor": 0, "size": 101 }),
            Validation,
            40035,
        ),
        (
            DCREATE,
            json!({ "name": "x".repeat(65), "parent_id": 1 }),
            Validation,
            60001,
        ),
        (
            DCREATE,
            json!({ "name": "a-b", "parent_id": 1 }),
            Validation,
            60009,
        ),
        (
            DCREATE,
            json!({ "name": "A", "parent_id": 1 }),
            DeptNameExists,
            60021,
        ),
        (
            DCREATE,
            json!({ "name": "C", "parent_id": 999 }),
            ParentNotFound,
            60004,
        ),
        (
            DUPDATE,
            json!({ "dept_id": dept, "parent_id": child }),
            Cycle,
            60010,
        ),
        (
            DUPDATE,
            json!({ "dept_id": 1, "name": "Root" }),
            RootProtected,
            60018,
        ),
        (
            DUPDATE,
            json!({ "dept_id": 999, "name": "Z" }),
            DeptNotFound,
            60003,
        ),
        (DDELETE, json!({ "dept_id": 1 }), RootProtected, 60007),
        (DDELETE, json!({ "dept_id": dept }), DeptHasChildren, 60006),
        (DDELETE, json!({ "dept_id": 999 }), DeptNotFound, 60003),
    ]
}

/// Rule cases of work notices.
fn message_rule_cases() -> Vec<RuleCase> {
    use ErrorKind::*;
    vec![
        (
            "topapi/message/corpconversation/asyncsend_v2",
            json!({ "agent_id": 1, "msg": {"msgtype": "text", "text": {"content": "x"}}, "to_all_user": true }),
            Validation,
            40056,
        ),
        (
            "topapi/message/corpconversation/asyncsend_v2",
            json!({ "agent_id": common::AGENT_ID, "msg": {"msgtype": "text", "text": {"content": "x".repeat(2100)}}, "to_all_user": true }),
            Validation,
            45002,
        ),
        (
            "topapi/message/corpconversation/asyncsend_v2",
            json!({ "agent_id": common::AGENT_ID, "msg": {"msgtype": "video", "video": {}}, "to_all_user": true }),
            Validation,
            40008,
        ),
        (
            "topapi/message/corpconversation/recall",
            json!({ "agent_id": common::AGENT_ID, "msg_task_id": 1 }),
            Validation,
            400002,
        ),
    ]
}

#[tokio::test]
async fn every_rule_answers_its_errcode_and_is_classified() {
    use ErrorKind::*;
    let server = start_sim(unthrottled()).await;
    let dt = client(&server, 1000);
    let (dept, child) = rule_org(&dt).await;
    let mut cases = create_rule_cases(dept);
    cases.extend(other_rule_cases(dept, child));
    cases.extend(message_rule_cases());
    for (route, body, kind, errcode) in cases {
        let got = raw(&dt, route, body.clone()).await;
        assert_eq!(got, (kind, Some(errcode)), "{route} {body}");
        assert!(
            !dingsync::dingtalk::DingTalkError::api(route, errcode, String::new()).is_retryable()
        );
    }
    // Once its child is gone, the department still has a member.
    dt.dept_delete(child).await.unwrap();
    assert_eq!(
        raw(&dt, DDELETE, json!({ "dept_id": dept })).await,
        (DeptHasMembers, Some(60005))
    );
    // The same rule errcodes through the typed methods.
    let e = dt
        .user_create(&user("zhangsan", "13800000005", dept))
        .await
        .unwrap_err();
    assert_eq!(e.kind, UserIdExists);
    assert!(e.to_string().contains("errcode 60102"), "{e}");
}

#[tokio::test]
async fn token_and_permission_errcodes_are_classified() {
    let server = start_sim(unthrottled()).await;
    let mut bad = common::credentials();
    bad.client_secret = dingsync::secret::Secret::new("wrong-secret-SHOULD-NOT-LEAK");
    let wrong = DingTalkClient::new(common::client_options(&server.url, 1000), bad).unwrap();
    let error = wrong.user_count(false).await.unwrap_err();
    assert_eq!(
        (error.kind, error.errcode),
        (ErrorKind::Credentials, Some(40089))
    );
    assert!(!error.is_retryable());
    assert!(!format!("{error} {error:?}").contains("SHOULD-NOT-LEAK"));

    let http = reqwest::Client::new();
    for (token, errcode) in [("", 41001), ("not-a-token", 40014)] {
        let url = format!("{}/topapi/user/count?access_token={token}", server.url);
        let url = if token.is_empty() {
            format!("{}/topapi/user/count", server.url)
        } else {
            url
        };
        let answer: serde_json::Value = http
            .post(url)
            .json(&json!({"only_active": false}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["errcode"], errcode);
        assert_eq!(ErrorKind::from_errcode(errcode), ErrorKind::TokenInvalid);
    }
    let get = http
        .get(format!("{}/topapi/user/count", server.url))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(get["errcode"], 43002, "topapi needs POST");

    let dt = client(&server, 1000);
    for (errcode, sub_code) in [
        (88, Some("60011")),
        (60011, None),
        (60020, None),
        (50002, None),
        (50004, None),
    ] {
        let action = FaultAction::Errcode {
            errcode,
            sub_code: sub_code.map(str::to_string),
        };
        server
            .sim
            .inject(FaultRule::next("topapi/user/count", 1, action));
        let error = dt.user_count(false).await.unwrap_err();
        assert_eq!(
            (error.kind, error.errcode),
            (ErrorKind::Permission, Some(errcode))
        );
        assert_eq!(error.sub_code.as_deref(), sub_code);
        assert!(!error.is_retryable());
    }
    // Persistent throttling gives up after max_throttled_attempts and stays retryable.
    server.sim.inject(FaultRule::next(
        "topapi/user/count",
        100,
        FaultAction::Errcode {
            errcode: 90018,
            sub_code: None,
        },
    ));
    let error = dt.user_count(false).await.unwrap_err();
    assert_eq!(
        (error.kind, error.errcode),
        (ErrorKind::Throttled, Some(90018))
    );
    assert!(error.is_retryable());
    assert_eq!(calls_on(&server, "topapi/user/count").faulted, 5 + 10);
}

#[tokio::test]
async fn expired_token_is_refreshed_once_for_20_concurrent_callers() {
    let server = start_sim(unthrottled()).await;
    let dt = Arc::new(client(&server, 1000));
    assert_eq!(dt.user_count(false).await.unwrap(), 0);
    // Two hours pass in DingTalk while the client still holds the token.
    server
        .sim
        .advance_clock(std::time::Duration::from_secs(7201));
    // Answers are held back so that all 20 calls are in flight with the old token at once.
    server.sim.inject(FaultRule::next(
        "topapi/user/count",
        20,
        FaultAction::Delay { ms: 300 },
    ));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let dt = Arc::clone(&dt);
        tasks.push(tokio::spawn(async move { dt.user_count(false).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 0);
    }
    assert_eq!(
        calls_on(&server, "gettoken").calls,
        2,
        "one refresh shared by all callers"
    );
    let count = calls_on(&server, "topapi/user/count");
    assert_eq!(
        (count.ok, count.failed),
        (21, 20),
        "each caller met 42001 once, then succeeded"
    );
    // An invalidated token (40014) is handled the same way.
    server.sim.invalidate_tokens(Some(APPKEY));
    assert_eq!(dt.user_count(false).await.unwrap(), 0);
    assert_eq!(calls_on(&server, "gettoken").calls, 3);
}

#[tokio::test]
async fn injected_faults_are_retried_until_success() {
    let server = start_sim(unthrottled()).await;
    let dt = client(&server, 1000);
    let faults = [
        FaultAction::Errcode {
            errcode: -1,
            sub_code: None,
        },
        FaultAction::Errcode {
            errcode: 90018,
            sub_code: None,
        },
        FaultAction::Errcode {
            errcode: 90002,
            sub_code: None,
        },
        FaultAction::Http { status: 502 },
        FaultAction::Http { status: 503 },
        FaultAction::Drop,
        FaultAction::Html,
        FaultAction::IpBlock,
    ];
    for (n, action) in faults.into_iter().enumerate() {
        server.sim.reset_calls();
        let userid = format!("fault{n}");
        server
            .sim
            .inject(FaultRule::next("topapi/v2/user/create", 2, action.clone()));
        dt.user_create(&user(&userid, &format!("1370000000{n}"), 1))
            .await
            .unwrap_or_else(|e| panic!("{action:?}: {e}"));
        let count = calls_on(&server, "topapi/v2/user/create");
        assert_eq!(
            (count.calls, count.faulted, count.ok),
            (3, 2, 1),
            "{action:?}"
        );
        assert!(server
            .sim
            .app(APPKEY)
            .unwrap()
            .org
            .users
            .contains_key(&userid));
    }
    // An update whose answer is lost after it happened is simply repeated.
    server.sim.inject(FaultRule::next(
        "topapi/v2/user/update",
        1,
        FaultAction::DropAfter,
    ));
    dt.user_update(&UserUpdate {
        userid: "fault0".into(),
        title: Some("T".into()),
        ..UserUpdate::default()
    })
    .await
    .unwrap();
    assert_eq!(calls_on(&server, "topapi/v2/user/update").calls, 2);
    // A create whose answer was lost meets 60102 on the repeat: the caller sees UserIdExists.
    server.sim.inject(FaultRule::next(
        "topapi/v2/user/create",
        1,
        FaultAction::DropAfter,
    ));
    let error = dt
        .user_create(&user("lost", "13600000000", 1))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::UserIdExists);
    // A send whose answer was lost is not repeated (it may have gone out): one task only.
    server.sim.inject(FaultRule::next(
        "topapi/message/corpconversation/asyncsend_v2",
        1,
        FaultAction::DropAfter,
    ));
    let error = dt
        .send(
            &Recipients {
                to_all: true,
                ..Recipients::default()
            },
            &Message::text("once"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transport);
    assert!(error.is_retryable());
    assert_eq!(server.sim.app(APPKEY).unwrap().notifications.tasks.len(), 1);
}

#[tokio::test]
async fn slow_answers_time_out_and_transport_errors_hide_the_token() {
    let server = start_sim(unthrottled()).await;
    let mut options = common::client_options(&server.url, 1000);
    options.request_timeout = std::time::Duration::from_millis(200);
    options.max_attempts = 1;
    let dt = DingTalkClient::new(options, common::credentials()).unwrap();
    dt.user_count(false).await.unwrap();
    server.sim.inject(FaultRule::next(
        "topapi/user/count",
        1,
        FaultAction::Delay { ms: 1000 },
    ));
    let error = dt.user_count(false).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.is_retryable());
    // Nothing listens any more: a transport error, without URL, token or secret.
    let url = server.url.clone();
    server.stop().await;
    let error = dt.user_count(false).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transport);
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains("access_token") && !shown.contains(APPSECRET) && !shown.contains(&url),
        "{shown}"
    );
}

#[tokio::test]
async fn the_rate_limiter_keeps_the_client_under_the_simulators_limit() {
    let server = start_sim(SimOptions {
        qps_per_path: 10,
        ..SimOptions::default()
    })
    .await;
    let dt = Arc::new(client(&server, 10));
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let dt = Arc::clone(&dt);
        tasks.push(tokio::spawn(async move { dt.user_count(false).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let count = calls_on(&server, "topapi/user/count");
    assert_eq!((count.calls, count.throttled), (25, 0));
}

#[tokio::test]
async fn to_all_sends_are_capped_and_recall_closes_after_24_hours() {
    let server = start_sim(unthrottled()).await;
    let dt = client(&server, 1000);
    dt.user_create(&user("a", "13500000001", 1)).await.unwrap();
    dt.user_create(&user("b", "13500000002", 1)).await.unwrap();
    let all = Recipients {
        to_all: true,
        ..Recipients::default()
    };
    let mut tasks = Vec::new();
    for n in 0..4 {
        tasks.push(
            dt.send(&all, &Message::text(&format!("notice {n}")))
                .await
                .unwrap(),
        );
    }
    let fourth = dt.send_result(tasks[3]).await.unwrap();
    assert!(fourth.unread_user_id_list.is_empty());
    assert_eq!(
        fourth.forbidden_user_id_list.len(),
        2,
        "a 4th to-all send in one day reaches nobody"
    );
    assert_eq!(
        dt.send_result(tasks[0])
            .await
            .unwrap()
            .unread_user_id_list
            .len(),
        2
    );
    server
        .sim
        .advance_clock(std::time::Duration::from_secs(25 * 3600));
    let late = dt.recall(tasks[0]).await.unwrap_err();
    assert_eq!(
        (late.kind, late.errcode),
        (ErrorKind::Validation, Some(400002))
    );
    assert!(dt.send_result(tasks[0]).await.is_err());
    let next_day = dt.send(&all, &Message::text("notice 0")).await.unwrap();
    assert_eq!(
        dt.send_result(next_day)
            .await
            .unwrap()
            .unread_user_id_list
            .len(),
        2
    );
}
