//! `/v1/agents`: registration, heartbeats (which hand out jobs), listing.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use deploybot_store::{NewRegistration, StoreError};
use deploybot_wire::{
    Agent, AgentStatus, ErrorBody, HeartbeatRequest, HeartbeatResponse, Job, RegisterAgentRequest,
    RegisteredAgent, names,
};
use futures_util::future::Either;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{self, Address, AgentCaller, Caller, Enroller};
use crate::error::{ApiBytes, ApiError, ApiJson, ApiPath, ApiQuery};
use crate::queue::Actor;
use crate::state::AppState;

/// Register an agent for a host (enrollment token, or the agent's own token).
///
/// The same hostname always gets the same agent id. The answer carries the
/// agent's new token, shown only here; the host's previous token stops
/// working, and jobs its previous session was running become `lost`. A
/// host that has an agent is registered again only by that agent (its own
/// token), by an enrollment token made for the host (`deploybot agents
/// replace HOST`), or in open mode; any other enrollment token gets 409.
#[utoipa::path(
    post,
    path = "/v1/agents/register",
    operation_id = "registerAgent",
    tag = "agents",
    request_body = RegisterAgentRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, body = RegisteredAgent),
        (status = 401, description = "Missing, unknown, expired or used-up enrollment token", body = ErrorBody),
        (status = 403, description = "Not an enrollment token, or one for another host", body = ErrorBody),
        (status = 409, description = "The host has an agent this credential may not replace", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    Enroller(caller): Enroller,
    Address(address): Address,
    ApiJson(request): ApiJson<RegisterAgentRequest>,
) -> Result<Json<RegisteredAgent>, ApiError> {
    names::check_hostname(&request.hostname).map_err(ApiError::invalid)?;
    let may_replace = caller.may_register(&request.hostname)?;
    request.capabilities.check().map_err(ApiError::invalid)?;
    let token = auth::new_token(auth::AGENT_PREFIX);
    let single_use = match &caller {
        Caller::Token(info) if info.single_use => Some(info.id.clone()),
        _ => None,
    };
    let registered = state
        .queue
        .register(
            NewRegistration {
                new_id: uuid::Uuid::now_v7().to_string(),
                hostname: request.hostname,
                capabilities: request.capabilities,
                token_hash: auth::hash_token(&token),
                use_enrollment_token: single_use,
                may_replace,
            },
            &Actor::new(&caller, address),
        )
        .await
        .map_err(|err| match err {
            // Raced another registration for the same single-use token.
            StoreError::Conflict(why) => ApiError::unauthorized("invalid_token", why),
            StoreError::HostTaken { hostname, agent_id } => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "host_has_agent",
                format!(
                    "host {hostname} already has an agent ({agent_id}), and an enrollment token \
                     does not take it over. The agent itself registers again with its own agent \
                     token (kept in its state directory). To move the host to a new agent, an \
                     admin runs `deploybot agents replace {hostname}` and the new agent enrolls \
                     with the token it prints; or revoke the agent first \
                     (`deploybot agents revoke {agent_id}`)."
                ),
            ),
            other => other.into(),
        })?;
    let warning = state
        .apps
        .get()
        .unserved_host_warning(&registered.agent.hostname);
    if let Some(warning) = &warning {
        tracing::warn!(agent = %registered.agent.id, host = %registered.agent.hostname, "{warning}");
    }
    Ok(Json(RegisteredAgent {
        agent: registered.agent,
        token,
        warning,
    }))
}

/// Revoke an agent (admin).
///
/// Its token stops working at once; the job it was running becomes `lost`.
/// To come back, the agent must enroll again (revoke the enrollment token
/// it used too, to keep it out).
#[utoipa::path(
    delete,
    path = "/v1/agents/{id}",
    operation_id = "revokeAgent",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked; the jobs it held are lost", body = [Job]),
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
    let lost = state
        .queue
        .revoke_agent(id, &Actor::new(&caller, address))
        .await?;
    Ok(Json(lost))
}

/// The longest a heartbeat may wait for work.
const MAX_WAIT_SECS: u64 = 60;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HeartbeatQuery {
    /// Seconds to hold the request until a job or a cancel for this agent
    /// arrives (0 to 60, default 0: answer at once). Capped at half the lease
    /// timeout so a waiting agent never looks silent.
    #[param(minimum = 0, maximum = 60)]
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
    operation_id = "heartbeat",
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
    AgentCaller(caller): AgentCaller,
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
    match state.queue.presence().beat(&id, beat.status) {
        Some(host) => Either::Left(Either::Left(wait_for_work(state, id, host, beat))),
        // Boxed: once per agent and instance, and its future would
        // otherwise enlarge every held one.
        None => Either::Left(Either::Right(Box::pin(async move {
            let host = state
                .queue
                .heartbeat_of_unknown(&id, beat.status)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!("agent {id} is not registered; register again"))
                })?;
            wait_for_work(state, id, host, beat).await
        }))),
    }
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
        let queue = &state.queue;
        if let Some(running) = beat.running.take()
            && queue.presence().held_check_due(&id, &running)
        {
            // Boxed: rare, and its future would otherwise enlarge every held one.
            Box::pin(queue.free_unheld_jobs(&id, &host, running, beat.arrived)).await?;
        }
        let deadline = tokio::time::Instant::now() + beat.wait;
        // Counted while this request is held (dropped when it answers).
        let _held = (!beat.wait.is_zero())
            .then(|| crate::metrics::Held::new(&state.metrics.long_polls_held));
        let wake = queue.dispatch().waiter(&host);
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
                    queue.presence().beat(&id, beat.status);
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
    let queue = &state.queue;
    // Revoked while this request was held: it gets nothing more.
    if !queue.knows_agent(id) {
        return Err(ApiError::unauthorized(
            "invalid_token",
            format!("agent {id} was revoked; register again"),
        ));
    }
    let cancel = queue.cancels_for(host).await?;
    let job = if draining {
        None
    } else {
        queue.claim(id, host).await?
    };
    // The job's secrets travel with it, as apps.yaml has them now, and
    // nowhere else.
    let secrets = job
        .as_ref()
        .and_then(|job| {
            let apps = state.apps.get();
            apps.app(&job.app).map(|app| {
                app.secrets
                    .iter()
                    .map(|(name, value)| (name.clone(), value.expose().to_owned()))
                    .collect()
            })
        })
        .unwrap_or_default();
    Ok(
        (job.is_some() || !cancel.is_empty() || waited_out).then_some(HeartbeatResponse {
            acknowledged: true,
            job,
            cancel,
            secrets,
        }),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 1000; default 1000.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only agents of hosts after this one, by name: the next page.
    after: Option<String>,
}

/// Registered agents, by hostname.
#[utoipa::path(
    get,
    path = "/v1/agents",
    operation_id = "listAgents",
    tag = "agents",
    params(ListQuery),
    responses((status = 200, body = Vec<Agent>))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<Agent>>, ApiError> {
    caller.require_read()?;
    let limit = super::limit(query.limit, 1000, 1000)?;
    let mut agents = state.queue.store().agents_page(query.after, limit).await?;
    for agent in &mut agents {
        state.queue.presence().refresh(agent, state.lease_timeout);
    }
    Ok(Json(agents))
}
