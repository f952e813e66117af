//! `GET /v1/hosts`: every host of apps.yaml or of an agent, with its jobs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use deploybot_wire::{AgentStatus, HostInfo, HostsResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::state::AppState;

/// Hosts, their agents and their jobs.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 1000; default 1000.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only hosts after this one, by name (as `next_after` says).
    after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/hosts",
    operation_id = "listHosts",
    tag = "hosts",
    params(ListQuery),
    responses((status = 200, body = HostsResponse))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<HostsResponse>, ApiError> {
    caller.require_read()?;
    let limit = super::limit(query.limit, 1000, 1000)? as usize;
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
    // The page, by name: only its hosts' jobs are read.
    let page: Vec<String> = by_host
        .keys()
        .filter(|host| query.after.as_ref().is_none_or(|after| *host > after))
        .take(limit)
        .cloned()
        .collect();
    let next_after = (page.len() == limit)
        .then(|| page.last().cloned())
        .flatten();
    let jobs = state.queue.store().host_jobs(page).await?;
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
    Ok(Json(HostsResponse { hosts, next_after }))
}
