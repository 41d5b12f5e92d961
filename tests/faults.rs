//! The crash-and-fault suite: a fault storm on the simulator converges with zero dead jobs;
//! `dingsync run` killed with SIGKILL at random moments during a push, restarted each time,
//! ends with DingTalk exactly as expected — nothing duplicated, nothing lost, nothing left
//! running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestDb, APPKEY};
use dingsync::daemon::{run, Reload};
use dingsync::sim::{FaultAction, FaultRule, SimOptions, SimServer};
use dingsync::store::queue::{state, JobFilter};
use tokio_util::sync::CancellationToken;

/// `users` users spread over `depts` departments (a tree two levels deep).
async fn org(db: &TestDb, users: usize, depts: usize) {
    db.store.init(true).await.unwrap();
    let tops = (depts / 10).max(1);
    let rows: Vec<String> = (0..depts)
        .map(|d| {
            let (parent, code) = if d < tops {
                (String::new(), format!("A{:02}", d + 1))
            } else {
                (
                    format!("d{}", (d - tops) % tops),
                    format!("A{:02}A{:02}", (d - tops) % tops + 1, (d - tops) / tops + 1),
                )
            };
            format!(
                "('d{d}', '{parent}', '部门{d}', {d}, '{}', '{code}', '0')",
                if parent.is_empty() { 1 } else { 2 }
            )
        })
        .collect();
    db.plain.execute(&format!("INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES {}", rows.join(","))).await.unwrap();
    for chunk in (0..users).collect::<Vec<_>>().chunks(500) {
        let people = common::insert_users_sql(chunk.iter().copied(), |u| {
            [
                format!("u{u}"),
                format!("user{u}"),
                format!("用户{u}"),
                format!("1390{u:07}"),
            ]
        });
        db.plain.execute(&people).await.unwrap();
        let members: Vec<String> = chunk
            .iter()
            .map(|u| format!("('m{u}', 'u{u}', 'd{}')", u % depts))
            .collect();
        db.plain
            .execute(&format!(
                "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES {}",
                members.join(",")
            ))
            .await
            .unwrap();
    }
}

/// Waits (`seconds` at most) until every job is done; fails at once on a dead one.
async fn settled_with_none_dead(store: &dingsync::store::Store, seconds: u64) {
    common::eventually("every job done", Duration::from_secs(seconds), async || {
        let jobs = store
            .list_jobs(&JobFilter {
                limit: Some(100_000),
                ..JobFilter::default()
            })
            .await
            .unwrap();
        let dead: Vec<_> = jobs.iter().filter(|j| j.state == state::DEAD).collect();
        assert!(dead.is_empty(), "dead jobs: {dead:?}");
        let open = jobs.iter().filter(|j| j.state != state::DONE).count();
        common::done_or(open == 0, format!("{open} jobs pending or running"))
    })
    .await;
}

fn converged(server: &SimServer, users: usize, depts: usize) -> bool {
    let org = server.sim.app(APPKEY).unwrap().org;
    org.users.len() == users && org.depts.len() == depts + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_storm_converges_with_no_dead_job() {
    let (users, depts) = (300, 30);
    let db = common::sqlite_db().await;
    org(&db, users, depts).await;
    let server = common::start_sim(SimOptions {
        qps_per_path: 100_000,
        ..SimOptions::default()
    })
    .await;
    for (probability, action) in [
        (
            0.10,
            FaultAction::Errcode {
                errcode: -1,
                sub_code: None,
            },
        ),
        (0.05, FaultAction::Http { status: 502 }),
        (0.02, FaultAction::Drop),
        (0.02, FaultAction::Html),
    ] {
        server
            .sim
            .inject(FaultRule::random("*", probability, action));
    }
    let extra = "[queue]\nworkers = 4\nbackoff_base = \"20ms\"\nbackoff_cap = \"300ms\"\n";
    let config = common::daemon_config(&db, &server, extra);
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    // Tokens invalidated every half second and bursts of 90018, while it works.
    let storm = {
        let sim = server.sim.clone();
        tokio::spawn(async move {
            for round in 0..40 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                sim.invalidate_tokens(None);
                if round % 4 == 0 {
                    sim.inject(FaultRule::next(
                        "*",
                        15,
                        FaultAction::Errcode {
                            errcode: 90018,
                            sub_code: None,
                        },
                    ));
                }
            }
        })
    };
    common::holds("the org in DingTalk despite the storm", 60, || {
        converged(&server, users, depts)
    })
    .await;
    storm.abort();
    server.sim.clear_faults();
    // Nothing dead, nothing pending or running once the queue settles.
    settled_with_none_dead(&db.store, 10).await;
    let calls = server.sim.calls(APPKEY);
    let faulted: u64 = calls.values().map(|c| c.faulted).sum();
    let throttled: u64 = calls.values().map(|c| c.throttled).sum();
    let total: u64 = calls.values().map(|c| c.calls).sum();
    println!("fault storm: {total} requests, {faulted} faulted, {throttled} throttled, {} users, {} departments, 0 dead jobs", users, depts);
    assert!(faulted > 20, "the storm happened: {faulted}");
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let (users, depts) = (2000, 200);
    let db = common::sqlite_db().await;
    org(&db, users, depts).await;
    let server = common::start_sim(SimOptions {
        qps_per_path: 400,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    common::write_config(&path, &db.url,
            &server.url,
            400,
            "[queue]\nworkers = 8\nbackoff_base = \"20ms\"\nbackoff_cap = \"300ms\"\n[daemon]\nlease_ttl = \"1s\"\n[log]\nlevel = \"warn\"\n");
    let start = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args(["run", "--config", path.to_str().unwrap()])
            .env_remove("DINGSYNC_CONFIG")
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut kills = 0;
    let mut seed = 0x2545_f491_u64;
    while kills < 10 && !converged(&server, users, depts) {
        let mut child = start();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(150 + seed % 400)).await;
        child.kill().await.unwrap(); // SIGKILL
        kills += 1;
    }
    let mut child = start();
    common::holds("the org after the kills", 120, || {
        converged(&server, users, depts)
    })
    .await;
    // Everything exactly once: no userid or department twice, every local one present.
    let org = server.sim.app(APPKEY).unwrap().org;
    let names: BTreeSet<String> = org
        .depts
        .values()
        .map(|d| format!("{}/{}", d.parent_id, d.name))
        .collect();
    assert_eq!(names.len(), depts + 1, "no department duplicated");
    let expected: BTreeSet<String> = (0..users).map(|u| format!("user{u}")).collect();
    assert_eq!(org.users.keys().cloned().collect::<BTreeSet<_>>(), expected);
    settled_with_none_dead(&db.store, 20).await;
    let creates = server.sim.calls(APPKEY)["topapi/v2/user/create"];
    println!("kill -9 x{kills}: {users} users / {depts} departments converged; user/create calls {} ({} answered 60102 after a lost answer)", creates.calls, creates.failed);
    child.kill().await.unwrap();
    assert_eq!(kills, 10, "killed ten times during the push");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_go_dead_with_reasons_and_the_rest_sync() {
    let db = common::sqlite_db().await;
    org(&db, 20, 2).await;
    let server = common::start_sim(SimOptions {
        qps_per_path: 100_000,
        ..SimOptions::default()
    })
    .await;
    // A DingTalk user already holds this mobile.
    server
        .sim
        .admin_call(APPKEY, "topapi/v2/user/create", serde_json::json!({ "userid": "taken", "name": "T", "mobile": "13800009999", "dept_id_list": "1" }))
        .unwrap();
    let long_name = "名".repeat(81);
    db.plain
        .execute(&format!(
            "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES \
             ('bad-mobile', 'badmobile', 'B', '12345', 1, 0), ('bad-name', 'badname', '{long_name}', '13800008888', 1, 0), \
             ('dup-phone', 'dupphone', 'D', '13800009999', 1, 0)"
        ))
        .await
        .unwrap();
    let config = common::daemon_config(
        &db,
        &server,
        "[queue]\nbackoff_base = \"20ms\"\nbackoff_cap = \"100ms\"\n",
    );
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    // The 20 good users arrive (the DingTalk user holding the mobile stays, matched by mobile).
    common::holds("the good users", 30, || {
        (0..20).all(|u| common::has_user(&server, APPKEY, &format!("user{u}")))
    })
    .await;
    let store = db.store.clone();
    let dead = common::eventually("two dead jobs", Duration::from_secs(20), async || {
        let dead = store
            .list_jobs(&JobFilter {
                state: Some(state::DEAD.into()),
                ..JobFilter::default()
            })
            .await
            .unwrap();
        if dead.len() >= 2 {
            Ok(dead)
        } else {
            Err(format!("{dead:?}"))
        }
    })
    .await;
    let reasons: std::collections::BTreeMap<String, String> = dead
        .iter()
        .map(|j| {
            (
                j.entity_key.clone(),
                j.last_error.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(reasons["bad-mobile"].contains("60103"), "{reasons:?}");
    assert!(
        reasons["bad-name"].contains("name is longer than 80"),
        "{reasons:?}"
    );
    assert!(
        dead.iter().all(|j| j.attempts == 1),
        "permanent errors are not retried: {dead:?}"
    );
    // dup-phone matched the DingTalk user by mobile (JeecgBoot's rule) and was linked to it.
    let links = store.links(0).await.unwrap();
    assert!(
        links
            .iter()
            .any(|l| l.user_id == "dup-phone" && l.userid == "taken"),
        "{links:?}"
    );
    // No orphan rows: no link for the failed ones, nothing half-created in DingTalk.
    assert!(!links
        .iter()
        .any(|l| l.user_id == "bad-mobile" || l.user_id == "bad-name"));
    let org = server.sim.app(APPKEY).unwrap().org;
    assert!(!org.users.contains_key("badmobile") && !org.users.contains_key("badname"));
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}
