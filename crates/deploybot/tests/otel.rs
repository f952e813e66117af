//! OpenTelemetry export (the `otel` feature; `cargo test -p deploybot
//! --features otel --test otel`): the real controller, built with the
//! feature and pointed at a fake OTLP/HTTP collector in this test, and a
//! real agent. One trace holds a webhook, the job it created, the job's
//! hand-out and the agent's uploads and report; a request's `traceparent`
//! makes it part of the caller's trace; what is still buffered at SIGTERM
//! is sent before the controller exits.

#[allow(dead_code, unused_imports)] // this target uses part of the helpers
#[path = "cli/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use deploybot_wire::{DeliveryVerdict, JobStatus};
use tokio::task::block_in_place;

use common::{
    AgentProcess, Server, agent_command, app_entry, controller_command, sha, write_apps,
    write_script,
};

/// What the fake collector received: the body of each `POST /v1/traces`.
type Received = Arc<Mutex<Vec<Bytes>>>;

async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(received): State<Received>, body: Bytes| async move {
                received.lock().unwrap().push(body);
                // An empty ExportTraceServiceResponse: all accepted.
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_its_jobs_and_their_agent_reports_are_one_trace() {
    let (endpoint, received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let script = root.join("deploy.sh");
    write_script(&script, "echo deploying\necho done\n");
    write_apps(
        root,
        &[app_entry("web", "acme/web", "web-01", &script, None)],
    );
    let mut cmd = controller_command(root, "127.0.0.1:0", "10s");
    // Whatever OpenTelemetry settings the test runs under stay out of it.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "deploybot-under-test")
        // Nothing goes out before the end: the spans the test reads are the
        // ones sent when the controller stops.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000");
    let (mut server, agent) = block_in_place(|| {
        let server = Server::start(cmd);
        let agent = AgentProcess::start(agent_command(root, &server.address, "web-01", "2s"));
        (server, agent)
    });
    server
        .log
        .wait_for(0, "exporting traces over OTLP/HTTP", common::DEADLINE)
        .expect("the controller says it exports");
    server.wait_agent_idle("web-01", &agent.id).await;

    let answer = server
        .push_repo("otel-1", "acme/web", "refs/heads/main", &sha(1))
        .await;
    assert_eq!(answer.verdict, DeliveryVerdict::Queued, "{answer:?}");
    let job_id = answer.jobs_created[0].clone();
    let job = server.wait_status(&job_id, JobStatus::Success).await;
    let traceparent = job.traceparent.clone().expect("the job has a traceparent");

    // A caller's trace context makes the request part of its trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = server
        .client
        .get(server.url("/health"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());

    assert!(
        received.lock().unwrap().is_empty(),
        "spans were sent before the batch delay"
    );
    server.signal("TERM");
    block_in_place(|| server.wait_exit());
    let spans: Vec<Span> = received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|body| spans_of(body))
        .collect();
    let all = || format!("{spans:#?}");

    let webhook = one(&spans, |s| s.name == "POST /v1/webhooks/github");
    assert_eq!(webhook.kind, 2, "a server span: {webhook:?}");
    assert_eq!(webhook.parent, "", "GitHub sends no trace context");
    assert_eq!(webhook.attributes["http.response.status_code"], "200");
    assert!(webhook.attributes.contains_key("request_id"), "{webhook:?}");
    let trace = webhook.trace.clone();

    let created = one(&spans, |s| s.name == "create_job");
    assert_eq!(created.trace, trace, "{}", all());
    assert_eq!(created.parent, webhook.id);
    assert_eq!(created.attributes["job"], job_id);
    assert_eq!(created.attributes["delivery"], "otel-1");
    assert_eq!(traceparent, format!("00-{trace}-{}-01", created.id));

    let handed_out = one(&spans, |s| s.name == "hand_out_job");
    assert_eq!(handed_out.trace, trace, "{}", all());
    assert_eq!(handed_out.parent, created.id);
    assert_eq!(handed_out.attributes["agent"], agent.id);

    // The agent sent the job's traceparent with its uploads and report.
    for name in ["POST /v1/jobs/{id}/logs", "PUT /v1/jobs/{id}/status"] {
        let requests: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        assert!(!requests.is_empty(), "no {name} span: {}", all());
        for request in requests {
            assert_eq!(request.trace, trace, "{request:?}");
            assert_eq!(request.parent, created.id, "{request:?}");
            assert_eq!(request.kind, 2, "{request:?}");
        }
    }
    let resource = received.lock().unwrap().iter().any(|body| {
        body.windows(b"deploybot-under-test".len())
            .any(|w| w == b"deploybot-under-test")
    });
    assert!(resource, "OTEL_SERVICE_NAME names the service");

    let health = one(&spans, |s| s.name == "GET /health");
    assert_eq!(
        (health.trace.as_str(), health.parent.as_str()),
        (caller_trace, caller_span)
    );
}

/// The one span `matches`; panics if there are none or several.
fn one(spans: &[Span], matches: impl Fn(&Span) -> bool) -> &Span {
    let found: Vec<&Span> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(found.len(), 1, "{found:#?}\nin\n{spans:#?}");
    found[0]
}

/// What the test reads of an OTLP span; ids in hex.
#[derive(Debug, Default)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: u64,
    /// String and integer values, as text.
    attributes: BTreeMap<String, String>,
}

/// The spans of an `ExportTraceServiceRequest`: resource_spans (1) →
/// scope_spans (2) → spans (2). Decoded by hand (the protobuf wire format
/// is small), so the test needs no protobuf dependency.
fn spans_of(body: &[u8]) -> Vec<Span> {
    let mut spans = Vec::new();
    for (field, value) in fields(body) {
        let (1, Wire::Bytes(resource_spans)) = (field, value) else {
            continue;
        };
        for (field, value) in fields(resource_spans) {
            let (2, Wire::Bytes(scope_spans)) = (field, value) else {
                continue;
            };
            for (field, value) in fields(scope_spans) {
                if let (2, Wire::Bytes(span)) = (field, value) {
                    spans.push(span_of(span));
                }
            }
        }
    }
    spans
}

fn span_of(bytes: &[u8]) -> Span {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut span = Span::default();
    for (field, value) in fields(bytes) {
        match (field, value) {
            (1, Wire::Bytes(id)) => span.trace = hex(id),
            (2, Wire::Bytes(id)) => span.id = hex(id),
            (4, Wire::Bytes(id)) => span.parent = hex(id),
            (5, Wire::Bytes(name)) => span.name = text(name),
            (6, Wire::Varint(kind)) => span.kind = kind,
            (9, Wire::Bytes(attribute)) => {
                // KeyValue: key (1), AnyValue (2): string (1) or int (3).
                let (mut key, mut value) = (String::new(), String::new());
                for (field, part) in fields(attribute) {
                    match (field, part) {
                        (1, Wire::Bytes(k)) => key = text(k),
                        (2, Wire::Bytes(any)) => {
                            for (field, v) in fields(any) {
                                match (field, v) {
                                    (1, Wire::Bytes(s)) => value = text(s),
                                    (3, Wire::Varint(n)) => value = n.to_string(),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                span.attributes.insert(key, value);
            }
            _ => {}
        }
    }
    span
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one protobuf message, in order: (number, value).
fn fields(mut bytes: &[u8]) -> Vec<(u64, Wire<'_>)> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first().expect("a truncated varint");
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut bytes)),
            1 => {
                bytes = &bytes[8..];
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut bytes)).unwrap();
                let (value, rest) = bytes.split_at(len);
                bytes = rest;
                Wire::Bytes(value)
            }
            5 => {
                bytes = &bytes[4..];
                Wire::Fixed
            }
            other => panic!("unexpected protobuf wire type {other}"),
        };
        fields.push((key >> 3, value));
    }
    fields
}
