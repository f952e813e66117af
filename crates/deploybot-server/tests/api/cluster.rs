//! Several controllers on one PostgreSQL database: what one commits, the
//! others hear of (LISTEN/NOTIFY) and act on at once. Each test gets a
//! database of its own on the server `DEPLOYBOT_TEST_POSTGRES_URL` names
//! (default: this machine's, as `.ci/postgres.sh` sets it up), created and
//! dropped with psql; `DEPLOYBOT_TEST_POSTGRES=skip` skips them.

use std::process::Command;
use std::time::{Duration, Instant};

use deploybot_server::SettingsLayer;
use deploybot_wire::{HeartbeatResponse, Job, LogEntry};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{SHA_A, TestApp, ok_json, spawn_app_with_settings};
use crate::logs::{SseReader, lines};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
/// A held heartbeat answered sooner than this was woken, not timed out
/// (it waits 20 s); generous, for slow CI machines.
const WOKEN_WITHIN: Duration = Duration::from_secs(5);

/// A database of its own, dropped at the end of the test.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    /// `None` when the PostgreSQL tests are switched off.
    fn create() -> Option<Database> {
        if std::env::var("DEPLOYBOT_TEST_POSTGRES").as_deref() == Ok("skip") {
            return None;
        }
        let admin_url =
            std::env::var("DEPLOYBOT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let name = format!("deploybot_cluster_{}", uuid::Uuid::now_v7().simple());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        Some(Database {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .status()
        .unwrap_or_else(|err| {
            panic!("psql: {err} (is PostgreSQL's client installed? see .ci/postgres.sh)")
        });
    assert!(status.success(), "psql {sql:?} failed against {url}");
}

async fn instance(db: &Database) -> TestApp {
    spawn_app_with_settings(SettingsLayer {
        database_url: Some(db.url.clone()),
        ..Default::default()
    })
    .await
}

/// Sends a long-poll heartbeat (`wait=20`) to `app` in a task of its own;
/// the answer and how long it took.
fn hold_heartbeat(
    app: &TestApp,
    agent_id: &str,
) -> tokio::task::JoinHandle<(HeartbeatResponse, Duration)> {
    let request = app
        .client
        .post(app.url(&format!("/v1/agents/{agent_id}/heartbeat?wait=20")))
        .bearer_auth(app.agent_token(agent_id))
        .json(&serde_json::json!({"status": "idle"}));
    tokio::spawn(async move {
        let sent = Instant::now();
        let response = request.send().await.expect("POST heartbeat");
        let answer: HeartbeatResponse = ok_json(response).await;
        (answer, sent.elapsed())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_through_one_instance_wakes_a_long_poll_held_by_another() {
    let Some(db) = Database::create() else { return };
    let a = instance(&db).await;
    let b = instance(&db).await;
    let agent = a.register("web-01").await;

    // Held on A (nothing pending yet), then a job is created through B.
    let held = hold_heartbeat(&a, &agent.id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = b.create_job_ok("acme/web", "web-01", SHA_A).await;
    let (answer, took) = held.await.expect("heartbeat task");
    assert_eq!(
        answer.job.as_ref().map(|j| j.id.as_str()),
        Some(job.id.as_str())
    );
    assert!(took < WOKEN_WITHIN, "the long-poll was not woken: {took:?}");

    // A cancel through B reaches the agent's next long-poll on A too.
    let held = hold_heartbeat(&a, &agent.id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled = b
        .client
        .post(b.url(&format!("/v1/jobs/{}/cancel", job.id)))
        .send()
        .await
        .expect("POST cancel");
    assert!(cancelled.status().is_success(), "{}", cancelled.status());
    let (answer, took) = held.await.expect("heartbeat task");
    assert_eq!(answer.cancel, vec![job.id.clone()]);
    assert!(took < WOKEN_WITHIN, "the long-poll was not woken: {took:?}");

    drop((a, b));
}

/// Uploads `lines` of `job` through `app` as `agent` with `token`.
async fn upload_through(app: &TestApp, token: &str, agent: &str, job: &Job, lines: Vec<Value>) {
    let response = app
        .client
        .post(app.url(&format!("/v1/jobs/{}/logs", job.id)))
        .bearer_auth(token)
        .json(&json!({"lease": job.lease, "agent_id": agent, "lines": lines}))
        .send()
        .await
        .expect("POST logs");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_streams_on_one_instance_show_lines_and_statuses_from_every_instance() {
    let Some(db) = Database::create() else { return };
    let a = instance(&db).await;
    let b = instance(&db).await;
    let agent = a.register("web-02").await;
    let token = a.agent_token(&agent.id);
    a.create_job_ok("acme/web", "web-02", SHA_A).await;
    let job = a.heartbeat_job(&agent.id).await.expect("a job");

    let mut live = SseReader::open(&b, "", None).await;
    let job_streams = [
        SseReader::open(&a, &format!("job_id={}", job.id), None).await,
        SseReader::open(&b, &format!("job_id={}", job.id), None).await,
    ];
    // Through A, B, A, then B: B's stream shows all five, in order.
    upload_through(&a, &token, &agent.id, &job, lines(1..=2)).await;
    upload_through(&b, &token, &agent.id, &job, lines(3..=3)).await;
    upload_through(&a, &token, &agent.id, &job, lines(4..=4)).await;
    upload_through(&b, &token, &agent.id, &job, lines(5..=5)).await;
    let mut last_id = 0;
    for n in 1..=5 {
        let entry = live.next_log().await;
        assert_eq!(entry.text, format!("line {n}"));
        assert!(entry.id > last_id, "ids grow: {} after {last_id}", entry.id);
        last_id = entry.id;
    }

    // The job's end, reported through A right after the last upload
    // through B: on both instances the job stream shows all its lines, then
    // its end.
    let report = a
        .report(
            &job.id,
            &json!({"status": "success", "exit_code": 0, "lease": job.lease}),
        )
        .await;
    assert_eq!(report.status(), StatusCode::OK);
    for mut of_job in job_streams {
        let mut seen = Vec::new();
        let end = loop {
            let event = of_job.next().await;
            match event.event.as_str() {
                "log" => seen.push(serde_json::from_str::<LogEntry>(&event.data).unwrap().line),
                "status" => {
                    let status: Value = serde_json::from_str(&event.data).unwrap();
                    if status["status"] != "running" {
                        break status;
                    }
                }
                _ => {}
            }
        };
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
        assert_eq!(end["status"], "success");
        assert_eq!(end["job_id"], job.id.as_str());
    }

    drop((a, b));
}
