//! `GET /metrics`: Prometheus text exposition (OpenMetrics).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use deploybot_store::JobFilter;
use deploybot_wire::{AgentStatus, JobStatus};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics::{AgentLabels, HostLabels};
use crate::state::AppState;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Metrics for Prometheus. Open unless `DEPLOYBOT_METRICS_AUTH` asks for a
/// read token; it can also be served on its own address (`--metrics-listen`).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    security(()),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    if state.metrics_elsewhere {
        return Err(ApiError::not_found(
            "/metrics is served on its own address (--metrics-listen)",
        ));
    }
    metrics_only(State(state), parts).await
}

/// `/metrics` on its own address.
pub async fn metrics_only(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    if state.metrics_auth {
        let mut parts = parts;
        let caller = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &state,
        )
        .await?;
        caller.require_read()?;
    }
    refresh_state_gauges(&state).await?;
    Ok(([(CONTENT_TYPE, OPENMETRICS)], state.metrics.encode()).into_response())
}

/// Gauges that describe state are read when scraped: right after a
/// restart, and the same on every instance.
async fn refresh_state_gauges(state: &AppState) -> Result<(), ApiError> {
    let mut agents = state.queue.store().agents().await?;
    let (mut online, mut offline) = (0, 0);
    for agent in &mut agents {
        state.queue.presence().refresh(agent, state.lease_timeout);
        if agent.status == AgentStatus::Offline {
            offline += 1;
        } else {
            online += 1;
        }
    }
    let agent_gauge = |label: &str, value: i64| {
        state
            .metrics
            .agents
            .get_or_create(&AgentLabels {
                state: label.to_owned(),
            })
            .set(value);
    };
    agent_gauge("online", online);
    agent_gauge("offline", offline);

    let pending = state
        .queue
        .store()
        .jobs(JobFilter {
            status: Some(JobStatus::Pending),
            limit: 1000,
            ..JobFilter::default()
        })
        .await?;
    let mut depth: BTreeMap<String, i64> = state
        .apps
        .get()
        .hosts()
        .into_iter()
        .map(|host| (host.to_owned(), 0))
        .collect();
    for job in pending {
        *depth.entry(job.host).or_default() += 1;
    }
    // Hosts no longer anywhere drop out instead of showing a stale depth.
    state.metrics.queue_depth.clear();
    for (host, count) in depth {
        state
            .metrics
            .queue_depth
            .get_or_create(&HostLabels { host })
            .set(count);
    }
    state
        .metrics
        .request_body_bytes
        .set(i64::try_from(state.body_budget.in_use()).unwrap_or(i64::MAX));
    Ok(())
}
