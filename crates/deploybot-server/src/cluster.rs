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

use std::time::Duration;

use deploybot_store::StoreEvent;
use tokio::sync::{broadcast, watch};

use crate::state::AppState;

/// Wait before reading the database again after a failed resync.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Applies the store's events until the controller stops (or the store has
/// none to send: SQLite).
pub async fn follow(
    state: AppState,
    mut events: broadcast::Receiver<StoreEvent>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = stopped.changed() => return,
        };
        match event {
            Ok(StoreEvent::JobsPending { hosts }) => {
                for host in &hosts {
                    state.dispatch.job_enqueued(host);
                }
            }
            Ok(StoreEvent::HostFreed { host }) => state.dispatch.job_enqueued(&host),
            Ok(StoreEvent::CancelRequested { host }) => state.dispatch.cancel_requested(&host),
            Ok(StoreEvent::AgentRegistered { agent_id, hostname }) => {
                state.auth.forget_agent(&agent_id);
                state.presence.registered_elsewhere(&agent_id, &hostname);
            }
            Ok(StoreEvent::AgentRevoked { agent_id }) => {
                state.auth.forget_agent(&agent_id);
                // Its held long-poll, if any, wakes and finds it revoked.
                if let Some(host) = state.presence.revoked(&agent_id) {
                    state.dispatch.job_enqueued(&host);
                }
            }
            Ok(StoreEvent::TokenRevoked { token_id }) => state.auth.forget_token(&token_id),
            // For SSE status events; a job that cannot be read now is only
            // a missed status event, which streams tolerate (a job stream
            // looks its final status up when it catches up).
            Ok(StoreEvent::JobChanged { job_id }) => match state.store.job(job_id).await {
                Ok(Some(job)) => state.live.job_changed(&job),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read a job another instance changed")
                }
            },
            Ok(StoreEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                if !resync(&state, &mut stopped).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Marks every host the database says may have work, retrying until it
/// can read it; `false` when the controller stopped meanwhile. Marking a
/// host that has nothing is harmless ("maybe"); missing one is not.
async fn resync(state: &AppState, stopped: &mut watch::Receiver<bool>) -> bool {
    loop {
        let read = async {
            let pending = state.store.hosts_with_pending_jobs().await?;
            let cancels = state.store.hosts_with_cancel_requests().await?;
            Ok::<_, deploybot_store::StoreError>((pending, cancels))
        };
        match read.await {
            Ok((pending, cancels)) => {
                for host in &pending {
                    state.dispatch.job_enqueued(host);
                }
                for host in &cancels {
                    state.dispatch.cancel_requested(host);
                }
                tracing::info!(
                    hosts_with_pending_jobs = pending.len(),
                    "dispatch hints resynced from the database"
                );
                return true;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot resync dispatch hints; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RESYNC_RETRY) => {}
                    _ = stopped.changed() => return false,
                }
            }
        }
    }
}
