use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// Where a job is in its life.
///
/// `pending → running → success | failed | cancelled | lost`, and
/// `pending → cancelled | superseded`. The last five are final: a job in a
/// final state never changes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for the host's agent.
    Pending,
    /// Handed to an agent, which is running the deployment.
    Running,
    /// The deploy command exited 0.
    Success,
    /// The deploy command failed (non-zero exit, could not start, timed out).
    Failed,
    /// Cancelled by a person before or while it ran.
    Cancelled,
    /// Never ran: a newer job for the same app and host replaced it while it was pending.
    Superseded,
    /// Its agent went silent while running it; the outcome is unknown.
    Lost,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Success,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Superseded,
        JobStatus::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Superseded => "superseded",
            JobStatus::Lost => "lost",
        }
    }

    /// A final job never changes state again.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Pending | JobStatus::Running)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseStatusError(pub String);

impl fmt::Display for ParseStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown job status {:?}", self.0)
    }
}

impl std::error::Error for ParseStatusError {}

impl FromStr for JobStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError(s.to_owned()))
    }
}

/// What created a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobSource {
    /// A GitHub push delivered to `/v1/webhooks/github`.
    Webhook,
    /// `POST /v1/jobs` (the CLI's `deploy`).
    Manual,
    /// `POST /v1/jobs/{id}/retry`: a new attempt of a finished job.
    Retry,
}

impl JobSource {
    pub fn as_str(self) -> &'static str {
        match self {
            JobSource::Webhook => "webhook",
            JobSource::Manual => "manual",
            JobSource::Retry => "retry",
        }
    }
}

impl FromStr for JobSource {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "webhook" => Ok(JobSource::Webhook),
            "manual" => Ok(JobSource::Manual),
            "retry" => Ok(JobSource::Retry),
            other => Err(ParseStatusError(other.to_owned())),
        }
    }
}

/// How an agent runs a job: taken from the app's `deploy` section in apps.yaml
/// when the job is created, so a later config change does not alter a queued job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeploySpec {
    /// The program and its arguments (argv, never a shell string).
    pub command: Vec<String>,
    /// Working directory; the agent's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long the command may run before the agent kills it.
    pub timeout_secs: u64,
}

/// One deployment of one ref to one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    /// `owner/name` on GitHub.
    pub repo: String,
    /// The git ref, e.g. `refs/heads/main`, `main` or `v1.2.0`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub host: String,
    pub status: JobStatus,
    /// Free-form JSON object given by the creator (webhook: pusher, commit message).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
    /// Id of the agent the job was handed to.
    pub assigned_agent: Option<String>,
    /// Why the job failed, was cancelled or superseded.
    pub error: Option<String>,
    /// The apps.yaml app this job deploys.
    pub app: String,
    /// The commit to deploy, when known.
    pub sha: Option<String>,
    /// Exit code of the deploy command, once it finished.
    pub exit_code: Option<i32>,
    /// 1 for the first run; retries count up.
    pub attempt: u32,
    pub source: JobSource,
    /// The webhook delivery that created the job.
    pub delivery_id: Option<String>,
    /// The job that replaced this one, when `superseded`.
    pub superseded_by: Option<String>,
    /// How to run it.
    pub deploy: DeploySpec,
    /// The lease of the agent running the job: set when the job is handed
    /// out, sent back by the agent with every log upload and report. A write
    /// with another lease is refused (409).
    #[serde(default)]
    pub lease: Option<i64>,
    /// Someone asked to cancel this running job; its agent has been told.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Why a pending job has not started, when it is for want of an agent:
    /// none has registered for its host, or the host's agent is silent.
    /// Absent otherwise (and for other statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// For a running job: seconds since its agent was last heard from, once
    /// a heartbeat is overdue (the agent may be dead; the job becomes `lost`
    /// at the lease timeout). Absent while the agent is heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_silent_secs: Option<u64>,
    /// The job this one retries.
    #[serde(default)]
    pub retry_of: Option<String>,
    /// W3C trace context (`traceparent`) of the job's creation (a span of
    /// the webhook, `POST /v1/jobs` or retry request that created it), when
    /// the controller is built with OpenTelemetry and exports traces: the
    /// agent sends it as the `traceparent` header of the job's log uploads
    /// and status reports, so one trace shows the whole deploy. Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Body of `POST /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// `owner/name`.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")]
    pub repo: String,
    /// A branch (`main`), a full ref (`refs/tags/v1.2`).
    #[serde(rename = "ref")]
    #[schema(pattern = "^[^\\x00-\\x20\\x7f-\\x9f~^:?*\\[\\\\]{1,255}$")]
    pub git_ref: String,
    #[schema(
        pattern = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*$",
        max_length = 253
    )]
    pub host: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Pin the commit; otherwise the agent deploys whatever the ref points at.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{7,64}$")]
    pub sha: Option<String>,
    /// The app to deploy, needed only when several apps pair this repo with this host.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub app: Option<String>,
}

/// Answer of `POST /v1/jobs` and `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobResponse {
    pub job: Job,
    /// On creation: `false` when an identical pending or running job already
    /// existed and is returned instead. Absent when reading a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// Body of `PUT /v1/jobs/{id}/status`, sent by the agent running the job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateJobStatusRequest {
    /// `running` (acknowledgement), `success`, `failed` or `cancelled`.
    #[schema(schema_with = reported_status)]
    pub status: JobStatus,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The reporting agent. When given, it must be the agent the job is assigned to.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The job's lease, as handed out. When given, it must be the current one.
    #[serde(default)]
    pub lease: Option<i64>,
}

/// The statuses an agent may report: [`JobStatus`] but `queued` and `lost`.
fn reported_status() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["running", "success", "failed", "cancelled"]))
        .build()
}

/// Answer of `PUT /v1/jobs/{id}/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpdateJobStatusResponse {
    pub job_id: String,
    pub status: JobStatus,
    /// `false` when the job already had this status (a repeated report).
    pub updated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_name() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn only_pending_and_running_are_not_final() {
        let open: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .collect();
        assert_eq!(open, [JobStatus::Pending, JobStatus::Running]);
    }
}
