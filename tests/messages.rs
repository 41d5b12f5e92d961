//! Announcements and the outbox through the daemon, against the simulator: on SQLite and on
//! MariaDB with JeecgBoot's real dump.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestDb, APPKEY};
use dingsync::config::Config;
use dingsync::daemon::{run, Reload};
use dingsync::sim::{FaultAction, FaultRule, SimOptions, SimServer};
use dingsync::store::raw::Arg;
use tokio_util::sync::CancellationToken;

/// Log lines of this test binary (a global subscriber writing JSON into a buffer).
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: &'static std::sync::Mutex<Vec<u8>> =
            Box::leak(Box::new(std::sync::Mutex::new(Vec::new())));
        let writer = move || Sink(buffer);
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .try_init();
        buffer
    })
}

struct Sink(&'static std::sync::Mutex<Vec<u8>>);

impl std::io::Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config(db: &TestDb, server: &SimServer) -> Config {
    common::daemon_config(
        db,
        server,
        "[queue]\nworkers = 4\nbackoff_base = \"50ms\"\nbackoff_cap = \"200ms\"\n[watch]\npoll_interval = \"100ms\"\n\
         [announcement]\nbase_url = \"https://oa.example.com/jeecg-boot\"\n",
    )
}

fn tasks(server: &SimServer) -> Vec<dingsync::sim::messages::Task> {
    server
        .sim
        .app(APPKEY)
        .unwrap()
        .notifications
        .tasks
        .into_values()
        .collect()
}

async fn scalar(db: &TestDb, sql: &str) -> Option<String> {
    db.plain
        .fetch_value::<Option<String>>(sql, &[])
        .await
        .unwrap()
        .unwrap()
}

/// Waits (20 s at most) until no job is pending or running.
async fn no_job_in_flight(store: &dingsync::store::Store, name: &str) {
    common::eventually(
        &format!("{name}: no job pending or running"),
        Duration::from_secs(20),
        async || {
            let stats = store.queue_stats(0).await.unwrap();
            common::done_or(stats.pending == 0 && stats.running == 0, stats)
        },
    )
    .await;
}

/// Waits (10 s at most) until announcement `id`'s (first) delivery is in `state`.
async fn delivery_state_is(store: &dingsync::store::Store, id: &str, state: &str, name: &str) {
    common::eventually(
        &format!("{name}: {id}'s delivery {state}"),
        Duration::from_secs(10),
        async || {
            let deliveries = store.deliveries(0, "announcement", id).await.unwrap();
            common::done_or(deliveries[0].state == state, deliveries)
        },
    )
    .await;
}

/// Waits until the daemon pushed the 253 recipients and linked them; then three of them
/// lose their link.
async fn recipients_pushed_and_three_unlinked(db: &TestDb, server: &SimServer) {
    let name = db.name;
    common::holds(&format!("{name}: users pushed"), 30, || {
        server.sim.app(APPKEY).unwrap().org.users.len() >= 253
    })
    .await;
    let store = db.store.clone();
    common::eventually(
        &format!("{name}: 253 links"),
        Duration::from_secs(30),
        async || {
            let links = store.links(0).await.unwrap();
            let ours = links.iter().filter(|l| l.user_id.starts_with('m')).count();
            common::done_or(ours >= 253, ours)
        },
    )
    .await;
    // Three of them lose their link: they are named, not silently dropped.
    db.plain
        .execute("DELETE FROM sys_third_account WHERE sys_user_id IN ('m250', 'm251', 'm252')")
        .await
        .unwrap();
}

/// An announcement to everyone: one action card to all, dt_task_id set.
async fn an_announcement_to_all(db: &TestDb, server: &SimServer) {
    let name = db.name;
    db.plain.execute("INSERT INTO sys_announcement (id, titile, msg_content, msg_abstract, msg_type, send_status, del_flag, tenant_id) VALUES ('all1', '全员通知', '<p>正文</p>', '明天放假', 'ALL', '0', '0', 0)").await.unwrap();
    db.plain
        .execute("UPDATE sys_announcement SET send_status = '1' WHERE id = 'all1'")
        .await
        .unwrap();
    common::holds(&format!("{name}: card to all"), 30, || {
        tasks(server)
            .iter()
            .any(|t| t.msg["action_card"]["title"] == "全员通知")
    })
    .await;
    let card = tasks(server)
        .into_iter()
        .find(|t| t.msg["action_card"]["title"] == "全员通知")
        .unwrap();
    assert_eq!(
        card.msg["action_card"]["markdown"],
        "### 全员通知\n明天放假"
    );
    assert_eq!(
        card.msg["action_card"]["single_url"],
        "https://oa.example.com/jeecg-boot/sys/annountCement/show/all1"
    );
    let task_id = common::eventually(
        &format!("{name}: all1's task id recorded"),
        Duration::from_secs(10),
        async || {
            scalar(
                db,
                "SELECT dt_task_id FROM sys_announcement WHERE id = 'all1'",
            )
            .await
            .ok_or_else(|| "none yet".to_string())
        },
    )
    .await;
    assert_eq!(
        task_id,
        card.task_id.to_string(),
        "{name}: dt_task_id as JeecgBoot expects"
    );
}

/// The tasks of announcement usr1 (部分通知): its chunks.
fn chunks(server: &SimServer) -> Vec<dingsync::sim::messages::Task> {
    tasks(server)
        .into_iter()
        .filter(|t| t.msg["action_card"]["title"] == "部分通知")
        .collect::<Vec<_>>()
}

/// To 250 linked + 3 unlinked users: 3 chunks, 250 recipients; the unlinked are named in
/// the log (`logs`), and results are collected.
async fn an_announcement_to_users_in_chunks(
    db: &TestDb,
    server: &SimServer,
    logs: &std::sync::Mutex<Vec<u8>>,
) {
    let name = db.name;
    let ids: Vec<String> = (0..253).map(|n| format!("m{n}")).collect();
    db.plain
        .execute(&format!("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, user_ids, send_status, del_flag, tenant_id) VALUES ('usr1', '部分通知', '请查收', 'USER', '{},', '1', '0', 0)", ids.join(",")))
        .await
        .unwrap();
    common::holds(&format!("{name}: 3 chunks"), 30, || {
        chunks(server).len() == 3
    })
    .await;
    let mut sizes: Vec<usize> = chunks(server).iter().map(|t| t.delivered.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![50, 100, 100], "{name}");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let unlinked = text
        .lines()
        .find(|l| l.contains("announce.unlinked_recipients") && l.contains("usr1"))
        .expect("unlinked recipients logged");
    assert!(
        unlinked.contains("\"count\":3") && unlinked.contains("msg250,msg251,msg252"),
        "{name}: {unlinked}"
    );
    // Results are collected for chunks of ≤ 100 named recipients.
    let store = &db.store;
    common::eventually(
        &format!("{name}: send results recorded"),
        Duration::from_secs(10),
        async || {
            let deliveries = store.deliveries(0, "announcement", "usr1").await.unwrap();
            let results = deliveries.iter().filter(|d| d.result.is_some()).count();
            common::done_or(results == 3, deliveries)
        },
    )
    .await;
}

/// Revoke: every chunk recalled.
async fn a_revoke_recalls_every_chunk(db: &TestDb, server: &SimServer) {
    let name = db.name;
    db.plain
        .execute("UPDATE sys_announcement SET send_status = '2' WHERE id = 'usr1'")
        .await
        .unwrap();
    common::holds(&format!("{name}: all chunks recalled"), 30, || {
        chunks(server).iter().all(|t| t.recalled)
    })
    .await;
}

/// Sent with faults on the way: retried, and no chunk twice.
async fn faults_are_retried_and_no_chunk_is_sent_twice(db: &TestDb, server: &SimServer) {
    let name = db.name;
    server.sim.inject(FaultRule::next(
        "topapi/message/corpconversation/asyncsend_v2",
        2,
        FaultAction::Errcode {
            errcode: -1,
            sub_code: None,
        },
    ));
    server.sim.inject(FaultRule::next(
        "topapi/message/corpconversation/asyncsend_v2",
        1,
        FaultAction::Http { status: 502 },
    ));
    db.plain.execute("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, user_ids, send_status, del_flag, tenant_id) VALUES ('flt1', '故障通知', 'x', 'USER', 'm1,m2,', '1', '0', 0)").await.unwrap();
    common::holds(&format!("{name}: sent through faults"), 30, || {
        tasks(server)
            .iter()
            .any(|t| t.msg["action_card"]["title"] == "故障通知")
    })
    .await;
    // A duplicate chunk would be sent by a job still pending or running: none is left.
    no_job_in_flight(&db.store, name).await;
    assert_eq!(
        tasks(server)
            .iter()
            .filter(|t| t.msg["action_card"]["title"] == "故障通知")
            .count(),
        1,
        "{name}: no duplicate chunk"
    );
}

/// Revoked after 25 h: recall_expired, not a retry loop.
async fn a_revoke_after_25_hours_is_recall_expired(db: &TestDb, server: &SimServer) {
    let (name, store) = (db.name, &db.store);
    db.plain.execute("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, user_ids, send_status, del_flag, tenant_id) VALUES ('old1', '旧通知', 'x', 'USER', 'm3,', '1', '0', 0)").await.unwrap();
    common::holds(&format!("{name}: old sent"), 30, || {
        tasks(server)
            .iter()
            .any(|t| t.msg["action_card"]["title"] == "旧通知")
    })
    .await;
    // DingTalk shows the task before the worker records it: wait for the delivery row too,
    // or the revoke below meets it still `sending`.
    delivery_state_is(store, "old1", "sent", name).await;
    server.sim.advance_clock(Duration::from_secs(25 * 3600));
    server.sim.reset_calls();
    db.plain
        .execute("UPDATE sys_announcement SET send_status = '2' WHERE id = 'old1'")
        .await
        .unwrap();
    delivery_state_is(store, "old1", "recall_expired", name).await;
    // A loop would keep the revoke's job pending or running: none is left.
    no_job_in_flight(store, name).await;
    let recalls = server
        .sim
        .calls(APPKEY)
        .get("topapi/message/corpconversation/recall")
        .map_or(0, |c| c.calls);
    assert_eq!(recalls, 1, "{name}: tried once, not in a loop");
}

/// The outbox: one row per message type, and a bad row failed with its reason.
async fn the_outbox_sends_each_type_and_fails_a_bad_row(db: &TestDb) {
    let name = db.name;
    let messages = [
        r#"{"msgtype":"text","text":{"content":"outbox text"}}"#,
        r##"{"msgtype":"markdown","markdown":{"title":"T","text":"# outbox md"}}"##,
        r#"{"msgtype":"link","link":{"messageUrl":"https://e.x/1","picUrl":"@lADOpic","title":"outbox link","text":"t"}}"#,
        r#"{"msgtype":"oa","oa":{"message_url":"https://e.x/2","head":{"bgcolor":"FFBBBBBB","text":"h"},"body":{"title":"outbox oa"}}}"#,
        r#"{"msgtype":"action_card","action_card":{"title":"outbox card","markdown":"m","single_title":"看","single_url":"https://e.x/3"}}"#,
        r#"{"msgtype":"video","video":{}}"#,
    ];
    for (n, message) in messages.iter().enumerate() {
        let to = if n % 2 == 0 {
            "to_usernames"
        } else {
            "to_userids"
        };
        let who = if n % 2 == 0 { "msg5,msg6" } else { "msg7" };
        let sql = db.plain.sql(&format!("INSERT INTO dingsync_outbox (tenant_id, {to}, to_all, message, status) VALUES (0, ?, 0, ?, 'pending')")).into_owned();
        db.plain
            .execute_with(&sql, &[Arg::Text(who), Arg::Text(message)])
            .await
            .unwrap();
    }
    let rows: Vec<(String, Option<String>, Option<String>)> = common::eventually(
        &format!("{name}: every outbox row settled"),
        Duration::from_secs(20),
        async || {
            let rows: Vec<(String, Option<String>, Option<String>)> = db
                .plain
                .fetch_rows(
                    "SELECT status, task_ids, error FROM dingsync_outbox ORDER BY id",
                    &[],
                )
                .await
                .unwrap();
            if rows.iter().all(|(status, _, _)| status != "pending") {
                Ok(rows)
            } else {
                Err(format!("{rows:?}"))
            }
        },
    )
    .await;
    let statuses: Vec<&str> = rows.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        statuses,
        vec!["sent", "sent", "sent", "sent", "sent", "failed"],
        "{name}: {rows:?}"
    );
    assert!(
        rows[0].1.as_deref().is_some_and(|t| !t.is_empty()),
        "{name}: task ids written back"
    );
    assert!(
        rows[5].2.as_deref().unwrap().contains("msgtype"),
        "{name}: {:?}",
        rows[5]
    );
}

async fn flow(db: TestDb) {
    let logs = captured_logs();
    let recipients = common::insert_users_sql(0..253, |n| {
        [
            format!("m{n}"),
            format!("msg{n}"),
            format!("收件人{n}"),
            format!("1350001{n:04}"),
        ]
    });
    db.plain.execute(&recipients).await.unwrap();
    // Tokens live longer than the 25 simulated hours this test skips.
    let long_tokens = Duration::from_secs(10 * 24 * 3600);
    let server = common::start_sim(SimOptions {
        qps_per_path: 1000,
        token_ttl: long_tokens,
        ..SimOptions::default()
    })
    .await;
    let config = config(&db, &server);
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    recipients_pushed_and_three_unlinked(&db, &server).await;
    an_announcement_to_all(&db, &server).await;
    an_announcement_to_users_in_chunks(&db, &server, logs).await;
    a_revoke_recalls_every_chunk(&db, &server).await;
    faults_are_retried_and_no_chunk_is_sent_twice(&db, &server).await;
    a_revoke_after_25_hours_is_recall_expired(&db, &server).await;
    the_outbox_sends_each_type_and_fails_a_bad_row(&db).await;
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
}

#[tokio::test]
async fn announcements_and_outbox_on_sqlite() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    flow(db).await;
}

#[tokio::test]
async fn announcements_and_outbox_on_mariadb_real_dump() {
    let Some(db) = common::loaded_mariadb().await else {
        return;
    };
    db.store.init(false).await.unwrap();
    flow(db).await;
}

/// alice in the database linked to dt_a in DingTalk, and a configuration file for them in
/// `dir`: its path.
async fn alice_linked_to_dt_a(
    db: &TestDb,
    server: &SimServer,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    server.sim.admin_call(APPKEY, "topapi/v2/user/create", serde_json::json!({ "userid": "dt_a", "name": "A", "mobile": "13300000001", "dept_id_list": "1" })).unwrap();
    db.plain.execute("INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES ('a', 'alice', 'A', '13300000001', 1, 0)").await.unwrap();
    db.store
        .save_link(
            &dingsync::jeecg::Link {
                user_id: "a".into(),
                userid: "dt_a".into(),
                unionid: None,
                tenant_id: 0,
            },
            "A",
        )
        .await
        .unwrap();
    let path = dir.join("dingsync.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"{}\"\n[dingtalk]\nbase_url = \"{}\"\n[[tenant]]\nid = 0\nagent_id = {}\nclient_id = \"{APPKEY}\"\nclient_secret = \"{}\"\n",
            db.url,
            server.url,
            common::AGENT_ID,
            common::APPSECRET
        ),
    )
    .unwrap();
    path
}

/// `dingsync <args> --config <path>`, blocking.
fn cli(path: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--config", path.to_str().unwrap()]);
    std::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
        .args(&all)
        .env_remove("DINGSYNC_CONFIG")
        .output()
        .unwrap()
}

/// Limits are checked before any call, naming the limit; an unlinked recipient is refused.
fn limits_are_checked_before_any_call(path: &std::path::Path, server: &SimServer) {
    let calls = server
        .sim
        .calls(APPKEY)
        .values()
        .map(|c| c.calls)
        .sum::<u64>();
    let long = cli(
        path,
        &[
            "message",
            "send",
            "--all",
            "--action-card",
            "T",
            "M",
            "这个按钮的标题实在是太长了超过二十个字符了吧",
            "https://e.x",
        ],
    );
    assert_eq!(long.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&long.stderr)
            .contains("button title is 22 characters; DingTalk allows 20"),
        "{}",
        String::from_utf8_lossy(&long.stderr)
    );
    let big = cli(
        path,
        &["message", "send", "--all", "--text", &"字".repeat(1000)],
    );
    assert_eq!(big.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&big.stderr).contains("DingTalk allows 2048"),
        "{}",
        String::from_utf8_lossy(&big.stderr)
    );
    let unlinked = cli(path, &["message", "send", "--to", "nobody", "--text", "x"]);
    assert_eq!(unlinked.status.code(), Some(65));
    assert_eq!(
        server
            .sim
            .calls(APPKEY)
            .values()
            .map(|c| c.calls)
            .sum::<u64>(),
        calls,
        "no call for a refused message"
    );
}

// Multi-threaded: the CLI runs as a blocking child process while the simulator serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_cli_send_status_recall() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = alice_linked_to_dt_a(&db, &server, dir.path()).await;
    let sent = cli(
        &path,
        &["message", "send", "--to", "alice", "--text", "测试消息"],
    );
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let task = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    let status = cli(&path, &["message", "status", &task]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("unread 1: dt_a"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    assert_eq!(
        cli(&path, &["message", "recall", &task]).status.code(),
        Some(0)
    );
    let tasks = server.sim.app(APPKEY).unwrap().notifications.tasks;
    assert!(
        !tasks.is_empty() && tasks.values().all(|t| t.recalled),
        "the one task sent is recalled"
    );
    // Limits are checked before any call, naming the limit.
    limits_are_checked_before_any_call(&path, &server);
}
