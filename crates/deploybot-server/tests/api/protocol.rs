//! The agent protocol: long-poll heartbeats, leases, cancel, retry, expiry.

use std::time::Duration;

use deploybot_wire::{HeartbeatResponse, Job, JobResponse, JobStatus};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    SHA_A, SHA_B, TestApp, assert_error, ok_json, spawn_app, spawn_app_with_lease,
};
use crate::metrics::wait_for_sample;

impl TestApp {
    pub async fn long_poll(
        &self,
        agent_id: &str,
        wait_secs: u64,
        body: serde_json::Value,
    ) -> HeartbeatResponse {
        let response = self
            .client
            .post(self.url(&format!("/v1/agents/{agent_id}/heartbeat?wait={wait_secs}")))
            .bearer_auth(self.agent_token(agent_id))
            .json(&body)
            .send()
            .await
            .expect("POST heartbeat");
        ok_json(response).await
    }

    /// Sends a long-poll in the background, to answer it later.
    fn spawn_long_poll(
        &self,
        agent_id: &str,
        wait_secs: u64,
    ) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let request = self
            .client
            .post(self.url(&format!("/v1/agents/{agent_id}/heartbeat?wait={wait_secs}")))
            .bearer_auth(self.agent_token(agent_id))
            .json(&json!({}));
        tokio::spawn(request.send())
    }

    pub async fn post_job_action(&self, job_id: &str, action: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/jobs/{job_id}/{action}")))
            .send()
            .await
            .expect("POST job action")
    }

    /// Polls the job until `done` holds, for at most `within`.
    pub async fn wait_for_job(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Job) -> bool,
    ) -> Job {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let job = self.get_job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job never got there: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_held_heartbeat_returns_as_soon_as_a_job_for_its_host_is_queued() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    let poll = app.spawn_long_poll(&agent.id, 30);
    wait_for_sample(&app, "deploybot_long_polls_held", 1.0).await;
    let job = app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the held heartbeat was woken, not left to its 30 s wait")
        .unwrap()
        .unwrap();
    let answer: HeartbeatResponse = answer.json().await.unwrap();
    assert_eq!(answer.job.map(|j| j.id), Some(job.id));
}

#[tokio::test]
async fn a_stopping_controller_answers_its_held_long_polls_at_once() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let poll = app.spawn_long_poll(&agent.id, 30);
    wait_for_sample(&app, "deploybot_long_polls_held", 1.0).await;

    // A graceful stop waits for the requests in flight: it is quick only if
    // the held long-poll is answered at once, not after its 30 s.
    let restarted = tokio::time::timeout(Duration::from_secs(10), app.restart())
        .await
        .expect("the controller stopped without waiting out the long-poll");
    let answer = poll.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: HeartbeatResponse = answer.json().await.unwrap();
    assert!(
        answer.job.is_none() && answer.cancel.is_empty(),
        "{answer:?}"
    );
    drop(restarted);
}

#[tokio::test]
async fn a_heartbeat_without_wait_answers_at_once_and_wait_is_bounded() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    assert!(app.heartbeat_job(&agent.id).await.is_none());
    let too_long = app
        .client
        .post(app.url(&format!("/v1/agents/{}/heartbeat?wait=61", agent.id)))
        .bearer_auth(app.agent_token(&agent.id))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(too_long, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn a_draining_agent_gets_no_new_job() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let answer = app
        .long_poll(&agent.id, 0, json!({"status": "idle", "draining": true}))
        .await;
    assert!(answer.job.is_none());
    assert!(app.heartbeat_job(&agent.id).await.is_some());
}

#[tokio::test]
async fn a_handed_out_job_carries_a_lease_that_reports_must_match() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let job = app.heartbeat_job(&agent.id).await.unwrap();
    let lease = job.lease.expect("a running job has a lease");

    let stale = app
        .report(
            &job.id,
            &json!({"status": "success", "exit_code": 0, "lease": lease + 1}),
        )
        .await;
    assert_error(stale, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(app.get_job(&job.id).await.status, JobStatus::Running);

    let current = app
        .report(
            &job.id,
            &json!({"status": "success", "exit_code": 0, "lease": lease, "agent_id": agent.id}),
        )
        .await;
    assert_eq!(current.status(), StatusCode::OK);
    assert_eq!(app.get_job(&job.id).await.status, JobStatus::Success);
}

#[tokio::test]
async fn cancelling_a_pending_job_is_immediate() {
    let app = spawn_app().await;
    let job = app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let answer: JobResponse = ok_json(app.post_job_action(&job.id, "cancel").await).await;
    assert_eq!(answer.job.status, JobStatus::Cancelled);
    let agent = app.register("web-02").await;
    assert!(app.heartbeat_job(&agent.id).await.is_none());
}

#[tokio::test]
async fn cancelling_a_running_job_tells_its_agent_at_once() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let job = app.heartbeat_job(&agent.id).await.unwrap();

    let poll = {
        let (client, url) = (
            app.client.clone(),
            app.url(&format!("/v1/agents/{}/heartbeat?wait=30", agent.id)),
        );
        let token = app.agent_token(&agent.id);
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"status": "busy"}))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer: JobResponse = ok_json(app.post_job_action(&job.id, "cancel").await).await;
    assert_eq!(answer.job.status, JobStatus::Running);
    assert!(answer.job.cancel_requested);

    let held = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the held heartbeat was woken by the cancel")
        .unwrap()
        .unwrap();
    let held: HeartbeatResponse = held.json().await.unwrap();
    assert_eq!(held.cancel, std::slice::from_ref(&job.id));

    let reported = app
        .report(
            &job.id,
            &json!({"status": "cancelled", "agent_id": agent.id, "lease": job.lease}),
        )
        .await;
    assert_eq!(reported.status(), StatusCode::OK);
    assert_eq!(app.get_job(&job.id).await.status, JobStatus::Cancelled);
    assert!(
        app.long_poll(&agent.id, 0, json!({}))
            .await
            .cancel
            .is_empty()
    );

    let again = app.post_job_action(&job.id, "cancel").await;
    assert_error(again, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test]
async fn a_finished_job_can_be_retried_as_a_new_attempt() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let job = app.heartbeat_job(&agent.id).await.unwrap();

    let early = app.post_job_action(&job.id, "retry").await;
    assert_error(early, StatusCode::CONFLICT, "conflict").await;

    app.report(
        &job.id,
        &json!({"status": "failed", "exit_code": 3, "lease": job.lease}),
    )
    .await;
    let response = app.post_job_action(&job.id, "retry").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let retry: JobResponse = response.json().await.unwrap();
    assert_eq!(retry.job.attempt, 2);
    assert_eq!(retry.job.retry_of.as_deref(), Some(job.id.as_str()));
    assert_eq!(retry.job.sha.as_deref(), Some(SHA_A));
    assert_eq!(retry.job.deploy, job.deploy);
    assert_eq!(
        app.heartbeat_job(&agent.id).await.map(|j| j.id),
        Some(retry.job.id)
    );

    let missing = app.post_job_action("no-such-job", "retry").await;
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_silent_agent_loses_its_job_and_the_host_takes_the_next() {
    let app = spawn_app_with_lease("1s").await;
    let agent = app.register("web-02").await;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let job = app.heartbeat_job(&agent.id).await.unwrap();
    let next = app.create_job_ok("acme/api", "web-01", SHA_B).await;
    let queued = app
        .create_job(&json!({"repo": "acme/web", "ref": "refs/heads/release/1", "host": "web-02", "app": "web"}))
        .await;
    assert_eq!(queued.status(), StatusCode::CREATED);
    let queued: JobResponse = queued.json().await.unwrap();

    // The agent goes silent: after the lease timeout its job is lost.
    let lost = app
        .wait_for_job(&job.id, Duration::from_secs(15), |j| j.status.is_final())
        .await;
    assert_eq!(lost.status, JobStatus::Lost);
    assert!(
        lost.error.as_deref().unwrap_or("").contains("agent lost"),
        "{lost:?}"
    );

    // The host is free again: its next job goes out.
    assert_eq!(
        app.heartbeat_job(&agent.id).await.map(|j| j.id),
        Some(queued.job.id)
    );
    assert_eq!(app.get_job(&next.id).await.status, JobStatus::Pending);
}

#[tokio::test]
async fn registering_again_resolves_the_previous_sessions_job_at_once() {
    let app = spawn_app().await;
    let agent = app.register("web-02").await;
    app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let job = app.heartbeat_job(&agent.id).await.unwrap();
    let again = app.register("web-02").await;
    assert_eq!(again.id, agent.id);
    let lost = app.get_job(&job.id).await;
    assert_eq!(lost.status, JobStatus::Lost);
    let late = app
        .report(&job.id, &json!({"status": "success", "lease": job.lease}))
        .await;
    assert_error(late, StatusCode::CONFLICT, "conflict").await;
}
