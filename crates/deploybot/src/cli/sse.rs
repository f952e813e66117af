//! Following `GET /v1/logs/stream`: Server-Sent Events parsed by hand over
//! the response's chunks, and a reconnect after a dropped connection that
//! resumes with `Last-Event-ID`, so no line is lost or repeated.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use deploybot_wire::LogEntry;
use reqwest::Response;

use super::client::{CliError, Client, Kind, Result};

/// The controller sends a keep-alive comment every 15 s: this much silence
/// means the connection is dead even if the socket does not say so.
const SILENCE: Duration = Duration::from_secs(45);
/// Waits between reconnection attempts: doubling from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// One event as the stream framed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// The SSE wire format, fed chunk by chunk: lines end with LF, CRLF or CR;
/// a blank line dispatches the event; `:` lines are comments (keep-alives).
#[derive(Debug, Default)]
pub struct Parser {
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
    id: Option<String>,
}

impl Parser {
    /// The events completed by `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<RawEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = start + offset;
            let next = match self.buffer[end] {
                // A CR at the end of the chunk may be the first half of a CRLF.
                b'\r' if end + 1 == self.buffer.len() => break,
                b'\r' if self.buffer[end + 1] == b'\n' => end + 2,
                _ => end + 1,
            };
            let line = String::from_utf8_lossy(&self.buffer[start..end]).into_owned();
            start = next;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.buffer.drain(..start);
        events
    }

    fn line(&mut self, line: &str) -> Option<RawEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => self.data.push(value.to_owned()),
            // As the spec says: an id holding NUL is ignored.
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<RawEvent> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        // Per the spec an event id holds until another replaces it; ours
        // come only with log lines, so taking it per event is the same.
        let id = self.id.take();
        if data.is_empty() {
            return None;
        }
        Some(RawEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data: data.join("\n"),
            id,
        })
    }
}

/// An event of the log stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// A line of deploy output.
    Log(LogEntry),
    /// A job changed state. Its data names the job; read the job itself
    /// with `GET /v1/jobs/{id}` (see `status_job_id`).
    Status(String),
}

/// The id of the job a `status` event is about. The event's data is the
/// job, or a summary of it with `job_id`: either way only the id is read
/// here, and the job comes from the API as a `Job`.
pub fn status_job_id(data: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    value
        .get("job_id")
        .or_else(|| value.get("id"))
        .and_then(|id| id.as_str())
        .map(str::to_owned)
}

/// Says what the stream's connection is doing (lost, back), for people.
pub type Notifier = Arc<dyn Fn(&str) + Send + Sync>;

/// A log stream that survives dropped connections.
pub struct Follow {
    client: Client,
    query: Vec<(&'static str, Option<String>)>,
    response: Option<Response>,
    parser: Parser,
    ready: VecDeque<Event>,
    /// The newest log line seen: sent as `Last-Event-ID` on reconnect, and
    /// the mark below which a line is a repeat.
    last_event_id: Option<i64>,
    connected_once: bool,
    notify: Notifier,
}

impl Follow {
    /// `GET /v1/logs/stream` with these filters (`job_id`, `host`, `app`).
    pub fn new(
        client: Client,
        query: Vec<(&'static str, Option<String>)>,
        notify: Notifier,
    ) -> Follow {
        Follow {
            client,
            query,
            response: None,
            parser: Parser::default(),
            ready: VecDeque::new(),
            last_event_id: None,
            connected_once: false,
            notify,
        }
    }

    /// The next event, reconnecting as often as needed. Errors only when
    /// the first connection fails, or the controller refuses a reconnection
    /// (token revoked, job gone).
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            let Some(response) = self.response.as_mut() else {
                self.connect().await?;
                continue;
            };
            let why = match tokio::time::timeout(SILENCE, response.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    for raw in self.parser.feed(&chunk) {
                        self.accept(raw);
                    }
                    continue;
                }
                Ok(Ok(None)) => "the controller closed the stream".to_owned(),
                Ok(Err(err)) => self.client.unreachable(&err).message,
                Err(_) => format!("no data for {}s", SILENCE.as_secs()),
            };
            self.response = None;
            (self.notify)(&format!("log stream interrupted ({why}); reconnecting…"));
        }
    }

    fn accept(&mut self, raw: RawEvent) {
        match raw.event.as_str() {
            "log" => match serde_json::from_str::<LogEntry>(&raw.data) {
                Ok(entry) => {
                    // The controller resumes after Last-Event-ID; this guard
                    // only keeps a misbehaving proxy from repeating lines.
                    if self.last_event_id.is_some_and(|last| entry.id <= last) {
                        return;
                    }
                    self.last_event_id = Some(entry.id);
                    self.ready.push_back(Event::Log(entry));
                }
                Err(err) => {
                    (self.notify)(&format!("skipped a log event that is not a line: {err}"))
                }
            },
            "status" => self.ready.push_back(Event::Status(raw.data)),
            // Where the stream starts: resume from here if the connection
            // drops before the first line.
            "ready" if self.last_event_id.is_none() => {
                self.last_event_id = raw.id.as_deref().and_then(|id| id.parse().ok());
            }
            _ => {}
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let mut delay = FIRST_RETRY;
        loop {
            match self
                .client
                .open_stream(&self.query, self.last_event_id)
                .await
            {
                Ok(response) => {
                    self.response = Some(response);
                    self.parser = Parser::default();
                    if self.connected_once {
                        (self.notify)("log stream reconnected");
                    }
                    self.connected_once = true;
                    return Ok(());
                }
                // The first connection fails loudly; later ones wait for a
                // controller that restarts or a network that comes back.
                Err(err) if self.connected_once && retryable(&err) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(LAST_RETRY);
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Worth another try: no connection, or a controller that is starting or
/// briefly overloaded.
fn retryable(err: &CliError) -> bool {
    err.kind == Kind::Unreachable || err.status.is_some_and(|s| s >= 500 || s == 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: Option<&str>) -> RawEvent {
        RawEvent {
            event: event.to_owned(),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn events_split_across_chunks_and_line_endings_are_framed_once() {
        let stream = b": keep-alive\n\nevent: log\nid: 7\ndata: {\"a\":1}\n\n\
                       event: status\r\ndata: x\r\ndata: y\r\n\r\n\
                       data:plain\r\rretry: 10\n\n";
        let whole = Parser::default().feed(stream);
        assert_eq!(
            whole,
            [
                event("log", "{\"a\":1}", Some("7")),
                event("status", "x\ny", None),
                event("message", "plain", None),
            ]
        );
        // Byte by byte: the same events, CRLFs split between chunks included.
        let mut parser = Parser::default();
        let bytewise: Vec<RawEvent> = stream.iter().flat_map(|b| parser.feed(&[*b])).collect();
        assert_eq!(bytewise, whole);
    }

    #[test]
    fn an_unfinished_event_waits_for_its_blank_line() {
        let mut parser = Parser::default();
        assert!(parser.feed(b"event: log\ndata: 1\n").is_empty());
        assert_eq!(parser.feed(b"\n"), [event("log", "1", None)]);
    }

    #[test]
    fn a_status_event_names_its_job_either_way() {
        assert_eq!(
            status_job_id(r#"{"job_id":"j1","status":"running"}"#).as_deref(),
            Some("j1")
        );
        assert_eq!(
            status_job_id(r#"{"id":"j2","status":"success"}"#).as_deref(),
            Some("j2")
        );
        assert_eq!(status_job_id("nonsense"), None);
    }
}
