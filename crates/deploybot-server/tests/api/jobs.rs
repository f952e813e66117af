//! `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`.

use deploybot_wire::{JobResponse, JobSource, JobStatus};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use crate::helpers::{SHA_A, SHA_B, SHA_C, assert_error, spawn_app};

#[tokio::test]
async fn creating_a_job_answers_201_with_the_pending_job() {
    let app = spawn_app().await;

    let response = app
        .create_job(&json!({
            "repo": "acme/web", "ref": "main", "host": "web-02",
            "sha": SHA_A.to_uppercase(), "metadata": {"by": "alice"},
        }))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let created: JobResponse = response.json().await.unwrap();
    assert_eq!(created.created, Some(true));
    let job = created.job;
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.app, "web");
    assert_eq!(job.repo, "acme/web");
    assert_eq!(job.git_ref, "refs/heads/main", "a bare name is a branch");
    assert_eq!(job.host, "web-02");
    assert_eq!(job.sha.as_deref(), Some(SHA_A), "sha is stored lowercase");
    assert_eq!(job.source, JobSource::Manual);
    assert_eq!(job.metadata, json!({"by": "alice"}));
    assert_eq!(job.deploy.command, ["./deploy.sh", "--fast"]);
    assert_eq!(job.attempt, 1);
    assert_eq!(app.get_job(&job.id).await, job);
}

#[tokio::test]
async fn the_same_repo_ref_sha_and_host_again_returns_the_open_job_with_200() {
    let app = spawn_app().await;
    let request = json!({"repo": "acme/web", "ref": "main", "host": "web-01", "sha": SHA_A});
    let first: JobResponse = app.create_job(&request).await.json().await.unwrap();

    let response = app.create_job(&request).await;

    assert_eq!(response.status(), StatusCode::OK);
    let again: JobResponse = response.json().await.unwrap();
    assert_eq!(again.created, Some(false));
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(app.list_jobs("").await.len(), 1);
}

// A job for a host nobody serves says so at once, on every read, instead
// of waiting in silence; once an agent is there, the reason goes.
#[tokio::test]
async fn a_pending_job_says_when_no_agent_has_registered_for_its_host() {
    let app = spawn_app().await;
    let request = json!({"repo": "acme/web", "ref": "main", "host": "web-02", "sha": SHA_A});
    let created: JobResponse = app.create_job(&request).await.json().await.unwrap();
    let waiting = "no agent has registered for web-02; the job waits for one";
    assert_eq!(created.job.pending_reason.as_deref(), Some(waiting));
    assert_eq!(
        app.get_job(&created.job.id).await.pending_reason.as_deref(),
        Some(waiting)
    );
    assert_eq!(
        app.list_jobs("").await[0].pending_reason.as_deref(),
        Some(waiting)
    );

    app.register("web-02").await;
    assert_eq!(app.get_job(&created.job.id).await.pending_reason, None);
}

#[tokio::test]
async fn a_bare_branch_name_and_its_full_ref_are_the_same_ref() {
    let app = spawn_app().await;
    let short = json!({"repo": "acme/web", "ref": "main", "host": "web-01", "sha": SHA_A});
    let full =
        json!({"repo": "acme/web", "ref": "refs/heads/main", "host": "web-01", "sha": SHA_A});
    let first: JobResponse = app.create_job(&short).await.json().await.unwrap();

    let again: JobResponse = app.create_job(&full).await.json().await.unwrap();

    assert_eq!(again.created, Some(false));
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(first.job.git_ref, "refs/heads/main");
}

#[tokio::test]
async fn a_host_not_paired_with_the_repo_is_422_naming_the_apps_hosts() {
    let app = spawn_app().await;

    let response = app
        .create_job(&json!({"repo": "acme/web", "ref": "main", "host": "api-01"}))
        .await;

    let error = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let message = &error.error.message;
    assert!(
        message.contains("api-01") && message.contains("web-01") && message.contains("web-02"),
        "{message}"
    );
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn an_unknown_repo_is_422() {
    let app = spawn_app().await;

    let response = app
        .create_job(&json!({"repo": "acme/unknown", "ref": "main", "host": "web-01"}))
        .await;

    let error = assert_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(error.error.message.contains("acme/unknown"));
}

#[tokio::test]
async fn malformed_values_are_422() {
    let app = spawn_app().await;
    let cases = [
        json!({"repo": "acme/web", "ref": "a..b", "host": "web-01"}),
        json!({"repo": "nope", "ref": "main", "host": "web-01"}),
        json!({"repo": "acme/web", "ref": "main", "host": "web 01"}),
        json!({"repo": "acme/web", "ref": "main", "host": "web-01", "sha": "xyz"}),
        json!({"repo": "acme/web", "ref": "main", "host": "web-01", "metadata": [1, 2]}),
    ];
    for body in cases {
        let response = app.create_job(&body).await;
        let error = assert_error(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
        assert!(!error.error.message.is_empty(), "{body}");
    }
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn a_missing_or_unknown_field_is_422() {
    let app = spawn_app().await;

    let missing = app
        .create_job(&json!({"repo": "acme/web", "host": "web-01"}))
        .await;
    let error = assert_error(missing, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(
        error.error.message.contains("ref"),
        "{}",
        error.error.message
    );

    let unknown = app
        .create_job(&json!({"repo": "acme/web", "ref": "main", "host": "web-01", "branch": "x"}))
        .await;
    let error = assert_error(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(
        error.error.message.contains("branch"),
        "{}",
        error.error.message
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .header(CONTENT_TYPE, "text/plain")
        .body(r#"{"repo": "acme/web", "ref": "main", "host": "web-01"}"#)
        .send()
        .await
        .unwrap();

    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/v1/jobs"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"repo": "acme/web", "ref": "#)
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn a_body_over_1_mib_is_413() {
    let app = spawn_app().await;
    let padding = "x".repeat(1024 * 1024 + 1);
    let body =
        json!({"repo": "acme/web", "ref": "main", "host": "web-01", "metadata": {"pad": padding}});

    let response = app.create_job(&body).await;

    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn jobs_are_listed_newest_first() {
    let app = spawn_app().await;
    let first = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let second = app.create_job_ok("acme/api", "api-01", SHA_B).await;
    let third = app.create_job_ok("acme/web", "web-02", SHA_C).await;

    let ids: Vec<String> = app.list_jobs("").await.into_iter().map(|j| j.id).collect();

    assert_eq!(ids, [third.id, second.id, first.id]);
}

#[tokio::test]
async fn the_list_filters_by_status_host_repo_app_and_limit() {
    let app = spawn_app().await;
    let web_01 = app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let web_02 = app.create_job_ok("acme/web", "web-02", SHA_A).await;
    let api_01 = app.create_job_ok("acme/api", "api-01", SHA_B).await;
    let api_web = app.create_job_ok("acme/api", "web-01", SHA_C).await;
    let agent = app.register("web-01").await;
    let running = app.heartbeat_job(&agent.id).await.expect("a job");
    assert_eq!(running.id, web_01.id, "the oldest pending job of web-01");

    let ids = |jobs: Vec<deploybot_wire::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(app.list_jobs("status=running").await),
        [web_01.id.as_str()]
    );
    assert_eq!(
        ids(app.list_jobs("status=pending").await),
        [api_web.id.as_str(), api_01.id.as_str(), web_02.id.as_str()]
    );
    assert_eq!(
        ids(app.list_jobs("host=web-01").await),
        [api_web.id.as_str(), web_01.id.as_str()]
    );
    assert_eq!(
        ids(app.list_jobs("repo=acme/web").await),
        [web_02.id.as_str(), web_01.id.as_str()]
    );
    assert_eq!(
        ids(app.list_jobs("app=api").await),
        [api_web.id.as_str(), api_01.id.as_str()]
    );
    assert_eq!(
        ids(app.list_jobs("app=api&host=web-01&status=pending").await),
        [api_web.id.as_str()]
    );
    assert_eq!(
        ids(app.list_jobs("limit=2").await),
        [api_web.id.as_str(), api_01.id.as_str()]
    );
    assert!(app.list_jobs("status=failed").await.is_empty());
}

#[tokio::test]
async fn invalid_list_parameters_are_400() {
    let app = spawn_app().await;
    for query in [
        "limit=0",
        "limit=5000",
        "limit=-1",
        "status=bogus",
        "colour=red",
    ] {
        let response = app.get(&format!("/v1/jobs?{query}")).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert_eq!(
        app.get("/v1/jobs?limit=1000").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unknown_job_is_404() {
    let app = spawn_app().await;

    let response = app.get("/v1/jobs/unknown").await;

    let error = assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert!(error.error.message.contains("unknown"));
}
