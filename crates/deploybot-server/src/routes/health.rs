//! Probes and the one-screen summary: `GET /health` (liveness), `GET /ready`
//! (readiness) and `GET /v1/status`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use deploybot_store::JobFilter;
use deploybot_wire::{AgentStatus, HealthResponse, JobStatus, ReadyResponse, StatusResponse};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// When this process began serving, and on which kind of database.
static STARTED: OnceLock<(Instant, &'static str)> = OnceLock::new();

/// Records the start (the first call wins: one controller per process).
pub(crate) fn started(database_url: &str) {
    let kind = if database_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    STARTED.get_or_init(|| (Instant::now(), kind));
}

fn uptime_secs() -> u64 {
    STARTED.get().map_or(0, |(at, _)| at.elapsed().as_secs())
}

/// Liveness, including a database round trip.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Serving, database reachable", body = HealthResponse),
        (status = 503, description = "Database unreachable", body = HealthResponse),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let database_ok = database_ok(&state).await;
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(HealthResponse {
            status: if database_ok { "ok" } else { "unavailable" }.into(),
            database: if database_ok { "ok" } else { "unavailable" }.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: uptime_secs(),
        }),
    )
}

async fn database_ok(state: &AppState) -> bool {
    match state.queue.store().ping().await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %err, "database unreachable");
            false
        }
    }
}

/// Readiness: the database answers, its schema is migrated (the controller
/// migrates before it listens) and apps.yaml is loaded. 503 while the
/// database is unreachable, so a load balancer sends requests elsewhere.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready to serve", body = ReadyResponse),
        (status = 503, description = "Not ready: the database is unreachable", body = ReadyResponse),
    )
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadyResponse>) {
    let database_ok = database_ok(&state).await;
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(ReadyResponse {
            status: if database_ok { "ready" } else { "not_ready" }.into(),
            database: if database_ok { "ok" } else { "unavailable" }.into(),
            migrations: "applied".into(),
            apps: state.apps.get().apps().len(),
        }),
    )
}

/// The controller on one screen: version, uptime, database, agents, queue,
/// recent failures.
#[utoipa::path(
    get,
    path = "/v1/status",
    operation_id = "status",
    tag = "health",
    security(("bearer" = [])),
    responses(
        (status = 200, body = StatusResponse),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<StatusResponse>, ApiError> {
    caller.require_read()?;
    let mut agents = state.queue.store().agents().await?;
    for agent in &mut agents {
        state.queue.presence().refresh(agent, state.lease_timeout);
    }
    let count = |status: JobStatus, limit: u32| {
        state.queue.store().jobs(JobFilter {
            status: Some(status),
            limit,
            ..JobFilter::default()
        })
    };
    let pending = count(JobStatus::Pending, 1000).await?;
    let running = count(JobStatus::Running, 1000).await?;
    let mut failures = count(JobStatus::Failed, 5).await?;
    failures.extend(count(JobStatus::Lost, 5).await?);
    failures.sort_by_key(|job| std::cmp::Reverse(job.created_at));
    failures.truncate(5);
    Ok(Json(StatusResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: uptime_secs(),
        database: "ok".into(),
        database_kind: STARTED.get().map_or("sqlite", |(_, kind)| kind).into(),
        apps: state.apps.get().apps().len(),
        agents_online: agents
            .iter()
            .filter(|a| a.status != AgentStatus::Offline)
            .count(),
        agents_total: agents.len(),
        jobs_pending: pending.len(),
        jobs_running: running.len(),
        recent_failures: failures,
    }))
}
