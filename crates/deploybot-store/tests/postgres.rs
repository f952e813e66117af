//! What only the PostgreSQL backend has to prove: controller instances that
//! share one database (each store here is an instance, with a pool of its
//! own), its migrations, and losing connections.
//!
//! The behaviour both backends share is in `queue.rs`; `support` says which
//! server these tests use.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deploybot_store::{
    Claim, NewDelivery, NewJob, NewRegistration, PostgresStore, StatusReport, Store, StoreError,
};
use deploybot_wire::{DeliveryVerdict, DeploySpec, JobSource, JobStatus, LogLine, TokenRole};
use sqlx::{Connection, PgConnection};
use support::TestDatabase;

/// A fresh database, or `None` when PostgreSQL tests are skipped.
async fn database() -> Option<TestDatabase> {
    TestDatabase::create().await
}

/// One controller instance's store on `db`. A small pool: the tests stay far
/// below the server's connection limit, even with other test runs beside.
async fn instance(db: &TestDatabase) -> Arc<dyn Store> {
    Arc::new(PostgresStore::connect_with(&db.url, 4).await.unwrap())
}

/// A connection of its own, for SQL the store would never run.
async fn admin(db: &TestDatabase) -> PgConnection {
    PgConnection::connect(&db.url).await.unwrap()
}

/// A connection in a transaction that ran `locking` (a `FOR UPDATE` or a
/// `LOCK TABLE`): others wait on what it locked until it rolls back.
async fn holding(db: &TestDatabase, locking: &'static str) -> PgConnection {
    let mut blocker = admin(db).await;
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query(locking).execute(&mut blocker).await.unwrap();
    blocker
}

fn job(id: &str, app: &str, host: &str) -> NewJob {
    NewJob {
        id: id.into(),
        app: app.into(),
        repo: "acme/web".into(),
        git_ref: "refs/heads/main".into(),
        sha: Some("aaaaaaa".into()),
        host: host.into(),
        metadata: serde_json::json!({}),
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

fn success() -> StatusReport {
    StatusReport {
        status: JobStatus::Success,
        error: None,
        exit_code: Some(0),
        agent_id: None,
        lease: None,
    }
}

/// Claims `host` `n` times at once, alternating between `stores`.
async fn race_claims(stores: &[Arc<dyn Store>], host: &str, n: usize) -> Vec<Claim> {
    let racers: Vec<_> = (0..n)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let host = host.to_owned();
            tokio::spawn(async move { store.claim_job(format!("agent-{i}"), host).await })
        })
        .collect();
    let mut claims = Vec::new();
    for racer in racers {
        claims.push(racer.await.unwrap().unwrap());
    }
    claims
}

fn handed_out(claims: &[Claim]) -> Vec<String> {
    claims
        .iter()
        .filter_map(|claim| match claim {
            Claim::Job(job) => Some(job.id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_hand_each_job_out_once_oldest_first() {
    let Some(db) = database().await else { return };
    let stores = [instance(&db).await, instance(&db).await];
    // Different apps, so none supersedes another.
    let queued: Vec<String> = (0..5).map(|i| format!("job-{i}")).collect();
    for (i, id) in queued.iter().enumerate() {
        stores[i % 2]
            .enqueue(job(id, &format!("app-{i}"), "h1"))
            .await
            .unwrap();
    }

    let mut order = Vec::new();
    for round in 0..queued.len() {
        let claims = race_claims(&stores, "h1", 16).await;
        let winners = handed_out(&claims);
        assert_eq!(winners.len(), 1, "round {round}: {claims:?}");
        // The others found the host busy (or, once the last job was
        // taken, nothing pending).
        let last_round = round + 1 == queued.len();
        assert!(
            claims.iter().all(|c| match c {
                Claim::Job(_) | Claim::HostBusy => true,
                Claim::NothingPending => last_round,
            }),
            "round {round}: {claims:?}"
        );
        // Finished through the other instance.
        stores[(round + 1) % 2]
            .report_status(winners[0].clone(), success())
            .await
            .unwrap();
        order.extend(winners);
    }
    assert_eq!(order, queued);
    let last = race_claims(&stores, "h1", 4).await;
    assert!(
        last.iter().all(|c| matches!(c, Claim::NothingPending)),
        "{last:?}"
    );
    drop(stores);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_keeps_one_running_job_per_host_under_concurrent_claims() {
    let Some(db) = database().await else { return };
    let stores = [instance(&db).await, instance(&db).await];
    let hosts: Vec<String> = (0..8).map(|h| format!("h{h}")).collect();
    for app in 0..3 {
        for host in &hosts {
            stores[0]
                .enqueue(job(&format!("{host}-{app}"), &format!("app-{app}"), host))
                .await
                .unwrap();
        }
    }
    let racers: Vec<_> = hosts
        .iter()
        .map(|host| {
            let stores = stores.clone();
            let host = host.clone();
            tokio::spawn(async move { race_claims(&stores, &host, 8).await })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        winners.extend(handed_out(&racer.await.unwrap()));
    }
    winners.sort();
    let oldest: Vec<String> = hosts.iter().map(|h| format!("{h}-0")).collect();
    assert_eq!(winners, oldest);

    let mut sql = admin(&db).await;
    let running: Vec<(String, i64)> = sqlx::query_as(
        "SELECT host, count(*) FROM jobs WHERE status = 'running' GROUP BY host ORDER BY host",
    )
    .fetch_all(&mut sql)
    .await
    .unwrap();
    assert_eq!(
        running,
        hosts.iter().map(|h| (h.clone(), 1)).collect::<Vec<_>>()
    );
    // The rule holds for SQL that bypasses the store, too.
    let second = sqlx::query("UPDATE jobs SET status = 'running' WHERE id = 'h0-1'")
        .execute(&mut sql)
        .await
        .unwrap_err();
    let second = second.as_database_error().unwrap();
    assert!(second.is_unique_violation(), "{second}");
    assert_eq!(second.constraint(), Some("jobs_one_running_per_host"));
    let unknown = sqlx::query("UPDATE jobs SET status = 'done' WHERE id = 'h0-1'")
        .execute(&mut sql)
        .await
        .unwrap_err();
    assert!(unknown.as_database_error().unwrap().is_check_violation());
    sql.close().await.unwrap();
    drop(stores);
    db.drop_now().await;
}

/// The migration files the PostgreSQL backend ships.
const SHIPPED_MIGRATIONS: usize = 4;

#[tokio::test]
async fn migrations_run_once_and_an_edited_migration_is_refused() {
    let Some(db) = database().await else { return };
    let store = instance(&db).await;
    drop(store);
    let mut sql = admin(&db).await;
    let applied = || {
        sqlx::query_as::<_, (i64, String, String, i64)>(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version",
        )
    };
    let first = applied().fetch_all(&mut sql).await.unwrap();
    assert_eq!(first.len(), SHIPPED_MIGRATIONS, "{first:?}");

    // Opening again (a restart, or a second instance) changes nothing.
    drop(instance(&db).await);
    assert_eq!(applied().fetch_all(&mut sql).await.unwrap(), first);

    sqlx::query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        .execute(&mut sql)
        .await
        .unwrap();
    let refused = deploybot_store::open(&db.url).await.err();
    assert!(
        matches!(&refused, Some(StoreError::Setup(m)) if m.contains("differs")),
        "{refused:?}"
    );

    sqlx::query("UPDATE schema_migrations SET checksum = $1 WHERE version = 1")
        .bind(&first[0].2)
        .execute(&mut sql)
        .await
        .unwrap();
    sqlx::query("INSERT INTO schema_migrations VALUES (999, 'future', 'x', 0)")
        .execute(&mut sql)
        .await
        .unwrap();
    let newer = deploybot_store::open(&db.url).await.err();
    assert!(
        matches!(&newer, Some(StoreError::Setup(m)) if m.contains("newer")),
        "{newer:?}"
    );
    sql.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test]
async fn controllers_starting_together_migrate_once() {
    let Some(db) = database().await else { return };
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { deploybot_store::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opened {
        stores.push(open.await.unwrap().unwrap());
    }
    let mut sql = admin(&db).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM schema_migrations")
        .fetch_one(&mut sql)
        .await
        .unwrap();
    assert_eq!(applied, SHIPPED_MIGRATIONS as i64);
    sql.close().await.unwrap();
    drop(stores);
    db.drop_now().await;
}

/// Terminates every connection to the test database but `killer`'s own.
async fn kill_connections(killer: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(killer)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_pool_recovers_after_its_connections_are_killed() {
    let Some(db) = database().await else { return };
    let store = instance(&db).await;
    store.enqueue(job("before", "web", "h1")).await.unwrap();
    let mut killer = admin(&db).await;
    assert!(kill_connections(&mut killer).await >= 1);

    // The next calls succeed, after at most one failure, which is a
    // database error (503), never a panic or a hang.
    let mut failures = 0;
    for id in ["after-1", "after-2", "after-3"] {
        loop {
            match store.enqueue(job(id, id, "h1")).await {
                Ok(enqueued) => {
                    assert!(enqueued.created);
                    break;
                }
                Err(StoreError::Database(_) | StoreError::Closed) if failures == 0 => {
                    failures += 1;
                }
                Err(err) => panic!("{id}: {err:?}"),
            }
        }
    }
    let jobs = store
        .jobs(deploybot_store::JobFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 4);
    killer.close().await.unwrap();
    drop(store);
    db.drop_now().await;
}

#[tokio::test]
async fn a_write_cut_off_by_a_lost_connection_leaves_nothing_behind() {
    let Some(db) = database().await else { return };
    let store = instance(&db).await;
    store
        .create_token(support::token("tok_e", TokenRole::Enroll, true))
        .await
        .unwrap();
    let registration = NewRegistration {
        new_id: "id-1".into(),
        hostname: "h1".into(),
        capabilities: Default::default(),
        token_hash: "agent-token-1".into(),
        use_enrollment_token: None,
        may_replace: true,
    };
    store.register_agent(registration.clone()).await.unwrap();

    // Hold h1's row, so that a registration with the token stops after it
    // marked the token used, inside its transaction.
    let mut blocker = holding(&db, "SELECT 1 FROM agents WHERE hostname = 'h1' FOR UPDATE").await;
    let enrolling = {
        let store = store.clone();
        let mut registration = registration.clone();
        registration.use_enrollment_token = Some("tok_e".into());
        tokio::spawn(async move { store.register_agent(registration).await })
    };
    let mut killer = admin(&db).await;
    let waiting = loop {
        let waiting: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&mut killer)
        .await
        .unwrap();
        if let Some(pid) = waiting {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(waiting)
        .fetch_one(&mut killer)
        .await
        .unwrap();
    assert!(killed);
    let cut = enrolling.await.unwrap();
    assert!(matches!(cut, Err(StoreError::Database(_))), "{cut:?}");
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();

    // The token was marked used in the transaction that died: still unused.
    let tokens = store.tokens(None, 1000).await.unwrap();
    assert_eq!(tokens[0].used_at, None, "{tokens:?}");
    let mut again = registration;
    again.use_enrollment_token = Some("tok_e".into());
    store.register_agent(again).await.unwrap();
    assert!(store.tokens(None, 1000).await.unwrap()[0].used_at.is_some());
    blocker.close().await.unwrap();
    killer.close().await.unwrap();
    drop(store);
    db.drop_now().await;
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

fn webhook_jobs(delivery_id: &str, attempt: usize) -> Vec<NewJob> {
    ["h1", "h2"]
        .into_iter()
        .map(|host| NewJob {
            source: JobSource::Webhook,
            delivery_id: Some(delivery_id.into()),
            ..job(&format!("{delivery_id}-{host}-{attempt}"), "web", host)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_dedup_holds_across_instances() {
    let Some(db) = database().await else { return };
    let stores = [instance(&db).await, instance(&db).await];

    // One delivery, received by both instances at once (GitHub redelivers).
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                store
                    .ingest_delivery(delivery("g-1"), webhook_jobs("g-1", i))
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.unwrap().unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| !o.duplicate).count(), 1);
    let job_ids = outcomes[0].job_ids.clone();
    assert_eq!(job_ids.len(), 2);
    assert!(
        outcomes.iter().all(|o| o.job_ids == job_ids),
        "{outcomes:?}"
    );

    // The same commit under other delivery ids (a replay): no new job.
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                let id = format!("replay-{i}");
                store
                    .ingest_delivery(delivery(&id), webhook_jobs(&id, i))
                    .await
            })
        })
        .collect();
    for racer in racers {
        let outcome = racer.await.unwrap().unwrap();
        assert!(!outcome.duplicate);
        assert_eq!(outcome.job_ids, job_ids);
    }
    let mut sql = admin(&db).await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut sql)
        .await
        .unwrap();
    assert_eq!(jobs, 2);
    sql.close().await.unwrap();
    drop(stores);
    db.drop_now().await;
}

/// Webhook jobs of commit `sha` on h1 and h2 (jobs `{delivery_id}-h1`, `-h2`).
fn push_jobs(delivery_id: &str, sha: &str) -> Vec<NewJob> {
    ["h1", "h2"]
        .into_iter()
        .map(|host| NewJob {
            source: JobSource::Webhook,
            delivery_id: Some(delivery_id.into()),
            sha: Some(sha.into()),
            ..job(&format!("{delivery_id}-{host}"), "web", host)
        })
        .collect()
}

/// Waits until a connection to the test database waits for a lock.
async fn until_a_write_waits(sql: &mut PgConnection) {
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *sql)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Deliveries that queue up behind a write are written together; one the
/// database refuses fails alone, and the others are recorded all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delivery_fails_alone_in_its_batch() {
    let Some(db) = database().await else { return };
    let store = instance(&db).await;
    // A job id the database has: a delivery reusing it is refused.
    store.enqueue(job("taken", "api", "h9")).await.unwrap();

    // Hold one delivery at its write, so the next ones queue up behind it
    // and are written together.
    let mut blocker = holding(&db, "LOCK TABLE deliveries IN EXCLUSIVE MODE").await;
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .ingest_delivery(delivery("g-0"), push_jobs("g-0", "sha-0"))
                .await
        })
    };
    let mut watcher = admin(&db).await;
    until_a_write_waits(&mut watcher).await;
    let racers: Vec<_> = (1..=8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("g-{i}");
                let mut jobs = push_jobs(&id, &format!("sha-{i}"));
                if i == 4 {
                    jobs[1].id = "taken".into();
                }
                store.ingest_delivery(delivery(&id), jobs).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();

    assert!(!first.await.unwrap().unwrap().duplicate);
    for (i, racer) in (1..=8).zip(racers) {
        match racer.await.unwrap() {
            Err(StoreError::Database(_)) if i == 4 => {}
            Ok(outcome) if i != 4 => {
                assert!(!outcome.duplicate);
                assert_eq!(outcome.job_ids, [format!("g-{i}-h1"), format!("g-{i}-h2")]);
            }
            other => panic!("g-{i}: {other:?}"),
        }
    }
    // Nothing of the refused one; everything of the others, newest pending.
    assert!(store.job("g-4-h1".into()).await.unwrap().is_none());
    let deliveries = store.deliveries(100, None).await.unwrap();
    assert_eq!(deliveries.len(), 8, "{deliveries:?}");
    let pending = store
        .jobs(deploybot_store::JobFilter {
            status: Some(JobStatus::Pending),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 3, "{pending:?}");
    blocker.close().await.unwrap();
    watcher.close().await.unwrap();
    drop(store);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_on_two_instances_keep_newest_push_wins() {
    let Some(db) = database().await else { return };
    let stores = [instance(&db).await, instance(&db).await];
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                let mut new = job(&format!("push-{i}"), "web", "h1");
                // Half the requests repeat another's commit: idempotent.
                new.sha = Some(format!("sha{}", i / 2));
                store.enqueue(new).await
            })
        })
        .collect();
    for racer in racers {
        racer.await.unwrap().unwrap();
    }
    let pending = stores[0]
        .jobs(deploybot_store::JobFilter {
            status: Some(JobStatus::Pending),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let all = stores[1]
        .jobs(deploybot_store::JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    // Every other job was superseded by a newer one, as if the requests had
    // come one at a time.
    assert!(
        all.iter()
            .filter(|j| j.status != JobStatus::Pending)
            .all(|j| j.status == JobStatus::Superseded && j.superseded_by.is_some()),
        "{all:?}"
    );
    let newest = all.iter().map(|j| j.id.as_str()).next();
    assert_eq!(newest, Some(pending[0].id.as_str()));
    drop(stores);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_enrollment_token_registers_once_across_instances() {
    let Some(db) = database().await else { return };
    let stores = [instance(&db).await, instance(&db).await];
    stores[0]
        .create_token(support::token("tok_e", TokenRole::Enroll, true))
        .await
        .unwrap();
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                store
                    .register_agent(NewRegistration {
                        new_id: format!("id-{i}"),
                        hostname: format!("h{i}"),
                        capabilities: Default::default(),
                        token_hash: format!("agent-token-{i}"),
                        use_enrollment_token: Some("tok_e".into()),
                        may_replace: false,
                    })
                    .await
            })
        })
        .collect();
    let mut registered = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => registered += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(err) => panic!("{err:?}"),
        }
    }
    assert_eq!(registered, 1);
    assert_eq!(stores[1].agents().await.unwrap().len(), 1);
    drop(stores);
    db.drop_now().await;
}

fn lines(from: u64, to: u64) -> Vec<LogLine> {
    (from..=to)
        .map(|line| LogLine {
            line,
            stream: deploybot_wire::LogStream::Stdout,
            at: time::OffsetDateTime::now_utc(),
            text: format!("line {line}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_ids_grow_in_commit_order_on_every_instance() {
    let Some(db) = database().await else { return };
    let stores = [instance(&db).await, instance(&db).await];
    let mut feeds = [stores[0].log_feed(), stores[1].log_feed()];
    let mut writers = Vec::new();
    for (n, host) in ["h1", "h2", "h3", "h4"].into_iter().enumerate() {
        stores[0].enqueue(job(host, "web", host)).await.unwrap();
        let Claim::Job(running) = stores[0].claim_job("a".into(), host.into()).await.unwrap()
        else {
            panic!("no job for {host}")
        };
        let store = stores[n % 2].clone();
        writers.push(tokio::spawn(async move {
            for batch in 0..10 {
                store
                    .append_logs(
                        running.id.clone(),
                        None,
                        running.lease,
                        lines(batch * 5 + 1, batch * 5 + 5),
                        u64::MAX,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let stored: Vec<i64> = stores[0]
        .logs_since(0, deploybot_store::LogFilter::default(), 1000)
        .await
        .unwrap()
        .iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(stored.len(), 200);
    for feed in &mut feeds {
        // Each instance publishes every instance's lines (the other's after
        // a notification and a read), each once, in id order.
        let mut ids = Vec::new();
        while ids.len() < stored.len() {
            let batch = tokio::time::timeout(Duration::from_secs(10), feed.recv())
                .await
                .expect("every line within 10 s")
                .unwrap();
            ids.extend(batch.iter().map(|entry| entry.id));
        }
        assert_eq!(ids, stored);
    }
    drop(stores);
    db.drop_now().await;
}

#[tokio::test]
async fn open_takes_both_url_schemes_and_hides_passwords_in_errors() {
    let Some(db) = database().await else { return };
    let alias = db.url.replacen("postgres://", "postgresql://", 1);
    let store = deploybot_store::open(&alias).await.unwrap();
    store.ping().await.unwrap();
    drop(store);

    let invalid = "postgres://deploy:hunter2@127.0.0.1:port/nothing";
    let err = deploybot_store::open(invalid).await.err().unwrap();
    assert!(matches!(err, StoreError::Setup(_)), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("deploy:***@127.0.0.1:port"), "{message}");
    db.drop_now().await;
}

/// The next event of `events`, failing the test after a few seconds.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<deploybot_store::StoreEvent>,
) -> deploybot_store::StoreEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the event channel is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_hear_each_others_writes_and_resync_after_losing_the_listener() {
    use deploybot_store::StoreEvent;
    let Some(db) = database().await else { return };
    let (a, b) = (instance(&db).await, instance(&db).await);
    let mut heard = a.events();
    let mut own = b.events();

    // New pending jobs, job changes, a cancel request and a freed host, as
    // B commits them.
    b.enqueue(job("j1", "web", "h1")).await.unwrap();
    assert_eq!(
        next_event(&mut heard).await,
        StoreEvent::JobsPending {
            hosts: vec!["h1".into()]
        }
    );
    let Claim::Job(claimed) = b.claim_job("agent-1".into(), "h1".into()).await.unwrap() else {
        panic!("j1 is pending")
    };
    let changed = StoreEvent::JobChanged {
        job_id: "j1".into(),
    };
    assert_eq!(next_event(&mut heard).await, changed);
    b.cancel_job(claimed.id.clone()).await.unwrap();
    assert_eq!(
        next_event(&mut heard).await,
        StoreEvent::CancelRequested { host: "h1".into() }
    );
    b.report_status(claimed.id.clone(), success())
        .await
        .unwrap();
    assert_eq!(next_event(&mut heard).await, changed);
    assert_eq!(
        next_event(&mut heard).await,
        StoreEvent::HostFreed { host: "h1".into() }
    );
    // A refused write tells nobody anything.
    assert!(b.cancel_job(claimed.id.clone()).await.is_err());

    // Losing the listening connection: A listens again, says to resync,
    // and hears what is committed afterwards.
    let mut killer = admin(&db).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(&mut killer)
    .await
    .unwrap();
    assert_eq!(killed, 2, "each instance has one listening connection");
    assert_eq!(next_event(&mut heard).await, StoreEvent::Resync);
    let mut enqueued = false;
    loop {
        // B's pool may hand out a connection killed above once: retry.
        if !enqueued {
            enqueued = b.enqueue(job("j2", "web", "h2")).await.is_ok();
            continue;
        }
        match next_event(&mut heard).await {
            // A listener cut off while reconnecting says so twice.
            StoreEvent::Resync => continue,
            event => {
                assert_eq!(
                    event,
                    StoreEvent::JobsPending {
                        hosts: vec!["h2".into()]
                    }
                );
                break;
            }
        }
    }

    // An instance never hears its own writes: B heard only its own resync.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(event) = own.try_recv() {
        assert_eq!(event, StoreEvent::Resync);
    }
    killer.close().await.unwrap();
    drop((a, b));
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_leads_at_a_time_and_another_takes_over_when_it_goes() {
    let Some(db) = database().await else { return };
    let (a, b) = (instance(&db).await, instance(&db).await);
    assert!(a.try_lead().await.unwrap());
    assert!(!b.try_lead().await.unwrap());
    // Asked again each round: the answers hold.
    assert!(a.try_lead().await.unwrap());
    assert!(!b.try_lead().await.unwrap());

    // The leader goes away (its connection with it): B leads, and alone.
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !b.try_lead().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "B did not take over within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = instance(&db).await;
    assert!(!c.try_lead().await.unwrap());
    assert!(b.try_lead().await.unwrap());
    drop((b, c));
    db.drop_now().await;
}
