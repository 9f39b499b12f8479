//! Logging: one line per event, never bodies, tokens, passwords or patient data.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (`RUST_LOG` filters; default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(false)
        .try_init();
}
