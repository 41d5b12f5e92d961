//! `dingsync check-config`, `init` and `uninstall`: setting dingsync up in a JeecgBoot
//! database and checking what it will run with.

use crate::config::Loaded;
use crate::store::Store;

use super::{connect, CliError, UsageError};

/// A tenant, who sends its announcements, and whether JeecgBoot's own switch is on.
type TenantSender = (crate::config::TenantId, crate::messages::Sender, bool);

/// `dingsync init`.
pub(super) async fn init(loaded: &Loaded, with_jeecg_schema: bool) -> Result<(), CliError> {
    let store = connect(loaded).await?;
    let result = store.init(with_jeecg_schema).await;
    store.close().await;
    let report = result?;
    {
        {
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
        }
    }
    Ok(())
}

/// `dingsync uninstall`.
pub(super) async fn uninstall(loaded: &Loaded, yes: bool) -> Result<(), CliError> {
    if !yes {
        return Err(UsageError::UninstallUnconfirmed.into());
    }
    let store = connect(loaded).await?;
    let result = store.uninstall().await;
    store.close().await;
    result?;
    tracing::info!(
        event = "store.uninstalled",
        "dingsync tables and triggers dropped"
    );
    println!("dingsync's tables and triggers dropped; JeecgBoot's rows are untouched");
    Ok(())
}

/// The start-up line: version, config path, tenant ids; then any warnings.
pub(super) fn log_startup(loaded: &Loaded) {
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

/// `dingsync check-config`.
pub(super) async fn check_config(loaded: &Loaded) -> Result<(), CliError> {
    println!("# effective configuration from {}", loaded.path.display());
    println!("# database TLS: {}", loaded.config.database.url.tls());
    for line in tenant_lines(&loaded.config).await {
        println!("# {line}");
    }
    print!("{}", loaded.config.render());
    Ok(())
}

/// Why `check-config` could not read the tenants from the database (it then shows the
/// configuration's, with this reason).
#[derive(Debug, thiserror::Error)]
enum TenantProbeError {
    /// The SQLite file is not there (and `check-config` never creates it).
    #[error("the SQLite file does not exist yet")]
    SqliteMissing,
    /// The database could not be reached or read.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The tenants read break the tenant rule, or could not be read.
    #[error("{0}")]
    Tenants(#[from] crate::sync::run::TenantsError),
}

/// The tenants and who sends their announcements, read from the database (never created:
/// hence its own connection, not [`super::connect`], which opens dingsync's database as it
/// runs).
async fn read_tenants(
    config: &crate::config::Config,
) -> Result<(Vec<crate::config::TenantConfig>, Vec<TenantSender>), TenantProbeError> {
    let url = &config.database.url;
    let sqlite_missing = url.backend() == crate::config::Backend::Sqlite && {
        let path = url
            .expose()
            .trim_start_matches("sqlite:")
            .trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        path != ":memory:" && !std::path::Path::new(path).exists()
    };
    if sqlite_missing {
        return Err(TenantProbeError::SqliteMissing);
    }
    let store = Store::connect_url(url, 1, false).await?;
    let found = async {
        let tenants = crate::sync::run::tenants(config, &store).await?;
        let ids: Vec<_> = tenants.iter().map(|t| t.id).collect();
        let senders = crate::messages::senders(config, &store, &ids).await?;
        Ok::<_, TenantProbeError>((tenants, senders))
    }
    .await;
    store.close().await;
    found
}

/// Per tenant, where its credentials come from and who sends its announcements — read from
/// the database when it answers within 3 s (`sys_third_app_config` decides both), else the
/// configuration's tenants with the reason. Never creates a database.
async fn tenant_lines(config: &crate::config::Config) -> Vec<String> {
    let read = read_tenants(config);
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
                Ok(Err(error)) => error.to_string(),
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
