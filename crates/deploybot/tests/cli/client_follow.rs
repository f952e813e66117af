//! `logs -f` against a small fake controller that drops the stream on
//! purpose: the CLI reconnects with `Last-Event-ID`, and prints every line
//! once even when the stream repeats one.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use deploybot_wire::{Job, JobLogsResponse, JobResponse, LogEntry, LogStream};
use serde_json::json;
use tokio::task::block_in_place;

use crate::common::{client, run};

const JOB_ID: &str = "01952c1e-1111-7aaa-8000-000000000001";

/// The `Last-Event-ID` of each stream request, in order.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

fn entry(id: i64, text: &str) -> LogEntry {
    LogEntry {
        id,
        job_id: JOB_ID.to_owned(),
        host: "web-01".to_owned(),
        app: "web".to_owned(),
        line: id as u64,
        stream: LogStream::Stdout,
        at: time::OffsetDateTime::UNIX_EPOCH,
        text: text.to_owned(),
    }
}

fn log_event(entry: &LogEntry) -> String {
    format!(
        "event: log\nid: {}\ndata: {}\n\n",
        entry.id,
        serde_json::to_string(entry).unwrap()
    )
}

fn job() -> Job {
    serde_json::from_value(json!({
        "id": JOB_ID, "repo": "acme/web", "ref": "main", "host": "web-01",
        "status": "success", "metadata": {},
        "created_at": "2026-01-10T12:00:00Z", "started_at": "2026-01-10T12:00:01Z",
        "completed_at": "2026-01-10T12:00:05Z", "assigned_agent": "a1", "error": null,
        "app": "web", "sha": null, "exit_code": 0, "attempt": 1, "source": "manual",
        "delivery_id": null, "superseded_by": null,
        "deploy": {"command": ["./deploy.sh"], "env": {}, "timeout_secs": 60}
    }))
    .expect("a Job")
}

/// First stream: lines 1 and 2, a keep-alive, then the connection ends.
/// Every later stream: line 2 again (a repeat the CLI must drop), line 3,
/// and the job's final status.
async fn stream(State(seen): State<Seen>, headers: HeaderMap) -> String {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let first = {
        let mut seen = seen.lock().unwrap();
        seen.push(last);
        seen.len() == 1
    };
    if first {
        format!(
            "{}: keep-alive\n\n{}",
            log_event(&entry(1, "one")),
            log_event(&entry(2, "two"))
        )
    } else {
        format!(
            "{}{}event: status\ndata: {}\n\n",
            log_event(&entry(2, "two")),
            log_event(&entry(3, "three")),
            json!({"job_id": JOB_ID, "status": "success", "exit_code": 0})
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_resumes_after_the_last_line_seen() {
    let seen = Seen::default();
    let app = Router::new()
        .route("/v1/logs/stream", get(stream))
        .route(
            "/v1/jobs/{id}",
            get(|| async {
                axum::Json(JobResponse {
                    job: job(),
                    created: None,
                })
            }),
        )
        .route(
            "/v1/jobs/{id}/logs",
            get(|| async {
                axum::Json(JobLogsResponse {
                    job_id: JOB_ID.to_owned(),
                    lines: Vec::new(),
                    next_after: None,
                })
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = client(dir.path(), &address);
    cmd.args(["logs", "-f", "--job", JOB_ID]);
    let out = block_in_place(|| run(cmd));

    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        format!("one\ntwo\nthree\nweb-01: success after 4s (exit 0), job {JOB_ID}\n")
    );
    assert_eq!(*seen.lock().unwrap(), [None, Some("2".to_owned())]);
    assert!(out.stderr.contains("log stream reconnected"), "{out:?}");
}
