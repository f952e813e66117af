//! `/v1/agents`: registration, heartbeats (which hand out jobs), listing.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use deploybot_store::{Claim, HeldJobs, NewRegistration, StoreError};
use deploybot_wire::{
    Agent, AgentStatus, ErrorBody, HeartbeatRequest, HeartbeatResponse, Job, RegisterAgentRequest,
    RegisteredAgent, names,
};
use futures_util::future::Either;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::audit::audit;
use crate::auth::{self, Address, Caller};
use crate::error::{ApiBytes, ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

const MAX_CAPABILITIES: usize = 64;
const MAX_CAPABILITY_LEN: usize = 128;

/// Register an agent for a host (enrollment token).
///
/// The same hostname always gets the same agent id. The answer carries the
/// agent's new token, shown only here; the host's previous token stops
/// working, and jobs its previous session was running become `lost`.
#[utoipa::path(
    post,
    path = "/v1/agents/register",
    tag = "agents",
    request_body = RegisterAgentRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = RegisteredAgent),
        (status = 401, description = "Missing, unknown, expired or used-up enrollment token", body = ErrorBody),
        (status = 403, description = "Not an enrollment token", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    Address(address): Address,
    ApiJson(request): ApiJson<RegisterAgentRequest>,
) -> Result<Json<RegisteredAgent>, ApiError> {
    caller.require_enroll()?;
    names::check_hostname(&request.hostname).map_err(ApiError::invalid)?;
    if request.capabilities.len() > MAX_CAPABILITIES
        || request.capabilities.iter().any(|c| {
            c.is_empty() || c.len() > MAX_CAPABILITY_LEN || c.chars().any(char::is_control)
        })
    {
        return Err(ApiError::invalid(format!(
            "capabilities must be at most {MAX_CAPABILITIES} names of 1-{MAX_CAPABILITY_LEN} printable characters"
        )));
    }
    let token = auth::new_token(auth::AGENT_PREFIX);
    let single_use = match &caller {
        Caller::Token(info) if info.single_use => Some(info.id.clone()),
        _ => None,
    };
    let registered = state
        .store
        .register_agent(NewRegistration {
            new_id: uuid::Uuid::now_v7().to_string(),
            hostname: request.hostname,
            capabilities: request.capabilities,
            token_hash: auth::hash_token(&token),
            use_enrollment_token: single_use.clone(),
        })
        .await
        .map_err(|err| match err {
            // Raced another registration for the same single-use token.
            StoreError::Conflict(why) => ApiError::unauthorized("invalid_token", why),
            other => other.into(),
        })?;
    if let Some(used) = single_use {
        state.auth.forget_token(&used);
    }
    let agent = registered.agent;
    state.auth.forget_agent(&agent.id);
    state.presence.registered(&agent);
    audit(
        &state,
        &caller,
        "register",
        format!("agent {} ({})", agent.id, agent.hostname),
        address,
    )
    .await;
    for job in &registered.lost {
        tracing::warn!(job = %job.id, agent = %agent.id, "job lost: its agent restarted");
        state.job_lost(job);
    }
    tracing::info!(agent = %agent.id, host = %agent.hostname, by = %caller.actor(), "agent registered");
    Ok(Json(RegisteredAgent { agent, token }))
}

/// Revoke an agent (admin).
///
/// Its token stops working at once; the job it was running becomes `lost`.
/// To come back, the agent must enroll again (revoke the enrollment token
/// it used too, to keep it out).
#[utoipa::path(
    delete,
    path = "/v1/agents/{id}",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked; the jobs it held are lost", body = [Job]),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Address(address): Address,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<Job>>, ApiError> {
    caller.require_admin()?;
    let lost = state.store.revoke_agent(id.clone()).await?;
    state.auth.forget_agent(&id);
    // Its held long-poll, if any, wakes and finds it revoked.
    if let Some(host) = state.presence.revoked(&id) {
        state.dispatch.job_enqueued(&host);
    }
    for job in &lost {
        state.job_lost(job);
    }
    audit(
        &state,
        &caller,
        "revoke_agent",
        format!("agent {id}"),
        address,
    )
    .await;
    tracing::warn!(agent = %id, by = %caller.actor(), "agent revoked");
    Ok(Json(lost))
}

/// The longest a heartbeat may wait for work.
const MAX_WAIT_SECS: u64 = 60;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatQuery {
    /// Seconds to hold the request until a job or a cancel for this agent
    /// arrives (0 to 60, default 0: answer at once). Capped at half the lease
    /// timeout so a waiting agent never looks silent.
    wait: Option<u64>,
}

/// Heartbeat; receive at most one job for this agent's host.
///
/// Renews the agent's lease. With `wait`, the request is held until a job
/// for the host is committed or one of the agent's running jobs is
/// cancelled, so work arrives in milliseconds instead of a polling
/// interval. A heartbeat with nothing to hand out touches no disk.
#[utoipa::path(
    post,
    path = "/v1/agents/{id}/heartbeat",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id"), HeartbeatQuery),
    request_body(content = HeartbeatRequest, description = "Optional: an empty body means `{\"status\": \"online\"}`"),
    responses(
        (status = 200, body = HeartbeatResponse),
        (status = 404, description = "Unknown agent: register again", body = ErrorBody),
    )
)]
pub fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HeartbeatQuery>,
    ApiBytes(body): ApiBytes,
) -> impl Future<Output = Result<Json<HeartbeatResponse>, ApiError>> + Send {
    // Plain functions returning futures, not `async fn`s: the future of an
    // `async fn` keeps its arguments (and a copy of each) for its whole
    // life, and a held long-poll's future is what 10,000 waiting agents
    // cost. Checked here, before any future exists, the request keeps only
    // what its wait needs.
    let beat = match accept_heartbeat(&state, &caller, &id, query, &body) {
        Ok(beat) => beat,
        Err(err) => return Either::Right(std::future::ready(Err(err))),
    };
    match state.presence.beat(&id, beat.status) {
        Some(host) => Either::Left(Either::Left(wait_for_work(state, id, host, beat))),
        // Boxed: once per agent and instance, and its future would
        // otherwise enlarge every held one.
        None => Either::Left(Either::Right(Box::pin(async move {
            let host = learn_agent(&state, &id, beat.status).await?;
            wait_for_work(state, id, host, beat).await
        }))),
    }
}

/// An agent this instance does not hold in memory: registered through
/// another instance sharing the database (behind a balancer, an agent's
/// requests reach them all). Looks it up, keeps it and records the beat;
/// 404 only for an agent the database does not know (or revoked).
async fn learn_agent(state: &AppState, id: &str, status: AgentStatus) -> Result<String, ApiError> {
    let not_registered =
        || ApiError::not_found(format!("agent {id} is not registered; register again"));
    let agent = state
        .store
        .agent(id.to_owned())
        .await?
        .ok_or_else(not_registered)?;
    state.presence.registered(&agent);
    state.presence.beat(id, status).ok_or_else(not_registered)
}

/// Answers an accepted heartbeat: at once, or when work arrives for its
/// host or its wait is over.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` would keep a second copy of its arguments in every held long-poll"
)]
fn wait_for_work(
    state: AppState,
    id: String,
    host: String,
    mut beat: Accepted,
) -> impl Future<Output = Result<Json<HeartbeatResponse>, ApiError>> + Send {
    async move {
        if let Some(running) = beat.running.take()
            && state.presence.held_check_due(&id, &running)
        {
            // Boxed: rare, and its future would otherwise enlarge every held one.
            Box::pin(free_unheld_jobs(&state, &id, &host, running, beat.arrived)).await?;
        }
        let deadline = tokio::time::Instant::now() + beat.wait;
        // Counted while this request is held (dropped when it answers).
        let _held = (!beat.wait.is_zero())
            .then(|| crate::metrics::Held::new(&state.metrics.long_polls_held));
        let wake = state.dispatch.waiter(&host);
        loop {
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();

            // A stopping controller answers every held long-poll (and
            // wakes them to do so).
            let waited_out = tokio::time::Instant::now() >= deadline || *state.stopping.borrow();
            if let Some(answer) = answer_now(&state, &id, &host, beat.draining, waited_out).await? {
                // Held for a while: the agent was there all along.
                if !beat.wait.is_zero() {
                    state.presence.beat(&id, beat.status);
                }
                return Ok(Json(answer));
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// What a heartbeat brought, checked before it may wait.
struct Accepted {
    status: AgentStatus,
    draining: bool,
    running: Option<Vec<String>>,
    wait: Duration,
    arrived: time::OffsetDateTime,
}

/// Checks a heartbeat's caller, query and body.
fn accept_heartbeat(
    state: &AppState,
    caller: &Caller,
    id: &str,
    query: HeartbeatQuery,
    body: &[u8],
) -> Result<Accepted, ApiError> {
    if let Some(own) = caller.require_agent()?
        && own != id
    {
        return Err(ApiError::forbidden(format!(
            "this agent token belongs to agent {own}, not {id}"
        )));
    }
    // An empty body is a plain "I'm alive", for the simplest clients.
    let request: HeartbeatRequest = if body.iter().all(u8::is_ascii_whitespace) {
        HeartbeatRequest::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|err| ApiError::invalid(format!("invalid heartbeat body: {err}")))?
    };
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::bad_request(format!(
            "wait must be between 0 and {MAX_WAIT_SECS} seconds"
        )));
    }
    Ok(Accepted {
        status: request.status,
        draining: request.draining,
        running: request.running_jobs,
        wait: Duration::from_secs(wait).min(state.lease_timeout / 2),
        arrived: time::OffsetDateTime::now_utc(),
    })
}

/// The heartbeat's answer if it has one now: a job, cancels, or (when the
/// wait is over) an empty one. `None` means keep waiting.
async fn answer_now(
    state: &AppState,
    id: &str,
    host: &str,
    draining: bool,
    waited_out: bool,
) -> Result<Option<HeartbeatResponse>, ApiError> {
    // Revoked while this request was held: it gets nothing more.
    if !state.presence.knows(id) {
        return Err(ApiError::unauthorized(
            "invalid_token",
            format!("agent {id} was revoked; register again"),
        ));
    }
    let cancel = cancels_for(state, host).await?;
    let job = if draining {
        None
    } else {
        claim_for(state, id, host).await?
    };
    Ok(
        (job.is_some() || !cancel.is_empty() || waited_out).then_some(HeartbeatResponse {
            acknowledged: true,
            job,
            cancel,
        }),
    )
}

/// Frees the host's job leased to this agent if the agent does not list it
/// as running: the answer that handed it out never reached the agent (its
/// controller died, or the connection broke), or the agent restarted
/// without registering again. Otherwise the job would stay `running`, its
/// lease renewed by the agent's heartbeats, and block the host for good.
async fn free_unheld_jobs(
    state: &AppState,
    agent: &str,
    host: &str,
    running: Vec<String>,
    arrived: time::OffsetDateTime,
) -> Result<(), ApiError> {
    let lost = state
        .store
        .lose_unheld_jobs(HeldJobs {
            agent_id: agent.to_owned(),
            host: host.to_owned(),
            running,
            claimed_before: arrived,
            reason: "agent lost: the agent is not running this job (the answer that handed it out never reached it, or it restarted)".to_owned(),
        })
        .await?;
    for job in &lost {
        tracing::warn!(job = %job.id, agent = %agent, "job lost: its agent does not have it");
        state.job_lost(job);
    }
    Ok(())
}

/// Claims the host's next job, if the dispatch hint says there may be one.
async fn claim_for(state: &AppState, agent: &str, host: &str) -> Result<Option<Job>, ApiError> {
    let Some(mark) = state.dispatch.check(host) else {
        return Ok(None);
    };
    match state
        .store
        .claim_job(agent.to_owned(), host.to_owned())
        .await?
    {
        Claim::Job(job) => {
            // Also a moment of the job's own trace (with OpenTelemetry):
            // when, and to which agent, it went.
            let span =
                tracing::info_span!("hand_out_job", job = %job.id, agent = %agent, host = %host);
            crate::trace::continue_trace(&span, job.traceparent.as_deref());
            span.in_scope(|| tracing::info!("job handed out"));
            state.live.job_changed(&job);
            state.metrics.job_started(&job);
            Ok(Some(*job))
        }
        Claim::HostBusy => Ok(None),
        Claim::NothingPending => {
            state.dispatch.found_nothing(host, mark);
            Ok(None)
        }
    }
}

/// The host's running jobs someone asked to cancel.
async fn cancels_for(state: &AppState, host: &str) -> Result<Vec<String>, ApiError> {
    if !state.dispatch.may_cancel(host) {
        return Ok(Vec::new());
    }
    let ids = state.store.cancel_requests(host.to_owned()).await?;
    if ids.is_empty() {
        state.dispatch.cancels_handled(host);
    }
    Ok(ids)
}

/// Every registered agent.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    responses((status = 200, body = Vec<Agent>))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Agent>>, ApiError> {
    caller.require_read()?;
    let mut agents = state.store.agents().await?;
    for agent in &mut agents {
        state.presence.refresh(agent, state.lease_timeout);
    }
    Ok(Json(agents))
}
