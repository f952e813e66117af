//! `/v1/tokens`: API and enrollment tokens (admin).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use deploybot_store::NewToken;
use deploybot_wire::{
    CreateTokenRequest, CreatedToken, ErrorBody, TokenInfo, TokenRole, TokensResponse, names,
};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::IntoParams;

use crate::auth::{self, Address, Admin, Caller};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::queue::Actor;
use crate::state::AppState;

const MAX_NAME_LEN: usize = 64;
const MAX_APPS: usize = 100;
/// Ten years: longer is "never", which is what leaving it out says.
const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 24 * 3600;

/// Create a token (admin). The secret is in this answer only.
///
/// Roles: `read`, `deploy` (optionally limited to `apps`), `admin`, and
/// `enroll` (registers agents; optionally `single_use`).
#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "createToken",
    tag = "tokens",
    request_body = CreateTokenRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, body = CreatedToken),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Address(address): Address,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = request.name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "name: 1 to {MAX_NAME_LEN} printable characters"
        )));
    }
    if let Some(apps) = &request.apps {
        if request.role != TokenRole::Deploy {
            return Err(ApiError::invalid(
                "apps: only a deploy token can be limited to some apps",
            ));
        }
        if apps.is_empty() || apps.len() > MAX_APPS {
            return Err(ApiError::invalid(format!(
                "apps: 1 to {MAX_APPS} app names (leave it out for every app)"
            )));
        }
        for app in apps {
            names::check_app_name(app).map_err(|err| ApiError::invalid(format!("apps: {err}")))?;
        }
    }
    if request.single_use && request.role != TokenRole::Enroll {
        return Err(ApiError::invalid(
            "single_use: only an enroll token can be single-use",
        ));
    }
    if let Some(hostname) = &request.hostname {
        if request.role != TokenRole::Enroll {
            return Err(ApiError::invalid(
                "hostname: only an enroll token can be made for one host",
            ));
        }
        names::check_hostname(hostname)
            .map_err(|err| ApiError::invalid(format!("hostname: {err}")))?;
    }
    let expires_at = match request.expires_in {
        None => None,
        Some(secs) if (1..=MAX_EXPIRES_IN_SECS).contains(&secs) => {
            Some(OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64))
        }
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "expires_in: 1 to {MAX_EXPIRES_IN_SECS} seconds (leave it out for never)"
            )));
        }
    };
    let prefix = if request.role == TokenRole::Enroll {
        auth::ENROLL_PREFIX
    } else {
        auth::API_PREFIX
    };
    let token = auth::new_token(prefix);
    let by = Actor::new(&caller, address);
    let info = state
        .queue
        .create_token(
            NewToken {
                id: auth::new_token_id(),
                hash: auth::hash_token(&token),
                name: name.to_owned(),
                role: request.role,
                apps: request.apps,
                single_use: request.single_use,
                expires_at,
                hostname: request.hostname,
            },
            &by,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// Every token, revoked and expired ones included (admin). Secrets are never shown.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "listTokens",
    tag = "tokens",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TokensResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TokensResponse>, ApiError> {
    caller.require_admin()?;
    let limit = super::limit(query.limit, 100, 1000)?;
    let tokens = state.queue.store().tokens(query.after, limit).await?;
    let next_after = (tokens.len() == limit as usize)
        .then(|| tokens.last().map(|t| t.id.clone()))
        .flatten();
    Ok(Json(TokensResponse { tokens, next_after }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only tokens made after this one (a token id, as `next_after` says).
    after: Option<String>,
}

/// Revoke a token (admin). It stops working at once on this controller and
/// within a second on every other.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    operation_id = "revokeToken",
    tag = "tokens",
    params(("id" = String, Path, description = "Token id (tok_…)")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = TokenInfo),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Address(address): Address,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    caller.require_admin()?;
    let info = state
        .queue
        .revoke_token(id, &Actor::new(&caller, address))
        .await?;
    Ok(Json(info))
}
