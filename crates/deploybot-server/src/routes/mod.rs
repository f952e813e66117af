//! The HTTP API, one module per resource.

pub(crate) mod agents;
pub(crate) mod apps;
pub(crate) mod audit;
pub(crate) mod deliveries;
pub(crate) mod health;
pub(crate) mod hosts;
pub(crate) mod jobs;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod tokens;
pub(crate) mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tower::ServiceBuilder;
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::timeout::{RequestBodyTimeout, RequestBodyTimeoutLayer};
use tower_http::trace::{DefaultOnRequest, Trace, TraceLayer};

use crate::error::{self, ApiError};
use crate::http_metrics::{HttpMetrics, HttpMetricsLayer};
use crate::openapi;
use crate::request_id::{RequestId, RequestIdLayer};
use crate::state::AppState;
use crate::trace::{MakeRequestSpan, OnRequestDone};

/// Body limit of the API.
const API_BODY_LIMIT: usize = 1024 * 1024;
/// Body limit of log uploads (agents send batches well under it).
const LOG_UPLOAD_LIMIT: usize = 16 * 1024 * 1024;
/// Body limit of webhooks: GitHub's own cap.
const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

/// A list's `limit` parameter: `default` when absent, 1 to `max` otherwise.
pub(crate) fn limit(given: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = given.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max}"
        )))
    }
}

/// The whole HTTP service: the routes inside the layers every request
/// passes. The layers wrap the router once, not each route (as
/// `Router::layer` would): every route layer is one more boxed future per
/// request in flight, and a controller holds 10,000 long-polls.
pub fn service(state: AppState) -> Service {
    ServiceBuilder::new()
        .layer(HttpMetricsLayer(state.metrics.clone()))
        .layer(RequestIdLayer)
        // The one span of each request, which every log line written while
        // handling it names (see `trace.rs`).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(MakeRequestSpan)
                .on_response(OnRequestDone::default()),
        )
        .layer(CatchPanicLayer::custom(PanicAnswer))
        // A client that stops sending its body mid-way is cut off, so it
        // cannot hold a connection and a handler forever.
        .layer(RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        // Here rather than on the API's routes, where it would box one more
        // future per request (see above).
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .service(router(state))
}

/// A panicking handler answers 500 in our error shape; the panic itself is
/// logged by the panic hook.
#[derive(Clone, Copy)]
pub struct PanicAnswer;

impl ResponseForPanic for PanicAnswer {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(
        &mut self,
        _: Box<dyn std::any::Any + Send + 'static>,
    ) -> axum::response::Response {
        axum::response::IntoResponse::into_response(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the controller logged the details",
        ))
    }
}

/// The type of [`service`].
pub type Service = HttpMetrics<
    RequestId<
        Trace<
            CatchPanic<RequestBodyTimeout<ApiBodyLimit>, PanicAnswer>,
            SharedClassifier<ServerErrorsAsFailures>,
            MakeRequestSpan,
            DefaultOnRequest,
            OnRequestDone,
        >,
    >,
>;

/// The router with the API's body limit, which the webhook and log upload
/// routes raise for themselves.
type ApiBodyLimit = <DefaultBodyLimit as tower::Layer<Router>>::Service;

/// The longest a request body may pause between two chunks.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `/metrics` alone, for its own listen address.
pub fn metrics_only(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics_only))
        .with_state(state)
}

fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/agents", get(agents::list))
        .route("/v1/agents/register", post(agents::register))
        .route("/v1/agents/{id}", delete(agents::revoke))
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/audit", get(audit::list))
        .route("/v1/apps", get(apps::list))
        .route("/v1/explain", get(apps::explain))
        .route("/v1/agents/{id}/heartbeat", post(agents::heartbeat))
        .route("/v1/jobs", get(jobs::list).post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/status", put(jobs::report_status))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/jobs/{id}/logs", get(logs::page))
        .route("/v1/logs/stream", get(logs::stream))
        .route("/v1/hosts", get(hosts::list))
        .route("/v1/deliveries", get(deliveries::list))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/status", get(health::status));
    let webhooks = Router::new()
        .route("/v1/webhooks/github", post(webhooks::github))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT));
    let uploads = Router::new()
        .route("/v1/jobs/{id}/logs", post(logs::append))
        .layer(DefaultBodyLimit::max(LOG_UPLOAD_LIMIT));
    Router::new()
        .merge(api)
        .merge(webhooks)
        .merge(uploads)
        .merge(openapi::routes())
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .with_state(state)
}
