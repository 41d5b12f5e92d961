//! DingTalk Stream mode: events over a WebSocket the app opens itself (STREAM.md). The only
//! code that speaks this protocol. [`run`] keeps one connection open per app: a fresh ticket
//! from `connections/open` for every connect, a new connection at once when the server sends
//! `disconnect`, a WebSocket ping after `keepalive` of silence and a reconnect after twice
//! that, jittered exponential backoff after a loss. Each event goes to the [`EventHandler`]
//! (at most [`MAX_IN_FLIGHT`] at once) and its answer is acked on the connection it came
//! from; an event that is never acked is redelivered by DingTalk, so nothing here is durable
//! and nothing needs to be. Duplicates (same `eventId`) happen even after a correct ack: the
//! handler dedupes. It knows nothing of JeecgBoot or the database.

mod address_book;
mod connection;
pub mod error;
mod frame;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use url::Url;

pub use address_book::{address_book_change, AddressBookChange};
pub use error::{StreamError, StreamErrorKind};

use crate::secret::Secret;
use connection::{End, Shared};

/// Events handled at once; when all slots are busy a frame is left unacked and DingTalk
/// redelivers it (the Go SDK does the same with 100 slots).
pub const MAX_IN_FLIGHT: usize = 64;
/// How long a connection replaced after `disconnect` may still write acks (DingTalk closes it
/// after 10 s).
const DRAIN_GRACE: Duration = Duration::from_secs(30);
/// How long shutdown waits for running handlers.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// How a Stream client connects.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// The new-API base URL (`https://api.dingtalk.com`); `connections/open` is under it.
    pub api_base_url: Url,
    /// AppKey.
    pub client_id: String,
    /// AppSecret.
    pub client_secret: Secret,
    /// The JeecgBoot tenant (for logs only).
    pub tenant: i64,
    /// A WebSocket ping after this much silence; a connection silent for twice this is dead.
    pub keepalive: Duration,
    /// First reconnect delay (doubles per failed attempt, jittered).
    pub backoff_base: Duration,
    /// Longest reconnect delay after a retryable failure.
    pub backoff_cap: Duration,
    /// Timeout of the ticket request and of the WebSocket handshake, each.
    pub open_timeout: Duration,
    /// Retry interval while `connections/open` refuses the app (credentials, Stream not
    /// enabled, no permission): quiet retries, in case an admin grants it later.
    pub unavailable_retry: Duration,
}

impl StreamOptions {
    /// Options with the defaults: keepalive 30 s, backoff 1 s → 60 s, open timeout 10 s, a
    /// refused app retried every 10 min.
    pub fn new(api_base_url: Url, client_id: String, client_secret: Secret, tenant: i64) -> Self {
        Self {
            api_base_url,
            client_id,
            client_secret,
            tenant,
            keepalive: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            open_timeout: Duration::from_secs(10),
            unavailable_retry: Duration::from_secs(600),
        }
    }
}

/// One event, as the handler gets it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamEvent {
    /// This delivery's id (new on every redelivery); the ack names it.
    pub message_id: String,
    /// The event's id, stable across redeliveries and duplicates: dedupe on it.
    pub event_id: String,
    /// `user_add_org`, `org_dept_modify`, ...
    pub event_type: String,
    /// The subscription topic (`*`).
    pub topic: String,
    /// When DingTalk created the event, ms since the epoch.
    pub born_ms: Option<i64>,
    /// The organisation's corpId.
    pub corp_id: Option<String>,
    /// The payload, decoded once (`Null` when absent).
    pub data: serde_json::Value,
}

/// The handler's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAck {
    /// Taken care of (stored): do not send it again.
    Success,
    /// Not taken: redeliver later.
    Later,
}

/// Called once per delivered event; its answer is the ack. It should store the event and
/// answer within a few seconds (DingTalk expects an ack in ~3 s).
pub type EventHandler = Arc<dyn Fn(StreamEvent) -> BoxFuture<'static, EventAck> + Send + Sync>;

/// Counters of one [`run`], updated as it goes.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Whether a connection is open now.
    pub connected: AtomicBool,
    /// WebSocket connections opened.
    pub connects: AtomicU64,
    /// Connections opened after the first.
    pub reconnects: AtomicU64,
    /// EVENT frames received (redeliveries included).
    pub received: AtomicU64,
    /// SUCCESS acks handed to a connection.
    pub acked_success: AtomicU64,
    /// LATER acks handed to a connection.
    pub acked_later: AtomicU64,
    /// SYSTEM pings answered.
    pub pings: AtomicU64,
    /// SYSTEM disconnects received.
    pub disconnects_received: AtomicU64,
}

/// [`StreamStats`] at one moment, as plain numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatsSnapshot {
    /// Whether a connection was open.
    pub connected: bool,
    /// WebSocket connections opened.
    pub connects: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// EVENT frames received.
    pub received: u64,
    /// SUCCESS acks sent.
    pub acked_success: u64,
    /// LATER acks sent.
    pub acked_later: u64,
    /// SYSTEM pings answered.
    pub pings: u64,
    /// SYSTEM disconnects received.
    pub disconnects_received: u64,
}

impl StreamStats {
    /// The counters now.
    pub fn snapshot(&self) -> StreamStatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StreamStatsSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            connects: read(&self.connects),
            reconnects: read(&self.reconnects),
            received: read(&self.received),
            acked_success: read(&self.acked_success),
            acked_later: read(&self.acked_later),
            pings: read(&self.pings),
            disconnects_received: read(&self.disconnects_received),
        }
    }
}

/// Keeps a Stream connection open until `shutdown`, handing every event to `handler`. Never
/// returns early on an error: a refused app is logged once (`events.unavailable`) and retried
/// every `unavailable_retry`; other failures are retried with backoff. On shutdown it closes
/// the socket and waits up to 5 s for running handlers.
pub async fn run(
    options: StreamOptions,
    handler: EventHandler,
    stats: Arc<StreamStats>,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(options.open_timeout)
        .user_agent(concat!("dingsync/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            let error = StreamError::request(error);
            tracing::error!(event = "events.unavailable", tenant = options.tenant, reason = %error, "Stream mode is unavailable");
            return;
        }
    };
    let shared = Arc::new(Shared {
        options,
        handler,
        stats,
        slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        http,
    });
    let mut supervisor = Supervisor::default();
    while !shutdown.is_cancelled() {
        let Some(delay) = supervisor.connect_once(&shared, &shutdown).await else {
            continue;
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    let permits = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN, shared.slots.acquire_many(permits)).await;
}

/// The connection loop's memory between attempts.
#[derive(Default)]
struct Supervisor {
    /// Failed attempts since the last connection that worked.
    attempt: u32,
    /// Connections opened so far.
    connections: u64,
    /// Whether `events.unavailable` was logged for the current refusal.
    unavailable: bool,
}

impl Supervisor {
    /// One connection from ticket to end; the delay before the next, or `None` to open the
    /// next one at once (after `disconnect`) or when shutting down.
    async fn connect_once(
        &mut self,
        shared: &Arc<Shared>,
        shutdown: &CancellationToken,
    ) -> Option<Duration> {
        let options = &shared.options;
        let connection = tokio::select! {
            _ = shutdown.cancelled() => return None,
            result = connection::open(shared) => result,
        };
        let connection = match connection {
            Ok(connection) => connection,
            Err(error) => return Some(self.failed(options, &error)),
        };
        self.unavailable = false;
        self.connections += 1;
        let stats = &shared.stats;
        stats.connects.fetch_add(1, Ordering::Relaxed);
        if self.connections > 1 {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        stats.connected.store(true, Ordering::Relaxed);
        tracing::info!(
            event = "events.connected",
            tenant = options.tenant,
            connection = self.connections,
            "Stream connected"
        );
        let end = connection.serve(shared, shutdown).await;
        stats.connected.store(false, Ordering::Relaxed);
        self.ended(options, end, shutdown)
    }

    fn ended(
        &mut self,
        options: &StreamOptions,
        end: End,
        shutdown: &CancellationToken,
    ) -> Option<Duration> {
        match end {
            End::Shutdown => None,
            End::Replaced(old) => {
                tracing::info!(
                    event = "events.disconnected",
                    tenant = options.tenant,
                    reason = "server asked to reconnect",
                    "Stream connection replaced"
                );
                tokio::spawn(old.drain(DRAIN_GRACE, shutdown.clone()));
                self.attempt = 0;
                None
            }
            End::Lost {
                reason,
                error,
                received_frame,
            } => {
                tracing::warn!(
                    event = "events.disconnected",
                    tenant = options.tenant,
                    reason,
                    error = error.as_deref(),
                    "Stream connection lost"
                );
                if received_frame {
                    self.attempt = 0;
                }
                Some(self.next_delay(options, None))
            }
        }
    }

    fn failed(&mut self, options: &StreamOptions, error: &StreamError) -> Duration {
        if error.is_retryable() {
            return self.next_delay(options, Some(error));
        }
        if !self.unavailable {
            self.unavailable = true;
            tracing::error!(
                event = "events.unavailable",
                tenant = options.tenant,
                reason = %error,
                retry_in_ms = millis(options.unavailable_retry),
                "Stream mode is unavailable for this app; events are not received"
            );
        }
        tracing::debug!(
            event = "events.reconnecting",
            tenant = options.tenant,
            delay_ms = millis(options.unavailable_retry),
            "Stream still refused; trying again later"
        );
        options.unavailable_retry
    }

    fn next_delay(&mut self, options: &StreamOptions, error: Option<&StreamError>) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        let delay = backoff(options.backoff_base, options.backoff_cap, self.attempt);
        tracing::info!(
            event = "events.reconnecting",
            tenant = options.tenant,
            delay_ms = millis(delay),
            attempt = self.attempt,
            error = error.map(tracing::field::display),
            "Stream reconnecting"
        );
        delay
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The delay before reconnect attempt `attempt` (1-based): `min(cap, base × 2^(attempt-1))`,
/// jittered down to half of it so that many clients do not reconnect in step.
fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = millis(base.saturating_mul(1 << exponent).min(cap)).max(1);
    Duration::from_millis(rand::rng().random_range(ceiling / 2..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            let first = backoff(base, cap, 1);
            assert!(
                (Duration::from_millis(500)..=base).contains(&first),
                "{first:?}"
            );
            let third = backoff(base, cap, 3);
            assert!((Duration::from_secs(2)..=Duration::from_secs(4)).contains(&third));
            for attempt in [7, 30, u32::MAX] {
                let late = backoff(base, cap, attempt);
                assert!((Duration::from_secs(30)..=cap).contains(&late), "{late:?}");
            }
        }
        // A zero base still waits at most a millisecond, never panics.
        assert!(backoff(Duration::ZERO, cap, 1) <= Duration::from_millis(1));
    }

    #[test]
    fn options_debug_hides_the_secret() {
        let options = StreamOptions::new(
            "https://api.dingtalk.com".parse().unwrap(),
            "key".into(),
            Secret::new("SECRET-VALUE"),
            1,
        );
        assert!(!format!("{options:?}").contains("SECRET-VALUE"));
        assert_eq!(options.keepalive, Duration::from_secs(30));
    }
}
