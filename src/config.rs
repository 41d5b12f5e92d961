//! Configuration: load, layer, validate and redact.
//!
//! Layers, lowest first: built-in defaults < TOML file < `DINGSYNC_*` environment < CLI flags.
//! The raw layers (`raw`, `layers`) are parsed into the typed [`Config`] by `typed`, which
//! collects every problem into one [`ConfigError`]. Loading never panics and never writes a
//! file. Secrets are [`Secret`]s, so `Debug` and the `check-config` rendering print `***`.

mod layers;
mod raw;
mod typed;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use url::Url;

pub use layers::ENV_PREFIX;
pub use typed::{system_timezone, tenant_zero_beside_others, TenantRuleError};

use crate::secret::Secret;

/// The configuration file used when neither `--config` nor `DINGSYNC_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/dingsync/dingsync.toml";

/// The fully commented example configuration, the reference for every key.
pub const EXAMPLE_CONFIG: &str = include_str!("../config/dingsync.example.toml");

/// The typed, validated configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// Read JeecgBoot's `sys_third_app_config` for more tenants.
    pub tenants_from_database: bool,
    /// Accept `*_file` secrets that group or others can read.
    pub allow_insecure_secret_files: bool,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[dingtalk]`.
    pub dingtalk: DingTalkConfig,
    /// `[[tenant]]`, in file order.
    #[serde(rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// `[push]`.
    pub push: PushConfig,
    /// `[pull]`.
    pub pull: PullConfig,
    /// `[queue]`.
    pub queue: QueueConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[watch]`.
    pub watch: WatchConfig,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// `[announcement]`.
    pub announcement: AnnouncementConfig,
    /// `[tenant_defaults]`.
    pub tenant_defaults: TenantDefaults,
    /// `[outbox]`.
    pub outbox: OutboxConfig,
    /// `[sync]`.
    pub sync: SyncConfig,
    /// `[events]`.
    pub events: EventsConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the daemon's Prometheus metrics and health endpoints.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct MetricsConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (off when `None`, the
    /// default). Port 0 picks a free port (logged as `metrics.listening`).
    pub listen: Option<std::net::SocketAddr>,
}

/// `[events]`: DingTalk's address-book events, which make the pull instant.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct EventsConfig {
    /// How they arrive.
    pub mode: EventsMode,
}

/// How DingTalk's events reach dingsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventsMode {
    /// Stream mode: a WebSocket the daemon opens per tenant (the default).
    Stream,
    /// None: DingTalk's changes wait for the scheduled pull.
    Off,
}

/// `[sync]`: how the two directions settle differences.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SyncConfig {
    /// Who wins when a field changed on both sides since it was last synced.
    pub conflict: ConflictWinner,
}

/// The side whose value stands in a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictWinner {
    /// JeecgBoot, the system of record in JeecgBoot's guide (the default).
    Jeecgboot,
    /// DingTalk.
    Dingtalk,
}

/// `[announcement]`: system announcements delivered to DingTalk.
#[derive(Clone, Debug, Serialize)]
pub struct AnnouncementConfig {
    /// JeecgBoot's address; the "详情" button opens `<base_url>/sys/annountCement/show/<id>`.
    pub base_url: Url,
    /// An announcement whose `send_time` (else `create_time`) is older is not sent (a
    /// restored backup or an imported table must not message the company).
    #[serde(serialize_with = "human_duration")]
    pub max_age: Duration,
    /// Who sends (and recalls) announcements.
    pub mode: AnnouncementMode,
}

/// `announcement.mode`: who sends a tenant's announcements to DingTalk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnouncementMode {
    /// JeecgBoot, for a tenant whose JeecgBoot DingTalk integration is enabled (its
    /// `sys_third_app_config` row has `status` 1 or NULL and real credentials: JeecgBoot
    /// sends on publish itself); dingsync for the others (the default).
    Auto,
    /// dingsync, always (beside an enabled JeecgBoot integration, notices arrive twice).
    Always,
    /// Nobody: dingsync sends no announcement (the outbox and `dingsync message` still work).
    Never,
}

/// `[tenant_defaults]`: the switches of tenants read from `sys_third_app_config`
/// (`tenants_from_database`), which has no place for them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TenantDefaults {
    /// `push.enabled`.
    pub push: Switch,
    /// `pull.enabled`.
    pub pull: Switch,
}

/// `[outbox]`: work notifications other programs queue in `dingsync_outbox`. Whoever can
/// INSERT into that table can message the company: these are the limits on them.
#[derive(Clone, Debug, Serialize)]
pub struct OutboxConfig {
    /// Deliver outbox rows at all.
    pub enabled: bool,
    /// Accept rows with `to_all = 1` (a message to everyone).
    pub allow_to_all: bool,
    /// Most recipients (userids, usernames and departments together) one row may name.
    pub max_recipients: NonZeroU32,
}

/// `[watch]`: how `dingsync run` notices local changes.
#[derive(Clone, Debug, Serialize)]
pub struct WatchConfig {
    /// MariaDB/MySQL: how often the change log is polled (they have no notifications).
    #[serde(serialize_with = "human_duration")]
    pub poll_interval: Duration,
    /// Every database: a poll that covers lost wake-ups.
    #[serde(serialize_with = "human_duration")]
    pub fallback_poll: Duration,
}

/// `[daemon]`: the long-running process.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonConfig {
    /// On SIGTERM, how long in-flight jobs may take to finish.
    #[serde(serialize_with = "human_duration")]
    pub drain_timeout: Duration,
    /// Lifetime of job, cron and tenant leases (renewed while held).
    #[serde(serialize_with = "human_duration")]
    pub lease_ttl: Duration,
    /// Done and dead jobs and change rows older than this are purged.
    #[serde(serialize_with = "human_duration")]
    pub retention: Duration,
    /// The time zone of every cron (`pull.cron`, `push.reconcile_cron`).
    #[serde(serialize_with = "zone_name")]
    pub timezone: chrono_tz::Tz,
}

/// `[database]`: the JeecgBoot database, which also holds dingsync's own tables.
#[derive(Clone, Debug, Serialize)]
pub struct DatabaseConfig {
    /// Connection URL; its password is redacted when shown.
    pub url: DatabaseUrl,
    /// Most connections held open.
    pub pool_size: NonZeroU32,
}

/// Which SQL dialect a database URL speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `sqlite:`
    Sqlite,
    /// `mysql:` / `mariadb:`
    MySql,
    /// `postgres:` / `postgresql:`
    Postgres,
}

/// A database URL. The full text is a [`Secret`] (it may hold a password); `Display`,
/// `Debug` and serialisation show it with the password replaced by `***`.
#[derive(Clone)]
pub struct DatabaseUrl {
    full: Secret,
    redacted: String,
    backend: Backend,
}

impl DatabaseUrl {
    /// Parses a `sqlite:`, `mysql:`, `mariadb:`, `postgres:` or `postgresql:` URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut url = Url::parse(text).map_err(|error| error.to_string())?;
        let backend = match url.scheme() {
            "sqlite" => Backend::Sqlite,
            "mysql" | "mariadb" => Backend::MySql,
            "postgres" | "postgresql" => Backend::Postgres,
            other => {
                return Err(format!(
                    "unsupported scheme `{other}` (expected sqlite:, mysql:, mariadb: or postgres:)"
                ))
            }
        };
        tls_of(&url, backend)?;
        if url.password().is_some() {
            // Only fails for cannot-be-a-base URLs, which carry no password.
            let _ = url.set_password(Some("***"));
        }
        Ok(Self {
            full: Secret::new(text),
            redacted: url.to_string(),
            backend,
        })
    }

    /// The URL with its password, for the one place that connects.
    pub fn expose(&self) -> &str {
        self.full.expose()
    }

    /// The dialect.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection's TLS as the URL asks for it, for `check-config`: "verify-full (CA
    /// /etc/dingsync/db-ca.pem)", "prefer (the default: TLS when the server offers it, its
    /// certificate not verified)", "none (a file)".
    pub fn tls(&self) -> String {
        Url::parse(self.full.expose())
            .ok()
            .and_then(|url| tls_of(&url, self.backend).ok())
            .unwrap_or_default()
    }
}

/// The TLS mode and CA a URL names, checked against the driver's modes (sqlx's: MySQL's
/// `ssl-mode` / `ssl-ca`, PostgreSQL's `sslmode` / `sslrootcert`, as libpq and MySQL's
/// client name them).
/// A backend's TLS settings in the URL: the keys naming the mode and the CA, the modes, the
/// default mode.
struct TlsKeys {
    mode: &'static [&'static str],
    ca: &'static [&'static str],
    modes: &'static [&'static str],
    default: &'static str,
}

/// The TLS keys of a server backend (`None` for SQLite, a file).
fn tls_keys(backend: Backend) -> Option<TlsKeys> {
    match backend {
        Backend::Sqlite => None,
        Backend::MySql => Some(TlsKeys {
            mode: &["ssl-mode", "sslmode"],
            ca: &["ssl-ca", "sslca"],
            modes: &[
                "disabled",
                "preferred",
                "required",
                "verify_ca",
                "verify_identity",
            ],
            default: "preferred",
        }),
        Backend::Postgres => Some(TlsKeys {
            mode: &["sslmode", "ssl-mode"],
            ca: &["sslrootcert", "ssl-root-cert", "ssl-ca"],
            modes: &[
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ],
            default: "prefer",
        }),
    }
}

fn tls_of(url: &Url, backend: Backend) -> Result<String, String> {
    let Some(keys) = tls_keys(backend) else {
        return Ok("none (a file)".into());
    };
    // The driver takes the last of repeated keys: so does this.
    let find = |names: &[&str]| {
        url.query_pairs()
            .filter(|(k, _)| names.contains(&k.as_ref()))
            .last()
            .map(|(_, v)| v.into_owned())
    };
    let ca = find(keys.ca);
    let Some(mode) = find(keys.mode) else {
        return Ok(format!(
            "{} (the default: TLS when the server offers it, its certificate not verified{})",
            keys.default,
            ca.map(|ca| format!("; CA {ca}")).unwrap_or_default()
        ));
    };
    let lower = mode.to_ascii_lowercase();
    if !keys.modes.contains(&lower.as_str()) {
        return Err(format!(
            "{} = `{mode}` is not one of {}",
            keys.mode[0],
            keys.modes.join(", ")
        ));
    }
    // sqlx trusts the named CA besides the bundled Mozilla roots; without a host-name check
    // (verify_ca / verify-ca) any publicly trusted certificate would pass.
    let roots = match ca {
        Some(ca) => format!("CA {ca} and the bundled Mozilla roots"),
        None => "CA: the bundled Mozilla roots".to_string(),
    };
    let full = if backend == Backend::MySql {
        "VERIFY_IDENTITY"
    } else {
        "verify-full"
    };
    Ok(match lower.as_str() {
        "verify_identity" | "verify-full" => format!("{lower} ({roots}; host name checked)"),
        "verify_ca" | "verify-ca" => {
            format!("{lower} ({roots}; host name NOT checked: prefer {full})")
        }
        "allow" => "allow (sqlx does not use TLS in this mode)".to_string(),
        _ => lower,
    })
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted)
    }
}

/// `[dingtalk]`: how to reach DingTalk.
#[derive(Clone, Debug, Serialize)]
pub struct DingTalkConfig {
    /// Base URL of the oapi host.
    pub base_url: Url,
    /// Base URL of the new API host (`https://api.dingtalk.com`), where Stream mode's
    /// `connections/open` is. Defaults to `base_url` when that is not DingTalk's own host (a
    /// simulator or a proxy serves both).
    pub api_base_url: Url,
    /// TCP + TLS connect timeout.
    #[serde(serialize_with = "human_duration")]
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    #[serde(serialize_with = "human_duration")]
    pub request_timeout: Duration,
    /// Calls per second per app per API path (DingTalk allows 20).
    pub qps_per_api: NonZeroU32,
}

/// JeecgBoot's `tenant_id`: 0 for a single-tenant installation.
pub type TenantId = i64;

/// One `[[tenant]]`: a JeecgBoot tenant and its DingTalk app.
#[derive(Clone, Debug, Serialize)]
pub struct TenantConfig {
    /// JeecgBoot's `tenant_id`.
    pub id: TenantId,
    /// DingTalk AgentId.
    pub agent_id: i64,
    /// DingTalk AppKey.
    pub client_id: String,
    /// DingTalk AppSecret.
    pub client_secret: Secret,
    /// `push.enabled`: push local changes to DingTalk for this tenant.
    pub push: Switch,
    /// `pull.enabled`: pull DingTalk into the local database ("同步到本地开关").
    pub pull: Switch,
    /// Where its credentials come from: a `[[tenant]]` entry, or a `sys_third_app_config`
    /// row (`tenants_from_database`).
    #[serde(skip)]
    pub source: TenantSource,
}

/// Where a tenant's credentials come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantSource {
    /// A `[[tenant]]` entry of the configuration (or `DINGSYNC_TENANT_*`).
    #[default]
    File,
    /// A `sys_third_app_config` row of JeecgBoot's database.
    SysThirdAppConfig,
}

/// An on/off switch written as `<name>.enabled`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Switch {
    /// On or off.
    pub enabled: bool,
}

/// `[push]`: what local -> DingTalk does.
#[derive(Clone, Debug, Serialize)]
pub struct PushConfig {
    /// Push users.
    pub users: bool,
    /// Push departments.
    pub departments: bool,
    /// Delete DingTalk departments that the local side lacks.
    pub delete_departments: bool,
    /// Refuse a run that would delete more DingTalk departments than this.
    pub max_department_deletes: u32,
    /// Delete a DingTalk user when its local row is deleted for good.
    pub delete_users_on_hard_delete: bool,
    /// When the full push reconcile runs (six fields, seconds first).
    pub reconcile_cron: String,
}

/// `[pull]`: what DingTalk -> local does.
#[derive(Clone, Debug, Serialize)]
pub struct PullConfig {
    /// When to pull (six fields, seconds first).
    pub cron: String,
    /// Password given to users created by a pull.
    pub new_user_password: Secret,
}

/// `[queue]`: the retry queue.
#[derive(Clone, Debug, Serialize)]
pub struct QueueConfig {
    /// Concurrent job executors.
    pub workers: NonZeroU32,
    /// Attempts before a job goes dead.
    pub max_attempts: NonZeroU32,
    /// First retry delay.
    #[serde(serialize_with = "human_duration")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(serialize_with = "human_duration")]
    pub backoff_cap: Duration,
    /// Times a job may wait for something it needs (a department DingTalk lacks yet) before
    /// it is dead: nothing waits forever.
    pub max_waits: NonZeroU32,
    /// Longest single wait (the first is 200 ms, doubling).
    #[serde(serialize_with = "human_duration")]
    pub wait_cap: Duration,
}

/// `[log]`.
#[derive(Clone, Debug, Serialize)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `info,dingsync=debug`.
    pub level: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal (journald), text on a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

fn zone_name<S: serde::Serializer>(zone: &chrono_tz::Tz, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(zone.name())
}

fn human_duration<S: serde::Serializer>(
    value: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*value).to_string())
}

impl Config {
    /// The tenant ids, for the start-up log line.
    pub fn tenant_ids(&self) -> Vec<TenantId> {
        self.tenants.iter().map(|tenant| tenant.id).collect()
    }

    /// The effective configuration as TOML, every secret shown as `***`.
    pub fn render(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

/// One thing wrong with the configuration, named by its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key (`dingtalk.base_url`, `tenant[0].client_secret`) or variable name.
    pub key: String,
    /// What is wrong, and what to do.
    pub message: String,
}

impl Problem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why the configuration could not be loaded. Never holds a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more settings are wrong; all of them are listed.
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), ProblemList(.0))]
    Invalid(Vec<Problem>),
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Everything besides the file that shapes the configuration.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--config`; else `DINGSYNC_CONFIG`; else [`DEFAULT_CONFIG_PATH`].
    pub path: Option<PathBuf>,
    /// The environment (only `DINGSYNC_*` names are read).
    pub env: BTreeMap<String, String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

impl LoadOptions {
    /// Options with this process's environment.
    pub fn from_process_env() -> Self {
        Self {
            env: std::env::vars().collect(),
            ..Self::default()
        }
    }

    /// The configuration file that will be read.
    pub fn config_path(&self) -> PathBuf {
        self.path
            .clone()
            .or_else(|| self.env.get("DINGSYNC_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }
}

/// A loaded configuration, with where it came from and what was odd about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// The file it was read from.
    pub path: PathBuf,
    /// Things worth a warning that do not stop dingsync (unknown variables, weak password).
    pub warnings: Vec<String>,
}

/// Loads the configuration: file, then environment, then flags; every problem reported.
pub fn load(options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let path = options.config_path();
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let mut loaded = load_str(&text, &path, options)?;
    loaded.path = path;
    Ok(loaded)
}

/// Like [`load`], with the file's text given.
pub fn load_str(text: &str, path: &Path, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let mut root: toml::Value = toml::from_str(text).map_err(|error| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: error.to_string().trim_end().to_string(),
    })?;
    let mut problems: Vec<Problem> = Vec::new();
    let mut warnings = layers::apply_env(&mut root, &options.env, &mut problems);
    if let Some(format) = options.log_format {
        let name = format!("{format:?}").to_lowercase();
        layers::apply_flag(&mut root, "log.format", &name, &mut problems);
    }
    if let Some(level) = &options.log_level {
        layers::apply_flag(&mut root, "log.level", level, &mut problems);
    }
    let raw = raw::deserialize_collecting(root, &mut problems);
    let config = typed::build(raw, &mut problems, &mut warnings);
    match config {
        Some(config) if problems.is_empty() => Ok(Loaded {
            config,
            path: path.to_path_buf(),
            warnings,
        }),
        _ => {
            problems.sort_by(|a, b| a.key.cmp(&b.key));
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests;
