//! `GET /v1/deliveries`: recent webhook deliveries and what each did.

use axum::Json;
use axum::extract::State;
use deploybot_wire::Delivery;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ApiQuery};
use crate::routes::jobs::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 1000; default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only deliveries received before this one (a delivery id): the next
    /// page.
    before: Option<String>,
}

/// Recent webhook deliveries, newest first, with their verdict and jobs.
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    operation_id = "listDeliveries",
    tag = "webhooks",
    params(ListQuery),
    responses(
        (status = 200, body = Vec<Delivery>),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    caller.require_read()?;
    let limit = super::limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    Ok(Json(
        state.queue.store().deliveries(limit, query.before).await?,
    ))
}
