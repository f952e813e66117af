//! Registration and the heartbeat loop.
//!
//! One heartbeat is always in flight: a long-poll that the controller answers
//! when a job or a cancel is ready, or when the wait ends. It goes on while a
//! deploy runs (in its own task), because heartbeats renew the job's lease
//! and carry cancels. An in-flight heartbeat is dropped only while draining
//! (the controller hands no job to a draining agent) or at the moment the
//! agent starts draining, so a job handed out is almost never lost in transit.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use deploybot_wire::{AgentStatus, HeartbeatRequest, HeartbeatResponse, RegisterAgentRequest};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::{CallError, Client};
use crate::identity::{self, Identity};
use crate::job::{JobSettings, RunningJob, StopReason};
use crate::report;
use crate::{AgentConfig, AgentError};

/// The goodbye heartbeat (draining, nothing running) is a courtesy: it must
/// not hold up a shutdown when the controller is away.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// The controller lists a cancelled job in every heartbeat answer until the
/// job is reported, and answers at once while it does: while we are still
/// stopping it, heartbeat at this pace instead of in a tight loop.
const REPEATED_CANCEL_PACE: Duration = Duration::from_secs(1);
/// A job handed out during shutdown (which a controller should not do) is
/// turned down within this, or left to its lease timeout.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let client = Client::new(&config.controller)?;
    let mut shutdown = pin!(shutdown);
    if let Some(saved) = identity::load(&config.state_dir) {
        tracing::debug!(agent = %saved.id, host = %saved.hostname, "last known identity");
    }
    let identity = tokio::select! {
        identity = first_registration(&client, &config) => identity?,
        () = &mut shutdown => return Ok(()),
    };
    identity::save(&config.state_dir, &identity).map_err(|source| AgentError::Identity {
        path: identity::path(&config.state_dir),
        source,
    })?;
    tracing::info!(agent = %identity.id, host = %identity.hostname, "agent registered");
    heartbeat_loop(&config, &client, identity, shutdown).await;
    Ok(())
}

/// Registers, waiting out an unreachable controller; a refusal is final.
async fn first_registration(client: &Client, config: &AgentConfig) -> Result<Identity, AgentError> {
    let mut backoff = Backoff::default();
    loop {
        match register(client, config).await {
            Ok(identity) => return Ok(identity),
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "cannot register yet; retrying");
                backoff.wait().await;
            }
            Err(CallError::Status { status, message }) => {
                return Err(AgentError::Rejected {
                    status: status.as_u16(),
                    message,
                });
            }
            Err(err) => {
                // Not reachable (only statuses are final), but never spin.
                tracing::warn!(error = %err, "cannot register yet; retrying");
                backoff.wait().await;
            }
        }
    }
}

async fn register(client: &Client, config: &AgentConfig) -> Result<Identity, CallError> {
    let request = RegisterAgentRequest {
        hostname: config.hostname.clone(),
        capabilities: config.capabilities.clone(),
    };
    let agent = client.register(&request).await?;
    Ok(Identity {
        id: agent.id,
        hostname: agent.hostname,
    })
}

/// What one pass of the loop got from the controller.
enum Step {
    Beat(Box<HeartbeatResponse>),
    /// 404: the controller does not know this agent (e.g. its database was reset).
    Unregistered,
    Registered(Identity),
    /// Failed; the backoff delay has been waited already.
    Failed,
}

async fn heartbeat_loop(
    config: &AgentConfig,
    client: &Client,
    mut identity: Identity,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) {
    let mut job: Option<RunningJob> = None;
    let mut draining = false;
    let mut registered = true;
    // While draining with a deploy running: when to stop it.
    let mut stop_at: Option<Instant> = None;
    let mut backoff = Backoff::default();
    // Wait before the next heartbeat (see REPEATED_CANCEL_PACE).
    let mut pace = Duration::ZERO;
    // Cancelled jobs we never ran, already answered (see `report::disown`).
    let mut disowned = HashSet::new();
    loop {
        reap(&mut job).await;
        if draining && job.is_none() {
            break;
        }
        let status = if job.is_some() {
            AgentStatus::Busy
        } else {
            AgentStatus::Idle
        };
        let step = tokio::select! {
            step = async {
                tokio::time::sleep(pace).await;
                attempt(client, config, &identity, registered, status, draining, &mut backoff).await
            } => step,
            () = &mut shutdown, if !draining => {
                reap(&mut job).await;
                tracing::info!(running = ?job.as_ref().map(|j| &j.id), "shutting down: taking no new jobs");
                draining = true;
                if job.is_some() {
                    stop_at = Some(Instant::now() + config.shutdown_grace);
                }
                continue;
            }
            () = finished(&mut job), if draining => {
                job = None;
                continue;
            }
            () = tokio::time::sleep_until(stop_at.unwrap_or_else(Instant::now)), if stop_at.is_some() => {
                stop_at = None;
                if let Some(running) = &job {
                    tracing::warn!(job = %running.id, "shutdown grace is over: stopping the deploy");
                    running.stop(StopReason::Shutdown);
                }
                continue;
            }
        };
        pace = Duration::ZERO;
        match step {
            Step::Beat(response) => {
                backoff.reset();
                let settings = JobSettings {
                    client: client.clone(),
                    agent_id: identity.id.clone(),
                    kill_grace: config.kill_grace,
                };
                if !accept(&mut job, *response, settings, draining, &mut disowned).await {
                    pace = REPEATED_CANCEL_PACE;
                }
            }
            Step::Unregistered => {
                tracing::warn!(agent = %identity.id, "the controller does not know this agent; registering again");
                registered = false;
            }
            Step::Registered(new) => {
                backoff.reset();
                registered = true;
                if new != identity {
                    tracing::info!(agent = %new.id, "registered under a new id");
                }
                if let Err(err) = identity::save(&config.state_dir, &new) {
                    tracing::warn!(error = %err, "cannot save the agent identity");
                }
                identity = new;
            }
            Step::Failed => {}
        }
    }
    goodbye(
        client,
        &identity,
        registered,
        JobSettings {
            client: client.clone(),
            agent_id: identity.id.clone(),
            kill_grace: config.kill_grace,
        },
    )
    .await;
}

/// One heartbeat (or, after a 404, one registration). Failures wait out the
/// backoff here, so the loop can drop this future to react to shutdown.
async fn attempt(
    client: &Client,
    config: &AgentConfig,
    identity: &Identity,
    registered: bool,
    status: AgentStatus,
    draining: bool,
    backoff: &mut Backoff,
) -> Step {
    if !registered {
        return match register(client, config).await {
            Ok(identity) => Step::Registered(identity),
            Err(err) => {
                tracing::warn!(error = %err, "cannot register again yet; retrying");
                backoff.wait().await;
                Step::Failed
            }
        };
    }
    let request = HeartbeatRequest { status, draining };
    match client
        .heartbeat(&identity.id, &request, config.poll_wait)
        .await
    {
        Ok(response) => Step::Beat(Box::new(response)),
        Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Step::Unregistered,
        Err(err) => {
            if err.is_retryable() {
                tracing::warn!(error = %err, "heartbeat failed; retrying");
            } else {
                tracing::error!(error = %err, "the controller refused a heartbeat; retrying");
            }
            backoff.wait().await;
            Step::Failed
        }
    }
}

/// Starts a handed-out job and acts on cancels. `false` when the answer
/// brought nothing new (only cancels already acted on), so the next
/// heartbeat should not follow at once.
async fn accept(
    job: &mut Option<RunningJob>,
    response: HeartbeatResponse,
    settings: JobSettings,
    draining: bool,
    disowned: &mut HashSet<String>,
) -> bool {
    let mut news = response.job.is_some() || response.cancel.is_empty();
    if let Some(new) = response.job {
        reap(job).await;
        match job {
            // Handed out again (a heartbeat answer we already acted on).
            Some(running) if running.id == new.id => {}
            Some(running) => {
                let reason = format!("the agent is busy with job {}", running.id);
                tokio::spawn(report::refuse(settings.clone(), new, reason));
            }
            None if draining => {
                let reason = "the agent is shutting down".to_owned();
                let refusal = report::refuse(settings.clone(), new, reason);
                let _ = tokio::time::timeout(REFUSE_TIMEOUT, refusal).await;
            }
            None => *job = Some(RunningJob::start(settings.clone(), new)),
        }
    }
    for id in &response.cancel {
        match job {
            Some(running) if running.id == *id => {
                if running.stop(StopReason::Cancel) {
                    tracing::info!(job = %id, "cancelled by the controller");
                    news = true;
                }
            }
            _ => {
                if disowned.insert(id.clone()) {
                    tokio::spawn(report::disown(settings.clone(), id.clone()));
                    news = true;
                }
            }
        }
    }
    // Remember only what the controller still lists.
    disowned.retain(|id| response.cancel.contains(id));
    news
}

/// Forgets a job whose task has ended.
async fn reap(job: &mut Option<RunningJob>) {
    if job.as_ref().is_some_and(RunningJob::is_finished)
        && let Some(mut done) = job.take()
    {
        done.finished().await;
    }
}

/// Resolves when the running job's task ends; never when there is none.
async fn finished(job: &mut Option<RunningJob>) {
    match job {
        Some(running) => running.finished().await,
        None => std::future::pending().await,
    }
}

/// Tells the controller this agent is draining and idle, so it need not wait
/// for the lease timeout to stop counting on it.
async fn goodbye(client: &Client, identity: &Identity, registered: bool, settings: JobSettings) {
    if !registered {
        return;
    }
    let request = HeartbeatRequest {
        status: AgentStatus::Idle,
        draining: true,
    };
    let beat = client.heartbeat(&identity.id, &request, Duration::ZERO);
    match tokio::time::timeout(GOODBYE_TIMEOUT, beat).await {
        Ok(Ok(response)) => {
            if let Some(new) = response.job {
                let refusal =
                    report::refuse(settings, new, "the agent is shutting down".to_owned());
                let _ = tokio::time::timeout(REFUSE_TIMEOUT, refusal).await;
            }
        }
        Ok(Err(err)) => tracing::debug!(error = %err, "goodbye heartbeat failed"),
        Err(_elapsed) => tracing::debug!("goodbye heartbeat timed out"),
    }
    tracing::info!("agent stopped");
}
