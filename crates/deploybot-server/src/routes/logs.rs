//! Deploy output: agents upload it, people read it paged or follow it live.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use deploybot_store::LogFilter;
use deploybot_wire::{
    AppendLogsRequest, AppendLogsResponse, ErrorBody, Job, JobLogsResponse, LogEntry, StatusEvent,
};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

use crate::auth::{AgentCaller, Caller, writing_agent};
use crate::error::{ApiError, ApiPath, ApiQuery, UploadJson};

use crate::state::AppState;

/// Most lines one upload may carry.
const MAX_LINES_PER_UPLOAD: usize = 10_000;
/// Longest line stored.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Lines per page when reading, and per step when a stream catches up.
const DEFAULT_PAGE: u32 = 1000;
const MAX_PAGE: u32 = 5000;
/// Events a slow SSE client may have queued before the stream waits for it.
const CLIENT_QUEUE: usize = 1024;

/// Upload lines of a running job's output (agents).
///
/// Lines are numbered by the agent from 1; a line number already stored is
/// ignored, so a retried upload never duplicates output. The writer must
/// hold the job's lease (409 otherwise).
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/logs",
    operation_id = "appendJobLogs",
    tag = "logs",
    params(("id" = String, Path, description = "Job id")),
    request_body = AppendLogsRequest,
    responses(
        (status = 200, body = AppendLogsResponse),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not running, or a stale lease", body = ErrorBody),
    )
)]
pub async fn append(
    State(state): State<AppState>,
    AgentCaller(caller): AgentCaller,
    ApiPath(id): ApiPath<String>,
    UploadJson(request): UploadJson<AppendLogsRequest>,
) -> Result<Json<AppendLogsResponse>, ApiError> {
    let agent_id = writing_agent(&caller, request.agent_id)?;
    if request.lines.len() > MAX_LINES_PER_UPLOAD {
        return Err(ApiError::invalid(format!(
            "lines: at most {MAX_LINES_PER_UPLOAD} per upload"
        )));
    }
    if let Some(bad) = request
        .lines
        .iter()
        .find(|l| l.line == 0 || l.line > i64::MAX as u64 || l.text.len() > MAX_LINE_BYTES)
    {
        return Err(ApiError::invalid(format!(
            "line {}: line numbers start at 1 and a line holds at most {MAX_LINE_BYTES} bytes",
            bad.line
        )));
    }
    let appended = state
        .queue
        .store()
        .append_logs(
            id,
            agent_id,
            request.lease,
            request.lines,
            state.max_job_output,
        )
        .await?;
    Ok(Json(AppendLogsResponse {
        accepted: appended.entries.len() as u64,
        duplicates: appended.duplicates,
        dropped: appended.dropped,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Return lines after this line number (default 0: from the start).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    after: Option<u64>,
    /// 1 to 5000; default 1000.
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<u32>,
}

/// A job's output, paged by line number.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/logs",
    operation_id = "getJobLogs",
    tag = "logs",
    params(("id" = String, Path, description = "Job id"), PageQuery),
    responses(
        (status = 200, body = JobLogsResponse),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn page(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<JobLogsResponse>, ApiError> {
    caller.require_read()?;
    let limit = super::limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let after = query.after.unwrap_or(0);
    if after > i64::MAX as u64 {
        return Err(ApiError::bad_request(format!(
            "after must be a line number (at most {})",
            i64::MAX
        )));
    }
    if state.queue.store().job(id.clone()).await?.is_none() {
        return Err(ApiError::not_found(format!("job {id} not found")));
    }
    let lines = state
        .queue
        .store()
        .job_logs(id.clone(), after, limit)
        .await?;
    let next_after = (lines.len() == limit as usize)
        .then(|| lines.last().map(|l| l.line))
        .flatten();
    Ok(Json(JobLogsResponse {
        job_id: id,
        lines,
        next_after,
    }))
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only this job's lines (from its first line, unless resuming).
    job_id: Option<String>,
    /// Only lines of jobs on this host.
    host: Option<String>,
    /// Only lines of jobs of this app.
    app: Option<String>,
    /// Resume after this event id (as the `Last-Event-ID` header does).
    after: Option<i64>,
}

impl StreamQuery {
    fn filter(&self) -> LogFilter {
        LogFilter {
            job_id: self.job_id.clone(),
            host: self.host.clone(),
            app: self.app.clone(),
        }
    }

    fn matches(&self, job_id: &str, host: &str, app: &str) -> bool {
        self.job_id.as_deref().is_none_or(|j| j == job_id)
            && self.host.as_deref().is_none_or(|h| h == host)
            && self.app.as_deref().is_none_or(|a| a == app)
    }
}

/// Follow deploy output live (Server-Sent Events).
///
/// Each line is an `event: log` whose `id` is its position in the log
/// store; a client reconnecting with `Last-Event-ID` gets exactly the lines
/// it missed. Job state changes arrive as `event: status` (no id). Without
/// a resume point, a `job_id` stream starts at the job's first line and
/// other streams at the newest line. The first event is `event: ready`,
/// whose id is that starting point, so a client that reconnects before any
/// line arrived resumes without a gap. Comments keep idle connections alive.
#[utoipa::path(
    get,
    path = "/v1/logs/stream",
    operation_id = "streamLogs",
    tag = "logs",
    params(StreamQuery, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "text/event-stream of `log` and `status` events", content_type = "text/event-stream", body = String))
)]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require_read()?;
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id"))?,
        ),
        None => query.after,
    };
    // Subscribe before reading the database, so no line falls in between.
    let feeds = Feeds {
        logs: state.queue.store().log_feed(),
        statuses: state.queue.live().subscribe(),
    };
    let start = match (resume, &query.job_id) {
        (Some(after), _) => after,
        (None, Some(_)) => 0,
        (None, None) => state.queue.store().last_log_id().await?,
    };
    if let Some(job_id) = &query.job_id
        && state.queue.store().job(job_id.clone()).await?.is_none()
    {
        return Err(ApiError::not_found(format!("job {job_id} not found")));
    }
    let (events, queue) = mpsc::channel(CLIENT_QUEUE);
    // First, where this stream starts: a client that loses the connection
    // before the first line still has a Last-Event-ID to resume from.
    let ready = Event::default()
        .event("ready")
        .id(start.to_string())
        .data(format!("{{\"after\":{start}}}"));
    if events.try_send(ready).is_err() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "cannot start the stream; try again",
        ));
    }
    tokio::spawn(feed(state, query, start, feeds, events));
    let stream = futures_util::stream::unfold(queue, |mut queue| async move {
        queue.recv().await.map(|event| (Ok(event), queue))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn log_event(entry: &LogEntry) -> Event {
    Event::default()
        .event("log")
        .id(entry.id.to_string())
        .json_data(entry)
        .unwrap_or_else(|_| Event::default().comment("unencodable line"))
}

fn status_event(status: &StatusEvent) -> Event {
    Event::default()
        .event("status")
        .json_data(status)
        .unwrap_or_else(|_| Event::default().comment("unencodable status"))
}

/// The live sources of a stream.
struct Feeds {
    /// Committed log lines, in id order.
    logs: broadcast::Receiver<Arc<[LogEntry]>>,
    statuses: broadcast::Receiver<Arc<StatusEvent>>,
}

/// Feeds one SSE client: catch up from the database, then follow the live
/// feeds; after falling behind, catch up from the database again. Ends when
/// the client goes away or the controller stops.
///
/// Order: a job's lines are committed before its agent reports, so taking
/// log lines before status changes whenever both are ready (`biased`) sends
/// every line of a job before its final status.
async fn feed(
    state: AppState,
    query: StreamQuery,
    mut last: i64,
    mut feeds: Feeds,
    events: mpsc::Sender<Event>,
) {
    // Counted while the client is fed (this task ends when it goes).
    let _client = crate::metrics::Held::new(&state.metrics.sse_clients);
    let filter = query.filter();
    let mut stopping = state.stopping.clone();
    // A job stream's final status is sent once, whichever path finds it first.
    let mut final_sent = false;
    'catch_up: loop {
        if !catch_up(&state, &filter, &mut last, &events).await {
            return;
        }
        if let Some(job) = finished_job(&state, &query, final_sent).await {
            // Its lines were all committed before it finished: send any that
            // came in since the catch-up read, then the status.
            if !catch_up(&state, &filter, &mut last, &events).await
                || events
                    .send(status_event(&StatusEvent::from(&job)))
                    .await
                    .is_err()
            {
                return;
            }
            final_sent = true;
        }
        loop {
            tokio::select! {
                biased;
                batch = feeds.logs.recv() => match batch {
                    Ok(batch) => {
                        for entry in batch.iter() {
                            // Lines the catch-up already sent come again here.
                            if entry.id <= last {
                                continue;
                            }
                            last = entry.id;
                            if query.matches(&entry.job_id, &entry.host, &entry.app)
                                && events.send(log_event(entry)).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'catch_up,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                status = feeds.statuses.recv() => match status {
                    Ok(status) => {
                        if !query.matches(&status.job_id, &status.host, &status.app) {
                            continue;
                        }
                        let is_final = query.job_id.is_some() && status.status.is_final();
                        if is_final && final_sent {
                            continue;
                        }
                        final_sent |= is_final;
                        // The job's lines were all committed before it
                        // ended, but may reach this instance's feed later
                        // when they were uploaded through another instance:
                        // send them first, so a job's end follows its output.
                        if status.status.is_final()
                            && !catch_up(&state, &filter, &mut last, &events).await
                        {
                            return;
                        }
                        if events.send(status_event(&status)).await.is_err() {
                            return;
                        }
                    }
                    // Missed status changes cannot be replayed, but a job
                    // stream's final status can be looked up: catch up.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue 'catch_up,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = stopping.changed() => return,
                _ = events.closed() => return,
            }
        }
    }
}

/// Sends the lines stored after `last` that match `filter`; `false` when the
/// client has gone or the database failed.
async fn catch_up(
    state: &AppState,
    filter: &LogFilter,
    last: &mut i64,
    events: &mpsc::Sender<Event>,
) -> bool {
    loop {
        let page = match state
            .queue
            .store()
            .logs_since(*last, filter.clone(), DEFAULT_PAGE)
            .await
        {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(error = %err, "log stream: cannot read logs; closing");
                return false;
            }
        };
        for entry in &page {
            if events.send(log_event(entry)).await.is_err() {
                return false;
            }
            *last = entry.id;
        }
        if page.len() < DEFAULT_PAGE as usize {
            return true;
        }
    }
}

/// The job of a job stream, if it has finished and its final status has not
/// been sent yet.
async fn finished_job(state: &AppState, query: &StreamQuery, final_sent: bool) -> Option<Job> {
    let job_id = query.job_id.as_ref().filter(|_| !final_sent)?;
    match state.queue.store().job(job_id.clone()).await {
        Ok(Some(job)) if job.status.is_final() => Some(job),
        _ => None,
    }
}
