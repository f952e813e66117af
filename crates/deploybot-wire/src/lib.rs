//! The JSON types of DeployBot's HTTP API.
//!
//! Architecture invariant: this crate is the only place the wire format is
//! defined. The server, the agent and the CLI all (de)serialize these types;
//! none of them declares a request or response shape of its own. The types
//! know nothing about storage or HTTP frameworks.
//!
//! Compatibility: the seed's field names and shapes are a public contract.
//! New fields may be added; existing ones are never renamed or removed.

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
    Agent, AgentStatus, HeartbeatRequest, HeartbeatResponse, HostInfo, HostsResponse,
    RegisterAgentRequest, RegisteredAgent,
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
}

/// Environment variables the agent sets for a deploy command: the job's
/// fields reach the command only this way, never on its command line.
pub mod job_env {
    pub const JOB_ID: &str = "DEPLOYBOT_JOB_ID";
    pub const APP: &str = "DEPLOYBOT_APP";
    pub const REPO: &str = "DEPLOYBOT_REPO";
    pub const REF: &str = "DEPLOYBOT_REF";
    pub const SHA: &str = "DEPLOYBOT_SHA";
    pub const HOST: &str = "DEPLOYBOT_HOST";
    pub const ATTEMPT: &str = "DEPLOYBOT_ATTEMPT";
}

/// Timestamps travel as RFC 3339 strings (`2026-01-02T03:04:05.678Z`).
pub type Timestamp = time::OffsetDateTime;
