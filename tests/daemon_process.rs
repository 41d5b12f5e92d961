//! `dingsync run` as a process, as systemd runs it: SIGHUP and file edits reload the
//! configuration (an invalid edit is rejected and the old one keeps working), SIGTERM drains
//! and exits 0, and a restart resumes from the change-log cursor with nothing lost or done
//! twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::APPKEY;

use common::process::Daemon;

#[tokio::test]
async fn reload_drain_and_restart() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_fast_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
    let write_config = |workers: u32| {
        std::fs::write(
            &path,
            common::config_text(
                &db.url,
                &server.url,
                1000,
                &format!("[queue]\nworkers = {workers}\n"),
            ),
        )
        .unwrap()
    };
    write_config(2);
    let insert = |n: u32| {
        format!("INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('p{n}', 'proc{n}', 'P{n}', '1330000000{n}', 1, 0)")
    };
    let has = |n: u32| {
        server
            .sim
            .app(APPKEY)
            .unwrap()
            .org
            .users
            .contains_key(&format!("proc{n}"))
    };

    let daemon = Daemon::start(&path);
    daemon.wait_for("daemon.started", 1).await;
    db.plain.execute(&insert(1)).await.unwrap();
    common::eventually("proc1", 20, || has(1)).await;

    // SIGHUP reloads; so does an edit of the file.
    daemon.signal("HUP");
    daemon.wait_for("config.reloaded", 1).await;
    write_config(3);
    daemon.wait_for("config.reloaded", 2).await;
    // An invalid edit is rejected with its problems, and the old configuration keeps working.
    std::fs::write(&path, "[queue]\nworkers = \"many\"\n").unwrap();
    daemon.wait_for("config.rejected", 1).await;
    assert!(daemon
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("config.rejected") && l.contains("queue.workers")));
    db.plain.execute(&insert(2)).await.unwrap();
    common::eventually("proc2 with the old configuration", 20, || has(2)).await;
    write_config(2);

    // SIGTERM in the middle of work drains and exits 0; what it did not finish is done after
    // the restart.
    for n in 4..9 {
        db.plain.execute(&insert(n)).await.unwrap();
    }
    let mut daemon = daemon;
    daemon.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), daemon.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(daemon.count("shutdown.complete"), 1);

    // Changes made while it was down are picked up from the cursor; nothing is done twice.
    db.plain.execute(&insert(3)).await.unwrap();
    let restarted = Daemon::start(&path);
    common::eventually("proc3..proc8 after restart", 20, || (3..9).all(has)).await;
    let creates = server.sim.calls(APPKEY)["topapi/v2/user/create"];
    assert_eq!(
        (creates.calls, creates.failed),
        (8, 0),
        "each user created once"
    );
    restarted.signal("TERM");
    let mut restarted = restarted;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), restarted.child.wait())
            .await
            .unwrap()
            .unwrap()
            .code(),
        Some(0)
    );

    // The operator's view.
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", path.to_str().unwrap()]);
        std::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args(&all)
            .env_remove("DINGSYNC_CONFIG")
            .output()
            .unwrap()
    };
    let status = cli(&["status", "--json"]);
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
    let text = cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("tenant 0: owner none; jobs pending 0"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let list = cli(&["queue", "list", "--dead", "--json"]);
    assert_eq!(list.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&list.stdout).unwrap(),
        serde_json::json!([])
    );
    assert_eq!(cli(&["queue", "retry", "424242"]).status.code(), Some(65));
    assert_eq!(cli(&["queue", "drop", "424242"]).status.code(), Some(65));
}
