//! The store's behaviour: one conformance suite, written against `dyn Store`,
//! run on every backend (SQLite on a real file, PostgreSQL on a fresh
//! database; see `support` for how the PostgreSQL server is chosen).
//!
//! Each test is an `async fn(TestStore)`; `conformance!` at the end of each
//! file makes a `sqlite::NAME` and a `postgres::NAME` test of it (filter with
//! `cargo test -p deploybot-store --test queue sqlite::`). Agents, tokens and
//! the audit log are in `queue/agents.rs`, deploy output in `queue/logs.rs`,
//! pruning old history in `queue/retention.rs`.

mod support;

/// Makes each listed `async fn(TestStore)` a test on every backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some((t, database)) = crate::support::postgres().await {
                        super::$name(t).await;
                        database.drop_now().await;
                    }
                }
            )*
        }
    };
}

#[path = "queue/agents.rs"]
mod agents;
#[path = "queue/logs.rs"]
mod logs;
#[path = "queue/retention.rs"]
mod retention;

use std::collections::BTreeMap;

use deploybot_store::{
    Claim, JobFilter, NewDelivery, NewJob, NewRegistration, ReportOutcome, StatusReport, Store,
    StoreError,
};
use deploybot_wire::{DeliveryVerdict, DeploySpec, JobSource, JobStatus};
use support::TestStore;

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
        traceparent: None,
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

async fn identical_open_jobs_are_returned_not_duplicated(t: TestStore) {
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

async fn a_newer_job_supersedes_pending_ones_of_the_same_app_and_host_only(t: TestStore) {
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

async fn a_running_job_is_never_superseded(t: TestStore) {
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

async fn claims_hand_out_the_oldest_job_one_at_a_time_per_host(t: TestStore) {
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

async fn concurrent_claims_never_share_a_job(t: TestStore) {
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

async fn reports_follow_the_state_machine(t: TestStore) {
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
        capabilities: capabilities.into(),
        token_hash: format!("hash-of-{id}"),
        use_enrollment_token: None,
        may_replace: true,
    }
}

async fn a_redelivery_creates_nothing_and_answers_the_same_jobs(t: TestStore) {
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
    assert_eq!(t.store.deliveries(10, None).await.unwrap().len(), 1);
}

async fn listing_filters_and_orders_newest_first(t: TestStore) {
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

async fn jobs_survive_reopening_the_database(t: TestStore) {
    t.store
        .enqueue(job("pending", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("running", "web", "h2", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a2", "h2").await);
    let url = t.url.clone();
    drop(t.store);

    let reopened = deploybot_store::open(&url).await.unwrap();
    let pending = reopened.job("pending".into()).await.unwrap().unwrap();
    assert_eq!(pending.status, JobStatus::Pending);
    let running = reopened.job("running".into()).await.unwrap().unwrap();
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(running.assigned_agent.as_deref(), Some("a2"));
    assert_eq!(reopened.hosts_with_pending_jobs().await.unwrap(), ["h1"]);
}

async fn leases_of_silent_agents_expire_and_only_theirs(t: TestStore) {
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

async fn cancel_and_retry_follow_the_state_machine(t: TestStore) {
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
        t.store.retry_job("r".into(), "r2".into(), None).await,
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
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let retry = t
        .store
        .retry_job("r".into(), "r2".into(), Some(trace.into()))
        .await
        .unwrap();
    assert!(retry.created);
    assert_eq!(retry.job.traceparent.as_deref(), Some(trace));
    let stored = t.store.job("r2".into()).await.unwrap().unwrap();
    assert_eq!(stored.traceparent.as_deref(), Some(trace));
    assert_eq!(retry.job.attempt, 2);
    assert_eq!(retry.job.retry_of.as_deref(), Some("r"));
    assert_eq!(retry.job.source, JobSource::Retry);
    assert!(matches!(
        t.store.retry_job("nope".into(), "x".into(), None).await,
        Err(StoreError::NotFound(_))
    ));
}

fn webhook_job(id: &str, host: &str, delivery_id: &str) -> NewJob {
    NewJob {
        source: JobSource::Webhook,
        delivery_id: Some(delivery_id.into()),
        ..job(id, "web", host, "aaaaaaa")
    }
}

async fn a_replayed_commit_creates_no_webhook_job_whatever_its_delivery_id(t: TestStore) {
    let first = t
        .store
        .ingest_delivery(delivery("g-1"), vec![webhook_job("w1", "h1", "g-1")])
        .await
        .unwrap();
    assert_eq!(first.job_ids, ["w1"]);
    // Finished, so no open job makes the replay an idempotent request.
    claimed_id(claim(&*t.store, "a1", "h1").await);
    t.store
        .report_status("w1".into(), report(JobStatus::Success, None))
        .await
        .unwrap();

    let replay = t
        .store
        .ingest_delivery(delivery("g-2"), vec![webhook_job("w2", "h1", "g-2")])
        .await
        .unwrap();
    assert!(!replay.duplicate);
    assert_eq!(replay.job_ids, ["w1"]);
    assert!(replay.hosts_with_new_jobs.is_empty());
    assert!(t.store.job("w2".into()).await.unwrap().is_none());
    let deliveries = t.store.deliveries(10, None).await.unwrap();
    assert_eq!(
        deliveries
            .iter()
            .map(|d| d.delivery_id.as_str())
            .collect::<Vec<_>>(),
        ["g-2", "g-1"]
    );
    // The webhook's audit entry is written with its jobs.
    let audit = t.store.audit(10, None).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "webhook:g-1" && e.action == "deploy"),
        "{audit:?}"
    );
}

/// A delivery of commit `sha` deploying app web on h1 and h2 (jobs
/// `{jobs}-h1` and `{jobs}-h2`).
async fn push(
    store: &dyn Store,
    delivery_id: &str,
    sha: &str,
    jobs: &str,
) -> Result<deploybot_store::DeliveryOutcome, StoreError> {
    let new_jobs = ["h1", "h2"]
        .into_iter()
        .map(|host| NewJob {
            source: JobSource::Webhook,
            delivery_id: Some(delivery_id.into()),
            ..job(&format!("{jobs}-{host}"), "web", host, sha)
        })
        .collect();
    let mut delivery = delivery(delivery_id);
    delivery.sha = Some(sha.into());
    store.ingest_delivery(delivery, new_jobs).await
}

/// Deliveries that arrive together share a write on both backends (group
/// commit); each is still recorded as if it had come alone, one after the
/// other: its own jobs, a redelivery or a replayed commit answered with the
/// first one's, and each new job superseding the one before it.
async fn deliveries_arriving_together_are_recorded_one_after_the_other(t: TestStore) {
    push(&*t.store, "g-0", "sha-0", "w0").await.unwrap();
    // g-3 comes twice (a redelivery); g-21 pushes g-5's commit again.
    let mut pushes: Vec<(String, String, String)> = (1..=20)
        .map(|n| (format!("g-{n}"), format!("sha-{n}"), format!("w{n}")))
        .collect();
    pushes.push(("g-3".into(), "sha-3b".into(), "w3b".into()));
    pushes.push(("g-21".into(), "sha-5".into(), "w21".into()));
    let racers: Vec<_> = pushes
        .iter()
        .cloned()
        .map(|(id, sha, jobs)| {
            let store = t.store.clone();
            tokio::spawn(async move { push(&*store, &id, &sha, &jobs).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.unwrap().unwrap());
    }
    let ids = |jobs: &str| vec![format!("{jobs}-h1"), format!("{jobs}-h2")];
    let hosts = vec!["h1".to_owned(), "h2".to_owned()];
    for ((id, _, jobs), outcome) in pushes.iter().zip(&outcomes).take(20) {
        if id == "g-3" || id == "g-5" {
            continue;
        }
        assert!(!outcome.duplicate, "{id}: {outcome:?}");
        assert_eq!(outcome.job_ids, ids(jobs), "{id}");
        assert_eq!(outcome.hosts_with_new_jobs, hosts, "{id}");
    }
    // The redelivery: one of the two is recorded, the other answers its jobs.
    let (g3, again) = (&outcomes[2], &outcomes[20]);
    assert_ne!(g3.duplicate, again.duplicate, "{g3:?} {again:?}");
    assert_eq!(g3.job_ids, again.job_ids);
    let (kept, dropped) = if g3.duplicate {
        ("w3b", "w3")
    } else {
        ("w3", "w3b")
    };
    assert_eq!(g3.job_ids, ids(kept));
    assert!(
        t.store
            .job(format!("{dropped}-h1"))
            .await
            .unwrap()
            .is_none()
    );
    // The replayed commit: both recorded, one set of jobs.
    let (g5, replay) = (&outcomes[4], &outcomes[21]);
    assert!(!g5.duplicate && !replay.duplicate);
    assert_eq!(g5.job_ids, replay.job_ids);
    assert_eq!(
        g5.hosts_with_new_jobs.len() + replay.hosts_with_new_jobs.len(),
        2,
        "{g5:?} {replay:?}"
    );

    // Newest push wins, job after job: oldest first, each superseded by the next.
    for host in ["h1", "h2"] {
        let mut jobs = t
            .store
            .jobs(JobFilter {
                host: Some(host.into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        jobs.reverse();
        assert_eq!(jobs.len(), 21, "{host}: {jobs:?}");
        for pair in jobs.windows(2) {
            assert_eq!(pair[0].status, JobStatus::Superseded, "{pair:?}");
            assert_eq!(pair[0].superseded_by.as_deref(), Some(pair[1].id.as_str()));
        }
        assert_eq!(jobs[20].status, JobStatus::Pending);
    }
    assert_eq!(t.store.deliveries(100, None).await.unwrap().len(), 22);
    let audit = t.store.audit(100, None).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "deploy").count(), 22);
}

async fn host_summaries_show_the_running_last_and_pending_jobs(t: TestStore) {
    t.store
        .enqueue(job("a", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    t.store
        .enqueue(job("b", "api", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a1", "h1").await);
    let hosts = t
        .store
        .host_jobs(vec!["h1".into(), "h2".into()])
        .await
        .unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0].hostname, "h1");
    assert_eq!(hosts[0].current.as_ref().map(|j| j.id.as_str()), Some("a"));
    assert!(hosts[0].last.is_none());
    assert_eq!(hosts[0].pending, 1);
    assert_eq!(hosts[1].hostname, "h2");
    assert!(hosts[1].current.is_none() && hosts[1].last.is_none());
    assert_eq!(hosts[1].pending, 0);
    assert_eq!(t.store.hosts_with_pending_jobs().await.unwrap(), ["h1"]);

    t.store
        .report_status("a".into(), report(JobStatus::Success, None))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a1", "h1").await);
    let hosts = t.store.host_jobs(vec!["h1".into()]).await.unwrap();
    assert_eq!(hosts[0].current.as_ref().map(|j| j.id.as_str()), Some("b"));
    assert_eq!(hosts[0].last.as_ref().map(|j| j.id.as_str()), Some("a"));
    assert_eq!(hosts[0].pending, 0);
    assert!(t.store.hosts_with_pending_jobs().await.unwrap().is_empty());
}

conformance!(
    identical_open_jobs_are_returned_not_duplicated,
    a_newer_job_supersedes_pending_ones_of_the_same_app_and_host_only,
    a_running_job_is_never_superseded,
    claims_hand_out_the_oldest_job_one_at_a_time_per_host,
    concurrent_claims_never_share_a_job,
    reports_follow_the_state_machine,
    a_redelivery_creates_nothing_and_answers_the_same_jobs,
    listing_filters_and_orders_newest_first,
    jobs_survive_reopening_the_database,
    leases_of_silent_agents_expire_and_only_theirs,
    cancel_and_retry_follow_the_state_machine,
    a_replayed_commit_creates_no_webhook_job_whatever_its_delivery_id,
    host_summaries_show_the_running_last_and_pending_jobs,
    deliveries_arriving_together_are_recorded_one_after_the_other,
);
