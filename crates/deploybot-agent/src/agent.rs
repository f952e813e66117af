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
use std::sync::Arc;
use std::time::Duration;

use deploybot_wire::{AgentStatus, HeartbeatRequest, HeartbeatResponse, RegisterAgentRequest};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::{CallError, Client, Token};
use crate::identity::{self, Identity};
use crate::job::{JobSettings, RunningJob, StopReason};
use crate::policy::Policy;
use crate::report;
use crate::{AgentConfig, AgentError};
use crate::{orphans, state_lock};

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
/// How long a new job waits for the previous one's task to end. The
/// controller hands out a host's next job only once the previous job's final
/// report is committed, so that task is only tidying up.
const PREVIOUS_JOB_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let client = Client::new(&config.controller, config.ca_cert.as_deref())?;
    let _lock = state_lock::acquire(&config.state_dir)?;
    let mut shutdown = pin!(shutdown);
    let saved = identity::load(&config.state_dir);
    // Before registering (which would mark a job we ran lost) and before
    // any new work: what a killed run of ours left is stopped and reported.
    let state_dir = config.state_dir.clone();
    let leftovers = tokio::task::spawn_blocking(move || orphans::stop_leftovers(&state_dir))
        .await
        .unwrap_or_default();
    if !leftovers.is_empty() {
        let own = saved.as_ref().and_then(|saved| {
            saved
                .token_for(&config.hostname, client.base().as_str())
                .cloned()
        });
        if own.is_some() {
            client.set_token(own);
        }
        report::leftovers(&client, leftovers).await;
    }
    if let Some(saved) = &saved {
        tracing::debug!(agent = %saved.id, host = %saved.hostname, "last known identity");
    }
    if let Some(policy) = &config.policy {
        let apps: Vec<&str> = policy.apps().collect();
        if apps.is_empty() {
            tracing::warn!("the agent policy allows no app: every job will be refused");
        } else {
            tracing::info!(?apps, "agent policy: only these apps may deploy here");
        }
    }
    let identity = tokio::select! {
        identity = first_registration(&client, &config, saved) => identity?,
        () = &mut shutdown => return Ok(()),
    };
    identity::save(&config.state_dir, &identity).map_err(|source| AgentError::Identity {
        path: identity::path(&config.state_dir),
        source,
    })?;
    tracing::info!(agent = %identity.id, host = %identity.hostname, "agent registered");
    let policy = config.policy.clone().map(Arc::new);
    heartbeat_loop(&config, &client, policy, identity, shutdown).await;
    Ok(())
}

/// Registers, waiting out an unreachable controller; a refusal is final.
///
/// Registering on every start is what tells the controller that the job a
/// previous run left behind is lost, and updates the capabilities. The
/// agent registers with the token saved by its last registration when it
/// has one for this host and controller (a host that has an agent is
/// registered again only by that agent), and with the enrollment token
/// otherwise, or when the saved one was refused (revoked, replaced).
async fn first_registration(
    client: &Client,
    config: &AgentConfig,
    saved: Option<Identity>,
) -> Result<Identity, AgentError> {
    let own = saved.and_then(|saved| {
        saved
            .token_for(&config.hostname, client.base().as_str())
            .cloned()
    });
    let mut backoff = Backoff::default();
    loop {
        match register(client, config, own.clone()).await {
            Ok(identity) => return Ok(identity),
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "cannot register yet; retrying");
                backoff.wait().await;
            }
            Err(CallError::Status { status, message }) => {
                let enrollment_refused =
                    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
                return Err(match (status, &config.enrollment_token) {
                    (StatusCode::UNAUTHORIZED, None) => {
                        AgentError::EnrollmentTokenMissing { message }
                    }
                    (_, Some(_)) if enrollment_refused => AgentError::EnrollmentTokenRefused {
                        status: status.as_u16(),
                        message,
                    },
                    _ => AgentError::Rejected {
                        status: status.as_u16(),
                        message,
                    },
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

/// Registers: with the agent's own token `own` when it has one (the host
/// stays its own), else (or when that one is refused: revoked or replaced)
/// with the enrollment token. From then on every call sends the new agent
/// token.
async fn register(
    client: &Client,
    config: &AgentConfig,
    own: Option<Token>,
) -> Result<Identity, CallError> {
    let request = RegisterAgentRequest {
        hostname: config.hostname.clone(),
        capabilities: config.capabilities.clone().into(),
    };
    let mut registered = None;
    if let Some(own) = own {
        match client.register(&request, Some(&own)).await {
            Ok(done) => registered = Some(done),
            Err(err) if err.is_unauthorized() => {
                tracing::info!(
                    "the agent token was refused; enrolling again with the enrollment token"
                );
            }
            Err(err) => return Err(err),
        }
    }
    let registered = match registered {
        Some(registered) => registered,
        None => {
            client
                .register(&request, config.enrollment_token.as_ref())
                .await?
        }
    };
    Ok(Identity {
        id: registered.agent.id,
        hostname: registered.agent.hostname,
        controller: client.base().to_string(),
        token: client.token(),
    })
}

/// What one pass of the loop got from the controller.
enum Step {
    Beat(Box<HeartbeatResponse>),
    /// 404: the controller does not know this agent (e.g. its database was reset).
    Unregistered,
    /// 401: the agent token was replaced or revoked.
    Refused,
    Registered(Identity),
    /// Registering again failed.
    NotRegistered,
    /// A heartbeat failed; the backoff delay has been waited already.
    Failed,
}

async fn heartbeat_loop(
    config: &AgentConfig,
    client: &Client,
    policy: Option<Arc<Policy>>,
    mut identity: Identity,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) {
    let mut job: Option<RunningJob> = None;
    let mut draining = false;
    let mut registered = true;
    // The agent registered (or tried to) since the last heartbeat that went
    // through: registering again waits out the backoff first, so a token
    // refused as soon as it is issued cannot make the agent spin.
    let mut unconfirmed = true;
    // While draining with a deploy running: when to stop it.
    let mut stop_at: Option<Instant> = None;
    let mut backoff = Backoff::default();
    // Wait before the next heartbeat (see REPEATED_CANCEL_PACE).
    let mut pace = Duration::ZERO;
    // Cancelled jobs we never ran, already answered (see `report::disown`).
    let mut disowned = HashSet::new();
    let inherit_env: Arc<[String]> = policy
        .as_ref()
        .map(|policy| policy.inherit_env().to_vec())
        .unwrap_or_default()
        .into();
    let settings = |identity: &Identity| JobSettings {
        client: client.clone(),
        state_dir: config.state_dir.clone(),
        agent_id: identity.id.clone(),
        kill_grace: config.kill_grace,
        policy: policy.clone(),
        enrollment_token: config.enrollment_token.clone(),
        inherit_env: inherit_env.clone(),
    };
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
        // A job's task lives until its final report is in, so the
        // controller never sees a job it still runs missing from this list.
        let running = job.as_ref().map(|running| running.id.clone());
        let step = tokio::select! {
            step = async {
                tokio::time::sleep(pace).await;
                let beat = Beat { registered, unconfirmed, status, draining, running };
                attempt(client, config, &identity, beat, &mut backoff).await
            } => step,
            // The running job's upload or report was refused: register now
            // rather than when the long-poll ends. Dropping the heartbeat
            // loses no job: the host is busy, so none can be handed out, and
            // cancels come again in every answer. (Idle, only a heartbeat of
            // its own can tell the agent its token is refused.)
            () = client.refused(), if registered && job.is_some() => Step::Refused,
            () = &mut shutdown, if !draining => {
                reap(&mut job).await;
                tracing::info!(running = job.as_ref().map(|j| j.id.as_str()), "shutting down: taking no new jobs");
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
                unconfirmed = false;
                if !accept(
                    &mut job,
                    *response,
                    settings(&identity),
                    draining,
                    &mut disowned,
                )
                .await
                {
                    pace = REPEATED_CANCEL_PACE;
                }
            }
            Step::Unregistered => {
                tracing::warn!(agent = %identity.id, "the controller does not know this agent; registering again");
                registered = false;
            }
            Step::Refused => {
                tracing::warn!(agent = %identity.id, "the controller refused the agent token; registering again");
                registered = false;
            }
            Step::Registered(new) => {
                // No backoff reset: only a heartbeat that goes through
                // shows the new token works.
                registered = true;
                unconfirmed = true;
                if new.id != identity.id {
                    tracing::info!(agent = %new.id, "registered under a new id");
                } else {
                    tracing::info!(agent = %new.id, "registered again");
                }
                if let Err(err) = identity::save(&config.state_dir, &new) {
                    tracing::warn!(error = %err, "cannot save the agent identity");
                }
                identity = new;
            }
            Step::NotRegistered => unconfirmed = true,
            Step::Failed => {}
        }
    }
    goodbye(client, &identity, registered, settings(&identity)).await;
}

/// What the next attempt is to do.
struct Beat {
    registered: bool,
    unconfirmed: bool,
    status: AgentStatus,
    draining: bool,
    /// The job this agent runs, if any.
    running: Option<String>,
}

/// One heartbeat (or, after a 404 or 401, one registration). Failures wait
/// out the backoff here, so the loop can drop this future to react to
/// shutdown.
async fn attempt(
    client: &Client,
    config: &AgentConfig,
    identity: &Identity,
    beat: Beat,
    backoff: &mut Backoff,
) -> Step {
    if !beat.registered {
        if beat.unconfirmed {
            backoff.wait().await;
        }
        return match register(client, config, client.token()).await {
            Ok(identity) => Step::Registered(identity),
            Err(err) => {
                if registration_failed(&err, config) {
                    backoff.saturate();
                }
                Step::NotRegistered
            }
        };
    }
    let request = HeartbeatRequest {
        status: beat.status,
        draining: beat.draining,
        running_jobs: Some(beat.running.into_iter().collect()),
    };
    match client
        .heartbeat(&identity.id, &request, config.poll_wait)
        .await
    {
        Ok(response) => Step::Beat(Box::new(response)),
        Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Step::Unregistered,
        Err(err) if err.is_unauthorized() => Step::Refused,
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

/// Says why registering again failed; the loop tries again after the
/// backoff. `true` when the credential was refused, which only a person can
/// fix.
fn registration_failed(err: &CallError, config: &AgentConfig) -> bool {
    let enrollment_refused = matches!(
        err.status(),
        Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
    );
    if err.status() == Some(StatusCode::CONFLICT) {
        // Another agent has this host now (an admin replaced this one).
        tracing::error!(error = %err, "the controller gave this host to another agent; retrying");
        return true;
    }
    if err.is_unauthorized() && config.enrollment_token.is_none() {
        tracing::error!(error = %err, "agent token refused and no enrollment token configured: set DEPLOYBOT_ENROLLMENT_TOKEN");
    } else if enrollment_refused {
        tracing::error!(error = %err, "the controller refused the enrollment token; retrying");
    } else if err.is_retryable() {
        tracing::warn!(error = %err, "cannot register again yet; retrying");
    } else {
        tracing::error!(error = %err, "the controller refused to register this agent; retrying");
    }
    enrollment_refused
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
    let mut secrets = response.secrets;
    if let Some(new) = response.job {
        reap(job).await;
        if let Some(running) = job.as_mut()
            && running.id != new.id
            && tokio::time::timeout(PREVIOUS_JOB_GRACE, running.finished())
                .await
                .is_ok()
        {
            // Its report is in (the controller freed the host): done.
            *job = None;
        }
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
            None => {
                let secrets = std::mem::take(&mut secrets);
                *job = Some(RunningJob::start(settings.clone(), new, secrets));
            }
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
    // Nothing runs any more: a job handed out by an answer this agent
    // never got is freed now instead of at the lease timeout.
    let request = HeartbeatRequest {
        status: AgentStatus::Idle,
        draining: true,
        running_jobs: Some(Vec::new()),
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
