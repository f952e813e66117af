//! Log output of every long-running subcommand: stderr, filtered by
//! `RUST_LOG`. Human-readable text on a terminal, JSON lines otherwise (a
//! service manager's journal, a log shipper), or as `DEPLOYBOT_LOG_FORMAT`
//! (`text`, `json` or `auto`) says.
//!
//! Ids travel as fields (`job`, `agent`, `delivery`, `host`, …), so a JSON
//! line can be filtered by them. Secrets never reach the log: tokens are
//! logged by their public id only, and settings print masked.

use std::io::IsTerminal;

/// The variable choosing the format.
pub const FORMAT_ENV: &str = "DEPLOYBOT_LOG_FORMAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// `auto` (or unset): text on a terminal, JSON otherwise.
fn format(setting: Option<&str>, terminal: bool) -> Result<Format, String> {
    match setting.map(str::trim) {
        None | Some("") | Some("auto") => Ok(if terminal { Format::Text } else { Format::Json }),
        Some("text") => Ok(Format::Text),
        Some("json") => Ok(Format::Json),
        Some(other) => Err(format!("{FORMAT_ENV}={other:?}: use text, json or auto")),
    }
}

pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let setting = std::env::var(FORMAT_ENV).ok();
    let (format, problem) = match format(setting.as_deref(), terminal) {
        Ok(format) => (format, None),
        Err(problem) => (
            if terminal { Format::Text } else { Format::Json },
            Some(problem),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.with_ansi(terminal).init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}; logging as {format:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_text_on_a_terminal_and_json_elsewhere() {
        assert_eq!(format(None, true), Ok(Format::Text));
        assert_eq!(format(None, false), Ok(Format::Json));
        assert_eq!(format(Some("auto"), false), Ok(Format::Json));
        assert_eq!(format(Some("text"), false), Ok(Format::Text));
        assert_eq!(format(Some("json"), true), Ok(Format::Json));
        assert!(
            format(Some("yaml"), true)
                .unwrap_err()
                .contains("text, json or auto")
        );
    }
}
