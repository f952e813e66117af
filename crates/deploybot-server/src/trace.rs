//! The request span, and W3C trace context in and out.
//!
//! Every request runs in one span (`request`, made by tower-http's
//! `TraceLayer`) holding its id, method and route template: every log line
//! written while handling it carries them. It is kept small on purpose: a
//! controller holds 10,000 long-polls, each with its span alive.
//!
//! With the `otel` feature, and when the binary installed an OpenTelemetry
//! layer, the span becomes an OpenTelemetry server span whose parent is the
//! request's `traceparent` header, and a job created while handling a
//! request stores the `traceparent` of its creation span, which its agent
//! sends back with the job's uploads and reports. Without the feature, or
//! without the layer, [`traceparent`] is `None` and nothing else changes.

use axum::http::{Request, Response};
use tower_http::trace::{DefaultOnResponse, MakeSpan, OnResponse};
use tracing::Span;

use crate::http_metrics::{RouteTemplates, method_label};
use crate::request_id::X_REQUEST_ID;

/// Makes the `request` span, named by the request's route template.
#[derive(Clone)]
pub struct MakeRequestSpan(pub RouteTemplates);

impl<B> MakeSpan<B> for MakeRequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        // Set by `RequestIdLayer`, which runs first.
        let id = request
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default();
        let method = method_label(request.method());
        let route = self.0.of(request.uri().path());
        let route = &*route;
        #[cfg(not(feature = "otel"))]
        let span = tracing::info_span!("request", request_id = id, method, route);
        #[cfg(feature = "otel")]
        let span = {
            // `otel.*` fields name the OpenTelemetry span; the log formats
            // leave them out.
            let span = tracing::info_span!(
                "request",
                request_id = id,
                method,
                route,
                otel.name = %format_args!("{method} {route}"),
                otel.kind = "server",
            );
            otel::adopt_parent(&span, request.headers());
            span
        };
        span
    }
}

/// tower-http's response event, plus (with `otel`) the status code as the
/// span's attribute.
#[derive(Clone, Default)]
pub struct OnRequestDone(DefaultOnResponse);

impl<B> OnResponse<B> for OnRequestDone {
    fn on_response(self, response: &Response<B>, latency: std::time::Duration, span: &Span) {
        #[cfg(feature = "otel")]
        otel::record_status(span, response.status());
        self.0.on_response(response, latency, span);
    }
}

/// The W3C `traceparent` of `span`, when it is part of an OpenTelemetry
/// trace: what a job created in it stores.
pub(crate) fn traceparent(span: &Span) -> Option<String> {
    #[cfg(feature = "otel")]
    {
        otel::traceparent(span)
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = span;
        None
    }
}

/// Makes `span` a child of the trace named by `traceparent` (a job's).
pub(crate) fn continue_trace(span: &Span, traceparent: Option<&str>) {
    #[cfg(feature = "otel")]
    if let Some(traceparent) = traceparent {
        otel::set_remote_parent(span, traceparent);
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, traceparent);
}

#[cfg(feature = "otel")]
mod otel {
    use axum::http::{HeaderMap, StatusCode};
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::{Status, TraceContextExt};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    const TRACEPARENT: &str = "traceparent";

    struct Headers<'a>(&'a HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key)?.to_str().ok()
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|name| name.as_str()).collect()
        }
    }

    /// One `traceparent` (and no `tracestate`), as a job stores it.
    struct One<'a>(&'a str);

    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == TRACEPARENT).then_some(self.0)
        }

        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT]
        }
    }

    /// A request that names its trace joins it; an invalid header is ignored.
    pub(super) fn adopt_parent(span: &Span, headers: &HeaderMap) {
        if headers.contains_key(TRACEPARENT) {
            set_parent(
                span,
                TraceContextPropagator::new().extract(&Headers(headers)),
            );
        }
    }

    pub(super) fn set_remote_parent(span: &Span, traceparent: &str) {
        set_parent(
            span,
            TraceContextPropagator::new().extract(&One(traceparent)),
        );
    }

    fn set_parent(span: &Span, parent: opentelemetry::Context) {
        if parent.span().span_context().is_valid() {
            // Fails only without an OpenTelemetry layer (nothing to do then)
            // or once the span was entered, which it was not.
            let _ = span.set_parent(parent);
        }
    }

    pub(super) fn record_status(span: &Span, status: StatusCode) {
        span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.set_status(Status::error(status.to_string()));
        }
    }

    pub(super) fn traceparent(span: &Span) -> Option<String> {
        let context = span.context();
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                ids.trace_id(),
                ids.span_id(),
                ids.trace_flags().to_u8()
            )
        })
    }
}
