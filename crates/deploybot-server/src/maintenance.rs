//! Periodic work: saving heartbeats, expiring the leases of silent agents,
//! pruning old logs.
//!
//! Every instance saves its own agents' heartbeats; only the instance that
//! leads (`Store::try_lead`, asked again each round) expires leases and
//! prunes, so several instances do not repeat that work.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::state::AppState;

/// How often heartbeats are saved, at most: with several instances, the
/// one that expires leases sees the others' heartbeats only once they are
/// saved, so a short lease timeout saves more often (a tenth of it).
const SAVE_HEARTBEATS_EVERY: Duration = Duration::from_secs(1);
const SAVE_HEARTBEATS_AT_MOST_EVERY: Duration = Duration::from_millis(100);
/// How often old logs are pruned.
const PRUNE_LOGS_EVERY: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep_jobs: u32,
    pub keep_days: u32,
}

/// Runs until `stopped` turns `true`, then saves the last heartbeats.
pub async fn run(state: AppState, retention: Retention, mut stopped: watch::Receiver<bool>) {
    let started = Instant::now();
    // Check leases four times per timeout, so a job is lost at most 25% late.
    let sweep_every =
        (state.lease_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(15));
    let save_every =
        (state.lease_timeout / 10).clamp(SAVE_HEARTBEATS_AT_MOST_EVERY, SAVE_HEARTBEATS_EVERY);
    let tick_every = sweep_every.min(save_every);
    let mut ticks = tokio::time::interval(tick_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_save = Instant::now();
    let mut last_sweep = Instant::now();
    // The first pruning runs a minute after start, not during it.
    let mut last_prune = Instant::now() + Duration::from_secs(60) - PRUNE_LOGS_EVERY;
    let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
    let mut leading = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => {
                save_heartbeats(&state).await;
                return;
            }
        }
        if last_save.elapsed() >= save_every {
            save_heartbeats(&state).await;
            last_save = Instant::now();
        }
        // Right after a start, agents have not had a chance to reconnect:
        // their leases count from the start, not from their last saved heartbeat.
        if last_sweep.elapsed() >= sweep_every && started.elapsed() >= state.lease_timeout {
            save_heartbeats(&state).await;
            last_save = Instant::now();
            leading = lead(&state, leading).await;
            if leading {
                expire_leases(&state).await;
            }
            last_sweep = Instant::now();
        }
        if last_prune.elapsed() >= PRUNE_LOGS_EVERY
            && pruning.as_ref().is_none_or(|p| p.is_finished())
        {
            last_prune = Instant::now();
            leading = lead(&state, leading).await;
            if !leading {
                continue;
            }
            pruning = Some(tokio::spawn(prune_logs(state.clone(), retention)));
        }
    }
}

/// Whether this instance leads now; `was` is what it last found, to log
/// the changes. A database error counts as not leading: the work waits.
async fn lead(state: &AppState, was: bool) -> bool {
    let leading = match state.queue.store().try_lead().await {
        Ok(leading) => leading,
        Err(err) => {
            tracing::warn!(error = %err, "cannot tell whether this instance leads; will retry");
            false
        }
    };
    if leading != was {
        if leading {
            tracing::info!("this instance now expires leases and prunes logs");
        } else {
            tracing::info!("another instance expires leases and prunes logs now");
        }
    }
    leading
}

async fn save_heartbeats(state: &AppState) {
    let presence = state.queue.presence();
    let beats = presence.take_unsaved();
    if !beats.is_empty()
        && let Err(err) = state.queue.store().save_heartbeats(beats.clone()).await
    {
        tracing::warn!(error = %err, "could not save heartbeats; will retry");
        presence.unsaved_again(beats);
    }
}

async fn expire_leases(state: &AppState) {
    let silent_since = OffsetDateTime::now_utc() - state.lease_timeout;
    let reason = format!(
        "agent lost: no heartbeat for {}",
        humantime::format_duration(state.lease_timeout)
    );
    if let Err(err) = state.queue.expire_leases(silent_since, reason).await {
        tracing::warn!(error = %err, "could not expire leases; will retry");
    }
}

async fn prune_logs(state: AppState, retention: Retention) {
    let keep_since =
        OffsetDateTime::now_utc() - Duration::from_secs(u64::from(retention.keep_days) * 86_400);
    match state
        .queue
        .store()
        .prune_logs(retention.keep_jobs, keep_since)
        .await
    {
        Ok(0) => {}
        Ok(lines) => tracing::info!(lines, "pruned old deploy logs"),
        Err(err) => tracing::warn!(error = %err, "could not prune logs; will retry"),
    }
}
