//! A fake controller: the agent's four API calls on a random port, with a
//! record of every request that tests can await, and switches to make it
//! misbehave (500s, a 409, forgetting the agent).
//!
//! It speaks the `deploybot-wire` types, so the agent is tested against the
//! real protocol before the real controller supports all of it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use deploybot_agent::Url;
use deploybot_wire::{
    Agent, AgentStatus, AppendLogsRequest, AppendLogsResponse, ErrorBody, HeartbeatRequest,
    HeartbeatResponse, Job, LogLine, RegisterAgentRequest, UpdateJobStatusRequest,
    UpdateJobStatusResponse,
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest a test waits for something the agent should do.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Everything the fake saw, and its switches.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub registrations: Vec<RegisterAgentRequest>,
    /// The id the fake knows the agent by; `None` after `forget_agent`.
    pub known_agent: Option<String>,
    pub heartbeats: Vec<Beat>,
    /// Jobs waiting to be handed out.
    pub pending: VecDeque<Job>,
    /// Jobs someone cancelled: like the controller, every heartbeat answer
    /// lists them (and comes at once) until they are reported.
    pub cancels: Vec<String>,
    pub leases: BTreeMap<String, i64>,
    pub log_attempts: Vec<LogAttempt>,
    /// Lines stored per job, in line-number order.
    pub stored: BTreeMap<String, Vec<LogLine>>,
    /// Lines uploaded again after they were stored.
    pub duplicates: u64,
    /// Lines whose number skipped ahead of the next expected one.
    pub gaps: u64,
    /// Every status report, stale ones (answered 409) too.
    pub reports: Vec<(String, UpdateJobStatusRequest)>,
    /// Answer this many log uploads with 500 before storing any.
    pub fail_logs: u32,
    /// Answer every log upload with this status.
    pub logs_answer: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct Beat {
    pub agent: String,
    pub request: HeartbeatRequest,
    pub wait: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct LogAttempt {
    pub job_id: String,
    pub status: u16,
    pub lines: Vec<LogLine>,
}

impl Record {
    pub fn texts(&self, job_id: &str) -> Vec<String> {
        self.stored
            .get(job_id)
            .map(|lines| lines.iter().map(|l| l.text.clone()).collect())
            .unwrap_or_default()
    }

    pub fn report(&self, job_id: &str) -> Option<&UpdateJobStatusRequest> {
        self.reports
            .iter()
            .find(|(id, _)| id == job_id)
            .map(|(_, report)| report)
    }
}

type Shared = watch::Sender<Record>;

pub struct Fake {
    pub url: Url,
    tx: Shared,
    server: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fake {
    pub async fn start() -> Fake {
        let (tx, _) = watch::channel(Record::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new()
            .route("/v1/agents/register", post(register))
            .route("/v1/agents/{id}/heartbeat", post(heartbeat))
            .route("/v1/jobs/{id}/logs", post(logs))
            .route("/v1/jobs/{id}/status", put(status))
            .with_state(tx.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake controller");
        });
        let url = format!("http://{addr}").parse().expect("url");
        Fake { url, tx, server }
    }

    pub fn record(&self) -> Record {
        self.tx.borrow().clone()
    }

    pub fn change(&self, change: impl FnOnce(&mut Record)) {
        self.tx.send_modify(change);
    }

    pub fn push_job(&self, job: Job) {
        self.change(|r| r.pending.push_back(job));
    }

    pub fn cancel(&self, job_id: &str) {
        self.change(|r| r.cancels.push(job_id.to_owned()));
    }

    /// Like a controller whose database was reset: heartbeats get 404.
    pub fn forget_agent(&self) {
        self.change(|r| r.known_agent = None);
    }

    /// Waits until `done` holds for the record; panics after 30 s.
    pub async fn wait_for(&self, what: &str, mut done: impl FnMut(&Record) -> bool) -> Record {
        let mut rx = self.tx.subscribe();
        let waited = tokio::time::timeout(WAIT_LIMIT, rx.wait_for(|r| done(r))).await;
        match waited {
            Ok(Ok(record)) => record.clone(),
            _ => panic!(
                "timed out waiting for {what}; the fake saw: {:#?}",
                *self.tx.borrow()
            ),
        }
    }

    /// Waits for the job's status report; returns it with the record as it
    /// was when the report arrived (so tests can see what was uploaded before).
    pub async fn report(&self, job_id: &str) -> (UpdateJobStatusRequest, Record) {
        let record = self
            .wait_for(&format!("the report of {job_id}"), |r| {
                r.report(job_id).is_some()
            })
            .await;
        let report = record.report(job_id).cloned().expect("a report");
        (report, record)
    }
}

fn agent_id(hostname: &str) -> String {
    format!("agent-{hostname}")
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(ErrorBody::new("error", message))).into_response()
}

async fn register(State(tx): State<Shared>, Json(request): Json<RegisterAgentRequest>) -> Response {
    if request.hostname.contains(' ') {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid host name");
    }
    let id = agent_id(&request.hostname);
    let agent = Agent {
        id: id.clone(),
        hostname: request.hostname.clone(),
        capabilities: request.capabilities.clone(),
        status: AgentStatus::Online,
        registered_at: time::OffsetDateTime::now_utc(),
        last_heartbeat: None,
    };
    tx.send_modify(|r| {
        r.registrations.push(request);
        r.known_agent = Some(id);
    });
    Json(agent).into_response()
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

/// Long-polls like the controller: answers when a job or cancel is ready,
/// the agent became unknown, or the wait ends.
async fn heartbeat(
    State(tx): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
    Json(request): Json<HeartbeatRequest>,
) -> Response {
    let mut rx = tx.subscribe();
    tx.send_modify(|r| {
        r.heartbeats.push(Beat {
            agent: id.clone(),
            request: request.clone(),
            wait: query.wait,
        })
    });
    let ready = |r: &Record| {
        r.known_agent.as_deref() != Some(id.as_str())
            || !r.cancels.is_empty()
            || (!request.draining && !r.pending.is_empty())
    };
    let wait = Duration::from_secs(query.wait.unwrap_or(0));
    let _ = tokio::time::timeout(wait, rx.wait_for(ready)).await;

    let mut answer = None;
    tx.send_modify(|r| {
        if r.known_agent.as_deref() != Some(id.as_str()) {
            return;
        }
        let mut job = if request.draining {
            None
        } else {
            r.pending.pop_front()
        };
        if let Some(job) = &mut job {
            let lease = 100 + r.leases.len() as i64;
            job.lease = Some(lease);
            job.assigned_agent = Some(id.clone());
            r.leases.insert(job.id.clone(), lease);
        }
        answer = Some(HeartbeatResponse {
            acknowledged: true,
            job,
            cancel: r.cancels.clone(),
        });
    });
    match answer {
        Some(answer) => Json(answer).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "agent is not registered; register again",
        ),
    }
}

async fn logs(
    State(tx): State<Shared>,
    Path(job_id): Path<String>,
    Json(request): Json<AppendLogsRequest>,
) -> Response {
    let mut answer = StatusCode::OK;
    let mut stored = AppendLogsResponse {
        accepted: 0,
        duplicates: 0,
    };
    tx.send_modify(|r| {
        answer = if r.fail_logs > 0 {
            r.fail_logs -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else if let Some(code) = r.logs_answer {
            StatusCode::from_u16(code).expect("status")
        } else if r.leases.get(&job_id) != request.lease.as_ref() {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        };
        r.log_attempts.push(LogAttempt {
            job_id: job_id.clone(),
            status: answer.as_u16(),
            lines: request.lines.clone(),
        });
        if answer != StatusCode::OK {
            return;
        }
        let lines = r.stored.entry(job_id.clone()).or_default();
        let (mut duplicates, mut gaps) = (0, 0);
        for line in &request.lines {
            let next = lines.len() as u64 + 1;
            if line.line < next {
                duplicates += 1;
            } else if line.line > next {
                gaps += 1;
            } else {
                lines.push(line.clone());
                stored.accepted += 1;
            }
        }
        stored.duplicates = duplicates;
        r.duplicates += duplicates;
        r.gaps += gaps;
    });
    if answer == StatusCode::OK {
        Json(stored).into_response()
    } else {
        error(answer, "log upload refused")
    }
}

async fn status(
    State(tx): State<Shared>,
    Path(job_id): Path<String>,
    Json(request): Json<UpdateJobStatusRequest>,
) -> Response {
    let status = request.status;
    let mut stale = false;
    tx.send_modify(|r| {
        // Like the controller: a lease, when given, must be the current one.
        stale = request.lease.is_some() && r.leases.get(&job_id) != request.lease.as_ref();
        r.cancels.retain(|id| *id != job_id);
        r.reports.push((job_id.clone(), request));
    });
    if stale {
        return error(StatusCode::CONFLICT, "stale lease");
    }
    Json(UpdateJobStatusResponse {
        job_id,
        status,
        updated: true,
    })
    .into_response()
}
