//! Prometheus metrics (`GET /metrics`, text format).
//!
//! Counters and histograms are updated where things happen; gauges that
//! describe state (agents online, queue depth) are read from the store when
//! scraped, so they are right after a restart and across instances.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Database failures, counted where they become a 503 (see `error.rs`,
/// which has no state to reach the registry through).
pub static DATABASE_ERRORS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Request bodies refused because the memory budget of bodies was spent.
pub static BODIES_REFUSED: LazyLock<Counter> = LazyLock::new(Counter::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub app: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    /// The route's template (`/v1/jobs/{id}`), never the raw path.
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

fn seconds_histogram() -> Histogram {
    // 5 ms to ~80 min.
    Histogram::new(exponential_buckets(0.005, 2.0, 20))
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    pub webhook_deliveries: Family<VerdictLabels, Counter>,
    pub signature_failures: Counter,
    pub jobs_created: Family<AppLabels, Counter>,
    pub jobs_finished: Family<FinishedLabels, Counter>,
    /// Creation to start (claimed by an agent).
    pub job_queue_seconds: Histogram,
    /// Start to finish.
    pub job_duration_seconds: Histogram,
    pub lease_expiries: Counter,
    pub long_polls_held: Gauge,
    pub sse_clients: Gauge,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    /// Bytes of request bodies being read (their shared budget in use).
    pub request_body_bytes: Gauge,
    pub agents: Family<AgentLabels, Gauge>,
    pub queue_depth: Family<HostLabels, Gauge>,
    pub http_requests: Family<ResponseLabels, Counter>,
    pub http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("deploybot");
        let metrics = Metrics {
            webhook_deliveries: Family::default(),
            signature_failures: Counter::default(),
            jobs_created: Family::default(),
            jobs_finished: Family::default(),
            job_queue_seconds: seconds_histogram(),
            job_duration_seconds: seconds_histogram(),
            lease_expiries: Counter::default(),
            long_polls_held: Gauge::default(),
            sse_clients: Gauge::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            request_body_bytes: Gauge::default(),
            agents: Family::default(),
            queue_depth: Family::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(seconds_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries received, by what was made of them",
            metrics.webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_signature_failures",
            "Webhook deliveries refused for a missing or wrong signature",
            metrics.signature_failures.clone(),
        );
        registry.register(
            "jobs_created",
            "Jobs created, by app and source (webhook, manual, retry)",
            metrics.jobs_created.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs that reached a final status, by app and status",
            metrics.jobs_finished.clone(),
        );
        registry.register(
            "job_queue_seconds",
            "Time from a job's creation to its start on an agent",
            metrics.job_queue_seconds.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Time from a job's start to its end",
            metrics.job_duration_seconds.clone(),
        );
        registry.register(
            "lease_expiries",
            "Running jobs lost because their agent went silent",
            metrics.lease_expiries.clone(),
        );
        registry.register(
            "long_polls_held",
            "Agent heartbeats held open waiting for work",
            metrics.long_polls_held.clone(),
        );
        registry.register(
            "sse_clients",
            "Clients following the live log stream",
            metrics.sse_clients.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open (the cap is --max-connections)",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections answered 503 because the cap was reached",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "agents",
            "Registered agents by state (online, offline)",
            metrics.agents.clone(),
        );
        registry.register(
            "queue_depth",
            "Pending jobs per host (counted up to 1,000 in all)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template",
            metrics.http_seconds.clone(),
        );
        registry.register(
            "database_errors",
            "Database failures answered 503",
            DATABASE_ERRORS.clone(),
        );
        registry.register(
            "request_body_bytes",
            "Bytes of request bodies being read, out of --body-memory-mib",
            metrics.request_body_bytes.clone(),
        );
        registry.register(
            "request_bodies_refused",
            "Request bodies answered 503 because the memory budget of bodies being read was spent",
            BODIES_REFUSED.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn job_created(&self, app: &str, source: &str) {
        self.jobs_created
            .get_or_create(&AppLabels {
                app: app.to_owned(),
                source: source.to_owned(),
            })
            .inc();
    }

    /// A job reached a final status: count it and, if it ran, its duration.
    pub fn job_finished(&self, job: &deploybot_wire::Job) {
        self.jobs_finished
            .get_or_create(&FinishedLabels {
                app: job.app.clone(),
                status: job.status.as_str().to_owned(),
            })
            .inc();
        if let (Some(started), Some(completed)) = (job.started_at, job.completed_at) {
            self.job_duration_seconds
                .observe(seconds(completed - started));
        }
    }

    /// A job was handed to an agent: how long it waited.
    pub fn job_started(&self, job: &deploybot_wire::Job) {
        if let Some(started) = job.started_at {
            self.job_queue_seconds
                .observe(seconds(started - job.created_at));
        }
    }
}

fn seconds(duration: time::Duration) -> f64 {
    Duration::try_from(duration).map_or(0.0, |d| d.as_secs_f64())
}

/// Held while something lasts (a held heartbeat, an SSE client): counts it
/// in a gauge.
pub struct Held(Gauge);

impl Held {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
