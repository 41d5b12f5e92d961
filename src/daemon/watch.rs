//! Noticing local changes: SQLite through `notify` on the database file and its WAL,
//! PostgreSQL through LISTEN on the triggers' channel, MariaDB/MySQL by a cheap indexed poll;
//! and a fallback poll everywhere for lost wake-ups. Wake-ups only wake the reader, which
//! turns change rows into jobs and advances its cursor in one transaction.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;

use crate::config::Backend;

use super::{Shared, CHANGE_BATCH, GAPS, STORE_RETRY_CAP};

/// Wakes the reader whenever a change may have been committed.
pub(super) async fn watch(shared: Arc<Shared>) {
    let config = shared.runtime().config.clone();
    let fallback = tokio::time::interval(config.watch.fallback_poll);
    let poll = tokio::time::interval(config.watch.poll_interval);
    let _file_watcher = match shared.store.backend() {
        Backend::Sqlite => sqlite_watcher(&shared, &config.database.url),
        Backend::Postgres => {
            tokio::spawn(pg_listen(Arc::clone(&shared)));
            None
        }
        Backend::MySql => None,
    };
    let polling = shared.store.backend() == Backend::MySql;
    tokio::pin!(fallback, poll);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = fallback.tick() => shared.wake_reader.notify_one(),
            _ = poll.tick(), if polling => shared.wake_reader.notify_one(),
        }
    }
}

fn sqlite_watcher(
    shared: &Arc<Shared>,
    url: &crate::config::DatabaseUrl,
) -> Option<notify::RecommendedWatcher> {
    let path = sqlite_path(url.expose())?;
    let dir = path
        .parent()
        .map(PathBuf::from)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path.file_name()?.to_string_lossy().into_owned();
    let waker = Arc::clone(shared);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event.paths.iter().any(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&name)));
            if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
                waker.wake_reader.notify_one();
            }
        }
    })
    .map_err(|error| tracing::warn!(event = "watch.failed", error = %error, "cannot watch the database file; relying on the fallback poll"))
    .ok()?;
    if let Err(error) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(event = "watch.failed", error = %error, "cannot watch the database directory; relying on the fallback poll");
        return None;
    }
    Some(watcher)
}

/// The file of a `sqlite:` URL.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.split('?').next()?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    (!rest.is_empty() && rest != ":memory:").then(|| PathBuf::from(rest))
}

async fn pg_listen(shared: Arc<Shared>) {
    loop {
        let listener = async {
            let Some(listening) = shared.store.listen_for_changes().await else {
                return Ok::<(), sqlx::Error>(());
            };
            let mut notifications = listening?;
            // Whatever was committed before LISTEN took effect is read now.
            shared.wake_reader.notify_one();
            loop {
                // false: the connection was lost (the next call reconnects and listens
                // again); notifications sent meanwhile are gone, so the reader looks itself.
                if !notifications.next().await? {
                    tracing::warn!(
                        event = "watch.reconnecting",
                        "LISTEN connection lost; reconnecting, then reading the change log"
                    );
                }
                shared.wake_reader.notify_one();
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            result = listener => match result {
                // No notifications from this database: the polls cover it.
                Ok(()) => return,
                Err(error) => tracing::warn!(event = "watch.failed", error = %error, "LISTEN failed; retrying (the fallback poll covers the gap)"),
            },
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Turns change rows into jobs whenever woken; keeps going while rows remain.
pub(super) async fn read_changes(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(200);
    let mut held_back;
    loop {
        let tenants: Vec<_> = shared.runtime().tenants.iter().map(|t| t.id).collect();
        match shared
            .store
            .changes_to_jobs(CHANGE_BATCH, &tenants, crate::job::job_rows, GAPS)
            .await
        {
            Ok(batch) => {
                backoff = Duration::from_millis(200);
                shared.store_ok();
                if batch.consumed > 0 {
                    tracing::debug!(
                        event = "changes.read",
                        rows = batch.consumed,
                        "change rows turned into jobs"
                    );
                    shared.wake_workers.notify_waiters();
                    if batch.consumed as i64 >= CHANGE_BATCH {
                        continue;
                    }
                }
                held_back = batch.held_back;
            }
            Err(error) => {
                tracing::warn!(event = "changes.read_failed", error = %error, retry_in_ms = backoff.as_millis() as u64, "cannot read the change log");
                shared.store_failed("reading the change log", &error);
                backoff = (backoff * 2).min(STORE_RETRY_CAP);
                held_back = true;
            }
        }
        // Rows held back by a fresh gap (or a failed read) are looked at again shortly.
        let recheck = if held_back {
            Duration::from_millis(500).max(backoff)
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.wake_reader.notified() => {}
            _ = tokio::time::sleep(recheck) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;
    use std::path::PathBuf;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite:/var/lib/x.db"),
            Some(PathBuf::from("/var/lib/x.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/x.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/x.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:jeecg.db"),
            Some(PathBuf::from("jeecg.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
