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
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::{CatchPanic, CatchPanicLayer, ResponseForPanic};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::timeout::{RequestBodyTimeout, RequestBodyTimeoutLayer};
use tower_http::trace::{DefaultOnRequest, Trace, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{self, ApiError};
use crate::http_metrics::{HttpMetrics, HttpMetricsLayer, RouteTemplates};
use crate::openapi;
use crate::request_id::{RequestId, RequestIdLayer};
use crate::state::AppState;
use crate::trace::{MakeRequestSpan, OnRequestDone};
use crate::unread_body::{CloseUnread, CloseUnreadLayer};

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
    let metrics = state.metrics.clone();
    let (router, api) = router(state);
    let routes = RouteTemplates::new(&api);
    ServiceBuilder::new()
        .layer(HttpMetricsLayer::new(metrics, routes.clone()))
        .layer(RequestIdLayer)
        // The one span of each request, which every log line written while
        // handling it names (see `trace.rs`).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(MakeRequestSpan(routes))
                .on_response(OnRequestDone::default()),
        )
        .layer(CatchPanicLayer::custom(PanicAnswer))
        // A client that stops sending its body mid-way is cut off, so it
        // cannot hold a connection and a handler forever. (Each route's
        // extractor enforces its body's size: see `body.rs`.)
        .layer(RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        .layer(CloseUnreadLayer)
        .service(router)
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
            CatchPanic<RequestBodyTimeout<CloseUnread<Router>>, PanicAnswer>,
            SharedClassifier<ServerErrorsAsFailures>,
            MakeRequestSpan,
            DefaultOnRequest,
            OnRequestDone,
        >,
    >,
>;

/// The longest a request body may pause between two chunks.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `/metrics` alone, for its own listen address.
pub fn metrics_only(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics_only))
        .with_state(state)
}

/// The one route table: every endpoint, its handler and (from the
/// handler's `#[utoipa::path]`) its OpenAPI operation. The router, the
/// OpenAPI document and the metrics' route templates all come from here.
fn table() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(agents::list))
        .routes(routes!(agents::register))
        .routes(routes!(agents::revoke))
        .routes(routes!(agents::heartbeat))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(apps::list))
        .routes(routes!(apps::explain))
        .routes(routes!(jobs::list, jobs::create))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::report_status))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(logs::page))
        .routes(routes!(logs::stream))
        .routes(routes!(hosts::list))
        .routes(routes!(hosts::forget))
        .routes(routes!(deliveries::list))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(metrics::metrics))
        .routes(routes!(health::status))
        .routes(routes!(webhooks::github))
        .routes(routes!(logs::append));
    // Bodies are read by the routes' extractors (`error.rs`, `body.rs`),
    // each within its route's limit and the bodies' memory budget.
    api
}

/// The router, and the OpenAPI document describing it.
fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut api) = table().split_for_parts();
    openapi::finish(&mut api);
    let router = router
        .merge(openapi::routes(&api))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .with_state(state);
    (router, api)
}
