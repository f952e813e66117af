//! What a push deploys: a pure decision over apps.yaml, the secret that
//! signed the delivery and the fields of its payload. No I/O: the webhook
//! handler records what this decides.

use deploybot_apps::{App, AppSecret, AppsConfig, Skipped};
use deploybot_store::NewJob;
use deploybot_wire::{DeliveryVerdict, JobSource, names};
use time::OffsetDateTime;

use crate::webhook::{self, Payload};

/// Which secret a delivery was signed with, which decides the apps it may
/// deploy: the global secret deploys apps without their own; an app's own
/// secret deploys the apps that share it.
#[derive(Debug, Clone)]
pub enum SignedBy {
    Global,
    App(AppSecret),
}

impl SignedBy {
    fn may_deploy(&self, app: &App) -> bool {
        match self {
            SignedBy::Global => app.webhook_secret.is_none(),
            SignedBy::App(secret) => app.webhook_secret.as_ref() == Some(secret),
        }
    }
}

/// The decision on one push delivery.
#[derive(Debug)]
pub struct PushPlan {
    pub verdict: DeliveryVerdict,
    /// Why, in a sentence: what it deploys, or why nothing.
    pub message: String,
    /// One job per host of every app it deploys.
    pub jobs: Vec<NewJob>,
}

/// A push that cannot be planned: its payload lacks what a push has.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadPush(pub String);

/// A delivery as received: its event, payload, id and what signed it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub event: &'a str,
    pub payload: &'a Payload,
    pub delivery_id: &'a str,
    pub signed_by: &'a SignedBy,
}

/// Decides what a delivery deploys: a push its apps, unless it was pushed
/// before `oldest_push` (the history that recognises a replayed push goes
/// back no further); a ping or any other event nothing.
pub fn plan_delivery(
    apps: &AppsConfig,
    received: Received<'_>,
    oldest_push: OffsetDateTime,
) -> Result<PushPlan, BadPush> {
    let Received {
        event,
        payload,
        delivery_id,
        signed_by,
    } = received;
    let nothing = |verdict, message| PushPlan {
        verdict,
        message,
        jobs: Vec::new(),
    };
    match event {
        "push" => plan_push(apps, signed_by, payload, delivery_id, oldest_push),
        "ping" => Ok(nothing(
            DeliveryVerdict::Ping,
            "pong: the webhook is set up".to_owned(),
        )),
        other => Ok(nothing(
            DeliveryVerdict::IgnoredEvent,
            format!("event {other:?} ignored: only push events deploy"),
        )),
    }
}

/// Decides what the push in `payload` (delivery `delivery_id`) deploys.
fn plan_push(
    apps: &AppsConfig,
    signed_by: &SignedBy,
    payload: &Payload,
    delivery_id: &str,
    oldest_push: OffsetDateTime,
) -> Result<PushPlan, BadPush> {
    let (Some(repo), Some(git_ref)) = (
        payload.repository.as_ref().map(|r| &r.full_name),
        &payload.git_ref,
    ) else {
        return Err(BadPush(
            "push payload lacks repository.full_name or ref".to_owned(),
        ));
    };
    names::check_repo(repo).map_err(BadPush)?;
    names::check_ref(git_ref).map_err(BadPush)?;
    if payload.deleted {
        return Ok(PushPlan {
            verdict: DeliveryVerdict::Deleted,
            message: format!("{git_ref} was deleted: nothing to deploy"),
            jobs: Vec::new(),
        });
    }
    // A push names the commit it pushed: 40 hex digits (64 in a SHA-256
    // repository), never all zeros (that is a deletion, said by
    // `deleted`). A push without one could be replayed as new forever.
    let sha = match payload.after.as_deref() {
        Some(sha)
            if matches!(sha.len(), 40 | 64)
                && names::check_sha(sha).is_ok()
                && sha.bytes().any(|b| b != b'0') =>
        {
            sha.to_ascii_lowercase()
        }
        _ => {
            return Err(BadPush(
                "push payload lacks the pushed commit: `after` must be its 40-hex-digit SHA"
                    .to_owned(),
            ));
        }
    };
    let sha = Some(sha);
    // A replayed push is recognised by the jobs its commit made; once they
    // are pruned, an old push could deploy old code again.
    if let Some(pushed_at) = payload.repository.as_ref().and_then(|r| r.pushed_at())
        && pushed_at < oldest_push
    {
        return Ok(PushPlan {
            verdict: DeliveryVerdict::Stale,
            message: format!(
                "pushed on {}, before the oldest history kept: not deployed, as a replay of it could not be recognised; push again or deploy it by hand",
                pushed_at.date()
            ),
            jobs: Vec::new(),
        });
    }

    let mut plan = apps.plan_push(repo, git_ref);
    plan.targets.retain(|app| {
        let allowed = signed_by.may_deploy(app);
        if !allowed {
            plan.skipped.push(Skipped {
                app: app.name.clone(),
                reason: "the delivery was not signed with this app's webhook secret".to_owned(),
            });
        }
        allowed
    });
    if plan.targets.is_empty() {
        return Ok(PushPlan {
            verdict: DeliveryVerdict::NoMatch,
            message: plan.no_match_reason(repo, git_ref),
            jobs: Vec::new(),
        });
    }

    let metadata = serde_json::json!({
        "pusher": payload.pusher.as_ref().and_then(|p| p.name.clone()),
        "message": payload.head_commit.as_ref().and_then(|c| c.message.as_deref()).map(webhook::headline),
        "compare": payload.compare,
    });
    let mut jobs = Vec::new();
    let mut deployed = Vec::new();
    for app in &plan.targets {
        deployed.push(format!("{} → {}", app.name, app.hosts.join(", ")));
        for host in &app.hosts {
            jobs.push(NewJob {
                id: uuid::Uuid::now_v7().to_string(),
                app: app.name.clone(),
                repo: app.repo.clone(),
                git_ref: git_ref.clone(),
                sha: sha.clone(),
                host: host.clone(),
                metadata: metadata.clone(),
                source: JobSource::Webhook,
                delivery_id: Some(delivery_id.to_owned()),
                deploy: app.deploy.clone(),
                attempt: 1,
                retry_of: None,
                traceparent: None,
            });
        }
    }
    let short_sha = sha.as_deref().map(|s| &s[..s.len().min(7)]).unwrap_or("?");
    let mut message = format!(
        "queued {} job(s) for {git_ref}@{short_sha}: {}",
        jobs.len(),
        deployed.join("; ")
    );
    for skipped in &plan.skipped {
        message.push_str(&format!(
            "; app {} skipped: {}",
            skipped.app, skipped.reason
        ));
    }
    Ok(PushPlan {
        verdict: DeliveryVerdict::Queued,
        message,
        jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{Commit, Pusher, Repository};

    const APPS: &str = r#"
apps:
  - name: web
    repo: acme/web
    hosts: [web-01, web-02]
    branches: [main]
    deploy: {command: [./deploy.sh]}
  - name: billing
    repo: acme/web
    hosts: [billing-01]
    branches: [main]
    webhook_secret_env: BILLING_SECRET_FOR_TESTS
    deploy: {command: [./deploy.sh]}
"#;

    fn apps() -> AppsConfig {
        let env = |name: &str| {
            (name == "BILLING_SECRET_FOR_TESTS").then(|| "billing-secret-123456".to_owned())
        };
        AppsConfig::parse_with_env(APPS, "apps.yaml", &env).unwrap()
    }

    fn push(git_ref: &str, after: &str) -> Payload {
        Payload {
            git_ref: Some(git_ref.to_owned()),
            after: Some(after.to_owned()),
            repository: Some(Repository {
                full_name: "acme/web".to_owned(),
                pushed_at: Some(serde_json::json!(1_700_000_000)),
            }),
            pusher: Some(Pusher {
                name: Some("ada".to_owned()),
            }),
            head_commit: Some(Commit {
                message: Some("Fix it\n\nbody".to_owned()),
            }),
            ..Payload::default()
        }
    }

    const SHA: &str = "9f2c1e4b7a0d3c6e8f1a2b3c4d5e6f708192a3b4";

    /// Plans `payload` as delivery `d1` of `event`, signed by `signed_by`,
    /// with every push recent enough.
    fn plan(
        apps: &AppsConfig,
        signed_by: &SignedBy,
        event: &str,
        payload: &Payload,
    ) -> Result<PushPlan, BadPush> {
        let received = Received {
            event,
            payload,
            delivery_id: "d1",
            signed_by,
        };
        plan_delivery(apps, received, OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_push_deploys_one_job_per_host_of_the_apps_its_secret_may_deploy() {
        let plan = plan(
            &apps(),
            &SignedBy::Global,
            "push",
            &push("refs/heads/main", SHA),
        )
        .unwrap();
        assert_eq!(plan.verdict, DeliveryVerdict::Queued);
        let hosts: Vec<&str> = plan.jobs.iter().map(|j| j.host.as_str()).collect();
        assert_eq!(hosts, ["web-01", "web-02"]);
        assert!(plan.jobs.iter().all(|j| j.sha.as_deref() == Some(SHA)
            && j.delivery_id.as_deref() == Some("d1")
            && j.metadata["message"] == "Fix it"));
        assert!(
            plan.message.contains("app billing skipped"),
            "{}",
            plan.message
        );
    }

    #[test]
    fn an_apps_own_secret_deploys_only_that_app() {
        let apps = apps();
        let secret = apps.app("billing").unwrap().webhook_secret.clone().unwrap();
        let plan = plan(
            &apps,
            &SignedBy::App(secret),
            "push",
            &push("refs/heads/main", SHA),
        )
        .unwrap();
        let hosts: Vec<&str> = plan.jobs.iter().map(|j| j.host.as_str()).collect();
        assert_eq!(hosts, ["billing-01"]);
    }

    #[test]
    fn deletions_other_branches_and_other_events_deploy_nothing() {
        let apps = apps();
        let mut deleted = push(
            "refs/heads/main",
            "0000000000000000000000000000000000000000",
        );
        deleted.deleted = true;
        let cases = [
            ("push", deleted, DeliveryVerdict::Deleted),
            (
                "push",
                push("refs/heads/dev", SHA),
                DeliveryVerdict::NoMatch,
            ),
            ("ping", Payload::default(), DeliveryVerdict::Ping),
            ("issues", Payload::default(), DeliveryVerdict::IgnoredEvent),
        ];
        for (event, payload, verdict) in cases {
            let plan = plan(&apps, &SignedBy::Global, event, &payload).unwrap();
            assert_eq!(plan.verdict, verdict, "{event}: {}", plan.message);
            assert!(plan.jobs.is_empty());
        }
    }

    #[test]
    fn a_push_without_repository_ref_or_commit_is_refused() {
        let mut payload = push("refs/heads/main", SHA);
        payload.repository = None;
        assert!(plan(&apps(), &SignedBy::Global, "push", &payload).is_err());
        let zeros = "0".repeat(40);
        for after in [None, Some("zzzz"), Some("abc1234"), Some(zeros.as_str())] {
            let mut payload = push("refs/heads/main", SHA);
            payload.after = after.map(str::to_owned);
            let refused = plan(&apps(), &SignedBy::Global, "push", &payload);
            assert!(refused.is_err(), "{after:?}: {refused:?}");
        }
    }

    #[test]
    fn a_push_older_than_the_kept_history_deploys_nothing() {
        let payload = push("refs/heads/main", SHA);
        let pushed = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let received = Received {
            event: "push",
            payload: &payload,
            delivery_id: "d1",
            signed_by: &SignedBy::Global,
        };

        let stale = plan_delivery(&apps(), received, pushed + time::Duration::SECOND).unwrap();
        assert_eq!(stale.verdict, DeliveryVerdict::Stale);
        assert!(stale.jobs.is_empty());
        assert!(stale.message.contains("2023-11-14"), "{}", stale.message);

        let fresh = plan_delivery(&apps(), received, pushed).unwrap();
        assert_eq!(fresh.verdict, DeliveryVerdict::Queued);
        // Without `pushed_at` (not a GitHub push), nothing to compare.
        let mut undated = push("refs/heads/main", SHA);
        undated.repository.as_mut().unwrap().pushed_at = Some(serde_json::json!("2023-11-14"));
        let received = Received {
            payload: &undated,
            ..received
        };
        let plan = plan_delivery(&apps(), received, pushed + time::Duration::SECOND).unwrap();
        assert_eq!(plan.verdict, DeliveryVerdict::Queued);
    }
}
