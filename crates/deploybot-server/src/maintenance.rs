//! Periodic work: saving heartbeats, expiring the leases of silent agents,
//! pruning old logs and history.
//!
//! Every instance saves its own agents' heartbeats; only the instance that
//! leads (`Store::try_lead`, asked again each round) expires leases and
//! prunes, so several instances do not repeat that work.

use std::time::{Duration, Instant};

use deploybot_store::{HistoryRetention, PrunedHistory};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::state::AppState;

/// How often heartbeats are saved, at most: with several instances, the
/// one that expires leases sees the others' heartbeats only once they are
/// saved, so a short lease timeout saves more often (a tenth of it).
const SAVE_HEARTBEATS_EVERY: Duration = Duration::from_secs(1);
const SAVE_HEARTBEATS_AT_MOST_EVERY: Duration = Duration::from_millis(100);
/// How often old logs and history are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);
/// Audit entries kept however old.
const KEEP_AUDIT_ENTRIES: u32 = 1000;
const DAY: Duration = Duration::from_secs(86_400);

/// What is kept (see the settings of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Logs of the newest this many jobs of each app…
    pub log_jobs: u32,
    /// …and of jobs finished within this many days.
    pub log_days: u32,
    /// Finished jobs and deliveries of this many days…
    pub history_days: u32,
    /// …and the newest this many jobs of each app (and deliveries).
    pub history_jobs: u32,
    pub audit_days: u32,
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
    let mut last_prune = Instant::now() + Duration::from_secs(60) - PRUNE_EVERY;
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
        if last_prune.elapsed() >= PRUNE_EVERY && pruning.as_ref().is_none_or(|p| p.is_finished()) {
            last_prune = Instant::now();
            leading = lead(&state, leading).await;
            if !leading {
                continue;
            }
            pruning = Some(tokio::spawn(prune(state.clone(), retention)));
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
            tracing::info!("this instance now expires leases and prunes old history");
        } else {
            tracing::info!("another instance expires leases and prunes old history now");
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

async fn prune(state: AppState, retention: Retention) {
    let now = OffsetDateTime::now_utc();
    let store = state.queue.store();
    match store
        .prune_logs(retention.log_jobs, now - DAY * retention.log_days)
        .await
    {
        Ok(0) => {}
        Ok(lines) => tracing::info!(lines, "pruned old deploy logs"),
        Err(err) => tracing::warn!(error = %err, "could not prune logs; will retry"),
    }
    let keep = HistoryRetention {
        keep_jobs: retention.history_jobs,
        keep_since: now - DAY * retention.history_days,
        keep_deliveries: retention.history_jobs,
        audit_since: now - DAY * retention.audit_days,
        keep_audit: KEEP_AUDIT_ENTRIES,
    };
    match store.prune_history(keep).await {
        Ok(pruned) if pruned == PrunedHistory::default() => {}
        Ok(pruned) => tracing::info!(
            jobs = pruned.jobs,
            deliveries = pruned.deliveries,
            audit_entries = pruned.audit,
            "pruned old history"
        ),
        Err(err) => tracing::warn!(error = %err, "could not prune history; will retry"),
    }
}
