//! The gateway's side of the wire format (STREAM.md §3–§5): the frames it sends, strictly
//! as DingTalk does (header values as strings, `data` a JSON string), and the acks it reads,
//! leniently, in every shape the four SDKs send.

use rand::Rng;
use serde_json::{json, Value};

pub(super) fn hex_id(bits: u32) -> String {
    let mut rng = rand::rng();
    (0..bits / 64)
        .map(|_| format!("{:016x}", rng.random::<u64>()))
        .collect()
}

/// A fresh messageId in DingTalk's shape (`213d841d_972_1898bb26334_70a7`).
pub(super) fn message_id(seq: u64, now_ms: i64) -> String {
    let mut rng = rand::rng();
    let (a, b) = (rng.random::<u32>(), rng.random::<u16>());
    format!("{a:08x}_{seq:x}_{now_ms:x}_{b:04x}")
}

pub(super) fn system_frame(topic: &str, message_id: &str, data: &Value, now_ms: i64) -> String {
    json!({
        "specVersion": "1.0", "type": "SYSTEM",
        "headers": { "topic": topic, "messageId": message_id,
            "contentType": "application/json", "time": now_ms.to_string() },
        "data": data.to_string(),
    })
    .to_string()
}

/// An ack as the SDKs send it: `code` a number or a numeric string; `data` a JSON string
/// or an object, with or without `status`.
pub(super) struct Ack {
    pub message_id: String,
    pub code: Option<i64>,
    pub data: Value,
}

pub(super) fn parse_ack(text: &str) -> Option<Ack> {
    let value: Value = serde_json::from_str(text).ok()?;
    let headers = value.get("headers").or_else(|| value.get("header"))?;
    let message_id = match headers.get("messageId")? {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let code = match value.get("code") {
        Some(Value::Number(number)) => number.as_i64(),
        Some(Value::String(text)) => text.trim().parse().ok(),
        _ => None,
    };
    let data = match value.get("data") {
        Some(Value::String(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
        Some(other) => other.clone(),
        None => Value::Null,
    };
    Some(Ack {
        message_id,
        code,
        data,
    })
}

/// What an EVENT frame says about its event.
pub(super) struct EventFrame<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub born_ms: i64,
    /// The payload, already JSON text: sent as a string (double-encoded).
    pub data: &'a str,
    pub corp_id: &'a str,
    pub unified_app_id: &'a str,
}

/// An EVENT frame for one delivery.
pub(super) fn event_frame(event: &EventFrame<'_>, message_id: &str, now_ms: i64) -> String {
    json!({
        "specVersion": "1.0", "type": "EVENT",
        "headers": {
            "topic": "*", "messageId": message_id, "contentType": "application/json",
            "time": now_ms.to_string(), "eventType": event.event_type,
            "eventId": event.event_id, "eventBornTime": event.born_ms.to_string(),
            "eventCorpId": event.corp_id, "eventUnifiedAppId": event.unified_app_id,
        },
        "data": event.data,
    })
    .to_string()
}
