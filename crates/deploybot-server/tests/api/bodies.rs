//! Request bodies: a memory budget all bodies being read share (503 with
//! `Retry-After` when it is spent), each route's limit said right, and a
//! webhook's signature checked before its body is read, and a connection
//! whose body was left unread said to close.

use std::time::{Duration, Instant};

use deploybot_server::SettingsLayer;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{SHA_A, assert_error, push_payload, spawn_app, spawn_app_with_settings};
use crate::metrics::{sample, scrape};

const MIB: usize = 1024 * 1024;

/// Starts a signed webhook POST whose body is `size` bytes, and sends all
/// of it but the last byte: the controller holds what it read meanwhile.
async fn held_webhook(address: &str, size: usize, signature: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/webhooks/github HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: push\r\nX-GitHub-Delivery: held\r\nX-Hub-Signature-256: {signature}\r\n\
         Content-Length: {size}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; size - 1]).await.unwrap();
    stream
}

#[tokio::test]
async fn bodies_past_the_memory_budget_are_answered_503_until_it_frees() {
    let app = spawn_app_with_settings(SettingsLayer {
        body_memory_mib: Some(25),
        ..Default::default()
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let signature = format!("sha256={}", "0".repeat(64));
    // Two 12 MiB deliveries, each held one byte short of their end: 24 of
    // the 25 MiB are in use once the controller has read them.
    let first = held_webhook(&address, 12 * MIB, &signature).await;
    let second = held_webhook(&address, 12 * MIB, &signature).await;

    // Once the controller has read them (it reads and hashes them as they
    // come, which takes a while in a debug build on a busy machine)...
    let held_bytes = (24 * MIB - 2) as f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = scrape(&app).await;
        if sample(&text, "deploybot_request_body_bytes").is_some_and(|n| n >= held_bytes) {
            break;
        }
        assert!(Instant::now() < deadline, "held bodies never read: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...a 2 MiB delivery does not fit: 503 with Retry-After.
    let mut big = push_payload("acme/web", "refs/heads/main", SHA_A);
    big["pad"] = "x".repeat(2 * MIB).into();
    let refused = app.post_webhook("push", "big", &big).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_error(refused, StatusCode::SERVICE_UNAVAILABLE, "too_many_bodies").await;
    // Small bodies still fit, and count the refusal.
    let small = app.create_job_ok("acme/web", "web-02", SHA_A).await;
    assert_eq!(small.host, "web-02");
    let text = scrape(&app).await;
    assert!(
        sample(&text, "deploybot_request_bodies_refused_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // The held bodies end (their signature is wrong: 401): the budget frees.
    for mut held in [first, second] {
        held.write_all(b" ").await.unwrap();
        let mut answer = vec![0; 12];
        held.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 401");
    }
    let response = app.post_webhook("push", "big-after", &big).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_webhook_without_a_valid_signature_header_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://");
    for signature in ["", "X-Hub-Signature-256: sha1=abc\r\n"] {
        let mut stream = TcpStream::connect(address).await.unwrap();
        // 24 MiB announced, not one byte sent: the answer comes anyway.
        let head = format!(
            "POST /v1/webhooks/github HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             X-GitHub-Event: push\r\n{signature}Content-Length: {}\r\n\r\n",
            24 * MIB
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0; 12];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut answer))
            .await
            .expect("answered without the body")
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 401", "{signature:?}");
    }
}

#[tokio::test]
async fn each_routes_413_says_its_own_limit() {
    let app = spawn_app().await;
    let agent = app.register("web-01").await;
    app.create_job_ok("acme/web", "web-01", SHA_A).await;
    let job = app.heartbeat_job(&agent.id).await.expect("a job");
    let line = "x".repeat(60 * 1024);
    let lines: Vec<_> = (1..=290)
        .map(|n| json!({"line": n, "stream": "stdout", "at": "2026-01-01T00:00:00Z", "text": line}))
        .collect();
    let upload = app
        .client
        .post(app.url(&format!("/v1/jobs/{}/logs", job.id)))
        .bearer_auth(app.agent_token(&agent.id))
        .json(&json!({"lease": job.lease, "lines": lines}))
        .send()
        .await
        .unwrap();
    let body = assert_error(upload, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    assert!(body.detail.contains("16 MiB"), "{}", body.detail);

    let mut payload = push_payload("acme/web", "refs/heads/main", SHA_A);
    payload["pad"] = "x".repeat(2 * MIB).into();
    let api = app
        .client
        .post(app.url("/v1/jobs"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    let body = assert_error(api, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    assert!(body.detail.contains("1 MiB"), "{}", body.detail);
}

/// A client sends the head of a request, then reads the answer before
/// sending the body, and gives back what it read.
async fn answer_to_head(address: &str, head: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&answer).to_lowercase()
}

#[tokio::test]
async fn an_answer_given_before_the_body_was_read_closes_the_connection() {
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();

    // Refused on its headers (no signature) before any of its body came:
    // the server will not read the rest, and says the connection ends,
    // so the client does not send its next request on it.
    let refused = answer_to_head(
        &address,
        "POST /v1/webhooks/github HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: push\r\nContent-Length: 100000\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    assert!(refused.contains("\r\nconnection: close\r\n"), "{refused}");

    // The same for an API call with a wrong token: credentials are checked
    // before the body is read.
    let forbidden = answer_to_head(
        &address,
        "POST /v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Authorization: Bearer nope\r\nContent-Length: 100\r\n\r\n",
    )
    .await;
    assert!(forbidden.starts_with("http/1.1 401"), "{forbidden}");
    assert!(
        forbidden.contains("\r\nconnection: close\r\n"),
        "{forbidden}"
    );

    // Read to its end: the connection stays open for the next request.
    let payload = serde_json::to_vec(&push_payload("acme/web", "refs/heads/main", SHA_A)).unwrap();
    let signed = app
        .webhook("push", "read-to-the-end")
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", app.sign(&payload))
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::OK);
    assert!(signed.headers().get("connection").is_none());
}
