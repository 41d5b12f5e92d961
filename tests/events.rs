//! DingTalk's address-book events over Stream mode, as an operator runs the daemon
//! (`dingsync run` as a process) against the simulator, on SQLite and PostgreSQL: a change made
//! in DingTalk's console is in JeecgBoot's tables within a second; removals delete nothing
//! locally; dingsync's own writes come back as events that write nothing; a dropped connection
//! is reopened; a duplicated event is applied once; a refused app and `events.mode = "off"`
//! leave the daemon pulling on its cron; two instances apply each event once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::Daemon;
use common::{TestDb, APPKEY};
use dingsync::sim::SimServer;
use serde_json::json;

/// Fast retries and polls: tests about events, not patience.
const DAEMON: &str = "[watch]\npoll_interval = \"100ms\"\n[queue]\nbackoff_base = \"50ms\"\nbackoff_cap = \"500ms\"\n";

struct Setup {
    db: TestDb,
    server: SimServer,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

/// The sample org pushed to the simulator (by `dingsync sync`), and a daemon configuration.
async fn setup(db: TestDb, extra: &str) -> Setup {
    db.store.init(true).await.unwrap();
    for statement in [
        "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES \
         ('c1', '', '星河科技', 1, '1', 'A01', '0'), ('c1d1', 'c1', '研发部', 1, '2', 'A01A01', '0')",
        "INSERT INTO sys_user (id, username, realname, phone, email, status, del_flag) VALUES \
         ('u1', 'lihua', '李华', '13800000001', 'lihua@example.com', 1, 0), \
         ('u2', 'zhaolei', '赵磊', '13800000003', NULL, 1, 0)",
        "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'c1d1'), ('m2', 'u2', 'c1')",
    ] {
        db.plain.execute(statement).await.unwrap();
    }
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dingsync.toml");
    common::write_config(
        &config,
        &db.url,
        &server.url,
        1000,
        &format!("{DAEMON}{extra}"),
    );
    let push = tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
        .args(["sync", "push", "all", "--config", config.to_str().unwrap()])
        .env_remove("DINGSYNC_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    Setup {
        db,
        server,
        _dir: dir,
        config,
    }
}

async fn scalar(db: &TestDb, sql: &str) -> Option<String> {
    db.plain.fetch_value::<String>(sql, &[]).await.unwrap()
}

/// Polls `sql` until it gives `want`, at most `seconds`; returns how long it took.
async fn until(db: &TestDb, sql: &str, want: &str, seconds: u64) -> Duration {
    let started = Instant::now();
    common::eventually(
        &format!("{}: {sql} gives {want:?}", db.name),
        Duration::from_secs(seconds),
        async || {
            let seen = scalar(db, sql).await;
            common::done_or(seen.as_deref() == Some(want), seen)
        },
    )
    .await;
    started.elapsed()
}

fn console(server: &SimServer, path: &str, body: serde_json::Value) -> serde_json::Value {
    server.sim.admin_call(APPKEY, path, body).unwrap()
}

async fn ding_of(db: &TestDb, dept: &str) -> i64 {
    scalar(
        db,
        &format!("SELECT ding_identifier FROM sys_depart WHERE id = '{dept}'"),
    )
    .await
    .unwrap()
    .parse()
    .unwrap()
}

/// Waits until the daemon has logged `job.done` for a pull of `key` `times` times, and
/// returns those lines.
async fn pulls_done(daemon: &Daemon, kind: &str, key: &str, times: usize) -> Vec<String> {
    let wanted = |l: &String| {
        l.contains("\"event\":\"job.done\"")
            && l.contains(&format!("\"job.kind\":\"{kind}\""))
            && l.contains(&format!("\"key\":\"{key}\""))
    };
    common::eventually(
        &format!("{times} job.done of {kind} {key}"),
        Duration::from_secs(20),
        async || {
            let lines: Vec<String> = daemon
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| wanted(l))
                .cloned()
                .collect();
            if lines.len() >= times {
                Ok(lines)
            } else {
                Err(format!("the daemon's log:\n{}", daemon.log()))
            }
        },
    )
    .await
}

/// Waits (10 s at most) until `dingsync status` shows the tenant's Stream connection with a
/// duplicate dropped, five events stored and a reconnect.
async fn status_shows_the_connection(config: &std::path::Path, name: &str) {
    let stream = common::eventually(
        &format!("{name}: status shows the connection"),
        Duration::from_secs(10),
        async || {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
                .args(["status", "--json", "--config", config.to_str().unwrap()])
                .env_remove("DINGSYNC_CONFIG")
                .output()
                .await
                .unwrap();
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let stream = status["tenants"][0]["events"]["stream"].clone();
            let shown = stream["connected"] == true && stream["deduplicated"].as_u64() >= Some(1);
            if shown {
                Ok(stream)
            } else {
                Err(stream.to_string())
            }
        },
    )
    .await;
    assert!(stream["stored"].as_u64().unwrap() >= 5, "{stream}");
    assert!(stream["reconnects"].as_u64().unwrap() >= 1, "{stream}");
}

/// A department renamed in the console is renamed locally; one created then removed there is
/// created locally, then kept and reported (a pull never deletes locally).
async fn console_departments_arrive(s: &Setup, daemon: &Daemon, rd: i64, name: &str) {
    let (db, server) = (&s.db, &s.server);
    console(
        server,
        "topapi/v2/department/update",
        json!({ "dept_id": rd, "name": "研发中心" }),
    );
    until(
        db,
        "SELECT depart_name FROM sys_depart WHERE id = 'c1d1'",
        "研发中心",
        10,
    )
    .await;

    // A department created then removed in the console: created locally, then kept and
    // reported (a pull never deletes locally).
    let temp = console(
        server,
        "topapi/v2/department/create",
        json!({ "name": "临时组", "parent_id": rd }),
    )["result"]["dept_id"]
        .as_i64()
        .unwrap();
    let local_temp =
        format!("SELECT id FROM sys_depart WHERE ding_identifier = '{temp}' AND del_flag = '0'");
    until(
        db,
        &format!("SELECT depart_name FROM sys_depart WHERE ding_identifier = '{temp}'"),
        "临时组",
        10,
    )
    .await;
    let temp_id = scalar(db, &local_temp).await.unwrap();
    console(
        server,
        "topapi/v2/department/delete",
        json!({ "dept_id": temp }),
    );
    daemon
        .wait_for_with("sync.entity.warning", "no longer has")
        .await;
    assert_eq!(
        scalar(db, &local_temp).await,
        Some(temp_id),
        "{name}: kept locally"
    );
}

/// A local edit: the daemon pushes it, DingTalk's event comes back, and its pull writes
/// nothing, locally or in DingTalk.
async fn a_local_edit_does_not_echo(s: &Setup, daemon: &Daemon, name: &str) {
    let (db, server) = (&s.db, &s.server);
    server.sim.reset_calls();
    let echoes = daemon.count("job.done");
    db.plain
        .execute("UPDATE sys_user SET realname = '李华华' WHERE id = 'u1'")
        .await
        .unwrap();
    let done = pulls_done(daemon, "pull_user", "lihua", 1).await;
    assert!(daemon.count("job.done") > echoes);
    assert_eq!(
        server.sim.app(APPKEY).unwrap().org.users["lihua"].name,
        "李华华"
    );
    for line in &done {
        assert!(
            line.contains("\"created\":0")
                && line.contains("\"updated\":0")
                && line.contains("\"deleted\":0"),
            "{name}: the echo wrote something: {line}"
        );
    }
    assert_eq!(
        server.sim.write_calls(APPKEY),
        1,
        "{name}: only the push's update: {:?}",
        server.sim.calls(APPKEY)
    );
}

async fn console_changes_arrive(db: TestDb) {
    let name = db.name;
    let s = setup(db, "").await;
    let (db, server) = (&s.db, &s.server);
    let mut daemon = Daemon::start(&s.config);
    daemon.wait_for("events.connected", 1).await;
    let rd = ding_of(db, "c1d1").await;

    // A user created in the console: in sys_user, linked, in its department, within 1 s.
    console(
        server,
        "topapi/v2/user/create",
        json!({ "userid": "wangwu", "name": "王五", "mobile": "13900000077", "dept_id_list": rd.to_string() }),
    );
    let took = until(
        db,
        "SELECT u.username FROM sys_user u JOIN sys_third_account t ON t.sys_user_id = u.id \
         JOIN sys_user_depart m ON m.user_id = u.id WHERE t.third_user_id = 'wangwu' AND m.dep_id = 'c1d1'",
        "wangwu",
        10,
    )
    .await;
    println!("{name}: console create -> sys_user with link and membership: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "{name}: took {took:?}, not within a second"
    );

    console_departments_arrive(&s, &daemon, rd, name).await;
    a_local_edit_does_not_echo(&s, &daemon, name).await;

    // The connection dropped: reopened, and the next console change still arrives.
    assert!(server.sim.stream_drop(APPKEY) >= 1);
    daemon.wait_for("events.connected", 2).await;
    console(
        server,
        "topapi/v2/user/update",
        json!({ "userid": "zhaolei", "name": "赵磊磊" }),
    );
    until(
        db,
        "SELECT realname FROM sys_user WHERE id = 'u2'",
        "赵磊磊",
        10,
    )
    .await;

    // An event delivered twice: one local row.
    assert!(server.sim.stream_duplicate(APPKEY, 1));
    console(
        server,
        "topapi/v2/user/create",
        json!({ "userid": "twice", "name": "两次", "mobile": "13900000078", "dept_id_list": rd.to_string() }),
    );
    until(
        db,
        "SELECT username FROM sys_user WHERE username = 'twice'",
        "twice",
        10,
    )
    .await;
    daemon.wait_for("events.duplicate", 1).await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sys_user WHERE username = 'twice'")
            .await,
        1,
        "{name}"
    );

    // `status` shows the connection and its counters.
    status_shows_the_connection(&s.config, name).await;
    assert_eq!(daemon.stop().await, Some(0));
}

#[tokio::test]
async fn console_changes_arrive_on_sqlite() {
    console_changes_arrive(common::sqlite_db().await).await;
}

#[tokio::test]
async fn console_changes_arrive_on_postgres() {
    let Some(db) = common::postgres_db().await else {
        return;
    };
    console_changes_arrive(db).await;
}

/// Stream refused for the app: `events.unavailable` once, and the cron pull still brings
/// DingTalk's changes. With `events.mode = "off"` no connection is even tried.
#[tokio::test]
async fn without_events_the_cron_pulls() {
    for (extra, refused) in [("", true), ("[events]\nmode = \"off\"\n", false)] {
        let s = setup(
            common::sqlite_db().await,
            &format!("{extra}[pull]\ncron = \"*/2 * * * * *\"\n"),
        )
        .await;
        let (db, server) = (&s.db, &s.server);
        server.sim.stream_refuse(APPKEY, refused);
        let mut daemon = Daemon::start(&s.config);
        daemon.wait_for("events.unavailable", 1).await;
        console(
            server,
            "topapi/v2/user/create",
            json!({ "userid": "cronuser", "name": "定时", "mobile": "13900000079", "dept_id_list": "1" }),
        );
        until(
            db,
            "SELECT username FROM sys_user WHERE username = 'cronuser'",
            "cronuser",
            15,
        )
        .await;
        let stats = server.sim.stream_stats(APPKEY).unwrap();
        assert_eq!(stats.connections_opened, 0, "{extra}: {stats:?}");
        if !refused {
            assert_eq!(stats.tickets_issued, 0, "mode off asks for no ticket");
        }
        assert_eq!(daemon.count("events.unavailable"), 1, "{extra}: said once");
        assert_eq!(daemon.stop().await, Some(0));
    }
}

/// Two instances on one PostgreSQL database: only the tenant's owner holds the connection,
/// each event is applied once, and when the owner is killed the other takes the tenant and
/// its connection.
#[tokio::test]
async fn two_instances_apply_each_event_once() {
    let Some(db) = common::postgres_db().await else {
        return;
    };
    let s = setup(db, "[daemon]\nlease_ttl = \"2s\"\n").await;
    let (db, server) = (&s.db, &s.server);
    let mut first = Daemon::start(&s.config);
    first.wait_for("events.connected", 1).await;
    let mut second = Daemon::start(&s.config);
    second.wait_for("daemon.started", 1).await;
    let rd = ding_of(db, "c1d1").await;
    for n in 0..20 {
        console(
            server,
            "topapi/v2/user/create",
            json!({ "userid": format!("pair{n}"), "name": format!("双{n}"), "mobile": format!("1370000{n:04}"), "dept_id_list": rd.to_string() }),
        );
    }
    until(
        db,
        "SELECT CAST(COUNT(*) AS TEXT) FROM sys_user WHERE username LIKE 'pair%'",
        "20",
        20,
    )
    .await;
    let created = |d: &Daemon| {
        d.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.contains("\"event\":\"job.done\"")
                    && l.contains("\"job.kind\":\"pull_user\"")
                    && l.contains("\"created\":1")
            })
            .count()
    };
    // The log line follows the commit: wait for the last one, then count.
    common::holds("20 users created by pull jobs", 20, || {
        created(&first) + created(&second) >= 20
    })
    .await;
    assert_eq!(
        created(&first) + created(&second),
        20,
        "each event applied once"
    );
    assert_eq!(
        server.sim.stream_stats(APPKEY).unwrap().live_connections,
        1,
        "only the owner connects"
    );
    assert_eq!(second.count("events.connected"), 0);
    // The owner dies: the other takes the tenant and its connection.
    first.child.start_kill().unwrap();
    let _ = first.child.wait().await;
    second.wait_for("events.connected", 1).await;
    console(
        server,
        "topapi/v2/user/create",
        json!({ "userid": "after", "name": "之后", "mobile": "13700009999", "dept_id_list": rd.to_string() }),
    );
    until(
        db,
        "SELECT username FROM sys_user WHERE username = 'after'",
        "after",
        20,
    )
    .await;
    assert_eq!(second.stop().await, Some(0));
}
