//! OpenTelemetry export (the `otel` feature): the controller's spans go
//! over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. The SDK reads the rest of
//! the standard variables itself: `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`,
//! `OTEL_BSP_*` (batching), `OTEL_TRACES_SAMPLER`.
//!
//! Spans are batched on the SDK's own thread, which sends them with
//! reqwest's blocking client: nothing of it runs on the controller's
//! runtime.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

/// Exports while it lives; dropping it sends what is still buffered (for
/// at most 5 s).
#[derive(Default)]
pub struct Exporting {
    provider: Option<SdkTracerProvider>,
}

impl Exporting {
    /// The layer that turns the controller's spans (`deploybot*` targets,
    /// `INFO` and up, whatever `RUST_LOG` says) into OpenTelemetry spans.
    pub fn layer(&self) -> Option<impl Layer<tracing_subscriber::Registry> + Send + Sync> {
        let provider = self.provider.as_ref()?;
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("deploybot"))
            // Busy and idle times need two clock reads per poll of every
            // request's future; the span's own duration says enough.
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target("deploybot", tracing::Level::INFO));
        Some(layer)
    }
}

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "could not send the last spans");
        }
    }
}

/// Whether the environment asks for export: an OTLP endpoint is set, and
/// neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says no.
fn wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|value| !value.trim().is_empty());
    let is = |name: &str, value: &str| {
        var(name).is_some_and(|given| given.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Starts exporting if the environment asks for it; `Err` says why it
/// cannot (the controller then runs without).
pub fn start() -> Result<Option<Exporting>, String> {
    if !wanted(|name| std::env::var(name).ok()) {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|err| format!("traces are not exported: {err}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    Ok(Some(Exporting {
        provider: Some(provider),
    }))
}

/// What the environment says (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `deploybot` and its version where it
/// says nothing.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let has = |key: &'static str| {
        detected
            .get(&Key::from_static_str(key))
            .is_some_and(|value| !value.as_str().starts_with("unknown_service"))
    };
    let mut defaults = Vec::new();
    if !has("service.name") {
        defaults.push(KeyValue::new("service.name", "deploybot"));
    }
    if !has("service.version") {
        defaults.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    Resource::builder().with_attributes(defaults).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_turns_export_on_unless_disabled() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert!(!wanted(env(&[])));
        assert!(!wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )])));
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces"
        )])));
        assert!(!wanted(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
        assert!(!wanted(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }
}
