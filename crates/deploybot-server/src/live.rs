//! Live events for SSE subscribers: log lines as they are committed, and
//! job status changes. A broadcast only: a subscriber that falls behind
//! catches up from the database.

use std::sync::Arc;

use deploybot_wire::{Job, JobStatus, LogEntry};
use serde::Serialize;
use tokio::sync::broadcast;

/// Events buffered for slow subscribers before they must catch up from the database.
const CAPACITY: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub enum LiveEvent {
    Log(LogEntry),
    Status(StatusEvent),
}

/// `event: status` on the stream: a job changed state.
#[derive(Debug, Clone, Serialize)]
pub struct StatusEvent {
    pub job_id: String,
    pub host: String,
    pub app: String,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

impl From<&Job> for StatusEvent {
    fn from(job: &Job) -> Self {
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

#[derive(Debug, Clone)]
pub struct Live {
    sender: broadcast::Sender<Arc<LiveEvent>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Live {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }

    pub fn publish(&self, event: LiveEvent) {
        // No subscriber is fine: nobody is watching.
        let _ = self.sender.send(Arc::new(event));
    }

    pub fn job_changed(&self, job: &Job) {
        self.publish(LiveEvent::Status(StatusEvent::from(job)));
    }
}
