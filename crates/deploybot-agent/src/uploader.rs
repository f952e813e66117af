//! Uploading a job's output in batches, in order, without losing lines to a
//! controller that is briefly away.
//!
//! Lines wait in a [`Buffer`] until 500 are there or the oldest has waited
//! 50 ms: a chatty build becomes a few large requests, a quiet one still
//! shows up live. A failed batch is sent again unchanged (same line
//! numbers), so the controller can drop the lines it already stored and the
//! log never has a line twice or out of order. That includes a batch refused
//! with 401: it waits for the agent to register again and goes out then.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deploybot_wire::{AppendLogsRequest, LogLine};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::buffer::{BATCH_LINES, Buffer};
use crate::client::{Client, TraceParent};
use crate::output::RawLine;

const BATCH_DELAY: Duration = Duration::from_millis(50);

/// How the upload of a job's output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Every line was sent (or refused by the controller as invalid).
    Complete,
    /// The controller answered 404 or 409: the job is no longer ours.
    LeaseLost,
}

struct Shared {
    buffer: Mutex<Buffer>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // The buffer stays consistent even if a holder panicked: every
        // change under the lock is a push or a pop.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where the collector puts lines; never blocks.
#[derive(Clone)]
pub(crate) struct LogSink(Arc<Shared>);

impl LogSink {
    pub(crate) fn push(&self, line: RawLine) {
        let len = {
            let mut buffer = self.0.lock();
            if buffer.lost || buffer.closed {
                return;
            }
            buffer.push(line, Instant::now());
            buffer.len()
        };
        // The uploader waits for the first line (to start the 50 ms clock)
        // or for a full batch; other pushes need not wake it.
        if len == 1 || len == BATCH_LINES {
            self.0.wake.notify_one();
        }
    }
}

/// Uploads one job's output from its own task.
pub(crate) struct Uploader {
    shared: Arc<Shared>,
    task: JoinHandle<Delivery>,
    lost: watch::Receiver<bool>,
}

impl Uploader {
    pub(crate) fn start(
        client: Client,
        job_id: String,
        lease: Option<i64>,
        agent_id: String,
        traceparent: Option<TraceParent>,
    ) -> Self {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::default()),
            wake: Notify::new(),
        });
        let (lost_tx, lost) = watch::channel(false);
        let target = Target {
            client,
            job_id,
            lease,
            agent_id,
            traceparent,
        };
        let task = tokio::spawn(upload(Arc::clone(&shared), target, lost_tx));
        Uploader { shared, task, lost }
    }

    pub(crate) fn sink(&self) -> LogSink {
        LogSink(Arc::clone(&self.shared))
    }

    /// Resolves when the controller refused the job's lease; never otherwise.
    pub(crate) async fn lease_lost(&mut self) {
        if self.lost.wait_for(|lost| *lost).await.is_err() {
            // The uploader ended without losing the lease.
            std::future::pending::<()>().await;
        }
    }

    /// Sends what is left and waits until all of it is uploaded.
    pub(crate) async fn finish(self) -> Delivery {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        match self.task.await {
            Ok(delivery) => delivery,
            Err(err) => {
                tracing::error!(error = %err, "the log uploader failed");
                Delivery::Complete
            }
        }
    }
}

struct Target {
    client: Client,
    job_id: String,
    lease: Option<i64>,
    agent_id: String,
    traceparent: Option<TraceParent>,
}

async fn upload(shared: Arc<Shared>, target: Target, lost: watch::Sender<bool>) -> Delivery {
    let mut backoff = Backoff::default();
    while let Some(lines) = next_batch(&shared).await {
        let request = AppendLogsRequest {
            lease: target.lease,
            agent_id: Some(target.agent_id.clone()),
            lines,
        };
        loop {
            let traceparent = target.traceparent.as_ref();
            match target
                .client
                .append_logs(&target.job_id, traceparent, &request)
                .await
            {
                Ok(()) => {
                    backoff.reset();
                    break;
                }
                Err(err) if err.is_lease_lost() => {
                    tracing::warn!(job = %target.job_id, error = %err, "the controller took the job away");
                    let mut buffer = shared.lock();
                    buffer.lost = true;
                    buffer.clear();
                    drop(buffer);
                    lost.send_replace(true);
                    return Delivery::LeaseLost;
                }
                Err(err) if err.is_unauthorized() => {
                    // The same batch goes again with the new token, so
                    // nothing is lost or stored twice.
                    tracing::warn!(job = %target.job_id, "log upload refused: the agent token is no longer valid; waiting for the agent to register again");
                    target.client.renewed().await;
                }
                Err(err) if err.is_retryable() => {
                    tracing::warn!(job = %target.job_id, error = %err, "log upload failed; retrying");
                    backoff.wait().await;
                }
                Err(err) => {
                    // Sending the same lines again would be refused again;
                    // the rest of the log is still worth having.
                    tracing::error!(job = %target.job_id, error = %err, "the controller refused log lines; skipping them");
                    break;
                }
            }
        }
    }
    Delivery::Complete
}

/// Waits until a batch is due: 500 lines, the oldest 50 ms old, or no more
/// lines coming. `None` once closed and empty.
async fn next_batch(shared: &Shared) -> Option<Vec<LogLine>> {
    loop {
        let due = {
            let mut buffer = shared.lock();
            match buffer.oldest() {
                None if buffer.closed => return None,
                None => None,
                Some(oldest) => {
                    let due = oldest + BATCH_DELAY;
                    if buffer.closed || buffer.len() >= BATCH_LINES || due <= Instant::now() {
                        return Some(buffer.take_batch());
                    }
                    Some(due)
                }
            }
        };
        match due {
            Some(due) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}
