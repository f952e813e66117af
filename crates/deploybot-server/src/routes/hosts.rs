//! `GET /v1/hosts`: every host of apps.yaml or of an agent, with its jobs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use deploybot_wire::{AgentStatus, HostInfo, HostsResponse};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Hosts, their agents and their jobs.
#[utoipa::path(
    get,
    path = "/v1/hosts",
    tag = "hosts",
    responses((status = 200, body = HostsResponse))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<HostsResponse>, ApiError> {
    caller.require_read()?;
    let apps = state.apps.get();
    let mut agents = state.queue.store().agents().await?;
    let mut by_host = BTreeMap::new();
    for host in apps.hosts() {
        by_host.insert(host.to_owned(), None);
    }
    for agent in &mut agents {
        state.queue.presence().refresh(agent, state.lease_timeout);
        by_host.insert(agent.hostname.clone(), Some(agent.clone()));
    }
    let jobs = state
        .queue
        .store()
        .host_jobs(by_host.keys().cloned().collect())
        .await?;
    let hosts = jobs
        .into_iter()
        .map(|jobs| {
            let agent = by_host.get(&jobs.hostname).cloned().flatten();
            HostInfo {
                agent_id: agent.as_ref().map(|a| a.id.clone()),
                agent_status: agent.as_ref().map_or(AgentStatus::Offline, |a| a.status),
                last_seen: agent.as_ref().and_then(|a| a.last_heartbeat),
                current_job: jobs.current,
                last_job: jobs.last,
                pending_jobs: jobs.pending,
                apps: apps.apps_on_host(&jobs.hostname),
                hostname: jobs.hostname,
            }
        })
        .collect();
    Ok(Json(HostsResponse { hosts }))
}
