//! Benchmark: the daemon (`dingsync run` as a process) from a committed local change to
//! DingTalk's state, on SQLite, PostgreSQL and MariaDB (the latter two when scripts/test's
//! servers are up: DINGSYNC_TEST_PG_URL, DINGSYNC_TEST_MYSQL_URL); then the daemon's idle CPU
//! and RSS.
//!
//! Run: `cargo bench --bench daemon_latency` (env CHANGES=1000, RATE=50 changes/s,
//! QPS=200, IDLE_SECS=60). Under `cargo test`: 20 changes on SQLite, 2 s idle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
use common::process::{cpu_seconds, peak_rss_kib, Daemon};
use dingsync::config::DatabaseUrl;
use dingsync::sim::{SimOptions, SimServer, Simulator};
use dingsync::store::raw::Arg;
use dingsync::store::Store;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn fresh_db(kind: &str, dir: &std::path::Path) -> Option<(String, Store)> {
    let url = match kind {
        "sqlite" => format!("sqlite:{}", dir.join("bench.db").display()),
        other => {
            let admin_url = std::env::var(if other == "postgres" {
                "DINGSYNC_TEST_PG_URL"
            } else {
                "DINGSYNC_TEST_MYSQL_URL"
            })
            .ok()?;
            let admin = Store::connect_url(&DatabaseUrl::parse(&admin_url).unwrap(), 1, false)
                .await
                .unwrap();
            let name = format!("dsbench_{}", std::process::id());
            admin
                .execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .await
                .unwrap();
            admin
                .execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let mut url = url::Url::parse(&admin_url).unwrap();
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
    };
    let store = Store::connect_url(&DatabaseUrl::parse(&url).unwrap(), 4, false)
        .await
        .unwrap();
    store.init(true).await.unwrap();
    Some((url, store))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Users the benchmark renames, one after the other.
const USERS: u64 = 100;

/// `changes` renames of the users, committed at `rate`/s; the latency of each, from its
/// commit until DingTalk shows it (a rename overtaken by the next one of its user counts
/// only once, the later).
async fn changes_at_rate(
    store: &Store,
    server: &SimServer,
    changes: u64,
    rate: u64,
    kind: &str,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut outstanding: Vec<(String, String, Instant)> = Vec::new();
    let started = Instant::now();
    let mut next = Instant::now();
    let mut n = 0;
    // A sampler, not a wait: it commits changes at `rate` and notes when each arrives
    // (every 2 ms), with a deadline of its own.
    while n < changes || !outstanding.is_empty() {
        if n < changes && Instant::now() >= next {
            let user = n % USERS;
            let value = format!("v{}", n + 1);
            let sql = store
                .sql("UPDATE sys_user SET realname = ? WHERE id = ?")
                .into_owned();
            let id = format!("b{user}");
            store
                .execute_with(&sql, &[Arg::Text(&value), Arg::Text(&id)])
                .await
                .unwrap();
            outstanding.retain(|(name, _, _)| *name != format!("bench{user}"));
            outstanding.push((format!("bench{user}"), value, Instant::now()));
            n += 1;
            next += period;
        }
        let org = server.sim.app("bench").unwrap().org;
        outstanding.retain(|(name, value, at)| {
            let done = org.users.get(name).is_some_and(|u| &u.name == value);
            if done {
                latencies.push(at.elapsed());
            }
            !done
        });
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{kind}: did not converge"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies
}

async fn bench(kind: &str, changes: u64, rate: u64, qps: u64, idle: u64) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = fresh_db(kind, dir.path()).await?;
    let sim = Simulator::new(SimOptions {
        qps_per_path: qps as u32,
        ..SimOptions::default()
    });
    sim.add_app("bench", "bench-secret", 1);
    let server = SimServer::start(sim, "127.0.0.1:0").await.unwrap();
    let rows: Vec<String> = (0..USERS)
        .map(|u| format!("('b{u}', 'bench{u}', 'v0', '1370000{u:04}', 1, 0)"))
        .collect();
    store
        .execute(&format!(
            "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES {}",
            rows.join(",")
        ))
        .await
        .unwrap();
    let config = dir.path().join("dingsync.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{url}\"\n[dingtalk]\nbase_url = \"{}\"\nqps_per_api = {qps}\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"bench\"\nclient_secret = \"bench-secret\"\n[queue]\nworkers = 8\n[log]\nlevel = \"warn\"\n",
            server.url
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config);
    let pid = daemon.pid();
    let seen = |name: &str, value: &str| {
        server
            .sim
            .app("bench")
            .unwrap()
            .org
            .users
            .get(name)
            .is_some_and(|u| u.name == value)
    };
    common::holds("every user pushed", 120, || {
        (0..USERS).all(|u| seen(&format!("bench{u}"), "v0"))
    })
    .await;
    let mut latencies = changes_at_rate(&store, &server, changes, rate, kind).await;
    let writes = server
        .sim
        .calls("bench")
        .get("topapi/v2/user/update")
        .map_or(0, |c| c.calls);
    latencies.sort();
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let (cpu_after, peak_rss_kb) = (cpu_seconds(pid), peak_rss_kib(pid));
    let _ = daemon.child.kill().await;
    server.stop().await;
    Some(format!(
        "| {kind} | {changes} | {} | {writes} | {:.0} ms | {:.0} ms | {:.0} ms | {:.2}% | {:.1} MiB |",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
        (cpu_after - cpu_before) / idle as f64 * 100.0,
        peak_rss_kb as f64 / 1024.0
    ))
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (changes, idle) = if full {
        (env_u64("CHANGES", 1000), env_u64("IDLE_SECS", 60))
    } else {
        (20, 2)
    };
    let (rate, qps) = (env_u64("RATE", 50), env_u64("QPS", 200));
    println!(
        "{changes} changes at {rate}/s, limit {qps}/s per path, 8 workers; idle CPU over {idle} s"
    );
    println!("| database | changes | observed | user/update calls | p50 | p99 | max | idle CPU | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let kinds: &[&str] = if full {
        &["sqlite", "postgres", "mariadb"]
    } else {
        &["sqlite"]
    };
    for kind in kinds {
        match bench(kind, changes, rate, qps, idle).await {
            Some(row) => println!("{row}"),
            None => println!(
                "| {kind} | skipped: server not running (start it with scripts/test's services) |"
            ),
        }
    }
}
