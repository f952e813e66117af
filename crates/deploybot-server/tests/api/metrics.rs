//! `GET /metrics`: the counters move as a webhook's jobs go through.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{SHA_A, TestApp, spawn_app, spawn_app_with_settings};

/// The value of the sample `name{labels}` (labels as printed), if present.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) async fn scrape(app: &TestApp) -> String {
    let response = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    response.text().await.unwrap()
}

/// Waits until `/metrics` shows `series` at `value` (at most 10 s).
pub(crate) async fn wait_for_sample(app: &TestApp, series: &str, value: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape(app).await;
        if sample(&text, series) == Some(value) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{series}: {text}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn metrics_follow_a_webhook_through_its_jobs() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    assert_eq!(
        sample(
            &before,
            r#"deploybot_webhook_deliveries_total{verdict="queued"}"#
        ),
        None
    );

    let agent = app.register("web-01").await;
    let pushed = app
        .push("metrics-1", "acme/web", "refs/heads/main", SHA_A)
        .await;
    let queued = scrape(&app).await;
    let job = app.heartbeat_job(&agent.id).await.unwrap();
    let report = json!({"status": "success", "exit_code": 0, "agent_id": agent.id});
    assert_eq!(app.report(&job.id, &report).await.status(), StatusCode::OK);
    let after = scrape(&app).await;

    assert_eq!(pushed.jobs_created.len(), 2);
    assert_eq!(
        sample(
            &queued,
            r#"deploybot_webhook_deliveries_total{verdict="queued"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &queued,
            r#"deploybot_jobs_created_total{app="web",source="webhook"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&queued, r#"deploybot_queue_depth{host="web-01"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&queued, r#"deploybot_agents{state="online"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, r#"deploybot_queue_depth{host="web-01"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"deploybot_jobs_finished_total{app="web",status="success"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "deploybot_job_queue_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after, "deploybot_job_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"deploybot_http_requests_total{method="POST",route="/v1/webhooks/github",status="200"}"#
        ),
        Some(1.0)
    );
    // Routes are templates: no job id ever becomes a label.
    assert!(after.contains(r#"route="/v1/jobs/{id}/status""#), "{after}");
    assert!(!after.contains(&job.id), "{after}");
}

#[tokio::test]
async fn bad_signatures_are_counted() {
    let app = spawn_app().await;
    let response = app
        .webhook("push", "metrics-bad")
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64)))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let text = scrape(&app).await;

    assert_eq!(
        sample(&text, "deploybot_webhook_signature_failures_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn metrics_can_require_a_read_token() {
    let app = spawn_app_with_settings(deploybot_server::SettingsLayer {
        metrics_auth: Some(true),
        ..Default::default()
    })
    .await;

    let anonymous = reqwest::get(app.url("/metrics")).await.unwrap();
    let with_token = app.get("/metrics").await;

    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(with_token.status(), StatusCode::OK);
}

#[tokio::test]
async fn held_long_polls_and_stream_clients_are_gauged() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    let token = app.agent_token(&agent.id);
    let url = app.url(&format!("/v1/agents/{}/heartbeat?wait=20", agent.id));
    let held = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .send()
            .await
    });
    let stream = app.get("/v1/logs/stream").await;
    assert_eq!(stream.status(), StatusCode::OK);

    // Both are counted once the requests are in: wait for it (no sleeps).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape(&app).await;
        if sample(&text, "deploybot_long_polls_held") == Some(1.0)
            && sample(&text, "deploybot_sse_clients") == Some(1.0)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::task::yield_now().await;
    }
    drop(stream);
    held.abort();
}

#[tokio::test]
async fn no_label_takes_a_value_the_client_chose() {
    let app = spawn_app().await;
    // Made-up methods and paths, each once: before, every one became a
    // label of its own, for good.
    for n in 0..50 {
        let method =
            reqwest::Method::from_bytes(format!("M{n}{}", "X".repeat(1000)).as_bytes()).unwrap();
        let response = app
            .client
            .request(method, app.url(&format!("/made-up-{n}")))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
        let job = app
            .client
            .get(app.url(&format!("/v1/jobs/job-{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(job.status(), StatusCode::NOT_FOUND);
    }
    let text = scrape(&app).await;
    assert!(!text.contains("XXXX"), "a method became a label");
    assert!(!text.contains("made-up"), "a path became a label");
    assert!(!text.contains("job-1"), "an id became a label");
    assert!(
        sample(
            &text,
            r#"deploybot_http_requests_total{method="other",route="other",status="404"}"#
        )
        .is_some_and(|count| count >= 50.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"deploybot_http_requests_total{method="GET",route="/v1/jobs/{id}",status="404"}"#
        ) == Some(50.0),
        "{text}"
    );
}
