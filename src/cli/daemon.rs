//! `dingsync run`, `status` and `queue`: the daemon under systemd and the operator's view of
//! it.

use std::sync::Arc;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio_util::sync::CancellationToken;

use crate::config::{self, LoadOptions, Loaded, TenantId};
use crate::daemon::Reload;
use crate::store::now_ms;
use crate::store::queue::{state, JobFilter};
use crate::sync::run::TenantsError;

use super::{connect, CliError, ProcessError, Refusal};

/// `dingsync run`.
pub(super) async fn run(loaded: &Loaded, options: LoadOptions) -> Result<(), CliError> {
    let shutdown = CancellationToken::new();
    let reload_trigger = Arc::new(tokio::sync::Notify::new());
    let signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(ProcessError::Signals)?;
    let handle = signals.handle();
    let signal_task = {
        let (shutdown, trigger) = (shutdown.clone(), Arc::clone(&reload_trigger));
        tokio::spawn(async move {
            let mut signals = signals;
            while let Some(signal) = signals.next().await {
                if signal == SIGHUP {
                    tracing::info!(
                        event = "config.reload_requested",
                        "SIGHUP: reloading the configuration"
                    );
                    trigger.notify_one();
                } else {
                    tracing::info!(event = "shutdown.requested", signal, "stop requested");
                    shutdown.cancel();
                }
            }
        })
    };
    let reload = Reload {
        trigger: reload_trigger,
        load: Arc::new(move || config::load(&options).map(|l| l.config)),
        watch_path: Some(loaded.path.clone()),
    };
    let result = crate::daemon::run(loaded.config.clone(), shutdown, reload).await;
    handle.close();
    signal_task.abort();
    Ok(result?)
}

fn age(ms: Option<i64>) -> String {
    ms.map_or("-".into(), |t| {
        format!("{}s ago", ((now_ms() - t) / 1000).max(0))
    })
}

/// `dingsync status`.
pub(super) async fn status(loaded: &Loaded, json: bool) -> Result<(), CliError> {
    let store = connect(loaded).await?;
    let result = status_of(loaded, &store).await;
    store.close().await;
    let (tenants, cursor, last) = result?;
    if json {
        let all = serde_json::json!({ "change_log": { "cursor": cursor, "last": last, "lag": last - cursor }, "tenants": tenants });
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return Ok(());
    }
    println!(
        "change log: {} row(s) not yet read (cursor {cursor}, last {last})",
        last - cursor
    );
    for tenant in &tenants {
        print_tenant(tenant);
    }
    Ok(())
}

/// What `status` shows: per tenant (JSON), the change log's cursor and last id.
async fn status_of(
    loaded: &Loaded,
    store: &crate::store::Store,
) -> Result<(Vec<serde_json::Value>, i64, i64), TenantsError> {
    let tenants = crate::sync::run::tenants(&loaded.config, store).await?;
    let cursor = store.change_cursor().await?;
    let last = store.last_change_id().await?;
    let ids: Vec<_> = tenants.iter().map(|t| t.id).collect();
    let senders = crate::messages::senders(&loaded.config, store, &ids).await?;
    let mut out = Vec::new();
    for tenant in &tenants {
        let found = senders.iter().find(|(t, ..)| *t == tenant.id);
        let sender = found.map(|(_, sender, _)| *sender);
        let by = found.map(|(_, sender, on)| sender.describe(*on, tenant.push.enabled));
        let events = store.stream_state(tenant.id).await?.map(|s| {
            let mut state: serde_json::Value = serde_json::from_str(&s.state).unwrap_or_default();
            state["instance"] = s.instance.into();
            state["updated_at"] = s.updated_at.into();
            state
        });
        out.push(serde_json::json!({
            "tenant": tenant.id,
            "credentials": tenant.source,
            "announcements": sender,
            "announcements_by": by,
            "push": tenant.push.enabled,
            "pull": tenant.pull.enabled,
            "owner": store.lease_holder(&format!("tenant:{}", tenant.id)).await?,
            "events": { "mode": loaded.config.events.mode, "stream": events },
            "queue": store.queue_stats(tenant.id).await?,
            "last_runs": store.last_runs(tenant.id).await?,
        }));
    }
    Ok((out, cursor, last))
}

/// One tenant of `status`, for people.
fn print_tenant(t: &serde_json::Value) {
    let q = &t["queue"];
    let on = |key: &str| if t[key] == true { "on" } else { "off" };
    println!(
        "tenant {} ({}; push {}, pull {}): owner {}; jobs pending {}, running {}, dead {}; oldest pending due {}",
        t["tenant"],
        t["credentials"].as_str().unwrap_or("?"),
        on("push"),
        on("pull"),
        t["owner"].as_str().unwrap_or("none"),
        q["pending"],
        q["running"],
        q["dead"],
        age(q["oldest_pending_run_at"].as_i64())
    );
    if let Some(error) = q["last_error"].as_str() {
        println!("  last error: {error}");
    }
    println!(
        "  credentials from {}; announcements sent by {}",
        if t["credentials"] == "file" {
            "the configuration"
        } else {
            "JeecgBoot's sys_third_app_config row"
        },
        t["announcements_by"].as_str().unwrap_or("?")
    );
    println!("  events: {}", events_line(&t["events"]));
    for run in t["last_runs"].as_array().into_iter().flatten() {
        println!(
            "  last {}: {} — created {}, updated {}, deleted {}, failed {}{}",
            run["kind"].as_str().unwrap_or("?"),
            age(run["finished_at"].as_i64()),
            run["created"],
            run["updated"],
            run["deleted"],
            run["failed"],
            run["error"]
                .as_str()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
}

/// The Stream connection of a tenant as its owner last wrote it (every 10 s).
fn events_line(events: &serde_json::Value) -> String {
    if events["mode"] == "off" {
        return "off (events.mode); DingTalk's changes arrive with the scheduled pull".into();
    }
    let s = &events["stream"];
    if s.is_null() {
        return "Stream mode: no connection recorded yet (is `dingsync run` up?)".into();
    }
    let age_s = s["updated_at"]
        .as_i64()
        .map_or(i64::MAX, |t| (now_ms() - t) / 1000);
    // The owner writes it every 10 s: older means no daemon is keeping it.
    let state = if age_s > 30 {
        "state STALE (no daemon has written it for over 30 s; is `dingsync run` up?), last seen"
    } else if s["connected"] == true {
        "connected"
    } else {
        "NOT connected"
    };
    format!(
        "Stream {state} ({} as of {}); received {}, stored {}, acked {}, later {}, redelivered {}, deduplicated {}, reconnects {}",
        s["instance"].as_str().unwrap_or("?"),
        age(s["updated_at"].as_i64()),
        s["received"],
        s["stored"],
        s["acked"],
        s["later"],
        s["redelivered"],
        s["deduplicated"],
        s["reconnects"]
    )
}

/// `dingsync queue ...`.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// List jobs (pending and running, or dead ones).
    List {
        /// Only dead jobs.
        #[arg(long)]
        dead: bool,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a dead job back in the queue (after fixing its cause).
    Retry {
        /// The job id.
        #[arg(required_unless_present = "all_dead")]
        id: Option<i64>,
        /// Every dead job.
        #[arg(long)]
        all_dead: bool,
    },
    /// Delete a job that is not running.
    Drop {
        /// The job id.
        id: i64,
    },
}

/// Runs a `queue` subcommand.
pub(super) async fn queue(loaded: &Loaded, command: &QueueCommand) -> Result<(), CliError> {
    let store = connect(loaded).await?;
    let result = match command {
        QueueCommand::List { dead, tenant, json } => list(&store, *dead, *tenant, *json).await,
        QueueCommand::Retry { id, all_dead } => {
            let retried = if *all_dead {
                store.retry_all_dead(None).await
            } else {
                store
                    .retry_dead(id.unwrap_or_default())
                    .await
                    .map(u64::from)
            };
            match retried {
                Ok(0) => Err(Refusal::NoDeadJob.into()),
                Ok(n) => {
                    println!("{n} job(s) queued again");
                    Ok(())
                }
                Err(error) => Err(error.into()),
            }
        }
        QueueCommand::Drop { id } => match store.drop_job(*id).await {
            Ok(true) => {
                println!("job {id} dropped");
                Ok(())
            }
            Ok(false) => Err(Refusal::NoIdleJob(*id).into()),
            Err(error) => Err(error.into()),
        },
    };
    store.close().await;
    result
}

/// `dingsync queue list`: pending and running jobs, or dead ones, as a table or JSON.
async fn list(
    store: &crate::store::Store,
    dead: bool,
    tenant: Option<TenantId>,
    json: bool,
) -> Result<(), CliError> {
    let states: &[&str] = if dead {
        &[state::DEAD]
    } else {
        &[state::PENDING, state::RUNNING]
    };
    let mut jobs = Vec::new();
    for s in states {
        let filter = JobFilter {
            state: Some((*s).into()),
            tenant_id: tenant,
            limit: Some(1000),
            ..JobFilter::default()
        };
        jobs.extend(store.list_jobs(&filter).await?);
    }
    if json {
        let rows: Vec<serde_json::Value> = jobs
            .iter()
            .map(|j| serde_json::json!({ "id": j.id, "tenant": j.tenant_id, "kind": j.kind, "key": j.entity_key, "state": j.state, "attempts": j.attempts, "run_at": j.run_at, "last_error": j.last_error }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:>8} {:>6} {:<6} {:<34} {:<8} {:>8}  last error",
        "id", "tenant", "kind", "key", "state", "attempts"
    );
    for j in &jobs {
        println!(
            "{:>8} {:>6} {:<6} {:<34} {:<8} {:>8}  {}",
            j.id,
            j.tenant_id,
            j.kind,
            j.entity_key,
            j.state,
            j.attempts,
            j.last_error.as_deref().unwrap_or("")
        );
    }
    println!("{} job(s)", jobs.len());
    Ok(())
}
