//! `/v1/agents`: registration, heartbeats (which hand out jobs), listing.

use axum::Json;
use axum::extract::State;
use deploybot_store::Claim;
use deploybot_wire::{
    Agent, ErrorBody, HeartbeatRequest, HeartbeatResponse, RegisterAgentRequest, names,
};

use crate::error::{ApiBytes, ApiError, ApiJson, ApiPath};
use crate::state::AppState;

const MAX_CAPABILITIES: usize = 64;
const MAX_CAPABILITY_LEN: usize = 128;

/// Register an agent for a host.
///
/// The same hostname always gets the same agent id.
#[utoipa::path(
    post,
    path = "/v1/agents/register",
    tag = "agents",
    request_body = RegisterAgentRequest,
    responses(
        (status = 200, body = Agent),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RegisterAgentRequest>,
) -> Result<Json<Agent>, ApiError> {
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
    let agent = state
        .store
        .register_agent(
            uuid::Uuid::now_v7().to_string(),
            request.hostname,
            request.capabilities,
        )
        .await?;
    state.presence.registered(&agent);
    tracing::info!(agent = %agent.id, host = %agent.hostname, "agent registered");
    Ok(Json(agent))
}

/// Heartbeat; receive at most one job for this agent's host.
///
/// A heartbeat with nothing to hand out touches no disk.
#[utoipa::path(
    post,
    path = "/v1/agents/{id}/heartbeat",
    tag = "agents",
    params(("id" = String, Path, description = "Agent id")),
    request_body(content = HeartbeatRequest, description = "Optional: an empty body means `{\"status\": \"online\"}`"),
    responses(
        (status = 200, body = HeartbeatResponse),
        (status = 404, description = "Unknown agent: register again", body = ErrorBody),
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    // An empty body is a plain "I'm alive", for the simplest clients.
    let request: HeartbeatRequest = if body.iter().all(u8::is_ascii_whitespace) {
        HeartbeatRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::invalid(format!("invalid heartbeat body: {err}")))?
    };
    let host = state.presence.beat(&id, request.status).ok_or_else(|| {
        ApiError::not_found(format!("agent {id} is not registered; register again"))
    })?;
    let mut job = None;
    if let Some(mark) = state.dispatch.check(&host) {
        match state.store.claim_job(id.clone(), host.clone()).await? {
            Claim::Job(claimed) => {
                tracing::info!(job = %claimed.id, agent = %id, host = %host, "job handed out");
                job = Some(*claimed);
            }
            Claim::HostBusy => {}
            Claim::NothingPending => state.dispatch.found_nothing(&host, mark),
        }
    }
    Ok(Json(HeartbeatResponse {
        acknowledged: true,
        job,
    }))
}

/// Every registered agent.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    responses((status = 200, body = Vec<Agent>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Agent>>, ApiError> {
    let mut agents = state.store.agents().await?;
    for agent in &mut agents {
        state.presence.refresh(agent, state.lease_timeout);
    }
    Ok(Json(agents))
}
