//! `GET /v1/audit`: the audit log (admin).

use axum::Json;
use axum::extract::State;
use deploybot_wire::AuditResponse;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Entries older than this id (the last `id` of the previous page).
    #[param(minimum = 1)]
    before: Option<i64>,
}

/// Who did what, newest first (admin): deploys, cancels, retries,
/// registrations, revocations, tokens made, config reloads.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "listAudit",
    tag = "audit",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = AuditResponse),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditResponse>, ApiError> {
    caller.require_admin()?;
    let limit = super::limit(query.limit, 100, 1000)?;
    if query.before.is_some_and(|id| id < 1) {
        return Err(ApiError::bad_request(
            "before must be an entry id (1 or more)",
        ));
    }
    Ok(Json(AuditResponse {
        entries: state.queue.store().audit(limit, query.before).await?,
    }))
}
