//! Where the webhook secret comes from: DEPLOYBOT_WEBHOOK_SECRET,
//! GITHUB_WEBHOOK_SECRET, the config file; none means webhooks are refused.

use std::path::Path;

use deploybot_wire::{DeliveryVerdict, WebhookResponse};
use reqwest::StatusCode;

use crate::common::{
    DEADLINE, Server, WEB_APPS_YAML, ok_json, push_body, server_command, sha, write,
};

fn server_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
    write(dir.join("apps.yaml"), WEB_APPS_YAML);
    let mut cmd = server_command(
        dir,
        &[&["--apps", "apps.yaml", "--data-dir", "data"], args].concat(),
    );
    for (name, value) in env {
        cmd.env(name, value);
    }
    Server::start(cmd)
}

/// The status of a push to acme/web main signed with `secret`.
async fn push_signed_with(
    server: &Server,
    secret: Option<&str>,
    delivery: &str,
) -> reqwest::Response {
    let body = push_body("acme/web", "refs/heads/main", &sha(1));
    server
        .push_request(secret, delivery, body)
        .send()
        .await
        .expect("POST webhook")
}

#[tokio::test]
async fn github_webhook_secret_alone_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_in(
        dir.path(),
        &[("GITHUB_WEBHOOK_SECRET", "from-github-var")],
        &[],
    );

    let wrong = push_signed_with(&server, Some("something-else"), "d-wrong").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let answer = ok_json!(
        push_signed_with(&server, Some("from-github-var"), "d-right").await,
        WebhookResponse
    );
    assert_eq!(answer.verdict, DeliveryVerdict::Queued, "{answer:?}");
    assert_eq!(answer.jobs_created.len(), 2, "{answer:?}");
}

#[tokio::test]
async fn deploybot_webhook_secret_wins_over_github_webhook_secret() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_in(
        dir.path(),
        &[
            ("DEPLOYBOT_WEBHOOK_SECRET", "from-deploybot-var"),
            ("GITHUB_WEBHOOK_SECRET", "from-github-var"),
        ],
        &[],
    );

    let github = push_signed_with(&server, Some("from-github-var"), "d-github").await;
    assert_eq!(github.status(), StatusCode::UNAUTHORIZED);
    let deploybot = push_signed_with(&server, Some("from-deploybot-var"), "d-deploybot").await;
    assert_eq!(deploybot.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_config_file_secret_is_used_unless_the_environment_sets_one() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path().join("server.toml"),
        "webhook_secret = \"from-file\"\n",
    );
    let server = server_in(dir.path(), &[], &["--config", "server.toml"]);
    let from_file = push_signed_with(&server, Some("from-file"), "d-file").await;
    assert_eq!(from_file.status(), StatusCode::OK);
    drop(server);

    let server = server_in(
        dir.path(),
        &[("DEPLOYBOT_WEBHOOK_SECRET", "from-env")],
        &["--config", "server.toml"],
    );
    let from_file = push_signed_with(&server, Some("from-file"), "d-file-2").await;
    assert_eq!(from_file.status(), StatusCode::UNAUTHORIZED);
    let from_env = push_signed_with(&server, Some("from-env"), "d-env").await;
    assert_eq!(from_env.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_any_secret_webhooks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // An empty variable counts as unset.
    let server = server_in(dir.path(), &[("DEPLOYBOT_WEBHOOK_SECRET", "")], &[]);
    server
        .log
        .wait_for(0, "no webhook secret configured", DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));

    for (secret, delivery) in [
        (Some(""), "d-empty"),
        (Some("guess"), "d-guess"),
        (None, "d-none"),
    ] {
        let response = push_signed_with(&server, secret, delivery).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{delivery}");
        let text = response.text().await.unwrap();
        assert!(text.contains("webhook_secret_unset"), "{text}");
    }
    server.assert_healthy().await;
}

#[tokio::test]
async fn during_a_rotation_the_previous_secret_is_accepted_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_in(
        dir.path(),
        &[
            ("DEPLOYBOT_WEBHOOK_SECRET", "new-secret"),
            ("DEPLOYBOT_WEBHOOK_SECRET_PREVIOUS", "old-secret"),
        ],
        &[],
    );

    let new = push_signed_with(&server, Some("new-secret"), "d-new").await;
    assert_eq!(new.status(), StatusCode::OK);
    let old = push_signed_with(&server, Some("old-secret"), "d-old").await;
    assert_eq!(old.status(), StatusCode::OK);
    let other = push_signed_with(&server, Some("older-secret"), "d-other").await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_app_with_its_own_secret_is_deployed_only_by_deliveries_signed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path().join("apps.yaml"),
        r#"apps:
  - name: web
    repo: acme/web
    hosts: [web-01]
    deploy: {command: ["./deploy.sh"]}
  - name: web-canary
    repo: acme/web
    hosts: [canary-01]
    webhook_secret_env: CANARY_HOOK_SECRET
    deploy: {command: ["./deploy.sh"]}
"#,
    );
    let mut cmd = server_command(dir.path(), &["--apps", "apps.yaml", "--data-dir", "data"]);
    cmd.env("DEPLOYBOT_WEBHOOK_SECRET", "global-secret")
        .env("CANARY_HOOK_SECRET", "canary-secret");
    let server = Server::start(cmd);

    let global = ok_json!(
        push_signed_with(&server, Some("global-secret"), "d-global").await,
        WebhookResponse
    );
    let own = ok_json!(
        push_signed_with(&server, Some("canary-secret"), "d-canary").await,
        WebhookResponse
    );

    // Each secret deploys its own apps: web-01 by the global, canary-01 by its own.
    assert_eq!(global.jobs_created.len(), 1, "{global:?}");
    assert_eq!(own.jobs_created.len(), 1, "{own:?}");
    assert_ne!(global.jobs_created, own.jobs_created);
    let wrong = push_signed_with(&server, Some("guess"), "d-guess").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_app_whose_secret_variable_is_unset_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path().join("apps.yaml"),
        "apps:\n  - name: web\n    repo: acme/web\n    hosts: [web-01]\n    webhook_secret_env: NOT_SET_ANYWHERE\n    deploy: {command: [./deploy.sh]}\n",
    );
    let finished = crate::common::run(server_command(
        dir.path(),
        &["--apps", "apps.yaml", "--data-dir", "data"],
    ));

    assert!(!finished.status.success());
    assert!(
        finished.stderr.contains("apps.yaml:5:") && finished.stderr.contains("NOT_SET_ANYWHERE"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn a_short_webhook_secret_is_warned_of_at_start_and_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_in(dir.path(), &[("DEPLOYBOT_WEBHOOK_SECRET", "x")], &[]);
    let line = server
        .log
        .wait_for(0, "shorter than 16 characters", DEADLINE)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(line.contains("DEPLOYBOT_WEBHOOK_SECRET"), "{line}");
    assert!(
        !line.contains("\"x\""),
        "the secret itself is not logged: {line}"
    );
    let response = push_signed_with(&server, Some("x"), "d-short").await;
    assert_eq!(response.status(), StatusCode::OK);
}
