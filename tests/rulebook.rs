//! One rulebook: the daemon's jobs obey every switch, guard and tenant rule a full run obeys,
//! and nothing loops. `dingsync run` as a process where it is the daemon's behaviour
//! (switches, refused departments and cycles, the run lease), in-process on SQLite, MariaDB
//! and PostgreSQL where SQL decides (tenants, link rows, deliveries, announcement age).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::process::Daemon;
use common::{TestDb, APPKEY};
use dingsync::daemon::{run, Reload};
use dingsync::sim::SimServer;
use dingsync::store::queue::{state, Job, JobFilter};
use dingsync::store::raw::Arg;
use dingsync::store::Store;
use tokio_util::sync::CancellationToken;

async fn jobs(store: &Store, state: Option<&str>) -> Vec<Job> {
    store
        .list_jobs(&JobFilter {
            state: state.map(str::to_string),
            limit: Some(10_000),
            ..JobFilter::default()
        })
        .await
        .unwrap()
}

/// Waits (30 s at most) until no job is pending or running: the work the changes asked for
/// is known to be done.
async fn queue_idle(store: &Store, what: &str) {
    common::eventually(
        &format!("{what}: no job pending or running"),
        Duration::from_secs(30),
        async || {
            let mut busy = jobs(store, Some(state::PENDING)).await;
            busy.extend(jobs(store, Some(state::RUNNING)).await);
            common::done_or(busy.is_empty(), busy)
        },
    )
    .await;
}

/// Waits (30 s at most) until every address-book event the simulator made is acknowledged
/// (stored as a pull job), then until the queue is idle: the pushes' writes make events,
/// whose pull jobs run after them.
async fn events_and_queue_idle(store: &Store, server: &SimServer, what: &str) {
    queue_idle(store, what).await;
    common::eventually(
        &format!("{what}: every event acknowledged"),
        Duration::from_secs(30),
        async || {
            let stats = server.sim.stream_stats(APPKEY);
            common::done_or(stats.as_ref().is_none_or(|s| s.acked >= s.events), stats)
        },
    )
    .await;
    queue_idle(store, what).await;
}

/// Waits (30 s at most) until the change-log reader has turned every change into jobs.
async fn changes_read(store: &Store, what: &str) {
    common::eventually(
        &format!("{what}: every change read"),
        Duration::from_secs(30),
        async || {
            let (read, last) = (store.change_cursor().await, store.last_change_id().await);
            common::done_or(
                read.as_ref().unwrap() >= last.as_ref().unwrap(),
                (read, last),
            )
        },
    )
    .await;
}

/// Shows that nothing comes back for the dead jobs of `keys`: a marker change (user u2
/// renamed) goes the whole way after them (change log, job, DingTalk, its event, the pull
/// job); once it is done, whatever a loop had queued for them would have left a job or a
/// department call.
async fn nothing_comes_back_for(db: &TestDb, server: &SimServer, keys: &[&str]) {
    let of_keys = |all: &[Job]| -> Vec<Job> {
        let mut of: Vec<Job> = all
            .iter()
            .filter(|j| keys.contains(&j.entity_key.as_str()))
            .cloned()
            .collect();
        of.sort_by_key(|j| j.id);
        of
    };
    let (before, writes) = (jobs(&db.store, None).await, department_writes(server));
    exec(
        db,
        &["UPDATE sys_user SET realname = '环二' WHERE id = 'u2'"],
    )
    .await;
    common::holds("the marker pushed", 20, || {
        server.sim.app(APPKEY).unwrap().org.users["huan"].name == "环二"
    })
    .await;
    changes_read(&db.store, "marker").await;
    events_and_queue_idle(&db.store, server, "marker").await;
    let after = jobs(&db.store, None).await;
    assert_eq!(
        of_keys(&before),
        of_keys(&after),
        "the dead jobs of {keys:?}"
    );
    assert!(after.len() > before.len(), "the marker made a job");
    assert_eq!(department_writes(server), writes, "department calls");
}

/// The names of `userid`'s departments in DingTalk ("root" for 1); `None` when not there.
fn depts_of(server: &SimServer, userid: &str) -> Option<Vec<String>> {
    let org = server.sim.app(APPKEY).unwrap().org;
    let user = org.users.get(userid)?;
    Some(
        user.dept_id_list
            .iter()
            .map(|d| {
                org.depts
                    .get(d)
                    .map_or("root".to_string(), |x| x.name.clone())
            })
            .collect(),
    )
}

/// 研发 with 研发-前端 under it (a name DingTalk refuses), the cycle 甲 <-> 乙, and a member
/// in each of 研发-前端 and 甲.
async fn seed_refusals(db: &TestDb) {
    exec(
        db,
        &[
            "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES \
             ('rd', '', '研发', 1, '1', 'A01', '0'), ('fe', 'rd', '研发-前端', 1, '2', 'A01A01', '0'), \
             ('p', 'q', '甲', 2, '2', 'A02', '0'), ('q', 'p', '乙', 3, '2', 'A03', '0')",
            "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('u1', 'qianduan', '前端', '13800000011', 1, 0), ('u2', 'huan', '环', '13800000012', 1, 0)",
            "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'fe'), ('m2', 'u2', 'p')",
        ],
    )
    .await;
}

/// DingTalk department writes (create, update, delete) answered so far.
fn department_writes(server: &SimServer) -> u64 {
    server
        .sim
        .calls(APPKEY)
        .iter()
        .filter(|(path, _)| {
            ["create", "update", "delete"]
                .iter()
                .any(|write| **path == format!("topapi/v2/department/{write}"))
        })
        .map(|(_, c)| c.calls)
        .sum()
}

async fn exec(db: &TestDb, statements: &[&str]) {
    for statement in statements {
        db.plain
            .execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{}: {statement}: {e}", db.name));
    }
}

fn dept_names(server: &dingsync::sim::SimServer, appkey: &str) -> Vec<String> {
    let mut names: Vec<String> = server
        .sim
        .app(appkey)
        .unwrap()
        .org
        .depts
        .values()
        .map(|d| d.name.clone())
        .collect();
    names.sort();
    names
}

/// A daemon running with switches the test rewrites.
struct Switches<'a> {
    db: &'a TestDb,
    server: &'a SimServer,
    path: &'a std::path::Path,
    daemon: &'a Daemon,
}

impl Switches<'_> {
    /// The configuration with `tenant_extra` in the tenant's table and `extra` after it.
    fn text(db: &TestDb, server: &SimServer, tenant_extra: &str, extra: &str) -> String {
        format!(
            "[database]\nurl = \"{}\"\n[dingtalk]\nbase_url = \"{}\"\nqps_per_api = 1000\n[[tenant]]\nid = 0\nagent_id = {}\nclient_id = \"{APPKEY}\"\nclient_secret = \"{}\"\n{tenant_extra}\n{extra}",
            db.url, server.url, common::AGENT_ID, common::APPSECRET
        )
    }

    /// [`Switches::text`] for this daemon's database and simulator.
    fn config(&self, tenant_extra: &str, extra: &str) -> String {
        Self::text(self.db, self.server, tenant_extra, extra)
    }
}

/// Push on, users off: departments are pushed, users are not.
async fn users_off_pushes_departments_only(sw: &Switches<'_>) {
    std::fs::write(
        sw.path,
        sw.config("push.enabled = true", "[push]\nusers = false\n"),
    )
    .unwrap();
    sw.daemon.wait_for("config.reloaded", 1).await;
    exec(
        sw.db,
        &[
            "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('c3', '', '研发中心', 3, '1', 'A03', '0')",
            "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('u2', 'wangfang', '王芳', '13800000002', 1, 0)",
            "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m2', 'u2', 'c3')",
        ],
    )
    .await;
    common::holds("研发中心 pushed", 20, || {
        dept_names(sw.server, APPKEY).contains(&"研发中心".to_string())
    })
    .await;
    changes_read(&sw.db.store, "users off").await;
    queue_idle(&sw.db.store, "users off").await;
    let calls = sw.server.sim.calls(APPKEY);
    let user_writes: u64 = [
        "topapi/v2/user/create",
        "topapi/v2/user/update",
        "topapi/v2/user/delete",
    ]
    .iter()
    .filter_map(|p| calls.get(*p))
    .map(|c| c.calls)
    .sum();
    assert_eq!(user_writes, 0, "users off: {calls:?}");
    assert!(sw.server.sim.app(APPKEY).unwrap().org.users.is_empty());
}

/// Users on, departments off, no deletes: a user whose department DingTalk lacks goes to the
/// nearest department it has (with a warning), nothing waits; a deleted department and a
/// user deleted for good stay in DingTalk.
async fn departments_and_deletes_off(sw: &Switches<'_>) {
    // Users on, departments off, no deletes: a user whose department DingTalk lacks goes to
    // the nearest department it has (with a warning), nothing waits; a deleted department
    // and a user deleted for good stay in DingTalk.
    std::fs::write(
        sw.path,
        sw.config(
            "push.enabled = true",
            "[push]\ndepartments = false\ndelete_departments = false\ndelete_users_on_hard_delete = false\n",
        ),
    )
    .unwrap();
    sw.daemon.wait_for("config.reloaded", 2).await;
    exec(
        sw.db,
        &[
            "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('c3a', 'c3', '前端组', 1, '2', 'A03A01', '0')",
            "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('u3', 'zhaolei', '赵磊', '13800000003', 1, 0)",
            "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m3', 'u3', 'c3a')",
        ],
    )
    .await;
    common::holds(
        "zhaolei in 研发中心 (its department is not pushed)",
        20,
        || {
            let org = sw.server.sim.app(APPKEY).unwrap().org;
            org.users.get("zhaolei").is_some_and(|u| {
                u.dept_id_list
                    .iter()
                    .filter_map(|d| org.depts.get(d))
                    .map(|d| d.name.as_str())
                    .eq(["研发中心"])
            })
        },
    )
    .await;
    assert!(!dept_names(sw.server, APPKEY).contains(&"前端组".to_string()));
    assert!(sw
        .daemon
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("sync.entity.warning")
            && l.contains("zhaolei")
            && l.contains("departments = false")));
    // The work so far done (a job still in flight would count below), then the deletes.
    changes_read(&sw.db.store, "users on").await;
    events_and_queue_idle(&sw.db.store, sw.server, "users on").await;
    sw.server.sim.reset_calls();
    // The user first: a job that saw its memberships gone before the user would rightly
    // move it to the root.
    exec(
        sw.db,
        &[
            "DELETE FROM sys_user WHERE id = 'u3'",
            "DELETE FROM sys_user_depart WHERE user_id = 'u3'",
            "DELETE FROM sys_depart WHERE id = 'c3a'",
        ],
    )
    .await;
    changes_read(&sw.db.store, "deletes off").await;
    events_and_queue_idle(&sw.db.store, sw.server, "deletes off").await;
    assert_eq!(
        sw.server.sim.write_calls(APPKEY),
        0,
        "deletes off: {:?}",
        sw.server.sim.calls(APPKEY)
    );
    assert!(
        jobs(&sw.db.store, Some(state::DEAD)).await.is_empty(),
        "nothing dead, nothing waited out"
    );
}

#[tokio::test]
async fn switches_hold_for_the_daemons_jobs() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    let config = |tenant_extra: &str| Switches::text(&db, &server, tenant_extra, "");
    std::fs::write(&path, config("push.enabled = false")).unwrap();
    exec(&db, &["INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('c1', '', '星河科技', 1, '1', 'A01', '0')"]).await;
    let daemon = Daemon::start(&path);
    daemon.wait_for("daemon.started", 1).await;

    // Push switched off for the tenant: inserts, a rename, a delete and an announcement
    // reach no DingTalk write.
    exec(
        &db,
        &[
            "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('u1', 'lihua', '李华', '13800000001', 1, 0)",
            "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'c1')",
            "UPDATE sys_depart SET depart_name = '星河集团' WHERE id = 'c1'",
            "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('c2', '', '临时', 2, '1', 'A02', '0')",
            "DELETE FROM sys_depart WHERE id = 'c2'",
            "DELETE FROM sys_user WHERE id = 'u1'",
            "INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, send_status, del_flag, tenant_id) VALUES ('a1', '通知', '内容', 'ALL', '1', '0', 0)",
        ],
    )
    .await;
    changes_read(&db.store, "push off").await;
    queue_idle(&db.store, "push off").await;
    assert_eq!(
        server.sim.write_calls(APPKEY),
        0,
        "push off: {:?}",
        server.sim.calls(APPKEY)
    );

    let sw = Switches {
        db: &db,
        server: &server,
        path: &path,
        daemon: &daemon,
    };
    users_off_pushes_departments_only(&sw).await;
    departments_and_deletes_off(&sw).await;
    let mut daemon = daemon;
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn a_refused_department_and_a_cycle_end_as_one_dead_job_each_and_nothing_loops() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    common::write_config(
        &path,
        &db.url,
        &server.url,
        1000,
        "[queue]\nbackoff_base = \"100ms\"\nbackoff_cap = \"500ms\"\n",
    );
    seed_refusals(&db).await;
    let daemon = Daemon::start(&path);
    let depts_of = |userid: &str| depts_of(&server, userid);
    common::holds("the member of 研发-前端 placed in 研发", 20, || {
        depts_of("qianduan") == Some(vec!["研发".into()])
    })
    .await;
    common::holds("the member of the cycle placed at the root", 20, || {
        depts_of("huan").is_some()
    })
    .await;
    events_and_queue_idle(&db.store, &server, "refusals").await;
    let dead = jobs(&db.store, Some(state::DEAD)).await;
    let mut keys: Vec<&str> = dead.iter().map(|j| j.entity_key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["fe", "p", "q"], "one dead job each: {dead:?}");
    let reason = |key: &str| {
        dead.iter()
            .find(|j| j.entity_key == key)
            .unwrap()
            .last_error
            .clone()
            .unwrap()
    };
    assert!(reason("fe").contains("60009"), "{}", reason("fe"));
    assert!(reason("p").contains("department cycle"), "{}", reason("p"));
    assert!(daemon
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("sync.entity.warning") && l.contains("qianduan") && l.contains("fe")));
    nothing_comes_back_for(&db, &server, &["fe", "p", "q"]).await;
    // The row changes: a new attempt supersedes the dead job, and it pushes.
    exec(
        &db,
        &["UPDATE sys_depart SET depart_name = '研发前端' WHERE id = 'fe'"],
    )
    .await;
    common::holds("研发前端 pushed and its member moved in", 20, || {
        depts_of("qianduan") == Some(vec!["研发前端".into()])
    })
    .await;
    queue_idle(&db.store, "after the fix").await;
    let dead: Vec<String> = jobs(&db.store, Some(state::DEAD))
        .await
        .into_iter()
        .map(|j| j.entity_key)
        .collect();
    assert!(!dead.contains(&"fe".to_string()), "{dead:?}");
    // One side of the cycle fixed: both departments are judged anew and pushed (q under
    // p), and the member follows its department.
    exec(
        &db,
        &["UPDATE sys_depart SET parent_id = '' WHERE id = 'p'"],
    )
    .await;
    common::holds("the cycle fixed: 乙 under 甲, huan in 甲", 20, || {
        let org = server.sim.app(APPKEY).unwrap().org;
        let by_name = |name: &str| {
            org.depts
                .values()
                .find(|d| d.name == name)
                .map(|d| (d.dept_id, d.parent_id))
        };
        matches!((by_name("甲"), by_name("乙")), (Some((p, 1)), Some((_, parent))) if parent == p)
            && depts_of("huan") == Some(vec!["甲".into()])
    })
    .await;
    queue_idle(&db.store, "after the cycle").await;
    assert!(jobs(&db.store, Some(state::DEAD)).await.is_empty());
    let mut daemon = daemon;
    assert_eq!(daemon.stop().await, Some(0));
}

#[test]
fn tenant_zero_beside_another_tenant_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    std::fs::write(
        &path,
        "[database]\nurl = \"sqlite:/nonexistent/x.db\"\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"a\"\nclient_secret = \"s\"\n\
         [[tenant]]\nid = 1002\nagent_id = 2\nclient_id = \"b\"\nclient_secret = \"t\"\n",
    )
    .unwrap();
    for command in ["check-config", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args([command, "--config", path.to_str().unwrap()])
            .env_remove("DINGSYNC_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{command}: {stderr}");
        assert!(
            stderr.contains("tenant[0].id") && stderr.contains("1002"),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test]
async fn tenants_from_the_database_keep_the_tenant_rule_and_skip_placeholders() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    // A fresh JeecgBoot's placeholder row for tenant 0 is skipped: tenant 1002 alone is fine.
    exec(&db, &["INSERT INTO sys_third_app_config (id, tenant_id, agent_id, client_id, client_secret, third_type, status) VALUES ('p0', 0, '1', '1', '1', 'dingtalk', 1), ('r2', 1002, '2', 'b', 't', 'dingtalk', 1)"]).await;
    std::fs::write(&path, format!("tenants_from_database = true\n[tenant_defaults]\npush.enabled = false\n[database]\nurl = \"{}\"\n[dingtalk]\nbase_url = \"{}\"\n", db.url, server.url)).unwrap();
    let status = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args(["status", "--json", "--config", path.to_str().unwrap()])
            .env_remove("DINGSYNC_CONFIG")
            .output()
            .unwrap()
    };
    let out = status(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(json["tenants"][0]["tenant"], 1002);
    // Its switches are [tenant_defaults]'s.
    assert_eq!(
        (
            &json["tenants"][0]["credentials"],
            &json["tenants"][0]["push"],
            &json["tenants"][0]["pull"]
        ),
        (
            &serde_json::json!("sys_third_app_config"),
            &serde_json::json!(false),
            &serde_json::json!(true)
        )
    );
    // A real tenant-0 row beside it breaks the rule: 78 naming both.
    exec(&db, &["UPDATE sys_third_app_config SET agent_id = '9', client_id = 'real', client_secret = 'realsecret' WHERE id = 'p0'"]).await;
    let out = status(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("1002") && stderr.contains("sys_third_app_config"),
        "{stderr}"
    );
}

/// Two tenants, two DingTalk apps, one database: each tenant's users, departments,
/// announcements and outbox rows reach only its own app; a link row of another tenant is
/// left alone; an old announcement is skipped, a fresh one sent.
/// Departments 一部 (tenant 1000) and 二部 (1002); users yi (1000), er (1002) and both (the
/// two), which tenant 1002 already links (JeecgBoot's row, with its own values).
async fn seed_two_tenants(db: &TestDb) {
    exec(
        db,
        &[
            "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag, tenant_id) VALUES \
             ('d1', '', '一部', 1, '1', 'A01', '0', 1000), ('d2', '', '二部', 2, '1', 'A02', '0', 1002)",
            "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES \
             ('u1', 'yi', '一', '13700000001', 1, 0), ('u2', 'er', '二', '13700000002', 1, 0), ('u3', 'both', '双', '13700000003', 1, 0)",
            "INSERT INTO sys_user_tenant (id, user_id, tenant_id, status) VALUES ('t1', 'u1', 1000, '1'), ('t2', 'u2', 1002, '1'), ('t3', 'u3', 1000, '1'), ('t4', 'u3', 1002, '1')",
            "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'd1'), ('m2', 'u2', 'd2')",
            // Tenant 1002 already links 'both' (JeecgBoot's row, with its own values).
            "INSERT INTO sys_third_account (id, sys_user_id, realname, tenant_id, third_user_uuid, third_user_id, third_type, avatar) VALUES \
             ('l3', 'u3', '双（钉钉）', 1002, 'uuid-both', 'both', 'dingtalk', 'https://a/b.png')",
        ],
    )
    .await;
}

/// The two tenants' configuration, each with its own app.
fn two_tenant_config(db: &TestDb, server: &SimServer) -> dingsync::config::Config {
    let config_text = format!(
        "[database]\nurl = \"{}\"\n[dingtalk]\nbase_url = \"{}\"\nqps_per_api = 1000\n[queue]\nworkers = 2\n[watch]\npoll_interval = \"100ms\"\n[outbox]\nallow_to_all = true\n\
         [[tenant]]\nid = 1000\nagent_id = 1000000\nclient_id = \"app1000\"\nclient_secret = \"secret1000\"\n\
         [[tenant]]\nid = 1002\nagent_id = 1002000\nclient_id = \"app1002\"\nclient_secret = \"secret1002\"\n",
        db.url, server.url
    );
    dingsync::config::load_str(
        &config_text,
        std::path::Path::new("t.toml"),
        &Default::default(),
    )
    .unwrap()
    .config
}

/// Each tenant's announcement and outbox row go to its own app; an old announcement and a
/// typeless one are not sent, and are recorded as such.
async fn announcements_go_to_their_tenant(db: &TestDb, server: &SimServer) {
    let name = db.name;
    let (ago, now) = match name {
        "mariadb" => ("NOW() - INTERVAL 400 DAY", "NOW()"),
        "postgres" => ("LOCALTIMESTAMP - INTERVAL '400 days'", "LOCALTIMESTAMP"),
        _ => ("datetime('now', '-400 days')", "datetime('now')"),
    };
    exec(
        db,
        &[
            &format!("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, send_status, del_flag, tenant_id, send_time) VALUES ('n1', '一部通知', 'x', 'ALL', '1', '0', 1000, {now})"),
            &format!("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, send_status, del_flag, tenant_id, send_time) VALUES ('n2', '二部通知', 'y', 'ALL', '1', '0', 1002, {now})"),
            &format!("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, send_status, del_flag, tenant_id, send_time) VALUES ('old', '旧通知', 'z', 'ALL', '1', '0', 1000, {ago})"),
            &format!("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, send_status, del_flag, tenant_id, create_time) VALUES ('notype', '无类型', 'w', NULL, '1', '0', 1000, {now})"),
            "INSERT INTO dingsync_outbox (tenant_id, to_all, message, status) VALUES (1000, 1, '{\"msgtype\":\"text\",\"text\":{\"content\":\"一\"}}', 'pending')",
            "INSERT INTO dingsync_outbox (tenant_id, to_usernames, to_all, message, status) VALUES (1002, 'er', 0, '{\"msgtype\":\"text\",\"text\":{\"content\":\"二\"}}', 'pending')",
        ],
    )
    .await;
    let sends = |app: &str| {
        server
            .sim
            .calls(app)
            .get("topapi/message/corpconversation/asyncsend_v2")
            .map_or(0, |c| c.calls)
    };
    common::holds(
        &format!("{name}: announcements and outbox rows sent"),
        20,
        || sends("app1000") == 2 && sends("app1002") == 2,
    )
    .await;
    queue_idle(&db.store, name).await;
    assert_eq!((sends("app1000"), sends("app1002")), (2, 2), "{name}: one announcement and one outbox row each; the old one and the typeless one not sent");
    let skipped = db
        .store
        .deliveries(1000, "announcement", "old")
        .await
        .unwrap();
    assert_eq!(
        skipped
            .iter()
            .map(|d| (d.chunk, d.state.as_str()))
            .collect::<Vec<_>>(),
        vec![(-1, "skipped")],
        "{name}"
    );
    let skipped = db
        .store
        .deliveries(1000, "announcement", "notype")
        .await
        .unwrap();
    assert_eq!(skipped.len(), 1, "{name}");
    assert!(
        db.store
            .deliveries(1002, "announcement", "n1")
            .await
            .unwrap()
            .is_empty(),
        "{name}: n1 is tenant 1000's"
    );
}

/// Link rows are per tenant: tenant 1002's row kept its values; 'both' in tenant 1000 has no
/// row (the userid is taken by tenant 1002's row) but a snapshot.
async fn links_are_per_tenant(db: &TestDb) {
    let name = db.name;
    type LinkRow = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
    );
    let links: Vec<LinkRow> = db.store.fetch_rows(&format!(
        "SELECT sys_user_id, third_user_id, third_user_uuid, avatar, {} FROM sys_third_account ORDER BY sys_user_id, tenant_id",
        db.store.int("tenant_id")
    ), &[])
    .await
    .unwrap();
    let both: Vec<&LinkRow> = links
        .iter()
        .filter(|l| l.0.as_deref() == Some("u3"))
        .collect();
    assert_eq!(both.len(), 1, "{name}: {links:?}");
    assert_eq!(
        (both[0].2.as_deref(), both[0].3.as_deref(), both[0].4),
        (Some("uuid-both"), Some("https://a/b.png"), 1002),
        "{name}: JeecgBoot's values kept, tenant unchanged"
    );
    assert!(
        links
            .iter()
            .any(|l| l.0.as_deref() == Some("u1") && l.4 == 1000),
        "{name}: {links:?}"
    );
    assert!(
        links
            .iter()
            .any(|l| l.0.as_deref() == Some("u2") && l.4 == 1002),
        "{name}: {links:?}"
    );
    let snapshot = db.store.snapshot_of(1000, "user", "u3").await.unwrap();
    assert_eq!(snapshot.map(|s| s.ding_id), Some("both".into()), "{name}");
}

async fn two_tenants(db: TestDb) {
    let name = db.name;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    server.sim.add_app("app1000", "secret1000", 1_000_000);
    server.sim.add_app("app1002", "secret1002", 1_002_000);
    seed_two_tenants(&db).await;
    let config = two_tenant_config(&db, &server);
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    let users = |app: &str| -> Vec<String> {
        let mut ids: Vec<String> = server
            .sim
            .app(app)
            .unwrap()
            .org
            .users
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    };
    common::holds(
        &format!("{name}: each tenant's users in its app"),
        20,
        || users("app1000") == vec!["both", "yi"] && users("app1002") == vec!["both", "er"],
    )
    .await;
    assert!(
        dept_names(&server, "app1000").contains(&"一部".to_string())
            && !dept_names(&server, "app1000").contains(&"二部".to_string()),
        "{name}"
    );
    assert!(
        dept_names(&server, "app1002").contains(&"二部".to_string())
            && !dept_names(&server, "app1002").contains(&"一部".to_string()),
        "{name}"
    );
    announcements_go_to_their_tenant(&db, &server).await;
    links_are_per_tenant(&db).await;
    // Nothing repeats: a second look at the queue after more changes writes nothing new.
    server.sim.reset_calls();
    exec(
        &db,
        &["UPDATE sys_user SET realname = '双' WHERE id = 'u3'"],
    )
    .await;
    changes_read(&db.store, name).await;
    queue_idle(&db.store, name).await;
    assert_eq!(
        server.sim.write_calls("app1000") + server.sim.write_calls("app1002"),
        0,
        "{name}"
    );
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test]
async fn two_tenants_on_sqlite() {
    two_tenants(common::sqlite_db().await).await;
}

#[tokio::test]
async fn two_tenants_on_postgres() {
    if let Some(db) = common::postgres_db().await {
        two_tenants(db).await;
    }
}

#[tokio::test]
async fn two_tenants_on_mariadb() {
    if let Some(db) = common::mariadb_db().await {
        two_tenants(db).await;
    }
}

#[tokio::test]
async fn sync_waits_for_the_scheduled_pull_then_gives_up_with_75() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    // Every department walk takes 4 s: a scheduled pull holds the tenant's run lease that long.
    server.sim.inject(dingsync::sim::FaultRule::random(
        "topapi/v2/department/listsub",
        1.0,
        dingsync::sim::FaultAction::Delay { ms: 4000 },
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    common::write_config(&path, &db.url, &server.url, 1000, "[pull]\ncron = \"*/2 * * * * *\"\n[daemon]\nlease_ttl = \"3s\"\ntimezone = \"Asia/Shanghai\"\n");
    let daemon = Daemon::start(&path);
    daemon
        .wait_for_with("sync.run.started", "\"kind\":\"pull\"")
        .await;
    // A child run without blocking this test's runtime, which drains the daemon's log pipe.
    let sync = |wait: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args([
                "sync",
                "push",
                "--wait",
                wait,
                "--config",
                path.to_str().unwrap(),
            ])
            .env_remove("DINGSYNC_CONFIG")
            .output()
    };
    let out = sync("500ms").await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("run lease held by") && stderr.contains("try again later"),
        "{stderr}"
    );
    // Waiting long enough, it runs once the pull is over (the cron's next tick finds the
    // lease taken and skips).
    server.sim.clear_faults();
    let out = sync("30s").await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The schedule ran in the configured zone; check-config shows it.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("timezone = \"Asia/Shanghai\""));
    let mut daemon = daemon;
    assert_eq!(daemon.stop().await, Some(0));
}

/// Starts the daemon in-process on `db` with `extra` configuration; returns its stop switch.
fn start_daemon(
    db: &TestDb,
    server: &dingsync::sim::SimServer,
    extra: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), dingsync::daemon::DaemonError>>,
) {
    let config = common::daemon_config(db, server, extra);
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    (shutdown, daemon)
}

/// Waits (20 s at most) until outbox row `id` is no longer pending.
async fn outbox_settled(store: &Store, id: i64) {
    common::eventually(
        &format!("outbox row {id} settled"),
        Duration::from_secs(20),
        async || {
            let (status, error) = outbox_row(store, id).await;
            common::done_or(status != "pending", (status, error))
        },
    )
    .await;
}

async fn outbox_row(store: &Store, id: i64) -> (String, Option<String>) {
    store
        .fetch_rows(
            &store.sql("SELECT status, error FROM dingsync_outbox WHERE id = ?"),
            &[Arg::Int(id)],
        )
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test]
async fn the_outbox_guard_refuses_what_it_is_told_to() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    let text = r#"{"msgtype":"text","text":{"content":"hi"}}"#;
    exec(&db, &[
        &format!("INSERT INTO dingsync_outbox (tenant_id, to_all, message, status) VALUES (0, 1, '{text}', 'pending')"),
        &format!("INSERT INTO dingsync_outbox (tenant_id, to_userids, to_all, message, status) VALUES (0, 'a,b,c', 0, '{text}', 'pending')"),
        &format!("INSERT INTO dingsync_outbox (tenant_id, to_userids, to_all, message, status) VALUES (0, 'a,b', 0, '{text}', 'pending')"),
    ])
    .await;
    let (shutdown, daemon) = start_daemon(&db, &server, "[outbox]\nmax_recipients = 2\n");
    let store = db.store.clone();
    outbox_settled(&store, 3).await;
    queue_idle(&store, "outbox").await;
    let (status, error) = outbox_row(&store, 1).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("to_all is refused"));
    let (status, error) = outbox_row(&store, 2).await;
    assert_eq!(status, "failed");
    assert!(error
        .unwrap()
        .contains("more than outbox.max_recipients = 2"));
    assert_eq!(outbox_row(&store, 3).await.0, "sent");
    assert_eq!(
        server.sim.calls(APPKEY)["topapi/message/corpconversation/asyncsend_v2"].calls,
        1
    );
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
    // Switched off: every row fails with that reason, nothing is sent.
    exec(&db, &[&format!("INSERT INTO dingsync_outbox (tenant_id, to_userids, to_all, message, status) VALUES (0, 'a', 0, '{text}', 'pending')")]).await;
    let (shutdown, daemon) = start_daemon(&db, &server, "[outbox]\nenabled = false\n");
    outbox_settled(&store, 4).await;
    let (status, error) = outbox_row(&store, 4).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("outbox.enabled = false"));
    assert_eq!(
        server.sim.calls(APPKEY)["topapi/message/corpconversation/asyncsend_v2"].calls,
        1
    );
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_job_that_waits_too_often_is_dead_with_the_reason() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    // DingTalk keeps failing the department's create (busy): its job retries slowly while
    // its member waits for it.
    server.sim.inject(dingsync::sim::FaultRule::random(
        "topapi/v2/department/create",
        1.0,
        dingsync::sim::FaultAction::Errcode {
            errcode: -1,
            sub_code: None,
        },
    ));
    let (shutdown, daemon) = start_daemon(
        &db,
        &server,
        "[queue]\nmax_waits = 2\nwait_cap = \"100ms\"\nbackoff_base = \"20s\"\nbackoff_cap = \"20s\"\n",
    );
    exec(&db, &[
        "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('d1', '', '新部门', 1, '1', 'A01', '0')",
        "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('u1', 'waiter', '等待', '13800000021', 1, 0)",
        "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'd1')",
    ])
    .await;
    let store = db.store.clone();
    let dead = common::eventually(
        "the user's job gives up",
        Duration::from_secs(20),
        async || {
            let all = jobs(&store, None).await;
            all.iter()
                .find(|j| j.entity_key == "u1" && j.state == state::DEAD)
                .cloned()
                .ok_or_else(|| format!("{all:?}"))
        },
    )
    .await;
    let reason = dead.last_error.unwrap();
    assert!(
        reason.contains("d1") && reason.contains("gave up after 2 waits"),
        "{reason}"
    );
    assert_eq!(dead.waits, 2);
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_department_another_one_holds_is_not_adopted_when_dingtalk_refuses_the_name() {
    let db = common::sqlite_db().await;
    // DingTalk has 同名 under the root, held by local department a (renamed locally before
    // dingsync watched, so its job has not run yet).
    let server = common::start_fast_sim().await;
    let held = server
        .sim
        .admin_call(
            APPKEY,
            "topapi/v2/department/create",
            serde_json::json!({ "name": "同名", "parent_id": 1 }),
        )
        .unwrap()["result"]["dept_id"]
        .as_i64()
        .unwrap();
    db.store.init_to(true, 0).await.unwrap();
    exec(&db, &[&format!(
        "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag, ding_identifier) VALUES ('a', '', '改名', 1, '1', 'A01', '0', '{held}')"
    )])
    .await;
    db.store.init(false).await.unwrap();
    let (shutdown, daemon) = start_daemon(
        &db,
        &server,
        "[queue]\nbackoff_base = \"200ms\"\nbackoff_cap = \"200ms\"\n",
    );
    // A new local department takes the name: its create meets 60021, and the DingTalk
    // department of that name belongs to a: not adopted; the job retries.
    exec(&db, &["INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('b', '', '同名', 2, '1', 'A02', '0')"]).await;
    let store = db.store.clone();
    let b = common::eventually("b's job refused", Duration::from_secs(20), async || {
        let all = jobs(&store, None).await;
        all.iter()
            .find(|j| {
                j.entity_key == "b"
                    && j.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("belongs to local department a"))
            })
            .cloned()
            .ok_or_else(|| format!("{all:?}"))
    })
    .await;
    assert_ne!(b.state, "dead", "retried, not dead");
    let source = |id: i64| {
        server
            .sim
            .app(APPKEY)
            .unwrap()
            .org
            .depts
            .get(&id)
            .and_then(|d| d.source_identifier.clone())
    };
    assert_eq!(
        source(held),
        None,
        "a's DingTalk department was not taken by b"
    );
    // a's rename frees the name: b is created.
    exec(
        &db,
        &["UPDATE sys_depart SET depart_order = 3 WHERE id = 'a'"],
    )
    .await;
    common::holds("同名 created for b, 改名 for a", 20, || {
        let names = dept_names(&server, APPKEY);
        names.contains(&"改名".to_string()) && names.contains(&"同名".to_string())
    })
    .await;
    queue_idle(&store, "held name").await;
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}
