//! The live apps.yaml as the API shows it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One app of the controller's current apps.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppInfo {
    pub name: String,
    pub repo: String,
    pub hosts: Vec<String>,
    pub deploy_on_push: bool,
    /// Branch patterns; absent: every branch; empty: none (an app that lists
    /// `tags` and omits `branches` shows `[]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<String>>,
    /// Tag patterns; empty: tag pushes never deploy.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The deploy command (argv).
    pub command: Vec<String>,
    /// Whether the app has its own webhook secret.
    pub own_webhook_secret: bool,
    /// The names of its secret variables (`deploy.secret_env`); never their
    /// values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
}

/// Answer of `GET /v1/apps`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppsResponse {
    pub apps: Vec<AppInfo>,
}

/// An app a push would deploy, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExplainTarget {
    pub app: String,
    pub hosts: Vec<String>,
    /// What pushes the app deploys, from its `branches`, `tags` and
    /// `deploy_on_push` (omitted keys included).
    #[serde(default)]
    pub push_rule: String,
}

/// An app of the pushed repository that a push would not deploy, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExplainSkipped {
    pub app: String,
    pub reason: String,
    /// What pushes the app deploys.
    #[serde(default)]
    pub push_rule: String,
}

/// Answer of `GET /v1/explain?repo=&ref=`: what a push would do, from the
/// controller's live config.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExplainResponse {
    pub repo: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub targets: Vec<ExplainTarget>,
    pub skipped: Vec<ExplainSkipped>,
    /// One sentence: what would be deployed, or why nothing would.
    pub message: String,
}
