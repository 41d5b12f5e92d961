//! Benchmark: DingTalk calls of a full push and of a re-push with nothing changed, for a
//! generated organisation (default 1,000 users / 100 departments) on SQLite against the
//! simulator, both at QPS calls/s per path.
//!
//! Run: `cargo bench --bench sync_calls` (env USERS, DEPTS, QPS; defaults 1000, 100, 200).
//! Under `cargo test` it runs 60 users / 12 departments and checks the re-push writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use dingsync::config::{load_str, LoadOptions};
use dingsync::dingtalk::DingTalkClient;
use dingsync::sim::{SimOptions, SimServer, Simulator, WRITE_PATHS};
use dingsync::store::Store;
use dingsync::sync::model::{Direction, Scope, Summary};
use dingsync::sync::run::{run_once, RunRequest};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn generate(store: &Store, users: usize, depts: usize) {
    let tops = (depts / 10).max(1);
    let mut rows = Vec::new();
    for d in 0..depts {
        let (parent, code) = if d < tops {
            (String::new(), format!("A{:02}", d + 1))
        } else {
            let parent = (d - tops) % tops;
            (
                format!("d{parent}"),
                format!("A{:02}A{:02}", parent + 1, (d - tops) / tops + 1),
            )
        };
        rows.push(format!(
            "('d{d}', '{parent}', '部门{d}', {d}, '{}', '{code}', '0')",
            if parent.is_empty() { 1 } else { 2 }
        ));
    }
    store.execute(&format!("INSERT INTO sys_depart (id, parent_id, depart_name, depart_order, org_category, org_code, del_flag) VALUES {}", rows.join(","))).await.unwrap();
    for chunk in (0..users).collect::<Vec<_>>().chunks(500) {
        let users: Vec<String> = chunk
            .iter()
            .map(|u| format!("('u{u}', 'user{u}', '用户{u}', '139{u:08}', 'E{u:05}', 1, 0)"))
            .collect();
        store.execute(&format!("INSERT INTO sys_user (id, username, realname, phone, work_no, status, del_flag) VALUES {}", users.join(","))).await.unwrap();
        let members: Vec<String> = chunk
            .iter()
            .flat_map(|u| {
                let first = format!("('m{u}a', 'u{u}', 'd{}')", u % depts);
                let second =
                    (u % 3 == 0).then(|| format!("('m{u}b', 'u{u}', 'd{}')", (u * 7 + 1) % depts));
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
}

fn writes(summary: &Summary) -> u64 {
    summary
        .api_calls
        .iter()
        .filter(|(route, _)| WRITE_PATHS.contains(&route.as_str()))
        .map(|(_, n)| n)
        .sum()
}

fn row(label: &str, summary: &Summary, seconds: f64, qps: usize) {
    let total: u64 = summary.api_calls.values().sum();
    let busiest = summary.api_calls.values().max().copied().unwrap_or(0);
    let bound = busiest as f64 / qps as f64;
    println!(
        "| {label} | {total} | {} | {} | {:.2} s | {:.2} s | {:.2} | {} |",
        writes(summary),
        total - writes(summary),
        seconds,
        bound,
        if bound > 0.0 { seconds / bound } else { 0.0 },
        summary.failed
    );
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (users, depts) = if full {
        (env_usize("USERS", 1000), env_usize("DEPTS", 100))
    } else {
        (60, 12)
    };
    let qps = env_usize("QPS", 200);
    let sim = Simulator::new(SimOptions {
        qps_per_path: qps as u32,
        ..SimOptions::default()
    });
    sim.add_app("bench", "bench-secret", 1);
    let server = SimServer::start(sim, "127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[database]\nurl = \"sqlite:{}\"\n[dingtalk]\nbase_url = \"{}\"\nqps_per_api = {qps}\n[[tenant]]\nid = 0\nagent_id = 1\nclient_id = \"bench\"\nclient_secret = \"bench-secret\"\n",
        dir.path().join("bench.db").display(),
        server.url
    );
    let config = load_str(
        &text,
        std::path::Path::new("bench.toml"),
        &LoadOptions::default(),
    )
    .unwrap()
    .config;
    let store = Store::connect(&config.database).await.unwrap();
    store.init(true).await.unwrap();
    generate(&store, users, depts).await;
    let client = DingTalkClient::for_tenant(&config, &config.tenants[0]).unwrap();
    let request = RunRequest {
        direction: Direction::Push,
        scope: Scope::All,
        dry_run: false,
    };

    println!("org: {users} users, {depts} departments; limit {qps}/s per path");
    println!("| run | calls | writes | reads | wall time | bound (busiest path / limit) | ratio | failed |");
    println!("|---|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let (_, first) = run_once(&store, &client, &config, &config.tenants[0], request, None)
        .await
        .unwrap();
    row("first push", &first, started.elapsed().as_secs_f64(), qps);
    let started = Instant::now();
    let (_, second) = run_once(&store, &client, &config, &config.tenants[0], request, None)
        .await
        .unwrap();
    row(
        "re-push, nothing changed",
        &second,
        started.elapsed().as_secs_f64(),
        qps,
    );
    println!("first push calls by path: {:?}", first.api_calls);
    println!("re-push calls by path: {:?}", second.api_calls);
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert_eq!(
        writes(&second),
        0,
        "a re-push with nothing changed writes nothing"
    );
    assert_eq!(
        first
            .api_calls
            .get("topapi/v2/user/create")
            .copied()
            .unwrap_or(0),
        users as u64
    );
    server.stop().await;
}
