//! Registration, heartbeats and the jobs they hand out.

use std::sync::Arc;

use deploybot_wire::{Agent, CreatedToken, HeartbeatResponse, JobStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ENROLLMENT_TOKEN, SHA_A, SHA_B, SHA_C, assert_error, ok_json, spawn_app};

// An agent for a hostname no app lists is told so (it would otherwise
// wait for jobs that never come); one for a listed host is not.
#[tokio::test]
async fn registering_a_host_no_app_lists_answers_a_warning() {
    let app = spawn_app().await;

    let stray = app
        .register_with("web-99", ENROLLMENT_TOKEN)
        .await
        .unwrap_or_else(|_| panic!("refused"));
    let listed = app
        .register_with("web-01", ENROLLMENT_TOKEN)
        .await
        .unwrap_or_else(|_| panic!("refused"));

    assert_eq!(
        stray.warning.as_deref(),
        Some(
            "no app in apps.yaml deploys to web-99, so this agent gets no jobs until one does \
             (is --hostname right? its hosts: api-01, docs-01, web-01, web-02)"
        )
    );
    assert_eq!(listed.warning, None);
}

#[tokio::test]
async fn registering_answers_with_an_agent_id() {
    let app = spawn_app().await;

    let agent = app.register("web-01").await;

    assert!(!agent.id.is_empty());
    assert_eq!(agent.hostname, "web-01");
    assert_eq!(
        agent.capabilities,
        deploybot_wire::Capabilities::Names(vec!["docker".into()])
    );
    let listed: Vec<Agent> = ok_json(app.get("/v1/agents").await).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, agent.id);
}

#[tokio::test]
async fn the_same_hostname_gets_the_same_agent_id() {
    let app = spawn_app().await;

    let first = app.register("web-01").await;
    let again = app.register("web-01").await;
    let other = app.register("web-02").await;

    assert_eq!(again.id, first.id);
    assert_ne!(other.id, first.id);
    let listed: Vec<Agent> = ok_json(app.get("/v1/agents").await).await;
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn an_invalid_hostname_is_422() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/v1/agents/register"))
        .bearer_auth(ENROLLMENT_TOKEN)
        .json(&json!({"hostname": "web 01; rm -rf /"}))
        .send()
        .await
        .unwrap();

    assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn a_heartbeat_with_an_unknown_agent_token_is_401_and_says_register_again() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/v1/agents/some-agent/heartbeat"))
        .bearer_auth("dbt_agent_0000000000000000000000000000000000000000000000000000000000000000")
        .send()
        .await
        .unwrap();

    let error = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert!(error.error.message.contains("register again"), "{error:?}");
}

#[tokio::test]
async fn a_heartbeat_as_another_agent_is_403() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let other = app.register("web-02").await;

    let response = app
        .client
        .post(app.url(&format!("/v1/agents/{}/heartbeat", other.id)))
        .bearer_auth(app.agent_token(&agent.id))
        .send()
        .await
        .unwrap();

    let error = assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(error.error.message.contains(&other.id), "{error:?}");
}

#[tokio::test]
async fn a_heartbeat_hands_out_the_oldest_pending_job_of_its_own_host_only() {
    let app = spawn_app().await;
    // Two apps deploy to web-01, so neither job supersedes the other.
    let oldest = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let newer = app.create_job_ok("acme/api", "web-01", SHA_B).await;
    let elsewhere = app.register("web-02").await;
    let agent = app.register("web-01").await;

    assert!(app.heartbeat_job(&elsewhere.id).await.is_none());
    let handed = app.heartbeat_job(&agent.id).await.expect("a job");

    assert_eq!(handed.id, oldest.id);
    assert_eq!(handed.status, JobStatus::Running);
    assert_eq!(handed.assigned_agent.as_deref(), Some(agent.id.as_str()));
    assert!(handed.started_at.is_some());
    assert_eq!(app.get_job(&oldest.id).await.status, JobStatus::Running);
    assert_eq!(app.get_job(&newer.id).await.status, JobStatus::Pending);
}

#[tokio::test]
async fn a_host_runs_one_job_at_a_time_and_gets_the_next_after_reporting() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let first = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    assert_eq!(
        app.heartbeat_job(&agent.id).await.map(|j| j.id),
        Some(first.id.clone())
    );
    let second = app.create_job_ok("acme/web", "web-01", SHA_B).await;

    assert!(
        app.heartbeat_job(&agent.id).await.is_none(),
        "no second job while the first runs"
    );
    assert_eq!(app.get_job(&second.id).await.status, JobStatus::Pending);

    let done = app
        .report(
            &first.id,
            &json!({"status": "success", "exit_code": 0, "agent_id": agent.id}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let next = app.heartbeat_job(&agent.id).await.expect("the next job");
    assert_eq!(next.id, second.id);
    assert!(app.heartbeat_job(&agent.id).await.is_none());
}

/// A heartbeat whose answer handed out a job but never reached the agent:
/// the agent's next heartbeat lists no job, so that one is lost and the
/// host takes the next.
#[tokio::test]
async fn a_job_whose_hand_out_answer_was_lost_is_freed_by_the_next_heartbeat() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let first = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    // Another app's: the same app's newer job would supersede the first.
    let second = app.create_job_ok("acme/api", "web-01", SHA_B).await;
    // The answer is dropped, as if the controller died after its commit.
    assert_eq!(
        app.heartbeat_job(&agent.id).await.map(|j| j.id),
        Some(first.id.clone())
    );
    let beat = |running: Value| {
        let app = &app;
        let agent = agent.id.clone();
        async move {
            let response = app
                .client
                .post(app.url(&format!("/v1/agents/{agent}/heartbeat")))
                .bearer_auth(app.agent_token(&agent))
                .json(&json!({"status": "idle", "running_jobs": running}))
                .send()
                .await
                .unwrap();
            ok_json::<HeartbeatResponse>(response).await.job
        }
    };

    // Listing it keeps it running.
    assert!(beat(json!([first.id])).await.is_none());
    assert_eq!(app.get_job(&first.id).await.status, JobStatus::Running);

    // Not listing it loses it, and the same answer hands out the next job.
    let next = beat(json!([])).await.expect("the next job");
    assert_eq!(next.id, second.id);
    let lost = app.get_job(&first.id).await;
    assert_eq!(lost.status, JobStatus::Lost);
    assert!(
        lost.error
            .as_deref()
            .unwrap_or_default()
            .contains("not running this job"),
        "{:?}",
        lost.error
    );
    // The job it does have is listed from now on, and kept.
    assert!(beat(json!([second.id])).await.is_none());
    assert_eq!(app.get_job(&second.id).await.status, JobStatus::Running);
}

#[tokio::test]
async fn a_job_enqueued_after_an_empty_heartbeat_is_handed_out_by_the_next() {
    let app = spawn_app().await;
    let agent = app.register("api-01").await;
    assert!(app.heartbeat_job(&agent.id).await.is_none());

    let job = app.create_job_ok("acme/api", "api-01", SHA_C).await;

    assert_eq!(
        app.heartbeat_job(&agent.id).await.map(|j| j.id),
        Some(job.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_64_concurrent_heartbeats_exactly_one_gets_the_job() {
    let app = Arc::new(spawn_app().await);
    let agent = app.register("web-01").await;
    let job = app.create_job_ok("acme/web", "web-01", SHA_A).await;

    let mut beats = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let app = app.clone();
        let id = agent.id.clone();
        beats.spawn(async move { ok_json::<HeartbeatResponse>(app.heartbeat(&id).await).await });
    }
    let answers = beats.join_all().await;

    assert_eq!(answers.len(), 64);
    let handed: Vec<String> = answers
        .into_iter()
        .filter_map(|answer| answer.job.map(|j| j.id))
        .collect();
    assert_eq!(handed, [job.id.as_str()]);
    assert_eq!(app.get_job(&job.id).await.status, JobStatus::Running);
}

#[tokio::test]
async fn an_enrollment_token_does_not_take_a_host_from_its_agent() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let token = app.agent_token(&agent.id);
    let job = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    app.heartbeat_job(&agent.id).await.expect("the job");

    // Someone with the (shared) enrollment token registers web-01 again.
    let refused = app
        .register_with("web-01", ENROLLMENT_TOKEN)
        .await
        .expect_err("refused");
    let body = assert_error(refused, StatusCode::CONFLICT, "host_has_agent").await;
    assert!(
        body.detail.contains("deploybot agents replace web-01"),
        "{}",
        body.detail
    );
    // Nothing changed: the agent keeps its token, its job and the host.
    assert_eq!(app.get_job(&job.id).await.status, JobStatus::Running);
    assert_eq!(app.heartbeat(&agent.id).await.status(), StatusCode::OK);

    // The agent itself registers again with its own token; another host's
    // agent token is refused.
    let again = app.register_with("web-01", &token).await.expect("its own");
    assert_eq!(again.agent.id, agent.id);
    let other = app.register("web-02").await;
    let foreign = app
        .register_with("web-01", &app.agent_token(&other.id))
        .await
        .expect_err("another host's token");
    assert_error(foreign, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_token_made_for_the_host_replaces_its_agent_and_one_for_another_host_does_not() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let old_token = app.agent_token(&agent.id);
    let job = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    app.heartbeat_job(&agent.id).await.expect("the job");
    let made = |host: &str| json!({"name": format!("replace {host}"), "role": "enroll", "hostname": host, "single_use": true});

    let for_web02: CreatedToken = app.make_token(made("web-02")).await;
    assert_eq!(for_web02.info.hostname.as_deref(), Some("web-02"));
    let wrong_host = app
        .register_with("web-01", &for_web02.token)
        .await
        .expect_err("made for web-02");
    assert_error(wrong_host, StatusCode::FORBIDDEN, "forbidden").await;

    let for_web01: CreatedToken = app.make_token(made("web-01")).await;
    let replaced = app
        .register_with("web-01", &for_web01.token)
        .await
        .expect("made for web-01");
    assert_eq!(replaced.agent.id, agent.id);
    // The previous agent is out, and its job with it.
    let path = format!("/v1/agents/{}/heartbeat", agent.id);
    let beat = app
        .client
        .post(app.url(&path))
        .bearer_auth(&old_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(beat.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get_job(&job.id).await.status, JobStatus::Lost);
    // The audit log says the host changed hands.
    let audit: deploybot_wire::AuditResponse = ok_json(app.get("/v1/audit").await).await;
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.action == "register" && e.target.contains("previous one stopped working")),
        "{audit:?}"
    );
    // Only a token for the host may do so, and a token for one host only
    // comes from an enroll token.
    let bad = app
        .client
        .post(app.url("/v1/tokens"))
        .json(&json!({"name": "x", "role": "deploy", "hostname": "web-01"}))
        .send()
        .await
        .unwrap();
    assert_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
}

#[tokio::test]
async fn after_a_revocation_the_enrollment_token_registers_the_host_again() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let revoked = app
        .client
        .delete(app.url(&format!("/v1/agents/{}", agent.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let again = app
        .register_with("web-01", ENROLLMENT_TOKEN)
        .await
        .expect("the host is free");
    assert_eq!(again.agent.id, agent.id);
}
