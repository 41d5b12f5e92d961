//! The command line: clap definitions and dispatch to the library. Decides exit codes; holds
//! no sync logic.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError, LoadOptions, Loaded, LogFormat};
use crate::exit;
use crate::store::{Store, StoreError};

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
        args: crate::cli_sync::SyncArgs,
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
        args: crate::cli_sync::SyncArgs,
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
    Message(crate::messages::cli::MessageCommand),
    /// Inspect and mend the retry queue.
    #[command(subcommand)]
    Queue(crate::cli_daemon::QueueCommand),
    /// Drop dingsync's triggers and tables. JeecgBoot's rows are not touched.
    Uninstall {
        /// Confirm: without it nothing is dropped.
        #[arg(long)]
        yes: bool,
    },
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
    if let Command::Demo { keep } = cli.command {
        // The demo needs no configuration; it logs warnings only, as text.
        crate::logging::init(&crate::config::LogConfig {
            format: LogFormat::Text,
            level: "warn".into(),
        });
        return block_on(crate::demo::demo(keep));
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
        Err(error) => return config_failure(&error),
    };
    crate::logging::init(&loaded.config.log);
    log_startup(&loaded);
    match cli.command {
        Command::Demo { .. } => exit::OK,
        Command::CheckConfig => block_on(check_config(&loaded)),
        Command::Init { with_jeecg_schema } => block_on(init(&loaded, with_jeecg_schema)),
        Command::Uninstall { yes } => block_on(uninstall(&loaded, yes)),
        Command::Run => block_on(crate::cli_daemon::run(&loaded, reload_options)),
        Command::Status { json } => block_on(crate::cli_daemon::status(&loaded, json)),
        Command::Queue(command) => block_on(crate::cli_daemon::queue(&loaded, &command)),
        Command::Message(command) => block_on(crate::messages::cli::run(&loaded, &command)),
        Command::Plan { args, json } => block_on(crate::cli_sync::plan(&loaded, &args, json)),
        Command::Sync { args, dry_run } => block_on(crate::cli_sync::sync(&loaded, &args, dry_run)),
    }
}

fn block_on(future: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(error) => {
            eprintln!("dingsync: cannot start the async runtime: {error}");
            exit::UNAVAILABLE
        }
    }
}

/// Exit code for a store error: unreachable database 69, anything else 65.
fn store_failure(error: &StoreError) -> u8 {
    tracing::error!(event = "store.failed", error = %error, "database operation failed");
    eprintln!("dingsync: {error}");
    match error {
        StoreError::Database(sqlx::Error::Database(_)) => exit::DATA_ERR,
        StoreError::Database(_) => exit::UNAVAILABLE,
        _ => exit::DATA_ERR,
    }
}

async fn connect(loaded: &Loaded) -> Result<Store, u8> {
    Store::connect(&loaded.config.database).await.map_err(|error| {
        tracing::error!(event = "store.unavailable", database = %loaded.config.database.url, error = %error, "cannot reach the database");
        eprintln!("dingsync: cannot reach the database {}: {error}", loaded.config.database.url);
        exit::UNAVAILABLE
    })
}

async fn init(loaded: &Loaded, with_jeecg_schema: bool) -> u8 {
    let store = match connect(loaded).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let result = store.init(with_jeecg_schema).await;
    store.close().await;
    match result {
        Ok(report) => {
            tracing::info!(
                event = "store.init",
                from_version = report.from_version,
                to_version = report.to_version,
                jeecg_tables_created = report.jeecg_tables_created,
                "database initialised"
            );
            if report.from_version == report.to_version {
                println!(
                    "dingsync schema is already at version {}; nothing to do",
                    report.to_version
                );
            } else {
                println!(
                    "dingsync schema version {} -> {}",
                    report.from_version, report.to_version
                );
            }
            if with_jeecg_schema {
                println!("JeecgBoot tables created: {}", report.jeecg_tables_created);
            }
            exit::OK
        }
        Err(error) => store_failure(&error),
    }
}

async fn uninstall(loaded: &Loaded, yes: bool) -> u8 {
    if !yes {
        eprintln!("dingsync: uninstall drops dingsync's tables (queue, snapshots, deliveries) and triggers; add --yes to confirm");
        return exit::USAGE;
    }
    let store = match connect(loaded).await {
        Ok(store) => store,
        Err(code) => return code,
    };
    let result = store.uninstall().await;
    store.close().await;
    match result {
        Ok(()) => {
            tracing::info!(
                event = "store.uninstalled",
                "dingsync tables and triggers dropped"
            );
            println!("dingsync's tables and triggers dropped; JeecgBoot's rows are untouched");
            exit::OK
        }
        Err(error) => store_failure(&error),
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

async fn check_config(loaded: &Loaded) -> u8 {
    println!("# effective configuration from {}", loaded.path.display());
    println!("# database TLS: {}", loaded.config.database.url.tls());
    for line in tenant_lines(&loaded.config).await {
        println!("# {line}");
    }
    print!("{}", loaded.config.render());
    exit::OK
}

/// Per tenant, where its credentials come from and who sends its announcements — read from
/// the database when it answers within 3 s (`sys_third_app_config` decides both), else the
/// configuration's tenants with the reason. Never creates a database.
async fn tenant_lines(config: &crate::config::Config) -> Vec<String> {
    let url = &config.database.url;
    let sqlite_missing = url.backend() == crate::config::Backend::Sqlite && {
        let path = url
            .expose()
            .trim_start_matches("sqlite:")
            .trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        path != ":memory:" && !std::path::Path::new(path).exists()
    };
    let read = async {
        if sqlite_missing {
            return Err("the SQLite file does not exist yet".to_string());
        }
        let store = Store::connect_url(url, 1, false)
            .await
            .map_err(|e| e.to_string())?;
        let found = async {
            let tenants = crate::sync::run::tenants(config, &store)
                .await
                .map_err(|e| e.to_string())?;
            let ids: Vec<_> = tenants.iter().map(|t| t.id).collect();
            let senders = crate::messages::senders(config, &store, &ids)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((tenants, senders))
        }
        .await;
        store.close().await;
        found
    };
    let source = |source: crate::config::TenantSource| match source {
        crate::config::TenantSource::File => "the configuration",
        crate::config::TenantSource::SysThirdAppConfig => "JeecgBoot's sys_third_app_config row",
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), read).await {
        Ok(Ok((tenants, senders))) => tenants
            .iter()
            .map(|t| {
                let by = senders
                    .iter()
                    .find(|(id, ..)| *id == t.id)
                    .map_or("?", |(_, sender, on)| sender.describe(*on, t.push.enabled));
                format!(
                    "tenant {}: credentials from {}; announcements sent by {by}",
                    t.id,
                    source(t.source)
                )
            })
            .collect(),
        outcome => {
            let why = match outcome {
                Ok(Err(error)) => error,
                _ => "no answer within 3 s".into(),
            };
            config
                .tenants
                .iter()
                .map(|t| {
                    format!(
                        "tenant {}: credentials from {}; announcements: not known ({why})",
                        t.id,
                        source(t.source)
                    )
                })
                .collect()
        }
    }
}
