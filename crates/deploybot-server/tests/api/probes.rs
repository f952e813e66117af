//! `/health`, `/ready` and `/v1/status`.

use deploybot_wire::{HealthResponse, JobStatus, ReadyResponse, StatusResponse};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{SHA_A, SHA_B, ok_json, spawn_app};

#[tokio::test]
async fn health_and_ready_need_no_token_and_say_the_database_is_ok() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();

    let health = anonymous.get(app.url("/health")).send().await.unwrap();
    let ready = anonymous.get(app.url("/ready")).send().await.unwrap();

    assert_eq!(health.status(), StatusCode::OK);
    let health: HealthResponse = health.json().await.unwrap();
    assert_eq!(
        (health.status.as_str(), health.database.as_str()),
        ("ok", "ok")
    );
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: ReadyResponse = ready.json().await.unwrap();
    assert_eq!(ready.status, "ready");
    assert_eq!(ready.apps, 3);
}

#[tokio::test]
async fn status_counts_agents_and_jobs_and_lists_recent_failures() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let failed = app.heartbeat_job(&agent.id).await.unwrap();
    let report = json!({"status": "failed", "exit_code": 3, "error": "boom", "agent_id": agent.id});
    assert_eq!(
        app.report(&failed.id, &report).await.status(),
        StatusCode::OK
    );
    app.create_job_ok("acme/web", "web-01", SHA_B).await;

    let status: StatusResponse = ok_json(app.get("/v1/status").await).await;

    assert_eq!(status.database, "ok");
    assert_eq!(status.database_kind, "sqlite");
    assert_eq!((status.agents_online, status.agents_total), (1, 1));
    assert_eq!((status.jobs_pending, status.jobs_running), (1, 0));
    assert_eq!(status.recent_failures.len(), 1);
    assert_eq!(status.recent_failures[0].id, failed.id);
    assert_eq!(status.recent_failures[0].status, JobStatus::Failed);
    let anonymous = reqwest::Client::new()
        .get(app.url("/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}
