//! The gateway over HTTP: `GET /connect?ticket=` (the WebSocket, one task per connection)
//! and the Stream admin API under `/_sim/apps/KEY/stream`. A connection's task owns its
//! socket and is the only writer; the shared state tells it what to write through a channel
//! and is locked only between awaits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::hub::{Command, TicketRefusal};
use super::Attached;
use crate::sim::Simulator;

/// How often a connection's task looks for events to (re)deliver: the precision of
/// `ack_timeout` and `redeliver_delay`.
const PUMP_TICK: Duration = Duration::from_millis(25);
/// How long a zombie keeps its socket when nobody drops it.
const ZOMBIE_HOLD: Duration = Duration::from_secs(600);

/// The WebSocket endpoint and the Stream admin API.
pub(in crate::sim) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/connect", get(connect))
        .route("/_sim/apps/{appkey}/stream", get(stats))
        .route("/_sim/apps/{appkey}/stream/refuse", post(refuse))
        .route("/_sim/apps/{appkey}/stream/drop", post(drop_all))
        .route("/_sim/apps/{appkey}/stream/disconnect", post(disconnect))
        .route("/_sim/apps/{appkey}/stream/zombie", post(zombie))
        .route("/_sim/apps/{appkey}/stream/duplicate", post(duplicate))
}

async fn connect(
    State(sim): State<Simulator>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let ticket = query.get("ticket").map(String::as_str).unwrap_or("");
    let appkey = match sim.stream_take_ticket(ticket) {
        Ok(appkey) => appkey,
        Err(TicketRefusal::Unknown) => {
            let body =
                json!({ "code": "invalidTicket", "message": "ticket is unknown or expired" });
            return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
        }
        Err(TicketRefusal::Used) => {
            let body = json!({ "code": "ticketUsed", "message": "ticket was already used" });
            return (StatusCode::FORBIDDEN, Json(body)).into_response();
        }
    };
    upgrade.on_upgrade(move |socket| async move {
        if let Some(attached) = sim.stream_attach(&appkey) {
            serve(sim, attached, socket).await;
        }
    })
}

/// What a connection does next.
enum Next {
    Continue,
    /// Closed, or to be closed with a close frame.
    Close,
    /// Dropped without a close frame.
    Drop,
    Zombie,
}

/// One connection, until it closes, is dropped or is told to.
async fn serve(sim: Simulator, mut attached: Attached, mut socket: WebSocket) {
    let options = attached.options.clone();
    let start = tokio::time::Instant::now();
    // tokio's interval refuses a zero period.
    let ping_every = options.ping_interval.max(Duration::from_millis(1));
    let mut ping = tokio::time::interval_at(start + ping_every, ping_every);
    let mut pump = tokio::time::interval(PUMP_TICK);
    let mut close_at: Option<tokio::time::Instant> = None;
    let next = loop {
        let next = tokio::select! {
            command = attached.commands.recv() => {
                on_command(command, &mut socket, &mut close_at, options.disconnect_grace).await
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    sim.stream_client_frame(&attached.appkey, text.as_str());
                    Next::Continue
                }
                Some(Ok(Message::Ping(_))) => {
                    sim.stream_websocket_ping(&attached.appkey);
                    Next::Continue
                }
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Next::Close,
                Some(Ok(_)) => Next::Continue,
            },
            _ = ping.tick(), if close_at.is_none() => {
                match sim.stream_ping_frame(&attached.appkey) {
                    Some(frame) => send(&mut socket, frame).await,
                    None => Next::Close,
                }
            }
            _ = pump.tick() => {
                sim.stream_pump(&attached.appkey);
                Next::Continue
            }
            _ = tokio::time::sleep_until(close_at.unwrap_or(start)), if close_at.is_some() => Next::Close,
        };
        match next {
            Next::Continue => {}
            other => break other,
        }
    };
    let (appkey, id) = (attached.appkey.clone(), attached.id);
    match next {
        Next::Zombie => hold_zombie(attached, socket).await,
        // Dropping the socket closes the TCP connection without a close frame.
        Next::Drop => drop(socket),
        // Starts the close handshake, or completes the one the client started (a plain
        // send after the client's close frame would fail before tungstenite's reply is
        // written, and the Python SDK then waits 10 s before reconnecting).
        _ => {
            let _ = futures_util::SinkExt::close(&mut socket).await;
        }
    }
    sim.stream_detach(&appkey, id);
}

async fn send(socket: &mut WebSocket, frame: String) -> Next {
    match socket.send(Message::Text(frame.into())).await {
        Ok(()) => Next::Continue,
        Err(_) => Next::Close,
    }
}

async fn on_command(
    command: Option<Command>,
    socket: &mut WebSocket,
    close_at: &mut Option<tokio::time::Instant>,
    grace: Duration,
) -> Next {
    match command {
        Some(Command::Frame(frame)) => send(socket, frame).await,
        Some(Command::Disconnect(frame)) => {
            *close_at = Some(tokio::time::Instant::now() + grace);
            send(socket, frame).await
        }
        Some(Command::Drop) => Next::Drop,
        Some(Command::Zombie) => Next::Zombie,
        Some(Command::Close) | None => Next::Close,
    }
}

/// Keeps the socket open without reading it (so no WebSocket pong is sent either) until
/// the simulator drops or closes it, or for [`ZOMBIE_HOLD`].
async fn hold_zombie(mut attached: Attached, socket: WebSocket) {
    let deadline = Instant::now() + ZOMBIE_HOLD;
    loop {
        tokio::select! {
            command = attached.commands.recv() => match command {
                Some(Command::Drop | Command::Close) | None => break,
                Some(_) => {}
            },
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    drop(socket);
}

fn no_such_app() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "no such app" })),
    )
        .into_response()
}

async fn stats(State(sim): State<Simulator>, Path(appkey): Path<String>) -> Response {
    match sim.stream_stats(&appkey) {
        Some(stats) => Json(stats).into_response(),
        None => no_such_app(),
    }
}

#[derive(Deserialize)]
struct Refuse {
    refused: bool,
}

async fn refuse(
    State(sim): State<Simulator>,
    Path(appkey): Path<String>,
    Json(body): Json<Refuse>,
) -> Response {
    if !sim.stream_refuse(&appkey, body.refused) {
        return no_such_app();
    }
    Json(json!({ "ok": true, "refused": body.refused })).into_response()
}

fn counted(sim: &Simulator, appkey: &str, count: usize) -> Response {
    match sim.stream_stats(appkey) {
        Some(_) => Json(json!({ "ok": true, "connections": count })).into_response(),
        None => no_such_app(),
    }
}

async fn drop_all(State(sim): State<Simulator>, Path(appkey): Path<String>) -> Response {
    let count = sim.stream_drop(&appkey);
    counted(&sim, &appkey, count)
}

async fn disconnect(State(sim): State<Simulator>, Path(appkey): Path<String>) -> Response {
    let count = sim.stream_disconnect(&appkey);
    counted(&sim, &appkey, count)
}

async fn zombie(State(sim): State<Simulator>, Path(appkey): Path<String>) -> Response {
    let count = sim.stream_zombie(&appkey);
    counted(&sim, &appkey, count)
}

#[derive(Deserialize)]
struct Duplicate {
    count: u32,
}

async fn duplicate(
    State(sim): State<Simulator>,
    Path(appkey): Path<String>,
    Json(body): Json<Duplicate>,
) -> Response {
    if !sim.stream_duplicate(&appkey, body.count) {
        return no_such_app();
    }
    Json(json!({ "ok": true, "count": body.count })).into_response()
}
