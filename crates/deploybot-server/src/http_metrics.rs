//! HTTP request metrics by route template: a tower layer around the whole
//! router. Its future is a plain wrapper (no box), so a held long-poll pays
//! a few bytes for being counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::http::{Method, Request, Response};
use tower::{Layer, Service};
use utoipa::openapi::OpenApi;

use crate::metrics::{ResponseLabels, RouteLabels, SharedMetrics};

/// The route templates of the API, matched as the router matches them:
/// what a request is counted under. Never the raw path, whose ids would
/// make a label per job, nor anything else a client chooses.
#[derive(Clone)]
pub struct RouteTemplates(Arc<matchit::Router<Arc<str>>>);

/// What a request that matches no route is counted under.
const OTHER: &str = "other";

impl RouteTemplates {
    /// The templates of `api`'s paths, and of the docs UI.
    pub fn new(api: &OpenApi) -> Self {
        let mut matcher = matchit::Router::new();
        let templates =
            api.paths
                .paths
                .keys()
                .map(String::as_str)
                .chain(["/openapi.json", "/docs", "/docs/"]);
        for template in templates {
            // Each template once: a conflict is a bug in the route table.
            let _ = matcher.insert(template, Arc::from(template));
        }
        let _ = matcher.insert("/docs/{*asset}", Arc::from("/docs"));
        RouteTemplates(Arc::new(matcher))
    }

    pub fn of(&self, path: &str) -> Arc<str> {
        match self.0.at(path) {
            Ok(matched) => matched.value.clone(),
            Err(_) => Arc::from(OTHER),
        }
    }
}

/// The method as a label: one of HTTP's own, or `other` (a client may send
/// any token as a method).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => OTHER,
    }
}

#[derive(Clone)]
pub struct HttpMetricsLayer {
    metrics: SharedMetrics,
    routes: RouteTemplates,
}

impl HttpMetricsLayer {
    /// Counts requests to `routes`.
    pub fn new(metrics: SharedMetrics, routes: RouteTemplates) -> Self {
        HttpMetricsLayer { metrics, routes }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> HttpMetrics<S> {
        HttpMetrics {
            inner,
            metrics: self.metrics.clone(),
            routes: self.routes.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    metrics: SharedMetrics,
    routes: RouteTemplates,
}

impl<S, B, ResBody> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = self.routes.of(request.uri().path());
        let method = method_label(request.method());
        Recorded {
            inner: self.inner.call(request),
            started: Instant::now(),
            method,
            route,
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct Recorded<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: &'static str,
        route: Arc<str>,
        metrics: SharedMetrics,
    }
}

impl<F, ResBody, E> Future for Recorded<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let method = (*this.method).to_owned();
            this.metrics
                .http_seconds
                .get_or_create(&RouteLabels {
                    method: method.clone(),
                    route: this.route.to_string(),
                })
                .observe(this.started.elapsed().as_secs_f64());
            this.metrics
                .http_requests
                .get_or_create(&ResponseLabels {
                    method,
                    route: this.route.to_string(),
                    status: response.status().as_u16(),
                })
                .inc();
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> RouteTemplates {
        let mut api = OpenApi::default();
        for path in [
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/logs",
            "/v1/agents/register",
            "/v1/agents/{id}/heartbeat",
        ] {
            api.paths.paths.insert(path.to_owned(), Default::default());
        }
        RouteTemplates::new(&api)
    }

    #[test]
    fn ids_never_reach_a_label() {
        let routes = templates();
        assert_eq!(
            &*routes.of("/v1/jobs/0195ab3f-1234/logs"),
            "/v1/jobs/{id}/logs"
        );
        assert_eq!(
            &*routes.of("/v1/agents/abc/heartbeat"),
            "/v1/agents/{id}/heartbeat"
        );
        assert_eq!(&*routes.of("/v1/agents/register"), "/v1/agents/register");
        assert_eq!(&*routes.of("/docs/swagger-ui.css"), "/docs");
        assert_eq!(&*routes.of("/v1/jobs/a/b/c"), "other");
        assert_eq!(&*routes.of("/secret-token-in-path"), "other");
    }

    #[test]
    fn only_http_methods_are_labels() {
        assert_eq!(method_label(&Method::GET), "GET");
        let made_up = Method::from_bytes(&[b'X'; 4000]).unwrap();
        assert_eq!(method_label(&made_up), "other");
    }
}
