//! `dingsync demo`: the whole product in one command, nothing to configure — a SQLite
//! database with JeecgBoot's tables and a sample organisation (written for the project), the
//! DingTalk simulator in-process, and the daemon running; then a first push, a local edit, a
//! change made "in DingTalk" pulled back, an announcement sent and recalled, and the status.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{load_str, Config, LoadOptions};
use crate::daemon::{run, Reload};
use crate::exit;
use crate::sim::{SimOptions, SimServer, Simulator};
use crate::store::Store;
use crate::sync::model::{Direction, Scope};
use crate::sync::run::{run_once, RunLease, RunRequest};

const APPKEY: &str = "dingdemo";
const APPSECRET: &str = "demo-secret";
const AGENT_ID: i64 = 4_000_001;

fn step(n: u32, text: &str) {
    println!("\n[{n}/6] {text}");
}

async fn wait_until(what: &str, check: impl Fn() -> bool) -> Result<Duration, String> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed())
}

/// Runs the demo; with `keep`, leaves everything running until Ctrl-C.
pub async fn demo(keep: bool) -> u8 {
    match scenario(keep).await {
        Ok(()) => exit::OK,
        Err(problem) => {
            eprintln!("dingsync demo: {problem}");
            exit::UNAVAILABLE
        }
    }
}

/// What the demo runs on: a temporary directory with the SQLite JeecgBoot database and the
/// configuration, the simulator, and the database as dingsync and as "JeecgBoot".
struct Demo {
    dir: tempfile::TempDir,
    server: SimServer,
    config: Config,
    /// Connected as dingsync.
    store: Store,
    /// Connected as JeecgBoot: its writes are logged by the triggers.
    plain: Store,
}

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

async fn scenario(keep: bool) -> Result<(), String> {
    let demo = Demo::start().await?;
    demo.schema_and_sample().await?;
    let shutdown = CancellationToken::new();
    let config = demo.config.clone();
    let daemon = tokio::spawn(run(config.clone(), shutdown.clone(), Reload::none(&config)));
    demo.first_push().await?;
    demo.local_edit().await?;
    demo.console_change_pulled().await?;
    demo.announcement().await?;
    demo.status().await?;
    if keep {
        demo.keep_running().await;
    }
    shutdown.cancel();
    daemon.await.map_err(text)?.map_err(text)?;
    demo.store.close().await;
    demo.plain.close().await;
    demo.server.stop().await;
    println!("\ndone.");
    Ok(())
}

impl Demo {
    /// The simulator, the configuration file and both connections.
    async fn start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("dingsync-demo")
            .tempdir()
            .map_err(text)?;
        let sim = Simulator::new(SimOptions::default());
        sim.add_app(APPKEY, APPSECRET, AGENT_ID);
        let server = SimServer::start(sim, "127.0.0.1:0").await.map_err(text)?;
        let db_path = dir.path().join("jeecg.db");
        let config_text = format!(
            "[database]\nurl = \"sqlite:{}\"\n[dingtalk]\nbase_url = \"{}\"\n[[tenant]]\nid = 0\nagent_id = {AGENT_ID}\nclient_id = \"{APPKEY}\"\n\
             client_secret = \"{APPSECRET}\"\n[announcement]\nbase_url = \"http://localhost:8080/jeecg-boot\"\n[log]\nlevel = \"warn\"\n",
            db_path.display(),
            server.url
        );
        let config_path = dir.path().join("dingsync.toml");
        std::fs::write(&config_path, &config_text).map_err(text)?;
        let config: Config = load_str(&config_text, &config_path, &LoadOptions::default())
            .map_err(text)?
            .config;
        println!(
            "dingsync demo: JeecgBoot database {} and a DingTalk simulator at {}",
            db_path.display(),
            server.url
        );
        let store = Store::connect(&config.database).await.map_err(text)?;
        let plain = Store::connect_url(&config.database.url, 2, false)
            .await
            .map_err(text)?;
        Ok(Self {
            dir,
            server,
            config,
            store,
            plain,
        })
    }

    fn org(&self) -> crate::sim::org::Org {
        self.server
            .sim
            .app(APPKEY)
            .map(|a| a.org)
            .unwrap_or_default()
    }

    /// Step 1: JeecgBoot's tables, dingsync's, and the sample organisation.
    async fn schema_and_sample(&self) -> Result<(), String> {
        step(
            1,
            "JeecgBoot's tables, dingsync's tables and triggers, a sample organisation",
        );
        let report = self.store.init(true).await.map_err(text)?;
        self.plain.load_sample_org().await.map_err(text)?;
        println!("      {} JeecgBoot tables, dingsync schema version {}; 8 departments (1 post), 7 users (1 deleted)", report.jeecg_tables_created, report.to_version);
        Ok(())
    }

    /// Step 2: the daemon (started by the caller) pushes the organisation by itself.
    async fn first_push(&self) -> Result<(), String> {
        step(2, "the daemon starts and pushes the organisation by itself");
        let took = wait_until("the first push", || {
            let org = self.org();
            org.users.len() == 6 && org.depts.len() == 8
        })
        .await?;
        let writes = self.server.sim.write_calls(APPKEY);
        println!("      in {} ms: DingTalk has 7 departments (+ root) and 6 users; {writes} write calls; the post and the deleted user stayed local", took.as_millis());
        Ok(())
    }

    /// Step 3: a local edit reaches DingTalk.
    async fn local_edit(&self) -> Result<(), String> {
        step(3, "a local edit reaches DingTalk within a second");
        self.plain
            .execute("UPDATE sys_user SET realname = '李华(研发)' WHERE id = 'u-li'")
            .await
            .map_err(text)?;
        let took = wait_until("the rename", || {
            self.org()
                .users
                .get("lihua")
                .is_some_and(|u| u.name == "李华(研发)")
        })
        .await?;
        println!(
            "      sys_user.realname of lihua changed -> DingTalk name updated {} ms later",
            took.as_millis()
        );
        Ok(())
    }

    /// Step 4: a user created in DingTalk's console, pulled by a run of the tenant.
    async fn console_change_pulled(&self) -> Result<(), String> {
        step(4, "a change made in DingTalk's console is pulled back");
        let market = self
            .org()
            .depts
            .values()
            .find(|d| d.name == "市场部")
            .map(|d| d.dept_id)
            .ok_or("no 市场部")?;
        self.server
            .sim
            .admin_call(
                APPKEY,
                "topapi/v2/user/create",
                serde_json::json!({ "userid": "dt_newbie", "name": "新同事", "mobile": "13700000001", "dept_id_list": market.to_string() }),
            )
            .map_err(|e| format!("{}: {}", e.errcode, e.errmsg))?;
        let summary = self.pull().await?;
        let pulled = self
            .store
            .load_users(0)
            .await
            .map_err(text)?
            .into_iter()
            .find(|u| u.username == "dt_newbie")
            .ok_or("not pulled")?;
        println!("      pull: created {}, updated {}; local user {} ({}) in 市场部, password 123456 hashed as JeecgBoot does", summary.created, summary.updated, pulled.username, pulled.realname);
        Ok(())
    }

    /// A pull of tenant 0, under its run lease (the daemon's scheduled runs take it too).
    async fn pull(&self) -> Result<crate::sync::model::Summary, String> {
        let tenant = &self.config.tenants[0];
        let client =
            crate::dingtalk::DingTalkClient::for_tenant(&self.config, tenant).map_err(text)?;
        let request = RunRequest {
            direction: Direction::Pull,
            scope: Scope::All,
            dry_run: false,
        };
        let ttl = self.config.daemon.lease_ttl;
        let lease = RunLease::take_within(&self.store, tenant.id, "pull:demo", ttl, ttl * 2)
            .await
            .map_err(text)?
            .ok_or("the daemon's scheduled run did not end")?;
        let ctx = crate::sync::run::RunCtx {
            store: &self.store,
            client: &client,
            config: &self.config,
            tenant,
        };
        let summary = run_once(&ctx, request, None).await.map_err(text);
        lease.release().await;
        summary
    }

    /// Step 5: an announcement sent to DingTalk, then recalled.
    async fn announcement(&self) -> Result<(), String> {
        step(
            5,
            "an announcement (系统通告) sent to DingTalk, then recalled",
        );
        self.plain
            .execute("INSERT INTO sys_announcement (id, titile, msg_abstract, msg_type, user_ids, send_status, del_flag, tenant_id) VALUES ('ann-1', '周五团建', '下午三点出发', 'USER', 'u-li,u-wang,u-chen,', '1', '0', 0)")
            .await
            .map_err(text)?;
        let tasks = || {
            self.server
                .sim
                .app(APPKEY)
                .map(|a| a.notifications.tasks.into_values().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let sent = |t: &&crate::sim::messages::Task| t.msg["action_card"]["title"] == "周五团建";
        wait_until("the announcement", || tasks().iter().any(|t| sent(&t))).await?;
        let task = tasks().into_iter().find(|t| sent(&t)).ok_or("no task")?;
        println!(
            "      action card \"周五团建\" delivered to {} users (task {})",
            task.delivered.len(),
            task.task_id
        );
        self.plain
            .execute("UPDATE sys_announcement SET send_status = '2' WHERE id = 'ann-1'")
            .await
            .map_err(text)?;
        wait_until("the recall", || {
            tasks()
                .iter()
                .any(|t| t.task_id == task.task_id && t.recalled)
        })
        .await?;
        println!("      revoked in JeecgBoot -> recalled in DingTalk");
        Ok(())
    }

    /// Step 6: the queue once idle, the last runs, DingTalk's calls.
    async fn status(&self) -> Result<(), String> {
        step(6, "status");
        // DingTalk shows the recall before the worker has settled its job: wait for the
        // queue to be idle so the figures below are final.
        let started = Instant::now();
        let stats = loop {
            let stats = self.store.queue_stats(0).await.map_err(text)?;
            if stats.pending == 0 && stats.running == 0 {
                break stats;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("timed out waiting for the queue to settle".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "      queue: {} pending, {} running, {} dead",
            stats.pending, stats.running, stats.dead
        );
        for run in self.store.last_runs(0).await.map_err(text)? {
            println!(
                "      last {}: created {}, updated {}, deleted {}, failed {}",
                run.kind, run.created, run.updated, run.deleted, run.failed
            );
        }
        let calls: u64 = self
            .server
            .sim
            .calls(APPKEY)
            .values()
            .map(|c| c.calls)
            .sum();
        println!("      DingTalk calls in all: {calls}");
        Ok(())
    }

    /// `--keep`: everything stays up until Ctrl-C, with what to try meanwhile.
    async fn keep_running(&self) {
        println!("\nStill running (Ctrl-C to stop). Try, in another terminal:");
        let dir = self.dir.path();
        println!(
            "  dingsync status --config {}",
            dir.join("dingsync.toml").display()
        );
        println!(
            "  sqlite3 {} \"UPDATE sys_user SET realname = '李华' WHERE id = 'u-li'\"",
            dir.join("jeecg.db").display()
        );
        println!(
            "  curl -s {}/_sim/apps/{APPKEY} | head -c 400",
            self.server.url
        );
        let _ = tokio::signal::ctrl_c().await;
    }
}
