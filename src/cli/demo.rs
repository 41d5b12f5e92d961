//! `dingsync demo`: the whole product in one command, nothing to configure — a SQLite
//! database with JeecgBoot's tables and the sample organisation ([`crate::sample`]), the
//! DingTalk simulator in-process, and the daemon running; then a first push, a local edit, a
//! change made "in DingTalk" pulled back, an announcement sent and recalled, and the status.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::error::CliError;
use crate::config::{load_str, Config, LoadOptions};
use crate::daemon::{run, Reload};
use crate::sample;
use crate::sim::{SimOptions, SimServer, Simulator};
use crate::store::sample::SampleEdit;
use crate::store::Store;
use crate::sync::model::{Direction, Scope};
use crate::sync::run::{run_once, RunLease, RunRequest};

const APPKEY: &str = "dingdemo";
const APPSECRET: &str = "demo-secret";
const AGENT_ID: i64 = 4_000_001;

fn step(n: u32, text: &str) {
    println!("\n[{n}/6] {text}");
}

/// Why the demo could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The temporary directory, its configuration file or the simulator's listener.
    #[error("cannot set up the demo: {0}")]
    Setup(#[from] std::io::Error),
    /// The demo's own configuration was refused (a bug: it is written by the demo).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The demo's database.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The demo's DingTalk client.
    #[error("{0}")]
    DingTalk(#[from] crate::dingtalk::DingTalkError),
    /// The demo's pull could not run.
    #[error("{0}")]
    Run(#[from] crate::sync::run::RunError),
    /// The daemon stopped with an error.
    #[error("{0}")]
    Daemon(#[from] crate::daemon::DaemonError),
    /// The daemon's task ended abnormally.
    #[error("the daemon's task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The simulator refused a change made "in DingTalk's console".
    #[error("the simulator refused the console call: errcode {errcode}: {errmsg}")]
    Console {
        /// Its errcode.
        errcode: i64,
        /// Its message.
        errmsg: String,
    },
    /// Something the demo expects to see was not there.
    #[error("{0} not found")]
    Missing(&'static str),
    /// A step did not finish in 30 s.
    #[error("timed out waiting for {0}")]
    TimedOut(&'static str),
}

async fn wait_until(what: &'static str, check: impl Fn() -> bool) -> Result<Duration, DemoError> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(DemoError::TimedOut(what));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed())
}

/// Runs the demo; with `keep`, leaves everything running until Ctrl-C.
pub(super) async fn demo(keep: bool) -> Result<(), CliError> {
    Ok(scenario(keep).await?)
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

async fn scenario(keep: bool) -> Result<(), DemoError> {
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
    daemon.await??;
    demo.store.close().await;
    demo.plain.close().await;
    demo.server.stop().await;
    println!("\ndone.");
    Ok(())
}

impl Demo {
    /// The simulator, the configuration file and both connections.
    async fn start() -> Result<Self, DemoError> {
        let dir = tempfile::Builder::new().prefix("dingsync-demo").tempdir()?;
        let sim = Simulator::new(SimOptions::default());
        sim.add_app(APPKEY, APPSECRET, AGENT_ID);
        let server = SimServer::start(sim, "127.0.0.1:0").await?;
        let db_path = dir.path().join("jeecg.db");
        let config_text = format!(
            "[database]\nurl = \"sqlite:{}\"\n[dingtalk]\nbase_url = \"{}\"\n[[tenant]]\nid = 0\nagent_id = {AGENT_ID}\nclient_id = \"{APPKEY}\"\n\
             client_secret = \"{APPSECRET}\"\n[announcement]\nbase_url = \"http://localhost:8080/jeecg-boot\"\n[log]\nlevel = \"warn\"\n",
            db_path.display(),
            server.url
        );
        let config_path = dir.path().join("dingsync.toml");
        std::fs::write(&config_path, &config_text)?;
        let config: Config = load_str(&config_text, &config_path, &LoadOptions::default())?.config;
        println!(
            "dingsync demo: JeecgBoot database {} and a DingTalk simulator at {}",
            db_path.display(),
            server.url
        );
        let store = Store::connect(&config.database).await?;
        let plain = Store::connect_url(&config.database.url, 2, false).await?;
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
    async fn schema_and_sample(&self) -> Result<(), DemoError> {
        step(
            1,
            "JeecgBoot's tables, dingsync's tables and triggers, a sample organisation",
        );
        let report = self.store.init(true).await?;
        self.plain.load_sample_org().await?;
        println!(
            "      {} JeecgBoot tables, dingsync schema version {}; {}",
            report.jeecg_tables_created,
            report.to_version,
            sample::SUMMARY
        );
        Ok(())
    }

    /// Step 2: the daemon (started by the caller) pushes the organisation by itself.
    async fn first_push(&self) -> Result<(), DemoError> {
        step(2, "the daemon starts and pushes the organisation by itself");
        let took = wait_until("the first push", || {
            let org = self.org();
            org.users.len() == sample::PUSHED_USERS.len()
                && org.depts.len() == sample::PUSHED_DEPARTMENTS + 1
        })
        .await?;
        let writes = self.server.sim.write_calls(APPKEY);
        println!("      in {} ms: DingTalk has {} departments (+ root) and {} users; {writes} write calls; the post, the deleted department and the deleted user stayed local", took.as_millis(), sample::PUSHED_DEPARTMENTS, sample::PUSHED_USERS.len());
        Ok(())
    }

    /// Step 3: a local edit reaches DingTalk.
    async fn local_edit(&self) -> Result<(), DemoError> {
        step(3, "a local edit reaches DingTalk within a second");
        self.plain.sample_edit(SampleEdit::RenameLihua).await?;
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
    async fn console_change_pulled(&self) -> Result<(), DemoError> {
        step(4, "a change made in DingTalk's console is pulled back");
        let market = self
            .org()
            .depts
            .values()
            .find(|d| d.name == "市场部")
            .map(|d| d.dept_id)
            .ok_or(DemoError::Missing("市场部 in DingTalk"))?;
        self.server
            .sim
            .admin_call(
                APPKEY,
                "topapi/v2/user/create",
                serde_json::json!({ "userid": "dt_newbie", "name": "新同事", "mobile": "13700000001", "dept_id_list": market.to_string() }),
            )
            .map_err(|e| DemoError::Console {
                errcode: e.errcode,
                errmsg: e.errmsg,
            })?;
        let summary = self.pull().await?;
        let pulled = self
            .store
            .load_users(0)
            .await?
            .into_iter()
            .find(|u| u.username == "dt_newbie")
            .ok_or(DemoError::Missing("the pulled user dt_newbie"))?;
        println!("      pull: created {}, updated {}; local user {} ({}) in 市场部, password 123456 hashed as JeecgBoot does", summary.created, summary.updated, pulled.username, pulled.realname);
        Ok(())
    }

    /// A pull of tenant 0, under its run lease (the daemon's scheduled runs take it too).
    async fn pull(&self) -> Result<crate::sync::model::Summary, DemoError> {
        let tenant = &self.config.tenants[0];
        let client = crate::dingtalk::DingTalkClient::for_tenant(&self.config, tenant)?;
        let request = RunRequest {
            direction: Direction::Pull,
            scope: Scope::All,
            dry_run: false,
        };
        let ttl = self.config.daemon.lease_ttl;
        let lease = RunLease::take_within(&self.store, tenant.id, "pull:demo", ttl, ttl * 2)
            .await?
            .ok_or(DemoError::TimedOut("the daemon's scheduled run to end"))?;
        let ctx = crate::sync::run::RunCtx {
            store: &self.store,
            client: &client,
            config: &self.config,
            tenant,
        };
        let summary = run_once(&ctx, request, None).await;
        lease.release().await;
        Ok(summary?)
    }

    /// Step 5: an announcement sent to DingTalk, then recalled.
    async fn announcement(&self) -> Result<(), DemoError> {
        step(
            5,
            "an announcement (系统通告) sent to DingTalk, then recalled",
        );
        self.plain.sample_edit(SampleEdit::PublishOuting).await?;
        let tasks = || {
            self.server
                .sim
                .app(APPKEY)
                .map(|a| a.notifications.tasks.into_values().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let sent = |t: &&crate::sim::messages::Task| t.msg["action_card"]["title"] == "周五团建";
        wait_until("the announcement", || tasks().iter().any(|t| sent(&t))).await?;
        let task = tasks()
            .into_iter()
            .find(|t| sent(&t))
            .ok_or(DemoError::Missing("the announcement's task"))?;
        println!(
            "      action card \"周五团建\" delivered to {} users (task {})",
            task.delivered.len(),
            task.task_id
        );
        self.plain.sample_edit(SampleEdit::RevokeOuting).await?;
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
    async fn status(&self) -> Result<(), DemoError> {
        step(6, "status");
        // DingTalk shows the recall before the worker has settled its job: wait for the
        // queue to be idle so the figures below are final.
        let started = Instant::now();
        let stats = loop {
            let stats = self.store.queue_stats(0).await?;
            if stats.pending == 0 && stats.running == 0 {
                break stats;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(DemoError::TimedOut("the queue to settle"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "      queue: {} pending, {} running, {} dead",
            stats.pending, stats.running, stats.dead
        );
        for run in self.store.last_runs(0).await? {
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
