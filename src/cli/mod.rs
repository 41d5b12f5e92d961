//! The command line: clap definitions and dispatch to the library, one submodule per command
//! group (`setup`: check-config, init, uninstall; `daemon`: run, status, queue; `sync`: plan,
//! sync; `message`). Every command returns `Result<(), CliError>`, connects through
//! [`connect`], and `main` turns the error into the exit code ([`error`]). Holds no sync logic.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, LoadOptions, Loaded, LogFormat};
use crate::exit;
use crate::store::Store;

mod daemon;
mod demo;
mod error;
mod message;
mod setup;
mod sync;

pub use daemon::QueueCommand;
pub use error::{CliError, ProcessError, Refusal, UsageError};
pub use message::MessageCommand;
pub use sync::SyncArgs;

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
    /// Show the whole product in one command: nothing to configure (an embedded SQLite
    /// JeecgBoot, the DingTalk simulator in-process, the daemon running).
    Demo {
        /// Keep the daemon and the simulator running afterwards, and print how to poke them.
        #[arg(long)]
        keep: bool,
    },
    /// Load and validate the configuration, print it with every secret shown as ***.
    ///
    /// Exits 0 when the configuration is valid, 78 with every problem listed when it is not.
    CheckConfig,
    /// Create dingsync's tables and the change-log triggers in the JeecgBoot database.
    ///
    /// Idempotent: running it again changes nothing; a newer dingsync migrates forward.
    /// Exits 69 when the database cannot be reached, 65 when it is not a JeecgBoot database.
    Init {
        /// First create JeecgBoot's own tables where they are missing (a new SQLite or
        /// PostgreSQL installation, a test database).
        #[arg(long)]
        with_jeecg_schema: bool,
    },
    /// Show what a sync would change, without changing anything.
    ///
    /// Example: `dingsync plan push all`, `dingsync plan pull users --tenant 1000 --json`.
    Plan {
        /// Direction, scope and tenant.
        #[command(flatten)]
        args: SyncArgs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a sync now (JeecgBoot's "同步钉钉" / "同步到本地" buttons) and print a summary.
    ///
    /// Exits 0 when everything applied, 65 when some entities failed (each is listed with
    /// its reason), 69 when DingTalk or the database could not be read.
    Sync {
        /// Direction, scope and tenant.
        #[command(flatten)]
        args: SyncArgs,
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the daemon: push local changes as they happen, pull on schedule, work the queue.
    ///
    /// SIGTERM/SIGINT drain in-flight jobs and exit 0; SIGHUP (or editing the configuration
    /// file) reloads the configuration. Exits 78 when `dingsync init` has not been run, 69
    /// when the database cannot be reached.
    Run,
    /// Show per tenant: queue (pending, running, dead, oldest), change-log lag, last runs.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send, recall and inspect DingTalk work notifications by hand.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Inspect and mend the retry queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Drop dingsync's triggers and tables. JeecgBoot's rows are not touched.
    Uninstall {
        /// Confirm: without it nothing is dropped.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs the command line of this process; returns the exit code.
pub fn main() -> u8 {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Command::Demo { keep } = cli.command {
        return demo(keep);
    }
    let options = LoadOptions {
        path: cli.config.clone(),
        log_format: cli.log_format,
        log_level: cli.log_level.clone(),
        ..LoadOptions::from_process_env()
    };
    let reload_options = options.clone();
    let loaded = match config::load(&options) {
        Ok(loaded) => loaded,
        Err(error) => return error::report(&CliError::Config(error)),
    };
    crate::logging::init(&loaded.config.log);
    setup::log_startup(&loaded);
    match block_on(dispatch(&loaded, cli.command, reload_options)) {
        Ok(()) => exit::OK,
        Err(error) => error::report(&error),
    }
}

/// The command line parsed; else clap's help, version or usage error printed, and the
/// exit code (0 for help and version, 64 for a usage error).
fn parse() -> Result<Cli, u8> {
    Cli::try_parse().map_err(|error| {
        let code = if error.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        };
        // Printing help or a usage error can only fail on a closed stream; nothing to do then.
        let _ = error.print();
        code
    })
}

/// `dingsync demo`: needs no configuration, and logs warnings only, as text.
fn demo(keep: bool) -> u8 {
    crate::logging::init(&crate::config::LogConfig {
        format: LogFormat::Text,
        level: "warn".into(),
    });
    match block_on(demo::demo(keep)) {
        Ok(()) => exit::OK,
        Err(error) => error::report(&error),
    }
}

/// Runs `command` (any but `demo`) with the loaded configuration; `run` reloads it with
/// `reload_options`.
async fn dispatch(
    loaded: &Loaded,
    command: Command,
    reload_options: LoadOptions,
) -> Result<(), CliError> {
    match command {
        Command::Demo { .. } => Ok(()),
        Command::CheckConfig => setup::check_config(loaded).await,
        Command::Init { with_jeecg_schema } => setup::init(loaded, with_jeecg_schema).await,
        Command::Uninstall { yes } => setup::uninstall(loaded, yes).await,
        Command::Run => daemon::run(loaded, reload_options).await,
        Command::Status { json } => daemon::status(loaded, json).await,
        Command::Queue(command) => daemon::queue(loaded, &command).await,
        Command::Message(command) => message::run(loaded, &command).await,
        Command::Plan { args, json } => sync::plan(loaded, &args, json).await,
        Command::Sync { args, dry_run } => sync::sync(loaded, &args, dry_run).await,
    }
}

/// Runs `future` on a new multi-threaded runtime.
fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ProcessError::Runtime)?
        .block_on(future)
}

/// Connects to the configured database as dingsync: the one way every command does.
async fn connect(loaded: &Loaded) -> Result<Store, CliError> {
    Store::connect(&loaded.config.database)
        .await
        .map_err(|source| CliError::Connect {
            url: loaded.config.database.url.to_string(),
            source,
        })
}
