//! The command line's one error type and its exit codes (sysexits.h, [`crate::exit`]). Every
//! command returns `Result<(), CliError>`; [`report`] logs the error, prints it and gives the
//! code, so a failure is told the same way whichever command met it.

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
    Usage(String),
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
    #[error("tenant {tenant}: another run is still going (run lease held by {holder}); waited {waited}; try again later")]
    Busy {
        /// The tenant.
        tenant: TenantId,
        /// Who holds the lease.
        holder: String,
        /// How long `sync` waited, for people.
        waited: String,
    },
    /// The daemon could not run: 78 when not initialised or the tenants break their rule,
    /// 69 else.
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    /// What was asked was refused, or some entities failed, each reported above (65).
    #[error("{0}")]
    Refused(String),
    /// The process could not set itself up: the async runtime, signal handlers (69).
    #[error("{0}")]
    Process(String),
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
            Self::Store(_) | Self::Refused(_) => exit::DATA_ERR,
            Self::Busy { .. } => exit::TEMPFAIL,
            Self::Connect { .. }
            | Self::Tenants(TenantsError::Store(_))
            | Self::DingTalk(_)
            | Self::Run { .. }
            | Self::NotRun(_)
            | Self::Daemon(_)
            | Self::Process(_) => exit::UNAVAILABLE,
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

    #[test]
    fn each_failure_has_its_exit_code() {
        let io = || StoreError::Database(sqlx::Error::PoolTimedOut);
        let cases = [
            (CliError::Usage("x".into()), exit::USAGE),
            (
                CliError::Tenants(TenantsError::Rule("x".into())),
                exit::CONFIG,
            ),
            (
                CliError::Tenants(TenantsError::Store(io())),
                exit::UNAVAILABLE,
            ),
            (
                CliError::Daemon(DaemonError::Tenants("x".into())),
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
                    waited: "1s".into(),
                },
                exit::TEMPFAIL,
            ),
            (CliError::Refused("x".into()), exit::DATA_ERR),
            (CliError::Process("x".into()), exit::UNAVAILABLE),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "{error:?}");
        }
        assert_eq!(
            CliError::NotRun(vec![1, 2]).to_string(),
            "tenant(s) 1, 2 not synced; the reasons are above"
        );
    }
}
