//! Helpers shared by the integration tests: where the test databases are.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod process;

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

/// A simulator with one app at 1,000 calls/s per path: tests about sync rules, not limits.
pub async fn start_fast_sim() -> SimServer {
    start_sim(SimOptions {
        qps_per_path: 1000,
        ..SimOptions::default()
    })
    .await
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

use dingsync::config::DatabaseUrl;
use dingsync::store::Store;

/// A fresh database for one test: dingsync's store and a plain connection that writes like
/// JeecgBoot (its writes are logged by the triggers).
pub struct TestDb {
    /// `sqlite`, `mariadb` or `postgres`.
    pub name: &'static str,
    /// Connected as dingsync.
    pub store: Store,
    /// Connected as "JeecgBoot".
    pub plain: Store,
    /// The URL (with the fresh database).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// What `sql` (a `SELECT COUNT(*) ...`) gives, read as JeecgBoot reads.
    pub async fn count(&self, sql: &str) -> i64 {
        self.plain
            .fetch_value::<i64>(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name))
            .unwrap_or_else(|| panic!("{}: {sql}: no row", self.name))
    }
}

fn unique_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "dstest_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        rand_suffix()
    )
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100_000
}

pub async fn server_db(name: &'static str, admin_url: &str) -> TestDb {
    let admin = Store::connect_url(&DatabaseUrl::parse(admin_url).unwrap(), 1, false)
        .await
        .expect("connect as admin");
    let db = unique_name();
    admin
        .execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    admin.close().await;
    let mut url = url::Url::parse(admin_url).unwrap();
    url.set_path(&format!("/{db}"));
    let url = url.to_string();
    let parsed = DatabaseUrl::parse(&url).unwrap();
    let store = Store::connect_url(&parsed, 5, true).await.unwrap();
    let plain = Store::connect_url(&parsed, 5, false).await.unwrap();
    TestDb {
        name,
        store,
        plain,
        url,
        _dir: None,
    }
}

/// A fresh SQLite database file.
pub async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("jeecg.db").display());
    let parsed = DatabaseUrl::parse(&url).unwrap();
    let store = Store::connect_url(&parsed, 5, true).await.unwrap();
    let plain = Store::connect_url(&parsed, 5, false).await.unwrap();
    TestDb {
        name: "sqlite",
        store,
        plain,
        url,
        _dir: Some(dir),
    }
}

/// A fresh MariaDB database, when scripts/test started the server.
pub async fn mariadb_db() -> Option<TestDb> {
    Some(server_db("mariadb", &mysql_url()?).await)
}

/// A fresh PostgreSQL database, when scripts/test started the server.
pub async fn postgres_db() -> Option<TestDb> {
    Some(server_db("postgres", &postgres_url()?).await)
}

/// SQLite always; MariaDB and PostgreSQL when available (required under CI).
pub async fn all_dbs() -> Vec<TestDb> {
    let mut dbs = vec![sqlite_db().await];
    dbs.extend(mariadb_db().await);
    dbs.extend(postgres_db().await);
    dbs
}

/// `dbs` initialised with JeecgBoot's tables and dingsync's.
pub async fn initialised_dbs() -> Vec<TestDb> {
    let dbs = all_dbs().await;
    for db in &dbs {
        db.store
            .init(true)
            .await
            .unwrap_or_else(|e| panic!("{}: init: {e}", db.name));
    }
    dbs
}

/// Reads a file of ../shared/jeecgboot in place.
pub fn dump(file: &str) -> Option<String> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/jeecgboot")
        .join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("{} is missing under CI", path.display())
        }
        Err(error) => {
            eprintln!(
                "SKIPPED: {} not readable ({error}); the real-dump test did not run",
                path.display()
            );
            None
        }
    }
}

/// A MariaDB database with JeecgBoot's dump loaded, as a real installation has it.
pub async fn loaded_mariadb() -> Option<TestDb> {
    let (schema, upgrades) = (
        dump("jeecgboot-mysql-subset.sql")?,
        dump("jeecgboot-upgrades-subset.sql")?,
    );
    let db = mariadb_db().await?;
    db.plain
        .execute_script(&schema)
        .await
        .expect("load the schema dump");
    db.plain
        .execute_script(&upgrades)
        .await
        .expect("load the upgrades");
    Some(db)
}

/// A configuration for `db` and the simulator `server` (tenant 0 = the test app, generous
/// rate limit), with `extra` TOML appended (sections such as `[queue]`).
pub fn daemon_config(db: &TestDb, server: &SimServer, extra: &str) -> dingsync::config::Config {
    let text = config_text(&db.url, &server.url, 1000, extra);
    dingsync::config::load_str(
        &text,
        std::path::Path::new("test.toml"),
        &dingsync::config::LoadOptions::default(),
    )
    .unwrap()
    .config
}

/// A configuration file's text: the database, the simulator at `qps` calls/s per path, tenant
/// 0 with the test app, then `extra` (more sections).
pub fn config_text(db_url: &str, sim_url: &str, qps: u32, extra: &str) -> String {
    format!(
        "[database]\nurl = \"{db_url}\"\n[dingtalk]\nbase_url = \"{sim_url}\"\nqps_per_api = {qps}\n\
         [[tenant]]\nid = 0\nagent_id = {AGENT_ID}\nclient_id = \"{APPKEY}\"\nclient_secret = \"{APPSECRET}\"\n{extra}"
    )
}

/// An INSERT of active users into `sys_user`, one for each `n`: `row(n)` gives their id,
/// username, realname and phone.
pub fn insert_users_sql(
    ns: impl IntoIterator<Item = usize>,
    row: impl Fn(usize) -> [String; 4],
) -> String {
    let rows: Vec<String> = ns
        .into_iter()
        .map(|n| {
            let [id, username, realname, phone] = row(n);
            format!("('{id}', '{username}', '{realname}', '{phone}', 1, 0)")
        })
        .collect();
    format!(
        "INSERT INTO sys_user (id, username, realname, phone, status, del_flag) VALUES {}",
        rows.join(",")
    )
}

/// Whether `appkey`'s organisation in the simulator has the user `userid`.
pub fn has_user(server: &SimServer, appkey: &str, userid: &str) -> bool {
    server
        .sim
        .app(appkey)
        .is_some_and(|app| app.org.users.contains_key(userid))
}

/// Writes a configuration file (see [`config_text`]) to `path`.
pub fn write_config(path: &std::path::Path, db_url: &str, sim_url: &str, qps: u32, extra: &str) {
    std::fs::write(path, config_text(db_url, sim_url, qps, extra)).unwrap();
}

/// How often [`eventually`] polls.
const POLL: Duration = Duration::from_millis(25);

/// Polls the async `check` every 25 ms until it returns `Ok`, for at most `within`, and
/// returns its value. `Err` says what the check saw instead; on the deadline the test fails
/// with `what` and the last of those. Every wait in the tests is one of these: none without
/// a deadline, none a fixed sleep.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    eventually_every(what, within, POLL, check).await
}

/// [`eventually`], polling every `every` (a test that must act the moment something
/// happens, such as a kill right after the first commit).
pub async fn eventually_every<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}; last seen: {seen}"
        );
        tokio::time::sleep(every).await;
    }
}

/// [`eventually`] for a check of memory (the simulator's organisation, a log): polls `check`
/// until it holds, for at most `seconds`.
pub async fn holds<F: Fn() -> bool>(what: &str, seconds: u64, check: F) {
    eventually(what, Duration::from_secs(seconds), async || {
        check().then_some(()).ok_or_else(|| "not yet".to_string())
    })
    .await
}

/// `Ok(())` when `done`, else `Err` with `seen` (what [`eventually`]'s check saw).
pub fn done_or(done: bool, seen: impl std::fmt::Debug) -> Result<(), String> {
    if done {
        Ok(())
    } else {
        Err(format!("{seen:?}"))
    }
}
