//! HTTP request metrics by route template: a tower layer around the whole
//! router. Its future is a plain wrapper (no box), so a held long-poll pays
//! a few bytes for being counted.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::http::{Method, Request, Response};
use tower::{Layer, Service};

use crate::metrics::{ResponseLabels, RouteLabels, SharedMetrics};

/// The route template of `path`: what a request is counted under. Never
/// the raw path, whose ids would make a label per job.
pub fn route_of(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "agents"] => "/v1/agents",
        ["v1", "agents", "register"] => "/v1/agents/register",
        ["v1", "agents", _] => "/v1/agents/{id}",
        ["v1", "agents", _, "heartbeat"] => "/v1/agents/{id}/heartbeat",
        ["v1", "jobs"] => "/v1/jobs",
        ["v1", "jobs", _] => "/v1/jobs/{id}",
        ["v1", "jobs", _, "status"] => "/v1/jobs/{id}/status",
        ["v1", "jobs", _, "cancel"] => "/v1/jobs/{id}/cancel",
        ["v1", "jobs", _, "retry"] => "/v1/jobs/{id}/retry",
        ["v1", "jobs", _, "logs"] => "/v1/jobs/{id}/logs",
        ["v1", "logs", "stream"] => "/v1/logs/stream",
        ["v1", "hosts"] => "/v1/hosts",
        ["v1", "deliveries"] => "/v1/deliveries",
        ["v1", "tokens"] => "/v1/tokens",
        ["v1", "tokens", _] => "/v1/tokens/{id}",
        ["v1", "audit"] => "/v1/audit",
        ["v1", "apps"] => "/v1/apps",
        ["v1", "explain"] => "/v1/explain",
        ["v1", "status"] => "/v1/status",
        ["v1", "webhooks", "github"] => "/v1/webhooks/github",
        ["health"] => "/health",
        ["ready"] => "/ready",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        ["docs", ..] => "/docs",
        _ => "other",
    }
}

#[derive(Clone)]
pub struct HttpMetricsLayer(pub SharedMetrics);

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> HttpMetrics<S> {
        HttpMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    metrics: SharedMetrics,
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
        let route = route_of(request.uri().path());
        let method = request.method().clone();
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
        method: Method,
        route: &'static str,
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
            let method = this.method.as_str().to_owned();
            this.metrics
                .http_seconds
                .get_or_create(&RouteLabels {
                    method: method.clone(),
                    route: (*this.route).to_owned(),
                })
                .observe(this.started.elapsed().as_secs_f64());
            this.metrics
                .http_requests
                .get_or_create(&ResponseLabels {
                    method,
                    route: (*this.route).to_owned(),
                    status: response.status().as_u16(),
                })
                .inc();
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn ids_never_reach_a_label() {
        assert_eq!(
            route_of("/v1/jobs/0195ab3f-1234/logs"),
            "/v1/jobs/{id}/logs"
        );
        assert_eq!(
            route_of("/v1/agents/abc/heartbeat"),
            "/v1/agents/{id}/heartbeat"
        );
        assert_eq!(route_of("/v1/agents/register"), "/v1/agents/register");
        assert_eq!(route_of("/v1/tokens/tok_0123"), "/v1/tokens/{id}");
        assert_eq!(route_of("/docs/swagger-ui.css"), "/docs");
        assert_eq!(route_of("/v1/jobs/a/b/c"), "other");
        assert_eq!(route_of("/secret-token-in-path"), "other");
    }
}
