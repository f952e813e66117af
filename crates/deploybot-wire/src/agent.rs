use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::{Job, Timestamp};

/// An agent's state. Agents report `online`, `idle` or `busy` in heartbeats;
/// the controller shows `offline` for an agent silent for longer than the
/// lease timeout, whatever it reported last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    #[default]
    Online,
    Idle,
    Busy,
    Offline,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Idle => "idle",
            AgentStatus::Busy => "busy",
            AgentStatus::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AgentStatus::Online,
            AgentStatus::Idle,
            AgentStatus::Busy,
            AgentStatus::Offline,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

/// What an agent says it can do, kept as it sent it: a list of names
/// (`["docker", "linux"]`), or facts by name (`{"platform": "linux",
/// "python_version": "3.11"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Capabilities {
    Names(Vec<String>),
    #[schema(value_type = Object)]
    Facts(BTreeMap<String, serde_json::Value>),
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::Names(Vec::new())
    }
}

/// At most this many capabilities, each name (and fact) this long.
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_CAPABILITY_LEN: usize = 128;

impl Capabilities {
    /// Why these cannot be kept, if they cannot: too many, names empty or
    /// too long or with control characters, facts that are not a string,
    /// number or boolean of at most [`MAX_CAPABILITY_LEN`] characters.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= MAX_CAPABILITY_LEN
                && !name.chars().any(char::is_control)
        };
        let ok = match self {
            Capabilities::Names(names) => {
                names.len() <= MAX_CAPABILITIES && names.iter().all(|name| name_ok(name))
            }
            Capabilities::Facts(facts) => {
                facts.len() <= MAX_CAPABILITIES
                    && facts.iter().all(|(name, value)| {
                        name_ok(name)
                            && match value {
                                serde_json::Value::String(text) => {
                                    text.len() <= MAX_CAPABILITY_LEN
                                        && !text.chars().any(char::is_control)
                                }
                                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => true,
                                _ => false,
                            }
                    })
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "capabilities must be a list of at most {MAX_CAPABILITIES} names, or an object of at most {MAX_CAPABILITIES} names to strings, numbers or booleans; names and strings 1-{MAX_CAPABILITY_LEN} printable characters"
            ))
        }
    }

    /// One line for people: `docker, linux` or `platform=linux, python=3.11`.
    pub fn describe(&self) -> String {
        match self {
            Capabilities::Names(names) => names.join(", "),
            Capabilities::Facts(facts) => facts
                .iter()
                .map(|(name, value)| match value {
                    serde_json::Value::String(text) => format!("{name}={text}"),
                    other => format!("{name}={other}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

impl From<Vec<String>> for Capabilities {
    fn from(names: Vec<String>) -> Self {
        Capabilities::Names(names)
    }
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    pub capabilities: Capabilities,
    pub status: AgentStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_heartbeat: Option<Timestamp>,
}

/// Answer of `DELETE /v1/hosts/{hostname}`: the host is forgotten, with
/// the agent record that kept it listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ForgottenHost {
    pub hostname: String,
    pub agent_id: String,
}

/// Answer of `POST /v1/agents/register`: the agent, and its new token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisteredAgent {
    #[serde(flatten)]
    pub agent: Agent,
    /// The agent's credential for its heartbeats, log uploads and status
    /// reports (`Authorization: Bearer …`). Shown only here; every
    /// registration replaces the previous one.
    pub token: String,
    /// Something the agent's operator should know: no app of apps.yaml
    /// deploys to this hostname, so it will get no jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Body of `POST /v1/agents/register`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgentRequest {
    #[schema(
        pattern = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*$",
        max_length = 253
    )]
    pub hostname: String,
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// Body of `POST /v1/agents/{id}/heartbeat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[serde(default)]
    pub status: AgentStatus,
    /// A draining agent (shutting down) keeps its lease alive but gets no new job.
    #[serde(default)]
    pub draining: bool,
    /// The ids of the jobs this agent is running now. When given, a job the
    /// controller leased to this agent earlier that is not listed becomes
    /// `lost` and its host is free again: the answer that handed it out
    /// never arrived (a controller died or the connection broke), or the
    /// agent restarted. Leave it out to skip the check (simple clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_jobs: Option<Vec<String>>,
}

/// Answer of a heartbeat: at most one job to run, and the running jobs to cancel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    pub acknowledged: bool,
    pub job: Option<Job>,
    /// Ids of this agent's running jobs that were cancelled: stop them and
    /// report `cancelled`.
    #[serde(default)]
    pub cancel: Vec<String>,
    /// The handed-out job's secret variables (apps.yaml `secret_env`), as
    /// the controller has them now. Only here: never stored with the job,
    /// never in any other answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// One host: known from apps.yaml, from an agent, or both.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostInfo {
    pub hostname: String,
    /// The agent registered for this host, if any.
    pub agent_id: Option<String>,
    /// `offline` also when no agent ever registered.
    pub agent_status: AgentStatus,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<Timestamp>,
    /// Seconds since the agent was last heard from, once a heartbeat is
    /// overdue and before it counts as offline: it may have died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_secs: Option<u64>,
    /// The job running on the host now.
    pub current_job: Option<Job>,
    /// The most recent job that finished on the host.
    pub last_job: Option<Job>,
    /// Jobs waiting for this host.
    pub pending_jobs: u64,
    /// apps.yaml apps that deploy to this host.
    pub apps: Vec<String>,
}

/// Answer of `GET /v1/hosts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostsResponse {
    pub hosts: Vec<HostInfo>,
    /// When the page is full: pass it as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}
