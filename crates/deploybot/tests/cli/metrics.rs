//! `/metrics` on an address of its own (`--metrics-listen`).

use reqwest::StatusCode;

use crate::common::{DEADLINE, Server, WEB_APPS_YAML, web_server_command, write};

#[tokio::test]
async fn metrics_can_move_to_an_address_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let mut cmd = web_server_command(dir.path());
    cmd.args(["--metrics-listen", "127.0.0.1:0"]);
    let server = Server::start(cmd);
    let line = server
        .log
        .wait_for(0, "metrics on http://", DEADLINE)
        .expect("the metrics address is logged");
    let url = line
        .split("metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a URL");

    let own = reqwest::get(url).await.unwrap();
    let main = reqwest::get(server.url("/metrics")).await.unwrap();

    assert_eq!(own.status(), StatusCode::OK);
    let text = own.text().await.unwrap();
    assert!(text.contains("deploybot_agents"), "{text}");
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
}
