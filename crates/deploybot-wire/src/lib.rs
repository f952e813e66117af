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
mod error;
mod job;
pub mod names;
pub mod signature;
mod webhook;

pub use agent::{
    Agent, AgentStatus, HeartbeatRequest, HeartbeatResponse, HostInfo, HostsResponse,
    RegisterAgentRequest,
};
pub use error::{ErrorBody, ErrorDetail};
pub use job::{
    CreateJobRequest, DeploySpec, Job, JobResponse, JobSource, JobStatus, ParseStatusError,
    UpdateJobStatusRequest, UpdateJobStatusResponse,
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

/// Timestamps travel as RFC 3339 strings (`2026-01-02T03:04:05.678Z`).
pub type Timestamp = time::OffsetDateTime;
