//! The sync base end to end, as an operator runs it: `dingsync sync` and `dingsync plan` as
//! processes (their JSON logs counted), the daemon for the queue, on SQLite, PostgreSQL (a
//! sample org) and MariaDB (JeecgBoot's real dump). A pull never reverts a local edit, a push
//! never reverts a console edit, conflicts go to the configured side once, hidden mobiles
//! insert nobody; and a database from schema v4 upgrades without a single write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{TestDb, APPKEY};
use dingsync::daemon::{run, Reload};
use dingsync::sim::{FaultAction, FaultRule, SimServer};
use dingsync::store::raw::Arg;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// What a `dingsync` process said.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    /// JSON log lines of `event` (containing `text`).
    fn count(&self, event: &str, text: &str) -> usize {
        self.stderr
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{event}\"")) && l.contains(text))
            .count()
    }
}

async fn dingsync(config: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--config", config.to_str().unwrap(), "--log-format", "json"]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
        .args(&all)
        .env_remove("DINGSYNC_CONFIG")
        .output()
        .await
        .unwrap();
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `dingsync sync <direction> all` and expects it to succeed.
async fn sync(config: &Path, direction: &str, what: &str) -> Output {
    let out = dingsync(config, &["sync", direction, "all"]).await;
    assert_eq!(
        out.code,
        Some(0),
        "{what}: sync {direction}: {}\n{}",
        out.stdout,
        out.stderr
    );
    out
}

async fn local(db: &TestDb, username: &str, column: &str) -> Option<String> {
    let text = format!("SELECT {column} FROM sys_user WHERE username = ?");
    let sql = db.store.sql(&text);
    db.plain
        .fetch_value::<Option<String>>(&sql, &[Arg::Text(username)])
        .await
        .unwrap()
        .unwrap()
}

async fn set_local(db: &TestDb, username: &str, column: &str, value: &str) {
    db.plain
        .execute(&format!(
            "UPDATE sys_user SET {column} = '{value}' WHERE username = '{username}'"
        ))
        .await
        .unwrap();
}

/// The DingTalk userid linked to the local user `username`.
async fn userid(db: &TestDb, username: &str) -> String {
    let id = local(db, username, "id").await.unwrap();
    db.store.link_of(0, &id).await.unwrap().unwrap().userid
}

fn ding(server: &SimServer, userid: &str) -> dingsync::sim::org::User {
    server.sim.app(APPKEY).unwrap().org.users[userid].clone()
}

fn console(server: &SimServer, path: &str, body: serde_json::Value) {
    server.sim.admin_call(APPKEY, path, body).unwrap();
}

async fn local_users(db: &TestDb) -> i64 {
    db.plain
        .fetch_value::<i64>("SELECT COUNT(*) FROM sys_user", &[])
        .await
        .unwrap()
        .unwrap()
}

struct Configs {
    _dir: tempfile::TempDir,
    /// Defaults: both directions, conflicts to JeecgBoot.
    plain: PathBuf,
    /// The tenant's pull switched off: JeecgBoot is the master.
    pull_off: PathBuf,
    /// `[sync] conflict = "dingtalk"`.
    dingtalk_wins: PathBuf,
}

fn configs(db: &TestDb, server: &SimServer) -> Configs {
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, extra: &str| {
        let path = dir.path().join(file);
        common::write_config(&path, &db.url, &server.url, 1000, extra);
        path
    };
    Configs {
        plain: write("plain.toml", ""),
        pull_off: write("pull-off.toml", "[tenant.pull]\nenabled = false\n"),
        dingtalk_wins: write("dingtalk.toml", "[sync]\nconflict = \"dingtalk\"\n"),
        _dir: dir,
    }
}

/// `a` and `b` are local usernames with phones; `b` has an e-mail.
async fn base_scenarios(db: TestDb, a: &str, b: &str) {
    let name = db.name;
    let server = common::start_fast_sim().await;
    let cfg = configs(&db, &server);
    sync(&cfg.plain, "push", name).await;
    let (ua, ub) = (userid(&db, a).await, userid(&db, b).await);

    a_local_phone_dingtalk_cannot_take_is_kept(&db, &server, &cfg, a, &ua).await;
    a_console_rename_is_pulled_home(&db, &server, &cfg, b, &ub).await;

    // The tenant's pull off: JeecgBoot is the master, the push restores its value.
    console(
        &server,
        "topapi/v2/user/update",
        json!({ "userid": ub, "name": "钉钉再改" }),
    );
    sync(&cfg.pull_off, "push", name).await;
    assert_eq!(ding(&server, &ub).name, "控制台改名", "{name}: restored");

    a_conflict_goes_to_jeecgboot(&db, &server, &cfg, b, &ub).await;
    a_conflict_goes_to_dingtalk(&db, &server, &cfg, b, &ub).await;

    email_while_dingtalk_fails(&db, &server, &cfg, b, &ub).await;
    hidden_mobiles(&db, &server, &cfg).await;
}

/// A phone changed locally (user `a`, DingTalk's `ua`): DingTalk cannot take it; said once;
/// the pull keeps it.
async fn a_local_phone_dingtalk_cannot_take_is_kept(
    db: &TestDb,
    server: &SimServer,
    cfg: &Configs,
    a: &str,
    ua: &str,
) {
    let name = db.name;
    let old_mobile = ding(server, ua).mobile;
    set_local(db, a, "phone", "13912345678").await;
    let first = sync(&cfg.plain, "push", name).await;
    assert_eq!(
        first.count("sync.entity.warning", "40022"),
        1,
        "{name}: {}",
        first.stderr
    );
    assert!(
        !first.stderr.contains("13912345678"),
        "{name}: the mobile is masked in logs"
    );
    let second = sync(&cfg.plain, "push", name).await;
    assert_eq!(second.count("sync.entity.warning", "40022"), 0, "{name}");
    sync(&cfg.plain, "pull", name).await;
    assert_eq!(
        local(db, a, "phone").await.as_deref(),
        Some("13912345678"),
        "{name}: the pull kept the local phone"
    );
    assert_eq!(ding(server, ua).mobile, old_mobile, "{name}");
}

/// A console rename (of `ub`, local `b`): the push leaves it, the pull brings it home,
/// nothing echoes.
async fn a_console_rename_is_pulled_home(
    db: &TestDb,
    server: &SimServer,
    cfg: &Configs,
    b: &str,
    ub: &str,
) {
    let name = db.name;
    console(
        server,
        "topapi/v2/user/update",
        json!({ "userid": ub, "name": "控制台改名" }),
    );
    sync(&cfg.plain, "push", name).await;
    assert_eq!(ding(server, ub).name, "控制台改名", "{name}: push kept it");
    sync(&cfg.plain, "pull", name).await;
    assert_eq!(
        local(db, b, "realname").await.as_deref(),
        Some("控制台改名"),
        "{name}"
    );
    server.sim.reset_calls();
    sync(&cfg.plain, "push", name).await;
    assert_eq!(server.sim.write_calls(APPKEY), 0, "{name}: no echo");
}

/// A conflict, JeecgBoot's side configured (the default): the plan shows it, the push
/// applies it and says so once; the pull then has nothing to say.
async fn a_conflict_goes_to_jeecgboot(
    db: &TestDb,
    server: &SimServer,
    cfg: &Configs,
    b: &str,
    ub: &str,
) {
    let name = db.name;
    set_local(db, b, "realname", "本地名").await;
    console(
        server,
        "topapi/v2/user/update",
        json!({ "userid": ub, "name": "钉钉名" }),
    );
    let plan = dingsync(&cfg.plain, &["plan", "push", "all"]).await;
    assert!(
        plan.stdout.contains("CONFLICT") && plan.stdout.contains("本地名"),
        "{name}: {}",
        plan.stdout
    );
    let push = sync(&cfg.plain, "push", name).await;
    assert_eq!(ding(server, ub).name, "本地名", "{name}");
    assert_eq!(
        push.count("sync.conflict", "\"winner\":\"jeecgboot\""),
        1,
        "{name}: {}",
        push.stderr
    );
    let pull = sync(&cfg.plain, "pull", name).await;
    assert_eq!(pull.count("sync.conflict", ""), 0, "{name}");
    assert_eq!(
        local(db, b, "realname").await.as_deref(),
        Some("本地名"),
        "{name}"
    );
}

/// DingTalk's side configured: the push leaves a conflict, the pull applies it, once.
async fn a_conflict_goes_to_dingtalk(
    db: &TestDb,
    server: &SimServer,
    cfg: &Configs,
    b: &str,
    ub: &str,
) {
    let name = db.name;
    set_local(db, b, "realname", "本地二").await;
    console(
        server,
        "topapi/v2/user/update",
        json!({ "userid": ub, "name": "钉钉二" }),
    );
    let push = sync(&cfg.dingtalk_wins, "push", name).await;
    assert_eq!(ding(server, ub).name, "钉钉二", "{name}");
    assert_eq!(push.count("sync.conflict", ""), 0, "{name}");
    let pull = sync(&cfg.dingtalk_wins, "pull", name).await;
    assert_eq!(
        pull.count("sync.conflict", "\"winner\":\"dingtalk\""),
        1,
        "{name}: {}",
        pull.stderr
    );
    assert_eq!(
        local(db, b, "realname").await.as_deref(),
        Some("钉钉二"),
        "{name}"
    );
    server.sim.reset_calls();
    sync(&cfg.dingtalk_wins, "push", name).await;
    assert_eq!(server.sim.write_calls(APPKEY), 0, "{name}");
}

/// An e-mail changed locally while DingTalk fails every update: the daemon's job keeps
/// retrying, a pull meanwhile leaves the local e-mail, and once DingTalk recovers the queue
/// pushes it.
async fn email_while_dingtalk_fails(
    db: &TestDb,
    server: &SimServer,
    cfg: &Configs,
    b: &str,
    ub: &str,
) {
    let name = db.name;
    let config = common::daemon_config(
        db,
        server,
        "[queue]\nmax_attempts = 1000\nbackoff_base = \"20ms\"\nbackoff_cap = \"100ms\"\n[watch]\npoll_interval = \"100ms\"\n",
    );
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    server.sim.inject(FaultRule::random(
        "topapi/v2/user/update",
        1.0,
        FaultAction::Errcode {
            errcode: -1,
            sub_code: None,
        },
    ));
    server.sim.reset_calls();
    set_local(db, b, "email", "new-mail@example.com").await;
    let updates = || {
        server
            .sim
            .calls(APPKEY)
            .get("topapi/v2/user/update")
            .map_or(0, |c| c.calls)
    };
    common::holds(&format!("{name}: the job tried, and failed"), 20, || {
        updates() >= 3
    })
    .await;
    sync(&cfg.plain, "pull", name).await;
    assert_eq!(
        local(db, b, "email").await.as_deref(),
        Some("new-mail@example.com"),
        "{name}: the pull left the local e-mail"
    );
    assert_ne!(ding(server, ub).email, "new-mail@example.com", "{name}");
    server.sim.clear_faults();
    common::holds(&format!("{name}: the queue pushed the e-mail"), 20, || {
        ding(server, ub).email == "new-mail@example.com"
    })
    .await;
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}

/// An app without the mobile permission: a re-push writes nothing, a pull inserts no user
/// without a phone and says why once; the person DingTalk has under a local user's phone is
/// linked when the push finds the mobile taken.
async fn hidden_mobiles(db: &TestDb, server: &SimServer, cfg: &Configs) {
    let name = db.name;
    server.sim.set_mobile_permission(APPKEY, false);
    server.sim.reset_calls();
    sync(&cfg.plain, "push", name).await;
    assert_eq!(server.sim.write_calls(APPKEY), 0, "{name}: re-push");
    console(
        server,
        "topapi/v2/user/create",
        json!({ "userid": "dingonly", "name": "只在钉钉", "mobile": "13911110001", "dept_id_list": "1" }),
    );
    console(
        server,
        "topapi/v2/user/create",
        json!({ "userid": "twin", "name": "孪生", "mobile": "13911110002", "dept_id_list": "1" }),
    );
    db.plain
        .execute("INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('twin-local', 'localtwin', '孪生', '13911110002', 1, 0)")
        .await
        .unwrap();
    let before = local_users(db).await;
    let pull = sync(&cfg.plain, "pull", name).await;
    assert_eq!(local_users(db).await, before, "{name}: nobody inserted");
    assert_eq!(
        pull.count("pull.mobile_hidden", ""),
        1,
        "{name}: {}",
        pull.stderr
    );
    assert!(
        pull.count("sync.entity.warning", "dingonly") == 1
            && pull.count("sync.entity.warning", "twin") >= 1,
        "{name}: each skipped user reported: {}",
        pull.stderr
    );
    let push = sync(&cfg.plain, "push", name).await;
    assert_eq!(
        push.count("sync.user.linked_by_mobile", "twin"),
        1,
        "{name}: {}",
        push.stderr
    );
    assert_eq!(
        db.store
            .link_of(0, "twin-local")
            .await
            .unwrap()
            .map(|l| l.userid),
        Some("twin".to_string()),
        "{name}"
    );
    assert!(!common::has_user(server, APPKEY, "localtwin"), "{name}");
    server.sim.reset_calls();
    sync(&cfg.plain, "push", name).await;
    assert_eq!(server.sim.write_calls(APPKEY), 0, "{name}: linked, in step");
    server.sim.set_mobile_permission(APPKEY, true);
}

async fn seed_sample(db: &TestDb) {
    db.store.init(true).await.unwrap();
    sample_rows(db).await;
}

async fn sample_rows(db: &TestDb) {
    for statement in [
        "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES \
         ('c1', '', '星河科技', 1, '1', 'A01', '0'), ('c1d1', 'c1', '研发部', 1, '2', 'A01A01', '0')",
        "INSERT INTO sys_user (id, username, realname, phone, email, work_no, status, del_flag) VALUES \
         ('u1', 'lihua', '李华', '13800000001', 'lihua@example.com', 'E001', 1, 0), \
         ('u2', 'zhaolei', '赵磊', '13800000003', 'zhaolei@example.com', NULL, 1, 0)",
        "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'c1d1'), ('m2', 'u2', 'c1')",
    ] {
        db.plain.execute(statement).await.unwrap();
    }
}

type LinkRow = (String, String, String, Option<String>, Option<String>, i64);
type SnapshotRow = (i64, String, String, String, String, i64);

/// Copies what a push of schema v4 leaves behind — `sys_third_account` rows,
/// `sys_depart.ding_identifier`, snapshots (hashes, no base) — from `from` into `to`.
async fn copy_links(from: &TestDb, to: &TestDb) {
    let links_sql = format!(
        "SELECT id, sys_user_id, third_user_id, third_user_uuid, realname, {} FROM sys_third_account",
        from.store.int("tenant_id")
    );
    let links: Vec<LinkRow> = from.plain.fetch_rows(&links_sql, &[]).await.unwrap();
    let depts: Vec<(String, Option<String>)> = from
        .plain
        .fetch_rows("SELECT id, ding_identifier FROM sys_depart", &[])
        .await
        .unwrap();
    let snapshots_sql = format!(
        "SELECT {}, entity, local_id, ding_id, content_hash, {} FROM dingsync_snapshot",
        from.store.int("tenant_id"),
        from.store.int("synced_at")
    );
    let snapshots: Vec<SnapshotRow> = from.plain.fetch_rows(&snapshots_sql, &[]).await.unwrap();
    assert!(!links.is_empty() && !snapshots.is_empty());
    let insert_link = to.store.sql(
        "INSERT INTO sys_third_account (id, sys_user_id, third_user_id, third_user_uuid, realname, tenant_id, status, del_flag, third_type) \
         VALUES (?, ?, ?, ?, ?, ?, 1, 0, 'dingtalk')",
    );
    let set_dept = to
        .store
        .sql("UPDATE sys_depart SET ding_identifier = ? WHERE id = ?");
    let insert_snapshot = to.store.sql(
        "INSERT INTO dingsync_snapshot (tenant_id, entity, local_id, ding_id, content_hash, synced_at) VALUES (?, ?, ?, ?, ?, ?)",
    );
    for l in &links {
        let args = [
            Arg::Text(&l.0),
            Arg::Text(&l.1),
            Arg::Text(&l.2),
            Arg::OptText(l.3.as_deref()),
            Arg::OptText(l.4.as_deref()),
            Arg::Int(l.5),
        ];
        to.plain.execute_with(&insert_link, &args).await.unwrap();
    }
    for (id, ding) in &depts {
        let args = [Arg::OptText(ding.as_deref()), Arg::Text(id)];
        to.plain.execute_with(&set_dept, &args).await.unwrap();
    }
    for s in &snapshots {
        let args = [
            Arg::Int(s.0),
            Arg::Text(&s.1),
            Arg::Text(&s.2),
            Arg::Text(&s.3),
            Arg::Text(&s.4),
            Arg::Int(s.5),
        ];
        to.plain
            .execute_with(&insert_snapshot, &args)
            .await
            .unwrap();
    }
}

/// A database of schema v4 with links and snapshots from a push: `dingsync init` takes it to
/// v5, and neither a push nor a pull then writes anything; the bases are filled from
/// DingTalk's values.
async fn upgrade_from_v4(pushed: TestDb, old: TestDb) {
    let name = pushed.name;
    let server = common::start_fast_sim().await;
    let new_cfg = configs(&pushed, &server);
    seed_sample(&pushed).await;
    sync(&new_cfg.plain, "push", name).await;
    old.store.init_to(true, 4).await.unwrap();
    assert_eq!(old.store.schema_version().await.unwrap(), 4);
    sample_rows(&old).await;
    copy_links(&pushed, &old).await;
    let cfg = configs(&old, &server);
    let init = dingsync(&cfg.plain, &["init"]).await;
    assert_eq!(init.code, Some(0), "{name}: {}{}", init.stdout, init.stderr);
    assert_eq!(
        old.store.schema_version().await.unwrap(),
        dingsync::store::schema::SCHEMA_VERSION,
        "{name}"
    );
    assert!(
        old.store
            .snapshots(0, "user")
            .await
            .unwrap()
            .iter()
            .all(|s| s.base.is_none()),
        "{name}: v4 snapshots have no base"
    );
    server.sim.reset_calls();
    let push = sync(&cfg.plain, "push", name).await;
    assert_eq!(
        server.sim.write_calls(APPKEY),
        0,
        "{name}: re-push after the upgrade: {}",
        push.stdout
    );
    let pull = sync(&cfg.plain, "pull", name).await;
    assert!(
        pull.stdout.contains("created 0, updated 0, deleted 0"),
        "{name}: {}",
        pull.stdout
    );
    for entity in ["user", "dept"] {
        let snapshots = old.store.snapshots(0, entity).await.unwrap();
        assert!(
            !snapshots.is_empty() && snapshots.iter().all(|s| s.base.is_some()),
            "{name}: every {entity} has its base after a run: {snapshots:?}"
        );
    }
    server.sim.reset_calls();
    sync(&cfg.plain, "push", name).await;
    assert_eq!(server.sim.write_calls(APPKEY), 0, "{name}");
}

#[tokio::test]
async fn an_upgrade_from_v4_writes_nothing() {
    upgrade_from_v4(common::sqlite_db().await, common::sqlite_db().await).await;
    if let (Some(a), Some(b)) = (common::postgres_db().await, common::postgres_db().await) {
        upgrade_from_v4(a, b).await;
    }
    if let (Some(a), Some(b)) = (common::mariadb_db().await, common::mariadb_db().await) {
        upgrade_from_v4(a, b).await;
    }
}

#[tokio::test]
async fn the_sync_base_on_sqlite() {
    let db = common::sqlite_db().await;
    seed_sample(&db).await;
    base_scenarios(db, "lihua", "zhaolei").await;
}

#[tokio::test]
async fn the_sync_base_on_postgres() {
    let Some(db) = common::postgres_db().await else {
        return;
    };
    seed_sample(&db).await;
    base_scenarios(db, "lihua", "zhaolei").await;
}

#[tokio::test]
async fn the_sync_base_on_mariadb_with_the_real_dump() {
    let Some(db) = common::loaded_mariadb().await else {
        return;
    };
    db.store.init(false).await.unwrap();
    base_scenarios(db, "zhangsan", "jeecg").await;
}
