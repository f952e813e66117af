//! Log output of every long-running subcommand: stderr, filtered by
//! `RUST_LOG`. Human-readable text on a terminal, JSON lines otherwise (a
//! service manager's journal, a log shipper), or as `DEPLOYBOT_LOG_FORMAT`
//! (`text`, `json` or `auto`) says.
//!
//! Ids travel as fields (`job`, `agent`, `delivery`, `host`, …), so a JSON
//! line can be filtered by them. A JSON line is flat: the fields of the
//! spans it was written in (`request_id`, `method` and `route` of the HTTP
//! request being handled, the job of an agent's job task, …) sit beside the
//! event's own, outermost span first and the event last, so the most
//! specific value of a repeated name is the one a JSON parser keeps.
//! Secrets never reach the log: tokens are logged by their public id only,
//! and settings print masked.
//!
//! Fields named `otel.*` are instructions to OpenTelemetry (`otel` feature):
//! neither format shows them.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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

/// Logging for the agent and the CLI-side commands.
pub fn init() {
    install(None::<tracing_subscriber::layer::Identity>, None);
}

/// Logging for the controller: with the `otel` feature and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, its spans are exported too, until the
/// returned guard is dropped (which sends what is still buffered).
pub fn init_with_traces() -> Traces {
    #[cfg(feature = "otel")]
    match crate::telemetry::start() {
        Ok(Some(exporting)) => {
            install(exporting.layer(), None);
            tracing::info!("exporting traces over OTLP/HTTP");
            Traces {
                _exporting: exporting,
            }
        }
        Ok(None) => {
            init();
            Traces {
                _exporting: crate::telemetry::Exporting::default(),
            }
        }
        Err(problem) => {
            install(None::<tracing_subscriber::layer::Identity>, Some(problem));
            Traces {
                _exporting: crate::telemetry::Exporting::default(),
            }
        }
    }
    #[cfg(not(feature = "otel"))]
    {
        init();
        Traces {}
    }
}

/// Traces being exported (with the `otel` feature), until dropped.
#[must_use = "dropping it stops the export"]
pub struct Traces {
    // Held for its `Drop`, which flushes.
    #[cfg(feature = "otel")]
    _exporting: crate::telemetry::Exporting,
}

/// Installs the global subscriber: the log (filtered by `RUST_LOG`) and, if
/// given, a layer of its own (OpenTelemetry, which has its own filter, so
/// that `RUST_LOG=warn` quiets the log without emptying the traces).
fn install<L>(extra: Option<L>, problem: Option<String>)
where
    L: Layer<tracing_subscriber::Registry> + Send + Sync,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let setting = std::env::var(FORMAT_ENV).ok();
    let (format, format_problem) = match format(setting.as_deref(), terminal) {
        Ok(format) => (format, None),
        Err(problem) => (
            if terminal { Format::Text } else { Format::Json },
            Some(problem),
        ),
    };
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        Format::Text => log
            .with_ansi(terminal)
            .fmt_fields(TextFields)
            .with_filter(filter)
            .boxed(),
        Format::Json => log
            .with_ansi(false)
            .fmt_fields(JsonFields)
            .event_format(FlatJson)
            .with_filter(filter)
            .boxed(),
    };
    // The extra layer goes first, so that it is a layer of the registry
    // itself and its type does not depend on the log's.
    tracing_subscriber::registry().with(extra).with(log).init();
    if let Some(problem) = format_problem {
        tracing::warn!("{problem}; logging as {format:?}");
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// `otel.*` fields are for OpenTelemetry only.
fn shown(field: &Field) -> bool {
    !field.name().starts_with("otel.")
}

/// The text format's fields: tracing-subscriber's, less `otel.*`.
struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Shown(DefaultVisitor::new(writer, true));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

struct Shown<V>(V);

impl<V: Visit> Visit for Shown<V> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if shown(field) {
            self.0.record_f64(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if shown(field) {
            self.0.record_i64(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if shown(field) {
            self.0.record_u64(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if shown(field) {
            self.0.record_bool(field, value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if shown(field) {
            self.0.record_str(field, value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if shown(field) {
            self.0.record_error(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if shown(field) {
            self.0.record_debug(field, value);
        }
    }
}

/// The JSON format's fields: `"name":value` pairs joined by commas, without
/// braces, so that [`FlatJson`] can put a span's fields into a line as
/// they are.
struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor::new(&mut writer, false);
        fields.record(&mut visitor);
        visitor.result
    }

    /// Fields recorded later (`span.record`) are added after a comma.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let comma = !current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut visitor = JsonVisitor::new(&mut writer, comma);
        fields.record(&mut visitor);
        visitor.result
    }
}

struct JsonVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    /// Whether a comma goes before the next field.
    comma: bool,
    result: fmt::Result,
}

impl<'a, 'w> JsonVisitor<'a, 'w> {
    fn new(writer: &'a mut Writer<'w>, comma: bool) -> Self {
        JsonVisitor {
            writer,
            comma,
            result: Ok(()),
        }
    }

    /// Writes `"name":` and then the value `write` writes.
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut Writer<'w>) -> fmt::Result) {
        if self.result.is_err() || !shown(field) {
            return;
        }
        self.result = (|| {
            if self.comma {
                self.writer.write_char(',')?;
            }
            self.comma = true;
            json_string(self.writer, field.name())?;
            self.writer.write_char(':')?;
            write(self.writer)
        })();
    }
}

impl Visit for JsonVisitor<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |w| write!(w, "{value}"));
        } else {
            // JSON has no NaN nor infinity.
            self.field(field, |w| json_string(w, &value.to_string()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| json_string(w, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |w| json_display(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `message` is `format_args!`, whose Debug is its text.
        self.field(field, |w| json_quoted(w, |e| write!(e, "{value:?}")));
    }
}

/// One JSON object per line: timestamp, level, target, then the fields of
/// the spans the event is in (outermost first), then the event's.
struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"target\":", meta.level())?;
        json_string(&mut writer, meta.target())?;
        for span in ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
        {
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>()
                && !fields.is_empty()
            {
                writer.write_char(',')?;
                writer.write_str(fields)?;
            }
        }
        let mut visitor = JsonVisitor::new(&mut writer, true);
        event.record(&mut visitor);
        visitor.result?;
        writer.write_str("}\n")
    }
}

fn json_string(w: &mut impl fmt::Write, text: &str) -> fmt::Result {
    json_quoted(w, |e| e.write_str(text))
}

fn json_display(w: &mut impl fmt::Write, value: &dyn fmt::Display) -> fmt::Result {
    json_quoted(w, |e| write!(e, "{value}"))
}

/// Writes what `write` writes as a JSON string: quoted, with quotes,
/// backslashes and control characters escaped (so deploy output or a
/// client's header cannot break a line, or a terminal).
fn json_quoted<W: fmt::Write>(
    w: &mut W,
    write: impl FnOnce(&mut Escaped<'_, W>) -> fmt::Result,
) -> fmt::Result {
    w.write_char('"')?;
    write(&mut Escaped(w))?;
    w.write_char('"')
}

struct Escaped<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in text.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if c.is_control() && (c as u32) < 0x80 => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", c as u32)?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&text[plain..])
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

    #[test]
    fn json_strings_escape_what_would_break_a_line() {
        let mut out = String::new();
        json_string(&mut out, "a \"b\" \\ c\nd\u{1b}[31m é\u{7f}").unwrap();
        assert_eq!(out, r#""a \"b\" \\ c\nd\u001b[31m é\u007f""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a \"b\" \\ c\nd\u{1b}[31m é\u{7f}");
    }

    /// Lines as the controller writes them: span fields flat beside the
    /// event's, `otel.*` left out, the event's value winning a repeated name.
    #[test]
    fn json_lines_are_flat_and_carry_span_fields() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .fmt_fields(JsonFields)
                .event_format(FlatJson)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(
                "request",
                request_id = "r-1",
                route = "/v1/jobs",
                otel.name = "POST /v1/jobs",
                status = tracing::field::Empty,
            );
            let _request = request.enter();
            request.record("status", 201);
            let job = tracing::info_span!("create_job", job = "j-1", host = "web-01");
            let _job = job.enter();
            // Optional values read as a person would: the value, or no field.
            let (exit_code, running) = (Some(0), None::<&str>);
            tracing::info!(
                host = "web-02",
                ok = true,
                n = 3,
                exit_code,
                running,
                "job \"queued\""
            );
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], module_path!());
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line["route"], "/v1/jobs");
        assert_eq!(line["status"], 201);
        assert_eq!(line["job"], "j-1");
        assert_eq!(line["host"], "web-02");
        assert_eq!(line["ok"], true);
        assert_eq!(line["n"], 3);
        assert_eq!(line["exit_code"], 0);
        assert!(line.get("running").is_none(), "{line}");
        assert_eq!(line["message"], "job \"queued\"");
        assert!(!text.contains("otel"), "{text}");
    }
}
