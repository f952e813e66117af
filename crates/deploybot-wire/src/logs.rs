use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stdout" => Some(LogStream::Stdout),
            "stderr" => Some(LogStream::Stderr),
            _ => None,
        }
    }
}

/// One line of a deploy's output, as the agent uploads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// Position in the job's output, counting from 1 without gaps. A line
    /// uploaded twice (a retried batch) is stored once.
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64)]
    pub line: u64,
    pub stream: LogStream,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// At most 64 KiB.
    #[schema(max_length = 65536)]
    pub text: String,
}

/// Body of `POST /v1/jobs/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendLogsRequest {
    /// The job's lease, as handed out.
    #[serde(default)]
    pub lease: Option<i64>,
    /// The uploading agent; must be the one running the job.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// At most 10,000 per upload.
    #[schema(max_items = 10000)]
    pub lines: Vec<LogLine>,
}

/// Answer of `POST /v1/jobs/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppendLogsResponse {
    /// Lines stored now.
    pub accepted: u64,
    /// Lines already stored by an earlier upload, ignored.
    pub duplicates: u64,
    /// Lines not stored because the job's output reached the controller's
    /// cap (a marker line says where).
    #[serde(default)]
    pub dropped: u64,
}

/// A stored log line, as read back (`GET /v1/jobs/{id}/logs`, the SSE stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// Position in the whole log store: the SSE event id.
    pub id: i64,
    pub job_id: String,
    pub host: String,
    pub app: String,
    /// Position in the job's output.
    pub line: u64,
    pub stream: LogStream,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub text: String,
}

/// Answer of `GET /v1/jobs/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobLogsResponse {
    pub job_id: String,
    pub lines: Vec<LogEntry>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<u64>,
}

/// `event: status` on the log stream (`GET /v1/logs/stream`): a job changed
/// state. `event: log` carries a [`LogEntry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusEvent {
    pub job_id: String,
    pub host: String,
    pub app: String,
    pub status: crate::JobStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

impl From<&crate::Job> for StatusEvent {
    fn from(job: &crate::Job) -> Self {
        StatusEvent {
            job_id: job.id.clone(),
            host: job.host.clone(),
            app: job.app.clone(),
            status: job.status,
            exit_code: job.exit_code,
            error: job.error.clone(),
        }
    }
}
