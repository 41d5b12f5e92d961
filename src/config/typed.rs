//! Raw settings -> typed [`Config`]: defaults, parsing into `Url`, `Duration`, `NonZeroU32`,
//! cron schedules and secrets, with every problem collected under its key. It reads secret
//! files (read-only) and nothing else.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::raw::{RawConfig, RawPull, RawTenant, RawTenantDefaults};
use super::{
    AnnouncementConfig, AnnouncementMode, Config, ConflictWinner, DaemonConfig, DatabaseConfig,
    DatabaseUrl, DingTalkConfig, EventsConfig, EventsMode, LogConfig, LogFormat, MetricsConfig,
    OutboxConfig, Problem, PullConfig, PushConfig, QueueConfig, Switch, SyncConfig, TenantConfig,
    TenantDefaults, TenantId, WatchConfig,
};
use crate::secret::{read_secret_file, Secret};

/// Default DingTalk oapi host.
pub const DEFAULT_BASE_URL: &str = "https://oapi.dingtalk.com";
/// DingTalk's new API host (Stream mode's `connections/open`).
pub const DEFAULT_API_BASE_URL: &str = "https://api.dingtalk.com";
/// Default JeecgBoot address for announcement links.
pub const DEFAULT_ANNOUNCEMENT_BASE_URL: &str = "http://localhost:8080/jeecg-boot";
/// Default pull schedule: every 30 minutes, at second 0.
pub const DEFAULT_PULL_CRON: &str = "0 */30 * * * *";
/// Default full push reconcile: daily at 03:10 (off the top of the hour, as DingTalk advises).
pub const DEFAULT_RECONCILE_CRON: &str = "0 10 3 * * *";
/// JeecgBoot's default password for users created from DingTalk.
pub const JEECG_DEFAULT_PASSWORD: &str = "123456";
const DEFAULT_QPS_PER_API: u32 = 20;
const DEFAULT_POOL_SIZE: u32 = 5;
/// SQLite lets one writer in at a time, and each connection costs a worker thread, a page
/// cache and its own copy of the schema (about 5 MiB in all). Measured on a 10,000-user
/// pull: two wrote as fast as five and peaked 9.6 MiB lower; but at 100,000 users the
/// reader, the planner and the writer of a first pull then waited for each other (B4
/// 1.33 -> 1.62 of its bound). Three.
const DEFAULT_SQLITE_POOL_SIZE: u32 = 3;
const DEFAULT_WORKERS: u32 = 4;
const DEFAULT_MAX_ATTEMPTS: u32 = 12;
const DEFAULT_MAX_DEPARTMENT_DELETES: u32 = 10;
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 5;
const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 20;
const DEFAULT_BACKOFF_BASE_SECS: u64 = 2;
const DEFAULT_BACKOFF_CAP_SECS: u64 = 15 * 60;
const DEFAULT_MAX_WAITS: u32 = 20;
const DEFAULT_WAIT_CAP_SECS: u64 = 30;
const DEFAULT_ANNOUNCEMENT_MAX_AGE_SECS: u64 = 24 * 3600;
const DEFAULT_OUTBOX_MAX_RECIPIENTS: u32 = 1000;

/// Collects problems while building; each helper returns a usable value even when it
/// records a problem, so the whole file is checked in one pass.
struct Checker<'a> {
    problems: &'a mut Vec<Problem>,
    allow_insecure_secret_files: bool,
}

impl Checker<'_> {
    /// `value` as one of `choices` (none given: the first), or a problem naming them.
    fn one_of<T: Copy>(&mut self, key: &str, value: Option<&str>, choices: &[(&str, T)]) -> T {
        let default = choices[0].1;
        let Some(value) = value else {
            return default;
        };
        if let Some((_, chosen)) = choices.iter().find(|(name, _)| *name == value) {
            return *chosen;
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        self.problem(key, format!("`{value}` is not one of {}", names.join(", ")));
        default
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    fn nonzero(&mut self, key: &str, raw: Option<i64>, default: u32) -> NonZeroU32 {
        let fallback = NonZeroU32::new(default).unwrap_or(NonZeroU32::MIN);
        match raw {
            None => fallback,
            Some(value) => match u32::try_from(value).ok().and_then(NonZeroU32::new) {
                Some(value) => value,
                None => {
                    self.problem(
                        key,
                        format!("must be a whole number from 1 to {}, got {value}", u32::MAX),
                    );
                    fallback
                }
            },
        }
    }

    fn count(&mut self, key: &str, raw: Option<i64>, default: u32) -> u32 {
        match raw.map(u32::try_from) {
            None => default,
            Some(Ok(value)) => value,
            Some(Err(_)) => {
                self.problem(key, "must be a whole number of 0 or more");
                default
            }
        }
    }

    fn duration(&mut self, key: &str, raw: Option<&str>, default_secs: u64) -> Duration {
        let fallback = Duration::from_secs(default_secs);
        let Some(text) = raw else { return fallback };
        match humantime::parse_duration(text) {
            Ok(value) if !value.is_zero() => value,
            Ok(_) => {
                self.problem(key, "must be longer than zero");
                fallback
            }
            Err(error) => {
                self.problem(key, format!("`{text}` is not a duration ({error}); write e.g. \"500ms\", \"30s\", \"5m\""));
                fallback
            }
        }
    }

    fn duration_ms(&mut self, key: &str, raw: Option<&str>, default_ms: u64) -> Duration {
        let fallback = Duration::from_millis(default_ms);
        match raw {
            None => fallback,
            Some(text) => {
                let parsed = self.duration(key, Some(text), 1);
                if self.problems.iter().any(|p| p.key == key) {
                    fallback
                } else {
                    parsed
                }
            }
        }
    }

    fn cron(&mut self, key: &str, raw: Option<String>, default: &str) -> String {
        let text = raw.unwrap_or_else(|| default.to_string());
        if let Err(error) = parse_cron(&text) {
            self.problem(
                key,
                format!("`{text}` is not a cron expression ({error}); six fields, seconds first, e.g. \"{default}\""),
            );
        }
        text
    }

    /// A secret given inline (`key`) or as a file (`key_file`): exactly one of them.
    fn secret(
        &mut self,
        key: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("set either {key} or {key}_file, not both"));
                None
            }
            (Some(value), None) if value.is_empty() => {
                self.problem(key, "is empty");
                None
            }
            (Some(value), None) => Some(Secret::new(value)),
            (None, Some(path)) => match read_secret_file(&path, self.allow_insecure_secret_files) {
                Ok(secret) => Some(secret),
                Err(error) => {
                    self.problem(&format!("{key}_file"), error.to_string());
                    None
                }
            },
            (None, None) => None,
        }
    }
}

/// Parses a cron expression exactly as the scheduler will (six fields, seconds required).
pub fn parse_cron(text: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(text)
}

/// Builds the typed configuration. Returns `None` only when a required value is missing
/// entirely; every problem is in `problems` either way.
pub(super) fn build(
    raw: RawConfig,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Option<Config> {
    let mut check = Checker {
        problems,
        allow_insecure_secret_files: raw.allow_insecure_secret_files.unwrap_or(false),
    };
    let database = database(&mut check, raw.database);
    let dingtalk = dingtalk(&mut check, raw.dingtalk);
    let tenants_from_database = raw.tenants_from_database.unwrap_or(false);
    let tenants = tenants(&mut check, raw.tenants, tenants_from_database);
    let pull = pull(&mut check, raw.pull);
    // Every section is checked before any is given up on: all problems are listed at once.
    let push = push(&mut check, raw.push);
    let watch = watch(&mut check, raw.watch);
    let daemon = daemon(&mut check, raw.daemon, warnings);
    let queue = queue(&mut check, raw.queue);
    let log = log(&mut check, raw.log);
    let pull_anywhere = tenants_from_database || tenants.iter().any(|t| t.pull.enabled);
    if pull_anywhere && pull.as_ref().is_some_and(gives_default_password) {
        warnings.push(WEAK_PASSWORD_WARNING.to_string());
    }
    let announcement = announcement(&mut check, raw.announcement);
    let tenant_defaults = tenant_defaults(&raw.tenant_defaults);
    let (sync, events) = modes(&mut check, &raw.sync, &raw.events);
    let metrics = metrics(&mut check, raw.metrics);
    let outbox = outbox(&mut check, raw.outbox);
    Some(Config {
        tenants_from_database,
        allow_insecure_secret_files: check.allow_insecure_secret_files,
        database: database?,
        dingtalk,
        tenants,
        push,
        pull: pull?,
        queue,
        log,
        watch,
        daemon,
        announcement,
        tenant_defaults,
        outbox,
        sync,
        events,
        metrics,
    })
}

/// Whether `[pull]` gives new users JeecgBoot's default password.
fn gives_default_password(pull: &PullConfig) -> bool {
    pull.new_user_password.expose() == JEECG_DEFAULT_PASSWORD
}

/// `[tenant_defaults]`: each direction on unless switched off.
fn tenant_defaults(raw: &RawTenantDefaults) -> TenantDefaults {
    TenantDefaults {
        push: Switch {
            enabled: raw.push.enabled.unwrap_or(true),
        },
        pull: Switch {
            enabled: raw.pull.enabled.unwrap_or(true),
        },
    }
}

/// The warning for a pull that would give new users JeecgBoot's default password.
const WEAK_PASSWORD_WARNING: &str =
    "pull.new_user_password is JeecgBoot's default 123456: users created by a pull get a weak \
     password; set pull.new_user_password_file";

/// `sync.conflict` and `events.mode`.
fn modes(
    check: &mut Checker<'_>,
    sync: &super::raw::RawSync,
    events: &super::raw::RawEvents,
) -> (SyncConfig, EventsConfig) {
    let conflict = check.one_of(
        "sync.conflict",
        sync.conflict.as_deref(),
        &[
            ("jeecgboot", ConflictWinner::Jeecgboot),
            ("dingtalk", ConflictWinner::Dingtalk),
        ],
    );
    let mode = check.one_of(
        "events.mode",
        events.mode.as_deref(),
        &[("stream", EventsMode::Stream), ("off", EventsMode::Off)],
    );
    (SyncConfig { conflict }, EventsConfig { mode })
}

/// `[push]`.
fn push(check: &mut Checker<'_>, raw: super::raw::RawPush) -> PushConfig {
    PushConfig {
        users: raw.users.unwrap_or(true),
        departments: raw.departments.unwrap_or(true),
        delete_departments: raw.delete_departments.unwrap_or(true),
        max_department_deletes: check.count(
            "push.max_department_deletes",
            raw.max_department_deletes,
            DEFAULT_MAX_DEPARTMENT_DELETES,
        ),
        delete_users_on_hard_delete: raw.delete_users_on_hard_delete.unwrap_or(true),
        reconcile_cron: check.cron(
            "push.reconcile_cron",
            raw.reconcile_cron,
            DEFAULT_RECONCILE_CRON,
        ),
    }
}

/// `[watch]`.
fn watch(check: &mut Checker<'_>, raw: super::raw::RawWatch) -> WatchConfig {
    WatchConfig {
        poll_interval: check.duration_ms("watch.poll_interval", raw.poll_interval.as_deref(), 500),
        fallback_poll: check.duration_ms(
            "watch.fallback_poll",
            raw.fallback_poll.as_deref(),
            30_000,
        ),
    }
}

/// `[queue]`; the backoff's cap must not be shorter than its base.
fn queue(check: &mut Checker<'_>, raw: super::raw::RawQueue) -> QueueConfig {
    let queue = QueueConfig {
        workers: check.nonzero("queue.workers", raw.workers, DEFAULT_WORKERS),
        max_attempts: check.nonzero("queue.max_attempts", raw.max_attempts, DEFAULT_MAX_ATTEMPTS),
        backoff_base: check.duration(
            "queue.backoff_base",
            raw.backoff_base.as_deref(),
            DEFAULT_BACKOFF_BASE_SECS,
        ),
        backoff_cap: check.duration(
            "queue.backoff_cap",
            raw.backoff_cap.as_deref(),
            DEFAULT_BACKOFF_CAP_SECS,
        ),
        max_waits: check.nonzero("queue.max_waits", raw.max_waits, DEFAULT_MAX_WAITS),
        wait_cap: check.duration(
            "queue.wait_cap",
            raw.wait_cap.as_deref(),
            DEFAULT_WAIT_CAP_SECS,
        ),
    };
    if queue.backoff_cap < queue.backoff_base {
        check.problem(
            "queue.backoff_cap",
            "must not be shorter than queue.backoff_base",
        );
    }
    queue
}

/// `[announcement]`.
fn announcement(check: &mut Checker<'_>, raw: super::raw::RawAnnouncement) -> AnnouncementConfig {
    AnnouncementConfig {
        base_url: http_url(
            check,
            "announcement.base_url",
            raw.base_url.as_deref(),
            DEFAULT_ANNOUNCEMENT_BASE_URL,
        ),
        max_age: check.duration(
            "announcement.max_age",
            raw.max_age.as_deref(),
            DEFAULT_ANNOUNCEMENT_MAX_AGE_SECS,
        ),
        mode: check.one_of(
            "announcement.mode",
            raw.mode.as_deref(),
            &[
                ("auto", AnnouncementMode::Auto),
                ("always", AnnouncementMode::Always),
                ("never", AnnouncementMode::Never),
            ],
        ),
    }
}

/// `[metrics]`: `listen` an address and port, or off.
fn metrics(check: &mut Checker<'_>, raw: super::raw::RawMetrics) -> MetricsConfig {
    let listen = match raw.listen.as_deref().map(str::trim) {
        None | Some("") | Some("off") => None,
        Some(text) => text.parse::<std::net::SocketAddr>().ok().or_else(|| {
            check.problem(
                "metrics.listen",
                format!("`{text}` is not an address and port, e.g. 127.0.0.1:9464 (or \"off\")"),
            );
            None
        }),
    };
    MetricsConfig { listen }
}

/// `[outbox]`.
fn outbox(check: &mut Checker<'_>, raw: super::raw::RawOutbox) -> OutboxConfig {
    OutboxConfig {
        enabled: raw.enabled.unwrap_or(true),
        allow_to_all: raw.allow_to_all.unwrap_or(false),
        max_recipients: check.nonzero(
            "outbox.max_recipients",
            raw.max_recipients,
            DEFAULT_OUTBOX_MAX_RECIPIENTS,
        ),
    }
}

/// `[daemon]`; the time zone defaults to the system's (a warning when it cannot be told).
fn daemon(
    check: &mut Checker<'_>,
    raw: super::raw::RawDaemon,
    warnings: &mut Vec<String>,
) -> DaemonConfig {
    let timezone = match raw.timezone.as_deref() {
        Some(name) => name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
            check.problem(
                "daemon.timezone",
                format!("`{name}` is not an IANA time zone name, e.g. \"Asia/Shanghai\""),
            );
            chrono_tz::UTC
        }),
        None => system_timezone().unwrap_or_else(|| {
            warnings.push(
                "cannot tell the system's time zone: crons run in UTC; set daemon.timezone (e.g. \"Asia/Shanghai\")"
                    .to_string(),
            );
            chrono_tz::UTC
        }),
    };
    DaemonConfig {
        drain_timeout: check.duration_ms(
            "daemon.drain_timeout",
            raw.drain_timeout.as_deref(),
            10_000,
        ),
        lease_ttl: check.duration_ms("daemon.lease_ttl", raw.lease_ttl.as_deref(), 30_000),
        retention: check.duration_ms(
            "daemon.retention",
            raw.retention.as_deref(),
            7 * 24 * 3600 * 1000,
        ),
        timezone,
    }
}

/// The system's local time zone (`/etc/localtime`), when it has an IANA name.
pub fn system_timezone() -> Option<chrono_tz::Tz> {
    iana_time_zone::get_timezone().ok()?.parse().ok()
}

fn database(check: &mut Checker<'_>, raw: super::raw::RawDatabase) -> Option<DatabaseConfig> {
    let Some(secret) = check.secret("database.url", raw.url, raw.url_file) else {
        if !check
            .problems
            .iter()
            .any(|p| p.key.starts_with("database.url"))
        {
            check.problem("database.url", "missing; give the JeecgBoot database, e.g. mysql://dingsync:PASSWORD@127.0.0.1:3306/jeecg-boot");
        }
        // Its other problems are listed too.
        check.nonzero("database.pool_size", raw.pool_size, DEFAULT_POOL_SIZE);
        return None;
    };
    let url = DatabaseUrl::parse(secret.expose());
    let default = match &url {
        Ok(url) if url.backend() == super::Backend::Sqlite => DEFAULT_SQLITE_POOL_SIZE,
        _ => DEFAULT_POOL_SIZE,
    };
    let pool_size = check.nonzero("database.pool_size", raw.pool_size, default);
    match url {
        Ok(url) => Some(DatabaseConfig { url, pool_size }),
        Err(error) => {
            // The URL may hold a password: report what is wrong, never the text itself.
            check.problem("database.url", error);
            None
        }
    }
}

/// An http(s) URL with a host, or `default`.
fn http_url(check: &mut Checker<'_>, key: &str, raw: Option<&str>, default: &str) -> Url {
    let fallback =
        || Url::parse(default).unwrap_or_else(|_| unreachable!("default URLs are valid"));
    match raw.map(Url::parse) {
        None => fallback(),
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
        Some(Ok(url)) => {
            check.problem(key, format!("`{url}` is not an http(s) URL with a host"));
            fallback()
        }
        Some(Err(error)) => {
            check.problem(key, error.to_string());
            fallback()
        }
    }
}

fn dingtalk(check: &mut Checker<'_>, raw: super::raw::RawDingTalk) -> DingTalkConfig {
    let base_url = http_url(
        check,
        "dingtalk.base_url",
        raw.base_url.as_deref(),
        DEFAULT_BASE_URL,
    );
    // A simulator or a proxy serves both APIs at one address: the new API follows base_url
    // unless base_url is DingTalk's own oapi host.
    let api_default = match base_url.host_str() {
        Some(host) if host == "dingtalk.com" || host.ends_with(".dingtalk.com") => {
            DEFAULT_API_BASE_URL.to_string()
        }
        _ => base_url.as_str().trim_end_matches('/').to_string(),
    };
    let api_base_url = http_url(
        check,
        "dingtalk.api_base_url",
        raw.api_base_url.as_deref(),
        &api_default,
    );
    DingTalkConfig {
        base_url,
        api_base_url,
        connect_timeout: check.duration(
            "dingtalk.connect_timeout",
            raw.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT_SECS,
        ),
        request_timeout: check.duration(
            "dingtalk.request_timeout",
            raw.request_timeout.as_deref(),
            DEFAULT_REQUEST_TIMEOUT_SECS,
        ),
        qps_per_api: check.nonzero("dingtalk.qps_per_api", raw.qps_per_api, DEFAULT_QPS_PER_API),
    }
}

fn tenants(check: &mut Checker<'_>, raw: Vec<RawTenant>, from_database: bool) -> Vec<TenantConfig> {
    if raw.is_empty() && !from_database {
        check.problem("tenant", "no [[tenant]] configured; add one (id = 0 for a single-tenant JeecgBoot) or set tenants_from_database = true");
    }
    let mut tenants: Vec<TenantConfig> = Vec::new();
    for (index, tenant) in raw.into_iter().enumerate() {
        let key = format!("tenant[{index}]");
        if let Some(built) = tenant_config(check, &key, tenant) {
            if tenants.iter().any(|t| t.id == built.id) {
                check.problem(
                    &format!("{key}.id"),
                    format!("tenant id {} appears twice", built.id),
                );
            }
            tenants.push(built);
        }
    }
    let ids: Vec<i64> = tenants.iter().map(|t| t.id).collect();
    if let Some(message) = tenant_zero_beside_others(&ids) {
        let index = tenants.iter().position(|t| t.id == 0).unwrap_or(0);
        check.problem(&format!("tenant[{index}].id"), message.to_string());
    }
    tenants
}

/// The tenant rule broken: tenant 0 configured beside `others`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("tenant 0 owns every row and cannot be configured beside tenants {}; give each JeecgBoot tenant its own id, or use tenant 0 alone", .others.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
pub struct TenantRuleError {
    /// The other tenants' ids, in the order given.
    pub others: Vec<TenantId>,
}

/// The tenant rule: tenant 0 (a single-tenant installation) owns every row, so it cannot
/// stand beside other tenants — their rows would be pushed to two DingTalk apps. `None`
/// when `ids` keep the rule.
pub fn tenant_zero_beside_others(ids: &[i64]) -> Option<TenantRuleError> {
    let others: Vec<TenantId> = ids.iter().copied().filter(|id| *id != 0).collect();
    (ids.contains(&0) && !others.is_empty()).then_some(TenantRuleError { others })
}

fn tenant_config(check: &mut Checker<'_>, key: &str, raw: RawTenant) -> Option<TenantConfig> {
    let id = tenant_id(check, key, raw.id);
    let agent_id = agent_id(check, key, raw.agent_id);
    let client_id = match raw.client_id {
        Some(client) if !client.trim().is_empty() => Some(client),
        _ => {
            check.problem(
                &format!("{key}.client_id"),
                "missing; the app's AppKey from the DingTalk console",
            );
            None
        }
    };
    let client_secret = client_secret(check, key, (raw.client_secret, raw.client_secret_file), id);
    Some(TenantConfig {
        id: id?,
        agent_id: agent_id?,
        client_id: client_id?,
        client_secret: client_secret?,
        push: Switch {
            enabled: raw.push.enabled.unwrap_or(true),
        },
        pull: Switch {
            enabled: raw.pull.enabled.unwrap_or(true),
        },
        source: super::TenantSource::File,
    })
}

/// A tenant's `id`: JeecgBoot's tenant_id, 0 or more.
fn tenant_id(check: &mut Checker<'_>, key: &str, raw: Option<i64>) -> Option<i64> {
    let problem = match raw {
        Some(id) if id >= 0 => return Some(id),
        Some(id) => format!("must be 0 or more (JeecgBoot tenant_id), got {id}"),
        None => "missing; JeecgBoot's tenant_id, 0 for a single-tenant installation".into(),
    };
    check.problem(&format!("{key}.id"), problem);
    None
}

/// A tenant's `agent_id`: the app's AgentId, positive.
fn agent_id(check: &mut Checker<'_>, key: &str, raw: Option<i64>) -> Option<i64> {
    let problem = match raw {
        Some(agent) if agent > 0 => return Some(agent),
        Some(agent) => format!("must be a positive AgentId, got {agent}"),
        None => "missing; the app's AgentId from the DingTalk console".into(),
    };
    check.problem(&format!("{key}.agent_id"), problem);
    None
}

/// A tenant's AppSecret, from `client_secret` or `client_secret_file` (`raw`); when neither
/// gives one and no problem says why, a problem naming where it can come from.
fn client_secret(
    check: &mut Checker<'_>,
    key: &str,
    (secret, file): (Option<String>, Option<std::path::PathBuf>),
    id: Option<i64>,
) -> Option<Secret> {
    let secret_key = format!("{key}.client_secret");
    let client_secret = check.secret(&secret_key, secret, file);
    let told = check
        .problems
        .iter()
        .any(|p| p.key.starts_with(&secret_key));
    if client_secret.is_none() && !told {
        let hint = match id {
            Some(id) => format!(" or DINGSYNC_TENANT_{id}_CLIENT_SECRET"),
            None => String::new(),
        };
        check.problem(
            &secret_key,
            format!("missing; the app's AppSecret: set client_secret_file{hint}"),
        );
    }
    client_secret
}

fn pull(check: &mut Checker<'_>, raw: RawPull) -> Option<PullConfig> {
    let cron = check.cron("pull.cron", raw.cron, DEFAULT_PULL_CRON);
    let password = match (raw.new_user_password, raw.new_user_password_file) {
        (None, None) => Some(Secret::new(JEECG_DEFAULT_PASSWORD)),
        (inline, file) => check.secret("pull.new_user_password", inline, file),
    };
    Some(PullConfig {
        cron,
        new_user_password: password?,
    })
}

fn log(check: &mut Checker<'_>, raw: super::raw::RawLog) -> LogConfig {
    let format = match raw.format.as_deref() {
        None | Some("auto") => LogFormat::Auto,
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => {
            check.problem(
                "log.format",
                format!("`{other}` is not one of auto, json, text"),
            );
            LogFormat::Auto
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_string());
    if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        check.problem(
            "log.level",
            format!(
                "`{level}` is not a log filter ({error}); e.g. \"info\" or \"info,dingsync=debug\""
            ),
        );
    }
    LogConfig { format, level }
}
