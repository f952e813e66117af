//! Deploy output: uploads, paged reads, and the live SSE stream.

use std::time::Duration;

use deploybot_wire::{AppendLogsResponse, Job, JobLogsResponse, LogEntry};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{SHA_A, TestApp, assert_error, ok_json, spawn_app};

/// One parsed server-sent event.
#[derive(Debug)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// A minimal SSE reader over a streaming response.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn open(app: &TestApp, query: &str, last_event_id: Option<i64>) -> SseReader {
        let mut request = app.client.get(app.url(&format!("/v1/logs/stream?{query}")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("GET stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event that is not a keep-alive comment.
    pub async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut fields = 0;
                for line in block.lines() {
                    if let Some(v) = line
                        .strip_prefix("id: ")
                        .or_else(|| line.strip_prefix("id:"))
                    {
                        event.id = Some(v.to_owned());
                        fields += 1;
                    } else if let Some(v) = line
                        .strip_prefix("event: ")
                        .or_else(|| line.strip_prefix("event:"))
                    {
                        event.event = v.to_owned();
                        fields += 1;
                    } else if let Some(v) = line
                        .strip_prefix("data: ")
                        .or_else(|| line.strip_prefix("data:"))
                    {
                        event.data.push_str(v);
                        fields += 1;
                    }
                }
                if fields > 0 {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("stream read")
                .expect("stream still open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next log line, skipping status events.
    pub async fn next_log(&mut self) -> LogEntry {
        let mut event = self.next().await;
        while event.event == "status" || event.event == "ready" {
            event = self.next().await;
        }
        assert_eq!(event.event, "log", "{event:?}");
        let entry: LogEntry = serde_json::from_str(&event.data).unwrap();
        assert_eq!(event.id, Some(entry.id.to_string()));
        entry
    }
}

async fn running_job(app: &TestApp) -> (String, Job) {
    let agent = app.register("web-02").await;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let job = app.heartbeat_job(&agent.id).await.unwrap();
    (agent.id, job)
}

pub fn lines(range: std::ops::RangeInclusive<u64>) -> Vec<Value> {
    range
        .map(|n| json!({"line": n, "stream": if n % 2 == 0 { "stderr" } else { "stdout" }, "at": "2026-01-01T00:00:00Z", "text": format!("line {n}")}))
        .collect()
}

impl TestApp {
    async fn upload(&self, job: &Job, agent: &str, lines: Vec<Value>) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/jobs/{}/logs", job.id)))
            .bearer_auth(self.agent_token(agent))
            .json(&json!({"lease": job.lease, "agent_id": agent, "lines": lines}))
            .send()
            .await
            .expect("POST logs")
    }
}

#[tokio::test]
async fn uploaded_lines_are_stored_once_in_order() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;
    let first: AppendLogsResponse = ok_json(app.upload(&job, &agent, lines(1..=3)).await).await;
    assert_eq!((first.accepted, first.duplicates), (3, 0));
    // A retried batch overlapping the first: only the new lines count.
    let retried: AppendLogsResponse = ok_json(app.upload(&job, &agent, lines(2..=5)).await).await;
    assert_eq!((retried.accepted, retried.duplicates), (2, 2));

    let page: JobLogsResponse =
        ok_json(app.get(&format!("/v1/jobs/{}/logs?limit=4", job.id)).await).await;
    let texts: Vec<_> = page.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["line 1", "line 2", "line 3", "line 4"]);
    assert_eq!(page.next_after, Some(4));
    let rest: JobLogsResponse =
        ok_json(app.get(&format!("/v1/jobs/{}/logs?after=4", job.id)).await).await;
    assert_eq!(rest.lines.len(), 1);
    assert_eq!(rest.next_after, None);
    assert_eq!(rest.lines[0].host, "web-02");
}

#[tokio::test]
async fn uploads_need_a_running_job_and_its_lease() {
    let app = spawn_app().await;
    let pending = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let bystander = app.register("web-01").await;
    // A pending job is leased to no agent, so no agent may write to it.
    let early = app.upload(&pending, &bystander.id, lines(1..=1)).await;
    assert_error(early, StatusCode::FORBIDDEN, "forbidden").await;

    let (agent, mut job) = running_job(&app).await;
    job.lease = job.lease.map(|l| l - 1);
    let stale = app.upload(&job, &agent, lines(1..=1)).await;
    assert_error(stale, StatusCode::CONFLICT, "conflict").await;

    let zero = app
        .upload(
            &job,
            &agent,
            vec![json!({"line": 0, "stream": "stdout", "at": "2026-01-01T00:00:00Z", "text": "x"})],
        )
        .await;
    assert_error(zero, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let missing = app.get("/v1/jobs/nope/logs").await;
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_stream_shows_a_jobs_lines_live_then_its_end() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;
    app.upload(&job, &agent, lines(1..=2)).await;

    let mut stream = SseReader::open(&app, &format!("job_id={}", job.id), None).await;
    // A job stream starts at the job's first line…
    assert_eq!(stream.next_log().await.text, "line 1");
    assert_eq!(stream.next_log().await.text, "line 2");
    // …then follows new lines as they are uploaded.
    app.upload(&job, &agent, lines(3..=3)).await;
    let live = stream.next_log().await;
    assert_eq!((live.line, live.text.as_str()), (3, "line 3"));

    app.report(
        &job.id,
        &json!({"status": "success", "exit_code": 0, "lease": job.lease}),
    )
    .await;
    let end = stream.next().await;
    assert_eq!(end.event, "status");
    let end: Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(end["status"], "success");
    assert_eq!(end["job_id"], job.id.as_str());
}

#[tokio::test]
async fn reconnecting_with_last_event_id_resumes_exactly_after_it() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;
    app.upload(&job, &agent, lines(1..=5)).await;
    let mut first = SseReader::open(&app, &format!("job_id={}", job.id), None).await;
    first.next_log().await;
    let second = first.next_log().await;
    drop(first);

    app.upload(&job, &agent, lines(6..=7)).await;
    let mut resumed = SseReader::open(&app, &format!("job_id={}", job.id), Some(second.id)).await;
    let got: Vec<u64> = {
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(resumed.next_log().await.line);
        }
        got
    };
    assert_eq!(got, [3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn host_and_app_streams_start_live_and_filter() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;
    app.upload(&job, &agent, lines(1..=1)).await;
    let mut other_host = SseReader::open(&app, "host=web-01", None).await;
    let mut this_app = SseReader::open(&app, "app=web", None).await;

    app.upload(&job, &agent, lines(2..=2)).await;
    // The app stream skips what was there before it connected.
    assert_eq!(this_app.next_log().await.line, 2);

    // The other host's stream sees only its own host's lines.
    let other = app.register("web-01").await;
    let api_job = app.create_job_ok("acme/api", "web-01", SHA_A).await;
    let api_job = app
        .heartbeat_job(&other.id)
        .await
        .filter(|j| j.id == api_job.id)
        .unwrap();
    app.upload(&api_job, &other.id, lines(1..=1)).await;
    let seen = other_host.next_log().await;
    assert_eq!(
        (seen.job_id.as_str(), seen.host.as_str()),
        (api_job.id.as_str(), "web-01")
    );
}

#[tokio::test]
async fn a_stream_for_an_unknown_job_is_404() {
    let app = spawn_app().await;
    let response = app.get("/v1/logs/stream?job_id=nope").await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn concurrent_uploads_reach_a_subscriber_complete_and_in_id_order() {
    let app = spawn_app().await;
    let mut stream = SseReader::open(&app, "", None).await;
    // Four hosts, one running job each, uploading at the same time.
    let mut running = Vec::new();
    for (repo, host) in [
        ("acme/web", "web-01"),
        ("acme/web", "web-02"),
        ("acme/api", "api-01"),
    ] {
        let agent = app.register(host).await;
        app.create_job_ok(repo, host, SHA_A).await;
        running.push((
            agent.id.clone(),
            app.heartbeat_job(&agent.id).await.unwrap(),
        ));
    }
    let uploads: Vec<_> = running
        .iter()
        .flat_map(|(agent, job)| {
            (0..20u64).map(move |batch| (agent.clone(), job.clone(), batch))
        })
        .map(|(agent, job, batch)| {
            let (client, url) = (app.client.clone(), app.url(&format!("/v1/jobs/{}/logs", job.id)));
            let token = app.agent_token(&agent);
            tokio::spawn(async move {
                let body = json!({"lease": job.lease, "agent_id": agent, "lines": lines(batch * 5 + 1..=batch * 5 + 5)});
                client.post(url).bearer_auth(token).json(&body).send().await.unwrap().status()
            })
        })
        .collect();
    for upload in uploads {
        assert_eq!(upload.await.unwrap(), StatusCode::OK);
    }
    let mut ids = Vec::new();
    while ids.len() < 3 * 20 * 5 {
        ids.push(stream.next_log().await.id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids out of order: {ids:?}"
    );
}

#[tokio::test]
async fn a_live_stream_says_where_it_starts_so_a_reconnect_before_any_line_loses_none() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;
    app.upload(&job, &agent, lines(1..=2)).await;

    let mut stream = SseReader::open(&app, "host=web-02", None).await;
    let ready = stream.next().await;
    assert_eq!(ready.event, "ready", "{ready:?}");
    let start = ready.id.clone().expect("the ready event has an id");
    drop(stream);
    // Lines that arrive while the client is away…
    app.upload(&job, &agent, lines(3..=4)).await;

    // …come on reconnecting from the ready event's id, and nothing older.
    let mut again = SseReader::open(&app, "host=web-02", Some(start.parse().unwrap())).await;
    assert_eq!(again.next_log().await.line, 3);
    assert_eq!(again.next_log().await.line, 4);
}
