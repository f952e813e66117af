//! How webhook requests are read: signatures, content types, sizes.

use deploybot_wire::{DeliveryVerdict, WebhookResponse};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use crate::helpers::{
    APPS_YAML, SHA_A, assert_error, ok_json, push_payload, spawn_app, spawn_app_with,
};

fn push_bytes() -> Vec<u8> {
    serde_json::to_vec(&push_payload("acme/web", "refs/heads/main", SHA_A)).unwrap()
}

#[tokio::test]
async fn a_delivery_without_a_signature_is_401_missing_signature() {
    let app = spawn_app().await;

    let response = app
        .webhook("push", "d-1")
        .header(CONTENT_TYPE, "application/json")
        .body(push_bytes())
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNAUTHORIZED, "missing_signature").await;
    assert!(app.list_jobs("").await.is_empty());
    assert!(app.deliveries().await.is_empty());
}

#[tokio::test]
async fn a_delivery_signed_with_another_secret_is_401_bad_signature() {
    let app = spawn_app().await;
    let body = push_bytes();

    let response = app
        .webhook("push", "d-1")
        .header(CONTENT_TYPE, "application/json")
        .header(
            "X-Hub-Signature-256",
            deploybot_wire::signature::sign(b"not-the-secret", &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNAUTHORIZED, "bad_signature").await;
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn a_malformed_signature_header_is_401_bad_signature() {
    let app = spawn_app().await;

    let response = app
        .webhook("push", "d-1")
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", "sha1=0123456789abcdef")
        .body(push_bytes())
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNAUTHORIZED, "bad_signature").await;
}

#[tokio::test]
async fn a_body_changed_after_signing_is_401_bad_signature() {
    let app = spawn_app().await;
    let body = push_bytes();
    let signature = app.sign(&body);
    let tampered = serde_json::to_vec(&push_payload("acme/api", "refs/heads/main", SHA_A)).unwrap();

    let response = app
        .webhook("push", "d-1")
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(tampered)
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNAUTHORIZED, "bad_signature").await;
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn without_a_configured_secret_every_delivery_is_refused() {
    let app = spawn_app_with(APPS_YAML, None).await;
    let body = push_bytes();

    let response = app
        .webhook("push", "d-1")
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", app.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::UNAUTHORIZED, "webhook_secret_unset").await;
}

#[tokio::test]
async fn a_form_encoded_delivery_is_accepted() {
    let app = spawn_app().await;
    let json = String::from_utf8(push_bytes()).unwrap();
    let body = serde_urlencoded::to_string([("payload", json.as_str())]).unwrap();

    let response = app
        .webhook("push", "d-form")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Hub-Signature-256", app.sign(body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();

    let answer: WebhookResponse = ok_json(response).await;
    assert_eq!(answer.verdict, DeliveryVerdict::Queued);
    assert_eq!(answer.jobs_created.len(), 2);
    assert_eq!(app.list_jobs("").await.len(), 2);
}

#[tokio::test]
async fn a_text_plain_delivery_is_415() {
    let app = spawn_app().await;
    let body = push_bytes();

    let response = app
        .webhook("push", "d-1")
        .header(CONTENT_TYPE, "text/plain")
        .header("X-Hub-Signature-256", app.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();

    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert!(app.list_jobs("").await.is_empty());
}

/// A valid push padded with whitespace to 26 MiB, signed.
fn oversized_push(app: &crate::helpers::TestApp) -> (Vec<u8>, String) {
    let mut body = push_bytes();
    body.resize(26 * 1024 * 1024, b' ');
    let signature = app.sign(&body);
    (body, signature)
}

#[tokio::test]
async fn a_body_over_the_api_limit_but_under_25_mib_is_accepted() {
    let app = spawn_app().await;
    let mut body = push_bytes();
    body.resize(3 * 1024 * 1024, b' ');

    let response = app
        .webhook("push", "d-3mib")
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", app.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();

    let answer: WebhookResponse = ok_json(response).await;
    assert_eq!(answer.verdict, DeliveryVerdict::Queued);
}

#[tokio::test]
async fn a_body_over_25_mib_is_refused_with_413() {
    let app = spawn_app().await;
    let (body, signature) = oversized_push(&app);

    let response = app
        .webhook("push", "d-big")
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn a_body_over_25_mib_answers_with_the_json_error_body() {
    let app = spawn_app().await;
    let (body, signature) = oversized_push(&app);

    let response = app
        .webhook("push", "d-big")
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
}

#[tokio::test]
async fn invalid_json_with_a_valid_signature_is_400() {
    let app = spawn_app().await;
    let body = b"{\"ref\": \"refs/heads/main\", ".to_vec();

    let response = app
        .webhook("push", "d-1")
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", app.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();

    assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(app.deliveries().await.is_empty());
}

#[tokio::test]
async fn a_delivery_without_an_event_header_is_400() {
    let app = spawn_app().await;
    let body = push_bytes();

    let response = app
        .client
        .post(app.url("/v1/webhooks/github"))
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", app.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();

    let error = assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(error.error.message.contains("X-GitHub-Event"));
}

#[tokio::test]
async fn a_push_without_a_delivery_id_gets_one_made_up() {
    let app = spawn_app().await;
    let body = push_bytes();

    let response = app
        .client
        .post(app.url("/v1/webhooks/github"))
        .header("X-GitHub-Event", "push")
        .header(CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", app.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();

    let answer: WebhookResponse = ok_json(response).await;
    assert!(answer.delivery_id.starts_with("local-"), "{answer:?}");
    assert_eq!(answer.verdict, DeliveryVerdict::Queued);
    assert_eq!(app.deliveries().await[0].delivery_id, answer.delivery_id);
}

#[tokio::test]
async fn a_signed_push_without_a_valid_commit_is_400_however_often_it_is_sent() {
    let app = spawn_app().await;
    for (n, after) in [None, Some("zzzz"), Some("abc1234")]
        .into_iter()
        .enumerate()
    {
        let mut payload = push_payload("acme/web", "refs/heads/main", SHA_A);
        match after {
            Some(after) => payload["after"] = after.into(),
            None => {
                payload.as_object_mut().unwrap().remove("after");
            }
        }
        for replay in 0..2 {
            let response = app
                .post_webhook("push", &format!("no-commit-{n}-{replay}"), &payload)
                .await;
            let body = assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
            assert!(body.detail.contains("after"), "{}", body.detail);
        }
    }
    assert!(app.list_jobs("").await.is_empty());
}
