//! `GET /health`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use deploybot_wire::HealthResponse;

use crate::state::AppState;

/// Liveness, including a database round trip.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Serving, database reachable", body = HealthResponse),
        (status = 503, description = "Database unreachable", body = HealthResponse),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let (status, database) = match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(err) => {
            tracing::warn!(error = %err, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    (
        status,
        Json(HealthResponse {
            status: if status.is_success() {
                "ok"
            } else {
                "unavailable"
            }
            .into(),
            database: database.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }),
    )
}
