//! One Stream connection: the ticket (`connections/open`), the WebSocket, reading frames,
//! answering SYSTEM frames, handing events to the handler and writing their acks, and the
//! keepalive. The connection loop in the parent module decides when to open the next one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::error::{StreamError, StreamErrorKind, OPEN_STEP};
use super::frame::{self, Frame, FrameType};
use super::{EventHandler, StreamOptions, StreamStats};
use crate::secret::Secret;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long closing a socket may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The ticket path, under the API base URL.
const OPEN_PATH: &str = "v1.0/gateway/connections/open";

/// What every connection of one `run` shares.
pub(super) struct Shared {
    pub options: StreamOptions,
    pub handler: EventHandler,
    pub stats: Arc<StreamStats>,
    /// Handler slots: an event that finds none is left unacked, so the server redelivers it.
    pub slots: Arc<Semaphore>,
    pub http: reqwest::Client,
}

/// Where a ticket lets us connect.
struct Ticket {
    endpoint: String,
    ticket: Secret,
}

#[derive(Deserialize)]
struct OpenAnswer {
    endpoint: Option<String>,
    ticket: Option<String>,
}

/// Asks `connections/open` for a fresh endpoint and one-time ticket.
async fn open_ticket(shared: &Shared) -> Result<Ticket, StreamError> {
    let options = &shared.options;
    let mut url = options.api_base_url.clone();
    let base_path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{base_path}/{OPEN_PATH}"));
    let body = json!({
        "clientId": options.client_id,
        "clientSecret": options.client_secret.expose(),
        "subscriptions": [{ "type": "EVENT", "topic": "*" }],
        "ua": concat!("dingsync/", env!("CARGO_PKG_VERSION")),
    });
    let response = shared
        .http
        .post(url)
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await
        .map_err(StreamError::request)?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(StreamError::request)?;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status != 200 {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        let message = text("message").unwrap_or_else(|| snippet(&bytes));
        return Err(StreamError::http(status, text("code"), message));
    }
    let answer: OpenAnswer = serde_json::from_value(value).unwrap_or(OpenAnswer {
        endpoint: None,
        ticket: None,
    });
    match (answer.endpoint, answer.ticket) {
        (Some(endpoint), Some(ticket)) if !endpoint.is_empty() && !ticket.is_empty() => {
            Ok(Ticket {
                endpoint,
                ticket: Secret::new(ticket),
            })
        }
        _ => Err(StreamError::new(
            StreamErrorKind::BadAnswer,
            OPEN_STEP,
            "answer has no endpoint and ticket",
        )),
    }
}

/// The start of a body that is not JSON, on one line.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    text.replace('\n', " ")
}

/// The endpoint as given, with the URL-encoded ticket appended as a query parameter.
pub(super) fn connect_url(endpoint: &str, ticket: &Secret) -> String {
    let encoded: String =
        url::form_urlencoded::byte_serialize(ticket.expose().as_bytes()).collect();
    let separator = match endpoint.contains('?') {
        true if endpoint.ends_with('?') || endpoint.ends_with('&') => "",
        true => "&",
        false => "?",
    };
    format!("{endpoint}{separator}ticket={encoded}")
}

/// A fresh ticket, then the WebSocket, each within `open_timeout`.
pub(super) async fn open(shared: &Shared) -> Result<Connection, StreamError> {
    let timeout = shared.options.open_timeout;
    let timed_out = |step| StreamError::new(StreamErrorKind::Timeout, step, "no answer in time");
    let ticket = tokio::time::timeout(timeout, open_ticket(shared))
        .await
        .map_err(|_| timed_out(OPEN_STEP))??;
    let url = connect_url(&ticket.endpoint, &ticket.ticket);
    let (ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| timed_out(super::error::WS_STEP))?
        .map_err(|error| StreamError::websocket(&error))?;
    let (acks, acks_rx) = mpsc::unbounded_channel();
    Ok(Connection {
        ws,
        acks,
        acks_rx,
        received_frame: false,
    })
}

/// How a connection ended.
pub(super) enum End {
    /// The shutdown token was cancelled; the socket was closed.
    Shutdown,
    /// The server sent SYSTEM `disconnect`: open the next connection now, let this one drain.
    Replaced(Box<Connection>),
    /// The connection is gone.
    Lost {
        /// Why, for the log.
        reason: &'static str,
        /// The transport error, if any.
        error: Option<String>,
        /// Whether any frame arrived on it (a connection that worked resets the backoff).
        received_frame: bool,
    },
}

/// What the reading loop does next.
enum Step {
    Continue,
    /// SYSTEM disconnect: hand the socket over to `drain`.
    Replaced,
    /// The server sent a close frame.
    Closed,
    Shutdown,
    Lost(&'static str, Option<String>),
}

/// An open WebSocket and the acks waiting to be written to it.
pub(super) struct Connection {
    ws: Ws,
    /// Handler tasks send their acks here; the loop writes them.
    acks: mpsc::UnboundedSender<String>,
    acks_rx: mpsc::UnboundedReceiver<String>,
    received_frame: bool,
}

impl Connection {
    /// Reads frames until the connection ends, pinging after `keepalive` of silence and
    /// giving up after twice that.
    pub async fn serve(mut self, shared: &Arc<Shared>, shutdown: &CancellationToken) -> End {
        let keepalive = shared.options.keepalive;
        let mut last_frame = Instant::now();
        let mut pinged = false;
        let step = loop {
            let wake = last_frame + if pinged { keepalive * 2 } else { keepalive };
            let step = tokio::select! {
                _ = shutdown.cancelled() => Step::Shutdown,
                Some(ack) = self.acks_rx.recv() => self.write(Message::text(ack)).await,
                message = self.ws.next() => {
                    last_frame = Instant::now();
                    pinged = false;
                    match message {
                        None => Step::Lost("closed", None),
                        Some(Err(error)) => Step::Lost("read failed", Some(error.to_string())),
                        Some(Ok(message)) => self.on_message(message, shared),
                    }
                }
                _ = tokio::time::sleep_until(wake) => match pinged {
                    true => Step::Lost("no frame for twice the keepalive", None),
                    false => {
                        pinged = true;
                        self.write(Message::Ping(Vec::new().into())).await
                    }
                },
            };
            if !matches!(step, Step::Continue) {
                break step;
            }
        };
        self.end(step).await
    }

    async fn write(&mut self, message: Message) -> Step {
        match self.ws.send(message).await {
            Ok(()) => Step::Continue,
            Err(error) => Step::Lost("write failed", Some(error.to_string())),
        }
    }

    /// What a step that stops reading means for the connection.
    async fn end(mut self, step: Step) -> End {
        let (reason, error) = match step {
            // `serve` never ends on `Continue`; grouped here only to keep the match total.
            Step::Replaced | Step::Continue => return End::Replaced(Box::new(self)),
            Step::Shutdown => {
                self.finish_close().await;
                return End::Shutdown;
            }
            Step::Closed => {
                self.finish_close().await;
                ("closed by server", None)
            }
            Step::Lost(reason, error) => (reason, error),
        };
        End::Lost {
            reason,
            error,
            received_frame: self.received_frame,
        }
    }

    /// Answers the server's close frame (tungstenite queued the reply; this writes it).
    async fn finish_close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(None)).await;
    }

    fn on_message(&mut self, message: Message, shared: &Arc<Shared>) -> Step {
        self.received_frame = true;
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Binary(bytes) => std::str::from_utf8(bytes).unwrap_or(""),
            Message::Close(_) => return Step::Closed,
            // tungstenite answers pings itself; a pong only proves liveness.
            _ => return Step::Continue,
        };
        let Some(frame) = frame::parse(text) else {
            tracing::warn!(
                event = "events.frame.invalid",
                tenant = shared.options.tenant,
                bytes = text.len(),
                "ignored a Stream frame that is not a JSON object"
            );
            return Step::Continue;
        };
        match frame.kind {
            FrameType::System => self.on_system(frame, shared),
            FrameType::Event => {
                self.on_event(frame, shared);
                Step::Continue
            }
            FrameType::Callback => {
                self.answer(&frame, frame::CALLBACK_ACK_DATA);
                Step::Continue
            }
            FrameType::Other => Step::Continue,
        }
    }

    /// Queues an ack of `frame` with `data`, when it has a messageId.
    fn answer(&self, frame: &Frame, data: &str) {
        if let Some(message_id) = &frame.message_id {
            // Fails only once the connection is gone: nothing to answer then.
            let _ = self.acks.send(frame::ack(message_id, data));
        }
    }

    fn on_system(&mut self, frame: Frame, shared: &Arc<Shared>) -> Step {
        let stats = &shared.stats;
        match frame.topic.as_str() {
            "ping" => {
                stats.pings.fetch_add(1, Ordering::Relaxed);
                self.answer(&frame, &frame.data_text);
                Step::Continue
            }
            "disconnect" => {
                stats.disconnects_received.fetch_add(1, Ordering::Relaxed);
                self.answer(&frame, &frame.data_text);
                Step::Replaced
            }
            _ => {
                self.answer(&frame, &frame.data_text);
                Step::Continue
            }
        }
    }

    fn on_event(&self, frame: Frame, shared: &Arc<Shared>) {
        let Some(event) = frame.into_event() else {
            return;
        };
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            event = "events.received",
            tenant = shared.options.tenant,
            event_type = event.event_type.as_str(),
            event_id = event.event_id.as_str(),
            "Stream event received"
        );
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            tracing::debug!(
                event = "events.deferred",
                tenant = shared.options.tenant,
                event_id = event.event_id.as_str(),
                "every handler slot is busy; the event is left for redelivery"
            );
            return;
        };
        let acks = self.acks.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let message_id = event.message_id.clone();
            let answer = (shared.handler)(event).await;
            let counter = match answer {
                super::EventAck::Success => &shared.stats.acked_success,
                super::EventAck::Later => &shared.stats.acked_later,
            };
            // A closed connection refuses the ack; the server redelivers the event.
            if acks.send(frame::event_ack(&message_id, answer)).is_ok() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            drop(slot);
        });
    }

    /// After `disconnect`: no more events are read from this socket, but the acks of events
    /// already handed out are still written, until the server closes it or `grace` passes.
    pub async fn drain(mut self, grace: Duration, shutdown: CancellationToken) {
        let deadline = Instant::now() + grace;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                Some(ack) = self.acks_rx.recv() => {
                    if self.ws.send(Message::text(ack)).await.is_err() {
                        return;
                    }
                }
                message = self.ws.next() => match message {
                    None | Some(Err(_)) => return,
                    Some(Ok(Message::Close(_))) => break,
                    // Events on a replaced socket stay unacked: the server redelivers them.
                    Some(Ok(_)) => {}
                },
            }
        }
        self.finish_close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_is_appended_to_the_endpoint_as_given() {
        let ticket = Secret::new("a b+c/=");
        assert_eq!(
            connect_url("wss://host:443/connect", &ticket),
            "wss://host:443/connect?ticket=a+b%2Bc%2F%3D"
        );
        assert_eq!(
            connect_url("ws://h/c?region=x", &ticket),
            "ws://h/c?region=x&ticket=a+b%2Bc%2F%3D"
        );
        assert_eq!(
            connect_url("ws://h/c?", &Secret::new("t")),
            "ws://h/c?ticket=t"
        );
    }
}
