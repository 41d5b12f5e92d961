//! The sync engine end to end: the store on SQLite (a sample org written for the project) and
//! on MariaDB (JeecgBoot's real dump), the DingTalk simulator over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{TestDb, APPKEY};
use dingsync::config::{Config, LoadOptions};
use dingsync::dingtalk::DingTalkClient;
use dingsync::jeecg::password;
use dingsync::sim::SimServer;
use dingsync::sync::model::{Direction, Scope, Summary};
use dingsync::sync::run::{plan_run, run_sliced, RunCtx, RunError, RunRequest};
use serde_json::json;

fn config(db_url: &str, sim_url: &str) -> Config {
    let text = format!(
        "[database]\nurl = \"{db_url}\"\n[dingtalk]\nbase_url = \"{sim_url}\"\nqps_per_api = 1000\n\
         [[tenant]]\nid = 0\nagent_id = {}\nclient_id = \"{APPKEY}\"\nclient_secret = \"{}\"\n",
        common::AGENT_ID,
        common::APPSECRET
    );
    dingsync::config::load_str(
        &text,
        std::path::Path::new("test.toml"),
        &LoadOptions::default(),
    )
    .unwrap()
    .config
}

/// What a run of tenant 0 works with.
fn ctx<'a>(
    store: &'a dingsync::store::Store,
    client: &'a DingTalkClient,
    config: &'a Config,
) -> RunCtx<'a> {
    RunCtx {
        store,
        client,
        config,
        tenant: &config.tenants[0],
    }
}

async fn run(
    db: &TestDb,
    server: &SimServer,
    client: &DingTalkClient,
    direction: Direction,
) -> Summary {
    run_scoped(db, server, client, direction, Scope::All)
        .await
        .unwrap()
}

/// A run of `scope` (tenant 0), its outcome as `run_sliced` gives it.
async fn run_scoped(
    db: &TestDb,
    server: &SimServer,
    client: &DingTalkClient,
    direction: Direction,
    scope: Scope,
) -> Result<Summary, RunError> {
    let config = config(&db.url, &server.url);
    let request = RunRequest {
        direction,
        scope,
        dry_run: false,
    };
    // Two users a slice: every run crosses many slices, on every backend.
    run_sliced(&ctx(&db.store, client, &config), request, None, 2).await
}

/// DingTalk's departments as paths of names ("A/B/C").
fn remote_paths(server: &SimServer) -> BTreeSet<String> {
    let org = server.sim.app(APPKEY).unwrap().org;
    let path = |mut id: i64| {
        let mut parts = Vec::new();
        while id != 1 {
            let d = &org.depts[&id];
            parts.push(d.name.clone());
            id = d.parent_id;
        }
        parts.reverse();
        parts.join("/")
    };
    org.depts
        .keys()
        .filter(|id| **id != 1)
        .map(|id| path(*id))
        .collect()
}

/// The local non-post, non-deleted departments as paths.
async fn local_paths(db: &TestDb) -> BTreeSet<String> {
    let depts = db.store.load_departments(0).await.unwrap();
    let by_id: BTreeMap<&str, &dingsync::jeecg::LocalDept> =
        depts.iter().map(|d| (d.id.as_str(), d)).collect();
    let path = |d: &dingsync::jeecg::LocalDept| {
        let mut parts = vec![d.name.clone()];
        let mut parent = d.parent_id.as_deref();
        while let Some(p) = parent.and_then(|p| by_id.get(p)) {
            if !p.is_post() && !p.is_deleted() {
                parts.push(p.name.clone());
            }
            parent = p.parent_id.as_deref();
        }
        parts.reverse();
        parts.join("/")
    };
    depts
        .iter()
        .filter(|d| !d.is_post() && !d.is_deleted())
        .map(path)
        .collect()
}

/// The sample organisation `dingsync demo` shows (`dingsync::sample`), in a new database.
async fn seed_sample(db: &TestDb) {
    db.store.init(true).await.unwrap();
    db.plain.load_sample_org().await.unwrap();
}

/// What the steps of [`end_to_end`] work with: the database, the simulator, a client of it.
struct E2e<'a> {
    db: &'a TestDb,
    server: &'a SimServer,
    client: &'a DingTalkClient,
}

impl E2e<'_> {
    /// A run of every entity (tenant 0) in `direction`.
    async fn run(&self, direction: Direction) -> Summary {
        run(self.db, self.server, self.client, direction).await
    }
}

/// First push: every pushable department with its parents, every user with departments.
/// DingTalk's organisation after it.
async fn the_first_push_creates_everything(
    t: &E2e<'_>,
    expected_users: &[&str],
) -> dingsync::sim::org::Org {
    let (db, server, name) = (t.db, t.server, t.db.name);
    let first = t.run(Direction::Push).await;
    assert_eq!(first.failed, 0, "{name}: {:?}", first.failures);
    println!(
        "{name}: first push: {} calls {:?}",
        first.api_calls.values().sum::<u64>(),
        first.api_calls
    );
    assert_eq!(remote_paths(server), local_paths(db).await, "{name}");
    let org = server.sim.app(APPKEY).unwrap().org;
    let users: BTreeSet<&str> = org.users.keys().map(String::as_str).collect();
    assert_eq!(users, expected_users.iter().copied().collect(), "{name}");
    let links = db.store.links(0).await.unwrap();
    assert_eq!(
        links.len(),
        expected_users.len(),
        "{name}: every pushed user has its sys_third_account row"
    );
    org
}

/// Nothing changed: no DingTalk write, nor any local bookkeeping.
async fn a_second_push_writes_nothing(t: &E2e<'_>) {
    let (db, server, client, name) = (t.db, t.server, t.client, t.db.name);
    server.sim.reset_calls();
    let second = t.run(Direction::Push).await;
    assert_eq!(
        server.sim.write_calls(APPKEY),
        0,
        "{name}: second push wrote: {:?}",
        server.sim.calls(APPKEY)
    );
    assert_eq!(
        (second.created, second.updated, second.failed),
        (0, 0, 0),
        "{name}"
    );
    println!(
        "{name}: second push: {} calls, 0 writes",
        second.api_calls.values().sum::<u64>()
    );
    // Nor any local bookkeeping: links and snapshots are stable after one run.
    let cfg = config(&db.url, &server.url);
    let request = RunRequest {
        direction: Direction::Push,
        scope: Scope::All,
        dry_run: true,
    };
    let again = plan_run(&ctx(&db.store, client, &cfg), request)
        .await
        .unwrap();
    assert!(
        again.ops.is_empty(),
        "{name}: a third push still plans {:?}",
        again.ops
    );
}

/// DingTalk's console renames a top department of `org`, creates 钉钉新部门 below it with
/// two users (dt_newbie, and dt_zhou, whom the database has as zhouxin). 钉钉新部门's id.
async fn console_changes(t: &E2e<'_>, org: &dingsync::sim::org::Org) -> i64 {
    let server = t.server;
    let some_dept = *org
        .depts
        .keys()
        .find(|id| **id != 1 && org.depts[id].parent_id == 1)
        .unwrap();
    let admin =
        |path: &str, body: serde_json::Value| server.sim.admin_call(APPKEY, path, body).unwrap();
    admin(
        "topapi/v2/department/update",
        json!({ "dept_id": some_dept, "name": "更名公司" }),
    );
    let new_dept = admin(
        "topapi/v2/department/create",
        json!({ "name": "钉钉新部门", "parent_id": some_dept }),
    )["result"]["dept_id"]
        .as_i64()
        .unwrap();
    admin(
        "topapi/v2/user/create",
        json!({ "userid": "dt_newbie", "name": "新人", "mobile": "13711112222", "email": "newbie@example.com", "dept_id_list": new_dept.to_string() }),
    );
    // A local user DingTalk shows with the mainland prefix (`+86-…`): the same person.
    t.db.plain
        .execute("INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('zhou', 'zhouxin', '周新', '13522223333', 1, 0)")
        .await
        .unwrap();
    admin(
        "topapi/v2/user/create",
        json!({ "userid": "dt_zhou", "name": "周新", "mobile": "+86-13522223333", "dept_id_list": new_dept.to_string() }),
    );
    new_dept
}

/// The pull after [`console_changes`] matches dt_zhou to zhouxin by phone, keeping
/// JeecgBoot's number.
async fn the_pull_matches_by_phone(t: &E2e<'_>) {
    let (db, name) = (t.db, t.db.name);
    let pulled = t.run(Direction::Pull).await;
    assert_eq!(pulled.failed, 0, "{name}: {:?}", pulled.failures);
    let zhou: Vec<_> = db
        .store
        .load_users(0)
        .await
        .unwrap()
        .into_iter()
        .filter(|u| {
            u.phone
                .as_deref()
                .is_some_and(|p| p.ends_with("13522223333"))
        })
        .map(|u| (u.username, u.phone))
        .collect();
    assert_eq!(
        zhou,
        vec![("zhouxin".to_string(), Some("13522223333".to_string()))],
        "{name}: matched by phone, JeecgBoot's number kept"
    );
    assert_eq!(
        db.store.link_of(0, "zhou").await.unwrap().map(|l| l.userid),
        Some("dt_zhou".to_string()),
        "{name}"
    );
}

/// After the pull, local matches DingTalk: the new user can log in, and the new department
/// `new_dept` has its local id written back.
async fn the_pulled_changes_are_local(t: &E2e<'_>, new_dept: i64) {
    let (db, server, name) = (t.db, t.server, t.db.name);
    assert_eq!(
        remote_paths(server),
        local_paths(db).await,
        "{name}: local matches DingTalk after the pull"
    );
    let newbie = db
        .store
        .load_users(0)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.username == "dt_newbie")
        .expect("pulled user");
    assert_eq!(
        (newbie.realname.as_str(), newbie.phone.as_deref()),
        ("新人", Some("13711112222")),
        "{name}"
    );
    let (hash, salt) = db.store.password_of("dt_newbie").await.unwrap().unwrap();
    assert!(
        password::verify("dt_newbie", "123456", &salt, &hash),
        "{name}: JeecgBoot's login accepts the new user"
    );
    let created = db
        .store
        .load_departments(0)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "钉钉新部门")
        .unwrap();
    let source = server.sim.app(APPKEY).unwrap().org.depts[&new_dept]
        .source_identifier
        .clone();
    assert_eq!(
        source.as_deref(),
        Some(created.id.as_str()),
        "{name}: the new local id written back"
    );
}

/// A local subtree with members deleted: members moved out, deepest first, others kept.
async fn a_deleted_subtree_moves_its_members_out(t: &E2e<'_>) {
    let (db, server, name) = (t.db, t.server, t.db.name);
    let depts = db.store.load_departments(0).await.unwrap();
    let victim = depts
        .iter()
        .filter(|d| !d.is_post() && d.parent_id.is_some())
        .find(|d| {
            depts
                .iter()
                .any(|c| c.parent_id.as_ref() == Some(&d.id) && !c.is_post())
        })
        .expect("a department with a sub-department");
    let subtree: Vec<String> = depts
        .iter()
        .filter(|d| d.org_code.starts_with(&victim.org_code))
        .map(|d| d.id.clone())
        .collect();
    let doomed: Vec<i64> = depts
        .iter()
        .filter(|d| subtree.contains(&d.id))
        .filter_map(|d| d.ding_identifier)
        .collect();
    for id in &subtree {
        db.plain
            .execute(&format!("DELETE FROM sys_depart WHERE id = '{id}'"))
            .await
            .unwrap();
    }
    let members_before: Vec<String> = server
        .sim
        .app(APPKEY)
        .unwrap()
        .org
        .users
        .values()
        .filter(|u| u.dept_id_list.iter().any(|d| doomed.contains(d)))
        .map(|u| u.userid.clone())
        .collect();
    let deleted = t.run(Direction::Push).await;
    assert_eq!(deleted.failed, 0, "{name}: {:?}", deleted.failures);
    assert_eq!(deleted.deleted as usize, doomed.len(), "{name}");
    let org = server.sim.app(APPKEY).unwrap().org;
    assert!(
        doomed.iter().all(|d| !org.depts.contains_key(d)),
        "{name}: subtree gone"
    );
    for userid in members_before {
        let user = &org.users[&userid];
        assert!(
            !user.dept_id_list.is_empty()
                && user.dept_id_list.iter().all(|d| org.depts.contains_key(d)),
            "{name}: {userid} moved: {:?}",
            user.dept_id_list
        );
    }
    assert_eq!(remote_paths(server), local_paths(db).await, "{name}");
    // Their snapshots go too (the daemon's deletion guard counts the ones left).
    let left: Vec<String> = db
        .store
        .snapshots(0, "dept")
        .await
        .unwrap()
        .into_iter()
        .filter(|s| subtree.contains(&s.local_id))
        .map(|s| s.local_id)
        .collect();
    assert!(
        left.is_empty(),
        "{name}: snapshots of deleted departments: {left:?}"
    );
}

/// A user deleted from the database for good is deleted in DingTalk (found through
/// its link row and snapshot, not in any slice of local users); the others stay.
async fn a_user_deleted_for_good_is_deleted_in_dingtalk(t: &E2e<'_>, expected_users: &[&str]) {
    let (db, server, name) = (t.db, t.server, t.db.name);
    let gone = expected_users[0];
    db.plain
        .execute(&format!("DELETE FROM sys_user WHERE username = '{gone}'"))
        .await
        .unwrap();
    let removed = t.run(Direction::Push).await;
    assert_eq!(removed.failed, 0, "{name}: {:?}", removed.failures);
    assert_eq!(removed.deleted, 1, "{name}");
    let org = server.sim.app(APPKEY).unwrap().org;
    assert!(!org.users.contains_key(gone), "{name}: {gone} deleted");
    assert!(
        expected_users[1..]
            .iter()
            .all(|u| org.users.contains_key(*u)),
        "{name}: the others stay"
    );
    server.sim.reset_calls();
    let settled = t.run(Direction::Push).await;
    assert_eq!(
        (settled.deleted, server.sim.write_calls(APPKEY)),
        (0, 0),
        "{name}: deleted once"
    );
}

/// All local departments wiped: the guard refuses, DingTalk is untouched.
async fn wiping_every_department_is_refused(t: &E2e<'_>) {
    let (db, server, name) = (t.db, t.server, t.db.name);
    let before = remote_paths(server);
    db.plain.execute("DELETE FROM sys_depart").await.unwrap();
    server.sim.reset_calls();
    let refused = t.run(Direction::Push).await;
    assert!(
        refused
            .failures
            .iter()
            .any(|(_, _, reason)| reason.contains("refusing to delete")),
        "{name}: {:?}",
        refused.failures
    );
    assert_eq!(remote_paths(server), before, "{name}: nothing deleted");
    assert_eq!(
        server
            .sim
            .calls(APPKEY)
            .get("topapi/v2/department/delete")
            .map_or(0, |c| c.calls),
        0,
        "{name}"
    );
}

async fn end_to_end(db: TestDb, expected_users: &[&str]) {
    let name = db.name;
    let server = common::start_fast_sim().await;
    let client = common::client(&server, 1000);
    let t = E2e {
        db: &db,
        server: &server,
        client: &client,
    };

    // 1. First push: every pushable department with its parents, every user with departments.
    let org = the_first_push_creates_everything(&t, expected_users).await;

    // 2. Nothing changed: no DingTalk write.
    a_second_push_writes_nothing(&t).await;

    // 3. Changes made in DingTalk's console are pulled; the pull does not echo back.
    let new_dept = console_changes(&t, &org).await;
    the_pull_matches_by_phone(&t).await;
    the_pulled_changes_are_local(&t, new_dept).await;
    server.sim.reset_calls();
    let echo = t.run(Direction::Push).await;
    assert_eq!(
        server.sim.write_calls(APPKEY),
        0,
        "{name}: push after pull wrote {:?} ({:?})",
        server.sim.calls(APPKEY),
        echo
    );

    // 4. A local subtree with members deleted: members moved out, deepest first, others kept.
    a_deleted_subtree_moves_its_members_out(&t).await;

    // 5. A user deleted from the database for good is deleted in DingTalk; the others stay.
    a_user_deleted_for_good_is_deleted_in_dingtalk(&t, expected_users).await;

    // 6. All local departments wiped: the guard refuses, DingTalk is untouched.
    wiping_every_department_is_refused(&t).await;
}

#[tokio::test]
async fn sqlite_sample_org_end_to_end() {
    let db = common::sqlite_db().await;
    seed_sample(&db).await;
    end_to_end(db, dingsync::sample::PUSHED_USERS).await;
}

#[tokio::test]
async fn mariadb_real_dump_end_to_end() {
    let Some(db) = common::loaded_mariadb().await else {
        return;
    };
    db.store.init(false).await.unwrap();
    end_to_end(db, &["admin", "ceshi", "jeecg", "zhangsan"]).await;
}

#[tokio::test]
async fn postgres_sample_org_end_to_end() {
    let Some(db) = common::postgres_db().await else {
        return;
    };
    seed_sample(&db).await;
    end_to_end(db, dingsync::sample::PUSHED_USERS).await;
}

#[tokio::test]
async fn one_failing_entity_is_recorded_and_the_rest_continue() {
    let db = common::sqlite_db().await;
    seed_sample(&db).await;
    let server = common::start_fast_sim().await;
    let client = common::client(&server, 1000);
    let fault = dingsync::sim::FaultAction::Errcode {
        errcode: 60104,
        sub_code: None,
    };
    server.sim.inject(dingsync::sim::FaultRule::next(
        "topapi/v2/user/create",
        1,
        fault,
    ));
    let summary = run(&db, &server, &client, Direction::Push).await;
    assert_eq!(summary.failed, 1, "{:?}", summary.failures);
    assert!(
        summary.failures[0].2.contains("60104"),
        "{:?}",
        summary.failures
    );
    let users = dingsync::sample::PUSHED_USERS.len();
    assert_eq!(
        summary.created as usize,
        dingsync::sample::PUSHED_DEPARTMENTS + users - 1,
        "every department and the other users"
    );
    assert_eq!(
        db.store.links(0).await.unwrap().len(),
        users - 1,
        "no link row for the failed user"
    );
    // The run row holds the same counts.
    let row: (i64, i64, i64) = db
        .store
        .fetch_rows("SELECT created, failed, finished_at FROM dingsync_run", &[])
        .await
        .unwrap()
        .remove(0);
    assert_eq!((row.0, row.1), (summary.created, 1));
    let again = run(&db, &server, &client, Direction::Push).await;
    assert_eq!(
        (again.created, again.failed),
        (1, 0),
        "the cause gone, the next run creates it"
    );
}

/// Two local users in different slices claim one DingTalk user: `alpha` by its mobile, `zhang`
/// by its userid. The mobile is the stronger claim, so `alpha` is linked and `zhang` refused,
/// whichever slice is read first and whether or not `alpha`'s link is written yet: the
/// later slice sees `alpha` among its claimers by the twin's mobile, not only by a link.
#[tokio::test]
async fn a_claimer_in_another_slice_is_found_by_the_twins_mobile() {
    for db in common::initialised_dbs().await {
        let name = db.name;
        let server = common::start_fast_sim().await;
        let client = common::client(&server, 1000);
        server
            .sim
            .admin_call(
                APPKEY,
                "topapi/v2/user/create",
                json!({ "userid": "zhang", "name": "张三", "mobile": "13800000001", "dept_id_list": "1" }),
            )
            .unwrap();
        db.plain
            .execute(
                "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES \
                 ('u1', 'alpha', '张三', '13800000001', 1, 0), ('u2', 'zhang', '张三', NULL, 1, 0)",
            )
            .await
            .unwrap();
        let config = config(&db.url, &server.url);
        let request = RunRequest {
            direction: Direction::Push,
            scope: Scope::Users,
            dry_run: false,
        };
        // One user a slice: `zhang` is planned in the slice after `alpha`'s.
        let summary = run_sliced(&ctx(&db.store, &client, &config), request, None, 1)
            .await
            .unwrap();
        let failures: Vec<&str> = summary.failures.iter().map(|f| f.2.as_str()).collect();
        assert_eq!(summary.failed, 1, "{name}: {failures:?}");
        assert!(
            failures[0].contains("already matched to local user alpha (by its phone)"),
            "{name}: {failures:?}"
        );
        let links: Vec<(String, String)> = db
            .store
            .links(0)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.user_id, l.userid))
            .collect();
        assert_eq!(links, [("u1".to_string(), "zhang".to_string())], "{name}");
        let creates = server
            .sim
            .calls(APPKEY)
            .get("topapi/v2/user/create")
            .map_or(0, |c| c.calls);
        assert_eq!(creates, 0, "{name}: nobody created");
    }
}

#[tokio::test]
async fn sync_and_plan_commands() {
    let db = common::sqlite_db().await;
    seed_sample(&db).await;
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    common::write_config(&path, &db.url, &server.url, 1000, "");
    let dingsync = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", path.to_str().unwrap(), "--log-format", "json"]);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args(&all)
            .env_remove("DINGSYNC_CONFIG")
            .output();
        async move { out.await.unwrap() }
    };
    let plan = dingsync(&["plan", "push", "all", "--json"]).await;
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        json[0]["plan"]["ops"].as_array().unwrap().len(),
        dingsync::sample::PUSHED_DEPARTMENTS + dingsync::sample::PUSHED_USERS.len()
    );
    assert_eq!(server.sim.write_calls(APPKEY), 0, "plan changes nothing");

    server.sim.inject(dingsync::sim::FaultRule::next(
        "topapi/v2/user/create",
        1,
        dingsync::sim::FaultAction::Errcode {
            errcode: 60104,
            sub_code: None,
        },
    ));
    let failed = dingsync(&["sync", "push", "all"]).await;
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(65), "{stdout}");
    assert!(
        stdout.contains("failed 1") && stdout.contains("FAILED"),
        "{stdout}"
    );
    let ok = dingsync(&["sync", "push", "all"]).await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("created 1, updated 0, deleted 0"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(
        stderr.contains("\"event\":\"sync.run.finished\""),
        "{stderr}"
    );
    assert!(!stderr.contains(common::APPSECRET) && !stdout.contains(common::APPSECRET));
}

#[tokio::test]
async fn pull_reads_department_sources_only_when_a_local_department_is_unlinked() {
    let gets = |server: &SimServer| {
        server
            .sim
            .calls(APPKEY)
            .get("topapi/v2/department/get")
            .map_or(0, |c| c.calls)
    };
    for local_a in [false, true] {
        // A fresh DingTalk each time: a pull writes its new local ids back as sources.
        let server = common::start_fast_sim().await;
        let client = common::client(&server, 1000);
        let created = |name: &str, source: Option<&str>| {
            let mut params = json!({ "name": name, "parent_id": 1 });
            if let Some(source) = source {
                params["source_identifier"] = json!(source);
            }
            server
                .sim
                .admin_call(APPKEY, "topapi/v2/department/create", params)
                .unwrap()["result"]["dept_id"]
                .as_i64()
                .unwrap()
        };
        let with_source = created("钉钉部门甲", Some("local-a"));
        created("钉钉部门乙", None);
        let db = common::sqlite_db().await;
        db.store.init(true).await.unwrap();
        if local_a {
            db.plain
                .execute("INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('local-a', '', '本地名', 1, '1', 'A01', '0')")
                .await
                .unwrap();
        }
        let summary = run(&db, &server, &client, Direction::Pull).await;
        assert_eq!(summary.failed, 0, "{:?}", summary.failures);
        let depts = db.store.load_departments(0).await.unwrap();
        assert_eq!(depts.len(), 2, "matched, not duplicated: {depts:?}");
        if local_a {
            assert_eq!(gets(&server), 2, "both unknown DingTalk departments read");
            let matched = depts.iter().find(|d| d.id == "local-a").unwrap();
            assert_eq!(matched.ding_identifier, Some(with_source));
            assert_eq!(matched.name, "钉钉部门甲");
        } else {
            assert_eq!(
                gets(&server),
                0,
                "an empty database needs no department/get"
            );
        }
    }
}

/// DingTalk with `n` users (`u0000`…, e-mail `u0000@example.com`) in one department below
/// the root.
fn seed_big_org(server: &SimServer, n: usize) {
    let dept = server
        .sim
        .admin_call(
            APPKEY,
            "topapi/v2/department/create",
            json!({ "name": "研发部", "parent_id": 1 }),
        )
        .unwrap()["result"]["dept_id"]
        .as_i64()
        .unwrap();
    for i in 0..n {
        server
            .sim
            .admin_call(
                APPKEY,
                "topapi/v2/user/create",
                json!({ "userid": format!("u{i:04}"), "name": format!("用户{i}"),
                        "mobile": format!("139{i:08}"), "email": format!("u{i:04}@example.com"),
                        "dept_id_list": dept.to_string() }),
            )
            .unwrap();
    }
}

/// Rows a pull wrote: users, DingTalk links, memberships, and how many of each are
/// duplicates (a username, a linked DingTalk userid, a user/department pair twice).
async fn pulled_rows(db: &TestDb) -> [i64; 6] {
    let mut counts = [0; 6];
    for (i, sql) in [
        "SELECT COUNT(*) FROM sys_user",
        "SELECT COUNT(*) FROM sys_third_account WHERE third_type = 'dingtalk'",
        "SELECT COUNT(*) FROM sys_user_depart",
        "SELECT COUNT(*) FROM (SELECT username FROM sys_user GROUP BY username HAVING COUNT(*) > 1) d",
        "SELECT COUNT(*) FROM (SELECT third_user_id FROM sys_third_account WHERE third_type = 'dingtalk' GROUP BY third_user_id HAVING COUNT(*) > 1) d",
        "SELECT COUNT(*) FROM (SELECT user_id, dep_id FROM sys_user_depart GROUP BY user_id, dep_id HAVING COUNT(*) > 1) d",
    ]
    .into_iter()
    .enumerate()
    {
        counts[i] = db.count(sql).await;
    }
    counts
}

/// A configuration of tenant 1001 (the test app) for `db` and `server`.
fn tenant_1001_config(db: &TestDb, server: &SimServer) -> Config {
    let text = format!(
        "[database]\nurl = \"{}\"\n[dingtalk]\nbase_url = \"{}\"\nqps_per_api = 1000\n\
         [[tenant]]\nid = 1001\nagent_id = {}\nclient_id = \"{APPKEY}\"\nclient_secret = \"{}\"\n",
        db.url,
        server.url,
        common::AGENT_ID,
        common::APPSECRET
    );
    dingsync::config::load_str(
        &text,
        std::path::Path::new("test.toml"),
        &LoadOptions::default(),
    )
    .unwrap()
    .config
}

/// A pull of every entity, for real.
const PULL_ALL: RunRequest = RunRequest {
    direction: Direction::Pull,
    scope: Scope::All,
    dry_run: false,
};

/// The first pull (after a user of tenant 1002 was given u0777's e-mail, last change
/// `changes`) reports u0777 alone, pulls the 1,999 others with all their rows, and logs
/// none of it as a change.
async fn the_first_pull_reports_the_clash_alone(
    db: &TestDb,
    client: &DingTalkClient,
    config: &Config,
    changes: i64,
) {
    let name = db.name;
    let summary = run_sliced(&ctx(&db.store, client, config), PULL_ALL, None, 500)
        .await
        .unwrap();
    assert_eq!(summary.failed, 1, "{name}: {:?}", summary.failures);
    let (_, key, reason) = &summary.failures[0];
    assert!(
        key == "u0777" && reason.contains("email"),
        "{name}: {:?}",
        summary.failures
    );
    // 1,999 pulled beside the holder, each linked, in its department and in the tenant once.
    assert_eq!(pulled_rows(db).await, [2000, 1999, 1999, 0, 0, 0], "{name}");
    let tenant_rows = db
        .count("SELECT COUNT(*) FROM sys_user_tenant WHERE tenant_id = 1001")
        .await;
    assert_eq!(tenant_rows, 1999, "{name}");
    if name == "postgres" {
        // Refreshed as the pull filled them (autovacuum's own runs are counted apart).
        let analyzed = db
            .count("SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname IN ('sys_user', 'sys_third_account', 'dingsync_snapshot') AND analyze_count > 0")
            .await;
        assert_eq!(analyzed, 3, "{name}: the pulled tables' statistics");
    }
    assert_eq!(
        db.store.last_change_id().await.unwrap(),
        changes,
        "{name}: dingsync's own writes are not logged as changes"
    );
}

/// Every user renamed in DingTalk, u0100 given the e-mail of a user outside tenant 1001
/// (held2, inserted first), and ten new users among them. The last change after held2.
async fn every_user_renamed_and_ten_new(db: &TestDb, server: &SimServer) -> i64 {
    db.plain
        .execute("INSERT INTO sys_user (id, username, realname, phone, email, status, del_flag) VALUES ('held2', 'holder2', '持有者2', '13700000002', 'held2@example.com', 1, 0)")
        .await
        .unwrap();
    let changes = db.store.last_change_id().await.unwrap();
    for i in 0..2000 {
        let mut fields = json!({ "userid": format!("u{i:04}"), "name": format!("改名{i}") });
        if i == 100 {
            fields["email"] = json!("held2@example.com");
        }
        server
            .sim
            .admin_call(APPKEY, "topapi/v2/user/update", fields)
            .unwrap();
    }
    // And ten new users among them.
    let dept = server
        .sim
        .admin_call(
            APPKEY,
            "topapi/v2/department/listsub",
            json!({ "dept_id": 1 }),
        )
        .unwrap()["result"][0]["dept_id"]
        .clone();
    for i in 0..10 {
        server
            .sim
            .admin_call(
                APPKEY,
                "topapi/v2/user/create",
                json!({ "userid": format!("u0{i}50n"), "name": format!("新人{i}"),
                        "mobile": format!("1360000000{i}"), "dept_id_list": dept.to_string() }),
            )
            .unwrap();
    }
    changes
}

/// The next pull updates 1,998 in batches (one transaction a slice), creates the ten, and
/// reports u0100 (and u0777 still) alone, logging none of it as a change after `changes`.
async fn the_next_pull_updates_in_batches(
    db: &TestDb,
    client: &DingTalkClient,
    config: &Config,
    changes: i64,
) {
    let name = db.name;
    let again = run_sliced(&ctx(&db.store, client, config), PULL_ALL, None, 500)
        .await
        .unwrap();
    let failed: BTreeSet<&str> = again.failures.iter().map(|f| f.1.as_str()).collect();
    assert_eq!(
        failed,
        BTreeSet::from(["u0100", "u0777"]),
        "{name}: {:?}",
        again.failures
    );
    assert_eq!((again.updated, again.created), (1998, 10), "{name}");
    let renamed = db
        .count("SELECT COUNT(*) FROM sys_user WHERE realname LIKE '改名%'")
        .await;
    assert_eq!(renamed, 1998, "{name}: u0100 is not half written");
    let batched = db
        .count("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM dingsync_snapshot WHERE entity = 'user' GROUP BY synced_at) t")
        .await;
    assert!(
        batched >= 400,
        "{name}: at most {batched} bases written together"
    );
    // The first slice (userid order) holds new users among the renamed: its 494 updates
    // are still written together (490 or more of them share one synced_at).
    let first_slice = db
        .count("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM dingsync_snapshot s JOIN sys_user u ON u.id = s.local_id \
                WHERE s.entity = 'user' AND u.realname LIKE '改名%' AND u.username < 'u0500' GROUP BY s.synced_at) t")
        .await;
    assert!(
        first_slice >= 490,
        "{name}: the first slice's updates in batches of {first_slice}"
    );
    assert_eq!(
        db.store.last_change_id().await.unwrap(),
        changes,
        "{name}: the updates are not logged as changes either"
    );
}

/// A pull of 2,000 users in slices of 500 (each slice one batch) into tenant 1001 where one
/// DingTalk user's e-mail is already held by a user of another tenant — which the planner,
/// reading tenant 1001's users, cannot see, so the batch's own check must find it: that one
/// is reported, the other 1,999 are in with their links, memberships and tenant rows, and
/// none of these writes is logged as a change — on every database.
#[tokio::test]
async fn a_batched_pull_isolates_the_row_that_clashes() {
    for db in common::initialised_dbs().await {
        // DingTalk as seeded for each database (the test changes it).
        let server = common::start_fast_sim().await;
        seed_big_org(&server, 2000);
        let client = common::client(&server, 1000);
        db.plain
            .execute("INSERT INTO sys_user (id, username, realname, phone, email, status, del_flag) VALUES ('held', 'holder', '持有者', '13700000000', 'u0777@example.com', 1, 0)")
            .await
            .unwrap();
        db.plain
            .execute("INSERT INTO sys_user_tenant (id, user_id, tenant_id, status) VALUES ('ht', 'held', 1002, '1')")
            .await
            .unwrap();
        let changes = db.store.last_change_id().await.unwrap();
        let config = tenant_1001_config(&db, &server);
        the_first_pull_reports_the_clash_alone(&db, &client, &config, changes).await;
        // Every user renamed in DingTalk, and u0100 given the e-mail a user outside tenant 1001
        // has: the next pull updates 1,998 in batches (one transaction a slice) and reports
        // u0100 alone.
        let changes = every_user_renamed_and_ten_new(&db, &server).await;
        the_next_pull_updates_in_batches(&db, &client, &config, changes).await;
    }
}

/// DingTalk with a chain 研发部 > 前端组 > 小组A > 小组B below the root and `n` users, each in
/// 研发部 and in 小组B (the deepest, found last); the departments' ids, top first.
fn seed_deep_members(server: &SimServer, n: usize) -> Vec<i64> {
    let mut chain = Vec::new();
    let mut parent = 1;
    for name in ["研发部", "前端组", "小组A", "小组B"] {
        parent = server
            .sim
            .admin_call(
                APPKEY,
                "topapi/v2/department/create",
                json!({ "name": name, "parent_id": parent }),
            )
            .unwrap()["result"]["dept_id"]
            .as_i64()
            .unwrap();
        chain.push(parent);
    }
    for i in 0..n {
        server
            .sim
            .admin_call(
                APPKEY,
                "topapi/v2/user/create",
                json!({ "userid": format!("m{i:03}"), "name": format!("成员{i}"),
                        "mobile": format!("136{i:08}"),
                        "dept_id_list": format!("{},{}", chain[0], chain[3]) }),
            )
            .unwrap();
    }
    chain
}

/// A first pull plans each user once all its departments are placed: with the walk slowed
/// down, 研发部's member pages arrive long before the walk finds 小组B, and its members wait
/// for it — each ends in both departments. When the walk then fails on a later run into an
/// empty database, nobody is pulled without a department it belongs to.
#[tokio::test]
async fn a_first_pull_waits_for_each_users_departments() {
    use dingsync::sim::{FaultAction, FaultRule};
    let server = common::start_fast_sim().await;
    seed_deep_members(&server, 30);
    let client = common::client(&server, 1000);
    for db in common::initialised_dbs().await {
        let name = db.name;
        server.sim.inject(FaultRule::random(
            "topapi/v2/department/listsub",
            1.0,
            FaultAction::Delay { ms: 60 },
        ));
        let summary = run(&db, &server, &client, Direction::Pull).await;
        server.sim.clear_faults();
        assert_eq!(summary.failed, 0, "{name}: {:?}", summary.failures);
        assert_eq!(pulled_rows(&db).await, [30, 30, 60, 0, 0, 0], "{name}");
        let in_deepest = db.count("SELECT COUNT(*) FROM sys_user_depart m JOIN sys_depart d ON d.id = m.dep_id WHERE d.depart_name = '小组B'").await;
        assert_eq!(
            in_deepest, 30,
            "{name}: every member in the deepest department"
        );
    }
    // The walk fails below 前端组 (the third listsub): the users, whose 小组B is never
    // found, are not pulled; the run says why.
    for db in common::initialised_dbs().await {
        let name = db.name;
        server.sim.inject(FaultRule::next(
            "topapi/v2/department/listsub",
            2,
            FaultAction::Delay { ms: 30 },
        ));
        server.sim.inject(FaultRule {
            path: "topapi/v2/department/listsub".into(),
            appkey: None,
            action: FaultAction::Errcode {
                errcode: 60003,
                sub_code: None,
            },
            count: Some(100),
            probability: None,
        });
        let outcome = run_scoped(&db, &server, &client, Direction::Pull, Scope::All).await;
        server.sim.clear_faults();
        assert!(outcome.is_err(), "{name}: {outcome:?}");
        assert_eq!(pulled_rows(&db).await[..3], [0, 0, 0], "{name}");
        // The run is recorded as ended, with why.
        let unfinished = db.count("SELECT COUNT(*) FROM dingsync_run WHERE finished_at IS NULL OR error IS NULL OR error NOT LIKE 'stopped:%'").await;
        assert_eq!(unfinished, 0, "{name}: the failed run is recorded as ended");
    }
    // A first pull of the departments only reads no member page.
    for db in common::initialised_dbs().await {
        let name = db.name;
        server.sim.reset_calls();
        run_scoped(&db, &server, &client, Direction::Pull, Scope::Departments)
            .await
            .unwrap();
        let calls = server.sim.calls(APPKEY);
        assert!(
            !calls.contains_key("topapi/v2/user/list"),
            "{name}: {calls:?}"
        );
        let depts = db.count("SELECT COUNT(*) FROM sys_depart WHERE depart_name IN ('研发部', '前端组', '小组A', '小组B')").await;
        assert_eq!(depts, 4, "{name}");
        assert_eq!(pulled_rows(&db).await[0], 0, "{name}: no user");
    }
}

/// `dingsync sync pull` killed (SIGKILL) while it writes its batches: the next run converges,
/// with no user, link or membership twice.
#[tokio::test]
async fn a_pull_killed_mid_batch_converges_when_run_again() {
    const USERS: i64 = 6000;
    let server = common::start_fast_sim().await;
    seed_big_org(&server, USERS as usize);
    for db in common::initialised_dbs().await {
        let name = db.name;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dingsync.toml");
        common::write_config(
            &path,
            &db.url,
            &server.url,
            1000,
            "[daemon]\nlease_ttl = \"1s\"\n",
        );
        let pull = || {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
                .args(["sync", "pull", "all", "--config", path.to_str().unwrap()])
                .env_remove("DINGSYNC_CONFIG")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        let mut first = pull();
        // Killed as soon as the first batch is committed.
        let at_kill = common::eventually_every(
            &format!("{name}: a user pulled"),
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(5),
            async || {
                let users = pulled_rows(&db).await[0];
                assert!(first.try_wait().unwrap().is_none(), "{name}: pull ended");
                common::done_or(users > 0, users).map(|()| users)
            },
        )
        .await;
        first.start_kill().unwrap();
        first.wait().await.unwrap();
        let after_kill = pulled_rows(&db).await;
        assert!(
            after_kill[0] < USERS,
            "{name}: killed after all users were in ({at_kill} at the kill)"
        );
        // A batch is one transaction: its users, links and memberships all in, or none.
        assert!(
            after_kill[0] == after_kill[1] && after_kill[1] == after_kill[2],
            "{name}: {after_kill:?}"
        );
        let status = pull().wait().await.unwrap();
        assert!(status.success(), "{name}: second pull {status}");
        assert_eq!(
            pulled_rows(&db).await,
            [USERS, USERS, USERS, 0, 0, 0],
            "{name}: after a kill at {after_kill:?}"
        );
    }
}

/// `n` local users as JeecgBoot writes them: ids `{prefix}0000`…, usernames `user_{prefix}0000`…,
/// mobiles `{mobile}00000000`….
async fn insert_users(db: &TestDb, n: i64, prefix: &str, mobile: &str) {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("('{prefix}{i:04}', 'user_{prefix}{i:04}', '用户{prefix}{i}', '{mobile}{i:08}', 1, 0)"))
        .collect();
    db.plain
        .execute(&format!(
            "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES {}",
            rows.join(", ")
        ))
        .await
        .unwrap();
}

/// A trigger that refuses the link row of local user `p0123`, in each dialect.
fn refuse_one_link(db: &TestDb) -> Vec<&'static str> {
    match db.name {
        "sqlite" => vec!["CREATE TRIGGER refuse_one BEFORE INSERT ON sys_third_account WHEN NEW.sys_user_id = 'p0123' \
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"],
        "mariadb" => vec!["CREATE TRIGGER refuse_one BEFORE INSERT ON sys_third_account FOR EACH ROW BEGIN \
             IF NEW.sys_user_id = 'p0123' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by a test trigger'; END IF; END"],
        _ => vec![
            "CREATE FUNCTION refuse_one() RETURNS trigger AS $$ BEGIN IF NEW.sys_user_id = 'p0123' THEN \
             RAISE EXCEPTION 'refused by a test trigger'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_one BEFORE INSERT ON sys_third_account FOR EACH ROW EXECUTE FUNCTION refuse_one()",
        ],
    }
}

/// A push of 250 local users records their links and snapshots in batches (100 records a
/// transaction) after the calls; when the database refuses one user's link row, the batch
/// is written row by row: that user is reported, the other 249 are linked with their bases,
/// nothing is logged as a change. With the cause gone, the next push links it without a
/// second DingTalk user — on every database.
#[tokio::test]
async fn a_push_records_links_in_batches_and_isolates_the_row_that_fails() {
    const USERS: i64 = 250;
    for db in common::initialised_dbs().await {
        let name = db.name;
        let server = common::start_fast_sim().await;
        let client = common::client(&server, 1000);
        insert_users(&db, USERS, "p", "138").await;
        for statement in refuse_one_link(&db) {
            db.plain.execute(statement).await.unwrap();
        }
        let changes = db.store.last_change_id().await.unwrap();
        let summary = run(&db, &server, &client, Direction::Push).await;
        assert_eq!(summary.failed, 1, "{name}: {:?}", summary.failures);
        assert_eq!(
            summary.created,
            USERS - 1,
            "{name}: the refused user counts as failed, not also as created"
        );
        let (_, key, reason) = &summary.failures[0];
        assert!(
            key == "p0123" && reason.contains("refused by a test trigger"),
            "{name}: {:?}",
            summary.failures
        );
        let linked = "SELECT COUNT(*) FROM sys_third_account WHERE third_type = 'dingtalk'";
        let based = "SELECT COUNT(*) FROM dingsync_snapshot WHERE entity = 'user'";
        assert_eq!(db.count(linked).await, USERS - 1, "{name}: links");
        assert_eq!(db.count(based).await, USERS - 1, "{name}: snapshots");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM dingsync_snapshot WHERE entity = 'user' AND local_id = 'p0123'")
                .await,
            0,
            "{name}: the refused link's base is not written without it"
        );
        // One batch's snapshots carry one time: written one by one, they would not.
        let batched = db
            .count("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM dingsync_snapshot WHERE entity = 'user' GROUP BY synced_at) t")
            .await;
        assert!(
            batched >= 90,
            "{name}: at most {batched} snapshots written together"
        );
        assert_eq!(
            db.store.last_change_id().await.unwrap(),
            changes,
            "{name}: dingsync's own writes are not logged as changes"
        );
        assert_eq!(
            server.sim.calls(APPKEY)["topapi/v2/user/create"].calls,
            USERS as u64,
            "{name}"
        );
        let drop = if name == "postgres" {
            "DROP TRIGGER refuse_one ON sys_third_account"
        } else {
            "DROP TRIGGER refuse_one"
        };
        db.plain.execute(drop).await.unwrap();
        let again = run(&db, &server, &client, Direction::Push).await;
        assert_eq!(again.failed, 0, "{name}: {:?}", again.failures);
        assert_eq!(
            db.count(linked).await,
            USERS,
            "{name}: links after the cause went"
        );
        assert_eq!(db.count(based).await, USERS, "{name}");
        assert_eq!(
            client.user_count(false).await.unwrap(),
            USERS as u64,
            "{name}: no DingTalk user twice"
        );
        // And a third push has nothing left to write.
        server.sim.reset_calls();
        let third = run(&db, &server, &client, Direction::Push).await;
        assert_eq!(
            (third.created, third.updated, third.failed),
            (0, 0, 0),
            "{name}"
        );
        assert_eq!(server.sim.write_calls(APPKEY), 0, "{name}");
    }
}

/// `dingsync sync push` killed (SIGKILL) once its first batch of records is committed, when
/// DingTalk already has users whose links were not yet written: the next push adopts them
/// (their userids exist) and converges with every user once in DingTalk, linked once, with
/// its base.
#[tokio::test]
async fn a_push_killed_between_its_calls_and_their_records_converges() {
    const USERS: i64 = 1500;
    for db in common::initialised_dbs().await {
        let name = db.name;
        let server = common::start_fast_sim().await;
        let client = common::client(&server, 1000);
        insert_users(&db, USERS, "k", "137").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dingsync.toml");
        common::write_config(
            &path,
            &db.url,
            &server.url,
            1000,
            "[daemon]\nlease_ttl = \"1s\"\n",
        );
        // `--wait`: the dead run's lease (1 s) expires meanwhile.
        let push = || {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
                .args([
                    "sync",
                    "push",
                    "all",
                    "--wait",
                    "30s",
                    "--config",
                    path.to_str().unwrap(),
                ])
                .env_remove("DINGSYNC_CONFIG")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        let linked = "SELECT COUNT(*) FROM sys_third_account WHERE third_type = 'dingtalk'";
        let mut first = push();
        common::eventually_every(
            &format!("{name}: a user linked"),
            std::time::Duration::from_secs(60),
            std::time::Duration::from_millis(5),
            async || {
                let links = db.count(linked).await;
                assert!(first.try_wait().unwrap().is_none(), "{name}: push ended");
                common::done_or(links > 0, links)
            },
        )
        .await;
        first.start_kill().unwrap();
        first.wait().await.unwrap();
        let created = client.user_count(false).await.unwrap();
        let at_kill = db.count(linked).await;
        assert!(
            created > at_kill as u64,
            "{name}: the kill left no DingTalk user without its link ({created} users, {at_kill} links)"
        );
        assert!(
            at_kill < USERS,
            "{name}: killed after every link was written"
        );
        println!("{name}: killed with {created} DingTalk users and {at_kill} link rows");
        let status = tokio::time::timeout(std::time::Duration::from_secs(120), push().wait())
            .await
            .expect("the second push ends")
            .unwrap();
        assert!(status.success(), "{name}: second push {status}");
        assert_eq!(
            client.user_count(false).await.unwrap(),
            USERS as u64,
            "{name}"
        );
        assert_eq!(
            db.count(linked).await,
            USERS,
            "{name}: after a kill at {at_kill} links, {created} DingTalk users"
        );
        let twice = "SELECT COUNT(*) FROM (SELECT third_user_id FROM sys_third_account GROUP BY third_user_id HAVING COUNT(*) > 1) d";
        assert_eq!(db.count(twice).await, 0, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM dingsync_snapshot WHERE entity = 'user'")
                .await,
            USERS,
            "{name}"
        );
    }
}
