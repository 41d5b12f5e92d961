//! Living beside JeecgBoot's own DingTalk integration, with `dingsync run` as a process, on
//! SQLite and on MariaDB with JeecgBoot's real dump (whose placeholder row for tenant 0 is
//! skipped with a warning):
//! - who sends announcements: JeecgBoot's row enabled + `auto` -> dingsync neither sends nor
//!   recalls; the row switched off -> dingsync sends and recalls; `always` beside an enabled
//!   row -> sent, with a warning that notices arrive twice;
//! - a tenant row added in JeecgBoot while the daemon runs is served at the next pull tick;
//! - JeecgBoot's sync buttons clicked under a running daemon: the rows they write (link rows,
//!   `ding_identifier`, a user inserted by its pull with JeecgBoot's hash) cause no DingTalk
//!   write by dingsync, and a re-push writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::process::Daemon;
use common::{TestDb, AGENT_ID, APPKEY, APPSECRET};
use dingsync::sim::SimServer;

const SEND: &str = "topapi/message/corpconversation/asyncsend_v2";
const RECALL: &str = "topapi/message/corpconversation/recall";

async fn exec(db: &TestDb, statements: &[&str]) {
    for statement in statements {
        db.plain
            .execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{}: {statement}: {e}", db.name));
    }
}

fn calls(server: &SimServer, appkey: &str, path: &str) -> u64 {
    server.sim.calls(appkey).get(path).map_or(0, |c| c.calls)
}

/// Waits (20 s at most) until `n` announcement jobs are done and none is pending or running.
async fn announce_jobs_done(db: &TestDb, n: i64) {
    common::eventually(
        &format!("{}: {n} announcement jobs done, none busy", db.name),
        Duration::from_secs(20),
        async || {
            let done = db
                .count("SELECT COUNT(*) FROM dingsync_job WHERE kind = 'announce' AND state = 'done'")
                .await;
            let busy = db.count("SELECT COUNT(*) FROM dingsync_job WHERE kind = 'announce' AND state IN ('pending', 'running')").await;
            common::done_or(done >= n && busy == 0, format!("{done} done, {busy} busy"))
        },
    )
    .await;
}

fn publish(id: &str, tenant: i64) -> String {
    format!("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, send_status, del_flag, tenant_id) VALUES ('{id}', '通知{id}', '内容', 'ALL', '1', '0', {tenant})")
}

fn revoke(id: &str) -> String {
    format!("UPDATE sys_announcement SET send_status = '2' WHERE id = '{id}'")
}

/// The daemon's settings for [`announcements_follow_jeecgboots_switch`] (more appended to
/// them there).
const FAST_WATCH_AND_QUEUE: &str = "[watch]\npoll_interval = \"100ms\"\n[queue]\nbackoff_base = \"50ms\"\nbackoff_cap = \"200ms\"\n";

/// auto + JeecgBoot's row on: JeecgBoot sends and recalls; dingsync does neither.
async fn left_to_jeecgboot_while_its_row_is_on(db: &TestDb, server: &SimServer) {
    let name = db.name;
    exec(db, &[&publish("a1", 0)]).await;
    announce_jobs_done(db, 1).await;
    exec(db, &[&revoke("a1")]).await;
    announce_jobs_done(db, 2).await;
    assert_eq!(
        (calls(server, APPKEY, SEND), calls(server, APPKEY, RECALL)),
        (0, 0),
        "{name}: left to JeecgBoot"
    );
}

/// JeecgBoot's row switched off (its 第三方配置 page): dingsync serves the tenant, from the
/// next announcement on, without a reload.
async fn served_by_dingsync_once_the_row_is_off(db: &TestDb, server: &SimServer) {
    let name = db.name;
    exec(
        db,
        &["UPDATE sys_third_app_config SET status = 0 WHERE id = 'jb0'"],
    )
    .await;
    exec(db, &[&publish("a2", 0)]).await;
    common::holds(&format!("{name}: a2 sent by dingsync"), 20, || {
        calls(server, APPKEY, SEND) == 1
    })
    .await;
    exec(db, &[&revoke("a2")]).await;
    common::holds(&format!("{name}: a2 recalled by dingsync"), 20, || {
        calls(server, APPKEY, RECALL) == 1
    })
    .await;
}

/// Sent by dingsync, then JeecgBoot's row switched on: the revoke still recalls what
/// dingsync sent (JeecgBoot recalls only its own).
async fn what_dingsync_sent_it_recalls(db: &TestDb, server: &SimServer) {
    let name = db.name;
    exec(db, &[&publish("a4", 0)]).await;
    common::holds(&format!("{name}: a4 sent by dingsync"), 20, || {
        calls(server, APPKEY, SEND) == 2
    })
    .await;
    exec(
        db,
        &["UPDATE sys_third_app_config SET status = 1 WHERE id = 'jb0'"],
    )
    .await;
    exec(db, &[&revoke("a4")]).await;
    common::holds(&format!("{name}: a4 recalled by dingsync"), 20, || {
        calls(server, APPKEY, RECALL) == 2
    })
    .await;
}

/// One JeecgBoot sent (its task id in dt_task_id) is never sent by dingsync, even with
/// JeecgBoot's row switched off later.
async fn what_jeecgboot_sent_is_never_sent_again(db: &TestDb, server: &SimServer) {
    let name = db.name;
    exec(db, &[
        "UPDATE sys_third_app_config SET status = 0 WHERE id = 'jb0'",
        "INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, send_status, del_flag, tenant_id, dt_task_id) VALUES ('a5', '通知a5', '内容', 'ALL', '1', '0', 0, '990001')",
    ]).await;
    common::eventually(&format!("{name}: a5's job done"), Duration::from_secs(20), async || {
        let done = db.count("SELECT COUNT(*) FROM dingsync_job WHERE kind = 'announce' AND entity_key = 'a5' AND state = 'done'").await;
        common::done_or(done > 0, done)
    })
    .await;
    assert_eq!(calls(server, APPKEY, SEND), 2, "{name}: a5 was JeecgBoot's");
}

/// always, beside an enabled row: sent, and the operator is told notices arrive twice
/// (the daemon of config file `path` reloaded).
async fn always_sends_and_warns_of_twice(
    db: &TestDb,
    server: &SimServer,
    path: &std::path::Path,
    daemon: &Daemon,
) {
    let name = db.name;
    exec(
        db,
        &["UPDATE sys_third_app_config SET status = 1 WHERE id = 'jb0'"],
    )
    .await;
    common::write_config(
        path,
        &db.url,
        &server.url,
        1000,
        &format!("{FAST_WATCH_AND_QUEUE}[announcement]\nmode = \"always\"\n"),
    );
    daemon.signal("HUP");
    daemon.wait_for("config.reloaded", 1).await;
    daemon
        .wait_for_with("config.warning", "arrives twice")
        .await;
    exec(db, &[&publish("a3", 0)]).await;
    common::holds(&format!("{name}: a3 sent with always"), 20, || {
        calls(server, APPKEY, SEND) == 3
    })
    .await;
}

async fn announcements_follow_jeecgboots_switch(db: TestDb) {
    let name = db.name;
    let server = common::start_fast_sim().await;
    // The guide's set-up: JeecgBoot's own DingTalk integration on for tenant 0, with the app's
    // real credentials (the real dump's placeholder row filled in).
    exec(&db, &[
        "DELETE FROM sys_third_app_config WHERE third_type = 'dingtalk'",
        &format!("INSERT INTO sys_third_app_config (id, tenant_id, agent_id, client_id, client_secret, third_type, status) VALUES ('jb0', 0, '{AGENT_ID}', '{APPKEY}', '{APPSECRET}', 'dingtalk', 1)"),
    ]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    common::write_config(&path, &db.url, &server.url, 1000, FAST_WATCH_AND_QUEUE);
    let mut daemon = Daemon::start(&path);
    daemon
        .wait_for_with("announce.left_to_jeecgboot", "[0]")
        .await;

    left_to_jeecgboot_while_its_row_is_on(&db, &server).await;
    served_by_dingsync_once_the_row_is_off(&db, &server).await;
    what_dingsync_sent_it_recalls(&db, &server).await;
    what_jeecgboot_sent_is_never_sent_again(&db, &server).await;
    always_sends_and_warns_of_twice(&db, &server, &path, &daemon).await;
    assert_eq!(daemon.stop().await, Some(0), "{name}");
}

#[tokio::test]
async fn announcements_follow_jeecgboots_switch_on_sqlite() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    announcements_follow_jeecgboots_switch(db).await;
}

#[tokio::test]
async fn announcements_follow_jeecgboots_switch_on_mariadb_real_dump() {
    let Some(db) = common::loaded_mariadb().await else {
        return;
    };
    db.store.init(false).await.unwrap();
    announcements_follow_jeecgboots_switch(db).await;
}

/// Tenants read from `sys_third_app_config`, whatever their status: the placeholder row is
/// skipped with a warning, a disabled row is a tenant dingsync serves, and a row added while
/// the daemon runs is served from the next pull tick on.
async fn a_tenant_added_in_jeecgboot_is_served_without_restart(db: TestDb) {
    let name = db.name;
    let server = common::start_fast_sim().await;
    server.sim.add_app("app1002", "secret1002", 1_002_000);
    exec(&db, &[
        "DELETE FROM sys_third_app_config WHERE third_type = 'dingtalk'",
        "INSERT INTO sys_third_app_config (id, tenant_id, agent_id, client_id, client_secret, third_type, status) VALUES ('p0', 0, '1', '1', '1', 'dingtalk', 1)",
        &format!("INSERT INTO sys_third_app_config (id, tenant_id, agent_id, client_id, client_secret, third_type, status) VALUES ('t1', 1001, '{AGENT_ID}', '{APPKEY}', '{APPSECRET}', 'dingtalk', 0)"),
    ]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    std::fs::write(
        &path,
        format!(
            "tenants_from_database = true\n[database]\nurl = \"{}\"\n[dingtalk]\nbase_url = \"{}\"\nqps_per_api = 1000\n\
             [pull]\ncron = \"*/2 * * * * *\"\n[watch]\npoll_interval = \"100ms\"\n",
            db.url, server.url
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&path);
    daemon.wait_for("daemon.started", 1).await;
    daemon.wait_for_with("config.warning", "placeholder").await;
    // The disabled row is a tenant: dingsync sends its announcements.
    exec(&db, &[&publish("t1a", 1001)]).await;
    common::holds(&format!("{name}: tenant 1001 served"), 20, || {
        calls(&server, APPKEY, SEND) == 1
    })
    .await;

    // Added in JeecgBoot's UI while the daemon runs: picked up at the next pull tick.
    exec(&db, &["INSERT INTO sys_third_app_config (id, tenant_id, agent_id, client_id, client_secret, third_type, status) VALUES ('t2', 1002, '1002000', 'app1002', 'secret1002', 'dingtalk', 0)"]).await;
    daemon.wait_for("config.reloaded", 1).await;
    exec(&db, &[&publish("t2a", 1002)]).await;
    common::holds(&format!("{name}: tenant 1002 served"), 20, || {
        calls(&server, "app1002", SEND) == 1
    })
    .await;
    assert_eq!(
        calls(&server, APPKEY, SEND),
        1,
        "{name}: each tenant its own app"
    );
    assert_eq!(daemon.stop().await, Some(0), "{name}");
}

#[tokio::test]
async fn a_tenant_added_in_jeecgboot_is_served_without_restart_on_sqlite() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    a_tenant_added_in_jeecgboot_is_served_without_restart(db).await;
}

#[tokio::test]
async fn a_tenant_added_in_jeecgboot_is_served_without_restart_on_mariadb_real_dump() {
    let Some(db) = common::loaded_mariadb().await else {
        return;
    };
    db.store.init(false).await.unwrap();
    a_tenant_added_in_jeecgboot_is_served_without_restart(db).await;
}

/// Waits (30 s at most) until the change log is read and no push job is pending or running.
async fn settled(db: &TestDb, daemon: &Daemon) {
    common::eventually(
        &format!("{}: changes read, no job busy", db.name),
        Duration::from_secs(30),
        async || {
            let unread =
                db.store.last_change_id().await.unwrap() - db.store.change_cursor().await.unwrap();
            let busy = db
                .count("SELECT COUNT(*) FROM dingsync_job WHERE state IN ('pending', 'running')")
                .await;
            if unread == 0 && busy == 0 {
                return Ok(());
            }
            let jobs = db
                .store
                .list_jobs(&dingsync::store::queue::JobFilter::default())
                .await
                .unwrap();
            Err(format!(
                "{unread} changes unread, {busy} jobs busy: {jobs:?}\n{}",
                daemon.log()
            ))
        },
    )
    .await;
}

/// lisi (in 研发部) pushed by a daemon of config file `path`, everything settled; then a user
/// added in DingTalk's console (wangwu, in 研发部) and the simulator's calls reset. The daemon
/// and 研发部's DingTalk id.
async fn lisi_pushed_and_wangwu_added_in_the_console(
    db: &TestDb,
    server: &SimServer,
    path: &std::path::Path,
) -> (Daemon, i64) {
    let name = db.name;
    exec(db, &[
        "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('c1', '', '研发部', 1, '1', 'A01', '0')",
        "INSERT INTO sys_user (id, username, realname, phone, email, status, del_flag) VALUES ('u1', 'lisi', '李四', '13800000021', 'lisi@example.com', 1, 0)",
        "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'c1')",
    ]).await;
    let daemon = Daemon::start(path);
    daemon
        .eventually(&format!("{name}: lisi pushed"), 20, || {
            common::has_user(server, APPKEY, "lisi")
        })
        .await;
    settled(db, &daemon).await;
    let org = server.sim.app(APPKEY).unwrap().org;
    let dept = org
        .depts
        .values()
        .find(|d| d.name == "研发部")
        .unwrap()
        .dept_id;
    // A user added in DingTalk's console.
    server
        .sim
        .admin_call(
            APPKEY,
            "topapi/v2/user/create",
            serde_json::json!({ "userid": "wangwu", "name": "王五", "mobile": "13800000022", "dept_id_list": dept.to_string() }),
        )
        .unwrap();
    server.sim.reset_calls();
    (daemon, dept)
}

/// "同步到钉钉": JeecgBoot writes DingTalk itself, then the same ding_identifier (`dept`)
/// and link.
async fn the_sync_to_dingtalk_button(db: &TestDb, server: &SimServer, dept: i64) {
    server
        .sim
        .admin_call(
            APPKEY,
            "topapi/v2/user/update",
            serde_json::json!({ "userid": "lisi", "name": "李四", "dept_id_list": dept.to_string() }),
        )
        .unwrap();
    exec(db, &[
        &format!("UPDATE sys_depart SET ding_identifier = '{dept}' WHERE id = 'c1'"),
        "UPDATE sys_third_account SET realname = '李四', third_user_uuid = 'lisi', status = 1 WHERE sys_user_id = 'u1' AND third_type = 'dingtalk'",
    ]).await;
}

/// "同步到本地": the console user inserted with JeecgBoot's hash, membership and link, in
/// one transaction (a service method of JeecgBoot's).
async fn the_sync_to_local_button(db: &TestDb) {
    let salt = "RCGTeGiH";
    let hash = dingsync::jeecg::password::hash("wangwu", "123456", salt);
    let user = format!("INSERT INTO sys_user (id, username, realname, phone, password, salt, status, del_flag) VALUES ('jb1', 'wangwu', '王五', '13800000022', '{hash}', '{salt}', 1, 0)");
    let statements = [
        user.as_str(),
        "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('jbm1', 'jb1', 'c1')",
        "INSERT INTO sys_third_account (id, sys_user_id, status, del_flag, realname, third_user_uuid, third_user_id, third_type, tenant_id) VALUES ('jbl1', 'jb1', 1, 0, '王五', 'wangwu', 'wangwu', 'dingtalk', 0)",
    ];
    let mut tx = db.plain.begin_raw().await.unwrap();
    for statement in statements {
        tx.execute(statement).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// A re-push writes nothing; a pull inserts no second wangwu and no second link (`dingsync
/// sync` with config file `path`).
async fn a_repush_and_a_pull_write_nothing_twice(
    db: &TestDb,
    server: &SimServer,
    path: &std::path::Path,
) {
    let name = db.name;
    for direction in ["push", "pull"] {
        // Async: the simulator serves it from this test's runtime.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args(["sync", direction, "all", "--config", path.to_str().unwrap()])
            .env_remove("DINGSYNC_CONFIG")
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{name}: sync {direction}: {out:?}");
    }
    assert_eq!(
        server.sim.write_calls(APPKEY),
        0,
        "{name}: {:?}",
        server.sim.calls(APPKEY)
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sys_user WHERE username = 'wangwu'")
            .await,
        1,
        "{name}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sys_third_account WHERE third_type = 'dingtalk' AND third_user_id IN ('lisi', 'wangwu')").await,
        2,
        "{name}: one link each"
    );
    assert_eq!(server.sim.app(APPKEY).unwrap().org.users.len(), 2, "{name}");
}

/// JeecgBoot's "同步到钉钉" and "同步到本地" clicked while the daemon runs, replayed as the rows
/// they leave: DingTalk's side written by JeecgBoot (as a console admin would, not counted),
/// and locally the same `ding_identifier` and link rows written again, and a DingTalk user
/// inserted by its pull with JeecgBoot's password hash, its membership and its link row.
async fn jeecgboots_buttons_beside_the_daemon(db: TestDb) {
    let name = db.name;
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    // Events off: the console user below reaches JeecgBoot by its button only.
    common::write_config(
        &path,
        &db.url,
        &server.url,
        1000,
        "[events]\nmode = \"off\"\n[watch]\npoll_interval = \"100ms\"\n",
    );
    let (mut daemon, dept) = lisi_pushed_and_wangwu_added_in_the_console(&db, &server, &path).await;
    the_sync_to_dingtalk_button(&db, &server, dept).await;
    the_sync_to_local_button(&db).await;
    settled(&db, &daemon).await;
    assert_eq!(
        server.sim.write_calls(APPKEY),
        0,
        "{name}: the button's rows made dingsync write: {:?}",
        server.sim.calls(APPKEY)
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM dingsync_job WHERE state = 'dead'")
            .await,
        0,
        "{name}"
    );
    assert_eq!(daemon.stop().await, Some(0), "{name}");

    // A re-push writes nothing; a pull inserts no second wangwu and no second link.
    a_repush_and_a_pull_write_nothing_twice(&db, &server, &path).await;
}

#[tokio::test]
async fn jeecgboots_buttons_beside_the_daemon_on_sqlite() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    jeecgboots_buttons_beside_the_daemon(db).await;
}

#[tokio::test]
async fn jeecgboots_buttons_beside_the_daemon_on_mariadb() {
    let Some(db) = common::mariadb_db().await else {
        return;
    };
    db.store.init(true).await.unwrap();
    jeecgboots_buttons_beside_the_daemon(db).await;
}
