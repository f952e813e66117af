//! The durable job queue.
//!
//! [`Store`] is the one interface the controller uses to read and change its
//! state: agents, jobs and webhook deliveries. [`open`] picks the backend from
//! a database URL: SQLite (`sqlite://path`), the embedded default, or
//! PostgreSQL (`postgres://…`), which several controllers can share.
//!
//! Architecture invariants:
//! - Only this crate speaks SQL. Callers see [`Store`] and wire types.
//! - Every rule about the queue that can be expressed in the schema is (one
//!   running job per host: a partial unique index), so it holds whatever the
//!   code above does.
//! - A write method returns only after its transaction is durably committed.
//! - Each backend owns its migrations; a shipped migration is never edited
//!   (the runner refuses to start when an applied migration's checksum changed).

#![forbid(unsafe_code)]

mod batches;
mod holder;
mod output_cap;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use deploybot_wire::{
    Agent, AgentStatus, AuditEntry, DeliveryVerdict, DeploySpec, Job, JobSource, JobStatus,
    LogEntry, LogLine, Timestamp, TokenInfo, TokenRole,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The named record does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The change conflicts with the record's current state; nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not change this record (e.g. a job leased to another
    /// agent); nothing changed.
    #[error("{0}")]
    NotYours(String),
    /// The database failed. The text is for logs, never for clients.
    #[error("database error: {0}")]
    Database(String),
    /// The host already has an agent, and the registration may not take
    /// it over; nothing changed.
    #[error("host {hostname} already has an agent ({agent_id})")]
    HostTaken { hostname: String, agent_id: String },
    /// The store is shutting down or its writer is gone.
    #[error("the store is closed")]
    Closed,
    /// The database URL or schema cannot be used.
    #[error("{0}")]
    Setup(String),
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub app: String,
    pub repo: String,
    pub git_ref: String,
    pub sha: Option<String>,
    pub host: String,
    pub metadata: serde_json::Value,
    pub source: JobSource,
    pub delivery_id: Option<String>,
    pub deploy: DeploySpec,
    /// 1 for a first run.
    pub attempt: u32,
    /// The job this one retries.
    pub retry_of: Option<String>,
    /// W3C `traceparent` of the request that created the job, if traced.
    pub traceparent: Option<String>,
}

impl NewJob {
    /// The job as it is once queued at `created_at`: pending, not yet
    /// anybody's.
    pub(crate) fn pending(&self, created_at: Timestamp) -> Job {
        Job {
            id: self.id.clone(),
            repo: self.repo.clone(),
            git_ref: self.git_ref.clone(),
            host: self.host.clone(),
            status: JobStatus::Pending,
            metadata: self.metadata.clone(),
            created_at,
            started_at: None,
            completed_at: None,
            assigned_agent: None,
            error: None,
            app: self.app.clone(),
            sha: self.sha.clone(),
            exit_code: None,
            attempt: self.attempt,
            source: self.source,
            delivery_id: self.delivery_id.clone(),
            superseded_by: None,
            deploy: self.deploy.clone(),
            lease: None,
            cancel_requested: false,
            pending_reason: None,
            agent_silent_secs: None,
            retry_of: self.retry_of.clone(),
            traceparent: self.traceparent.clone(),
        }
    }
}

/// The result of enqueueing: the new job, or the identical open one.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub job: Job,
    /// `false` when an open job with the same repo, ref, sha and host existed.
    pub created: bool,
    /// Jobs this one superseded.
    pub superseded: Vec<String>,
}

/// A webhook delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub delivery_id: String,
    pub event: String,
    pub repo: Option<String>,
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub verdict: DeliveryVerdict,
    pub message: String,
    /// The sender's address, for the audit log.
    pub address: Option<String>,
}

/// What recording a delivery did.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    /// The jobs of this delivery (of its first reception, for a redelivery).
    pub job_ids: Vec<String>,
    pub verdict: DeliveryVerdict,
    pub message: String,
    /// `true` when the delivery id was already recorded: nothing was created.
    pub duplicate: bool,
    /// Hosts that got a new pending job.
    pub hosts_with_new_jobs: Vec<String>,
}

/// Filters of `GET /v1/jobs`; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub host: Option<String>,
    pub repo: Option<String>,
    pub app: Option<String>,
    /// Only jobs created before this one (the next page).
    pub before: Option<String>,
    pub limit: u32,
}

/// An agent's report on its job.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub status: JobStatus,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    /// The reporting agent, when it said who it is.
    pub agent_id: Option<String>,
    /// The lease the reporter holds, when it named one.
    pub lease: Option<i64>,
}

/// A registration, and the jobs its previous session held (now `lost`).
#[derive(Debug, Clone)]
pub struct Registered {
    pub agent: Agent,
    pub lost: Vec<Job>,
    /// The host had an agent (with a token) until now.
    pub replaced: bool,
}

/// What appending log lines stored.
#[derive(Debug, Clone, Default)]
pub struct AppendedLogs {
    /// The lines stored now, with their ids.
    pub entries: Vec<LogEntry>,
    /// Lines already stored by an earlier upload.
    pub duplicates: u64,
    /// Lines not stored: the job's output reached its cap.
    pub dropped: u64,
}

/// Which log lines a reader wants; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub job_id: Option<String>,
    pub host: Option<String>,
    pub app: Option<String>,
}

/// What a report did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    /// The job as it is now.
    Updated(Box<Job>),
    /// The job already had this status (a repeated report).
    Unchanged(JobStatus),
}

/// An agent's word on which jobs it runs, to free the jobs it does not.
#[derive(Debug, Clone)]
pub struct HeldJobs {
    pub agent_id: String,
    pub host: String,
    /// The jobs the agent says it runs.
    pub running: Vec<String>,
    /// Only jobs claimed before this instant are judged: the agent spoke
    /// after their hand-out, so it would list them if it had them.
    pub claimed_before: Timestamp,
    /// The `error` of each job found missing.
    pub reason: String,
}

/// What a heartbeat's claim found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// This job is now running on the agent.
    Job(Box<Job>),
    /// The host has pending jobs but one is already running.
    HostBusy,
    /// Nothing is pending for the host.
    NothingPending,
}

/// A heartbeat to save: when the agent was last seen and what it said.
#[derive(Debug, Clone)]
pub struct Beat {
    pub agent_id: String,
    pub status: AgentStatus,
    pub at: Timestamp,
}

/// The jobs of one host, for `GET /v1/hosts`.
#[derive(Debug, Clone)]
pub struct HostJobs {
    pub hostname: String,
    pub current: Option<Job>,
    pub last: Option<Job>,
    pub pending: u64,
}

/// An API or enrollment token to store. The secret itself never reaches
/// the store: only its hash.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub name: String,
    pub role: TokenRole,
    pub apps: Option<Vec<String>>,
    pub single_use: bool,
    pub expires_at: Option<Timestamp>,
    /// An enrollment token made for this host only.
    pub hostname: Option<String>,
}

/// The agent an agent token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCredential {
    pub agent_id: String,
    pub hostname: String,
}

/// A registration to record.
#[derive(Debug, Clone)]
pub struct NewRegistration {
    /// The id a host gets the first time it registers.
    pub new_id: String,
    pub hostname: String,
    pub capabilities: deploybot_wire::Capabilities,
    /// Hash of the agent's new token; replaces the previous one.
    pub token_hash: String,
    /// A single-use enrollment token to mark used in the same transaction.
    pub use_enrollment_token: Option<String>,
    /// Whether this registration may take the host from an agent that has
    /// it now (the agent itself, or a token made for the host); otherwise a
    /// host with an agent is [`StoreError::HostTaken`].
    pub may_replace: bool,
}

/// An audit log entry to record.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub address: Option<String>,
    pub result: String,
}

/// A change another controller instance sharing the database committed,
/// which this instance would otherwise not learn of (its own writes it
/// already knows). See [`Store::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// These hosts got new pending jobs.
    JobsPending { hosts: Vec<String> },
    /// The running job of `host` was asked to stop.
    CancelRequested { host: String },
    /// The running job of `host` ended: its next pending job may go out.
    HostFreed { host: String },
    /// The job's status changed (for live status events).
    JobChanged { job_id: String },
    /// An agent registered (new, or again with a new token): its previous
    /// token no longer works.
    AgentRegistered { agent_id: String, hostname: String },
    /// An agent was revoked: its token no longer works.
    AgentRevoked { agent_id: String },
    /// An API or enrollment token was revoked.
    TokenRevoked { token_id: String },
    /// Events may have been missed (the listener reconnected): rebuild
    /// whatever was derived from them from the database.
    Resync,
}

/// The controller's state. Implemented once per database engine.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Registers `hostname`, or refreshes its registration: one hostname, one
    /// agent id, kept across registrations. `new_id` is used for a new host.
    /// Jobs the agent's previous session was running become `lost`.
    async fn register_agent(&self, registration: NewRegistration)
    -> Result<Registered, StoreError>;

    /// The agent whose current token has this hash.
    async fn agent_by_token(
        &self,
        token_hash: String,
    ) -> Result<Option<AgentCredential>, StoreError>;

    /// Forgets the agent's token, so it must enroll again; its running jobs
    /// become `lost` and are returned.
    async fn revoke_agent(&self, agent_id: String) -> Result<Vec<Job>, StoreError>;

    /// Deletes the agent, so its host leaves the hosts list (when no app
    /// lists it either); its token stops working everywhere. Refused
    /// (`Conflict`) while it holds a running job.
    async fn forget_agent(&self, agent_id: String) -> Result<(), StoreError>;

    async fn create_token(&self, token: NewToken) -> Result<TokenInfo, StoreError>;

    /// Tokens in the order they were made, after the token `after`.
    async fn tokens(&self, after: Option<String>, limit: u32)
    -> Result<Vec<TokenInfo>, StoreError>;

    async fn token_by_hash(&self, hash: String) -> Result<Option<TokenInfo>, StoreError>;

    /// Revokes a token (again: no change). `NotFound` for an unknown id.
    async fn revoke_token(&self, id: String) -> Result<TokenInfo, StoreError>;

    /// Whether any unrevoked admin token exists (else the controller makes one).
    async fn any_admin_token(&self) -> Result<bool, StoreError>;

    async fn record_audit(&self, entry: NewAudit) -> Result<(), StoreError>;

    /// The audit log, newest first, before the entry id `before` if given.
    async fn audit(&self, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>, StoreError>;

    /// Every registered agent, status as last saved, by hostname.
    async fn agents(&self) -> Result<Vec<Agent>, StoreError>;

    /// Registered agents by hostname, after the host `after`.
    async fn agents_page(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Agent>, StoreError>;

    /// The agent with this id, if it is registered and not revoked (it
    /// has a current token).
    async fn agent(&self, agent_id: String) -> Result<Option<Agent>, StoreError>;

    /// Saves last-seen times. Heartbeats arrive far more often than they are
    /// saved; see the server's presence tracker. A time never goes back, and
    /// a status is saved only with a time at least as new as the saved one
    /// (several instances save the beats each of them saw). Revoked agents
    /// are left as they are.
    async fn save_heartbeats(&self, beats: Vec<Beat>) -> Result<(), StoreError>;

    /// Hands the oldest pending job of `host` to `agent_id`, unless the host
    /// already runs one. Atomic: concurrent claims never get the same job.
    async fn claim_job(&self, agent_id: String, host: String) -> Result<Claim, StoreError>;

    /// Enqueues a job, or returns the open identical one. Supersedes older
    /// pending jobs of the same app and host.
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError>;

    /// Records a webhook delivery with its jobs in one transaction; a
    /// delivery id seen before creates nothing and returns the first outcome.
    async fn ingest_delivery(
        &self,
        delivery: NewDelivery,
        jobs: Vec<NewJob>,
    ) -> Result<DeliveryOutcome, StoreError>;

    async fn job(&self, id: String) -> Result<Option<Job>, StoreError>;

    /// Jobs, newest first.
    async fn jobs(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError>;

    /// Applies an agent's report. [`StoreError::Conflict`] for a transition the
    /// job's state does not allow or a job assigned to another agent.
    async fn report_status(
        &self,
        job_id: String,
        report: StatusReport,
    ) -> Result<ReportOutcome, StoreError>;

    /// Running, last finished and pending count for each host.
    async fn host_jobs(&self, hosts: Vec<String>) -> Result<Vec<HostJobs>, StoreError>;

    /// Recent webhook deliveries, newest first, received before the
    /// delivery `before` if given.
    async fn deliveries(
        &self,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<deploybot_wire::Delivery>, StoreError>;

    /// Hosts that have at least one pending job (to rebuild dispatch hints at start).
    async fn hosts_with_pending_jobs(&self) -> Result<Vec<String>, StoreError>;

    /// Cancels a pending job, or flags a running one for its agent to stop.
    /// A finished job is a [`StoreError::Conflict`].
    async fn cancel_job(&self, job_id: String) -> Result<Job, StoreError>;

    /// Queues attempt n+1 of a finished job as `new_id`, in the trace
    /// `traceparent` (the retry request's) if given.
    async fn retry_job(
        &self,
        job_id: String,
        new_id: String,
        traceparent: Option<String>,
    ) -> Result<Enqueued, StoreError>;

    /// The running job of `held.host`, if it is leased to `held.agent_id`
    /// (claimed before `held.claimed_before`) and not in `held.running`,
    /// becomes `lost` with `held.reason`; returns it. A heartbeat checks this
    /// so a job whose hand-out answer was lost frees its host at once.
    async fn lose_unheld_jobs(&self, held: HeldJobs) -> Result<Vec<Job>, StoreError>;

    /// Running jobs of agents not heard from since `silent_since` become
    /// `lost` with `reason`; returns them.
    async fn expire_leases(
        &self,
        silent_since: Timestamp,
        reason: String,
    ) -> Result<Vec<Job>, StoreError>;

    /// The running job of `host`, if someone asked to cancel it.
    async fn cancel_requests(&self, host: String) -> Result<Vec<String>, StoreError>;

    /// Hosts whose running job has a cancel request (to rebuild hints at start).
    async fn hosts_with_cancel_requests(&self) -> Result<Vec<String>, StoreError>;

    /// Appends a running job's output; the writer must hold the job's lease
    /// (when it names one) and be its agent (when it names itself). Once
    /// the job's stored output reaches `max_bytes`, a marker line says so
    /// and later lines are dropped.
    async fn append_logs(
        &self,
        job_id: String,
        agent_id: Option<String>,
        lease: Option<i64>,
        lines: Vec<LogLine>,
        max_bytes: u64,
    ) -> Result<AppendedLogs, StoreError>;

    /// Every log line committed from now on, in commit order (so in id
    /// order), each once: this instance's appends in the batches they were
    /// appended in, and (PostgreSQL) other instances' lines as read after
    /// they announced them. A receiver that lags catches up with
    /// [`logs_since`](Store::logs_since).
    fn log_feed(&self) -> tokio::sync::broadcast::Receiver<Arc<[LogEntry]>>;

    /// Changes committed by other instances sharing this database, from the
    /// moment of the call on. A receiver that lags must treat it as
    /// [`StoreEvent::Resync`]. A backend only one instance can use (SQLite)
    /// never sends anything.
    fn events(&self) -> tokio::sync::broadcast::Receiver<StoreEvent>;

    /// Whether this instance runs the periodic work that needs only one
    /// runner (expiring leases, pruning logs) now. Call it before each
    /// round: leadership moves to another instance when this one goes away.
    /// It is an economy, not a guarantee: that work is safe to run twice.
    /// SQLite: always `true` (one instance).
    async fn try_lead(&self) -> Result<bool, StoreError>;

    /// A job's lines after line `after`.
    async fn job_logs(
        &self,
        job_id: String,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// Lines stored after entry `after_id` matching `filter`, oldest first.
    async fn logs_since(
        &self,
        after_id: i64,
        filter: LogFilter,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// The id of the newest stored line (0 when none).
    async fn last_log_id(&self) -> Result<i64, StoreError>;

    /// Deletes the logs of finished jobs that are neither among the newest
    /// `keep_jobs` of their app nor finished after `keep_since`, in small
    /// writes so that other requests never wait long. Returns lines deleted.
    async fn prune_logs(&self, keep_jobs: u32, keep_since: Timestamp) -> Result<u64, StoreError>;

    /// Deletes old history past `keep` (jobs with their logs, deliveries,
    /// audit entries), in small writes so that other requests never wait
    /// long, and gives the space back (SQLite: an incremental vacuum). Never
    /// deletes a pending or running job, nor the newest job or the newest
    /// successful job of an app on a host (what is deployed there, and what
    /// a rollback returns to).
    async fn prune_history(&self, keep: HistoryRetention) -> Result<PrunedHistory, StoreError>;
}

/// What history [`Store::prune_history`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryRetention {
    /// Finished jobs among the newest this many of their app are kept…
    pub keep_jobs: u32,
    /// …and so are jobs finished (and deliveries received) since this time.
    pub keep_since: Timestamp,
    /// The newest this many deliveries are kept, however old.
    pub keep_deliveries: u32,
    /// Audit entries recorded since this time are kept…
    pub audit_since: Timestamp,
    /// …and the newest this many, however old.
    pub keep_audit: u32,
}

/// What [`Store::prune_history`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrunedHistory {
    pub jobs: u64,
    pub deliveries: u64,
    pub audit: u64,
}

/// Opens the store a URL names: `sqlite://path/to/file.db` (or `sqlite:path`),
/// or `postgres://user:password@host:port/database` (or `postgresql://…`).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::connect(url).await?));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            StoreError::Setup(format!(
                "unsupported database URL {:?}: expected sqlite://PATH or postgres://…",
                redact_url(url)
            ))
        })?;
    let store = SqliteStore::open(std::path::Path::new(path)).await?;
    Ok(Arc::new(store))
}

/// A URL with any password replaced, for messages: the one in
/// `user:password@` and a `password=` query parameter (PostgreSQL URLs accept
/// both).
pub fn redact_url(url: &str) -> String {
    // The userinfo ends at the last '@': a password may hold '?' or '/'.
    let redacted = match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    match redacted.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://deploy:s3cret@db:5432/deploybot"),
            "postgres://deploy:***@db:5432/deploybot"
        );
        assert_eq!(
            redact_url("postgresql://deploy@db/deploybot?password=s3cret&sslmode=require"),
            "postgresql://deploy@db/deploybot?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://deploy:p?a/s@s@db/deploybot"),
            "postgres://deploy:***@db/deploybot"
        );
        assert_eq!(
            redact_url("postgres://deploy@db/deploybot?password=a@b"),
            "postgres://deploy@db/deploybot?password=***"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/deploybot/deploybot.db"),
            "sqlite:///var/lib/deploybot/deploybot.db"
        );
    }
}
