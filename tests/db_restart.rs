//! The database restarted under a running daemon (PostgreSQL and MariaDB): `dingsync run` as
//! a process pushes 300 new users at 50 calls/s, the server is crashed (SIGKILL / immediate
//! shutdown) mid-run and started again; the daemon logs the outage, keeps its place (the
//! change-log cursor and the queue are in the database), and converges: every user created
//! exactly once, later changes pushed, no job dead or left running, the cursor at the end.
//! The fallback poll is set to an hour, so a change whose notification was lost with the
//! connection (PostgreSQL's LISTEN) must still be found without it.
//!
//! Its own test binary: it stops the servers that scripts/test started (through the control
//! script scripts/services.sh writes), and test binaries run one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::process::{http_get, Daemon};
use common::{TestDb, APPKEY};
use dingsync::sim::SimOptions;

const USERS: usize = 300;
const LATER: usize = 20;

/// The control script, or None (skipped) outside CI.
fn control() -> Option<String> {
    common::service_url("DINGSYNC_TEST_SERVICE_CTL", "the service control script")
}

fn ctl(script: &str, service: &str, action: &str) {
    let started = Instant::now();
    let status = std::process::Command::new(script)
        .args([service, action])
        .status()
        .unwrap();
    assert!(status.success(), "{script} {service} {action}: {status}");
    println!(
        "{service} {action}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A stopped server, started again at `end` or, should the test fail first, on drop (the
/// other test binaries need it).
struct Outage<'a> {
    script: &'a str,
    service: &'a str,
    down: bool,
}

impl<'a> Outage<'a> {
    fn begin(script: &'a str, service: &'a str) -> Self {
        ctl(script, service, "stop");
        Self {
            script,
            service,
            down: true,
        }
    }

    fn end(&mut self) {
        if std::mem::take(&mut self.down) {
            ctl(self.script, self.service, "start");
        }
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

fn insert_users(from: usize, to: usize) -> String {
    common::insert_users_sql(from..to, |n| {
        [
            format!("r{n}"),
            format!("restart{n}"),
            format!("重启{n}"),
            format!("135{n:08}"),
        ]
    })
}

/// The database may still be refusing connections for a moment after the restart script
/// returns (MariaDB's crash recovery); a write is retried for up to 30 s.
async fn execute_retrying(db: &TestDb, sql: &str) {
    common::eventually(
        "the database back and accepting a write",
        Duration::from_secs(30),
        async || {
            db.plain
                .execute(sql)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;
}

async fn restart_mid_run(db: TestDb, service: &str, script: &str) {
    db.store.init(true).await.unwrap();
    let server = common::start_sim(SimOptions {
        qps_per_path: 50,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    common::write_config(&path, &db.url,
            &server.url,
            50,
            "[queue]\nworkers = 4\n[daemon]\nlease_ttl = \"3s\"\n[watch]\npoll_interval = \"200ms\"\nfallback_poll = \"3600s\"\n");
    db.plain.execute(&insert_users(0, USERS)).await.unwrap();
    let users = || server.sim.app(APPKEY).unwrap().org.users.len();

    let mut daemon = Daemon::start(&path);
    daemon.wait_for("daemon.started", 1).await;
    common::holds("the push under way", 30, || users() >= 30).await;
    let at_crash = users();
    let mut outage = Outage::begin(script, service);
    let down = Instant::now();
    // The outage is logged once, then the server comes back and that is logged too.
    daemon.wait_for("store.unavailable", 1).await;
    outage.end();
    let outage = down.elapsed();
    execute_retrying(&db, &insert_users(USERS, USERS + LATER)).await;
    daemon.wait_for("store.available", 1).await;
    let back = Instant::now();
    common::holds(
        &format!("{service}: all {} users in DingTalk", USERS + LATER),
        60,
        || users() == USERS + LATER,
    )
    .await;
    let converged = back.elapsed();
    // A connection that died with the old server can still fail once after the first
    // success; every outage logged has its end logged.
    assert_eq!(
        daemon.count("store.available"),
        daemon.count("store.unavailable"),
        "{service}: each store.unavailable ends with store.available"
    );
    // Idle: nothing pending, running or dead.
    let stats = common::eventually(
        &format!("{service}: queue idle"),
        Duration::from_secs(30),
        async || {
            let stats = db.store.queue_stats(0).await.unwrap();
            if stats.pending == 0 && stats.running == 0 {
                Ok(stats)
            } else {
                Err(format!("{stats:?}"))
            }
        },
    )
    .await;
    assert_eq!(stats.dead, 0, "{service}: no dead jobs");
    let last: i64 = db
        .store
        .fetch_value("SELECT MAX(id) FROM dingsync_change", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        db.store.change_cursor().await.unwrap(),
        last,
        "{service}: cursor at the last change"
    );
    let creates = server.sim.calls(APPKEY)["topapi/v2/user/create"];
    // A create whose answer was lost in the outage is sent again and meets 60102 (then it
    // is an update); DingTalk holds each user once either way.
    assert_eq!(
        creates.ok as usize,
        USERS + LATER,
        "{service}: each user created once"
    );
    assert_eq!(
        db.store.links(0).await.unwrap().len(),
        USERS + LATER,
        "{service}: one link per user"
    );
    let failures = daemon.count("changes.read_failed")
        + daemon.count("job.claim_failed")
        + daemon.count("job.retry");
    println!(
        "{service}: crashed with {at_crash}/{USERS} users pushed; down {:.1} s; {failures} failed reads/claims/jobs logged; converged {:.1} s after store.available; {} creates ({} refused as existing), 0 dead",
        outage.as_secs_f64(),
        converged.as_secs_f64(),
        creates.calls,
        creates.failed
    );
    assert_eq!(
        daemon.stop().await,
        Some(0),
        "{service}: clean exit after the outage"
    );
}

#[tokio::test]
async fn postgres_restarted_mid_run() {
    let Some(script) = control() else { return };
    let Some(db) = common::postgres_db().await else {
        return;
    };
    restart_mid_run(db, "postgres", &script).await;
}

#[tokio::test]
async fn mariadb_restarted_mid_run() {
    let Some(script) = control() else { return };
    let Some(db) = common::mariadb_db().await else {
        return;
    };
    restart_mid_run(db, "mariadb", &script).await;
}

/// DingTalk's events while PostgreSQL is down: the daemon cannot store them, so it answers
/// `LATER` (never `SUCCESS`); DingTalk delivers them again, and once the database is back
/// the change is applied, once.
#[tokio::test]
async fn events_while_postgres_is_down() {
    let Some(script) = control() else { return };
    let Some(db) = common::postgres_db().await else {
        return;
    };
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    common::write_config(
        &path,
        &db.url,
        &server.url,
        1000,
        "[daemon]\nlease_ttl = \"3s\"\n[watch]\npoll_interval = \"200ms\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut daemon = Daemon::start(&path);
    daemon.wait_for("events.connected", 1).await;
    let readyz = format!("http://{}/readyz", daemon.metrics_address());
    common::eventually("ready", Duration::from_secs(20), async || {
        let (status, body) = http_get(&readyz).await;
        common::done_or(status == 200, (status, body))
    })
    .await;
    let mut outage = Outage::begin(&script, "postgres");
    // Not ready while the database is down, and says why.
    let (status, reason) = http_get(&readyz).await;
    assert!(
        status == 503 && reason.contains("database"),
        "{status}: {reason}"
    );
    server
        .sim
        .admin_call(
            APPKEY,
            "topapi/v2/user/create",
            serde_json::json!({ "userid": "downuser", "name": "停机", "mobile": "13900000088", "dept_id_list": "1" }),
        )
        .unwrap();
    daemon.wait_for("events.later", 1).await;
    let stats = server.sim.stream_stats(APPKEY).unwrap();
    assert_eq!(
        stats.acked, 0,
        "nothing acked SUCCESS while down: {stats:?}"
    );
    outage.end();
    common::eventually(
        "the event applied after the database came back",
        Duration::from_secs(60),
        async || {
            let found = db
                .plain
                .execute("SELECT 1 FROM sys_user WHERE username = 'downuser'")
                .await;
            let rows: i64 = match found {
                Ok(_) => db
                    .plain
                    .fetch_value::<i64>(
                        "SELECT COUNT(*) FROM sys_user WHERE username = 'downuser'",
                        &[],
                    )
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0),
                Err(_) => 0,
            };
            assert!(rows <= 1, "one local row");
            common::done_or(rows == 1, rows)
        },
    )
    .await;
    let stats = server.sim.stream_stats(APPKEY).unwrap();
    assert!(stats.redelivered >= 1 && stats.acked >= 1, "{stats:?}");
    assert_eq!(http_get(&readyz).await.0, 200, "ready again");
    println!(
        "postgres down: {} LATER answers, {} redeliveries, then applied",
        stats.later, stats.redelivered
    );
    assert_eq!(daemon.stop().await, Some(0));
}
