//! `GET /v1/apps` and `GET /v1/explain`: the live config, and what a push
//! would do with it.

use deploybot_wire::{AppsResponse, ExplainResponse};
use reqwest::StatusCode;

use crate::helpers::{assert_error, ok_json, spawn_app};

#[tokio::test]
async fn apps_lists_the_live_config() {
    let app = spawn_app().await;

    let listed: AppsResponse = ok_json(app.get("/v1/apps").await).await;

    let names: Vec<&str> = listed.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["web", "api", "docs"]);
    let web = &listed.apps[0];
    assert_eq!(web.hosts, ["web-01", "web-02"]);
    assert_eq!(
        web.branches.as_deref(),
        Some(&["main".to_owned(), "release/*".to_owned()][..])
    );
    assert_eq!(web.command, ["./deploy.sh", "--fast"]);
    assert!(!listed.apps[2].deploy_on_push);
}

#[tokio::test]
async fn explain_names_the_targets_of_a_push_and_why_others_are_skipped() {
    let app = spawn_app().await;

    let main: ExplainResponse = ok_json(
        app.get("/v1/explain?repo=acme/web&ref=refs/heads/main")
            .await,
    )
    .await;
    let feature: ExplainResponse =
        ok_json(app.get("/v1/explain?repo=acme/web&ref=feature/x").await).await;
    let docs: ExplainResponse = ok_json(app.get("/v1/explain?repo=acme/docs&ref=main").await).await;
    let unknown: ExplainResponse =
        ok_json(app.get("/v1/explain?repo=acme/nope&ref=main").await).await;

    assert_eq!(main.targets.len(), 1);
    assert_eq!(main.targets[0].app, "web");
    assert_eq!(main.targets[0].hosts, ["web-01", "web-02"]);
    assert!(
        main.message.contains("web → web-01, web-02"),
        "{}",
        main.message
    );
    // A bare branch name means refs/heads/<name>.
    assert_eq!(feature.git_ref, "refs/heads/feature/x");
    assert!(feature.targets.is_empty());
    assert!(
        feature.skipped[0]
            .reason
            .contains("matches none of branches"),
        "{feature:?}"
    );
    assert_eq!(docs.skipped[0].reason, "deploy_on_push is off");
    // Each app's rule is said, so an omitted key's meaning is visible.
    assert_eq!(
        main.targets[0].push_rule,
        "deploys pushes to branches [main, release/*] and tags [v*]"
    );
    assert_eq!(
        docs.skipped[0].push_rule,
        "deploys no pushes (deploy_on_push is off)"
    );
    assert!(unknown.message.contains("no app"), "{}", unknown.message);
}

#[tokio::test]
async fn explain_refuses_an_invalid_repo_or_ref() {
    let app = spawn_app().await;

    // Understood but not valid names: 422, as for a job's body.
    let repo = app.get("/v1/explain?repo=not-a-repo&ref=main").await;
    assert_error(repo, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let git_ref = app.get("/v1/explain?repo=acme/web&ref=a..b").await;
    assert_error(git_ref, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    // A query string that cannot be read at all: 400.
    let missing = app.get("/v1/explain?repo=acme/web").await;
    assert_error(missing, StatusCode::BAD_REQUEST, "bad_request").await;
}
