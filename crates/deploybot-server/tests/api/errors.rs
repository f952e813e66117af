//! Health, the docs page, and answers for paths and methods no route serves.

use deploybot_wire::HealthResponse;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use crate::helpers::{assert_error, ok_json, spawn_app};

#[tokio::test]
async fn health_is_ok_with_a_reachable_database() {
    let app = spawn_app().await;

    let health: HealthResponse = ok_json(app.get("/health").await).await;

    assert_eq!(health.status, "ok");
    assert_eq!(health.database, "ok");
    assert!(!health.version.is_empty());
}

#[tokio::test]
async fn the_docs_page_is_served_as_html() {
    let app = spawn_app().await;

    let response = app.get("/docs/").await;

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.to_lowercase().contains("<html"), "{page}");
    // The page loads the document from /openapi.json.
    let initializer = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(initializer.status(), StatusCode::OK);
    let script = initializer.text().await.unwrap();
    assert!(script.contains("\"/openapi.json\""), "{script}");
}

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let app = spawn_app().await;

    let response = app.get("/v1/nothing-here").await;

    let error = assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    assert!(error.error.message.contains("/v1/nothing-here"));
}

#[tokio::test]
async fn a_known_path_with_the_wrong_method_is_a_json_405() {
    let app = spawn_app().await;

    let delete = app.client.delete(app.url("/v1/jobs")).send().await.unwrap();
    assert_error(delete, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    let get_webhook = app.get("/v1/webhooks/github").await;
    assert_error(
        get_webhook,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}
