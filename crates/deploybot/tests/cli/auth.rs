//! Authentication as an operator meets it: the first start without an admin
//! token makes one and shows it once; the open mode warns on every start.

use reqwest::StatusCode;

use crate::common::{Server, WEB_APPS_YAML, server_command, write};

fn server_without_admin_token(dir: &std::path::Path) -> Server {
    let mut cmd = server_command(dir, &["--apps", "apps.yaml", "--data-dir", "data"]);
    cmd.env_remove("DEPLOYBOT_ADMIN_TOKEN");
    Server::start(cmd)
}

/// The `dbt_api_…` token in the server's log, if it printed one.
fn printed_token(server: &Server) -> Option<String> {
    server
        .log
        .text()
        .split_whitespace()
        .find(|word| word.starts_with("dbt_api_"))
        .map(str::to_owned)
}

#[tokio::test]
async fn the_first_start_without_an_admin_token_makes_one_and_shows_it_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);

    let mut first = server_without_admin_token(dir.path());
    let token = printed_token(&first).expect("the first start prints an admin token");
    let with_token = first
        .client
        .get(first.url("/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    let without = reqwest::get(first.url("/v1/jobs")).await.unwrap();
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    first.signal("TERM");
    first.wait_exit();

    let second = server_without_admin_token(dir.path());
    assert_eq!(printed_token(&second), None, "{}", second.log.text());
    let still_valid = second
        .client
        .get(second.url("/v1/tokens"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(still_valid.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_open_mode_needs_no_token_and_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path().join("apps.yaml"), WEB_APPS_YAML);
    let server = Server::start(server_command(
        dir.path(),
        &[
            "--apps",
            "apps.yaml",
            "--data-dir",
            "data",
            "--insecure-no-auth",
        ],
    ));

    let open = reqwest::get(server.url("/v1/jobs")).await.unwrap();

    assert_eq!(open.status(), StatusCode::OK);
    assert!(
        server.log.text().contains("AUTHENTICATION IS OFF"),
        "{}",
        server.log.text()
    );
}
