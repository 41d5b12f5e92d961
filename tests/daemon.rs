//! The daemon in-process against the simulator, on SQLite, PostgreSQL and MariaDB: local
//! writes reach DingTalk by themselves, faults are retried, a permanent error goes dead and
//! `queue retry` recovers it, and shutdown drains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestDb, APPKEY};
use dingsync::config::Config;
use dingsync::daemon::{run, Reload};
use dingsync::sim::{FaultAction, FaultRule, SimOptions, SimServer};
use dingsync::store::queue::{state, Job, JobFilter};
use tokio_util::sync::CancellationToken;

/// The daemon under test: pushes, faults and the queue. DingTalk's events are off: a user
/// made in DingTalk's console would be pulled at once, racing the local rows a test writes
/// after it (tests/events.rs covers events).
fn config(db: &TestDb, server: &SimServer) -> Config {
    common::daemon_config(
        db,
        server,
        "[queue]\nworkers = 2\nmax_attempts = 3\nbackoff_base = \"50ms\"\nbackoff_cap = \"200ms\"\n[watch]\npoll_interval = \"100ms\"\n[push]\nmax_department_deletes = 1\n[events]\nmode = \"off\"\n",
    )
}

async fn seed(db: &TestDb) {
    db.store.init(true).await.unwrap();
    for statement in [
        "INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES \
         ('c1', '', '星河科技', 1, '1', 'A01', '0'), ('c1d1', 'c1', '研发部', 1, '2', 'A01A01', '0')",
        "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('u1', 'lihua', '李华', '13800000001', 1, 0)",
        "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'c1d1')",
    ] {
        db.plain.execute(statement).await.unwrap();
    }
}

fn user_depts(server: &SimServer, userid: &str) -> Option<Vec<String>> {
    let org = server.sim.app(APPKEY).unwrap().org;
    let user = org.users.get(userid)?;
    Some(
        user.dept_id_list
            .iter()
            .map(|d| org.depts[d].name.clone())
            .collect(),
    )
}

/// Polls (20 s at most) until at least `n` jobs are dead; returns the dead jobs.
async fn dead_jobs(store: &dingsync::store::Store, n: usize, name: &str) -> Vec<Job> {
    common::eventually(
        &format!("{name}: {n} dead jobs"),
        Duration::from_secs(20),
        async || {
            let all = store.list_jobs(&JobFilter::default()).await.unwrap();
            let dead: Vec<Job> = all
                .iter()
                // Pushes only: a scheduled pull's jobs are not this test's.
                .filter(|j| j.state == state::DEAD && (j.kind == "user" || j.kind == "dept"))
                .cloned()
                .collect();
            if dead.len() >= n {
                Ok(dead)
            } else {
                Err(format!("{} dead; jobs: {all:?}", dead.len()))
            }
        },
    )
    .await
}

/// Waits (20 s at most) until no job of `kind` is pending or running.
async fn settled(store: &dingsync::store::Store, kind: &str, name: &str) {
    common::eventually(
        &format!("{name}: {kind} jobs settled"),
        Duration::from_secs(20),
        async || {
            let all = store.list_jobs(&JobFilter::default()).await.unwrap();
            let busy: Vec<&Job> = all
                .iter()
                .filter(|j| {
                    j.kind == kind && [state::PENDING, state::RUNNING].contains(&j.state.as_str())
                })
                .collect();
            common::done_or(busy.is_empty(), busy)
        },
    )
    .await;
}

fn dept_names(server: &SimServer) -> Vec<String> {
    let org = server.sim.app(APPKEY).unwrap().org;
    org.depts.values().map(|d| d.name.clone()).collect()
}

/// A new user, a renamed department: each reaches DingTalk by itself.
async fn a_new_user_and_a_renamed_department_arrive(db: &TestDb, server: &SimServer) {
    let name = db.name;
    db.plain.execute("INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('u2', 'wangfang', '王芳', '13800000002', 1, 0)").await.unwrap();
    db.plain
        .execute("INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m2', 'u2', 'c1')")
        .await
        .unwrap();
    common::holds(&format!("{name}: wangfang created"), 20, || {
        user_depts(server, "wangfang") == Some(vec!["星河科技".into()])
    })
    .await;
    db.plain
        .execute("UPDATE sys_depart SET depart_name = '研发中心' WHERE id = 'c1d1'")
        .await
        .unwrap();
    common::holds(&format!("{name}: department renamed"), 20, || {
        user_depts(server, "lihua") == Some(vec!["研发中心".into()])
    })
    .await;
}

/// Transient faults are retried until the change lands.
async fn transient_faults_are_retried(db: &TestDb, server: &SimServer) {
    let name = db.name;
    server.sim.inject(FaultRule::next(
        "topapi/v2/user/update",
        6,
        FaultAction::Errcode {
            errcode: -1,
            sub_code: None,
        },
    ));
    db.plain
        .execute("UPDATE sys_user SET realname = '李华华' WHERE id = 'u1'")
        .await
        .unwrap();
    common::holds(&format!("{name}: rename after faults"), 20, || {
        server.sim.app(APPKEY).unwrap().org.users["lihua"].name == "李华华"
    })
    .await;
}

/// A permanent error goes dead with its reason; fixed, `queue retry` recovers it.
async fn a_permanent_error_goes_dead_and_queue_retry_recovers_it(db: &TestDb, server: &SimServer) {
    let name = db.name;
    server.sim.admin_call(APPKEY, "topapi/v2/user/create", serde_json::json!({ "userid": "other", "name": "O", "mobile": "13900000009", "email": "taken@example.com", "dept_id_list": "1" })).unwrap();
    db.plain.execute("INSERT INTO sys_user (id, username, realname, phone, email, status, del_flag) VALUES ('u3', 'zhaolei', '赵磊', '13800000003', 'taken@example.com', 1, 0)").await.unwrap();
    let store = db.store.clone();
    let dead = dead_jobs(&store, 1, name).await.remove(0);
    assert!(
        dead.last_error.as_deref().unwrap().contains("60106"),
        "{name}: {:?}",
        dead.last_error
    );
    assert_eq!(dead.attempts, 1, "{name}: permanent errors are not retried");
    server
        .sim
        .admin_call(
            APPKEY,
            "topapi/v2/user/update",
            serde_json::json!({ "userid": "other", "email": "free@example.com" }),
        )
        .unwrap();
    assert!(store.retry_dead(dead.id).await.unwrap());
    common::holds(&format!("{name}: zhaolei after queue retry"), 20, || {
        user_depts(server, "zhaolei").is_some()
    })
    .await;
}

/// A user deleted for good is deleted in DingTalk.
async fn a_deleted_user_is_deleted_in_dingtalk(db: &TestDb, server: &SimServer) {
    let name = db.name;
    db.plain
        .execute("DELETE FROM sys_user_depart WHERE user_id = 'u2'")
        .await
        .unwrap();
    db.plain
        .execute("DELETE FROM sys_user WHERE id = 'u2'")
        .await
        .unwrap();
    common::holds(&format!("{name}: wangfang deleted"), 20, || {
        user_depts(server, "wangfang").is_none()
    })
    .await;
}

/// A department deleted with its members' rows: its member keeps their other department,
/// and the department goes from DingTalk.
async fn a_deleted_department_goes_and_its_member_stays(db: &TestDb, server: &SimServer) {
    let name = db.name;
    db.plain.execute("INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES \
         ('c1d2', 'c1', '市场部', 2, '2', 'A01A02', '0'), ('c1d3', 'c1', '财务部', 3, '2', 'A01A03', '0')").await.unwrap();
    db.plain
        .execute("INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m3', 'u1', 'c1d2')")
        .await
        .unwrap();
    common::holds(&format!("{name}: lihua in two departments"), 20, || {
        user_depts(server, "lihua") == Some(vec!["研发中心".into(), "市场部".into()])
            && dept_names(server).contains(&"财务部".to_string())
    })
    .await;
    db.plain
        .execute("DELETE FROM sys_user_depart WHERE ID = 'm3'")
        .await
        .unwrap();
    db.plain
        .execute("DELETE FROM sys_depart WHERE id = 'c1d2'")
        .await
        .unwrap();
    common::holds(&format!("{name}: 市场部 deleted"), 20, || {
        !dept_names(server).contains(&"市场部".to_string())
            && user_depts(server, "lihua") == Some(vec!["研发中心".into()])
    })
    .await;
    // The guard counts the synced departments whose local row is gone: wait until 市场部's
    // job has also dropped its link (DingTalk's delete lands before the local commit).
    settled(&db.store, "dept", name).await;
}

/// Two at once, over push.max_department_deletes = 1: the guard refuses both jobs (dead,
/// with the count), and DingTalk keeps them.
async fn the_guard_refuses_two_deletes_at_once(db: &TestDb, server: &SimServer) {
    let name = db.name;
    db.plain
        .execute("DELETE FROM sys_depart WHERE id IN ('c1d1', 'c1d3')")
        .await
        .unwrap();
    let refused = dead_jobs(&db.store, 2, name).await;
    assert_eq!(refused.len(), 2, "{name}: {refused:?}");
    for job in &refused {
        let error = job.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains("deletion guard") && error.contains("2 DingTalk departments"),
            "{name}: {error}"
        );
    }
    let depts = dept_names(server);
    assert!(
        depts.contains(&"研发中心".to_string()) && depts.contains(&"财务部".to_string()),
        "{name}: {depts:?}"
    );
}

async fn daemon_converges(db: TestDb) {
    let name = db.name;
    seed(&db).await;
    let server = common::start_fast_sim().await;
    let config = config(&db, &server);
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));

    // The rows inserted before the daemon started are in the change log: they arrive.
    common::holds(&format!("{name}: lihua in 研发部"), 20, || {
        user_depts(&server, "lihua") == Some(vec!["研发部".into()])
    })
    .await;

    // A new user, a renamed department, a deleted user: each reaches DingTalk by itself.
    a_new_user_and_a_renamed_department_arrive(&db, &server).await;
    transient_faults_are_retried(&db, &server).await;
    a_permanent_error_goes_dead_and_queue_retry_recovers_it(&db, &server).await;
    a_deleted_user_is_deleted_in_dingtalk(&db, &server).await;
    a_deleted_department_goes_and_its_member_stays(&db, &server).await;
    the_guard_refuses_two_deletes_at_once(&db, &server).await;

    // Nothing left running; shutdown drains and returns.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), daemon)
        .await
        .expect("drained in time")
        .unwrap()
        .unwrap();
    let running = db
        .store
        .list_jobs(&JobFilter {
            state: Some(state::RUNNING.into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert!(running.is_empty(), "{name}: {running:?}");
    assert_eq!(
        db.store.lease_holder("tenant:0").await.unwrap(),
        None,
        "{name}: tenant lease released"
    );
}

#[tokio::test]
async fn daemon_on_sqlite() {
    daemon_converges(common::sqlite_db().await).await;
}

#[tokio::test]
async fn daemon_on_postgres() {
    let Some(db) = common::postgres_db().await else {
        return;
    };
    daemon_converges(db).await;
}

#[tokio::test]
async fn daemon_on_mariadb() {
    let Some(db) = common::mariadb_db().await else {
        return;
    };
    daemon_converges(db).await;
}

#[tokio::test]
async fn daemon_refuses_an_uninitialised_database() {
    let db = common::sqlite_db().await;
    let server = common::start_sim(SimOptions::default()).await;
    let config = config(&db, &server);
    let error = run(
        config.clone(),
        CancellationToken::new(),
        Reload::none(&config),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("dingsync init"), "{error}");
}

#[tokio::test]
async fn scheduled_pull_brings_console_changes_and_does_not_echo() {
    let db = common::sqlite_db().await;
    seed(&db).await;
    let server = common::start_fast_sim().await;
    let mut config = config(&db, &server);
    config.pull.cron = "*/1 * * * * *".into();
    // The scheduled pull alone (DingTalk's events are tests/events.rs's).
    config.events.mode = dingsync::config::EventsMode::Off;
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    common::holds("lihua pushed", 20, || {
        user_depts(&server, "lihua").is_some()
    })
    .await;
    server
        .sim
        .admin_call(APPKEY, "topapi/v2/user/create", serde_json::json!({ "userid": "console", "name": "控制台", "mobile": "13700000000", "dept_id_list": "1" }))
        .unwrap();
    let store = db.store.clone();
    common::eventually(
        "the scheduled pull brought the console's user",
        Duration::from_secs(10),
        async || {
            let users = store.load_users(0).await.unwrap();
            common::done_or(users.iter().any(|u| u.username == "console"), users.len())
        },
    )
    .await;
    // The pulled user is dingsync's own write: no job, no DingTalk write for it.
    server.sim.reset_calls();
    let pull_runs = async || -> i64 {
        store
            .fetch_value("SELECT COUNT(*) FROM dingsync_run WHERE kind = 'pull'", &[])
            .await
            .unwrap()
            .unwrap()
    };
    let runs_before = pull_runs().await;
    common::eventually("two more pulls", Duration::from_secs(20), async || {
        let runs_after = pull_runs().await;
        common::done_or(runs_after >= runs_before + 2, runs_after)
    })
    .await;
    assert_eq!(
        server.sim.write_calls(APPKEY),
        0,
        "{:?}",
        server.sim.calls(APPKEY)
    );
    assert!(store
        .list_jobs(&JobFilter::default())
        .await
        .unwrap()
        .iter()
        .all(|j| j.entity_key != "console"));
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_job_slower_than_its_lease_is_not_run_twice() {
    let db = common::sqlite_db().await;
    seed(&db).await;
    let server = common::start_fast_sim().await;
    let mut config = config(&db, &server);
    config.daemon.lease_ttl = Duration::from_millis(600);
    // Every user create takes three lease lifetimes.
    server.sim.inject(FaultRule::random(
        "topapi/v2/user/create",
        1.0,
        FaultAction::Delay { ms: 1800 },
    ));
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    common::holds("lihua created", 20, || {
        user_depts(&server, "lihua").is_some()
    })
    .await;
    // A reclaimed duplicate would be a job pending or running until its own run (and its
    // getbymobile) is over: wait until none is.
    settled(&db.store, "user", "lease").await;
    // Each run of the user's job asks getbymobile once: one run only.
    let runs = server.sim.calls(APPKEY)["topapi/v2/user/getbymobile"].calls;
    assert_eq!(runs, 1, "the lease was renewed while the job ran");
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}
