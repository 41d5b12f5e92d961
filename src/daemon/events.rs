//! DingTalk's address-book events over Stream mode: one connection per tenant this instance
//! owns (DingTalk sends each event to one connection of an app, chosen at random, so only
//! the owner connects; a tenant whose lease is lost has its connection closed). Each event
//! becomes pull jobs in the queue, recorded with the event's id in one transaction before
//! the ack `SUCCESS` (duplicates enqueue nothing); a database that cannot take it answers
//! `LATER`, so DingTalk delivers it again. The scheduled pull keeps running: it reconciles
//! whatever an outage or a missed event left behind.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{EventsMode, TenantConfig, TenantId};
use crate::dingtalk::stream::{
    self, address_book_change, EventAck, EventHandler, StreamEvent, StreamOptions, StreamStats,
};
use crate::store::events::Recorded;

use super::Shared;

/// How often each connection's state is written for `dingsync status`.
const STATE_EVERY: Duration = Duration::from_secs(10);
/// How long storing an event may take before the answer is `LATER`.
const STORE_WITHIN: Duration = Duration::from_secs(2);
/// Event ids answered `LATER` that are remembered, to count their redeliveries.
const LATER_KEPT: usize = 10_000;

/// What the handler counts beside the connection's own [`StreamStats`].
#[derive(Default)]
struct Counters {
    /// Events stored with their jobs.
    stored: AtomicU64,
    /// Events seen before (DingTalk's redeliveries and duplicates): nothing enqueued.
    deduplicated: AtomicU64,
    /// Events delivered again after a `LATER`.
    redelivered: AtomicU64,
    /// Events no rule applies to (not address-book events): acked, nothing enqueued.
    ignored: AtomicU64,
    /// Event ids answered `LATER`.
    later: Mutex<HashSet<String>>,
}

/// One running connection.
struct Running {
    /// What it connects with: a change of credentials or address restarts it.
    identity: (String, String, String),
    stop: CancellationToken,
    stats: Arc<StreamStats>,
    counters: Arc<Counters>,
}

/// Keeps a connection open for each owned tenant that wants events, closes the others;
/// looks again when ownership or the configuration changes, and writes each connection's
/// state every 10 s.
pub(super) async fn supervise(shared: Arc<Shared>) {
    let mut running: HashMap<TenantId, Running> = HashMap::new();
    let mut told: HashSet<(TenantId, &'static str)> = HashSet::new();
    loop {
        let closed = reconcile(&shared, &mut running, &mut told);
        for (id, connection) in closed {
            // Said as closed at once, so that `status` does not show it up until it ages.
            write_state(&shared, id, &connection, false).await;
        }
        for (id, connection) in &running {
            write_state(&shared, *id, connection, true).await;
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = shared.wake_streams.notified() => {}
            _ = tokio::time::sleep(STATE_EVERY) => {}
        }
    }
    for (id, connection) in running.drain() {
        connection.stop.cancel();
        write_state(&shared, id, &connection, false).await;
    }
}

/// Why a tenant gets no connection, if it gets none.
fn unwanted(mode: EventsMode, tenant: &TenantConfig) -> Option<&'static str> {
    if mode == EventsMode::Off {
        Some("events.mode = \"off\": DingTalk's changes arrive with the scheduled pull")
    } else if !tenant.pull.enabled {
        Some("pull.enabled = false for this tenant: nothing is pulled, so no events are needed")
    } else {
        None
    }
}

/// Opens and closes connections; returns the ones it closed.
fn reconcile(
    shared: &Arc<Shared>,
    running: &mut HashMap<TenantId, Running>,
    told: &mut HashSet<(TenantId, &'static str)>,
) -> Vec<(TenantId, Running)> {
    let runtime = shared.runtime();
    let owned = shared.owned();
    let mut wanted: HashMap<TenantId, &TenantConfig> = HashMap::new();
    for tenant in runtime.tenants.iter().filter(|t| owned.contains(&t.id)) {
        match unwanted(runtime.config.events.mode, tenant) {
            Some(reason) => {
                if told.insert((tenant.id, reason)) {
                    tracing::info!(
                        event = "events.unavailable",
                        tenant = tenant.id,
                        reason,
                        "no Stream connection for this tenant"
                    );
                }
            }
            None => {
                wanted.insert(tenant.id, tenant);
            }
        }
    }
    let api = runtime.config.dingtalk.api_base_url.clone();
    let stale: Vec<TenantId> = running
        .iter()
        .filter(|(id, connection)| {
            wanted
                .get(id)
                .is_none_or(|t| connection.identity != identity(t, &api))
        })
        .map(|(id, _)| *id)
        .collect();
    let mut closed = Vec::new();
    for id in stale {
        if let Some(connection) = running.remove(&id) {
            connection.stop.cancel();
            tracing::info!(
                event = "events.closed",
                tenant = id,
                "Stream connection closed (tenant not owned here any more, or its app changed)"
            );
            closed.push((id, connection));
        }
    }
    for (id, tenant) in wanted {
        running
            .entry(id)
            .or_insert_with(|| connect(shared, tenant, &api));
    }
    closed
}

/// What a tenant's connection is made with: its app's credentials and DingTalk's address.
fn identity(tenant: &TenantConfig, api: &url::Url) -> (String, String, String) {
    (
        tenant.client_id.clone(),
        tenant.client_secret.expose().to_string(),
        api.to_string(),
    )
}

/// Opens `tenant`'s Stream connection (a task until its token is cancelled).
fn connect(shared: &Arc<Shared>, tenant: &TenantConfig, api: &url::Url) -> Running {
    let stop = shared.shutdown.child_token();
    let stats = Arc::new(StreamStats::default());
    let counters = Arc::new(Counters::default());
    let options = StreamOptions::new(
        api.clone(),
        tenant.client_id.clone(),
        tenant.client_secret.clone(),
        tenant.id,
    );
    let handler = handler(Arc::clone(shared), tenant.id, Arc::clone(&counters));
    tokio::spawn(stream::run(
        options,
        handler,
        Arc::clone(&stats),
        stop.clone(),
    ));
    Running {
        identity: identity(tenant, api),
        stop,
        stats,
        counters,
    }
}

/// A connection's counters as `dingsync status` shows them (`open`: still wanted).
async fn write_state(shared: &Shared, id: TenantId, connection: &Running, open: bool) {
    {
        let stats = connection.stats.snapshot();
        let counters = &connection.counters;
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let state = serde_json::json!({
            "connected": open && stats.connected,
            "connects": stats.connects,
            "reconnects": stats.reconnects,
            "received": stats.received,
            "acked": stats.acked_success,
            "later": stats.acked_later,
            "stored": read(&counters.stored),
            "deduplicated": read(&counters.deduplicated),
            "redelivered": read(&counters.redelivered),
            "ignored": read(&counters.ignored),
        });
        if let Err(error) = shared
            .store
            .put_stream_state(id, &shared.instance, &state.to_string())
            .await
        {
            tracing::debug!(event = "events.state_failed", tenant = id, error = %error, "cannot write the Stream state");
        }
    }
}

fn handler(shared: Arc<Shared>, tenant: TenantId, counters: Arc<Counters>) -> EventHandler {
    Arc::new(move |event: StreamEvent| {
        let (shared, counters) = (Arc::clone(&shared), Arc::clone(&counters));
        Box::pin(async move { handle(&shared, tenant, &counters, event).await })
    })
}

/// Stores one event with its pull jobs; `SUCCESS` once committed, `LATER` when the
/// database cannot take it.
async fn handle(
    shared: &Shared,
    tenant: TenantId,
    counters: &Counters,
    event: StreamEvent,
) -> EventAck {
    let metrics = crate::metrics::metrics();
    let jobs = crate::job::event_jobs(address_book_change(&event).as_ref());
    if jobs.is_empty() {
        counters.ignored.fetch_add(1, Ordering::Relaxed);
        metrics.event(tenant, &event.event_type, "ignored");
        return EventAck::Success;
    }
    // Without an event id, the delivery's id is the best key there is.
    let id = if event.event_id.is_empty() {
        event.message_id.as_str()
    } else {
        event.event_id.as_str()
    };
    counters.count_redelivery(id);
    // DingTalk expects an answer within about 3 s: a database that takes longer gets a LATER.
    let stored = tokio::time::timeout(
        STORE_WITHIN,
        shared
            .store
            .record_event(tenant, id, &event.event_type, &jobs),
    )
    .await
    .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut.into()));
    match stored {
        Ok(Recorded::New) => {
            shared.store_ok();
            counters.stored.fetch_add(1, Ordering::Relaxed);
            metrics.event(tenant, &event.event_type, "stored");
            shared.wake_workers.notify_waiters();
            tracing::info!(event = "events.stored", tenant, event_type = %event.event_type, event_id = %id, jobs = jobs.len(), "event stored as pull jobs");
            EventAck::Success
        }
        Ok(Recorded::Duplicate) => {
            counters.deduplicated.fetch_add(1, Ordering::Relaxed);
            metrics.event(tenant, &event.event_type, "duplicate");
            tracing::info!(event = "events.duplicate", tenant, event_type = %event.event_type, event_id = %id, "event seen before; nothing enqueued");
            EventAck::Success
        }
        Err(error) => {
            shared.store_failed("storing an event", &error);
            counters.answered_later(id);
            metrics.event(tenant, &event.event_type, "later");
            tracing::warn!(event = "events.later", tenant, event_type = %event.event_type, event_id = %id, error = %error, "cannot store the event; answered LATER, DingTalk delivers it again");
            EventAck::Later
        }
    }
}

impl Counters {
    /// Remembers that event `id` was answered LATER, so that its redelivery is counted (at
    /// most [`LATER_KEPT`] remembered).
    fn answered_later(&self, id: &str) {
        let mut later = self
            .later
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if later.len() >= LATER_KEPT {
            later.clear();
        }
        later.insert(id.to_string());
    }

    /// Counts event `id` as redelivered when it was answered LATER before (and forgets it).
    fn count_redelivery(&self, id: &str) {
        let again = self
            .later
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        if again {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
