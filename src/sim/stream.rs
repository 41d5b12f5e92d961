//! The Stream-mode gateway (STREAM.md §9): `POST /v1.0/gateway/connections/open` hands out
//! one-time tickets, `GET /connect?ticket=` upgrades to a WebSocket that carries EVENT frames
//! for every address-book change made to the app's organisation (through the API or the
//! console), SYSTEM pings, and SYSTEM disconnect on request. Events stay queued until a
//! connection acks them with success; each delivery goes to one live connection chosen at
//! random, with a fresh messageId and the event's stable eventId; no ack within
//! `ack_timeout`, a non-200 code or `LATER` means a redelivery after `redeliver_delay`.
//! Faults: refuse the app, drop every connection, disconnect, zombie, duplicate after ack.
//! Built to what DingTalk's SDKs expect (the Python SDK is the oracle in tests), not only to
//! what dingsync's client sends. The simulator's mutex is never held across `.await`:
//! connection tasks ([`socket`]) get their frames through channels.

pub(super) mod changes;
pub(super) mod hub;
pub(super) mod socket;
mod wire;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dispatch::Outcome;
use super::params::Params;
use super::{Simulator, State};
use hub::{Command, TicketRefusal};

/// Stream timings of the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSimOptions {
    /// An event not acked within this is redelivered (DingTalk: within 60 s; the SDKs ack
    /// within ~3 s).
    pub ack_timeout: Duration,
    /// Wait before redelivering after LATER, a failure code, a timeout or a lost connection.
    pub redeliver_delay: Duration,
    /// SYSTEM ping interval per connection.
    pub ping_interval: Duration,
    /// After SYSTEM disconnect, the socket is closed after this (DingTalk: 10 s).
    pub disconnect_grace: Duration,
    /// Lifetime of a ticket (DingTalk: 90 s).
    pub ticket_ttl: Duration,
}

impl Default for StreamSimOptions {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(5),
            redeliver_delay: Duration::from_secs(1),
            ping_interval: Duration::from_secs(30),
            disconnect_grace: Duration::from_secs(10),
            ticket_ttl: Duration::from_secs(90),
        }
    }
}

/// Counters of one app's gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSimStats {
    /// WebSocket connections accepted.
    pub connections_opened: u64,
    /// Connections open now (disconnecting and zombie ones included).
    pub live_connections: u64,
    /// Events created (one per address-book change once a client subscribed).
    pub events: u64,
    /// EVENT frames sent (first deliveries, redeliveries and duplicates).
    pub delivered: u64,
    /// Success acks.
    pub acked: u64,
    /// Deliveries after the first of an event (after LATER, failure, timeout, lost connection).
    pub redelivered: u64,
    /// LATER or non-200 acks.
    pub later: u64,
    /// Copies delivered again after a success ack (the `duplicate` switch).
    pub duplicated: u64,
    /// SYSTEM pings sent.
    pub pings_sent: u64,
    /// Ping acks echoing the ping's data.
    pub pongs: u64,
    /// WebSocket pings received from clients (their keepalive), each answered with a pong.
    pub websocket_pings: u64,
    /// Tickets issued by `connections/open`.
    pub tickets_issued: u64,
    /// Tickets refused at `/connect` (used or expired; unknown ones are not the app's).
    pub tickets_refused: u64,
    /// SYSTEM disconnects sent.
    pub disconnects_sent: u64,
    /// Events not yet acked with success.
    pub queued: u64,
}

/// Wall-clock ms for frame `time` headers (the simulated clock is for the API's rules).
fn wall_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

fn open_refusal(status: u16, code: &str, message: &str) -> Outcome {
    Outcome::Json(status, json!({ "code": code, "message": message }))
}

/// The subscriptions must be a list of `{type, topic}`; EVENT only with topic `*`.
fn check_subscriptions(subscriptions: Option<&Value>) -> Result<(), &'static str> {
    let Some(list) = subscriptions.and_then(Value::as_array) else {
        return Err("subscriptions is mandatory");
    };
    for subscription in list {
        let field = |key| subscription.get(key).and_then(Value::as_str);
        match (field("type"), field("topic")) {
            (Some("EVENT"), Some("*")) => {}
            (Some("EVENT"), _) => return Err("EVENT subscriptions only support topic *"),
            (Some("CALLBACK" | "SYSTEM"), Some(topic)) if !topic.is_empty() => {}
            _ => return Err("subscription type must be EVENT or CALLBACK, with a topic"),
        }
    }
    Ok(())
}

impl State {
    /// `POST /v1.0/gateway/connections/open`: checks the credentials and subscriptions and
    /// issues a ticket for `ws://<host>/connect`.
    pub(super) fn stream_open(&mut self, params: &Params, host: &str) -> Outcome {
        let appkey = self.credentials_ok(
            params.str("clientId").as_deref(),
            params.str("clientSecret").as_deref(),
        );
        let Some(appkey) = appkey else {
            return open_refusal(401, "authFailed", "clientId or clientSecret is invalid");
        };
        if let Err(message) = check_subscriptions(params.0.get("subscriptions")) {
            return open_refusal(400, "invalidParameter", message);
        }
        let Some(app) = self.apps.get_mut(&appkey) else {
            return open_refusal(401, "authFailed", "clientId or clientSecret is invalid");
        };
        if app.stream.refused {
            return open_refusal(
                403,
                "Forbidden.AccessDenied",
                "stream not enabled for this app",
            );
        }
        let ticket = app.stream.issue_ticket(Instant::now());
        Outcome::Json(
            200,
            json!({ "endpoint": format!("ws://{host}/connect"), "ticket": ticket }),
        )
    }
}

/// A connection accepted by `/connect`.
pub(super) struct Attached {
    appkey: String,
    id: u64,
    commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
    options: StreamSimOptions,
}

impl Simulator {
    /// Changes the Stream timings of every app (now and added later).
    pub fn set_stream_options(&self, options: StreamSimOptions) {
        let mut state = self.lock();
        for app in state.apps.values_mut() {
            app.stream.options = options.clone();
        }
        state.options.stream = options;
    }

    fn with_stream<T>(&self, appkey: &str, f: impl FnOnce(&mut hub::AppStream) -> T) -> Option<T> {
        self.lock()
            .apps
            .get_mut(appkey)
            .map(|app| f(&mut app.stream))
    }

    /// The Stream counters of `appkey` (`None`: no such app).
    pub fn stream_stats(&self, appkey: &str) -> Option<StreamSimStats> {
        self.with_stream(appkey, |stream| stream.stats())
    }

    /// Refuses (or allows again) `connections/open` for `appkey` with 403, as when an admin
    /// has not enabled Stream mode. Open connections stay. `false`: no such app.
    pub fn stream_refuse(&self, appkey: &str, refused: bool) -> bool {
        self.with_stream(appkey, |stream| stream.refused = refused)
            .is_some()
    }

    /// Drops every connection of `appkey` at the TCP level (no close frame); returns how
    /// many. What they had in flight is redelivered.
    pub fn stream_drop(&self, appkey: &str) -> usize {
        self.with_stream(appkey, |stream| {
            stream.end_all(|| Command::Drop, Instant::now())
        })
        .unwrap_or(0)
    }

    /// Sends SYSTEM disconnect to every live connection of `appkey`; each gets no more
    /// events and is closed after `disconnect_grace`. Returns how many.
    pub fn stream_disconnect(&self, appkey: &str) -> usize {
        self.with_stream(appkey, hub::AppStream::disconnect_all)
            .unwrap_or(0)
    }

    /// Turns every live connection of `appkey` into a zombie: open, silent, deaf (no frame,
    /// no WebSocket pong). Returns how many.
    pub fn stream_zombie(&self, appkey: &str) -> usize {
        self.with_stream(appkey, hub::AppStream::zombie_all)
            .unwrap_or(0)
    }

    /// The next `count` events of `appkey` acked with success are delivered once more (same
    /// eventId, new messageId). `false`: no such app.
    pub fn stream_duplicate(&self, appkey: &str, count: u32) -> bool {
        self.with_stream(appkey, |stream| stream.add_duplicates(count))
            .is_some()
    }

    /// Closes every Stream connection of every app (the server is stopping).
    pub(super) fn stream_close_all(&self) {
        let mut state = self.lock();
        for app in state.apps.values_mut() {
            app.stream.end_all(|| Command::Close, Instant::now());
        }
    }

    /// Uses up `ticket`; the app it opens a connection for.
    fn stream_take_ticket(&self, ticket: &str) -> Result<String, TicketRefusal> {
        let mut state = self.lock();
        let app = state
            .apps
            .values_mut()
            .find(|app| app.stream.has_ticket(ticket))
            .ok_or(TicketRefusal::Unknown)?;
        app.stream.take_ticket(ticket, Instant::now())?;
        Ok(app.appkey.clone())
    }

    /// A client frame of `appkey` (an ack or a ping echo).
    fn stream_client_frame(&self, appkey: &str, text: &str) {
        self.with_stream(appkey, |stream| {
            stream.on_client_frame(text, Instant::now())
        });
    }

    /// A client's WebSocket ping on a connection of `appkey` (the socket answers it).
    fn stream_websocket_ping(&self, appkey: &str) {
        self.with_stream(appkey, hub::AppStream::on_websocket_ping);
    }

    /// The next SYSTEM ping for a connection of `appkey` (`None`: the app is gone).
    fn stream_ping_frame(&self, appkey: &str) -> Option<String> {
        self.with_stream(appkey, hub::AppStream::ping_frame)
    }

    /// Redelivers what timed out and delivers what is due.
    fn stream_pump(&self, appkey: &str) {
        self.with_stream(appkey, |stream| stream.pump(Instant::now()));
    }

    /// Forgets a closed connection.
    fn stream_detach(&self, appkey: &str, id: u64) {
        self.with_stream(appkey, |stream| stream.detach(id, Instant::now()));
    }

    /// Registers the connection a ticket opened.
    fn stream_attach(&self, appkey: &str) -> Option<Attached> {
        self.with_stream(appkey, |stream| {
            let (id, commands) = stream.attach(Instant::now());
            Attached {
                appkey: appkey.to_string(),
                id,
                commands,
                options: stream.options.clone(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sim::dispatch::{ApiRequest, Outcome};
    use crate::sim::SimOptions;

    fn open(sim: &Simulator, body: Value) -> (u16, Value) {
        let body = body.to_string();
        let answer = sim.handle(ApiRequest {
            method: "POST",
            path: "v1.0/gateway/connections/open",
            query: Params::default(),
            body: body.as_bytes(),
            host: Some("127.0.0.1:9"),
        });
        match answer.outcome {
            Outcome::Json(status, value) => (status, value),
            other => panic!("not JSON: {other:?}"),
        }
    }

    fn subscription(secret: &str, topic: &str) -> Value {
        json!({"clientId": "k", "clientSecret": secret,
            "subscriptions": [{"type": "EVENT", "topic": topic}], "ua": "t"})
    }

    #[test]
    fn connections_open_checks_credentials_topic_and_permission() {
        let sim = Simulator::new(SimOptions::default());
        sim.add_app("k", "s", 1);
        let (status, body) = open(&sim, subscription("wrong", "*"));
        assert_eq!((status, body["code"].as_str()), (401, Some("authFailed")));
        let (status, _) = open(&sim, subscription("s", "user_add_org"));
        assert_eq!(status, 400);
        sim.stream_refuse("k", true);
        let (status, body) = open(&sim, subscription("s", "*"));
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("Forbidden.AccessDenied"))
        );
        sim.stream_refuse("k", false);
        let (status, body) = open(&sim, subscription("s", "*"));
        assert_eq!(
            (status, body["endpoint"].as_str()),
            (200, Some("ws://127.0.0.1:9/connect"))
        );
        let ticket = body["ticket"].as_str().unwrap();
        assert_eq!(sim.stream_take_ticket(ticket).as_deref(), Ok("k"));
        assert_eq!(sim.stream_take_ticket(ticket), Err(TicketRefusal::Used));
        assert_eq!(sim.stream_take_ticket("nope"), Err(TicketRefusal::Unknown));
        assert_eq!(sim.calls("k")["v1.0/gateway/connections/open"].calls, 4);
    }

    #[test]
    fn every_successful_change_queues_one_event_and_failures_none() {
        let sim = Simulator::new(SimOptions::default());
        sim.add_app("k", "s", 1);
        let call = |path: &str, body: Value| sim.admin_call("k", path, body);
        let user =
            json!({"userid": "u1", "name": "A", "mobile": "13800000001", "dept_id_list": "1"});
        call("topapi/v2/user/create", user.clone()).unwrap();
        assert_eq!(
            sim.stream_stats("k").unwrap().events,
            0,
            "nobody subscribed yet"
        );
        open(&sim, subscription("s", "*"));
        call(
            "topapi/v2/user/update",
            json!({"userid": "u1", "name": "B"}),
        )
        .unwrap();
        call("topapi/v2/user/create", user).unwrap_err();
        let dept = call(
            "topapi/v2/department/create",
            json!({"name": "D", "parent_id": 1}),
        )
        .unwrap()["result"]["dept_id"]
            .clone();
        call(
            "topapi/v2/department/update",
            json!({"dept_id": dept, "name": "E"}),
        )
        .unwrap();
        call("topapi/v2/department/delete", json!({"dept_id": 999})).unwrap_err();
        call("topapi/v2/department/delete", json!({"dept_id": dept})).unwrap();
        call("topapi/v2/user/get", json!({"userid": "u1"})).unwrap();
        call(
            "topapi/message/corpconversation/asyncsend_v2",
            json!({"agent_id": 1, "userid_list": "u1", "msg": {"msgtype": "text", "text": {"content": "x"}}}),
        )
        .unwrap();
        call("topapi/v2/user/delete", json!({"userid": "u1"})).unwrap();
        let stats = sim.stream_stats("k").unwrap();
        assert_eq!((stats.events, stats.queued, stats.delivered), (5, 5, 0));
    }
}
