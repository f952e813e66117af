//! What other controller instances sharing the database did: their new
//! jobs, cancels and freed hosts mark and wake this instance's dispatch
//! hints exactly as local writes do, so an agent long-polling here gets a
//! job queued through any instance within milliseconds; their job status
//! changes reach this instance's SSE streams. (Their log lines come through
//! the store's log feed, which carries every instance's.) Their agent
//! registrations and revocations, and token revocations, reach this
//! instance's presence and token cache at once: an agent's previous token
//! stops working here too, and a revoked agent's held long-poll ends.
//!
//! Keeps the dispatch invariant across instances: a missed event is
//! followed by a `Resync` (the store's listener reconnected) or a lag, and
//! both rebuild the hints from the database.

use std::sync::Arc;
use std::time::Duration;

use deploybot_store::{StoreError, StoreEvent};
use tokio::sync::{broadcast, watch};

use super::Queue;

/// Wait before reading the database again after a failed resync.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Applies the store's events until the controller stops (or the store has
/// none to send: SQLite).
pub async fn follow(
    queue: Arc<Queue>,
    mut events: broadcast::Receiver<StoreEvent>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stopped.changed() => return,
        };
        let applied = match event {
            Ok(event) => queue.apply(event).await,
            Err(broadcast::error::RecvError::Lagged(_)) => queue.apply(StoreEvent::Resync).await,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Err(err) = applied {
            // Only a resync can fail: read the database again, later.
            tracing::warn!(error = %err, "cannot resync dispatch hints; retrying");
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RESYNC_RETRY) => {}
                    _ = stopped.changed() => return,
                }
                if queue.apply(StoreEvent::Resync).await.is_ok() {
                    break;
                }
            }
        }
    }
}

impl Queue {
    /// Applies a change another instance committed, as if it was made here.
    pub async fn apply(&self, event: StoreEvent) -> Result<(), StoreError> {
        match event {
            StoreEvent::JobsPending { hosts } => {
                for host in &hosts {
                    self.dispatch.job_enqueued(host);
                }
            }
            StoreEvent::HostFreed { host } => self.dispatch.job_enqueued(&host),
            StoreEvent::CancelRequested { host } => self.dispatch.cancel_requested(&host),
            // For SSE status events; a job that cannot be read now is only
            // a missed status event, which streams tolerate (a job stream
            // looks its final status up when it catches up).
            StoreEvent::JobChanged { job_id } => match self.store.job(job_id).await {
                Ok(Some(job)) => self.live.job_changed(&job),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read a job another instance changed")
                }
            },
            StoreEvent::AgentRegistered { agent_id, hostname } => {
                self.auth.forget_agent(&agent_id);
                self.presence.registered_elsewhere(&agent_id, &hostname);
            }
            StoreEvent::AgentRevoked { agent_id } => self.agent_revoked(&agent_id),
            StoreEvent::TokenRevoked { token_id } => self.auth.forget_token(&token_id),
            StoreEvent::Resync => self.resync().await?,
        }
        Ok(())
    }

    /// Marks every host the database says may have work. Marking a host
    /// that has nothing is harmless ("maybe"); missing one is not.
    async fn resync(&self) -> Result<(), StoreError> {
        let pending = self.store.hosts_with_pending_jobs().await?;
        let cancels = self.store.hosts_with_cancel_requests().await?;
        for host in &pending {
            self.dispatch.job_enqueued(host);
        }
        for host in &cancels {
            self.dispatch.cancel_requested(host);
        }
        tracing::info!(
            hosts_with_pending_jobs = pending.len(),
            "dispatch hints resynced from the database"
        );
        Ok(())
    }
}
