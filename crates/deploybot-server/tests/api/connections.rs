//! The cap on open connections: past it, a connection is answered 503 with
//! `Retry-After` and closed, rather than the controller running out of
//! file descriptors; a freed slot is taken by the next connection.

use std::time::{Duration, Instant};

use deploybot_server::SettingsLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_app_with_settings;

/// Sends `GET /health` on a new connection; the whole answer.
async fn get_health(address: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    // A refused connection may be closed before the request is read.
    let _ = stream.read_to_string(&mut answer).await;
    answer
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_503_until_one_closes() {
    let app = spawn_app_with_settings(SettingsLayer {
        max_connections: Some(3),
        ..Default::default()
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    // Three idle connections take every slot.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&address).await.unwrap());
    }
    // Until the controller has accepted them all, a fourth may still get in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = get_health(&address).await;
        if answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(Instant::now() < deadline, "never refused: {answer}");
        tokio::task::yield_now().await;
    };
    assert!(refused.contains("Retry-After: 1"), "{refused}");
    assert!(
        refused.contains(r#""code":"too_many_connections""#),
        "{refused}"
    );

    // One closes: the next connection is served.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get_health(&address).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
}
