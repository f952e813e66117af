//! Deploy output: appends, reads, the live feed and retention.

use deploybot_store::{Claim, StatusReport, StoreError};
use deploybot_wire::JobStatus;

use crate::support::TestStore;
use crate::{claim, claimed_id, job, report};

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

async fn log_appends_are_idempotent_and_need_the_lease(t: TestStore) {
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    let early = t
        .store
        .append_logs("j".into(), None, None, lines(1, 1), u64::MAX)
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
            u64::MAX,
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");

    let first = t
        .store
        .append_logs(
            "j".into(),
            Some("a1".into()),
            running.lease,
            lines(1, 3),
            u64::MAX,
        )
        .await
        .unwrap();
    assert_eq!((first.entries.len(), first.duplicates), (3, 0));
    assert_eq!(first.entries[0].host, "h1");
    let again = t
        .store
        .append_logs(
            "j".into(),
            Some("a1".into()),
            running.lease,
            lines(3, 4),
            u64::MAX,
        )
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

async fn pruning_keeps_the_newest_jobs_and_recent_ones(t: TestStore) {
    // Three finished jobs of app web on h1, each with logs.
    for (id, sha) in [("old", "aaaaaaa"), ("mid", "bbbbbbb"), ("new", "ccccccc")] {
        t.store.enqueue(job(id, "web", "h1", sha)).await.unwrap();
        let running = claimed_id(claim(&*t.store, "a1", "h1").await);
        let lease = t.store.job(running.clone()).await.unwrap().unwrap().lease;
        t.store
            .append_logs(running.clone(), None, lease, lines(1, 3), u64::MAX)
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

async fn log_lines_reach_the_feed_in_id_order(t: TestStore) {
    let mut feed = t.store.log_feed();
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    let Claim::Job(running) = claim(&*t.store, "a1", "h1").await else {
        panic!("no job")
    };
    for batch in [lines(1, 2), lines(3, 5), lines(5, 6)] {
        t.store
            .append_logs(
                "j".into(),
                Some("a1".into()),
                running.lease,
                batch,
                u64::MAX,
            )
            .await
            .unwrap();
    }
    let mut fed = Vec::new();
    while let Ok(batch) = feed.try_recv() {
        fed.extend(batch.iter().map(|entry| (entry.id, entry.line)));
    }
    assert_eq!(
        fed.iter().map(|(_, line)| *line).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(fed.windows(2).all(|w| w[0].0 < w[1].0), "{fed:?}");
    let stored = t.store.job_logs("j".into(), 0, 100).await.unwrap();
    assert_eq!(
        stored.iter().map(|l| (l.id, l.line)).collect::<Vec<_>>(),
        fed
    );
}

/// PostgreSQL text cannot hold NUL: it becomes U+FFFD there, and an upload
/// or lookup containing one must never fail as a database error.
async fn nul_characters_never_fail_a_write_or_a_lookup(t: TestStore) {
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a1", "h1").await);
    let mut line = lines(1, 1);
    line[0].text = "binary\0output".into();
    let appended = t
        .store
        .append_logs("j".into(), None, None, line, u64::MAX)
        .await
        .unwrap();
    assert_eq!(appended.entries.len(), 1);
    let stored = t.store.job_logs("j".into(), 0, 10).await.unwrap();
    assert_eq!(
        stored[0].text.replace('\0', "\u{FFFD}"),
        "binary\u{FFFD}output"
    );
    assert_eq!(stored[0].text, appended.entries[0].text);
    let failed = StatusReport {
        error: Some("exit 1: \0".into()),
        ..report(JobStatus::Failed, None)
    };
    t.store.report_status("j".into(), failed).await.unwrap();

    assert!(t.store.job("j\0".into()).await.unwrap().is_none());
    assert!(
        t.store
            .token_by_hash("hash\0".into())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        t.store.cancel_job("j\0".into()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_jobs_output_stops_at_its_cap_with_a_marker_line(t: TestStore) {
    t.store
        .enqueue(job("j", "web", "h1", "aaaaaaa"))
        .await
        .unwrap();
    claimed_id(claim(&*t.store, "a1", "h1").await);
    // "line N" is 6 bytes: two fit in 14.
    let first = t
        .store
        .append_logs("j".into(), None, None, lines(1, 4), 14)
        .await
        .unwrap();
    assert_eq!(first.dropped, 2);
    let stored: Vec<(u64, String)> = first
        .entries
        .iter()
        .map(|e| (e.line, e.text.clone()))
        .collect();
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(
        &stored[..2],
        &[(1, "line 1".to_owned()), (2, "line 2".to_owned())]
    );
    assert_eq!(stored[2].0, 3);
    assert!(
        stored[2].1.contains("the rest was not stored"),
        "{}",
        stored[2].1
    );
    // Later lines are dropped; the job's log ends with the marker.
    let later = t
        .store
        .append_logs("j".into(), None, None, lines(5, 6), 14)
        .await
        .unwrap();
    assert_eq!((later.entries.len(), later.dropped), (0, 2));
    let log = t.store.job_logs("j".into(), 0, 100).await.unwrap();
    assert_eq!(log.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 2, 3]);
}

conformance!(
    a_jobs_output_stops_at_its_cap_with_a_marker_line,
    log_appends_are_idempotent_and_need_the_lease,
    pruning_keeps_the_newest_jobs_and_recent_ones,
    log_lines_reach_the_feed_in_id_order,
    nul_characters_never_fail_a_write_or_a_lookup,
);
