//! Reading `text/event-stream`: the live log stream.

use super::*;

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An open `text/event-stream`, read chunk by chunk and split into events at
/// blank lines.
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    pub async fn open(api: &Api, path: &str) -> EventStream {
        let response = api
            .client
            .get(api.url(path))
            .header("Accept", "text/event-stream")
            // A stream lives as long as its test: each read has its own
            // deadline instead of the client's per-request one (which would
            // cut a stream read slowly on a busy machine).
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "GET {path}: content type {content_type:?}"
        );
        EventStream {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event (comments such as keep-alives are skipped); `Err` when
    /// the stream ends or `deadline` passes first.
    pub async fn next(&mut self, deadline: tokio::time::Instant) -> Result<SseEvent, String> {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_event(&String::from_utf8_lossy(&block)) {
                    return Ok(event);
                }
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return Err("timed out waiting for an event".to_owned()),
                Ok(Err(err)) => return Err(format!("reading the stream: {err}")),
                Ok(Ok(None)) => return Err("the stream ended".to_owned()),
                Ok(Ok(Some(chunk))) => {
                    self.buffer.extend(chunk.iter().filter(|&&b| b != b'\r'));
                }
            }
        }
    }
}

/// `None` for a block of comments only.
fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = String::new();
    let mut id = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_owned(),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if event.is_empty() && data.is_empty() {
        return None;
    }
    if event.is_empty() {
        event = "message".to_owned();
    }
    Some(SseEvent {
        event,
        id,
        data: data.join("\n"),
    })
}

/// `GET /v1/logs/stream?job_id=ID`, remembering every event seen, so a wait
/// for a line does not lose a status event read meanwhile and vice versa.
pub struct JobStream {
    pub job_id: String,
    events: EventStream,
    /// The `log` events so far, in stream order, with their SSE ids.
    pub lines: Vec<(Option<String>, LogEntry)>,
    /// The `status` events so far (`{job_id, status, exit_code, error, …}`).
    pub statuses: Vec<serde_json::Value>,
    /// How many lines had arrived when the first final status did.
    pub lines_at_final: Option<usize>,
}

impl JobStream {
    pub async fn open(api: &Api, job_id: &str) -> JobStream {
        JobStream {
            job_id: job_id.to_owned(),
            events: EventStream::open(api, &format!("/v1/logs/stream?job_id={job_id}")).await,
            lines: Vec::new(),
            statuses: Vec::new(),
            lines_at_final: None,
        }
    }

    /// Reads one more event into `lines` or `statuses`.
    async fn read_one(&mut self, deadline: tokio::time::Instant) -> Result<(), String> {
        let event = self.events.next(deadline).await?;
        match event.event.as_str() {
            "log" => {
                let entry: LogEntry = serde_json::from_str(&event.data)
                    .unwrap_or_else(|err| panic!("not a LogEntry: {err}: {}", event.data));
                assert_eq!(
                    entry.job_id, self.job_id,
                    "a line of another job: {entry:?}"
                );
                self.lines.push((event.id, entry));
            }
            "status" => {
                let status: serde_json::Value = serde_json::from_str(&event.data)
                    .unwrap_or_else(|err| panic!("not JSON: {err}: {}", event.data));
                assert_eq!(status["job_id"], self.job_id.as_str(), "{status}");
                if self.lines_at_final.is_none() && is_final(&status) {
                    self.lines_at_final = Some(self.lines.len());
                }
                self.statuses.push(status);
            }
            // Where the stream starts (a resume point before any line).
            "ready" => assert!(event.id.is_some(), "{event:?}"),
            other => panic!("unexpected event {other:?}: {event:?}"),
        }
        Ok(())
    }

    fn seen(&self) -> String {
        let lines: Vec<String> = self
            .lines
            .iter()
            .map(|(_, l)| format!("{} {} {}", l.line, l.stream.as_str(), l.text))
            .collect();
        format!(
            "lines:\n{}\nstatuses: {:?}",
            lines.join("\n"),
            self.statuses
        )
    }

    /// Waits (at most [`DEADLINE`]) for a log line whose text contains `needle`.
    pub async fn wait_for_line(&mut self, needle: &str) -> LogEntry {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some((_, entry)) = self.lines.iter().find(|(_, l)| l.text.contains(needle)) {
                return entry.clone();
            }
            if let Err(err) = self.read_one(deadline).await {
                panic!(
                    "job {}: no line containing {needle:?}: {err}\n{}",
                    self.job_id,
                    self.seen()
                );
            }
        }
    }

    /// Waits (at most [`DEADLINE`]) for a status event with a final status,
    /// and returns it.
    pub async fn wait_for_final(&mut self) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.statuses.iter().find(|s| is_final(s)) {
                return status.clone();
            }
            if let Err(err) = self.read_one(deadline).await {
                panic!(
                    "job {}: no final status event: {err}\n{}",
                    self.job_id,
                    self.seen()
                );
            }
        }
    }

    /// The texts of the lines of one stream, in order.
    pub fn texts(&self, stream: LogStream) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(_, l)| l.stream == stream)
            .map(|(_, l)| l.text.as_str())
            .collect()
    }
}

/// A `status` event with a final status.
fn is_final(status: &serde_json::Value) -> bool {
    status["status"]
        .as_str()
        .and_then(|s| s.parse::<JobStatus>().ok())
        .is_some_and(JobStatus::is_final)
}
