//! The SQLite backend's directory and files: the controller's user only,
//! and a file that shrinks again once old history is pruned.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_new_database_is_readable_by_its_owner_only_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").join("nested");
    let db = data.join("deploybot.db");
    // The test process's umask (usually 022) would leave both open to all.
    let store = deploybot_store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    for suffix in ["-wal", "-shm"] {
        let file = data.join(format!("deploybot.db{suffix}"));
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}

/// `PRAGMA name` of the database file at `db`, read with a connection of
/// the test's own.
fn pragma(db: &Path, name: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
        .unwrap()
}

fn finished_job(id: &str) -> deploybot_store::NewJob {
    deploybot_store::NewJob {
        id: id.into(),
        app: "web".into(),
        repo: "acme/web".into(),
        git_ref: "refs/heads/main".into(),
        sha: None,
        host: "h1".into(),
        metadata: serde_json::json!({}),
        source: deploybot_wire::JobSource::Manual,
        delivery_id: None,
        deploy: deploybot_wire::DeploySpec {
            command: vec!["./deploy.sh".into()],
            workdir: None,
            env: Default::default(),
            timeout_secs: 60,
        },
        attempt: 1,
        retry_of: None,
        traceparent: None,
    }
}

#[tokio::test]
async fn pruning_history_gives_the_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("deploybot.db");
    let store = deploybot_store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    // A file the store made lets freed pages go a few at a time.
    assert_eq!(pragma(&db, "auto_vacuum"), 2, "INCREMENTAL");
    // 100 finished jobs with 100 KiB of output each.
    let text = "x".repeat(1024);
    for n in 0..100 {
        let id = format!("job-{n:03}");
        store.enqueue(finished_job(&id)).await.unwrap();
        let deploybot_store::Claim::Job(job) =
            store.claim_job("a1".into(), "h1".into()).await.unwrap()
        else {
            panic!("job {id} was not handed out");
        };
        let lines = (1..=100)
            .map(|line| deploybot_wire::LogLine {
                line,
                stream: deploybot_wire::LogStream::Stdout,
                at: time::OffsetDateTime::now_utc(),
                text: text.clone(),
            })
            .collect();
        store
            .append_logs(job.id.clone(), None, job.lease, lines, u64::MAX)
            .await
            .unwrap();
        store
            .report_status(
                job.id,
                deploybot_store::StatusReport {
                    status: deploybot_wire::JobStatus::Failed,
                    error: None,
                    exit_code: Some(1),
                    agent_id: None,
                    lease: None,
                },
            )
            .await
            .unwrap();
    }
    let full = pragma(&db, "page_count");

    let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let pruned = store
        .prune_history(deploybot_store::HistoryRetention {
            keep_jobs: 1,
            keep_since: later,
            keep_deliveries: 1,
            audit_since: later,
            keep_audit: 1,
        })
        .await
        .unwrap();

    assert_eq!(pruned.jobs, 99);
    let after = pragma(&db, "page_count");
    assert!(after * 10 < full, "{full} pages before, {after} after");
    assert_eq!(pragma(&db, "freelist_count"), 0);
}

#[tokio::test]
async fn a_file_made_without_incremental_vacuum_is_converted_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("deploybot.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE before_us (x INTEGER)")
            .unwrap();
    }
    assert_eq!(pragma(&db, "auto_vacuum"), 0);

    let store = deploybot_store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    store.ping().await.unwrap();

    assert_eq!(pragma(&db, "auto_vacuum"), 2);
}
