//! `GET /v1/hosts`: every host of apps.yaml or of an agent, with its jobs;
//! `DELETE /v1/hosts/{hostname}`: forgetting one no app lists and no agent uses.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use deploybot_wire::{AgentStatus, ErrorBody, ForgottenHost, HostInfo, HostsResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Address, Caller};
use crate::error::{ApiError, ApiPath, ApiQuery};
use crate::queue::{Actor, ForgetRefused};
use crate::state::AppState;
use crate::waiting;

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
    let now = time::OffsetDateTime::now_utc();
    let hosts = jobs
        .into_iter()
        .map(|jobs| {
            let agent = by_host.get(&jobs.hostname).cloned().flatten();
            HostInfo {
                agent_id: agent.as_ref().map(|a| a.id.clone()),
                agent_status: agent.as_ref().map_or(AgentStatus::Offline, |a| a.status),
                last_seen: agent.as_ref().and_then(|a| a.last_heartbeat),
                silent_secs: agent
                    .as_ref()
                    .and_then(|a| waiting::silent_secs(a, state.lease_timeout, now)),
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

/// Forget a host (admin): one that no app lists and whose agent has been
/// silent beyond the lease timeout. Its agent record goes (the agent would
/// have to enroll again), so the host leaves the hosts list; its jobs stay
/// in the history.
#[utoipa::path(
    delete,
    path = "/v1/hosts/{hostname}",
    operation_id = "forgetHost",
    tag = "hosts",
    params(("hostname" = String, Path, description = "The host's name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Forgotten", body = ForgottenHost),
        (status = 404, description = "No agent has registered for the host", body = ErrorBody),
        (status = 409, description = "An app lists the host, or its agent is not silent", body = ErrorBody),
    )
)]
pub async fn forget(
    State(state): State<AppState>,
    caller: Caller,
    Address(address): Address,
    ApiPath(hostname): ApiPath<String>,
) -> Result<Json<ForgottenHost>, ApiError> {
    caller.require_admin()?;
    let listed_by = state.apps.get().apps_on_host(&hostname);
    let by = Actor::new(&caller, address);
    match state
        .queue
        .forget_host(&hostname, listed_by, state.lease_timeout, &by)
        .await
    {
        Ok(agent) => Ok(Json(ForgottenHost {
            hostname,
            agent_id: agent.id,
        })),
        Err(ForgetRefused::Store(err)) => Err(err.into()),
        Err(refused @ ForgetRefused::NoAgent { .. }) => {
            Err(ApiError::not_found(refused.to_string()))
        }
        Err(refused) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "host_in_use",
            refused.to_string(),
        )),
    }
}
