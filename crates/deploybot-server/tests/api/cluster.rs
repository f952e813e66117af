//! Several controllers on one PostgreSQL database: what one commits, the
//! others hear of (LISTEN/NOTIFY) and act on at once. Each test gets a
//! database of its own (see `deploybot_test_postgres` for which server).

use std::time::{Duration, Instant};

use deploybot_server::SettingsLayer;
use deploybot_test_postgres::Database;
use deploybot_wire::{HeartbeatResponse, Job, LogEntry};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{SHA_A, TestApp, ok_json, spawn_app_with_settings};
use crate::logs::{SseReader, lines};
use crate::metrics::wait_for_sample;

/// A held heartbeat answered sooner than this was woken, not timed out
/// (it waits 20 s); generous, for slow CI machines.
const WOKEN_WITHIN: Duration = Duration::from_secs(5);

/// A database of its own, dropped at the end of the test; `None` when the
/// PostgreSQL tests are skipped (see `deploybot_test_postgres`).
fn database() -> Option<Database> {
    Database::create("deploybot_cluster")
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
    let Some(db) = database() else { return };
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
    let Some(db) = database() else { return };
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

/// A heartbeat through `app` with `token`, saying `status`.
async fn heartbeat_through(
    app: &TestApp,
    token: &str,
    agent_id: &str,
    status: &str,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/agents/{agent_id}/heartbeat")))
        .bearer_auth(token)
        .json(&json!({"status": status}))
        .send()
        .await
        .expect("POST heartbeat")
}

/// The agent as `app` shows it in `GET /v1/agents`.
async fn agent_seen_by(app: &TestApp, agent_id: &str) -> deploybot_wire::Agent {
    ok_json::<Vec<deploybot_wire::Agent>>(app.get("/v1/agents").await)
        .await
        .into_iter()
        .find(|agent| agent.id == agent_id)
        .unwrap_or_else(|| panic!("agent {agent_id} not listed"))
}

/// Waits until `app` shows the agent with `status`.
async fn wait_agent_status(app: &TestApp, agent_id: &str, status: deploybot_wire::AgentStatus) {
    let deadline = Instant::now() + WOKEN_WITHIN;
    loop {
        let agent = agent_seen_by(app, agent_id).await;
        if agent.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still shows {agent:?}, not {status:?}",
            app.address
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registered_through_one_instance_works_through_every_other() {
    use deploybot_wire::AgentStatus::{Busy, Idle};
    let Some(db) = database() else { return };
    // Both instances run before the agent enrolls: B never served its
    // registration and did not load it at start.
    let a = instance(&db).await;
    let b = instance(&db).await;
    let agent = a.register("web-01").await;
    let token = a.agent_token(&agent.id);

    // Its heartbeats through B are answered, and get a job queued through A.
    let job = a.create_job_ok("acme/web", "web-01", SHA_A).await;
    let answer: HeartbeatResponse =
        ok_json(heartbeat_through(&b, &token, &agent.id, "idle").await).await;
    assert_eq!(answer.job.map(|j| j.id), Some(job.id.clone()));

    // Alternating between the instances, as a round-robin balancer sends
    // them, each heartbeat is answered and both show what the newest said.
    for (through, status, shown) in [(&a, "busy", Busy), (&b, "idle", Idle), (&a, "busy", Busy)] {
        let response = heartbeat_through(through, &token, &agent.id, status).await;
        assert_eq!(response.status(), StatusCode::OK);
        wait_agent_status(&a, &agent.id, shown).await;
        wait_agent_status(&b, &agent.id, shown).await;
    }
    assert_eq!(b.get_job(&job.id).await.status.to_string(), "running");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_instance_ends_the_agents_long_poll_held_by_another() {
    let Some(db) = database() else { return };
    let a = instance(&db).await;
    let b = instance(&db).await;
    let agent = a.register("web-01").await;
    let token = a.agent_token(&agent.id);

    // Held on B (waiting 20 s), then the agent is revoked through A: B
    // answers the held request at once, refused.
    let held = b
        .client
        .post(b.url(&format!("/v1/agents/{}/heartbeat?wait=20", agent.id)))
        .bearer_auth(&token)
        .json(&json!({"status": "idle"}))
        .send();
    let held = tokio::spawn(async move {
        let sent = Instant::now();
        let response = held.await.expect("POST heartbeat");
        (response.status(), sent.elapsed())
    });
    wait_for_sample(&b, "deploybot_long_polls_held", 1.0).await;
    let revoked = a
        .client
        .delete(a.url(&format!("/v1/agents/{}", agent.id)))
        .send()
        .await
        .expect("DELETE agent");
    assert_eq!(revoked.status(), StatusCode::OK);
    let (status, took) = held.await.expect("heartbeat task");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        took < WOKEN_WITHIN,
        "the held long-poll was not ended: {took:?}"
    );
    // Its token no longer works anywhere.
    for app in [&a, &b] {
        let refused = heartbeat_through(app, &token, &agent.id, "idle").await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }

    // Enrolled again through B, it works through A at once, under its id.
    let again = b.register("web-01").await;
    assert_eq!(again.id, agent.id);
    let new_token = b.agent_token(&again.id);
    let answered = heartbeat_through(&a, &new_token, &again.id, "idle").await;
    assert_eq!(answered.status(), StatusCode::OK);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_kept_alive_by_heartbeats_through_another_instance() {
    let Some(db) = database() else { return };
    let with_lease = || SettingsLayer {
        database_url: Some(db.url.clone()),
        lease_timeout: Some("2s".into()),
        ..Default::default()
    };
    let a = spawn_app_with_settings(with_lease()).await;
    let b = spawn_app_with_settings(with_lease()).await;
    let agent = a.register("web-01").await;
    let token = a.agent_token(&agent.id);
    a.create_job_ok("acme/web", "web-01", SHA_A).await;
    let job = a.heartbeat_job(&agent.id).await.expect("a job");

    // Three lease timeouts of heartbeats through B only: whichever instance
    // expires leases, the job stays running.
    let beating = Instant::now();
    while beating.elapsed() < Duration::from_secs(6) {
        let response = heartbeat_through(&b, &token, &agent.id, "busy").await;
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for app in [&a, &b] {
        assert_eq!(app.get_job(&job.id).await.status.to_string(), "running");
    }

    // Silent, it loses the job after its lease.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = a.get_job(&job.id).await;
        if now.status.to_string() == "lost" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lease never expired: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a, b));
}
