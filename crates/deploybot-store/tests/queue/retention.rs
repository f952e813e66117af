//! Pruning old history: jobs (with their logs), deliveries, audit entries.

use deploybot_store::{HistoryRetention, JobFilter, NewAudit, Store};
use deploybot_wire::JobStatus;
use time::{Duration, OffsetDateTime};

use crate::support::TestStore;
use crate::{claim, claimed_id, delivery, job, report};

/// Runs job `id` of `app` on `host` to `status`, with one line of output.
async fn finished(store: &dyn Store, id: &str, app: &str, host: &str, status: JobStatus) {
    store.enqueue(job(id, app, host, "aaaaaaa")).await.unwrap();
    let running = claimed_id(claim(store, "a1", host).await);
    assert_eq!(running, id);
    let lease = store.job(id.into()).await.unwrap().unwrap().lease;
    let line = deploybot_wire::LogLine {
        line: 1,
        stream: deploybot_wire::LogStream::Stdout,
        at: OffsetDateTime::now_utc(),
        text: format!("output of {id}"),
    };
    store
        .append_logs(id.into(), None, lease, vec![line], u64::MAX)
        .await
        .unwrap();
    store
        .report_status(id.into(), report(status, None))
        .await
        .unwrap();
}

/// Keeps nothing for its age, and as few as it may of each kind.
fn keep_only_what_is_needed() -> HistoryRetention {
    let future = OffsetDateTime::now_utc() + Duration::seconds(1);
    HistoryRetention {
        keep_jobs: 1,
        keep_since: future,
        keep_deliveries: 1,
        audit_since: future,
        keep_audit: 1,
    }
}

async fn ids(store: &dyn Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .jobs(JobFilter {
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    ids.sort();
    ids
}

async fn history_pruning_keeps_what_deployments_need(t: TestStore) {
    let store = &*t.store;
    finished(store, "web-1", "web", "h1", JobStatus::Success).await;
    finished(store, "web-2", "web", "h1", JobStatus::Failed).await;
    finished(store, "web-3", "web", "h1", JobStatus::Success).await;
    finished(store, "web-4", "web", "h1", JobStatus::Failed).await;
    finished(store, "web-5", "web", "h1", JobStatus::Cancelled).await;
    finished(store, "web-h2", "web", "h2", JobStatus::Failed).await;
    // Open work is never touched, however old.
    store
        .enqueue(job("running", "web", "h3", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(store, "a3", "h3").await);
    store
        .enqueue(job("pending", "web", "h3", "bbbbbbb"))
        .await
        .unwrap();

    let pruned = store
        .prune_history(keep_only_what_is_needed())
        .await
        .unwrap();

    // Gone: web-1, web-2, web-4. Kept: on h1 the newest job (web-5, what
    // happened last) and the newest success (web-3, what a rollback
    // returns to); h2's only job; the open ones.
    assert_eq!(pruned.jobs, 3);
    assert_eq!(
        ids(store).await,
        ["pending", "running", "web-3", "web-5", "web-h2"]
    );
    assert!(
        store
            .job_logs("web-1".into(), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.job_logs("web-3".into(), 0, 10).await.unwrap().len(),
        1
    );
    // Pruning again finds nothing more.
    let again = store
        .prune_history(keep_only_what_is_needed())
        .await
        .unwrap();
    assert_eq!(again.jobs, 0);
}

async fn recent_and_newest_history_is_kept(t: TestStore) {
    let store = &*t.store;
    for n in 1..=4 {
        finished(store, &format!("j{n}"), "web", "h1", JobStatus::Failed).await;
    }
    let now = OffsetDateTime::now_utc();
    // Everything finished within the window: all kept.
    let recent = HistoryRetention {
        keep_since: now - Duration::days(1),
        audit_since: now - Duration::days(1),
        ..keep_only_what_is_needed()
    };
    assert_eq!(store.prune_history(recent).await.unwrap().jobs, 0);
    // Past the window, the newest three of the app stay.
    let newest_three = HistoryRetention {
        keep_jobs: 3,
        ..keep_only_what_is_needed()
    };
    assert_eq!(store.prune_history(newest_three).await.unwrap().jobs, 1);
    assert_eq!(ids(store).await, ["j2", "j3", "j4"]);
}

async fn old_deliveries_and_audit_entries_are_pruned_past_the_newest(t: TestStore) {
    let store = &*t.store;
    for n in 1..=5 {
        store
            .ingest_delivery(delivery(&format!("g-{n}")), Vec::new())
            .await
            .unwrap();
        store
            .record_audit(NewAudit {
                actor: "token:tok_a".into(),
                action: "cancel".into(),
                target: format!("job {n}"),
                address: None,
                result: "ok".into(),
            })
            .await
            .unwrap();
    }
    let keep_two = HistoryRetention {
        keep_deliveries: 2,
        keep_audit: 2,
        ..keep_only_what_is_needed()
    };

    let pruned = store.prune_history(keep_two).await.unwrap();

    assert_eq!((pruned.deliveries, pruned.audit), (3, 3));
    let deliveries: Vec<String> = store
        .deliveries(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.delivery_id)
        .collect();
    assert_eq!(deliveries, ["g-5", "g-4"]);
    let audit: Vec<String> = store
        .audit(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.target)
        .collect();
    assert_eq!(audit, ["job 5", "job 4"]);
}

conformance!(
    history_pruning_keeps_what_deployments_need,
    recent_and_newest_history_is_kept,
    old_deliveries_and_audit_entries_are_pruned_past_the_newest,
);
