//! `GET /v1/apps` and `GET /v1/explain`: the live apps.yaml, and what a push
//! would do with it.

use axum::Json;
use axum::extract::State;
use deploybot_wire::{
    AppInfo, AppsResponse, ErrorBody, ExplainResponse, ExplainSkipped, ExplainTarget, names,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::state::AppState;

/// The apps of the controller's current apps.yaml.
#[utoipa::path(
    get,
    path = "/v1/apps",
    operation_id = "listApps",
    tag = "apps",
    security(("bearer" = [])),
    responses(
        (status = 200, body = AppsResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<AppsResponse>, ApiError> {
    caller.require_read()?;
    let config = state.apps.get();
    let apps = config
        .apps()
        .iter()
        .map(|app| AppInfo {
            name: app.name.clone(),
            repo: app.repo.clone(),
            hosts: app.hosts.clone(),
            deploy_on_push: app.deploy_on_push,
            branches: app
                .branches
                .as_ref()
                .map(|patterns| patterns.iter().map(|p| p.as_str().to_owned()).collect()),
            tags: app.tags.iter().map(|p| p.as_str().to_owned()).collect(),
            command: app.deploy.command.clone(),
            own_webhook_secret: app.webhook_secret.is_some(),
            secret_env: app.secrets.keys().cloned().collect(),
        })
        .collect();
    Ok(Json(AppsResponse { apps }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExplainQuery {
    /// `owner/name`.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")]
    repo: String,
    /// A full ref (`refs/heads/main`, `refs/tags/v1.2`); a bare branch name
    /// means `refs/heads/<name>`.
    #[serde(rename = "ref")]
    #[param(
        rename = "ref",
        pattern = "^[^\\x00-\\x20\\x7f-\\x9f~^:?*\\[\\\\]{1,255}$"
    )]
    git_ref: String,
}

/// What a push of `ref` to `repo` would deploy, and why not, from the live
/// config (apps signed with their own webhook secret are included).
#[utoipa::path(
    get,
    path = "/v1/explain",
    operation_id = "explainPush",
    tag = "apps",
    params(ExplainQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ExplainResponse),
        (status = 422, description = "`repo` or `ref` is not a valid name", body = ErrorBody),
    )
)]
pub async fn explain(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ExplainQuery>,
) -> Result<Json<ExplainResponse>, ApiError> {
    caller.require_read()?;
    names::check_repo(&query.repo).map_err(ApiError::invalid)?;
    let git_ref = names::full_ref(&query.git_ref);
    names::check_ref(&git_ref).map_err(ApiError::invalid)?;
    let config = state.apps.get();
    let plan = config.plan_push(&query.repo, &git_ref);
    let message = if plan.targets.is_empty() {
        plan.no_match_reason(&query.repo, &git_ref)
    } else {
        let targets: Vec<String> = plan
            .targets
            .iter()
            .map(|app| format!("{} → {}", app.name, app.hosts.join(", ")))
            .collect();
        format!("a push to {git_ref} deploys {}", targets.join("; "))
    };
    Ok(Json(ExplainResponse {
        repo: query.repo,
        git_ref,
        targets: plan
            .targets
            .iter()
            .map(|app| ExplainTarget {
                app: app.name.clone(),
                hosts: app.hosts.clone(),
                push_rule: app.push_rule(),
            })
            .collect(),
        skipped: plan
            .skipped
            .into_iter()
            .map(|s| ExplainSkipped {
                push_rule: config
                    .app(&s.app)
                    .map(|a| a.push_rule())
                    .unwrap_or_default(),
                app: s.app,
                reason: s.reason,
            })
            .collect(),
        message,
    }))
}
