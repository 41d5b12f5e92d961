//! `StreamError`: why a Stream connection could not be opened or was lost, classified into a
//! [`StreamErrorKind`] so the connection loop decides on kinds (retry soon, or report the app
//! as unavailable and retry quietly). Never holds the AppSecret or a ticket: request URLs are
//! stripped from transport errors and answer bodies are cut to DingTalk's `code`/`message`.

/// What went wrong, as the connection loop needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamErrorKind {
    /// `connections/open` refused the AppKey/AppSecret (HTTP 401, `authFailed`).
    Credentials,
    /// `connections/open` refused the app or the request: HTTP 403 (Stream not enabled, no
    /// permission) or another 4xx answer.
    Refused,
    /// `connections/open` answered 5xx or 429.
    Server,
    /// `connections/open` answered 200 without an endpoint and a ticket.
    BadAnswer,
    /// Connect, TLS, DNS, reset, a refused WebSocket upgrade, a protocol failure.
    Transport,
    /// No answer within `open_timeout`.
    Timeout,
}

impl StreamErrorKind {
    /// Whether trying again soon may succeed without anyone changing anything.
    pub fn is_retryable(self) -> bool {
        !matches!(self, Self::Credentials | Self::Refused)
    }
}

/// A failed step of opening or keeping a Stream connection.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{step}: {}", describe(.http_status, .code, .message))]
pub struct StreamError {
    /// The class.
    pub kind: StreamErrorKind,
    /// The step: `connections/open` or `websocket`.
    pub step: &'static str,
    /// The HTTP status, when there was one other than 200 (or 101 for the upgrade).
    pub http_status: Option<u16>,
    /// DingTalk's `code` from an error answer, e.g. `authFailed`.
    pub code: Option<String>,
    /// DingTalk's `message`, or what went wrong.
    pub message: String,
}

impl StreamError {
    /// An error of `kind` at `step` with a message and nothing else.
    pub fn new(kind: StreamErrorKind, step: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            step,
            http_status: None,
            code: None,
            message: message.into(),
        }
    }

    /// A non-200 answer of `connections/open`, classified by status.
    pub fn http(status: u16, code: Option<String>, message: String) -> Self {
        let kind = match status {
            401 => StreamErrorKind::Credentials,
            408 => StreamErrorKind::Timeout,
            429 | 500.. => StreamErrorKind::Server,
            400..=499 => StreamErrorKind::Refused,
            _ => StreamErrorKind::Server,
        };
        Self {
            http_status: Some(status),
            code,
            ..Self::new(kind, OPEN_STEP, message)
        }
    }

    /// A reqwest failure of `connections/open`; its URL is dropped.
    pub fn request(error: reqwest::Error) -> Self {
        let kind = if error.is_timeout() {
            StreamErrorKind::Timeout
        } else {
            StreamErrorKind::Transport
        };
        Self::new(kind, OPEN_STEP, chain(&error.without_url()))
    }

    /// A failed WebSocket connect. tungstenite's messages never carry the request URL (which
    /// holds the ticket); a refused upgrade keeps only its status.
    pub fn websocket(error: &tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as WsError;
        match error {
            WsError::Http(response) => Self {
                http_status: Some(response.status().as_u16()),
                ..Self::new(StreamErrorKind::Transport, WS_STEP, "upgrade refused")
            },
            WsError::Url(_) => Self::new(StreamErrorKind::BadAnswer, WS_STEP, error.to_string()),
            other => Self::new(StreamErrorKind::Transport, WS_STEP, chain(other)),
        }
    }

    /// Whether trying again soon may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// The step name of the ticket request.
pub const OPEN_STEP: &str = "connections/open";
/// The step name of the WebSocket connect.
pub const WS_STEP: &str = "websocket";

fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn describe(status: &Option<u16>, code: &Option<String>, message: &str) -> String {
    let mut text = String::new();
    if let Some(status) = status {
        text.push_str(&format!("HTTP {status} "));
    }
    if let Some(code) = code {
        text.push_str(code);
        text.push(' ');
    }
    text.push_str(message);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_permanent_and_outages_retryable() {
        let permanent = [401, 403, 400, 404];
        for status in permanent {
            assert!(!StreamError::http(status, None, String::new()).is_retryable());
        }
        for status in [500, 502, 503, 429, 408] {
            assert!(StreamError::http(status, None, String::new()).is_retryable());
        }
        let auth = StreamError::http(401, Some("authFailed".into()), "bad secret".into());
        assert_eq!(auth.kind, StreamErrorKind::Credentials);
        assert_eq!(
            auth.to_string(),
            "connections/open: HTTP 401 authFailed bad secret"
        );
    }
}
