//! Logging: one line per event, never bodies, query strings, tokens,
//! passwords or patient data. Text for people, or one JSON object per line
//! for a log pipeline (`log.format`).

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// How log lines are written (to standard output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message` and the
    /// event's fields at the top level.
    Json,
}

/// Installs the global subscriber (`RUST_LOG` filters; default `info`).
/// Only the first call in a process takes effect.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
