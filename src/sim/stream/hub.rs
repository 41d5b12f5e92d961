//! One app's Stream gateway state: tickets, the queue of unacked events, the live
//! connections, acks by messageId, pings, and the fault switches. Plain data behind the
//! simulator's mutex: it never awaits; connections get their frames through unbounded
//! channels, written by their own tasks ([`super::socket`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::wire::{self, hex_id, message_id, system_frame, EventFrame};
use super::{StreamSimOptions, StreamSimStats};

/// What a connection's task is told to do.
#[derive(Debug)]
pub(in crate::sim) enum Command {
    /// Write this text frame.
    Frame(String),
    /// Write this SYSTEM disconnect, then close after the grace period.
    Disconnect(String),
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Stop reading and writing; keep the socket open.
    Zombie,
    /// Close with a close frame (simulator shutting down).
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Receives events.
    Live,
    /// Got a SYSTEM disconnect: no new deliveries; closes after the grace period.
    Disconnecting,
    /// Answers nothing.
    Zombie,
}

#[derive(Clone, Debug)]
struct Link {
    commands: mpsc::UnboundedSender<Command>,
    mode: Mode,
}

#[derive(Clone, Debug)]
enum Delivery {
    /// Waiting to be sent at this time.
    Due(Instant),
    /// Sent; acked or redelivered after `deadline`.
    InFlight {
        message_id: String,
        connection: u64,
        deadline: Instant,
    },
}

#[derive(Clone, Debug)]
struct Pending {
    event_id: String,
    event_type: &'static str,
    data: String,
    born_ms: i64,
    /// A copy sent after a successful ack (the `duplicate` switch): never duplicated again.
    duplicate: bool,
    sends: u32,
    delivery: Delivery,
}

#[derive(Clone, Debug)]
struct Ticket {
    expires: Instant,
    used: bool,
}

/// Why a ticket was refused at `/connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::sim) enum TicketRefusal {
    /// Never issued, or expired.
    Unknown,
    /// Already opened a connection.
    Used,
}

/// One app's gateway.
#[derive(Clone, Debug)]
pub(in crate::sim) struct AppStream {
    pub(in crate::sim) options: StreamSimOptions,
    corp_id: String,
    unified_app_id: String,
    /// Whether a client ever asked for a ticket: only then are events kept (DingTalk lets an
    /// admin choose Stream mode only while a client is connected).
    subscribed: bool,
    pub(in crate::sim) refused: bool,
    tickets: HashMap<String, Ticket>,
    next_seq: u64,
    next_connection: u64,
    queue: BTreeMap<u64, Pending>,
    in_flight: HashMap<String, u64>,
    pings: HashMap<String, String>,
    links: BTreeMap<u64, Link>,
    duplicates_left: u32,
    counters: StreamSimStats,
}

impl AppStream {
    /// A gateway with nothing queued, timed by `options`.
    pub(in crate::sim) fn new(appkey: &str, options: StreamSimOptions) -> Self {
        let corp_hash = appkey.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let app_id = hex_id(128);
        Self {
            options,
            corp_id: format!("ding{corp_hash:016x}"),
            unified_app_id: format!(
                "{}-{}-{}-{}-{}",
                &app_id[..8],
                &app_id[8..12],
                &app_id[12..16],
                &app_id[16..20],
                &app_id[20..]
            ),
            subscribed: false,
            refused: false,
            tickets: HashMap::new(),
            next_seq: 0,
            next_connection: 0,
            queue: BTreeMap::new(),
            in_flight: HashMap::new(),
            pings: HashMap::new(),
            links: BTreeMap::new(),
            duplicates_left: 0,
            counters: StreamSimStats::default(),
        }
    }

    /// Whether events are being kept (a client asked for a ticket once).
    pub(in crate::sim) fn subscribed(&self) -> bool {
        self.subscribed
    }

    /// A one-time ticket, valid for `ticket_ttl`.
    pub(in crate::sim) fn issue_ticket(&mut self, now: Instant) -> String {
        self.tickets.retain(|_, ticket| ticket.expires > now);
        let ticket = hex_id(128);
        let expires = now + self.options.ticket_ttl;
        self.tickets.insert(
            ticket.clone(),
            Ticket {
                expires,
                used: false,
            },
        );
        self.subscribed = true;
        self.counters.tickets_issued += 1;
        ticket
    }

    /// Whether `ticket` belongs to this app (used or not).
    pub(in crate::sim) fn has_ticket(&self, ticket: &str) -> bool {
        self.tickets.contains_key(ticket)
    }

    /// Uses `ticket` up, or says why it cannot open a connection.
    pub(in crate::sim) fn take_ticket(
        &mut self,
        ticket: &str,
        now: Instant,
    ) -> Result<(), TicketRefusal> {
        let entry = self.tickets.get_mut(ticket).ok_or(TicketRefusal::Unknown)?;
        let refusal = match (entry.used, entry.expires <= now) {
            (true, _) => Some(TicketRefusal::Used),
            (false, true) => Some(TicketRefusal::Unknown),
            (false, false) => None,
        };
        match refusal {
            Some(refusal) => {
                self.counters.tickets_refused += 1;
                Err(refusal)
            }
            None => {
                entry.used = true;
                Ok(())
            }
        }
    }

    /// Registers a new connection; it is sent what is due at once.
    pub(in crate::sim) fn attach(
        &mut self,
        now: Instant,
    ) -> (u64, mpsc::UnboundedReceiver<Command>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        self.next_connection += 1;
        let id = self.next_connection;
        self.links.insert(
            id,
            Link {
                commands,
                mode: Mode::Live,
            },
        );
        self.counters.connections_opened += 1;
        self.deliver_due(now);
        (id, receiver)
    }

    /// Forgets a closed connection; what it had in flight is redelivered after
    /// `redeliver_delay`.
    pub(in crate::sim) fn detach(&mut self, connection: u64, now: Instant) {
        self.links.remove(&connection);
        let due = now + self.options.redeliver_delay;
        for pending in self.queue.values_mut() {
            if let Delivery::InFlight {
                message_id,
                connection: on,
                ..
            } = &pending.delivery
            {
                if *on == connection {
                    self.in_flight.remove(message_id);
                    pending.delivery = Delivery::Due(due);
                }
            }
        }
    }

    /// Queues an address-book event and delivers it if a connection is live.
    pub(in crate::sim) fn record(&mut self, event_type: &'static str, data: &Value, now_ms: i64) {
        if !self.subscribed {
            return;
        }
        self.counters.events += 1;
        self.push(Pending {
            event_id: hex_id(128),
            event_type,
            data: data.to_string(),
            born_ms: now_ms,
            duplicate: false,
            sends: 0,
            delivery: Delivery::Due(Instant::now()),
        });
        self.deliver_due(Instant::now());
    }

    fn push(&mut self, pending: Pending) {
        self.next_seq += 1;
        self.queue.insert(self.next_seq, pending);
    }

    /// Redelivery of what was not acked in time, then delivery of what is due.
    pub(in crate::sim) fn pump(&mut self, now: Instant) {
        let due = now + self.options.redeliver_delay;
        for pending in self.queue.values_mut() {
            if let Delivery::InFlight {
                message_id,
                deadline,
                ..
            } = &pending.delivery
            {
                if *deadline <= now {
                    self.in_flight.remove(message_id);
                    pending.delivery = Delivery::Due(due);
                }
            }
        }
        self.deliver_due(now);
    }

    fn live_links(&self) -> Vec<u64> {
        self.links
            .iter()
            .filter(|(_, link)| link.mode == Mode::Live)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Sends every due event to one live connection chosen at random.
    fn deliver_due(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .queue
            .iter()
            .filter(|(_, p)| matches!(p.delivery, Delivery::Due(at) if at <= now))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            while !self.try_send(seq, now) {
                if self.live_links().is_empty() {
                    return;
                }
            }
        }
    }

    /// Sends event `seq` to a random live connection; `false` when that connection was gone
    /// (it is forgotten, so the caller may try another) or none is live.
    fn try_send(&mut self, seq: u64, now: Instant) -> bool {
        let live = self.live_links();
        if live.is_empty() {
            return false;
        }
        let connection = live[rand::rng().random_range(0..live.len())];
        let now_ms = super::wall_ms();
        let message_id = message_id(seq, now_ms);
        let Some(pending) = self.queue.get_mut(&seq) else {
            return true;
        };
        let event = EventFrame {
            event_id: &pending.event_id,
            event_type: pending.event_type,
            born_ms: pending.born_ms,
            data: &pending.data,
            corp_id: &self.corp_id,
            unified_app_id: &self.unified_app_id,
        };
        let frame = wire::event_frame(&event, &message_id, now_ms);
        let sent = self
            .links
            .get(&connection)
            .is_some_and(|link| link.commands.send(Command::Frame(frame)).is_ok());
        if !sent {
            self.links.remove(&connection);
            return false;
        }
        self.counters.delivered += 1;
        if pending.sends > 0 {
            self.counters.redelivered += 1;
        }
        pending.sends += 1;
        pending.delivery = Delivery::InFlight {
            message_id: message_id.clone(),
            connection,
            deadline: now + self.options.ack_timeout,
        };
        self.in_flight.insert(message_id, seq);
        true
    }
}

impl AppStream {
    /// Reads a client frame: an event ack (success, LATER or failure), a ping echo, or
    /// anything else (ignored).
    pub(in crate::sim) fn on_client_frame(&mut self, text: &str, now: Instant) {
        let Some(ack) = wire::parse_ack(text) else {
            return;
        };
        if let Some(opaque) = self.pings.remove(&ack.message_id) {
            if ack.code == Some(200)
                && ack.data.get("opaque").and_then(Value::as_str) == Some(&opaque)
            {
                self.counters.pongs += 1;
            }
            return;
        }
        let Some(seq) = self.in_flight.remove(&ack.message_id) else {
            return;
        };
        // Success iff code 200 and status is not LATER (Python's ack echoes the event's
        // data, without a status).
        let later = ack.data.get("status").and_then(Value::as_str) == Some("LATER");
        if ack.code == Some(200) && !later {
            self.acked(seq, now);
        } else if let Some(pending) = self.queue.get_mut(&seq) {
            self.counters.later += 1;
            pending.delivery = Delivery::Due(now + self.options.redeliver_delay);
        }
    }

    fn acked(&mut self, seq: u64, now: Instant) {
        let Some(mut pending) = self.queue.remove(&seq) else {
            return;
        };
        self.counters.acked += 1;
        if pending.duplicate || self.duplicates_left == 0 {
            return;
        }
        self.duplicates_left -= 1;
        self.counters.duplicated += 1;
        pending.duplicate = true;
        pending.sends = 0;
        pending.delivery = Delivery::Due(now);
        self.push(pending);
        self.deliver_due(now);
    }

    /// A client's WebSocket ping (its keepalive), counted.
    pub(in crate::sim) fn on_websocket_ping(&mut self) {
        self.counters.websocket_pings += 1;
    }

    /// A SYSTEM ping for a live connection, remembered until its echo.
    pub(in crate::sim) fn ping_frame(&mut self) -> String {
        // Unanswered pings of dead clients must not pile up.
        if self.pings.len() > 1_000 {
            self.pings.clear();
        }
        let now_ms = super::wall_ms();
        self.next_seq += 1;
        let message_id = message_id(self.next_seq, now_ms);
        let opaque = hex_id(64);
        let frame = system_frame("ping", &message_id, &json!({ "opaque": opaque }), now_ms);
        self.pings.insert(message_id, opaque);
        self.counters.pings_sent += 1;
        frame
    }

    fn command_links(
        &mut self,
        from: Mode,
        to: Option<Mode>,
        command: impl Fn() -> Command,
    ) -> usize {
        let mut count = 0;
        for link in self.links.values_mut().filter(|link| link.mode == from) {
            // A task that is gone detaches itself.
            let _ = link.commands.send(command());
            if let Some(mode) = to {
                link.mode = mode;
            }
            count += 1;
        }
        count
    }

    /// Sends SYSTEM disconnect to every live connection; they get no more events.
    pub(in crate::sim) fn disconnect_all(&mut self) -> usize {
        let now_ms = super::wall_ms();
        let data = json!({ "reason": "persistent connection is timeout" });
        let frame = system_frame("disconnect", &message_id(0, now_ms), &data, now_ms);
        let count = self.command_links(Mode::Live, Some(Mode::Disconnecting), || {
            Command::Disconnect(frame.clone())
        });
        self.counters.disconnects_sent += count as u64;
        count
    }

    /// Turns every live connection into a zombie (answers nothing, not even WS pings).
    pub(in crate::sim) fn zombie_all(&mut self) -> usize {
        self.command_links(Mode::Live, Some(Mode::Zombie), || Command::Zombie)
    }

    /// Drops every connection without a close frame (or closes them, at shutdown).
    pub(in crate::sim) fn end_all(&mut self, command: fn() -> Command, now: Instant) -> usize {
        let ids: Vec<u64> = self.links.keys().copied().collect();
        for id in &ids {
            if let Some(link) = self.links.get(id) {
                let _ = link.commands.send(command());
            }
            self.detach(*id, now);
        }
        ids.len()
    }

    /// The next `count` events acked with success are delivered once more.
    pub(in crate::sim) fn add_duplicates(&mut self, count: u32) {
        self.duplicates_left = self.duplicates_left.saturating_add(count);
    }

    /// The counters now.
    pub(in crate::sim) fn stats(&self) -> StreamSimStats {
        StreamSimStats {
            live_connections: self.links.len() as u64,
            queued: self.queue.len() as u64,
            ..self.counters
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscribed gateway with one connection and one delivered event; its messageId.
    fn delivered(
        stream: &mut AppStream,
        receiver: &mut mpsc::UnboundedReceiver<Command>,
    ) -> String {
        stream.record("user_add_org", &json!({"userId": ["u1"]}), 1);
        let Ok(Command::Frame(frame)) = receiver.try_recv() else {
            panic!("no frame delivered");
        };
        let frame: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(frame["headers"]["eventBornTime"], "1");
        assert!(frame["data"].is_string(), "data is double-encoded");
        frame["headers"]["messageId"].as_str().unwrap().to_string()
    }

    #[test]
    fn every_sdks_ack_shape_is_understood() {
        // (shape, SDK, success)
        let cases = [
            (
                r#"{"code":200,"headers":{"messageId":"ID","contentType":"application/json"},"message":"OK","data":"{\"status\":\"SUCCESS\",\"message\":\"success\"}"}"#,
                "ours / Node",
                true,
            ),
            (
                r#"{"code":200,"headers":{"messageId":"ID"},"message":"OK","data":"{\"status\":\"LATER\"}"}"#,
                "Java LATER",
                false,
            ),
            (
                r#"{"code":500,"headers":{"messageId":"ID"},"message":"client internal error","data":""}"#,
                "Java exception",
                false,
            ),
            (
                r#"{"code":500,"headers":{"messageId":"ID"},"message":"later","data":"{\"status\":\"LATER\",\"message\":\"later\"}"}"#,
                "Go LATER",
                false,
            ),
            (
                r#"{"code":200,"headers":{"messageId":"ID","contentType":"application/json"},"message":"OK","data":"{\"userId\": [\"u1\"]}"}"#,
                "Python echo",
                true,
            ),
            (
                r#"{"code":"200","header":{"messageId":"ID"},"data":{"status":"SUCCESS"}}"#,
                "lenient",
                true,
            ),
            (
                r#"{"code":404,"headers":{"messageId":"ID"},"message":"not implement","data":"{}"}"#,
                "Python default",
                false,
            ),
        ];
        for (shape, sdk, success) in cases {
            let mut stream = AppStream::new("k", StreamSimOptions::default());
            let now = Instant::now();
            stream.issue_ticket(now);
            let (_, mut receiver) = stream.attach(now);
            let message_id = delivered(&mut stream, &mut receiver);
            stream.on_client_frame(&shape.replace("ID", &message_id), now);
            let stats = stream.stats();
            assert_eq!(
                (stats.acked, stats.later, stats.queued),
                if success { (1, 0, 0) } else { (0, 1, 1) },
                "{sdk}"
            );
            // Acks of unknown messageIds (late, or repeated) change nothing.
            stream.on_client_frame(&shape.replace("ID", &message_id), now);
            assert_eq!(stream.stats(), stats, "{sdk} repeated");
        }
    }

    #[test]
    fn an_unacked_event_goes_to_the_next_connection() {
        let options = StreamSimOptions {
            redeliver_delay: std::time::Duration::ZERO,
            ..StreamSimOptions::default()
        };
        let mut stream = AppStream::new("k", options);
        let now = Instant::now();
        stream.issue_ticket(now);
        let (first, mut receiver) = stream.attach(now);
        let message_id = delivered(&mut stream, &mut receiver);
        stream.detach(first, now);
        let (_, mut next) = stream.attach(now);
        stream.pump(now);
        let again = delivered_again(&mut next);
        assert_ne!(again, message_id);
        let stats = stream.stats();
        assert_eq!(
            (stats.delivered, stats.redelivered, stats.queued),
            (2, 1, 1)
        );
    }

    fn delivered_again(receiver: &mut mpsc::UnboundedReceiver<Command>) -> String {
        let Ok(Command::Frame(frame)) = receiver.try_recv() else {
            panic!("no redelivery");
        };
        let frame: Value = serde_json::from_str(&frame).unwrap();
        frame["headers"]["messageId"].as_str().unwrap().to_string()
    }
}
