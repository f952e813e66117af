//! A fake controller: the agent's four API calls on a random port, with a
//! record of every request that tests can await, and switches to make it
//! misbehave (500s, a 409, forgetting the agent, revoking its token).
//!
//! Authentication works like the controller's: every registration issues a
//! new agent token (`agent-secret-1`, `agent-secret-2`, …) and the previous one stops working;
//! heartbeats, uploads and reports need the current one (401 otherwise);
//! registering needs, when an enrollment token is set, either the agent's
//! current token (for its own host; 403 for another) or the enrollment
//! token (401 otherwise), which registers a host that has an agent with a
//! token only when `enrollment_replaces` (409 otherwise).
//!
//! It speaks the `deploybot-wire` types, so the agent is tested against the
//! real protocol before the real controller supports all of it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use deploybot_agent::Url;
use deploybot_wire::{
    Agent, AgentStatus, AppendLogsRequest, AppendLogsResponse, ErrorBody, HeartbeatRequest,
    HeartbeatResponse, Job, LogLine, RegisterAgentRequest, RegisteredAgent, UpdateJobStatusRequest,
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
    /// Secret variables handed out with a job, by job id.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
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
    /// Registering needs this token; `None`: open mode, no token needed.
    pub enrollment_token: Option<String>,
    /// The agent token that works now; `None` after `revoke_token`.
    pub agent_token: Option<String>,
    /// The host the agent token is for.
    pub agent_host: Option<String>,
    /// The enrollment token takes a host from the agent that has it (it was
    /// made for the host); otherwise that is a 409.
    pub enrollment_replaces: bool,
    /// Agent tokens issued so far.
    pub issued: u32,
    /// Revoke the agent token when the next status report arrives (so that
    /// report gets 401), as if an admin did it at that very moment.
    pub revoke_on_report: bool,
    /// Every request, refused ones too, in arrival order.
    pub calls: Vec<Call>,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub kind: CallKind,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// The `traceparent` header as sent.
    pub traceparent: Option<String>,
    /// The job of a log upload or status report.
    pub job_id: Option<String>,
    pub status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Register,
    Heartbeat,
    Logs,
    Status,
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

    /// The calls of one kind.
    pub fn calls_of(&self, kind: CallKind) -> Vec<&Call> {
        self.calls.iter().filter(|c| c.kind == kind).collect()
    }

    /// Calls answered with `status`.
    pub fn answered(&self, status: u16) -> usize {
        self.calls.iter().filter(|c| c.status == status).count()
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

    /// Like an admin revoking the agent (or another registration replacing
    /// its token): every agent call gets 401 until it registers again.
    pub fn revoke_token(&self) {
        self.change(|r| r.agent_token = None);
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

fn bearer(headers: &HeaderMap) -> Option<String> {
    text(headers, header::AUTHORIZATION.as_str())
}

fn text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Records the call (about `job_id`, for uploads and reports); the 401 to
/// answer when its token is not the current agent token.
fn refuse_stale_token(
    tx: &Shared,
    kind: CallKind,
    headers: &HeaderMap,
    job_id: Option<&str>,
) -> Option<Response> {
    let authorization = bearer(headers);
    let mut ok = false;
    tx.send_modify(|r| {
        ok = r.agent_token.is_some()
            && authorization.as_deref()
                == r.agent_token
                    .as_ref()
                    .map(|t| format!("Bearer {t}"))
                    .as_deref();
        r.calls.push(Call {
            kind,
            authorization,
            traceparent: text(headers, "traceparent"),
            job_id: job_id.map(str::to_owned),
            status: if ok { 200 } else { 401 },
        });
    });
    (!ok).then(|| error(StatusCode::UNAUTHORIZED, "invalid or expired agent token"))
}

/// Sets the status of the last recorded call (it answered other than 200).
fn answered(r: &mut Record, status: StatusCode) {
    if let Some(call) = r.calls.last_mut() {
        call.status = status.as_u16();
    }
}

async fn register(
    State(tx): State<Shared>,
    headers: HeaderMap,
    Json(request): Json<RegisterAgentRequest>,
) -> Response {
    let authorization = bearer(&headers);
    let mut refusal = None;
    tx.send_modify(|r| {
        let agent_bearer = r.agent_token.as_ref().map(|t| format!("Bearer {t}"));
        let own_token = authorization.is_some() && authorization == agent_bearer;
        let host_taken =
            r.agent_token.is_some() && r.agent_host.as_deref() == Some(request.hostname.as_str());
        refusal = match &r.enrollment_token {
            _ if request.hostname.contains(' ') => Some(StatusCode::UNPROCESSABLE_ENTITY),
            // Open mode: anyone registers any host.
            None => None,
            Some(_) if own_token && r.agent_host.as_deref() == Some(&request.hostname) => None,
            Some(_) if own_token => Some(StatusCode::FORBIDDEN),
            Some(token) if authorization.as_deref() != Some(&format!("Bearer {token}")) => {
                Some(StatusCode::UNAUTHORIZED)
            }
            Some(_) if host_taken && !r.enrollment_replaces => Some(StatusCode::CONFLICT),
            Some(_) => None,
        };
        r.calls.push(Call {
            kind: CallKind::Register,
            authorization: authorization.clone(),
            traceparent: text(&headers, "traceparent"),
            job_id: None,
            status: refusal.map_or(200, |s| s.as_u16()),
        });
    });
    match refusal {
        Some(StatusCode::UNAUTHORIZED) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid or expired enrollment token",
            );
        }
        Some(StatusCode::FORBIDDEN) => {
            return error(
                StatusCode::FORBIDDEN,
                "this agent token is for another host",
            );
        }
        Some(StatusCode::CONFLICT) => {
            return error(StatusCode::CONFLICT, "host already has an agent");
        }
        Some(status) => return error(status, "invalid host name"),
        None => {}
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
    let mut token = String::new();
    tx.send_modify(|r| {
        r.issued += 1;
        token = format!("agent-secret-{}", r.issued);
        r.agent_token = Some(token.clone());
        r.agent_host = Some(request.hostname.clone());
        r.registrations.push(request);
        r.known_agent = Some(id);
    });
    Json(RegisteredAgent {
        agent,
        token,
        warning: None,
    })
    .into_response()
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
    headers: HeaderMap,
    Json(request): Json<HeartbeatRequest>,
) -> Response {
    if let Some(refused) = refuse_stale_token(&tx, CallKind::Heartbeat, &headers, None) {
        return refused;
    }
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
            answered(r, StatusCode::NOT_FOUND);
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
            secrets: job
                .as_ref()
                .and_then(|job| r.secrets.get(&job.id).cloned())
                .unwrap_or_default(),
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
    headers: HeaderMap,
    Json(request): Json<AppendLogsRequest>,
) -> Response {
    if let Some(refused) = refuse_stale_token(&tx, CallKind::Logs, &headers, Some(&job_id)) {
        tx.send_modify(|r| {
            r.log_attempts.push(LogAttempt {
                job_id: job_id.clone(),
                status: 401,
                lines: request.lines.clone(),
            })
        });
        return refused;
    }
    let mut answer = StatusCode::OK;
    let mut stored = AppendLogsResponse {
        accepted: 0,
        duplicates: 0,
        dropped: 0,
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
            answered(r, answer);
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
    headers: HeaderMap,
    Json(request): Json<UpdateJobStatusRequest>,
) -> Response {
    tx.send_modify(|r| {
        if std::mem::take(&mut r.revoke_on_report) {
            r.agent_token = None;
        }
    });
    // A refused report is in `calls` only: `reports` are the ones that got in.
    if let Some(refused) = refuse_stale_token(&tx, CallKind::Status, &headers, Some(&job_id)) {
        return refused;
    }
    let status = request.status;
    let mut stale = false;
    tx.send_modify(|r| {
        // Like the controller: a lease, when given, must be the current one.
        stale = request.lease.is_some() && r.leases.get(&job_id) != request.lease.as_ref();
        if stale {
            answered(r, StatusCode::CONFLICT);
        }
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
