//! Benchmark: the client's rate limiter against DingTalk's per-app-per-API limit.
//!
//! Drives CALLS calls spread over 4 API paths through one client against the simulator
//! (both at QPS calls/s per path) and prints calls, wall time, the bound (calls per path /
//! QPS), their ratio (goal <= 1.1) and the 90018 answers (goal 0).
//!
//! Run: `cargo bench --bench dingtalk_rate` (env CALLS, QPS to change the defaults 2000, 20).
//! Under `cargo test` it runs a 40-call smoke version and checks there was no 90018.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dingsync::dingtalk::{AppCredentials, ClientOptions, DingTalkClient};
use dingsync::secret::Secret;
use dingsync::sim::{SimOptions, SimServer, Simulator};

const PATHS: [&str; 4] = [
    "topapi/user/count",
    "topapi/v2/department/listsubid",
    "topapi/v2/department/get",
    "topapi/user/listid",
];

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn one_call(client: &DingTalkClient, path: usize) {
    let result = match path {
        0 => client.user_count(false).await.map(drop),
        1 => client.dept_listsubid(1).await.map(drop),
        2 => client.dept_get(1).await.map(drop),
        _ => client.user_listid(1).await.map(drop),
    };
    result.expect("call succeeds");
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let calls = if full { env_u32("CALLS", 2000) } else { 40 };
    let qps = env_u32("QPS", 20);
    let sim = Simulator::new(SimOptions {
        qps_per_path: qps,
        ..SimOptions::default()
    });
    sim.add_app("bench", "bench-secret", 1);
    let server = SimServer::start(sim, "127.0.0.1:0").await.unwrap();
    let mut options = ClientOptions::from_config(&dingsync::config::DingTalkConfig {
        base_url: server.url.parse().unwrap(),
        api_base_url: server.url.parse().unwrap(),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
        qps_per_api: NonZeroU32::new(qps).unwrap(),
    });
    options.max_attempts = 4;
    let credentials = AppCredentials {
        tenant: 0,
        agent_id: 1,
        client_id: "bench".into(),
        client_secret: Secret::new("bench-secret"),
    };
    let client = Arc::new(DingTalkClient::new(options, credentials).unwrap());
    client.user_count(false).await.unwrap(); // the token, outside the measurement
    server.sim.reset_calls();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..calls {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            one_call(&client, (n % 4) as usize).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let wall = started.elapsed();

    let counts = server.sim.calls("bench");
    let per_path_max = PATHS
        .iter()
        .map(|p| counts.get(*p).map_or(0, |c| c.ok))
        .max()
        .unwrap_or(0);
    let bound = Duration::from_secs_f64(per_path_max as f64 / f64::from(qps));
    let throttled: u64 = counts.values().map(|c| c.throttled).sum();
    let sent: u64 = counts.values().map(|c| c.calls).sum();
    println!("| calls | paths | limit/path | wall time | bound | ratio | 90018 answers | HTTP requests |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {calls} | {} | {qps}/s | {:.2} s | {:.2} s | {:.3} | {throttled} | {sent} |",
        PATHS.len(),
        wall.as_secs_f64(),
        bound.as_secs_f64(),
        wall.as_secs_f64() / bound.as_secs_f64()
    );
    server.stop().await;
    assert_eq!(throttled, 0, "the client met DingTalk's rate limit");
}
