//! `dingsync run` as a process with `[metrics] listen = "127.0.0.1:0"`: after a push of
//! users, `/metrics` holds every metric family with plausible values, `/healthz` and
//! `/readyz` answer 200, and `/readyz` turns 503 with its reason once DingTalk refuses the
//! app's credentials. (The database side of `/readyz` is in `db_restart.rs`, the binary that
//! may stop the servers.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::process::{http_get, Daemon};
use common::APPKEY;

/// The samples of an exposition: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {samples:#?}"))
}

/// Waits (20 s at most) until `base`/metrics counts three users created and done and an
/// event stored; the text and its samples.
async fn counted(base: &str) -> (String, BTreeMap<String, f64>) {
    common::eventually(
        "jobs done, calls and events counted",
        std::time::Duration::from_secs(20),
        async || {
            let (status, text) = http_get(&format!("{base}/metrics")).await;
            assert_eq!(status, 200);
            let found = samples(&text);
            let count = |key: &str| found.get(key).copied().unwrap_or(0.0);
            let created = count(
                "dingsync_run_entities_total{tenant=\"0\",kind=\"user\",outcome=\"created\"}",
            );
            let stored = found.keys().any(|k| {
                k.starts_with(
                    "dingsync_events_total{tenant=\"0\",type=\"user_add_org\",outcome=\"stored\"",
                )
            });
            let done = count("dingsync_queue_jobs{tenant=\"0\",kind=\"user\",state=\"done\"}");
            if created >= 3.0 && done >= 3.0 && stored {
                Ok((text, found))
            } else {
                Err(text)
            }
        },
    )
    .await
}

/// Every family is there, with what three pushed users left: calls by route, latency
/// observed, lag, last success, ownership; no secret, mobile or name in a label.
fn every_family_says_what_happened(text: &str, found: &BTreeMap<String, f64>) {
    for name in dingsync::metrics::NAMES {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    assert_eq!(sample(found, "dingsync_up"), 1.0);
    assert_eq!(sample(found, "dingsync_database_up"), 1.0);
    assert_eq!(
        sample(
            found,
            "dingsync_dingtalk_calls_total{tenant=\"0\",route=\"topapi/v2/user/create\",outcome=\"ok\"}"
        ),
        3.0
    );
    // Lookups that find no one (getbymobile before a create) are answers, not failures.
    assert!(
        !text.contains("outcome=\"failed\""),
        "no call failed: {text}"
    );
    let observed = sample(found, "dingsync_change_to_dingtalk_seconds_count");
    let total = sample(found, "dingsync_change_to_dingtalk_seconds_sum");
    assert!(
        observed >= 3.0 && total / observed < 5.0,
        "3 pushes, each within seconds: {observed} observations, {total} s"
    );
    assert_eq!(sample(found, "dingsync_changelog_lag_rows"), 0.0);
    let pushed_at = sample(
        found,
        "dingsync_run_last_success_timestamp_seconds{tenant=\"0\",kind=\"push\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 300.0..=now + 1.0).contains(&pushed_at),
        "{pushed_at}"
    );
    assert_eq!(sample(found, "dingsync_tenant_owned{tenant=\"0\"}"), 1.0);
    assert!(sample(found, "dingsync_queue_oldest_pending_seconds{tenant=\"0\"}") >= 0.0);
    // No secret, mobile or name in any label.
    for secret in [common::APPSECRET, "13800000001", "用户1", "user1"] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
}

/// The AppSecret reset in DingTalk's console: the next job cannot get a token, and
/// `/readyz` says so (without the secret) while `/healthz` stays up.
async fn a_reset_secret_makes_it_unready(
    db: &common::TestDb,
    server: &dingsync::sim::SimServer,
    base: &str,
) {
    assert!(server.sim.reset_secret(APPKEY, "reset-by-an-admin"));
    db.plain
        .execute("UPDATE sys_user SET realname = '用户一' WHERE id = 'u1'")
        .await
        .unwrap();
    let body = common::eventually(
        "not ready, saying why",
        std::time::Duration::from_secs(30),
        async || {
            let (status, body) = http_get(&format!("{base}/readyz")).await;
            if status == 503 {
                Ok(body)
            } else {
                Err(format!("still {status}: {body}"))
            }
        },
    )
    .await;
    assert!(
        body.contains("tenant 0") && body.contains("40089"),
        "{body}"
    );
    assert!(!body.contains("reset-by-an-admin"), "{body}");
    assert_eq!(http_get(&format!("{base}/healthz")).await.0, 200);
    let after = samples(&http_get(&format!("{base}/metrics")).await.1);
    assert!(
        sample(
            &after,
            "dingsync_dingtalk_calls_total{tenant=\"0\",route=\"gettoken\",outcome=\"failed\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn metrics_and_probes_of_a_running_daemon() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    db.plain
        .execute("INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES ('c1', '', '星河科技', 1, '1', 'A01', '0')")
        .await
        .unwrap();
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    common::write_config(
        &path,
        &db.url,
        &server.url,
        1000,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[watch]\npoll_interval = \"100ms\"\n[queue]\nbackoff_base = \"100ms\"\nbackoff_cap = \"500ms\"\n",
    );
    // A push run before the daemon: its success is in the run table.
    let push = tokio::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
        .args(["sync", "push", "all", "--config", path.to_str().unwrap()])
        .env_remove("DINGSYNC_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(push.status.success(), "{push:?}");
    let mut daemon = Daemon::start(&path);
    daemon.wait_for("metrics.listening", 1).await;
    let base = format!("http://{}", daemon.metrics_address());
    daemon.wait_for("daemon.started", 1).await;

    db.plain
        .execute(&common::insert_users_sql(1..=3, |n| {
            [
                format!("u{n}"),
                format!("user{n}"),
                format!("用户{n}"),
                format!("1380000000{n}"),
            ]
        }))
        .await
        .unwrap();
    db.plain
        .execute("INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES ('m1', 'u1', 'c1'), ('m2', 'u2', 'c1'), ('m3', 'u3', 'c1')")
        .await
        .unwrap();
    common::holds("three users in DingTalk", 20, || {
        (1..=3).all(|n| common::has_user(&server, APPKEY, &format!("user{n}")))
    })
    .await;

    // Every family, with what happened: jobs done, calls by route, latency observed.
    let (text, found) = counted(&base).await;
    every_family_says_what_happened(&text, &found);

    assert_eq!(http_get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(http_get(&format!("{base}/readyz")).await.0, 200);

    a_reset_secret_makes_it_unready(&db, &server, &base).await;
    assert_eq!(daemon.stop().await, Some(0));
}
