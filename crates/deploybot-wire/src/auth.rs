//! Credentials and the audit trail: tokens for people, CI and agents.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Timestamp;

/// What a token may do. Each role includes the ones before it, except
/// `enroll`, which may only register agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// GET endpoints, logs, the live stream.
    Read,
    /// `read`, plus create, cancel and retry jobs (optionally of some apps only).
    Deploy,
    /// Everything: agents, tokens, the audit log.
    Admin,
    /// An enrollment token: `POST /v1/agents/register` and nothing else.
    Enroll,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Read => "read",
            TokenRole::Deploy => "deploy",
            TokenRole::Admin => "admin",
            TokenRole::Enroll => "enroll",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            TokenRole::Read,
            TokenRole::Deploy,
            TokenRole::Admin,
            TokenRole::Enroll,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Who or what the token is for, e.g. `ci-web` (1-64 printable characters).
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    pub role: TokenRole,
    /// `deploy` only: the apps it may deploy, cancel and retry. Absent: all.
    #[serde(default)]
    pub apps: Option<Vec<String>>,
    /// Seconds until the token stops working (at most ten years). Absent: never.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub expires_in: Option<u64>,
    /// `enroll` only: the token works for one registration.
    #[serde(default)]
    pub single_use: bool,
    /// `enroll` only: the token registers this host only, and may do so
    /// while the host has an agent (which it replaces). Without it, an
    /// enrollment token registers only hosts that have no agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*$",
        max_length = 253
    )]
    pub hostname: Option<String>,
}

/// A token as listed: everything but the secret, which is never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// Public id, safe to log: `tok_` and 12 hex digits.
    pub id: String,
    pub name: String,
    pub role: TokenRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
    pub single_use: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// When a single-use enrollment token was used.
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub used_at: Option<Timestamp>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    /// An enrollment token made for one host: the host it may register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// Answer of `POST /v1/tokens`: the token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The secret: `dbt_…`. Store it now; the controller keeps only its hash.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Answer of `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokensResponse {
    pub tokens: Vec<TokenInfo>,
    /// When the page is full: pass it as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// One entry of the audit log: who did what to what, from where, and how
/// it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Increasing; page with `before`.
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// `token:tok_…`, `agent:<id>`, `webhook:<delivery id>`, `admin:config`
    /// (the configured admin token) or `controller`.
    pub actor: String,
    /// `deploy`, `cancel`, `retry`, `register`, `revoke_agent`,
    /// `create_token`, `revoke_token`, `reload_config`.
    pub action: String,
    /// What it was done to: a job, agent, token or file.
    pub target: String,
    /// The caller's address, when it came over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `ok`, or why it failed.
    pub result: String,
}

/// Answer of `GET /v1/audit`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditResponse {
    pub entries: Vec<AuditEntry>,
}
