//! The command line's one error type and its exit codes (sysexits.h, [`crate::exit`]). Every
//! command returns `Result<(), CliError>`; [`report`] logs the error, prints it and gives the
//! code, so a failure is told the same way whichever command met it. The cases the commands
//! meet themselves are typed here too ([`UsageError`], [`Refusal`], [`ProcessError`]), each
//! variant with the message it prints; [`CliError::exit_code`] is the one mapping to codes.

use crate::config::{ConfigError, TenantId};
use crate::daemon::DaemonError;
use crate::dingtalk::DingTalkError;
use crate::exit;
use crate::store::StoreError;
use crate::sync::run::{RunError, TenantsError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asked for something that cannot be (64).
    #[error("{0}")]
    Usage(#[from] UsageError),
    /// The configuration is invalid (78).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The database could not be reached (69).
    #[error("cannot reach the database {url}: {source}")]
    Connect {
        /// The database, redacted.
        url: String,
        /// What the driver said.
        source: StoreError,
    },
    /// A database operation failed: 69 when the database went away, 65 when it refused.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The tenants could not be told: 78 for a broken tenant rule, 69 for the database.
    #[error("{0}")]
    Tenants(#[from] TenantsError),
    /// A tenant's DingTalk client could not be built (69).
    #[error("{0}")]
    DingTalk(#[from] DingTalkError),
    /// A run could not start, or could not read DingTalk or the database (69).
    #[error("tenant {tenant}: {source}")]
    Run {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        source: RunError,
    },
    /// These tenants' runs could not start or read (each told as it happened) (69).
    #[error("tenant(s) {} not synced; the reasons are above", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    NotRun(Vec<TenantId>),
    /// Another run of the tenant still holds its run lease (75).
    #[error("tenant {tenant}: another run is still going (run lease held by {holder}); waited {}; try again later", humantime::format_duration(*.waited))]
    Busy {
        /// The tenant.
        tenant: TenantId,
        /// Who holds the lease.
        holder: String,
        /// How long `sync` waited.
        waited: std::time::Duration,
    },
    /// The daemon could not run: 78 when not initialised or the tenants break their rule,
    /// 69 else.
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    /// What was asked was refused, or some entities failed, each reported above (65).
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// The process could not set itself up: the async runtime, signal handlers (69).
    #[error("{0}")]
    Process(#[from] ProcessError),
    /// `dingsync demo` could not go on (69).
    #[error("demo: {0}")]
    Demo(#[from] super::demo::DemoError),
}

/// What the command line asked for that cannot be (64).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// `sync` / `plan --tenant` named a tenant that is not configured (`None`: no tenant is).
    #[error("no such tenant configured: {}", .0.map_or("any".into(), |t| t.to_string()))]
    NoSuchTenant(Option<TenantId>),
    /// `message --tenant` named a tenant that is not configured.
    #[error("no tenant {0} configured")]
    TenantNotConfigured(TenantId),
    /// `message` without `--tenant` while several tenants are configured.
    #[error("several tenants are configured: name one with --tenant")]
    TenantNotNamed,
    /// `uninstall` without `--yes`.
    #[error("uninstall drops dingsync's tables (queue, snapshots, deliveries) and triggers; add --yes to confirm")]
    UninstallUnconfirmed,
    /// `message send` without a body (clap's group requires one).
    #[error("give --text, --markdown or --action-card")]
    NoMessage,
    /// A message field is longer than DingTalk allows.
    #[error("{field} is {length} characters; DingTalk allows {max}")]
    TooLong {
        /// The field, as the operator knows it (`markdown title`).
        field: &'static str,
        /// Its length, in characters.
        length: usize,
        /// DingTalk's limit, in characters.
        max: usize,
    },
    /// The encoded message is larger than DingTalk takes.
    #[error("the message is {bytes} bytes; DingTalk allows {max}")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// DingTalk's limit (`MAX_MESSAGE_BYTES`).
        max: usize,
    },
}

/// What was asked and refused, or a run whose entities failed (65).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// `queue retry` found no dead job to retry.
    #[error("no such dead job")]
    NoDeadJob,
    /// `queue drop` found no job of that id that is not running.
    #[error("no job {0} that is not running")]
    NoIdleJob(i64),
    /// `sync`: some entities failed (each told above).
    #[error("some entities failed; each is listed above with its reason")]
    EntitiesFailed,
    /// `message send --to`: these usernames have no DingTalk link.
    #[error("not linked to DingTalk (sync them first): {}", .0.join(","))]
    NotLinked(Vec<String>),
    /// `message`: DingTalk refused the call (65), or could not be reached or is throttling
    /// (69: worth trying again).
    #[error("{0}")]
    DingTalk(#[from] DingTalkError),
}

/// Why the process could not set itself up (69).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The tokio runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// `run` could not install its SIGTERM/SIGINT/SIGHUP handlers.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl CliError {
    /// The exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Config(_)
            | Self::Tenants(TenantsError::Rule(_))
            | Self::Daemon(DaemonError::NotInitialised { .. } | DaemonError::Tenants(_)) => {
                exit::CONFIG
            }
            Self::Store(StoreError::Database(sqlx::Error::Database(_))) => exit::DATA_ERR,
            Self::Store(StoreError::Database(_)) => exit::UNAVAILABLE,
            Self::Refused(Refusal::DingTalk(error)) if error.is_retryable() => exit::UNAVAILABLE,
            Self::Store(_) | Self::Refused(_) => exit::DATA_ERR,
            Self::Busy { .. } => exit::TEMPFAIL,
            Self::Connect { .. }
            | Self::Tenants(TenantsError::Store(_))
            | Self::DingTalk(_)
            | Self::Run { .. }
            | Self::NotRun(_)
            | Self::Daemon(_)
            | Self::Process(_)
            | Self::Demo(_) => exit::UNAVAILABLE,
        }
    }
}

/// Logs `error` as its event, prints it for the operator and returns its exit code.
pub fn report(error: &CliError) -> u8 {
    match error {
        CliError::Connect { url, source } => {
            tracing::error!(event = "store.unavailable", database = %url, error = %source, "cannot reach the database");
        }
        CliError::Store(source) => {
            tracing::error!(event = "store.failed", error = %source, "database operation failed");
        }
        CliError::Daemon(source) => {
            tracing::error!(event = "daemon.failed", error = %source, "daemon could not run");
        }
        CliError::Run { tenant, source } => {
            tracing::error!(event = "sync.run.failed", tenant, error = %source, "sync run could not start");
        }
        _ => {}
    }
    eprintln!("dingsync: {error}");
    error.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line, configuration, database, daemon and lease cases, with their codes.
    fn set_up_cases() -> Vec<(CliError, u8)> {
        let io = || StoreError::Database(sqlx::Error::PoolTimedOut);
        vec![
            (UsageError::NoSuchTenant(Some(3)).into(), exit::USAGE),
            (UsageError::TenantNotConfigured(3).into(), exit::USAGE),
            (UsageError::TenantNotNamed.into(), exit::USAGE),
            (UsageError::UninstallUnconfirmed.into(), exit::USAGE),
            (UsageError::NoMessage.into(), exit::USAGE),
            (too_long().into(), exit::USAGE),
            (too_large().into(), exit::USAGE),
            (
                CliError::Tenants(TenantsError::Rule(tenant_rule())),
                exit::CONFIG,
            ),
            (
                CliError::Tenants(TenantsError::Store(io())),
                exit::UNAVAILABLE,
            ),
            (
                CliError::Daemon(DaemonError::Tenants(tenant_rule())),
                exit::CONFIG,
            ),
            (
                CliError::Daemon(DaemonError::NotInitialised {
                    found: 0,
                    needed: 1,
                }),
                exit::CONFIG,
            ),
            (
                CliError::Daemon(DaemonError::Store(io())),
                exit::UNAVAILABLE,
            ),
            (CliError::Store(io()), exit::UNAVAILABLE),
            (
                CliError::Connect {
                    url: "sqlite:x".into(),
                    source: io(),
                },
                exit::UNAVAILABLE,
            ),
            (CliError::NotRun(vec![1, 2]), exit::UNAVAILABLE),
            (
                CliError::Busy {
                    tenant: 1,
                    holder: "h".into(),
                    waited: std::time::Duration::from_secs(1),
                },
                exit::TEMPFAIL,
            ),
        ]
    }

    /// The refusals, the process's set-up and the demo, with their codes.
    fn refusal_cases() -> Vec<(CliError, u8)> {
        vec![
            (Refusal::NoDeadJob.into(), exit::DATA_ERR),
            (Refusal::NoIdleJob(7).into(), exit::DATA_ERR),
            (Refusal::EntitiesFailed.into(), exit::DATA_ERR),
            (Refusal::NotLinked(vec!["a".into()]).into(), exit::DATA_ERR),
            (
                Refusal::DingTalk(DingTalkError::api("topapi/message/x", 40035, String::new()))
                    .into(),
                exit::DATA_ERR,
            ),
            (
                Refusal::DingTalk(DingTalkError::new(
                    crate::dingtalk::ErrorKind::Throttled,
                    "topapi/message/x",
                    "90018",
                ))
                .into(),
                exit::UNAVAILABLE,
            ),
            (ProcessError::Runtime(io_error()).into(), exit::UNAVAILABLE),
            (
                crate::cli::demo::DemoError::TimedOut("the first push").into(),
                exit::UNAVAILABLE,
            ),
            (ProcessError::Signals(io_error()).into(), exit::UNAVAILABLE),
        ]
    }

    #[test]
    fn each_failure_has_its_exit_code() {
        for (error, code) in set_up_cases().into_iter().chain(refusal_cases()) {
            assert_eq!(error.exit_code(), code, "{error:?}");
        }
        assert_eq!(
            CliError::NotRun(vec![1, 2]).to_string(),
            "tenant(s) 1, 2 not synced; the reasons are above"
        );
    }

    /// Tenant 0 beside tenant 1.
    fn tenant_rule() -> crate::config::TenantRuleError {
        crate::config::TenantRuleError { others: vec![1] }
    }

    /// A message field over its limit.
    fn too_long() -> UsageError {
        UsageError::TooLong {
            field: "markdown title",
            length: 65,
            max: 64,
        }
    }

    /// A message over DingTalk's size.
    fn too_large() -> UsageError {
        UsageError::TooLarge {
            bytes: 2049,
            max: 2048,
        }
    }

    /// An I/O error, as the runtime's or the signal handlers' set-up gives.
    fn io_error() -> std::io::Error {
        std::io::Error::other("x")
    }

    #[test]
    fn each_failure_says_what_it_said_as_text() {
        let cases: Vec<(CliError, &str)> = vec![
            (UsageError::NoSuchTenant(Some(3)).into(), "no such tenant configured: 3"),
            (UsageError::NoSuchTenant(None).into(), "no such tenant configured: any"),
            (UsageError::TenantNotConfigured(3).into(), "no tenant 3 configured"),
            (UsageError::TenantNotNamed.into(), "several tenants are configured: name one with --tenant"),
            (UsageError::UninstallUnconfirmed.into(), "uninstall drops dingsync's tables (queue, snapshots, deliveries) and triggers; add --yes to confirm"),
            (UsageError::NoMessage.into(), "give --text, --markdown or --action-card"),
            (too_long().into(), "markdown title is 65 characters; DingTalk allows 64"),
            (too_large().into(), "the message is 2049 bytes; DingTalk allows 2048"),
            (Refusal::NoDeadJob.into(), "no such dead job"),
            (Refusal::NoIdleJob(7).into(), "no job 7 that is not running"),
            (Refusal::EntitiesFailed.into(), "some entities failed; each is listed above with its reason"),
            (Refusal::NotLinked(vec!["a".into(), "b".into()]).into(), "not linked to DingTalk (sync them first): a,b"),
            (ProcessError::Runtime(io_error()).into(), "cannot start the async runtime: x"),
            (ProcessError::Signals(io_error()).into(), "cannot install signal handlers: x"),
            (TenantsError::Rule(crate::config::TenantRuleError { others: vec![1, 2] }).into(), "tenant 0 owns every row and cannot be configured beside tenants 1, 2; give each JeecgBoot tenant its own id, or use tenant 0 alone (tenants from the configuration and sys_third_app_config)"),
            (DaemonError::Tenants(tenant_rule()).into(), "tenant 0 owns every row and cannot be configured beside tenants 1; give each JeecgBoot tenant its own id, or use tenant 0 alone (tenants from the configuration and sys_third_app_config)"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
