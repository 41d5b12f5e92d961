//! Helpers shared by the integration tests: where the test databases are.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// The URL of a test service from `var`, which `scripts/test` exports. Under CI a missing
/// variable fails the test (a service the tests need must not be skipped silently);
/// elsewhere the test says it was skipped and why.
pub fn service_url(var: &str, service: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set under CI: scripts/test must start {service} for this test")
        }
        _ => {
            eprintln!("SKIPPED: {var} is not set, so the {service} part of this test did not run; run scripts/test");
            None
        }
    }
}

/// MariaDB/MySQL started by scripts/test.
pub fn mysql_url() -> Option<String> {
    service_url("DINGSYNC_TEST_MYSQL_URL", "MariaDB")
}

/// PostgreSQL started by scripts/test.
pub fn postgres_url() -> Option<String> {
    service_url("DINGSYNC_TEST_PG_URL", "PostgreSQL")
}

use std::num::NonZeroU32;
use std::time::Duration;

use dingsync::dingtalk::{AppCredentials, ClientOptions, DingTalkClient};
use dingsync::secret::Secret;
use dingsync::sim::{SimOptions, SimServer, Simulator};

/// The app every simulator test uses.
pub const APPKEY: &str = "dingtestappkey";
/// Its secret.
pub const APPSECRET: &str = "test-app-secret-VALUE-42";
/// Its AgentId.
pub const AGENT_ID: i64 = 3_000_001;

/// A simulator with one app, served on a port-0 listener.
pub async fn start_sim(options: SimOptions) -> SimServer {
    let sim = Simulator::new(options);
    sim.add_app(APPKEY, APPSECRET, AGENT_ID);
    SimServer::start(sim, "127.0.0.1:0")
        .await
        .expect("simulator listens")
}

/// Client options for tests: fast retries, a generous rate limit unless told otherwise.
pub fn client_options(url: &str, qps: u32) -> ClientOptions {
    ClientOptions {
        base_url: url.parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        qps_per_api: NonZeroU32::new(qps).unwrap(),
        max_attempts: 4,
        max_throttled_attempts: 10,
        retry_base: Duration::from_millis(10),
        retry_cap: Duration::from_millis(100),
        throttle_wait: Duration::from_millis(50),
    }
}

/// The test app's credentials.
pub fn credentials() -> AppCredentials {
    AppCredentials {
        tenant: 0,
        agent_id: AGENT_ID,
        client_id: APPKEY.into(),
        client_secret: Secret::new(APPSECRET),
    }
}

/// A client for the test app.
pub fn client(server: &SimServer, qps: u32) -> DingTalkClient {
    DingTalkClient::new(client_options(&server.url, qps), credentials()).unwrap()
}
