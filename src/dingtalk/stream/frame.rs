//! Stream frames as JSON text (STREAM.md §3–§5): the server's frames read leniently (header
//! values as strings or numbers, `data` double-encoded or an object, `header` for `headers`,
//! unknown headers ignored) and the acks written strictly, as DingTalk documents them.

use serde_json::{json, Map, Value};

use super::{EventAck, StreamEvent};

/// The `type` of a server frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FrameType {
    /// `ping`, `disconnect` and undocumented topics.
    System,
    /// Subscribed events (address-book changes among them).
    Event,
    /// Bot messages and card callbacks.
    Callback,
    /// Anything else.
    Other,
}

/// One server frame, decoded once.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Frame {
    pub kind: FrameType,
    pub topic: String,
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub event_born_time: Option<i64>,
    pub event_corp_id: Option<String>,
    /// `data` as the server sent it when it was a string; an object re-encoded otherwise.
    /// A ping's ack echoes it.
    pub data_text: String,
    /// `data` decoded (`Null` when absent; the string itself when it is not JSON).
    pub data: Value,
}

/// Reads one text frame; `None` when it is not a JSON object.
pub(super) fn parse(text: &str) -> Option<Frame> {
    let Value::Object(mut frame) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let headers = match frame.remove("headers").or_else(|| frame.remove("header")) {
        Some(Value::Object(headers)) => headers,
        _ => Map::new(),
    };
    let (data_text, data) = decode_data(frame.remove("data"));
    let kind = match frame.get("type").and_then(Value::as_str).unwrap_or("") {
        t if t.eq_ignore_ascii_case("SYSTEM") => FrameType::System,
        t if t.eq_ignore_ascii_case("EVENT") => FrameType::Event,
        t if t.eq_ignore_ascii_case("CALLBACK") => FrameType::Callback,
        _ => FrameType::Other,
    };
    Some(Frame {
        kind,
        topic: header_text(&headers, "topic").unwrap_or_default(),
        message_id: header_text(&headers, "messageId"),
        event_type: header_text(&headers, "eventType"),
        event_id: header_text(&headers, "eventId"),
        event_born_time: header_text(&headers, "eventBornTime").and_then(|t| parse_ms(&t)),
        event_corp_id: header_text(&headers, "eventCorpId"),
        data_text,
        data,
    })
}

fn decode_data(data: Option<Value>) -> (String, Value) {
    match data {
        Some(Value::String(text)) => {
            let decoded =
                serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
            (text, decoded)
        }
        Some(Value::Null) | None => (String::new(), Value::Null),
        Some(other) => (other.to_string(), other),
    }
}

/// A header value as text: strings as they are, numbers and booleans printed, empty and
/// `null` values absent.
fn header_text(headers: &Map<String, Value>, name: &str) -> Option<String> {
    match headers.get(name)? {
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => Some(text.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Milliseconds written as an integer, possibly with a fraction or spaces.
fn parse_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    text.parse::<i64>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(|ms| ms as i64))
}

/// A top-level text field of an event's data in either spelling (`eventId`/`EventId`).
fn data_text(data: &Value, camel: &str, pascal: &str) -> Option<String> {
    [camel, pascal]
        .iter()
        .find_map(|key| data.get(*key))
        .and_then(|value| match value {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        })
}

impl Frame {
    /// The event an EVENT frame carries; `None` without a messageId (it could not be acked).
    /// The new documentation's shape puts `eventId`/`EventType` in `data` instead of the
    /// headers; both are read.
    pub fn into_event(self) -> Option<StreamEvent> {
        let message_id = self.message_id?;
        let event_id = self
            .event_id
            .or_else(|| data_text(&self.data, "eventId", "EventId"))
            .unwrap_or_default();
        let event_type = self
            .event_type
            .or_else(|| data_text(&self.data, "eventType", "EventType"))
            .unwrap_or_default();
        let corp_id = self
            .event_corp_id
            .or_else(|| data_text(&self.data, "corpId", "CorpId"));
        Some(StreamEvent {
            message_id,
            event_id,
            event_type,
            topic: self.topic,
            born_ms: self.event_born_time,
            corp_id,
            data: self.data,
        })
    }
}

/// `data` of an EVENT ack.
fn event_ack_data(ack: EventAck) -> &'static str {
    match ack {
        EventAck::Success => r#"{"status":"SUCCESS","message":"success"}"#,
        EventAck::Later => r#"{"status":"LATER","message":"later"}"#,
    }
}

/// `data` of a CALLBACK ack (bot callbacks: the server ignores the response).
pub(super) const CALLBACK_ACK_DATA: &str = r#"{"response":null}"#;

/// An ack: code 200, the frame's messageId, `data` as a JSON string.
pub(super) fn ack(message_id: &str, data: &str) -> String {
    json!({
        "code": 200,
        "headers": { "contentType": "application/json", "messageId": message_id },
        "message": "OK",
        "data": data,
    })
    .to_string()
}

/// The ack of an EVENT frame.
pub(super) fn event_ack(message_id: &str, answer: EventAck) -> String {
    ack(message_id, event_ack_data(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EVENT: &str = r#"{"specVersion":"1.0","type":"EVENT",
        "headers":{"topic":"*","messageId":"213d841d_972_1898bb26334_70a7","contentType":"application/json",
            "time":"1683533823336","eventType":"user_add_org","eventId":"c7c7120f2c07419",
            "eventBornTime":"1683533823336","eventCorpId":"ding9f50","eventUnifiedAppId":"bbb381b6"},
        "data":"{\"timeStamp\":\"1685501863357\",\"userId\":[\"015xxxx227\"]}"}"#;

    #[test]
    fn the_documented_event_frame_is_read() {
        let frame = parse(SPEC_EVENT).unwrap();
        assert_eq!(frame.kind, FrameType::Event);
        let event = frame.into_event().unwrap();
        assert_eq!(event.message_id, "213d841d_972_1898bb26334_70a7");
        assert_eq!(event.event_id, "c7c7120f2c07419");
        assert_eq!(event.event_type, "user_add_org");
        assert_eq!(event.topic, "*");
        assert_eq!(event.born_ms, Some(1_683_533_823_336));
        assert_eq!(event.corp_id.as_deref(), Some("ding9f50"));
        assert_eq!(event.data["userId"][0], "015xxxx227");
    }

    #[test]
    fn lenient_shapes_are_read() {
        // Numbers as header values, `header` for `headers`, data as an object, unknown
        // headers and fields, lower-case type.
        let text = r#"{"type":"event","header":{"messageId":42,"eventId":7,"eventType":"org_dept_create",
            "eventBornTime":1683533823336.0,"topic":"*","x-unknown":{"a":1}},"extra":true,
            "data":{"deptId":[1,2]}}"#;
        let frame = parse(text).unwrap();
        assert_eq!(frame.kind, FrameType::Event);
        assert_eq!(frame.data_text, r#"{"deptId":[1,2]}"#);
        let event = frame.into_event().unwrap();
        assert_eq!(
            (event.message_id.as_str(), event.event_id.as_str()),
            ("42", "7")
        );
        assert_eq!(event.born_ms, Some(1_683_533_823_336));
        assert_eq!(event.data["deptId"][1], 2);
    }

    #[test]
    fn event_fields_may_sit_in_data() {
        let text = r#"{"type":"EVENT","headers":{"messageId":"m"},
            "data":"{\"EventType\":\"user_leave_org\",\"eventId\":\"e1\",\"CorpId\":\"ding1\",\"UserId\":[\"u\"]}"}"#;
        let event = parse(text).unwrap().into_event().unwrap();
        assert_eq!(
            (event.event_type.as_str(), event.event_id.as_str()),
            ("user_leave_org", "e1")
        );
        assert_eq!(event.corp_id.as_deref(), Some("ding1"));
    }

    #[test]
    fn odd_frames_do_not_fail() {
        assert!(parse("not json").is_none());
        assert!(parse("[1,2]").is_none());
        let bare = parse(r#"{"type":"SYSTEM","headers":{"topic":"ping"}}"#).unwrap();
        assert_eq!(
            (bare.kind, bare.data.clone()),
            (FrameType::System, Value::Null)
        );
        assert!(bare.into_event().is_none(), "no messageId, nothing to ack");
        let text_data = parse(r#"{"type":"X","headers":{"messageId":""},"data":"plain"}"#).unwrap();
        assert_eq!(text_data.kind, FrameType::Other);
        assert_eq!(text_data.message_id, None);
        assert_eq!(text_data.data, Value::String("plain".into()));
    }

    #[test]
    fn acks_have_the_documented_shape() {
        let success: Value = serde_json::from_str(&event_ack("m1", EventAck::Success)).unwrap();
        assert_eq!(
            success,
            json!({"code": 200, "headers": {"contentType": "application/json", "messageId": "m1"},
                "message": "OK", "data": "{\"status\":\"SUCCESS\",\"message\":\"success\"}"})
        );
        let later: Value = serde_json::from_str(&event_ack("m2", EventAck::Later)).unwrap();
        let data: Value = serde_json::from_str(later["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["status"], "LATER");
        // A ping's data is echoed byte for byte.
        let ping = parse(r#"{"type":"SYSTEM","headers":{"topic":"ping","messageId":"p"},"data":"{\"opaque\":\"x-1\"}"}"#).unwrap();
        let pong: Value = serde_json::from_str(&ack("p", &ping.data_text)).unwrap();
        assert_eq!(pong["data"], "{\"opaque\":\"x-1\"}");
        assert_eq!(pong["headers"]["messageId"], "p");
    }
}
