//! The PostgreSQL backend: a connection pool, one transaction per write
//! (webhook deliveries: many per transaction, see `ingest.rs`).
//!
//! Several controller instances may share one database, so every rule that
//! concerns more than one row is held by the database itself, not by this
//! process: a claim is one `UPDATE … FOR UPDATE SKIP LOCKED` statement with
//! the partial unique index on running jobs behind it; deliveries, webhook
//! jobs by commit and pending jobs per app and host are unique; writes that
//! check before they insert (enqueue, webhook ingestion) first take a
//! transaction-scoped advisory lock on what they decide about, so two
//! instances decide one after the other, as SQLite's single writer does.
//!
//! Log appends are serialized (a mutex here, an advisory lock across
//! instances) so that log ids grow in commit order, which the SSE stream and
//! [`Store::log_feed`] rely on.
//!
//! Instances hear of each other's writes through `LISTEN/NOTIFY`
//! (`events.rs`): a write that queues jobs, asks for a cancel, ends a job or
//! appends log lines notifies in its own transaction, so the notification
//! goes out exactly when the change is visible. The log feed (`feed.rs`)
//! turns other instances' appends into lines, and a session advisory lock
//! on a connection of its own names the one instance that runs periodic
//! work ([`Store::try_lead`]).
//!
//! Losing the database fails requests with [`StoreError::Database`] (the
//! server answers 503); a transaction that did not commit left nothing
//! behind, and the pool replaces broken connections by itself (each is
//! tested before it is handed out).

mod agents;
mod audit;
mod credentials;
mod deliveries;
mod events;
mod feed;
mod ingest;
mod jobs;
mod leases;
mod logs;
mod retention;
mod schema;

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deploybot_wire::{
    Agent, AuditEntry, Delivery, Job, JobStatus, LogEntry, LogLine, Timestamp, TokenInfo,
};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use crate::batches::delete_in_batches;
use crate::{
    AgentCredential, AppendedLogs, Beat, Claim, DeliveryOutcome, Enqueued, HeldJobs,
    HistoryRetention, HostJobs, JobFilter, LogFilter, NewAudit, NewDelivery, NewJob,
    NewRegistration, NewToken, PrunedHistory, Registered, ReportOutcome, StatusReport, Store,
    StoreError, StoreEvent, redact_url,
};

/// Connections the pool opens at most. Writes are short transactions, so a
/// few connections serve many requests; PostgreSQL's default limit is 100
/// for all its clients.
const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a connection before it fails (503): about
/// as long as SQLite's busy timeout, far below an HTTP client's patience.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines one pruning write deletes at most: keeps each write short.
const PRUNE_BATCH: u32 = 2000;
/// Jobs, deliveries or audit entries deleted per statement when pruning history.
const HISTORY_BATCH: u32 = 500;

pub struct PostgresStore {
    pool: PgPool,
    /// Every instance's committed log lines, in id order.
    log_feed: feed::Feed,
    /// What other instances committed, and notifying them of our writes.
    events: Arc<events::Events>,
    /// Records webhook deliveries, many to a transaction (group commit).
    ingester: ingest::Ingester,
    /// For a connection of its own that holds the leadership lock.
    options: PgConnectOptions,
    /// That connection, once made, and whether it holds the lock.
    leadership: tokio::sync::Mutex<Option<Leadership>>,
}

/// A session-level advisory lock names the leader: it lives exactly as long
/// as the connection, so an instance that dies (or loses its database
/// connection) hands leadership on by itself.
struct Leadership {
    conn: PgConnection,
    leading: bool,
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolClosed => StoreError::Closed,
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// The name of the unique index or constraint `err` violates, if that is what it is.
fn unique_violation(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint(),
        _ => None,
    }
}

impl PostgresStore {
    /// Connects to the database `url` names (`postgres://user:password@host:port/db`)
    /// and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, MAX_CONNECTIONS).await
    }

    /// [`connect`](Self::connect) with a pool of at most `max_connections`
    /// (several instances share the server's connection limit).
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|err| {
                StoreError::Setup(format!("invalid database URL {}: {err}", redact_url(url)))
            })?
            .application_name("deploybot")
            // A write returns only once its commit is flushed to disk, whatever
            // the server's default says.
            .options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Tested before each use (the default, kept on purpose): a
            // connection the server dropped while it was idle is replaced
            // instead of failing a request.
            .test_before_acquire(true)
            .connect_with(options.clone())
            .await
            .map_err(|err| {
                StoreError::Setup(format!("cannot connect to {}: {err}", redact_url(url)))
            })?;
        schema::migrate(&pool).await?;
        // Listening first, then reading where the log feed starts: a line
        // committed in between is in the read or heard of.
        let committed = tokio::sync::watch::channel(feed::Committed::default()).0;
        let (progress, published) = tokio::sync::watch::channel(0);
        let events = Arc::new(
            events::Events::start(options.clone(), pool.clone(), committed.clone(), published)
                .await?,
        );
        let log_feed = feed::Feed::start(pool.clone(), committed, progress).await?;
        Ok(PostgresStore {
            ingester: ingest::Ingester::start(pool.clone(), events.clone()),
            events,
            options,
            leadership: tokio::sync::Mutex::new(None),
            pool,
            log_feed,
        })
    }

    /// [`Store::try_lead`] on the leadership connection in `slot`, made if
    /// there is none; a connection that fails is dropped (and its lock, if
    /// it held it, released).
    async fn lead(&self, slot: &mut Option<Leadership>) -> Result<bool, StoreError> {
        let leadership = match slot {
            Some(leadership) => leadership,
            None => slot.insert(Leadership {
                conn: PgConnection::connect_with(&self.options).await?,
                leading: false,
            }),
        };
        // The leader only checks that its session (and so its lock) lives.
        let asked = if leadership.leading {
            sqlx::query_scalar("SELECT true")
                .fetch_one(&mut leadership.conn)
                .await
        } else {
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                .bind(LockSpace::Leader as i32)
                .bind(0_i32)
                .fetch_one(&mut leadership.conn)
                .await
        };
        match asked {
            Ok(leading) => {
                leadership.leading = leading;
                Ok(leading)
            }
            Err(err) => {
                *slot = None;
                Err(err.into())
            }
        }
    }

    /// Tells the other instances of a new pending job, if `enqueued` made one.
    async fn pending(
        &self,
        tx: &mut PgConnection,
        enqueued: Enqueued,
    ) -> Result<Enqueued, StoreError> {
        if enqueued.created {
            let event = StoreEvent::JobsPending {
                hosts: vec![enqueued.job.host.clone()],
            };
            self.events.notify(tx, &event).await?;
        }
        Ok(enqueued)
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

/// Runs `$body` (an expression using `$tx: &mut PgConnection`) in a new
/// transaction and commits it if it succeeded, else rolls it back: nothing is
/// half-written.
///
/// The rollback is awaited, not left to the transaction's drop (which sends
/// it whenever the connection is next used): until it runs, the refused
/// write's row locks would make claims skip that job.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut transaction = $store.begin().await?;
        let result = {
            let $tx: &mut PgConnection = &mut transaction;
            $body
        };
        match result {
            Ok(value) => {
                transaction.commit().await?;
                Ok(value)
            }
            Err(err) => {
                // A connection too broken to roll back is closed by the
                // pool, which ends the transaction just as well.
                let _ = transaction.rollback().await;
                Err(err)
            }
        }
    }};
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    async fn register_agent(
        &self,
        registration: NewRegistration,
    ) -> Result<Registered, StoreError> {
        in_transaction!(self, |tx| {
            match register(tx, &registration).await {
                Ok(registered) => {
                    let told = async {
                        self.events.jobs_ended(tx, &registered.lost).await?;
                        let event = StoreEvent::AgentRegistered {
                            agent_id: registered.agent.id.clone(),
                            hostname: registered.agent.hostname.clone(),
                        };
                        self.events.notify(tx, &event).await
                    };
                    told.await.map(|()| registered)
                }
                Err(err) => Err(err),
            }
        })
    }

    async fn agent_by_token(
        &self,
        token_hash: String,
    ) -> Result<Option<AgentCredential>, StoreError> {
        credentials::agent_by_token(&mut *self.conn().await?, &token_hash).await
    }

    async fn revoke_agent(&self, agent_id: String) -> Result<Vec<Job>, StoreError> {
        in_transaction!(self, |tx| {
            match revoke(tx, &agent_id).await {
                Ok(lost) => {
                    let told = async {
                        self.events.jobs_ended(tx, &lost).await?;
                        let event = StoreEvent::AgentRevoked {
                            agent_id: agent_id.clone(),
                        };
                        self.events.notify(tx, &event).await
                    };
                    told.await.map(|()| lost)
                }
                Err(err) => Err(err),
            }
        })
    }

    async fn forget_agent(&self, agent_id: String) -> Result<(), StoreError> {
        in_transaction!(self, |tx| {
            match credentials::forget_agent(tx, &agent_id).await {
                // Other instances drop what they hold of it, as for a revocation.
                Ok(()) => {
                    let event = StoreEvent::AgentRevoked {
                        agent_id: agent_id.clone(),
                    };
                    self.events.notify(tx, &event).await
                }
                Err(err) => Err(err),
            }
        })
    }

    async fn create_token(&self, token: NewToken) -> Result<TokenInfo, StoreError> {
        credentials::create(&mut *self.conn().await?, &token).await
    }

    async fn tokens(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<TokenInfo>, StoreError> {
        credentials::page(&mut *self.conn().await?, after.as_deref(), limit).await
    }

    async fn token_by_hash(&self, hash: String) -> Result<Option<TokenInfo>, StoreError> {
        credentials::by_hash(&mut *self.conn().await?, &hash).await
    }

    async fn revoke_token(&self, id: String) -> Result<TokenInfo, StoreError> {
        in_transaction!(self, |tx| {
            match credentials::revoke(tx, &id).await {
                Ok(info) => {
                    let event = StoreEvent::TokenRevoked {
                        token_id: info.id.clone(),
                    };
                    self.events.notify(tx, &event).await.map(|()| info)
                }
                Err(err) => Err(err),
            }
        })
    }

    async fn any_admin_token(&self) -> Result<bool, StoreError> {
        credentials::any_admin(&mut *self.conn().await?).await
    }

    async fn record_audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        audit::record(&mut *self.conn().await?, &entry).await
    }

    async fn audit(&self, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
        audit::recent(&mut *self.conn().await?, limit, before).await
    }

    async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        agents::all(&mut *self.conn().await?).await
    }

    async fn agents_page(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Agent>, StoreError> {
        agents::page(&mut *self.conn().await?, after.as_deref(), limit).await
    }

    async fn agent(&self, agent_id: String) -> Result<Option<Agent>, StoreError> {
        agents::active(&mut *self.conn().await?, &agent_id).await
    }

    async fn save_heartbeats(&self, beats: Vec<Beat>) -> Result<(), StoreError> {
        agents::save_heartbeats(&mut *self.conn().await?, &beats).await
    }

    async fn claim_job(&self, agent_id: String, host: String) -> Result<Claim, StoreError> {
        let mut conn = self.conn().await?;
        let claim = leases::claim(&mut conn, &agent_id, &host).await?;
        if let Claim::Job(job) = &claim {
            // After the claim's own commit, to keep the hot path one
            // statement (see `Events::claimed`).
            self.events.claimed(job);
        }
        Ok(claim)
    }

    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError> {
        let job = jobs::EncodedJob::new(job)?;
        in_transaction!(self, |tx| {
            match jobs::enqueue(tx, &job).await {
                Ok(enqueued) => self.pending(tx, enqueued).await,
                Err(err) => Err(err),
            }
        })
    }

    async fn ingest_delivery(
        &self,
        delivery: NewDelivery,
        jobs: Vec<NewJob>,
    ) -> Result<DeliveryOutcome, StoreError> {
        let jobs = jobs
            .into_iter()
            .map(jobs::EncodedJob::new)
            .collect::<Result<Vec<_>, _>>()?;
        let delivery = deliveries::EncodedDelivery::new(&delivery, &jobs)?;
        self.ingester.ingest(delivery).await
    }

    async fn job(&self, id: String) -> Result<Option<Job>, StoreError> {
        jobs::by_id(&mut *self.conn().await?, &id).await
    }

    async fn jobs(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError> {
        jobs::list(&mut *self.conn().await?, &filter).await
    }

    async fn report_status(
        &self,
        job_id: String,
        report: StatusReport,
    ) -> Result<ReportOutcome, StoreError> {
        in_transaction!(self, |tx| {
            match leases::report(tx, &job_id, &report).await {
                Ok(ReportOutcome::Updated(job)) => {
                    let changed = std::slice::from_ref(job.as_ref());
                    let notified = if job.status.is_final() {
                        self.events.jobs_ended(tx, changed).await
                    } else {
                        self.events.jobs_changed(tx, changed).await
                    };
                    notified.map(|()| ReportOutcome::Updated(job))
                }
                other => other,
            }
        })
    }

    async fn host_jobs(&self, hosts: Vec<String>) -> Result<Vec<HostJobs>, StoreError> {
        jobs::of_hosts(&mut *self.conn().await?, &hosts).await
    }

    async fn deliveries(
        &self,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<Delivery>, StoreError> {
        deliveries::recent(&mut *self.conn().await?, limit, before.as_deref()).await
    }

    async fn hosts_with_pending_jobs(&self) -> Result<Vec<String>, StoreError> {
        jobs::hosts_with_pending(&mut *self.conn().await?).await
    }

    async fn cancel_job(&self, job_id: String) -> Result<Job, StoreError> {
        in_transaction!(self, |tx| {
            match leases::cancel(tx, &job_id).await {
                Ok(job) if job.status == JobStatus::Running => {
                    let event = StoreEvent::CancelRequested {
                        host: job.host.clone(),
                    };
                    self.events.notify(tx, &event).await.map(|()| job)
                }
                Ok(job) => {
                    let changed = std::slice::from_ref(&job);
                    self.events.jobs_changed(tx, changed).await.map(|()| job)
                }
                other => other,
            }
        })
    }

    async fn retry_job(
        &self,
        job_id: String,
        new_id: String,
        traceparent: Option<String>,
    ) -> Result<Enqueued, StoreError> {
        in_transaction!(self, |tx| {
            match leases::retry(tx, &job_id, &new_id, traceparent.clone()).await {
                Ok(enqueued) => self.pending(tx, enqueued).await,
                Err(err) => Err(err),
            }
        })
    }

    async fn lose_unheld_jobs(&self, held: HeldJobs) -> Result<Vec<Job>, StoreError> {
        let before = to_ms(held.claimed_before);
        // A transaction, so that the other instances hear of the freed host.
        in_transaction!(self, |tx| {
            match leases::lose_unheld(tx, &held, before).await {
                Ok(lost) => self.events.jobs_ended(tx, &lost).await.map(|()| lost),
                Err(err) => Err(err),
            }
        })
    }

    async fn expire_leases(
        &self,
        silent_since: Timestamp,
        reason: String,
    ) -> Result<Vec<Job>, StoreError> {
        // A transaction, so that the other instances hear of the freed hosts
        // exactly when they are free.
        in_transaction!(self, |tx| {
            match leases::expire(tx, to_ms(silent_since), &reason).await {
                Ok(lost) => self.events.jobs_ended(tx, &lost).await.map(|()| lost),
                Err(err) => Err(err),
            }
        })
    }

    async fn cancel_requests(&self, host: String) -> Result<Vec<String>, StoreError> {
        leases::cancel_requested(&mut *self.conn().await?, &host).await
    }

    async fn hosts_with_cancel_requests(&self) -> Result<Vec<String>, StoreError> {
        leases::hosts_with_cancel_requests(&mut *self.conn().await?).await
    }

    async fn append_logs(
        &self,
        job_id: String,
        agent_id: Option<String>,
        lease: Option<i64>,
        lines: Vec<LogLine>,
        max_bytes: u64,
    ) -> Result<AppendedLogs, StoreError> {
        let mut published = self.log_feed.lock().await;
        let (appended, previous) = in_transaction!(self, |tx| {
            match logs::append(tx, &job_id, agent_id.as_deref(), lease, &lines, max_bytes).await {
                Ok((appended, previous)) => match appended.entries.last() {
                    Some(newest) => self
                        .events
                        .logs_committed(tx, newest.id)
                        .await
                        .map(|()| (appended, previous)),
                    None => Ok((appended, previous)),
                },
                Err(err) => Err(err),
            }
        })?;
        self.log_feed
            .publish(&mut published, previous, appended.entries.clone());
        Ok(appended)
    }

    fn log_feed(&self) -> tokio::sync::broadcast::Receiver<Arc<[LogEntry]>> {
        self.log_feed.subscribe()
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        let mut slot = self.leadership.lock().await;
        // Bounded: the caller's periodic work (saving heartbeats) must not
        // stall behind a database that does not answer.
        match tokio::time::timeout(ACQUIRE_TIMEOUT, self.lead(&mut slot)).await {
            Ok(led) => led,
            Err(_) => {
                *slot = None;
                Err(StoreError::Database(
                    "timed out asking for leadership".to_owned(),
                ))
            }
        }
    }

    async fn job_logs(
        &self,
        job_id: String,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        logs::of_job(&mut *self.conn().await?, &job_id, after, limit).await
    }

    async fn logs_since(
        &self,
        after_id: i64,
        filter: LogFilter,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        logs::since(&mut *self.conn().await?, after_id, &filter, limit).await
    }

    async fn last_log_id(&self) -> Result<i64, StoreError> {
        logs::last_id(&mut *self.conn().await?).await
    }

    async fn prune_logs(&self, keep_jobs: u32, keep_since: Timestamp) -> Result<u64, StoreError> {
        let jobs = logs::prunable_jobs(
            &mut *self.conn().await?,
            keep_jobs.max(1),
            to_ms(keep_since),
        )
        .await?;
        let mut deleted = 0;
        for job_id in jobs {
            // Each batch is its own statement (and commit), so appends and
            // claims never wait behind a long delete.
            deleted += delete_in_batches(PRUNE_BATCH, || async {
                logs::delete_of_job(&mut *self.conn().await?, &job_id, PRUNE_BATCH).await
            })
            .await?;
        }
        Ok(deleted)
    }

    async fn prune_history(&self, keep: HistoryRetention) -> Result<PrunedHistory, StoreError> {
        let keep_since = to_ms(keep.keep_since);
        let audit_since = to_ms(keep.audit_since);
        // Each batch is its own statement (and commit), so nothing waits
        // behind a long delete.
        Ok(PrunedHistory {
            jobs: delete_in_batches(HISTORY_BATCH, || async {
                let mut conn = self.conn().await?;
                retention::delete_old_jobs(&mut conn, keep.keep_jobs, keep_since, HISTORY_BATCH)
                    .await
            })
            .await?,
            deliveries: delete_in_batches(HISTORY_BATCH, || async {
                let mut conn = self.conn().await?;
                retention::delete_old_deliveries(
                    &mut conn,
                    keep.keep_deliveries,
                    keep_since,
                    HISTORY_BATCH,
                )
                .await
            })
            .await?,
            audit: delete_in_batches(HISTORY_BATCH, || async {
                let mut conn = self.conn().await?;
                retention::delete_old_audit(&mut conn, keep.keep_audit, audit_since, HISTORY_BATCH)
                    .await
            })
            .await?,
        })
    }
}

/// A registration: the enrollment token's one use, the agent's row, and the
/// loss of what its previous session was running, all or nothing.
async fn register(
    tx: &mut PgConnection,
    registration: &NewRegistration,
) -> Result<Registered, StoreError> {
    let holder = agents::holder_of(tx, &registration.hostname).await?;
    if let Some(agent_id) = &holder
        && !registration.may_replace
    {
        return Err(StoreError::HostTaken {
            hostname: registration.hostname.clone(),
            agent_id: agent_id.clone(),
        });
    }
    if let Some(token) = &registration.use_enrollment_token {
        credentials::use_once(tx, token).await?;
    }
    let agent = agents::register(tx, registration).await?;
    let lost = leases::lose_jobs_of(
        tx,
        &agent.id,
        "agent lost: it registered again (restarted) while running this job",
    )
    .await?;
    Ok(Registered {
        agent,
        lost,
        replaced: holder.is_some(),
    })
}

/// An admin's revocation of an agent: its token, and its running jobs.
async fn revoke(tx: &mut PgConnection, agent_id: &str) -> Result<Vec<Job>, StoreError> {
    if !credentials::revoke_agent(tx, agent_id).await? {
        return Err(StoreError::NotFound(format!("agent {agent_id}")));
    }
    leases::lose_jobs_of(tx, agent_id, "agent lost: an admin revoked it").await
}

/// PostgreSQL text cannot hold NUL characters (SQLite's can): a deploy that
/// prints one would otherwise have its upload refused forever. NUL becomes
/// U+FFFD, as the agent already does for bytes that are not UTF-8.
pub(super) fn text(value: &str) -> Cow<'_, str> {
    if value.contains('\0') {
        Cow::Owned(value.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// [`text`] for an optional value.
pub(super) fn opt_text(value: Option<&str>) -> Option<Cow<'_, str>> {
    value.map(text)
}

/// Advisory lock spaces (the first key of `pg_advisory_xact_lock(int, int)`);
/// the second key is a hash of what is locked. A hash collision only makes
/// two unrelated writes wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub(super) enum LockSpace {
    /// One webhook delivery id: redeliveries are recorded one at a time.
    Delivery = 0x4442_0001,
    /// One app on one host: enqueue's check-then-insert runs one at a time.
    AppOnHost = 0x4442_0002,
    /// All log appends: ids are taken, and committed, in one order.
    LogAppend = 0x4442_0003,
    /// The instance that runs periodic work (a session lock, held while it lives).
    Leader = 0x4442_0004,
}

/// The advisory lock key of `parts` in `space`: stable across instances and versions.
pub(super) fn lock_key(space: LockSpace, parts: &[&str]) -> (i32, i32) {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        // A separator no name contains: ("ab", "c") and ("a", "bc") differ.
        hash.update([0]);
    }
    let digest = hash.finalize();
    let key = i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (space as i32, key)
}

/// Takes the given advisory locks, in the given order, until the transaction ends.
pub(super) async fn lock(conn: &mut PgConnection, keys: &[(i32, i32)]) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let (spaces, keys): (Vec<i32>, Vec<i32>) = keys.iter().copied().unzip();
    // unnest yields the pairs in array order, and the aggregate takes each
    // lock as its row comes: one round trip, a fixed order.
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(space, key))
         FROM unnest($1::int4[], $2::int4[]) AS l(space, key)",
    )
    .bind(spaces)
    .bind(keys)
    .execute(conn)
    .await?;
    Ok(())
}

/// Unix milliseconds, the schema's time unit.
fn now_ms() -> i64 {
    to_ms(time::OffsetDateTime::now_utc())
}

fn to_ms(at: time::OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_become_replacement_characters() {
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert_eq!(opt_text(None), None);
    }

    #[test]
    fn lock_keys_are_stable_and_separate_their_parts() {
        let key = lock_key(LockSpace::AppOnHost, &["web-01", "web"]);
        assert_eq!(key, lock_key(LockSpace::AppOnHost, &["web-01", "web"]));
        assert_eq!(key.0, LockSpace::AppOnHost as i32);
        assert_ne!(key, lock_key(LockSpace::AppOnHost, &["web-0", "1web"]));
        assert_ne!(key.1, lock_key(LockSpace::AppOnHost, &["web", "web-01"]).1);
    }
}
