//! `/v1/jobs`: create, list, inspect, and agents' status reports.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use deploybot_store::{Enqueued, JobFilter, NewJob, ReportOutcome, StatusReport};
use deploybot_wire::{
    CreateJobRequest, ErrorBody, Job, JobResponse, JobSource, JobStatus, UpdateJobStatusRequest,
    UpdateJobStatusResponse, names,
};
use serde::Deserialize;
use tracing::{Instrument, Span};

use utoipa::IntoParams;

use crate::auth::{Address, AgentCaller, Caller, Deployer, writing_agent};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::queue::Actor;
use crate::state::AppState;
use crate::trace;
use crate::waiting;

/// Largest `metadata` accepted, serialized.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Deepest nesting accepted in `metadata`.
const MAX_METADATA_DEPTH: usize = 8;
/// Longest `error` text kept from an agent's report.
const MAX_ERROR_BYTES: usize = 16 * 1024;
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_metadata(metadata: serde_json::Value) -> Result<serde_json::Value, ApiError> {
    let metadata = match metadata {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        object @ serde_json::Value::Object(_) => object,
        _ => return Err(ApiError::invalid("metadata must be a JSON object")),
    };
    if serde_json::to_vec(&metadata).map_or(usize::MAX, |b| b.len()) > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(format!(
            "metadata is larger than {MAX_METADATA_BYTES} bytes"
        )));
    }
    if depth(&metadata) > MAX_METADATA_DEPTH {
        return Err(ApiError::invalid(format!(
            "metadata nests deeper than {MAX_METADATA_DEPTH} levels"
        )));
    }
    Ok(metadata)
}

/// Queue a deployment.
///
/// The deploy spec comes from the apps.yaml app that pairs `repo` with
/// `host`. If the same app, repo, ref, sha and host already has a pending or
/// running job, that job is returned with status 200 and `created: false`.
/// A new job supersedes older pending jobs of the same app and host.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "createJob",
    tag = "jobs",
    request_body = CreateJobRequest,
    responses(
        (status = 201, description = "Queued", body = JobResponse),
        (status = 200, description = "An identical job is already open", body = JobResponse),
        (status = 422, description = "Invalid values, or no app pairs the repo with the host", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Deployer(caller): Deployer,
    Address(address): Address,
    ApiJson(request): ApiJson<CreateJobRequest>,
) -> Result<(StatusCode, Json<JobResponse>), ApiError> {
    names::check_repo(&request.repo).map_err(ApiError::invalid)?;
    // Stored (and checked) as a push stores it: `main` and `refs/heads/main`
    // are one ref.
    let git_ref = names::full_ref(&request.git_ref);
    names::check_ref(&git_ref).map_err(ApiError::invalid)?;
    names::check_hostname(&request.host).map_err(ApiError::invalid)?;
    if let Some(sha) = &request.sha {
        names::check_sha(sha).map_err(ApiError::invalid)?;
    }
    let metadata = check_metadata(request.metadata)?;
    let apps = state.apps.get();
    let app = apps
        .app_for(&request.repo, &request.host, request.app.as_deref())
        .map_err(|err| ApiError::invalid(err.to_string()))?;
    caller.require_deploy(&app.name)?;
    let mut job = NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        app: app.name.clone(),
        repo: app.repo.clone(),
        git_ref,
        sha: request.sha.map(|s| s.to_ascii_lowercase()),
        host: request.host,
        metadata,
        source: JobSource::Manual,
        delivery_id: None,
        deploy: app.deploy.clone(),
        attempt: 1,
        retry_of: None,
        traceparent: None,
    };
    let span = creation_span(&mut job);
    let by = Actor::new(&caller, address);
    let enqueued = state.queue.deploy(job, &by).instrument(span).await?;
    answer_enqueued(&state, enqueued).await
}

/// The span of creating `job`, a child of the request's: its trace context
/// becomes the job's `traceparent` (with OpenTelemetry), so that the
/// agent's uploads and report join the trace of the request that made the
/// job.
pub(super) fn creation_span(job: &mut NewJob) -> Span {
    let span = tracing::info_span!(
        "create_job",
        job = %job.id,
        app = %job.app,
        host = %job.host,
        delivery = job.delivery_id.as_deref(),
    );
    job.traceparent = trace::traceparent(&span);
    span
}

/// Checks that the caller may cancel or retry this job: app-limited deploy
/// tokens only for their apps (which needs the job's app).
async fn require_deploy_of_job(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(), ApiError> {
    if caller.deploys_only_some_apps() {
        let job = state
            .queue
            .store()
            .job(id.to_owned())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
        caller.require_deploy(&job.app)
    } else {
        caller.require_deploy("")
    }
}

/// 201 with a new job, or 200 with the identical open job that was
/// returned instead.
async fn answer_enqueued(
    state: &AppState,
    enqueued: Enqueued,
) -> Result<(StatusCode, Json<JobResponse>), ApiError> {
    let status = if enqueued.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let job = waiting::annotate_one(&state.queue, state.lease_timeout, enqueued.job).await?;
    Ok((
        status,
        Json(JobResponse {
            job,
            created: Some(enqueued.created),
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    status: Option<JobStatus>,
    host: Option<String>,
    repo: Option<String>,
    app: Option<String>,
    /// 1 to 1000; default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only jobs created before this one (a job id): the next page.
    before: Option<String>,
}

/// List jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = Vec<Job>),
        (status = 400, description = "Invalid filter", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<Job>>, ApiError> {
    caller.require_read()?;
    let limit = super::limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut jobs = state
        .queue
        .store()
        .jobs(JobFilter {
            status: query.status,
            host: query.host,
            repo: query.repo,
            app: query.app,
            before: query.before,
            limit,
        })
        .await?;
    waiting::annotate(&state.queue, state.lease_timeout, &mut jobs).await?;
    Ok(Json(jobs))
}

/// One job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "getJob",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, body = JobResponse),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobResponse>, ApiError> {
    caller.require_read()?;
    let job = state
        .queue
        .store()
        .job(id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
    let job = waiting::annotate_one(&state.queue, state.lease_timeout, job).await?;
    Ok(Json(JobResponse { job, created: None }))
}

/// Report a job's outcome (agents).
///
/// Allowed: `running` (an acknowledgement, changes nothing) and, for a
/// running job, `success`, `failed` or `cancelled`. Repeating the job's
/// current status is answered with `updated: false`. Any other transition,
/// or a report from an agent the job is not assigned to, is a 409.
#[utoipa::path(
    put,
    path = "/v1/jobs/{id}/status",
    operation_id = "reportJobStatus",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    request_body = UpdateJobStatusRequest,
    responses(
        (status = 200, body = UpdateJobStatusResponse),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Transition not allowed; nothing changed", body = ErrorBody),
    )
)]
pub async fn report_status(
    State(state): State<AppState>,
    AgentCaller(caller): AgentCaller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateJobStatusRequest>,
) -> Result<Json<UpdateJobStatusResponse>, ApiError> {
    let agent_id = writing_agent(&caller, request.agent_id)?;
    if !matches!(
        request.status,
        JobStatus::Running | JobStatus::Success | JobStatus::Failed | JobStatus::Cancelled
    ) {
        return Err(ApiError::invalid(
            "status must be running, success, failed or cancelled",
        ));
    }
    let error = request.error.map(|mut text| {
        if text.len() > MAX_ERROR_BYTES {
            let mut cut = MAX_ERROR_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        text
    });
    let outcome = state
        .queue
        .report(
            id.clone(),
            StatusReport {
                status: request.status,
                error,
                exit_code: request.exit_code,
                agent_id,
                lease: request.lease,
            },
        )
        .await?;
    let (status, updated) = match outcome {
        ReportOutcome::Updated(job) => (job.status, true),
        ReportOutcome::Unchanged(status) => (status, false),
    };
    Ok(Json(UpdateJobStatusResponse {
        job_id: id,
        status,
        updated,
    }))
}

/// Cancel a job.
///
/// A pending job is cancelled at once. A running job's agent is told in its
/// next heartbeat answer (a held long-poll returns at once); it stops the
/// deploy and reports `cancelled`. A finished job cannot be cancelled (409).
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancelJob",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled, or cancel requested (`cancel_requested: true`)", body = JobResponse),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job already finished", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Address(address): Address,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobResponse>, ApiError> {
    require_deploy_of_job(&state, &caller, &id).await?;
    let job = state
        .queue
        .cancel(id, &Actor::new(&caller, address))
        .await?;
    Ok(Json(JobResponse { job, created: None }))
}

/// Retry a finished job: queue a new attempt with the same deploy spec.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    operation_id = "retryJob",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 201, description = "The new attempt", body = JobResponse),
        (status = 200, description = "An identical job is already open", body = JobResponse),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job has not finished", body = ErrorBody),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Address(address): Address,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<JobResponse>), ApiError> {
    require_deploy_of_job(&state, &caller, &id).await?;
    let new_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!(
        "create_job",
        job = %new_id,
        app = tracing::field::Empty,
        host = tracing::field::Empty,
        retry_of = %id,
    );
    let traceparent = trace::traceparent(&span);
    let by = Actor::new(&caller, address);
    let enqueued = state
        .queue
        .retry(id, new_id, traceparent, &by)
        .instrument(span.clone())
        .await?;
    span.record("app", enqueued.job.app.as_str());
    span.record("host", enqueued.job.host.as_str());
    answer_enqueued(&state, enqueued).await
}
