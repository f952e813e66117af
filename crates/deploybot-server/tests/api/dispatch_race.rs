//! The dispatch hint under concurrency: a pending job must never be stranded.

use std::sync::Arc;

use deploybot_wire::HeartbeatResponse;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, ok_json, spawn_app};

async fn finish(app: &TestApp, job_id: &str, agent_id: &str) {
    let response = app
        .report(job_id, &json!({"status": "success", "agent_id": agent_id}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Each round races six heartbeats against one enqueue for the same host,
/// then finishes whatever runs. Afterwards, if a job is pending and none
/// runs, a heartbeat must hand it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_heartbeats_and_enqueues_never_strand_a_pending_job() {
    let app = Arc::new(spawn_app().await);
    let agent = app.register("web-02").await;
    for round in 1..=200u32 {
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (app, id) = (app.clone(), agent.id.clone());
            requests.spawn(async move {
                ok_json::<HeartbeatResponse>(app.heartbeat(&id).await).await;
            });
        }
        let creator = app.clone();
        requests.spawn(async move {
            let sha = format!("{round:040x}");
            let response = creator
                .create_job(
                    &json!({"repo": "acme/web", "ref": "main", "host": "web-02", "sha": sha}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::CREATED);
        });
        requests.join_all().await;
        for job in app.list_jobs("host=web-02&status=running").await {
            finish(&app, &job.id, &agent.id).await;
        }

        let pending = app.list_jobs("host=web-02&status=pending").await;
        assert!(pending.len() <= 1, "older pending jobs are superseded");
        if let Some(waiting) = pending.first() {
            let handed = app.heartbeat_job(&agent.id).await;
            assert_eq!(
                handed.as_ref().map(|j| &j.id),
                Some(&waiting.id),
                "round {round}: job {} is pending, no job runs, yet the heartbeat got nothing",
                waiting.id
            );
            finish(&app, &waiting.id, &agent.id).await;
        }
    }
}
