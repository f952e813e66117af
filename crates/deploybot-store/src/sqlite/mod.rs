//! The SQLite backend: one file, WAL, `synchronous=FULL`.
//!
//! Writes go to one writer thread that commits them in groups: it takes every
//! write waiting in its queue, runs each in its own savepoint inside one
//! transaction, commits once (one fsync), and only then answers each caller.
//! Under load many webhooks share one fsync; an idle controller commits each
//! write alone. Reads use a small pool of read-only connections, which WAL lets
//! run beside the writer.

mod agents;
mod audit;
mod credentials;
mod deliveries;
mod files;
mod jobs;
mod leases;
mod logs;
mod pool;
mod retention;
mod schema;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use deploybot_wire::{Agent, AuditEntry, Delivery, Job, TokenInfo};
use rusqlite::Connection;

use crate::batches::delete_in_batches;
use crate::{
    AgentCredential, AppendedLogs, Beat, Claim, DeliveryOutcome, Enqueued, HeldJobs,
    HistoryRetention, HostJobs, JobFilter, LogFilter, NewAudit, NewDelivery, NewJob,
    NewRegistration, NewToken, PrunedHistory, Registered, ReportOutcome, StatusReport, Store,
    StoreError,
};
use deploybot_wire::{LogEntry, LogLine, Timestamp};

/// Lines one pruning write deletes at most: keeps each write short.
const PRUNE_BATCH: u32 = 2000;
/// Jobs, deliveries or audit entries deleted per write when pruning history.
const HISTORY_BATCH: u32 = 500;
/// Free pages returned to the file system per write.
const VACUUM_PAGES: u32 = 1000;
use pool::ReadPool;
use writer::Writer;

/// How many read connections the pool keeps.
const READERS: usize = 4;
/// Page cache of each read connection, in KiB (SQLite's negative form).
const READER_CACHE_KIB: i64 = -256;

pub struct SqliteStore {
    writer: Writer,
    readers: ReadPool,
    log_feed: tokio::sync::broadcast::Sender<Arc<[LogEntry]>>,
    /// Kept, never used: one SQLite file has one controller, which learns
    /// of its own writes directly.
    events: tokio::sync::broadcast::Sender<crate::StoreEvent>,
}

/// Log batches buffered for slow feed receivers (they catch up from the database).
const LOG_FEED_CAPACITY: usize = 4096;

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Database(err.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Database(format!("stored JSON is invalid: {err}"))
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    // WAL + synchronous=FULL: a commit returns after the WAL is fsynced, so a
    // committed job survives power loss, not only a process crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Each write runs in a savepoint; keep their rollback journals in memory
    // instead of temp files (a temp-file write per page was the writer's
    // largest cost).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Room for every statement this backend uses: an evicted statement is
    // parsed again on its next use.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Makes the file one whose free pages can be given back to the file
/// system a few at a time (`PRAGMA incremental_vacuum`, after pruning).
/// A file made without it is rebuilt once (`VACUUM`), which takes a while
/// on a large file.
fn incremental_vacuum(conn: &Connection) -> Result<(), StoreError> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |row| row.get(0))?;
    if mode != INCREMENTAL {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let has_tables: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master)", [], |row| {
                row.get(0)
            })?;
        if has_tables {
            tracing::info!("rebuilding the database once so pruning can shrink it (VACUUM)");
        }
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path))
            .await
            .map_err(|err| StoreError::Setup(format!("opening the database panicked: {err}")))?
    }

    fn open_blocking(path: &Path) -> Result<Self, StoreError> {
        files::prepare(path)?;
        let cannot_open = |err: rusqlite::Error| {
            StoreError::Setup(format!("cannot open {}: {err}", path.display()))
        };
        let mut conn = Connection::open(path).map_err(cannot_open)?;
        configure(&conn)?;
        incremental_vacuum(&conn)?;
        schema::migrate(&mut conn)?;
        let writer = Writer::start(conn)?;

        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = Connection::open(path).map_err(cannot_open)?;
            configure(&conn)?;
            conn.pragma_update(None, "query_only", "ON")?;
            // Readers share the OS page cache; a private cache each (2 MB by
            // default) would mostly hold the same pages four times.
            conn.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
            readers.push(conn);
        }
        Ok(SqliteStore {
            writer,
            readers: ReadPool::new(readers),
            log_feed: tokio::sync::broadcast::channel(LOG_FEED_CAPACITY).0,
            events: tokio::sync::broadcast::channel(1).0,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn register_agent(
        &self,
        registration: NewRegistration,
    ) -> Result<Registered, StoreError> {
        self.writer
            .write(move |conn| {
                let holder = agents::holder_of(conn, &registration.hostname)?;
                if let Some(agent_id) = &holder
                    && !registration.may_replace
                {
                    return Err(StoreError::HostTaken {
                        hostname: registration.hostname.clone(),
                        agent_id: agent_id.clone(),
                    });
                }
                if let Some(token) = &registration.use_enrollment_token {
                    credentials::use_once(conn, token)?;
                }
                let agent = agents::register(conn, &registration)?;
                let lost = leases::lose_jobs_of(
                    conn,
                    &agent.id,
                    "agent lost: it registered again (restarted) while running this job",
                )?;
                Ok(Registered {
                    agent,
                    lost,
                    replaced: holder.is_some(),
                })
            })
            .await
    }

    async fn agent_by_token(
        &self,
        token_hash: String,
    ) -> Result<Option<AgentCredential>, StoreError> {
        self.readers
            .read(move |conn| credentials::agent_by_token(conn, &token_hash))
            .await
    }

    async fn revoke_agent(&self, agent_id: String) -> Result<Vec<Job>, StoreError> {
        self.writer
            .write(move |conn| {
                if !credentials::revoke_agent(conn, &agent_id)? {
                    return Err(StoreError::NotFound(format!("agent {agent_id}")));
                }
                leases::lose_jobs_of(conn, &agent_id, "agent lost: an admin revoked it")
            })
            .await
    }

    async fn forget_agent(&self, agent_id: String) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| credentials::forget_agent(conn, &agent_id))
            .await
    }

    async fn create_token(&self, token: NewToken) -> Result<TokenInfo, StoreError> {
        self.writer
            .write(move |conn| credentials::create(conn, &token))
            .await
    }

    async fn tokens(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<TokenInfo>, StoreError> {
        self.readers
            .read(move |conn| credentials::page(conn, after.as_deref(), limit))
            .await
    }

    async fn token_by_hash(&self, hash: String) -> Result<Option<TokenInfo>, StoreError> {
        self.readers
            .read(move |conn| credentials::by_hash(conn, &hash))
            .await
    }

    async fn revoke_token(&self, id: String) -> Result<TokenInfo, StoreError> {
        self.writer
            .write(move |conn| credentials::revoke(conn, &id))
            .await
    }

    async fn any_admin_token(&self) -> Result<bool, StoreError> {
        self.readers.read(credentials::any_admin).await
    }

    async fn record_audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| audit::record(conn, &entry))
            .await
    }

    async fn audit(&self, limit: u32, before: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
        self.readers
            .read(move |conn| audit::recent(conn, limit, before))
            .await
    }

    async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.readers.read(agents::all).await
    }

    async fn agents_page(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Agent>, StoreError> {
        self.readers
            .read(move |conn| agents::page(conn, after.as_deref(), limit))
            .await
    }

    async fn agent(&self, agent_id: String) -> Result<Option<Agent>, StoreError> {
        self.readers
            .read(move |conn| agents::active(conn, &agent_id))
            .await
    }

    async fn save_heartbeats(&self, beats: Vec<Beat>) -> Result<(), StoreError> {
        self.writer
            .write(move |conn| agents::save_heartbeats(conn, &beats))
            .await
    }

    async fn claim_job(&self, agent_id: String, host: String) -> Result<Claim, StoreError> {
        self.writer
            .write(move |conn| leases::claim(conn, &agent_id, &host))
            .await
    }

    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError> {
        let job = jobs::EncodedJob::new(job)?;
        self.writer
            .write(move |conn| jobs::enqueue(conn, &job))
            .await
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
        self.writer
            .write(move |conn| deliveries::ingest(conn, &delivery, &jobs))
            .await
    }

    async fn job(&self, id: String) -> Result<Option<Job>, StoreError> {
        self.readers.read(move |conn| jobs::by_id(conn, &id)).await
    }

    async fn jobs(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError> {
        self.readers
            .read(move |conn| jobs::list(conn, &filter))
            .await
    }

    async fn report_status(
        &self,
        job_id: String,
        report: StatusReport,
    ) -> Result<ReportOutcome, StoreError> {
        self.writer
            .write(move |conn| leases::report(conn, &job_id, &report))
            .await
    }

    async fn host_jobs(&self, hosts: Vec<String>) -> Result<Vec<HostJobs>, StoreError> {
        self.readers
            .read(move |conn| jobs::of_hosts(conn, &hosts))
            .await
    }

    async fn deliveries(
        &self,
        limit: u32,
        before: Option<String>,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.readers
            .read(move |conn| deliveries::recent(conn, limit, before.as_deref()))
            .await
    }

    async fn hosts_with_pending_jobs(&self) -> Result<Vec<String>, StoreError> {
        self.readers.read(jobs::hosts_with_pending).await
    }

    async fn cancel_job(&self, job_id: String) -> Result<Job, StoreError> {
        self.writer
            .write(move |conn| leases::cancel(conn, &job_id))
            .await
    }

    async fn retry_job(
        &self,
        job_id: String,
        new_id: String,
        traceparent: Option<String>,
    ) -> Result<Enqueued, StoreError> {
        self.writer
            .write(move |conn| leases::retry(conn, &job_id, &new_id, traceparent.clone()))
            .await
    }

    async fn lose_unheld_jobs(&self, held: HeldJobs) -> Result<Vec<Job>, StoreError> {
        let before = to_ms(held.claimed_before);
        let reason = held.reason.clone();
        let Some((job_id, lease)) = self
            .readers
            .read(move |conn| leases::unheld(conn, &held, before))
            .await?
        else {
            return Ok(Vec::new());
        };
        self.writer
            .write(move |conn| leases::lose_job(conn, &job_id, lease, &reason))
            .await
    }

    async fn expire_leases(
        &self,
        silent_since: Timestamp,
        reason: String,
    ) -> Result<Vec<Job>, StoreError> {
        let cutoff = to_ms(silent_since);
        self.writer
            .write(move |conn| leases::expire(conn, cutoff, &reason))
            .await
    }

    async fn cancel_requests(&self, host: String) -> Result<Vec<String>, StoreError> {
        self.readers
            .read(move |conn| leases::cancel_requested(conn, &host))
            .await
    }

    async fn hosts_with_cancel_requests(&self) -> Result<Vec<String>, StoreError> {
        self.readers.read(leases::hosts_with_cancel_requests).await
    }

    async fn append_logs(
        &self,
        job_id: String,
        agent_id: Option<String>,
        lease: Option<i64>,
        lines: Vec<LogLine>,
        max_bytes: u64,
    ) -> Result<AppendedLogs, StoreError> {
        let feed = self.log_feed.clone();
        self.writer
            .write_then(
                move |conn| {
                    logs::append(conn, &job_id, agent_id.as_deref(), lease, &lines, max_bytes)
                },
                move |appended: &AppendedLogs| {
                    if !appended.entries.is_empty() {
                        // No receiver is fine: nobody is watching.
                        let _ = feed.send(appended.entries.clone().into());
                    }
                },
            )
            .await
    }

    fn log_feed(&self) -> tokio::sync::broadcast::Receiver<Arc<[LogEntry]>> {
        self.log_feed.subscribe()
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<crate::StoreEvent> {
        self.events.subscribe()
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn job_logs(
        &self,
        job_id: String,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.readers
            .read(move |conn| logs::of_job(conn, &job_id, after, limit))
            .await
    }

    async fn logs_since(
        &self,
        after_id: i64,
        filter: LogFilter,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.readers
            .read(move |conn| logs::since(conn, after_id, &filter, limit))
            .await
    }

    async fn last_log_id(&self) -> Result<i64, StoreError> {
        self.readers.read(logs::last_id).await
    }

    async fn prune_logs(&self, keep_jobs: u32, keep_since: Timestamp) -> Result<u64, StoreError> {
        let keep_since = to_ms(keep_since);
        let jobs = self
            .readers
            .read(move |conn| logs::prunable_jobs(conn, keep_jobs.max(1), keep_since))
            .await?;
        let mut deleted = 0;
        for job_id in jobs {
            deleted += delete_in_batches(PRUNE_BATCH, || {
                let id = job_id.clone();
                self.writer
                    .write(move |conn| logs::delete_of_job(conn, &id, PRUNE_BATCH))
            })
            .await?;
        }
        Ok(deleted)
    }

    async fn prune_history(&self, keep: HistoryRetention) -> Result<PrunedHistory, StoreError> {
        let keep_since = to_ms(keep.keep_since);
        let audit_since = to_ms(keep.audit_since);
        // Each batch is its own write: the webhooks and heartbeats queued
        // behind it wait for one batch, never for the whole pruning.
        let pruned = PrunedHistory {
            jobs: delete_in_batches(HISTORY_BATCH, || {
                self.writer.write(move |conn| {
                    retention::delete_old_jobs(conn, keep.keep_jobs, keep_since, HISTORY_BATCH)
                })
            })
            .await?,
            deliveries: delete_in_batches(HISTORY_BATCH, || {
                self.writer.write(move |conn| {
                    retention::delete_old_deliveries(
                        conn,
                        keep.keep_deliveries,
                        keep_since,
                        HISTORY_BATCH,
                    )
                })
            })
            .await?,
            audit: delete_in_batches(HISTORY_BATCH, || {
                self.writer.write(move |conn| {
                    retention::delete_old_audit(conn, keep.keep_audit, audit_since, HISTORY_BATCH)
                })
            })
            .await?,
        };
        self.give_back_free_pages().await?;
        Ok(pruned)
    }
}

impl SqliteStore {
    /// Returns the pages pruning freed to the file system, a few at a time.
    async fn give_back_free_pages(&self) -> Result<(), StoreError> {
        let free = self.readers.read(retention::free_pages).await?;
        for _ in 0..free.div_ceil(u64::from(VACUUM_PAGES)) {
            self.writer
                .write(|conn| retention::vacuum_some(conn, VACUUM_PAGES))
                .await?;
        }
        Ok(())
    }
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
