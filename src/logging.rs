//! Structured logging with tracing-subscriber: JSON lines for journald, text on a terminal.
//!
//! Owns the subscriber set-up only. Every event carries a static message and an `event`
//! field from the fixed list in README; values go in named fields, never in the message.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber, writing to stderr. A second call does nothing (tests).
pub fn init(config: &LogConfig) {
    let mut filter = EnvFilter::builder()
        .parse(&config.level)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // tungstenite traces the WebSocket handshake request, whose URL carries the Stream
    // ticket: capped at info whatever the level asks.
    if let Ok(cap) = "tungstenite=info".parse() {
        filter = filter.add_directive(cap);
    }
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
    // Err only when a subscriber is already installed, which is fine.
    drop(result);
}
