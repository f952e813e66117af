//! The JSON types of DeployBot's HTTP API.
//!
//! Architecture invariant: this crate is the only place the wire format is
//! defined. The server, the agent and the CLI all (de)serialize these types;
//! none of them declares a request or response shape of its own. The types
//! know nothing about storage or HTTP frameworks.
//!
//! Compatibility: the seed's field names and shapes are a public contract.
//! New fields may be added; existing ones are never renamed or removed.

#![forbid(unsafe_code)]

mod agent;
mod apps;
mod auth;
mod error;
mod job;
mod logs;
pub mod names;
pub mod signature;
mod webhook;

pub use agent::{
    Agent, AgentStatus, Capabilities, ForgottenHost, HeartbeatRequest, HeartbeatResponse, HostInfo,
    HostsResponse, RegisterAgentRequest, RegisteredAgent,
};
pub use apps::{AppInfo, AppsResponse, ExplainResponse, ExplainSkipped, ExplainTarget};
pub use auth::{
    AuditEntry, AuditResponse, CreateTokenRequest, CreatedToken, TokenInfo, TokenRole,
    TokensResponse,
};
pub use error::{ErrorBody, ErrorDetail};
pub use job::{
    CreateJobRequest, DeploySpec, Job, JobResponse, JobSource, JobStatus, ParseStatusError,
    UpdateJobStatusRequest, UpdateJobStatusResponse,
};
pub use logs::{
    AppendLogsRequest, AppendLogsResponse, JobLogsResponse, LogEntry, LogLine, LogStream,
    StatusEvent,
};
pub use webhook::{Delivery, DeliveryVerdict, WebhookResponse};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Answer of `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` when the database answered, `unavailable` otherwise.
    pub status: String,
    pub database: String,
    pub version: String,
    /// Seconds since the controller started.
    #[serde(default)]
    pub uptime_secs: u64,
}

/// Answer of `GET /ready`: whether this controller can serve (for a load
/// balancer or an orchestrator's readiness probe).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready`, or `not_ready` (with status 503).
    pub status: String,
    /// `ok`, or `unavailable`.
    pub database: String,
    /// The database's schema is migrated (it is, once the controller has
    /// started: it migrates before it listens).
    pub migrations: String,
    /// Apps in the loaded apps.yaml.
    pub apps: usize,
}

/// Answer of `GET /v1/status`: one screen about the controller.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    pub version: String,
    pub uptime_secs: u64,
    /// `ok` or `unavailable`.
    pub database: String,
    /// `sqlite` or `postgres`.
    pub database_kind: String,
    pub apps: usize,
    pub agents_online: usize,
    pub agents_total: usize,
    /// Pending jobs (counted up to 1,000).
    pub jobs_pending: usize,
    pub jobs_running: usize,
    /// The newest failed or lost jobs (up to 5).
    pub recent_failures: Vec<Job>,
}

/// Environment variables the agent sets for a deploy command: the job's
/// fields reach the command only this way, never on its command line.
pub mod job_env {
    pub const JOB_ID: &str = "DEPLOYBOT_JOB_ID";
    pub const APP: &str = "DEPLOYBOT_APP";
    pub const REPO: &str = "DEPLOYBOT_REPO";
    /// The full ref: `refs/heads/main`, `refs/tags/v1.2.0`.
    pub const REF: &str = "DEPLOYBOT_REF";
    /// Its short name: `main`, `v1.2.0`.
    pub const REF_NAME: &str = "DEPLOYBOT_REF_NAME";
    /// The commit; not set at all for a manual deploy given only a ref.
    pub const SHA: &str = "DEPLOYBOT_SHA";
    pub const HOST: &str = "DEPLOYBOT_HOST";
    pub const ATTEMPT: &str = "DEPLOYBOT_ATTEMPT";
}

/// Timestamps travel as RFC 3339 strings (`2026-01-02T03:04:05.678Z`).
pub type Timestamp = time::OffsetDateTime;
