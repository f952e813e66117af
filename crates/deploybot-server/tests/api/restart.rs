//! A controller restarted on the same data directory keeps its state.

use deploybot_wire::{AgentStatus, JobStatus};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{SHA_A, SHA_B, spawn_app};

#[tokio::test]
async fn jobs_and_agents_survive_a_restart() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let running = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    assert_eq!(
        app.heartbeat_job(&agent.id).await.map(|j| j.id),
        Some(running.id.clone())
    );
    let pending = app.create_job_ok("acme/web", "web-01", SHA_B).await;
    let pushed = app
        .push("d-before", "acme/api", "refs/heads/main", SHA_A)
        .await;

    let app = app.restart().await;

    let still_running = app.get_job(&running.id).await;
    assert_eq!(still_running.status, JobStatus::Running);
    assert_eq!(
        still_running.assigned_agent.as_deref(),
        Some(agent.id.as_str())
    );
    assert_eq!(app.get_job(&pending.id).await.status, JobStatus::Pending);
    for id in &pushed.jobs_created {
        assert_eq!(app.get_job(id).await.status, JobStatus::Pending);
    }
    assert_eq!(app.deliveries().await[0].delivery_id, "d-before");
    // The agent is still known: its id works without registering again.
    assert!(
        app.heartbeat_job(&agent.id).await.is_none(),
        "web-01 is busy"
    );
    assert_eq!(app.host("web-01").await.agent_status, AgentStatus::Idle);
    // Finishing the running job releases the pending one.
    let done = app
        .report(
            &running.id,
            &json!({"status": "success", "agent_id": agent.id}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(
        app.heartbeat_job(&agent.id).await.map(|j| j.id),
        Some(pending.id)
    );
}

#[tokio::test]
async fn pending_jobs_are_handed_out_after_a_restart() {
    let app = spawn_app().await;
    let pushed = app
        .push("d-before", "acme/api", "refs/heads/main", SHA_A)
        .await;

    let app = app.restart().await;
    let agent = app.register("api-01").await;

    let job = app.heartbeat_job(&agent.id).await.expect("the pushed job");
    assert!(pushed.jobs_created.contains(&job.id));
    assert_eq!(job.host, "api-01");
}
