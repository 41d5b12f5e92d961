//! The command line: clap definitions and dispatch to the library. Decides exit codes; holds
//! no sync logic.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError, LoadOptions, Loaded, LogFormat};
use crate::exit;

/// Keeps a JeecgBoot back office and DingTalk (钉钉) in step.
///
/// dingsync pushes JeecgBoot's users and departments to DingTalk, pulls DingTalk's address
/// book back on a schedule, retries every failed call from a persistent queue and delivers
/// announcements. Configuration: a TOML file (see config/dingsync.example.toml), overridden
/// by DINGSYNC_* environment variables, overridden by flags.
///
/// Exit codes: 0 done, 64 bad usage, 65 bad data, 69 a dependency unavailable, 78 bad config.
#[derive(Debug, Parser)]
#[command(name = "dingsync", version, about, long_about)]
pub struct Cli {
    /// Configuration file [default: $DINGSYNC_CONFIG, else /etc/dingsync/dingsync.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log line format: json (journald), text, or auto (text on a terminal, else json).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. "info" or "info,dingsync=debug" (overrides log.level).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and validate the configuration, print it with every secret shown as ***.
    ///
    /// Exits 0 when the configuration is valid, 78 with every problem listed when it is not.
    CheckConfig,
}

/// Runs the command line of this process; returns the exit code.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            // Printing help or a usage error can only fail on a closed stream; nothing to do then.
            let _ = error.print();
            return code;
        }
    };
    let options = LoadOptions {
        path: cli.config.clone(),
        log_format: cli.log_format,
        log_level: cli.log_level.clone(),
        ..LoadOptions::from_process_env()
    };
    let loaded = match config::load(&options) {
        Ok(loaded) => loaded,
        Err(error) => return config_failure(&error),
    };
    crate::logging::init(&loaded.config.log);
    log_startup(&loaded);
    match cli.command {
        Command::CheckConfig => check_config(&loaded),
    }
}

fn config_failure(error: &ConfigError) -> u8 {
    eprintln!("dingsync: {error}");
    exit::CONFIG
}

/// The start-up line: version, config path, tenant ids; then any warnings.
fn log_startup(loaded: &Loaded) {
    tracing::info!(
        event = "startup",
        version = env!("CARGO_PKG_VERSION"),
        config = %loaded.path.display(),
        tenants = ?loaded.config.tenant_ids(),
        tenants_from_database = loaded.config.tenants_from_database,
        "dingsync starting"
    );
    for warning in &loaded.warnings {
        tracing::warn!(event = "config.warning", detail = %warning, "configuration warning");
    }
}

fn check_config(loaded: &Loaded) -> u8 {
    println!("# effective configuration from {}", loaded.path.display());
    print!("{}", loaded.config.render());
    exit::OK
}
