//! `GET /v1/hosts` and `DELETE /v1/hosts/{hostname}`.

use deploybot_wire::{AgentStatus, ForgottenHost, JobStatus, UpdateJobStatusResponse};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{SHA_A, SHA_B, assert_error, ok_json, spawn_app};

#[tokio::test]
async fn every_host_of_apps_yaml_is_listed_offline_until_an_agent_registers() {
    let app = spawn_app().await;

    let hosts = app.hosts().await;

    let names: Vec<&str> = hosts.iter().map(|h| h.hostname.as_str()).collect();
    assert_eq!(names, ["api-01", "docs-01", "web-01", "web-02"]);
    for host in &hosts {
        assert_eq!(host.agent_status, AgentStatus::Offline, "{}", host.hostname);
        assert!(host.agent_id.is_none() && host.last_seen.is_none());
        assert!(host.current_job.is_none() && host.last_job.is_none());
        assert_eq!(host.pending_jobs, 0);
    }
    assert_eq!(hosts[2].apps, ["web", "api"]);
    assert_eq!(hosts[1].apps, ["docs"]);
}

#[tokio::test]
async fn a_host_known_only_from_its_agent_is_listed() {
    let app = spawn_app().await;
    let agent = app.register("build-07").await;

    let host = app.host("build-07").await;

    assert_eq!(host.agent_id.as_deref(), Some(agent.id.as_str()));
    assert_eq!(host.agent_status, AgentStatus::Online);
    assert!(host.apps.is_empty());
    assert_eq!(app.hosts().await.len(), 5);
}

#[tokio::test]
async fn a_fresh_agent_shows_the_status_it_reports() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    assert_eq!(app.host("web-02").await.agent_status, AgentStatus::Online);

    assert!(app.heartbeat_job(&agent.id).await.is_none());

    let host = app.host("web-02").await;
    assert_eq!(host.agent_status, AgentStatus::Idle);
    assert!(host.last_seen.is_some());
    assert_eq!(app.host("web-01").await.agent_status, AgentStatus::Offline);
}

#[tokio::test]
async fn pending_jobs_are_counted_per_host() {
    let app = spawn_app().await;
    app.create_job_ok("acme/web", "web-01", SHA_A).await;
    app.create_job_ok("acme/api", "web-01", SHA_A).await;
    app.create_job_ok("acme/api", "api-01", SHA_A).await;

    assert_eq!(app.host("web-01").await.pending_jobs, 2);
    assert_eq!(app.host("api-01").await.pending_jobs, 1);
    assert_eq!(app.host("web-02").await.pending_jobs, 0);
}

#[tokio::test]
async fn the_running_job_is_current_and_becomes_last_when_it_finishes() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let first = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    app.heartbeat_job(&agent.id).await.expect("a job");
    let second = app.create_job_ok("acme/web", "web-01", SHA_B).await;

    let busy = app.host("web-01").await;
    assert_eq!(busy.current_job.as_ref().map(|j| &j.id), Some(&first.id));
    assert!(busy.last_job.is_none());
    assert_eq!(busy.pending_jobs, 1);

    ok_json::<UpdateJobStatusResponse>(
        app.report(
            &first.id,
            &json!({"status": "success", "exit_code": 0, "agent_id": agent.id}),
        )
        .await,
    )
    .await;

    let done = app.host("web-01").await;
    assert!(done.current_job.is_none());
    let last = done.last_job.expect("last job");
    assert_eq!(last.id, first.id);
    assert_eq!(last.status, JobStatus::Success);
    assert_eq!(done.pending_jobs, 1);
    assert_eq!(app.get_job(&second.id).await.status, JobStatus::Pending);
}

#[tokio::test]
async fn a_superseded_job_that_never_ran_is_not_the_hosts_last_job() {
    let app = spawn_app().await;
    let first = app.create_job_ok("acme/api", "api-01", SHA_A).await;
    app.create_job_ok("acme/api", "api-01", SHA_B).await;
    assert_eq!(app.get_job(&first.id).await.status, JobStatus::Superseded);

    let host = app.host("api-01").await;

    assert!(host.last_job.is_none(), "{:?}", host.last_job);
    assert_eq!(host.pending_jobs, 1);
}

// A host that no app lists and no agent uses any more can be forgotten;
// a listed host, a host with a live agent, or an unknown one cannot.
#[tokio::test]
async fn a_host_no_app_lists_is_forgotten_once_its_agent_is_gone() {
    let app = spawn_app().await;
    let old = app.register("old-01").await;
    app.register("web-01").await;
    let forget = |host: &'static str| {
        app.client
            .delete(app.url(&format!("/v1/hosts/{host}")))
            .send()
    };

    let listed = forget("web-01").await.unwrap();
    assert_error(listed, StatusCode::CONFLICT, "host_in_use").await;
    let live = forget("old-01").await.unwrap();
    assert_eq!(live.status(), StatusCode::CONFLICT);
    let text = live.text().await.unwrap();
    assert!(text.contains("the agent of old-01 is not silent"), "{text}");
    let unknown = forget("nope-01").await.unwrap();
    assert_error(unknown, StatusCode::NOT_FOUND, "not_found").await;

    // Its agent gone (revoked here; silent past the lease timeout works
    // the same), the host goes.
    let revoked = app
        .client
        .delete(app.url(&format!("/v1/agents/{}", old.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let forgotten: ForgottenHost = ok_json(forget("old-01").await.unwrap()).await;
    assert_eq!(forgotten.agent_id, old.id);
    let names: Vec<String> = app.hosts().await.into_iter().map(|h| h.hostname).collect();
    assert!(!names.contains(&"old-01".to_owned()), "{names:?}");
}

// The host is shown idle as soon as its agent reports the job's end, not
// at its next heartbeat (a long-poll later).
#[tokio::test]
async fn an_agent_that_reported_its_job_is_shown_idle_at_once() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let job = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let busy_beat = app
        .client
        .post(app.url(&format!("/v1/agents/{}/heartbeat", agent.id)))
        .bearer_auth(app.agent_token(&agent.id))
        .json(&json!({"status": "busy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(busy_beat.status(), StatusCode::OK);
    assert_eq!(app.host("web-01").await.agent_status, AgentStatus::Busy);

    ok_json::<UpdateJobStatusResponse>(
        app.report(&job.id, &json!({"status": "success", "exit_code": 0}))
            .await,
    )
    .await;

    assert_eq!(app.host("web-01").await.agent_status, AgentStatus::Idle);
}
