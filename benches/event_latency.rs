//! Benchmark: a change made in DingTalk's console to the local row, through Stream mode
//! (`dingsync run` as a process, the simulator's gateway), on SQLite and PostgreSQL (when
//! scripts/test's server is up: DINGSYNC_TEST_PG_URL); then the daemon's idle CPU with the
//! connection open, and its peak RSS.
//!
//! Run: `cargo bench --bench event_latency` (env EDITS=1000, RATE=20 edits/s, QPS=200,
//! IDLE_SECS=60). Under `cargo test`: 20 edits on SQLite, 2 s idle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
use common::process::{cpu_seconds, peak_rss_kib, Daemon};
use dingsync::config::DatabaseUrl;
use dingsync::sim::{SimOptions, SimServer, Simulator};
use dingsync::store::raw::Arg;
use dingsync::store::Store;
use serde_json::json;

const APP: &str = "bench";
const USERS: u64 = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (CPU seconds, peak RSS KiB) of a live process.
async fn fresh_db(kind: &str, dir: &std::path::Path) -> Option<(String, Store)> {
    let url = match kind {
        "sqlite" => format!("sqlite:{}", dir.join("bench.db").display()),
        _ => {
            let admin_url = std::env::var("DINGSYNC_TEST_PG_URL").ok()?;
            let admin = Store::connect_url(&DatabaseUrl::parse(&admin_url).unwrap(), 1, false)
                .await
                .unwrap();
            let name = format!("dsevents_{}", std::process::id());
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

/// The local realname of each of `usernames`.
async fn realnames(store: &Store, usernames: &[String]) -> HashMap<String, String> {
    if usernames.is_empty() {
        return HashMap::new();
    }
    let marks = vec!["?"; usernames.len()].join(", ");
    let sql = store
        .sql(&format!(
            "SELECT username, realname FROM sys_user WHERE username IN ({marks})"
        ))
        .into_owned();
    let args: Vec<Arg> = usernames.iter().map(|name| Arg::Text(name)).collect();
    let rows: Vec<(String, Option<String>)> = store.fetch_rows(&sql, &args).await.unwrap();
    rows.into_iter()
        .map(|(u, r)| (u, r.unwrap_or_default()))
        .collect()
}

async fn bench(kind: &str, edits: u64, rate: u64, qps: u64, idle: u64) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = fresh_db(kind, dir.path()).await?;
    let sim = Simulator::new(SimOptions {
        qps_per_path: qps as u32,
        ..SimOptions::default()
    });
    sim.add_app(APP, "bench-secret", 1);
    let server = SimServer::start(sim, "127.0.0.1:0").await.unwrap();
    let rows: Vec<String> = (0..USERS)
        .map(|u| format!("('e{u}', 'event{u}', 'v0', '1360000{u:04}', 1, 0)"))
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
            "[database]\nurl = \"{url}\"\n[dingtalk]\nbase_url = \"{}\"\nqps_per_api = {qps}\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"{APP}\"\nclient_secret = \"bench-secret\"\n[queue]\nworkers = 8\n[log]\nlevel = \"warn\"\n",
            server.url
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config);
    let pid = daemon.pid();
    // Ready: every user pushed, and the Stream connection open.
    common::holds(&format!("{kind}: ready"), 120, || {
        let org = server.sim.app(APP).unwrap().org;
        let pushed = (0..USERS).all(|u| org.users.contains_key(&format!("event{u}")));
        let connected = server
            .sim
            .stream_stats(APP)
            .is_some_and(|s| s.live_connections == 1);
        pushed && connected
    })
    .await;
    server.sim.reset_calls();
    let mut latencies = Vec::new();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut outstanding: Vec<(String, String, Instant)> = Vec::new();
    let (began, mut next, mut n) = (Instant::now(), Instant::now(), 0);
    // A sampler, not a wait: it commits changes at `rate` and notes when each arrives
    // (every 2 ms), with a deadline of its own.
    while n < edits || !outstanding.is_empty() {
        if n < edits && Instant::now() >= next {
            let user = format!("event{}", n % USERS);
            let value = format!("v{}", n + 1);
            server
                .sim
                .admin_call(
                    APP,
                    "topapi/v2/user/update",
                    json!({ "userid": user, "name": value }),
                )
                .unwrap();
            outstanding.retain(|(name, _, _)| *name != user);
            outstanding.push((user, value, Instant::now()));
            n += 1;
            next += period;
        }
        let names: Vec<String> = outstanding.iter().map(|(u, _, _)| u.clone()).collect();
        let local = realnames(&store, &names).await;
        outstanding.retain(|(name, value, at)| {
            let done = local.get(name) == Some(value);
            if done {
                latencies.push(at.elapsed());
            }
            !done
        });
        assert!(
            began.elapsed() < Duration::from_secs(600),
            "{kind}: did not converge"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort();
    let writes = server.sim.write_calls(APP);
    let stream = server.sim.stream_stats(APP).unwrap();
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let (cpu_after, peak_rss_kb) = (cpu_seconds(pid), peak_rss_kib(pid));
    let _ = daemon.child.kill().await;
    server.stop().await;
    Some(format!(
        "| {kind} | {edits} | {} | {} / {} | {writes} | {:.0} ms | {:.0} ms | {:.0} ms | {:.2}% | {:.1} MiB |",
        latencies.len(),
        stream.events,
        stream.acked,
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
    let (edits, idle) = if full {
        (env_u64("EDITS", 1000), env_u64("IDLE_SECS", 60))
    } else {
        (20, 2)
    };
    let (rate, qps) = (env_u64("RATE", 20), env_u64("QPS", 200));
    println!("{edits} console renames at {rate}/s (100 users), limit {qps}/s per path, 8 workers; idle CPU over {idle} s with the connection open");
    println!("| database | edits | observed locally | events / acked | DingTalk writes by dingsync | p50 | p99 | max | idle CPU | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let kinds: &[&str] = if full {
        &["sqlite", "postgres"]
    } else {
        &["sqlite"]
    };
    for kind in kinds {
        match bench(kind, edits, rate, qps, idle).await {
            Some(row) => println!("{row}"),
            None => println!(
                "| {kind} | skipped: server not running (start it with scripts/test's services) |"
            ),
        }
    }
}
