//! The store's behaviour, tested on a real database file.
//!
//! Written against `dyn Store` so the same suite can run on every backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use deploybot_store::{
    Claim, JobFilter, NewAudit, NewDelivery, NewJob, NewRegistration, NewToken, ReportOutcome,
    StatusReport, Store, StoreError,
};
use deploybot_wire::{DeliveryVerdict, DeploySpec, JobSource, JobStatus, TokenRole};

pub struct TestStore {
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
}

pub async fn open() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = deploybot_store::open(&format!("sqlite://{}/q.db", dir.path().display()))
        .await
        .unwrap();
    TestStore { store, dir }
}

fn job(id: &str, app: &str, host: &str, sha: &str) -> NewJob {
    NewJob {
        id: id.into(),
        app: app.into(),
        repo: "acme/web".into(),
        git_ref: "refs/heads/main".into(),
        sha: Some(sha.into()),
        host: host.into(),
        metadata: serde_json::json!({"by": "test"}),
        source: JobSource::Manual,
        delivery_id: None,
        deploy: DeploySpec {
            command: vec!["./deploy.sh".into()],
            workdir: None,
            env: BTreeMap::new(),
            timeout_secs: 60,
        },
        attempt: 1,
        retry_of: None,
    }
}

fn report(status: JobStatus, agent: Option<&str>) -> StatusReport {
    StatusReport {
        status,
        error: None,
        exit_code: Some(0),
        agent_id: agent.map(Into::into),
        lease: None,
    }
}

async fn claim(store: &dyn Store, agent: &str, host: &str) -> Claim {
    store.claim_job(agent.into(), host.into()).await.unwrap()
}

fn claimed_id(claim: Claim) -> String {
    match claim {
        Claim::Job(job) => job.id,
        other => panic!("expected a job, got {other:?}"),
    }
}

#[tokio::test]
async fn identical_open_jobs_are_returned_not_duplicated() {
    let t = open().await;
    let first = t
        .store
        .enqueue(job("j1", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    assert!(first.created);
    let again = t
        .store
        .enqueue(job("j2", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.job.id, "j1");
    // Also while it runs.
    claimed_id(claim(&*t.store, "a1", "h1").await);
    let during = t
        .store
        .enqueue(job("j3", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    assert_eq!(during.job.id, "j1");
    // Once finished, the same request is a new deployment.
    t.store
        .report_status("j1".into(), report(JobStatus::Success, None))
        .await
        .unwrap();
    let after = t
        .store
        .enqueue(job("j4", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    assert!(after.created);
    assert_eq!(after.job.id, "j4");
}

#[tokio::test]
async fn a_newer_job_supersedes_pending_ones_of_the_same_app_and_host_only() {
    let t = open().await;
    t.store
        .enqueue(job("old", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("other-host", "web", "h2", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("other-app", "api", "h1", "aaaaaaa"))
        .await
        .unwrap();
    let newer = t
        .store
        .enqueue(job("new", "web", "h1", "bbbbbbb"))
        .await
        .unwrap();
    assert_eq!(newer.superseded, ["old"]);

    let old = t.store.job("old".into()).await.unwrap().unwrap();
    assert_eq!(old.status, JobStatus::Superseded);
    assert_eq!(old.superseded_by.as_deref(), Some("new"));
    assert!(old.completed_at.is_some());
    for untouched in ["other-host", "other-app", "new"] {
        let job = t.store.job(untouched.into()).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Pending, "{untouched}");
    }
}

#[tokio::test]
async fn a_running_job_is_never_superseded() {
    let t = open().await;
    t.store
        .enqueue(job("running", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a1", "h1").await);
    let newer = t
        .store
        .enqueue(job("new", "web", "h1", "bbbbbbb"))
        .await
        .unwrap();
    assert!(newer.superseded.is_empty());
    let running = t.store.job("running".into()).await.unwrap().unwrap();
    assert_eq!(running.status, JobStatus::Running);
}

#[tokio::test]
async fn claims_hand_out_the_oldest_job_one_at_a_time_per_host() {
    let t = open().await;
    t.store
        .enqueue(job("first", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("second", "api", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("elsewhere", "web", "h2", "aaaaaaa"))
        .await
        .unwrap();

    assert_eq!(claimed_id(claim(&*t.store, "a1", "h1").await), "first");
    assert!(matches!(
        claim(&*t.store, "a1", "h1").await,
        Claim::HostBusy
    ));
    assert!(matches!(
        claim(&*t.store, "a3", "h3").await,
        Claim::NothingPending
    ));

    t.store
        .report_status("first".into(), report(JobStatus::Failed, Some("a1")))
        .await
        .unwrap();
    assert_eq!(claimed_id(claim(&*t.store, "a1", "h1").await), "second");
    assert_eq!(claimed_id(claim(&*t.store, "a2", "h2").await), "elsewhere");
}

#[tokio::test]
async fn concurrent_claims_never_share_a_job() {
    let t = open().await;
    t.store
        .enqueue(job("only", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    let racers: Vec<_> = (0..64)
        .map(|i| {
            let store = t.store.clone();
            tokio::spawn(async move { store.claim_job(format!("a{i}"), "h1".into()).await })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        if let Claim::Job(job) = racer.await.unwrap().unwrap() {
            assert_eq!(job.id, "only");
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn reports_follow_the_state_machine() {
    let t = open().await;
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();

    // Not running yet: no report is accepted.
    let early = t
        .store
        .report_status("j".into(), report(JobStatus::Success, None))
        .await;
    assert!(matches!(early, Err(StoreError::Conflict(_))), "{early:?}");

    claimed_id(claim(&*t.store, "a1", "h1").await);
    let intruder = t
        .store
        .report_status("j".into(), report(JobStatus::Success, Some("a2")))
        .await;
    assert!(
        matches!(intruder, Err(StoreError::NotYours(_))),
        "{intruder:?}"
    );

    let ack = t
        .store
        .report_status("j".into(), report(JobStatus::Running, Some("a1")))
        .await;
    assert_eq!(ack.unwrap(), ReportOutcome::Unchanged(JobStatus::Running));
    let done = t
        .store
        .report_status("j".into(), report(JobStatus::Success, Some("a1")))
        .await;
    assert!(
        matches!(&done, Ok(ReportOutcome::Updated(job)) if job.status == JobStatus::Success),
        "{done:?}"
    );
    let repeat = t
        .store
        .report_status("j".into(), report(JobStatus::Success, Some("a1")))
        .await;
    assert_eq!(
        repeat.unwrap(),
        ReportOutcome::Unchanged(JobStatus::Success)
    );
    let back = t
        .store
        .report_status("j".into(), report(JobStatus::Running, Some("a1")))
        .await;
    assert!(matches!(back, Err(StoreError::Conflict(_))), "{back:?}");

    let job = t.store.job("j".into()).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Success);
    assert_eq!(job.exit_code, Some(0));
    assert!(job.completed_at.is_some());

    let missing = t
        .store
        .report_status("nope".into(), report(JobStatus::Success, None))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

fn delivery(id: &str) -> NewDelivery {
    NewDelivery {
        delivery_id: id.into(),
        event: "push".into(),
        repo: Some("acme/web".into()),
        git_ref: Some("refs/heads/main".into()),
        sha: Some("aaaaaaa".into()),
        verdict: DeliveryVerdict::Queued,
        message: "queued".into(),
        address: None,
    }
}

/// A registration with a token hash of its own.
fn registration(id: &str, host: &str, capabilities: Vec<String>) -> NewRegistration {
    NewRegistration {
        new_id: id.into(),
        hostname: host.into(),
        capabilities,
        token_hash: format!("hash-of-{id}"),
        use_enrollment_token: None,
    }
}

#[tokio::test]
async fn a_redelivery_creates_nothing_and_answers_the_same_jobs() {
    let t = open().await;
    let jobs = vec![
        job("d1", "web", "h1", "aaaaaaa"),
        job("d2", "web", "h2", "aaaaaaa"),
    ];
    let first = t
        .store
        .ingest_delivery(delivery("g-1"), jobs)
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.job_ids, ["d1", "d2"]);
    assert_eq!(first.hosts_with_new_jobs, ["h1", "h2"]);

    let jobs = vec![job("d3", "web", "h1", "bbbbbbb")];
    let again = t
        .store
        .ingest_delivery(delivery("g-1"), jobs)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.job_ids, ["d1", "d2"]);
    assert!(t.store.job("d3".into()).await.unwrap().is_none());
    assert_eq!(t.store.deliveries(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn listing_filters_and_orders_newest_first() {
    let t = open().await;
    t.store
        .enqueue(job("a", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("b", "api", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("c", "web", "h2", "aaaaaaa"))
        .await
        .unwrap();
    let ids = |jobs: Vec<deploybot_wire::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let all = JobFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(t.store.jobs(all.clone()).await.unwrap()),
        ["c", "b", "a"]
    );
    let web = JobFilter {
        app: Some("web".into()),
        ..all.clone()
    };
    assert_eq!(ids(t.store.jobs(web).await.unwrap()), ["c", "a"]);
    let h1 = JobFilter {
        host: Some("h1".into()),
        limit: 1,
        ..all.clone()
    };
    assert_eq!(ids(t.store.jobs(h1).await.unwrap()), ["b"]);
    let repo = JobFilter {
        repo: Some("ACME/WEB".into()),
        ..all.clone()
    };
    assert_eq!(t.store.jobs(repo).await.unwrap().len(), 3);
    let running = JobFilter {
        status: Some(JobStatus::Running),
        ..all
    };
    assert!(t.store.jobs(running).await.unwrap().is_empty());
}

#[tokio::test]
async fn jobs_survive_reopening_the_file() {
    let t = open().await;
    t.store
        .enqueue(job("pending", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("running", "web", "h2", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a2", "h2").await);
    let url = format!("sqlite://{}/q.db", t.dir.path().display());
    drop(t.store);

    let reopened = deploybot_store::open(&url).await.unwrap();
    let pending = reopened.job("pending".into()).await.unwrap().unwrap();
    assert_eq!(pending.status, JobStatus::Pending);
    let running = reopened.job("running".into()).await.unwrap().unwrap();
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.assigned_agent.as_deref(), Some("a2"));
    assert_eq!(reopened.hosts_with_pending_jobs().await.unwrap(), ["h1"]);
}

#[tokio::test]
async fn agents_keep_their_id_across_registrations() {
    let t = open().await;
    let first = t
        .store
        .register_agent(registration("id-1", "h1", vec!["docker".into()]))
        .await
        .unwrap();
    let again = t
        .store
        .register_agent(registration("id-2", "h1", vec![]))
        .await
        .unwrap();
    assert_eq!(first.agent.id, "id-1");
    assert_eq!(again.agent.id, "id-1");
    assert!(again.agent.capabilities.is_empty());
    assert_eq!(t.store.agents().await.unwrap().len(), 1);
}

#[tokio::test]
async fn leases_of_silent_agents_expire_and_only_theirs() {
    let t = open().await;
    let silent = t
        .store
        .register_agent(registration("silent", "h1", vec![]))
        .await
        .unwrap();
    t.store
        .enqueue(job("lost", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("kept", "web", "h2", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, &silent.agent.id, "h1").await);
    let alive = t
        .store
        .register_agent(registration("alive", "h2", vec![]))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, &alive.agent.id, "h2").await);
    let now = time::OffsetDateTime::now_utc();
    t.store
        .save_heartbeats(vec![deploybot_store::Beat {
            agent_id: alive.agent.id.clone(),
            status: deploybot_wire::AgentStatus::Busy,
            at: now + time::Duration::seconds(10),
        }])
        .await
        .unwrap();

    let lost = t
        .store
        .expire_leases(now + time::Duration::seconds(5), "agent lost".into())
        .await
        .unwrap();
    assert_eq!(
        lost.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["lost"]
    );
    assert_eq!(lost[0].status, JobStatus::Lost);
    let kept = t.store.job("kept".into()).await.unwrap().unwrap();
    assert_eq!(kept.status, JobStatus::Running);
}

#[tokio::test]
async fn cancel_and_retry_follow_the_state_machine() {
    let t = open().await;
    t.store
        .enqueue(job("p", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    let cancelled = t.store.cancel_job("p".into()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(matches!(
        t.store.cancel_job("p".into()).await,
        Err(StoreError::Conflict(_))
    ));

    t.store
        .enqueue(job("r", "web", "h1", "bbbbbbb"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a1", "h1").await);
    let flagged = t.store.cancel_job("r".into()).await.unwrap();
    assert_eq!(flagged.status, JobStatus::Running);
    assert!(flagged.cancel_requested);
    assert_eq!(t.store.cancel_requests("h1".into()).await.unwrap(), ["r"]);
    assert_eq!(t.store.hosts_with_cancel_requests().await.unwrap(), ["h1"]);
    assert!(matches!(
        t.store.retry_job("r".into(), "r2".into()).await,
        Err(StoreError::Conflict(_))
    ));

    t.store
        .report_status("r".into(), report(JobStatus::Cancelled, Some("a1")))
        .await
        .unwrap();
    assert!(
        t.store
            .cancel_requests("h1".into())
            .await
            .unwrap()
            .is_empty()
    );
    let retry = t.store.retry_job("r".into(), "r2".into()).await.unwrap();
    assert!(retry.created);
    assert_eq!(retry.job.attempt, 2);
    assert_eq!(retry.job.retry_of.as_deref(), Some("r"));
    assert_eq!(retry.job.source, JobSource::Retry);
    assert!(matches!(
        t.store.retry_job("nope".into(), "x".into()).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn registering_again_loses_the_previous_sessions_running_job() {
    let t = open().await;
    let first = t
        .store
        .register_agent(registration("a", "h1", vec![]))
        .await
        .unwrap();
    assert!(first.lost.is_empty());
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a", "h1").await);
    let again = t
        .store
        .register_agent(registration("b", "h1", vec![]))
        .await
        .unwrap();
    assert_eq!(again.lost.len(), 1);
    assert_eq!(again.lost[0].status, JobStatus::Lost);
}

fn lines(from: u64, to: u64) -> Vec<deploybot_wire::LogLine> {
    (from..=to)
        .map(|line| deploybot_wire::LogLine {
            line,
            stream: deploybot_wire::LogStream::Stdout,
            at: time::OffsetDateTime::now_utc(),
            text: format!("line {line}"),
        })
        .collect()
}

#[tokio::test]
async fn log_appends_are_idempotent_and_need_the_lease() {
    let t = open().await;
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    let early = t
        .store
        .append_logs("j".into(), None, None, lines(1, 1))
        .await;
    assert!(matches!(early, Err(StoreError::Conflict(_))), "{early:?}");

    let Claim::Job(running) = claim(&*t.store, "a1", "h1").await else {
        panic!("no job")
    };
    let stale = t
        .store
        .append_logs(
            "j".into(),
            Some("a1".into()),
            running.lease.map(|l| l + 1),
            lines(1, 1),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");

    let first = t
        .store
        .append_logs("j".into(), Some("a1".into()), running.lease, lines(1, 3))
        .await
        .unwrap();
    assert_eq!((first.entries.len(), first.duplicates), (3, 0));
    assert_eq!(first.entries[0].host, "h1");
    let again = t
        .store
        .append_logs("j".into(), Some("a1".into()), running.lease, lines(3, 4))
        .await
        .unwrap();
    assert_eq!((again.entries.len(), again.duplicates), (1, 1));

    let stored = t.store.job_logs("j".into(), 0, 100).await.unwrap();
    assert_eq!(
        stored.iter().map(|l| l.line).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let after = t.store.job_logs("j".into(), 2, 1).await.unwrap();
    assert_eq!(after[0].line, 3);

    let since = t
        .store
        .logs_since(
            first.entries[1].id,
            deploybot_store::LogFilter::default(),
            100,
        )
        .await
        .unwrap();
    assert_eq!(since.iter().map(|l| l.line).collect::<Vec<_>>(), [3, 4]);
    let other_host = deploybot_store::LogFilter {
        host: Some("h2".into()),
        ..Default::default()
    };
    assert!(
        t.store
            .logs_since(0, other_host, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(t.store.last_log_id().await.unwrap(), again.entries[0].id);
}

#[tokio::test]
async fn pruning_keeps_the_newest_jobs_and_recent_ones() {
    let t = open().await;
    // Three finished jobs of app web on h1, each with logs.
    for (id, sha) in [("old", "aaaaaaa"), ("mid", "bbbbbbb"), ("new", "ccccccc")] {
        t.store.enqueue(job(id, "web", "h1", sha)).await.unwrap();
        let running = claimed_id(claim(&*t.store, "a1", "h1").await);
        let lease = t.store.job(running.clone()).await.unwrap().unwrap().lease;
        t.store
            .append_logs(running.clone(), None, lease, lines(1, 3))
            .await
            .unwrap();
        t.store
            .report_status(running, report(JobStatus::Success, None))
            .await
            .unwrap();
    }
    let now = time::OffsetDateTime::now_utc();
    // Everything is recent: a 14-day window keeps it all.
    let kept = t
        .store
        .prune_logs(1, now - time::Duration::days(14))
        .await
        .unwrap();
    assert_eq!(kept, 0);
    // Past the window, only the newest job of the app keeps its logs.
    let pruned = t
        .store
        .prune_logs(1, now + time::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(pruned, 6);
    assert!(
        t.store
            .job_logs("old".into(), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        t.store
            .job_logs("mid".into(), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        t.store.job_logs("new".into(), 0, 10).await.unwrap().len(),
        3
    );
}

fn token(id: &str, role: TokenRole, single_use: bool) -> NewToken {
    NewToken {
        id: id.into(),
        hash: format!("hash-of-{id}"),
        name: format!("token {id}"),
        role,
        apps: None,
        single_use,
        expires_at: None,
    }
}

#[tokio::test]
async fn tokens_are_found_by_hash_until_revoked_in_place() {
    let t = open().await;
    let store = &t.store;
    assert!(!store.any_admin_token().await.unwrap());
    store
        .create_token(token("tok_a", TokenRole::Admin, false))
        .await
        .unwrap();
    assert!(store.any_admin_token().await.unwrap());

    let found = store
        .token_by_hash("hash-of-tok_a".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id.as_str(), found.role), ("tok_a", TokenRole::Admin));
    assert!(
        store
            .token_by_hash("hash-of-nothing".into())
            .await
            .unwrap()
            .is_none()
    );

    let revoked = store.revoke_token("tok_a".into()).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(!store.any_admin_token().await.unwrap());
    let missing = store.revoke_token("tok_none".into()).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn a_single_use_enrollment_token_registers_once_and_the_newest_agent_token_wins() {
    let t = open().await;
    let store = &t.store;
    store
        .create_token(token("tok_e", TokenRole::Enroll, true))
        .await
        .unwrap();
    let mut first = registration("id-1", "h1", vec![]);
    first.use_enrollment_token = Some("tok_e".into());
    store.register_agent(first.clone()).await.unwrap();

    let mut second = registration("id-2", "h2", vec![]);
    second.use_enrollment_token = Some("tok_e".into());
    let refused = store.register_agent(second).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert!(
        store
            .agent_by_token("hash-of-id-2".into())
            .await
            .unwrap()
            .is_none()
    );

    // h1 registers again with a new token: the old one no longer matches.
    let mut again = registration("id-x", "h1", vec![]);
    again.token_hash = "hash-new".into();
    store.register_agent(again).await.unwrap();
    assert!(
        store
            .agent_by_token("hash-of-id-1".into())
            .await
            .unwrap()
            .is_none()
    );
    let agent = store
        .agent_by_token("hash-new".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (agent.agent_id.as_str(), agent.hostname.as_str()),
        ("id-1", "h1")
    );

    store.revoke_agent("id-1".into()).await.unwrap();
    assert!(
        store
            .agent_by_token("hash-new".into())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_audit_log_pages_newest_first() {
    let t = open().await;
    let store = &t.store;
    for n in 0..5 {
        store
            .record_audit(NewAudit {
                actor: "token:tok_a".into(),
                action: "cancel".into(),
                target: format!("job {n}"),
                address: Some("10.0.0.1".into()),
                result: "ok".into(),
            })
            .await
            .unwrap();
    }
    let page = store.audit(2, None).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["job 4", "job 3"]
    );
    let next = store.audit(10, Some(page[1].id)).await.unwrap();
    assert_eq!(
        next.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["job 2", "job 1", "job 0"]
    );
}
