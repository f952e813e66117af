//! `PUT /v1/jobs/{id}/status`: agents' reports on their jobs.

use deploybot_wire::{Agent, Job, JobStatus, UpdateJobStatusResponse};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{SHA_A, TestApp, assert_error, ok_json, spawn_app};

/// A job running on web-01's agent.
async fn running_job(app: &TestApp) -> (Agent, Job) {
    let agent = app.register("web-01").await;
    let job = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let running = app.heartbeat_job(&agent.id).await.expect("a job");
    assert_eq!(running.id, job.id);
    (agent, running)
}

#[tokio::test]
async fn a_success_report_is_stored_with_its_exit_code() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;

    let answer: UpdateJobStatusResponse = ok_json(
        app.report(
            &job.id,
            &json!({"status": "success", "exit_code": 0, "agent_id": agent.id}),
        )
        .await,
    )
    .await;

    assert_eq!(answer.job_id, job.id);
    assert_eq!(answer.status, JobStatus::Success);
    assert!(answer.updated);
    let stored = app.get_job(&job.id).await;
    assert_eq!(stored.status, JobStatus::Success);
    assert_eq!(stored.exit_code, Some(0));
    assert!(stored.error.is_none());
    assert!(stored.completed_at.is_some());
    assert!(stored.completed_at >= stored.started_at);
}

#[tokio::test]
async fn a_failure_report_is_stored_with_its_exit_code_and_error() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;

    let answer: UpdateJobStatusResponse = ok_json(
        app.report(
            &job.id,
            &json!({"status": "failed", "exit_code": 3, "error": "deploy.sh: exit 3", "agent_id": agent.id}),
        )
        .await,
    )
    .await;

    assert!(answer.updated);
    let stored = app.get_job(&job.id).await;
    assert_eq!(stored.status, JobStatus::Failed);
    assert_eq!(stored.exit_code, Some(3));
    assert_eq!(stored.error.as_deref(), Some("deploy.sh: exit 3"));
    assert!(stored.completed_at.is_some());
}

#[tokio::test]
async fn repeating_the_final_status_answers_200_not_updated() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;
    let report = json!({"status": "success", "exit_code": 0, "agent_id": agent.id});
    ok_json::<UpdateJobStatusResponse>(app.report(&job.id, &report).await).await;
    let completed_at = app.get_job(&job.id).await.completed_at;

    let again: UpdateJobStatusResponse = ok_json(app.report(&job.id, &report).await).await;

    assert!(!again.updated);
    assert_eq!(again.status, JobStatus::Success);
    assert_eq!(app.get_job(&job.id).await.completed_at, completed_at);
}

#[tokio::test]
async fn running_is_an_acknowledgement_that_changes_nothing() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;

    let answer: UpdateJobStatusResponse = ok_json(
        app.report(&job.id, &json!({"status": "running", "agent_id": agent.id}))
            .await,
    )
    .await;

    assert!(!answer.updated);
    assert_eq!(app.get_job(&job.id).await, job);
}

#[tokio::test]
async fn a_finished_job_cannot_go_back_to_running() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;
    ok_json::<UpdateJobStatusResponse>(
        app.report(&job.id, &json!({"status": "success", "agent_id": agent.id}))
            .await,
    )
    .await;

    let response = app
        .report(&job.id, &json!({"status": "running", "agent_id": agent.id}))
        .await;

    assert_error(response, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(app.get_job(&job.id).await.status, JobStatus::Success);
}

#[tokio::test]
async fn a_report_from_another_agent_is_403_and_changes_nothing() {
    let app = spawn_app().await;
    let (_agent, job) = running_job(&app).await;
    let intruder = app.register("web-02").await;

    let response = app
        .report(
            &job.id,
            &json!({"status": "failed", "exit_code": 1, "agent_id": intruder.id}),
        )
        .await;

    let error = assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(error.error.message.contains(&intruder.id), "{error:?}");
    assert_eq!(app.get_job(&job.id).await, job);
}

#[tokio::test]
async fn a_report_on_a_pending_job_is_403_as_no_agent_holds_it() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    let job = app.create_job_ok("acme/web", "web-02", SHA_A).await;

    let response = app
        .report(
            &job.id,
            &json!({"status": "success", "exit_code": 0, "agent_id": agent.id}),
        )
        .await;

    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.get_job(&job.id).await, job);
}

#[tokio::test]
async fn statuses_an_agent_cannot_report_are_422() {
    let app = spawn_app().await;
    let (agent, job) = running_job(&app).await;

    for status in ["pending", "superseded", "lost"] {
        let response = app
            .report(&job.id, &json!({"status": status, "agent_id": agent.id}))
            .await;
        assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
    }
    let response = app.report(&job.id, &json!({"status": "done"})).await;
    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert_eq!(app.get_job(&job.id).await.status, JobStatus::Running);
}

#[tokio::test]
async fn a_report_on_an_unknown_job_is_404() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;

    let response = app
        .report(
            "no-such-job",
            &json!({"status": "success", "agent_id": agent.id}),
        )
        .await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}
