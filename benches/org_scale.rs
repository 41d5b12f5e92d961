//! Benchmarks B1–B5 of a generated organisation against the simulator at a per-path limit L,
//! with `dingsync` run as a process on SQLite (what an operator runs), beside the calls
//! JeecgBoot's "同步钉钉" / "同步到本地" buttons would make for the same work (a *model* of
//! their algorithm as ../shared/MISSION.md describes it; see `model`).
//!
//! - B1 `dingsync sync push` into an empty DingTalk: calls vs the minimum, wall time vs the
//!   bound (max over paths of calls / L), throttled answers.
//! - B2 the same again with nothing changed: writes (goal 0) and reads.
//! - B3 `dingsync run`, then EDITS edits of distinct random users' realname at RATE/s:
//!   user/update calls (goal = edits), latency commit -> DingTalk p50 / p99.
//! - B4 `dingsync sync pull` of the whole org into an empty database: calls vs departments +
//!   member pages, wall time, local rows written per second.
//! - B5 peak RSS (VmHWM, sampled every 20 ms) of every process above, and the daemon's idle
//!   CPU over IDLE_SECS.
//!
//! Run: `cargo bench --bench org_scale` (env USERS=10000 DEPTS=1000 QPS=200 EDITS=1000
//! RATE=50 IDLE_SECS=30; STOP_AFTER=B1, B2 or B3 ends there; DAEMON_LOG=path keeps B3's daemon
//! log; PROFILE_PULL="heaptrack -o file" runs B4 under a profiler). Under `cargo test` it runs
//! 300 users / 30 departments, 30 edits
//! and asserts the goals that do not depend on the machine's speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dingsync::config::DatabaseUrl;
use dingsync::sim::{CallCount, SimOptions, SimServer, Simulator, WRITE_PATHS};
use dingsync::store::raw::Arg;
use dingsync::store::Store;
use serde_json::json;

#[path = "../tests/common/mod.rs"]
mod common;
use common::process::{cpu_seconds, peak_rss_kib, Daemon};

const APP: &str = "bench";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The generated organisation: `depts` departments, a tenth of them top level and the rest
/// spread one level below; user `u` in department `u % depts`, every third user also in a
/// second one.
async fn generate(store: &Store, users: usize, depts: usize) {
    let tops = (depts / 10).max(1);
    for chunk in (0..depts).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|&d| {
                let (parent, code) = if d < tops {
                    (String::new(), format!("A{:03}", d + 1))
                } else {
                    let parent = (d - tops) % tops;
                    (
                        format!("d{parent}"),
                        format!("A{:03}A{:03}", parent + 1, (d - tops) / tops + 1),
                    )
                };
                format!(
                    "('d{d}', '{parent}', '部门{d}', {d}, '{}', '{code}', '0')",
                    if parent.is_empty() { 1 } else { 2 }
                )
            })
            .collect();
        store.execute(&format!("INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES {}", rows.join(","))).await.unwrap();
    }
    for chunk in (0..users).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|u| format!("('u{u}', 'user{u}', '用户{u}', '13{u:09}', 'E{u:06}', 1, 0)"))
            .collect();
        store.execute(&format!("INSERT INTO sys_user (id, username, realname, phone, work_no, status, del_flag) VALUES {}", rows.join(","))).await.unwrap();
        let members: Vec<String> = chunk
            .iter()
            .flat_map(|u| {
                let first = format!("('m{u}a', 'u{u}', 'd{}')", u % depts);
                let second = (u % 3 == 0 && depts > 1)
                    .then(|| format!("('m{u}b', 'u{u}', 'd{}')", (u * 7 + 1) % depts))
                    .filter(|_| (u * 7 + 1) % depts != u % depts);
                std::iter::once(first).chain(second)
            })
            .collect();
        store
            .execute(&format!(
                "INSERT INTO sys_user_depart (ID, user_id, dep_id) VALUES {}",
                members.join(",")
            ))
            .await
            .unwrap();
    }
    // The organisation predates dingsync: its triggers' rows for the load are not changes.
    store.execute("DELETE FROM dingsync_change").await.unwrap();
}

/// Peak resident set (VmHWM) of a live process, KiB; 0 once it is gone.
fn spawn_peak_sampler(pid: u32) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(peak_rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    (peak, sampler)
}

fn dingsync(config: &Path, args: &[&str]) -> tokio::process::Command {
    let binary = env!("CARGO_BIN_EXE_dingsync");
    // PROFILE_PULL="heaptrack -o /tmp/pull": `sync pull` runs under that command (a heap
    // profile of B4; its figures are then the profiler's, not dingsync's).
    let wrapper = std::env::var("PROFILE_PULL")
        .ok()
        .filter(|_| args == ["sync", "pull"]);
    let mut command = match wrapper.as_deref().map(str::split_whitespace) {
        Some(mut words) => {
            let mut command = tokio::process::Command::new(words.next().unwrap_or(binary));
            command.args(words).arg(binary);
            command
        }
        None => tokio::process::Command::new(binary),
    };
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("DINGSYNC_CONFIG")
        .kill_on_drop(true);
    command
}

/// Calls per path between two counter snapshots.
fn delta(
    before: &BTreeMap<String, CallCount>,
    after: &BTreeMap<String, CallCount>,
) -> BTreeMap<String, CallCount> {
    after
        .iter()
        .map(|(path, c)| {
            let b = before.get(path).copied().unwrap_or_default();
            (
                path.clone(),
                CallCount {
                    calls: c.calls - b.calls,
                    ok: c.ok - b.ok,
                    failed: c.failed - b.failed,
                    throttled: c.throttled - b.throttled,
                    faulted: c.faulted - b.faulted,
                },
            )
        })
        .filter(|(_, c)| c.calls > 0)
        .collect()
}

/// What one `dingsync` CLI run did.
struct CliRun {
    calls: BTreeMap<String, CallCount>,
    wall: f64,
    peak_kib: u64,
    /// `sync.run.finished`'s `phases_ms`: where the run's time went.
    phases: String,
}

impl CliRun {
    fn total(&self) -> u64 {
        self.calls.values().map(|c| c.calls).sum()
    }
    fn writes(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(p, _)| WRITE_PATHS.contains(&p.as_str()))
            .map(|(_, c)| c.calls)
            .sum()
    }
    fn throttled(&self) -> u64 {
        self.calls.values().map(|c| c.throttled).sum()
    }
    fn on(&self, path: &str) -> u64 {
        self.calls.get(path).map_or(0, |c| c.calls)
    }
    /// max over paths of calls / L (the token endpoint is not rate limited).
    fn bound(&self, qps: usize) -> f64 {
        self.calls
            .iter()
            .filter(|(p, _)| p.as_str() != "gettoken")
            .map(|(_, c)| c.calls)
            .max()
            .unwrap_or(0) as f64
            / qps as f64
    }
    fn by_path(&self) -> String {
        self.calls
            .iter()
            .map(|(p, c)| format!("{p} {}", c.calls))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn cli(sim: &Simulator, config: &Path, args: &[&str]) -> CliRun {
    let before = sim.calls(APP);
    let started = Instant::now();
    let child = dingsync(config, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (peak, sampler) = spawn_peak_sampler(child.id().unwrap());
    let output = child.wait_with_output().await.unwrap();
    let wall = started.elapsed().as_secs_f64();
    sampler.abort();
    assert!(
        output.status.success(),
        "dingsync {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let phases = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains("\"event\":\"sync.run.finished\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["phases_ms"].as_str().map(str::to_string))
        .next_back()
        .unwrap_or_default();
    CliRun {
        calls: delta(&before, &sim.calls(APP)),
        wall,
        peak_kib: peak.load(Ordering::Relaxed),
        phases,
    }
}

fn write_config(
    dir: &Path,
    name: &str,
    db_url: &str,
    sim_url: &str,
    qps: usize,
) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"{db_url}\"\n[dingtalk]\nbase_url = \"{sim_url}\"\nqps_per_api = {qps}\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"{APP}\"\nclient_secret = \"bench-secret\"\n[tenant.pull]\nenabled = true\n[queue]\nworkers = 8\n[log]\nformat = \"json\"\nlevel = \"info\"\n"
        ),
    )
    .unwrap();
    path
}

/// A fresh database of kind `DB` (sqlite, postgres, mariadb; the servers scripts/test
/// starts), named `name`: its URL.
async fn fresh_db(dir: &Path, name: &str) -> String {
    let kind = std::env::var("DB").unwrap_or_else(|_| "sqlite".into());
    if kind == "sqlite" {
        return format!("sqlite:{}", dir.join(format!("{name}.db")).display());
    }
    let var = if kind == "postgres" {
        "DINGSYNC_TEST_PG_URL"
    } else {
        "DINGSYNC_TEST_MYSQL_URL"
    };
    let admin_url = std::env::var(var)
        .unwrap_or_else(|_| panic!("DB={kind} needs {var} (source the services of scripts/test)"));
    let admin = Store::connect_url(&DatabaseUrl::parse(&admin_url).unwrap(), 1, false)
        .await
        .unwrap();
    let db = format!("dsscale_{name}_{}", std::process::id());
    admin
        .execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    admin
        .execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    admin.close().await;
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{db}"));
    url.to_string()
}

/// The server's own cache, which decides whether a 100k organisation is read from memory:
/// InnoDB's buffer pool (it bypasses the OS cache) or PostgreSQL's shared buffers.
async fn server_memory(store: &Store) -> String {
    let (name, sql) = match store.backend() {
        dingsync::config::Backend::MySql => (
            "innodb_buffer_pool_size",
            "SELECT CAST(@@innodb_buffer_pool_size DIV 1048576 AS CHAR)",
        ),
        dingsync::config::Backend::Postgres => (
            "shared_buffers",
            "SELECT CAST(setting::bigint * 8 / 1024 AS TEXT) FROM pg_settings WHERE name = 'shared_buffers'",
        ),
        dingsync::config::Backend::Sqlite => return String::new(),
    };
    let mib: String = store.fetch_value(sql, &[]).await.unwrap().unwrap();
    format!(" ({name} {mib} MiB)")
}

async fn open(url: &str) -> Store {
    Store::connect_url(&DatabaseUrl::parse(url).unwrap(), 2, false)
        .await
        .unwrap()
}

/// The calls JeecgBoot's buttons would make — a **model** of the algorithm MISSION.md
/// describes, not a measurement. A tree walk is one `listsub` per department DingTalk has,
/// root included. Department push: a walk, one create-or-update per local department
/// (always written), a second walk to find departments to delete. User push: a walk to map
/// departments, then per user the gets it makes (link -> `user/get`; no link ->
/// `getbymobile`, and when that finds no one `user/get` by username) and one write. Pull:
/// a walk per button (departments, users), one `source_identifier` write-back per new
/// department, and the member pages. Token fetches (one per call, MISSION.md says) are not
/// counted.
mod model {
    pub struct Counts {
        pub reads: u64,
        pub writes: u64,
    }

    pub fn first_push(users: u64, depts: u64) -> Counts {
        // Walk of an empty DingTalk (root), creates, walk of the new tree; the user
        // button's walk; per user getbymobile + user/get (both miss) + create.
        Counts {
            reads: 1 + (depts + 1) + (depts + 1) + 2 * users,
            writes: depts + users,
        }
    }

    pub fn re_push(users: u64, depts: u64) -> Counts {
        // Three walks of the full tree; per linked user user/get + update.
        Counts {
            reads: 3 * (depts + 1) + users,
            writes: depts + users,
        }
    }

    pub fn pull(depts: u64, member_pages: u64) -> Counts {
        Counts {
            reads: 2 * (depts + 1) + member_pages,
            writes: depts,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

fn dt_name(sim: &Simulator, userid: &str) -> Option<String> {
    sim.admin_call(APP, "topapi/v2/user/get", json!({ "userid": userid }))
        .ok()
        .and_then(|v| v["result"]["name"].as_str().map(str::to_string))
}

/// What B3 and B5's idle measured of the daemon.
struct DaemonRun {
    /// user/update calls.
    updates: u64,
    /// Commit -> DingTalk latencies, sorted.
    latencies: Vec<Duration>,
    /// CPU % over the idle seconds.
    idle_cpu: f64,
    /// Peak RSS, KiB.
    peak_kib: u64,
}

/// Starts the daemon on `config`, runs `edits` (B3) against it, then measures its CPU over
/// `idle` seconds (B5), and stops it.
async fn with_daemon(
    config: &Path,
    edits: impl std::future::Future<Output = (u64, Vec<Duration>)>,
    idle: usize,
) -> DaemonRun {
    let mut daemon = Daemon::started(config).await;
    let pid = daemon.pid();
    let (peak, sampler) = spawn_peak_sampler(pid);
    let (updates, latencies) = edits.await;
    println!(
        "B3: {updates} user/update calls, p50 {:.0} ms, p99 {:.0} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(idle as u64)).await;
    let idle_cpu = (cpu_seconds(pid) - cpu_before) / idle as f64 * 100.0;
    let peak_kib = peak.load(Ordering::Relaxed).max(peak_rss_kib(pid));
    sampler.abort();
    // DAEMON_LOG=path keeps the daemon's log, to see where a job's time went.
    if let Ok(path) = std::env::var("DAEMON_LOG") {
        std::fs::write(path, daemon.log()).unwrap();
    }
    let _ = daemon.child.kill().await;
    DaemonRun {
        updates,
        latencies,
        idle_cpu,
        peak_kib,
    }
}

/// B3: `edits` distinct random users renamed at `rate`/s; returns (user/update calls,
/// sorted latencies).
async fn edits(
    sim: &Simulator,
    store: &Store,
    users: usize,
    edits: usize,
    rate: usize,
) -> (u64, Vec<Duration>) {
    // Readiness: one probe edit must arrive before the measured ones start.
    let sql = store
        .sql("UPDATE sys_user SET realname = ? WHERE id = ?")
        .into_owned();
    let set = |id: String, value: String| {
        let sql = sql.clone();
        async move {
            store
                .execute_with(&sql, &[Arg::Text(&value), Arg::Text(&id)])
                .await
                .unwrap();
        }
    };
    set("u0".into(), "probe".into()).await;
    common::eventually_every(
        "the probe edit in DingTalk",
        Duration::from_secs(120),
        Duration::from_millis(5),
        async || common::done_or(dt_name(sim, "user0").as_deref() == Some("probe"), "not yet"),
    )
    .await;
    let before = sim.calls(APP);
    // Distinct users, in a fixed pseudo-random order (user 0 was the probe).
    let mut order: Vec<usize> = (1..users).collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..order.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut outstanding: Vec<(String, String, Instant)> = Vec::new();
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut next = Instant::now();
    let mut n = 0;
    // A sampler, not a wait: it commits edits at `rate` and notes when each reaches DingTalk
    // (every 2 ms), with a deadline of its own.
    while n < edits || !outstanding.is_empty() {
        if n < edits && Instant::now() >= next {
            let u = order[n];
            let value = format!("改名{n}");
            set(format!("u{u}"), value.clone()).await;
            outstanding.push((format!("user{u}"), value, Instant::now()));
            n += 1;
            next += period;
        }
        outstanding.retain(|(userid, value, at)| {
            let done = dt_name(sim, userid).as_deref() == Some(value.as_str());
            if done {
                latencies.push(at.elapsed());
            }
            !done
        });
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "edits did not converge"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let calls = delta(&before, &sim.calls(APP));
    latencies.sort();
    let updates = calls.get("topapi/v2/user/update").map_or(0, |c| c.calls);
    println!(
        "B3 calls by path: {}",
        calls
            .iter()
            .map(|(p, c)| format!("{p} {}", c.calls))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (updates, latencies)
}

/// Member pages a full listing needs: per department (root included) one page per 100 direct
/// members, at least one.
fn member_pages(sim: &Simulator) -> u64 {
    let org = sim.app(APP).unwrap().org;
    let mut members: BTreeMap<i64, u64> = org.depts.keys().map(|id| (*id, 0)).collect();
    members.entry(1).or_insert(0);
    for user in org.users.values() {
        for dept in &user.dept_id_list {
            *members.entry(*dept).or_insert(0) += 1;
        }
    }
    members.values().map(|n| n.div_ceil(100).max(1)).sum()
}

async fn count(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    store.fetch_value::<i64>(&sql, &[]).await.unwrap().unwrap()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// What B4 measured: the pull's run, the member pages it had to read, the rows it wrote
/// and how long its writer wrote (s).
struct PullRun {
    run: CliRun,
    pages: u64,
    rows: i64,
    write_s: f64,
}

/// B4: `dingsync sync pull` of the simulator's organisation into an empty database.
async fn b4(sim: &Simulator, dir: &Path, sim_url: &str, qps: usize) -> PullRun {
    let pull_db = fresh_db(dir, "empty").await;
    let pull_store = open(&pull_db).await;
    pull_store.init(true).await.unwrap();
    let pull_config = write_config(dir, "pull.toml", &pull_db, sim_url, qps);
    let pages = member_pages(sim);
    let pull = cli(sim, &pull_config, &["sync", "pull"]).await;
    println!(
        "B4: {:.1} s (bound {:.1} s, ratio {:.3}), peak RSS {}, phases {}, calls by path: {}",
        pull.wall,
        pull.bound(qps),
        pull.wall / pull.bound(qps),
        mib(pull.peak_kib),
        pull.phases,
        pull.by_path()
    );
    let write_s = serde_json::from_str::<serde_json::Value>(&pull.phases)
        .ok()
        .and_then(|p| p["write"].as_f64())
        .unwrap_or(0.0)
        / 1000.0;
    let mut rows = 0;
    // Every row the pull writes: users, departments, memberships, tenant rows, links and
    // the sync bases (snapshots), each written in the writer's transactions.
    for table in [
        "sys_user",
        "sys_depart",
        "sys_user_depart",
        "sys_user_tenant",
        "sys_third_account",
        "dingsync_snapshot",
    ] {
        rows += count(&pull_store, table).await;
    }
    pull_store.close().await;

    PullRun {
        run: pull,
        pages,
        rows,
        write_s,
    }
}

/// Everything the benchmark measured, for the table and the goals.
struct Results {
    /// (users, departments, edits, idle seconds).
    sizes: (u64, u64, usize, usize),
    qps: usize,
    b1_ratio: f64,
    /// The fewest calls B1 can make.
    minimum: u64,
    first: CliRun,
    again: CliRun,
    daemon: DaemonRun,
    pull: PullRun,
}

/// Prints the README's table of the run, beside the model of JeecgBoot's buttons.
fn print_table(r: &Results) {
    let Results {
        sizes: (u, d, edit_count, idle),
        qps,
        b1_ratio,
        minimum,
        first,
        again,
        daemon:
            DaemonRun {
                updates,
                latencies,
                idle_cpu,
                peak_kib: daemon_peak,
            },
        pull:
            PullRun {
                run: pull,
                pages,
                rows,
                write_s,
            },
    } = r;
    let (u, d, qps, pages, rows, daemon_peak) = (*u, *d, *qps, *pages, *rows, *daemon_peak);
    let b1_model = model::first_push(u, d);
    let b2_model = model::re_push(u, d);
    let b4_model = model::pull(d, pages);
    let pull_reads = pull.total() - pull.writes() - pull.on("gettoken");
    println!();
    println!("| | dingsync (measured) | goal | JeecgBoot buttons (model) |");
    println!("|---|---|---|---|");
    println!(
        "| B1 first push: calls | {} ({} writes) | minimum {minimum} | {} ({} writes) |",
        first.total(),
        first.writes(),
        b1_model.reads + b1_model.writes,
        b1_model.writes
    );
    println!(
        "| B1 wall time / bound | {:.1} s / {:.1} s = **{b1_ratio:.3}** | ≤ 1.1 | serial, unthrottled: 90018s at any L |",
        first.wall,
        first.bound(qps)
    );
    println!("| B1 throttled answers | {} | 0 | — |", first.throttled());
    println!(
        "| B2 re-push, nothing changed: writes / reads | {} / {} ({:.1} s) | 0 writes | {} / {} |",
        again.writes(),
        again.total() - again.writes(),
        again.wall,
        b2_model.writes,
        b2_model.reads
    );
    println!(
        "| B3 {edit_count} edits with the daemon: writes | {updates} | {edit_count} | {} per click (a full re-push) |",
        b2_model.writes
    );
    println!(
        "| B3 latency commit -> DingTalk p50 / p99 / max | {:.0} / {:.0} / {:.0} ms | p99 < 1 s | until someone clicks |",
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        percentile(latencies, 1.0)
    );
    println!(
        "| B4 pull into an empty database: reads | {pull_reads} | departments + root + member pages = {} | {} |",
        d + 1 + pages,
        b4_model.reads
    );
    println!(
        "| B4 writes (source_identifier write-back) | {} | one per new department | {} |",
        pull.writes(),
        b4_model.writes
    );
    println!(
        "| B4 wall / bound | {:.1} s / {:.1} s = **{:.3}** | ≤ 1.3 (10k), ≤ 1.5 (100k) | serial |",
        pull.wall,
        pull.bound(qps),
        pull.wall / pull.bound(qps)
    );
    println!(
        "| B4 local rows written: over the run / over the writing | {rows} rows: {:.0} rows/s / {:.0} rows/s ({:.1} s writing) | ≥ 20,000 rows/s (SQLite, PostgreSQL), ≥ 10,000 (MariaDB) | — |",
        rows as f64 / pull.wall,
        rows as f64 / write_s.max(0.001),
        write_s
    );
    println!(
        "| B2 wall / bound; phases (ms) | {:.1} s / {:.1} s = **{:.3}**; {} | ≤ 1.3 | — |",
        again.wall,
        again.bound(qps),
        again.wall / again.bound(qps),
        again.phases
    );
    println!(
        "| B5 peak RSS: sync push / re-push / daemon / pull | {} / {} / {} / {} | < 64 MiB | — |",
        mib(first.peak_kib),
        mib(again.peak_kib),
        mib(daemon_peak),
        mib(pull.peak_kib)
    );
    println!("| B5 daemon idle CPU over {idle} s | {idle_cpu:.2}% | — | — |");
}

/// The goals that do not depend on the machine's speed.
fn assert_goals(r: &Results) {
    let (u, d, edit_count, _) = r.sizes;
    let (first, again, pull) = (&r.first, &r.again, &r.pull.run);
    let updates = r.daemon.updates;
    let pull_reads = pull.total() - pull.writes() - pull.on("gettoken");
    let pages = r.pull.pages;
    assert_eq!(first.throttled(), 0, "B1 met 90018");
    assert_eq!(first.on("topapi/v2/user/create"), u, "B1 user creates");
    assert_eq!(
        first.on("topapi/v2/department/create"),
        d,
        "B1 department creates"
    );
    assert_eq!(again.writes(), 0, "B2 wrote");
    assert_eq!(updates, edit_count as u64, "B3 writes");
    assert_eq!(pull_reads, d + 1 + pages, "B4 reads");
}

/// A fresh `db` initialised and filled with the generated organisation; says what it holds.
async fn generated(db: &str, users: usize, depts: usize, qps: usize) -> Store {
    let store = open(db).await;
    store.init(true).await.unwrap();
    let t = Instant::now();
    generate(&store, users, depts).await;
    let memberships = users + users.div_ceil(3);
    println!(
        "org: {users} users, {depts} departments, about {memberships} memberships (generated in {:.1} s); limit L = {qps}/s per path; {}{}; dingsync as a process",
        t.elapsed().as_secs_f64(),
        std::env::var("DB").unwrap_or_else(|_| "sqlite".into()),
        server_memory(&store).await
    );
    store
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (users, depts, edit_count, idle) = if full {
        (
            env_usize("USERS", 10_000),
            env_usize("DEPTS", 1_000),
            env_usize("EDITS", 1_000),
            env_usize("IDLE_SECS", 30),
        )
    } else {
        (300, 30, 30, 1)
    };
    let (qps, rate) = (env_usize("QPS", 200), env_usize("RATE", 50));
    let sim = Simulator::new(SimOptions {
        qps_per_path: qps as u32,
        ..SimOptions::default()
    });
    sim.add_app(APP, "bench-secret", 1);
    let server = SimServer::start(sim.clone(), "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path(), "jeecg").await;
    let config = write_config(dir.path(), "push.toml", &db, &server.url, qps);
    let setup_config = write_config(
        dir.path(),
        "setup.toml",
        &db,
        &server.url,
        env_usize("SETUP_QPS", qps),
    );
    let store = generated(&db, users, depts, qps).await;
    let (u, d) = (users as u64, depts as u64);

    // B1 (SETUP_QPS, when set, speeds it up for runs that look at the later phases; its
    // ratio is then against that limit).
    let setup_qps = env_usize("SETUP_QPS", qps);
    sim.set_qps(setup_qps as u32);
    let first = cli(&sim, &setup_config, &["sync", "push"]).await;
    sim.set_qps(qps as u32);
    let minimum = d + u + 2 + 1; // creates, the two reads of an empty org, one token
    let b1_ratio = first.wall / first.bound(setup_qps);
    println!(
        "B1: {:.1} s, peak RSS {}, calls by path: {}",
        first.wall,
        mib(first.peak_kib),
        first.by_path()
    );
    if std::env::var("STOP_AFTER").as_deref() == Ok("B1") {
        println!(
            "B1 wall / bound = {:.1} s / {:.1} s = {b1_ratio:.3}; throttled {}",
            first.wall,
            first.bound(qps),
            first.throttled()
        );
        server.stop().await;
        return;
    }
    // B2
    let again = cli(&sim, &config, &["sync", "push"]).await;
    println!(
        "B2: {:.1} s (bound {:.1} s, ratio {:.3}), peak RSS {}, phases {}, calls by path: {}",
        again.wall,
        again.bound(qps),
        again.wall / again.bound(qps),
        mib(again.peak_kib),
        again.phases,
        again.by_path()
    );
    if std::env::var("STOP_AFTER").as_deref() == Ok("B2") {
        server.stop().await;
        return;
    }
    // B3 + B5 idle
    let daemon_config = write_config(dir.path(), "run.toml", &db, &server.url, qps);
    let edited = edits(&sim, &store, users, edit_count, rate);
    let daemon = with_daemon(&daemon_config, edited, idle).await;
    if std::env::var("STOP_AFTER").as_deref() == Ok("B3") {
        server.stop().await;
        return;
    }
    store.close().await;
    let pull = b4(&sim, dir.path(), &server.url, qps).await;
    let results = Results {
        sizes: (u, d, edit_count, idle),
        qps,
        b1_ratio,
        minimum,
        first,
        again,
        daemon,
        pull,
    };
    print_table(&results);
    assert_goals(&results);
    server.stop().await;
}
