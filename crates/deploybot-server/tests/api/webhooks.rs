//! What pushes and other events do: verdicts, jobs, redeliveries, supersede.

use deploybot_wire::{DeliveryVerdict, JobSource, JobStatus, WebhookResponse};
use serde_json::json;

use crate::helpers::{SHA_A, SHA_B, SHA_C, ok_json, push_payload, spawn_app};

#[tokio::test]
async fn a_push_to_a_matching_branch_queues_one_pending_job_per_host() {
    let app = spawn_app().await;

    let answer = app
        .push("d-main", "acme/web", "refs/heads/main", SHA_A)
        .await;

    assert!(answer.received);
    assert_eq!(answer.verdict, DeliveryVerdict::Queued);
    assert!(!answer.duplicate);
    assert_eq!(answer.delivery_id, "d-main");
    assert_eq!(answer.jobs_created.len(), 2, "{answer:?}");
    assert!(
        answer.message.contains("queued 2 job(s)"),
        "{}",
        answer.message
    );
    let mut hosts = Vec::new();
    for id in &answer.jobs_created {
        let job = app.get_job(id).await;
        assert_eq!(&job.id, id);
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!(job.app, "web");
        assert_eq!(job.repo, "acme/web");
        assert_eq!(job.git_ref, "refs/heads/main");
        assert_eq!(job.sha.as_deref(), Some(SHA_A));
        assert_eq!(job.source, JobSource::Webhook);
        assert_eq!(job.delivery_id.as_deref(), Some("d-main"));
        assert_eq!(job.deploy.command, ["./deploy.sh", "--fast"]);
        assert_eq!(job.deploy.workdir.as_deref(), Some("/srv/web"));
        assert_eq!(job.deploy.env["RAILS_ENV"], "production");
        assert_eq!(job.deploy.timeout_secs, 600);
        assert_eq!(job.metadata["pusher"], "octocat");
        assert_eq!(job.metadata["message"], "Ship it");
        assert!(job.started_at.is_none() && job.assigned_agent.is_none());
        hosts.push(job.host);
    }
    hosts.sort();
    assert_eq!(hosts, ["web-01", "web-02"]);
}

#[tokio::test]
async fn a_ping_is_answered_with_the_ping_verdict_and_no_jobs() {
    let app = spawn_app().await;

    let body = json!({"zen": "Keep it logically awesome.", "hook_id": 1});
    let answer: WebhookResponse = ok_json(app.post_webhook("ping", "d-ping", &body).await).await;

    assert_eq!(answer.verdict, DeliveryVerdict::Ping);
    assert!(answer.jobs_created.is_empty());
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn events_other_than_push_are_ignored() {
    let app = spawn_app().await;

    let body = json!({"action": "opened", "repository": {"full_name": "acme/web"}});
    let answer: WebhookResponse = ok_json(app.post_webhook("issues", "d-issue", &body).await).await;

    assert_eq!(answer.verdict, DeliveryVerdict::IgnoredEvent);
    assert!(answer.jobs_created.is_empty());
    assert!(answer.message.contains("issues"), "{}", answer.message);
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn a_branch_deletion_deploys_nothing() {
    let app = spawn_app().await;
    let mut payload = push_payload("acme/web", "refs/heads/main", &"0".repeat(40));
    payload["deleted"] = json!(true);

    let answer: WebhookResponse = ok_json(app.post_webhook("push", "d-del", &payload).await).await;

    assert_eq!(answer.verdict, DeliveryVerdict::Deleted);
    assert!(answer.jobs_created.is_empty());
    assert!(answer.message.contains("deleted"), "{}", answer.message);
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn a_branch_outside_the_branch_patterns_is_no_match_with_the_reason() {
    let app = spawn_app().await;

    let answer = app
        .push("d-feat", "acme/web", "refs/heads/feature/x", SHA_A)
        .await;

    assert_eq!(answer.verdict, DeliveryVerdict::NoMatch);
    assert!(answer.jobs_created.is_empty());
    assert!(
        answer.message.contains("feature/x") && answer.message.contains("release/*"),
        "{}",
        answer.message
    );
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn a_push_older_than_the_kept_history_deploys_nothing() {
    let app = spawn_app().await;
    let day = 86_400;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let pushed_at = |days_ago: i64| {
        let mut payload = push_payload("acme/web", "refs/heads/main", SHA_A);
        payload["repository"]["pushed_at"] = json!(now - days_ago * day);
        payload
    };

    // History is kept 90 days by default: a push from 100 days ago (a
    // captured delivery sent again) could no longer be told from a new one.
    let old = app.post_webhook("push", "d-old", &pushed_at(100)).await;
    let answer: WebhookResponse = ok_json(old).await;
    assert_eq!(answer.verdict, DeliveryVerdict::Stale);
    assert!(answer.jobs_created.is_empty());
    assert!(answer.message.contains("replay"), "{}", answer.message);

    let recent = app.post_webhook("push", "d-new", &pushed_at(0)).await;
    let answer: WebhookResponse = ok_json(recent).await;
    assert_eq!(answer.verdict, DeliveryVerdict::Queued);
    assert_eq!(answer.jobs_created.len(), 2);
}

#[tokio::test]
async fn an_app_with_deploy_on_push_off_is_no_match() {
    let app = spawn_app().await;

    let answer = app
        .push("d-docs", "acme/docs", "refs/heads/main", SHA_A)
        .await;

    assert_eq!(answer.verdict, DeliveryVerdict::NoMatch);
    assert!(
        answer.message.contains("deploy_on_push is off"),
        "{}",
        answer.message
    );
}

#[tokio::test]
async fn tag_pushes_match_only_tag_patterns() {
    let app = spawn_app().await;

    let release = app
        .push("d-tag", "acme/web", "refs/tags/v1.2.0", SHA_A)
        .await;
    assert_eq!(release.verdict, DeliveryVerdict::Queued);
    assert_eq!(release.jobs_created.len(), 2);
    let job = app.get_job(&release.jobs_created[0]).await;
    assert_eq!(job.git_ref, "refs/tags/v1.2.0");

    // A tag named like a deployed branch is still a tag: `branches` do not apply.
    let tag_main = app
        .push("d-tag-main", "acme/web", "refs/tags/main", SHA_B)
        .await;
    assert_eq!(tag_main.verdict, DeliveryVerdict::NoMatch);
    assert!(tag_main.message.contains("tags"), "{}", tag_main.message);

    // An app without tag patterns never deploys tags, though it takes every branch.
    let api_tag = app
        .push("d-api-tag", "acme/api", "refs/tags/v1.0.0", SHA_C)
        .await;
    assert_eq!(api_tag.verdict, DeliveryVerdict::NoMatch);
    assert!(
        api_tag.message.contains("no tags patterns"),
        "{}",
        api_tag.message
    );
    assert_eq!(app.list_jobs("").await.len(), 2);
}

#[tokio::test]
async fn a_push_to_an_unknown_repo_is_no_match() {
    let app = spawn_app().await;

    let answer = app
        .push("d-unknown", "acme/unknown", "refs/heads/main", SHA_A)
        .await;

    assert_eq!(answer.verdict, DeliveryVerdict::NoMatch);
    assert!(answer.jobs_created.is_empty());
    assert!(
        answer.message.contains("acme/unknown"),
        "{}",
        answer.message
    );
    assert!(app.list_jobs("").await.is_empty());
}

#[tokio::test]
async fn a_redelivery_returns_the_first_jobs_and_creates_none() {
    let app = spawn_app().await;
    let first = app
        .push("d-once", "acme/web", "refs/heads/main", SHA_A)
        .await;
    let count = app.list_jobs("").await.len();

    let again = app
        .push("d-once", "acme/web", "refs/heads/main", SHA_A)
        .await;

    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.jobs_created, first.jobs_created);
    assert_eq!(again.verdict, DeliveryVerdict::Queued);
    assert!(
        again.message.contains("already received"),
        "{}",
        again.message
    );
    assert_eq!(app.list_jobs("").await.len(), count);
    assert_eq!(app.deliveries().await.len(), 1);
}

#[tokio::test]
async fn a_replay_under_a_new_delivery_id_deploys_a_finished_commit_no_more() {
    let app = spawn_app().await;
    let first = app
        .push("d-original", "acme/web", "refs/heads/main", SHA_A)
        .await;
    // The jobs finish (here: cancelled), so no open job would catch a repeat.
    for id in &first.jobs_created {
        app.client
            .post(app.url(&format!("/v1/jobs/{id}/cancel")))
            .send()
            .await
            .unwrap();
    }
    let count = app.list_jobs("").await.len();

    // The delivery header is not signed: a captured body can come back under
    // any id. The same commit on another branch is the same deploy too.
    let replay = app
        .push("d-forged", "acme/web", "refs/heads/release/1", SHA_A)
        .await;

    assert!(!replay.duplicate);
    assert_eq!(replay.jobs_created, first.jobs_created);
    assert!(replay.message.contains("nothing new"), "{}", replay.message);
    assert_eq!(app.list_jobs("").await.len(), count);
    // A new commit still deploys.
    let next = app
        .push("d-next", "acme/web", "refs/heads/main", SHA_B)
        .await;
    assert_eq!(next.jobs_created.len(), 2);
    assert_eq!(app.list_jobs("").await.len(), count + 2);
}

#[tokio::test]
async fn deliveries_are_listed_newest_first_with_their_verdicts() {
    let app = spawn_app().await;
    let ping = json!({"zen": "hi"});
    ok_json::<WebhookResponse>(app.post_webhook("ping", "d-1", &ping).await).await;
    let queued = app.push("d-2", "acme/web", "refs/heads/main", SHA_A).await;
    app.push("d-3", "acme/web", "refs/heads/nope", SHA_B).await;

    let deliveries = app.deliveries().await;

    let summary: Vec<(&str, DeliveryVerdict)> = deliveries
        .iter()
        .map(|d| (d.delivery_id.as_str(), d.verdict))
        .collect();
    assert_eq!(
        summary,
        [
            ("d-3", DeliveryVerdict::NoMatch),
            ("d-2", DeliveryVerdict::Queued),
            ("d-1", DeliveryVerdict::Ping),
        ]
    );
    assert_eq!(deliveries[1].job_ids, queued.jobs_created);
    assert_eq!(deliveries[1].event, "push");
    assert_eq!(deliveries[1].repo.as_deref(), Some("acme/web"));
    assert_eq!(deliveries[1].git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(deliveries[1].sha.as_deref(), Some(SHA_A));
    assert_eq!(deliveries[2].event, "ping");
}

#[tokio::test]
async fn a_newer_push_supersedes_the_pending_job_of_the_same_app_and_host() {
    let app = spawn_app().await;
    let first = app
        .push("d-first", "acme/api", "refs/heads/main", SHA_A)
        .await;
    let second = app
        .push("d-second", "acme/api", "refs/heads/main", SHA_B)
        .await;
    assert_eq!(first.jobs_created.len(), 2);
    assert_eq!(second.jobs_created.len(), 2);

    for old_id in &first.jobs_created {
        let old = app.get_job(old_id).await;
        assert_eq!(old.status, JobStatus::Superseded, "{old_id}");
        let new_id = old.superseded_by.clone().expect("superseded_by");
        assert!(second.jobs_created.contains(&new_id));
        let new = app.get_job(&new_id).await;
        assert_eq!(new.status, JobStatus::Pending);
        assert_eq!(new.host, old.host);
        assert_eq!(new.sha.as_deref(), Some(SHA_B));
        assert!(old.completed_at.is_some());
    }
}

#[tokio::test]
async fn a_running_job_is_not_superseded_by_a_newer_push() {
    let app = spawn_app().await;
    let first = app
        .push("d-first", "acme/api", "refs/heads/main", SHA_A)
        .await;
    let agent = app.register("api-01").await;
    let running = app.heartbeat_job(&agent.id).await.expect("a job");
    assert!(first.jobs_created.contains(&running.id));

    let second = app
        .push("d-second", "acme/api", "refs/heads/main", SHA_B)
        .await;

    let still = app.get_job(&running.id).await;
    assert_eq!(still.status, JobStatus::Running);
    assert!(still.superseded_by.is_none());
    let queued = app.list_jobs("host=api-01&status=pending").await;
    assert_eq!(queued.len(), 1);
    assert!(second.jobs_created.contains(&queued[0].id));
}
