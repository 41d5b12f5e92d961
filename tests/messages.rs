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

async fn flow(db: TestDb) {
    let name = db.name;
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
    common::eventually(&format!("{name}: users pushed"), 30, || {
        server.sim.app(APPKEY).unwrap().org.users.len() >= 253
    })
    .await;
    let store = db.store.clone();
    while store
        .links(0)
        .await
        .unwrap()
        .iter()
        .filter(|l| l.user_id.starts_with('m'))
        .count()
        < 253
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Three of them lose their link: they are named, not silently dropped.
    db.plain
        .execute("DELETE FROM sys_third_account WHERE sys_user_id IN ('m250', 'm251', 'm252')")
        .await
        .unwrap();

    // An announcement to everyone: one action card to all, dt_task_id set.
    db.plain.execute("INSERT INTO sys_announcement (id, titile, msg_content, msg_abstract, msg_type, send_status, del_flag, tenant_id) VALUES ('all1', '全员通知', '<p>正文</p>', '明天放假', 'ALL', '0', '0', 0)").await.unwrap();
    db.plain
        .execute("UPDATE sys_announcement SET send_status = '1' WHERE id = 'all1'")
        .await
        .unwrap();
    common::eventually(&format!("{name}: card to all"), 30, || {
        tasks(&server)
            .iter()
            .any(|t| t.msg["action_card"]["title"] == "全员通知")
    })
    .await;
    let card = tasks(&server)
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
    let mut task_id = None;
    for _ in 0..400 {
        task_id = scalar(
            &db,
            "SELECT dt_task_id FROM sys_announcement WHERE id = 'all1'",
        )
        .await;
        if task_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        task_id,
        Some(card.task_id.to_string()),
        "{name}: dt_task_id as JeecgBoot expects"
    );

    // To 250 linked + 3 unlinked users: 3 chunks, 250 recipients.
    let ids: Vec<String> = (0..253).map(|n| format!("m{n}")).collect();
    db.plain
        .execute(&format!("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, user_ids, send_status, del_flag, tenant_id) VALUES ('usr1', '部分通知', '请查收', 'USER', '{},', '1', '0', 0)", ids.join(",")))
        .await
        .unwrap();
    let chunked = || {
        tasks(&server)
            .into_iter()
            .filter(|t| t.msg["action_card"]["title"] == "部分通知")
            .collect::<Vec<_>>()
    };
    common::eventually(&format!("{name}: 3 chunks"), 30, || chunked().len() == 3).await;
    let mut sizes: Vec<usize> = chunked().iter().map(|t| t.delivered.len()).collect();
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
    let mut results = 0;
    for _ in 0..400 {
        results = store
            .deliveries(0, "announcement", "usr1")
            .await
            .unwrap()
            .iter()
            .filter(|d| d.result.is_some())
            .count();
        if results == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(results, 3, "{name}: send results recorded");

    // Revoke: every chunk recalled.
    db.plain
        .execute("UPDATE sys_announcement SET send_status = '2' WHERE id = 'usr1'")
        .await
        .unwrap();
    common::eventually(&format!("{name}: all chunks recalled"), 30, || {
        chunked().iter().all(|t| t.recalled)
    })
    .await;

    // Sent with faults on the way: retried, and no chunk twice.
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
    common::eventually(&format!("{name}: sent through faults"), 30, || {
        tasks(&server)
            .iter()
            .any(|t| t.msg["action_card"]["title"] == "故障通知")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let any duplicate show (there must be none)
    assert_eq!(
        tasks(&server)
            .iter()
            .filter(|t| t.msg["action_card"]["title"] == "故障通知")
            .count(),
        1,
        "{name}: no duplicate chunk"
    );

    // Revoked after 25 h: recall_expired, not a retry loop.
    db.plain.execute("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, user_ids, send_status, del_flag, tenant_id) VALUES ('old1', '旧通知', 'x', 'USER', 'm3,', '1', '0', 0)").await.unwrap();
    common::eventually(&format!("{name}: old sent"), 30, || {
        tasks(&server)
            .iter()
            .any(|t| t.msg["action_card"]["title"] == "旧通知")
    })
    .await;
    // DingTalk shows the task before the worker records it: wait for the delivery row too,
    // or the revoke below meets it still `sending`.
    let mut recorded = false;
    for _ in 0..400 {
        recorded = store.deliveries(0, "announcement", "old1").await.unwrap()[0].state == "sent";
        if recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(recorded, "{name}: old1's delivery recorded as sent");
    server.sim.advance_clock(Duration::from_secs(25 * 3600));
    server.sim.reset_calls();
    db.plain
        .execute("UPDATE sys_announcement SET send_status = '2' WHERE id = 'old1'")
        .await
        .unwrap();
    let mut state = String::new();
    for _ in 0..400 {
        state = store.deliveries(0, "announcement", "old1").await.unwrap()[0]
            .state
            .clone();
        if state != "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(state, "recall_expired", "{name}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recalls = server
        .sim
        .calls(APPKEY)
        .get("topapi/message/corpconversation/recall")
        .map_or(0, |c| c.calls);
    assert_eq!(recalls, 1, "{name}: tried once, not in a loop");

    // The outbox: one row per message type, and a bad row failed with its reason.
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
    let mut rows: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for _ in 0..800 {
        rows = db
            .plain
            .fetch_rows(
                "SELECT status, task_ids, error FROM dingsync_outbox ORDER BY id",
                &[],
            )
            .await
            .unwrap();
        if rows.iter().all(|(status, _, _)| status != "pending") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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

// Multi-threaded: the CLI runs as a blocking child process while the simulator serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_cli_send_status_recall() {
    let db = common::sqlite_db().await;
    db.store.init(true).await.unwrap();
    let server = common::start_sim(SimOptions::default()).await;
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dingsync.toml");
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
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", path.to_str().unwrap()]);
        std::process::Command::new(env!("CARGO_BIN_EXE_dingsync"))
            .args(&all)
            .env_remove("DINGSYNC_CONFIG")
            .output()
            .unwrap()
    };
    let sent = cli(&["message", "send", "--to", "alice", "--text", "测试消息"]);
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let task = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    let status = cli(&["message", "status", &task]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("unread 1: dt_a"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    assert_eq!(cli(&["message", "recall", &task]).status.code(), Some(0));
    assert!(server
        .sim
        .app(APPKEY)
        .unwrap()
        .notifications
        .tasks
        .values()
        .all(|t| t.recalled));
    // Limits are checked before any call, naming the limit.
    let calls = server
        .sim
        .calls(APPKEY)
        .values()
        .map(|c| c.calls)
        .sum::<u64>();
    let long = cli(&[
        "message",
        "send",
        "--all",
        "--action-card",
        "T",
        "M",
        "这个按钮的标题实在是太长了超过二十个字符了吧",
        "https://e.x",
    ]);
    assert_eq!(long.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&long.stderr)
            .contains("button title is 22 characters; DingTalk allows 20"),
        "{}",
        String::from_utf8_lossy(&long.stderr)
    );
    let big = cli(&["message", "send", "--all", "--text", &"字".repeat(1000)]);
    assert!(
        String::from_utf8_lossy(&big.stderr).contains("DingTalk allows 2048"),
        "{}",
        String::from_utf8_lossy(&big.stderr)
    );
    let unlinked = cli(&["message", "send", "--to", "nobody", "--text", "x"]);
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
