//! Job status changes for SSE subscribers. (Log lines come from the store's
//! own feed, in commit order.) A broadcast only: nobody listening is fine.

use std::sync::Arc;

use deploybot_wire::{Job, StatusEvent};
use tokio::sync::broadcast;

/// Events buffered for slow subscribers; one that lags skips the oldest.
const CAPACITY: usize = 4096;

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
