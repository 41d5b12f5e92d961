//! `dingsync run` as a process, as systemd runs it: SIGHUP and file edits reload the
//! configuration (an invalid edit is rejected and the old one keeps working; a tenant added
//! by an edit is worked at once), SIGTERM drains and exits 0, and a restart resumes from the
//! change-log cursor with nothing lost or done twice. Two processes on one PostgreSQL database share the work: each change is applied
//! once, each scheduled pull fires once, and when one is killed the other takes its tenant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestDb, APPKEY};
use dingsync::sim::SimServer;

use common::process::Daemon;

/// What [`reload_drain_and_restart`]'s daemon runs beside: the database, the simulator and
/// its configuration file.
struct Setting {
    db: TestDb,
    server: SimServer,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setting {
    /// Writes the configuration file with tenant 0 and `workers` queue workers.
    fn write_config(&self, workers: u32) {
        common::write_config(
            &self.path,
            &self.db.url,
            &self.server.url,
            1000,
            // Pushes only: an event arriving at the last stop would leave a pull job
            // pending, and the end of this test counts the queue (events: tests/events.rs).
            &format!("[queue]\nworkers = {workers}\n[events]\nmode = \"off\"\n"),
        )
    }

    /// Whether DingTalk (the test app) has user proc`n`.
    fn has(&self, n: u32) -> bool {
        common::has_user(&self.server, APPKEY, &format!("proc{n}"))
    }
}

/// The INSERT of the active user proc`n` (id p`n`).
fn insert(n: u32) -> String {
    format!("INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('p{n}', 'proc{n}', 'P{n}', '1330000000{n}', 1, 0)")
}

/// SIGHUP reloads; so does an edit of the file. An invalid edit is rejected with its
/// problems, and the old configuration keeps working.
async fn signals_and_edits_reload(s: &Setting, daemon: &Daemon) {
    daemon.signal("HUP");
    daemon.wait_for("config.reloaded", 1).await;
    s.write_config(3);
    daemon.wait_for("config.reloaded", 2).await;
    // An invalid edit is rejected with its problems, and the old configuration keeps working.
    std::fs::write(&s.path, "[queue]\nworkers = \"many\"\n").unwrap();
    daemon.wait_for("config.rejected", 1).await;
    assert!(daemon
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("config.rejected") && l.contains("queue.workers")));
    s.db.plain.execute(&insert(2)).await.unwrap();
    common::holds("proc2 with the old configuration", 20, || s.has(2)).await;
}

/// A tenant added by an edit is worked at once (its own DingTalk app); the next edit goes
/// back. (Tenant 0 owns every row and stands alone, so the edit swaps it for tenant 7.)
async fn a_tenant_added_by_an_edit_is_worked_at_once(s: &Setting, daemon: &Daemon) {
    let (db, server) = (&s.db, &s.server);
    server.sim.add_app("tenant7app", "tenant7secret", 7_000_007);
    std::fs::write(&s.path, format!("[database]\nurl = \"{}\"\n[dingtalk]\nbase_url = \"{}\"\nqps_per_api = 1000\n[queue]\nworkers = 2\n\
        [[tenant]]\nid = 7\nagent_id = 7000007\nclient_id = \"tenant7app\"\nclient_secret = \"tenant7secret\"\n", db.url, server.url)).unwrap();
    daemon.wait_for_with("config.reloaded", "[7]").await;
    db.plain.execute(&insert(9)).await.unwrap();
    db.plain
        .execute("INSERT INTO sys_user_tenant (id, user_id, tenant_id, status) VALUES ('t9', 'p9', 7, '1')")
        .await
        .unwrap();
    common::holds("proc9 in the added tenant's app", 20, || {
        common::has_user(server, "tenant7app", "proc9")
    })
    .await;
    let reloads = daemon.count("config.reloaded");
    s.write_config(2);
    daemon.wait_for("config.reloaded", reloads + 1).await;
}

/// SIGTERM in the middle of work drains and exits 0; what it did not finish is done after
/// the restart, with the changes made while it was down, from the cursor: nothing twice.
async fn a_drained_daemon_restarts_from_the_cursor(s: &Setting, mut daemon: Daemon) {
    let db = &s.db;
    for n in 4..9 {
        db.plain.execute(&insert(n)).await.unwrap();
    }
    assert_eq!(daemon.stop().await, Some(0));
    assert_eq!(daemon.count("shutdown.complete"), 1);

    // Changes made while it was down are picked up from the cursor; nothing is done twice.
    db.plain.execute(&insert(3)).await.unwrap();
    let restarted = Daemon::start(&s.path);
    common::holds("proc3..proc8 after restart", 20, || {
        (3..9).all(|n| s.has(n))
    })
    .await;
    let creates = s.server.sim.calls(APPKEY)["topapi/v2/user/create"];
    assert_eq!(
        (creates.calls, creates.failed),
        (8, 0),
        "each user created once (proc9 joined tenant 7 while tenant 0 was not configured: the reconcile brings it)"
    );
    let mut restarted = restarted;
    assert_eq!(restarted.stop().await, Some(0));
}

/// `dingsync <args> --config <path>`, blocking.
fn cli(path: &Path, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--config", path.to_str().unwrap()]);
    std::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
        .args(&all)
        .env_remove("DINGSYNC_CONFIG")
        .output()
        .unwrap()
}

/// The operator's view of the stopped daemon's database (config file `path`).
fn the_operators_view(path: &Path) {
    let status = cli(path, &["status", "--json"]);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["change_log"]["lag"], 0);
    assert_eq!(json["tenants"][0]["queue"]["dead"], 0);
    assert_eq!(
        json["tenants"][0]["owner"],
        serde_json::Value::Null,
        "leases released on shutdown"
    );
    let text = cli(path, &["status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("tenant 0 (file; push on, pull on): owner none; jobs pending 0"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let list = cli(path, &["queue", "list", "--dead", "--json"]);
    assert_eq!(list.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&list.stdout).unwrap(),
        serde_json::json!([])
    );
    assert_eq!(
        cli(path, &["queue", "retry", "424242"]).status.code(),
        Some(65)
    );
    assert_eq!(
        cli(path, &["queue", "drop", "424242"]).status.code(),
        Some(65)
    );
}

#[tokio::test]
async fn reload_drain_and_restart() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    let s = Setting {
        db,
        server,
        path,
        _dir: dir,
    };
    s.write_config(2);

    let daemon = Daemon::start(&s.path);
    daemon.wait_for("daemon.started", 1).await;
    s.db.plain.execute(&insert(1)).await.unwrap();
    common::holds("proc1", 20, || s.has(1)).await;

    // SIGHUP reloads; so does an edit of the file.
    signals_and_edits_reload(&s, &daemon).await;
    a_tenant_added_by_an_edit_is_worked_at_once(&s, &daemon).await;

    // SIGTERM in the middle of work drains and exits 0; what it did not finish is done after
    // the restart.
    a_drained_daemon_restarts_from_the_cursor(&s, daemon).await;

    // The operator's view.
    the_operators_view(&s.path);
}

#[tokio::test]
async fn two_processes_on_postgres_share_the_work_once() {
    let Some(db) = common::postgres_db().await else {
        return;
    };
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    // Both schedule a pull every second; each tick must fire once. A 2 s tenant lease.
    common::write_config(
        &path,
        &db.url,
        &server.url,
        1000,
        "[pull]\ncron = \"*/1 * * * * *\"\n[daemon]\nlease_ttl = \"2s\"\n",
    );
    let store = db.store.clone();
    let first = Daemon::start(&path);
    // The first owns the tenant before the second starts.
    first.wait_for("lease.acquired", 1).await;
    let second = Daemon::start(&path);
    second.wait_for("daemon.started", 1).await;
    let insert = common::insert_users_sql(0..20, |n| {
        [
            format!("x{n}"),
            format!("user{n}"),
            format!("用户{n}"),
            format!("1360000{n:04}"),
        ]
    });
    db.plain.execute(&insert).await.unwrap();
    common::holds("20 users created", 20, || {
        server.sim.app(APPKEY).unwrap().org.users.len() == 20
    })
    .await;
    let creates = server.sim.calls(APPKEY)["topapi/v2/user/create"];
    assert_eq!(
        (creates.calls, creates.failed),
        (20, 0),
        "every change applied exactly once"
    );
    assert_eq!(
        (
            first.count("lease.acquired"),
            second.count("lease.acquired")
        ),
        (1, 0),
        "one owner"
    );

    // The owner is killed (SIGKILL: no lease released); the other takes over within the
    // lease time and works the changes made meanwhile.
    let owner = store.lease_holder("tenant:0").await.unwrap().unwrap();
    let mut first = first;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    let killed = tokio::time::Instant::now();
    db.plain.execute("INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('late', 'late', '迟到', '13500000000', 1, 0)").await.unwrap();
    second.wait_for("lease.acquired", 1).await;
    let took = killed.elapsed();
    eprintln!("two processes: the survivor took the tenant {took:?} after the SIGKILL");
    assert!(took < Duration::from_secs(4), "taken over after {took:?}");
    common::holds("the survivor pushes the late user", 20, || {
        common::has_user(&server, APPKEY, "late")
    })
    .await;
    let holder = store.lease_holder("tenant:0").await.unwrap().unwrap();
    assert_ne!(owner, holder, "the survivor owns the tenant now");

    // Pull runs: a few, never two in one tick.
    let ticks = || async {
        let started: Vec<(i64,)> = store
            .fetch_rows(
                "SELECT started_at FROM dingsync_run WHERE kind = 'pull' ORDER BY started_at",
                &[],
            )
            .await
            .unwrap();
        started.into_iter().map(|(at,)| at).collect::<Vec<i64>>()
    };
    let started = common::eventually("four pull runs", Duration::from_secs(20), async || {
        let started = ticks().await;
        if started.len() >= 4 {
            Ok(started)
        } else {
            Err(format!("{started:?}"))
        }
    })
    .await;
    // Ticks are a second apart; a tick fired by both instances gives two runs a moment apart.
    // (Rounding start times to seconds failed on a loaded machine: a tick run 600 ms late
    // lands in the next tick's second.)
    for pair in started.windows(2) {
        assert!(pair[1] - pair[0] >= 250, "a tick fired twice: {started:?}");
    }
    let mut second = second;
    assert_eq!(second.stop().await, Some(0));
}
