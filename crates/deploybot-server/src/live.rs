//! Job status changes for SSE subscribers. (Log lines come from the store's
//! own feed, in commit order.) A broadcast only: nobody listening is fine.

use std::sync::Arc;

use deploybot_wire::{Job, JobStatus};
use serde::Serialize;
use tokio::sync::broadcast;

/// Events buffered for slow subscribers; one that lags skips the oldest.
const CAPACITY: usize = 4096;

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
    sender: broadcast::Sender<Arc<StatusEvent>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Live {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StatusEvent>> {
        self.sender.subscribe()
    }

    pub fn job_changed(&self, job: &Job) {
        // No subscriber is fine: nobody is watching.
        let _ = self.sender.send(Arc::new(StatusEvent::from(job)));
    }
}
