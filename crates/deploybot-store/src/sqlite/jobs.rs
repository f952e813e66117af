//! SQL for jobs: enqueue (with idempotency and supersede), claim, reports, reads.
//!
//! Hot statements name their index (`INDEXED BY`): without statistics SQLite
//! may pick an index that scans the whole history, and a named index makes
//! the statement fail loudly instead if the index ever goes away.

use deploybot_wire::{Job, JobStatus};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use super::{from_ms, now_ms};
use crate::{Enqueued, HostJobs, JobFilter, NewJob, StoreError};

pub(super) const COLUMNS: &str = "id, app, repo, git_ref, sha, host, status, metadata, deploy, \
    source, delivery_id, attempt, created_at, started_at, completed_at, assigned_agent, exit_code, \
    error, superseded_by, lease, cancel_requested, retry_of, traceparent";

/// Turns a stored-value problem into a row error, so a damaged row surfaces
/// as a database error instead of a panic.
fn bad_value(
    column: usize,
    err: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(err))
}

pub(super) fn from_row(row: &Row) -> rusqlite::Result<Job> {
    let status: String = row.get(6)?;
    let metadata: String = row.get(7)?;
    let deploy: String = row.get(8)?;
    let source: String = row.get(9)?;
    Ok(Job {
        id: row.get(0)?,
        app: row.get(1)?,
        repo: row.get(2)?,
        git_ref: row.get(3)?,
        sha: row.get(4)?,
        host: row.get(5)?,
        status: status.parse().map_err(|err| bad_value(6, err))?,
        metadata: serde_json::from_str(&metadata).map_err(|err| bad_value(7, err))?,
        deploy: serde_json::from_str(&deploy).map_err(|err| bad_value(8, err))?,
        source: source.parse().map_err(|err| bad_value(9, err))?,
        delivery_id: row.get(10)?,
        attempt: row.get(11)?,
        created_at: from_ms(row.get(12)?),
        started_at: row.get::<_, Option<i64>>(13)?.map(from_ms),
        completed_at: row.get::<_, Option<i64>>(14)?.map(from_ms),
        assigned_agent: row.get(15)?,
        exit_code: row.get(16)?,
        error: row.get(17)?,
        superseded_by: row.get(18)?,
        lease: row.get(19)?,
        cancel_requested: row.get(20)?,
        pending_reason: None,
        agent_silent_secs: None,
        retry_of: row.get(21)?,
        traceparent: row.get(22)?,
    })
}

pub(super) fn by_id(conn: &Connection, id: &str) -> Result<Option<Job>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// A [`NewJob`] with its JSON columns encoded, done by the caller's task so
/// the writer thread spends its time on SQL only.
pub(super) struct EncodedJob {
    pub(super) job: NewJob,
    metadata: String,
    deploy: String,
}

impl EncodedJob {
    pub(super) fn new(job: NewJob) -> Result<Self, StoreError> {
        Ok(EncodedJob {
            metadata: serde_json::to_string(&job.metadata)?,
            deploy: serde_json::to_string(&job.deploy)?,
            job,
        })
    }
}

/// Enqueues `new`, unless an open job with the same app, repo, ref, sha and
/// host exists (then that one is returned). A new job supersedes the pending
/// jobs of the same app and host: the newest push wins.
/// A webhook job of this app on this host for this commit, in any status.
pub(super) fn webhook_job_for(
    conn: &Connection,
    app: &str,
    host: &str,
    sha: &str,
) -> Result<Option<Job>, StoreError> {
    let job = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs INDEXED BY jobs_webhook_by_sha
             WHERE sha = ?1 AND app = ?2 AND host = ?3 AND source = 'webhook' LIMIT 1"
        ))?
        .query_row(params![sha, app, host], from_row)
        .optional()?;
    Ok(job)
}

pub(super) fn enqueue(conn: &Connection, encoded: &EncodedJob) -> Result<Enqueued, StoreError> {
    let new = &encoded.job;
    // At most one open job matches (this very check guarantees it), so no
    // ORDER BY: with one, SQLite would re-prepare the statement on every run.
    let same = "AND app = ?2 AND repo = ?3 AND git_ref = ?4 AND sha IS ?5 LIMIT 1";
    let key = params![new.host, new.app, new.repo, new.git_ref, new.sha];
    let mut existing = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs INDEXED BY jobs_pending_by_host
             WHERE host = ?1 AND status = 'pending' {same}"
        ))?
        .query_row(key, from_row)
        .optional()?;
    if existing.is_none() {
        existing = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM jobs INDEXED BY jobs_one_running_per_host
                 WHERE host = ?1 AND status = 'running' {same}"
            ))?
            .query_row(key, from_row)
            .optional()?;
    }
    if let Some(job) = existing {
        return Ok(Enqueued {
            job,
            created: false,
            superseded: Vec::new(),
        });
    }

    let now = now_ms();
    let superseded: Vec<String> = conn
        .prepare_cached(
            "UPDATE jobs INDEXED BY jobs_pending_by_host SET status = 'superseded', superseded_by = ?1,
                 completed_at = ?2, error = 'superseded by newer job ' || ?1
             WHERE host = ?3 AND status = 'pending' AND app = ?4
             RETURNING id",
        )?
        .query_map(params![new.id, now, new.host, new.app], |row| row.get(0))?
        .collect::<Result<_, _>>()?;

    conn.prepare_cached(
        "INSERT INTO jobs (id, app, repo, git_ref, sha, host, status, metadata, deploy, source,
                           delivery_id, attempt, created_at, retry_of, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        new.id,
        new.app,
        new.repo,
        new.git_ref,
        new.sha,
        new.host,
        encoded.metadata,
        encoded.deploy,
        new.source.as_str(),
        new.delivery_id,
        new.attempt,
        now,
        new.retry_of,
        new.traceparent,
    ])?;
    let job = new.pending(from_ms(now));
    Ok(Enqueued {
        job,
        created: true,
        superseded,
    })
}

pub(super) fn list(conn: &Connection, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
    let mut clauses: Vec<&str> = Vec::new();
    let mut values: Vec<&dyn ToSql> = Vec::new();
    let status = filter.status.map(JobStatus::as_str);
    if let Some(status) = &status {
        clauses.push("status = ?");
        values.push(status);
    }
    if let Some(host) = &filter.host {
        clauses.push("host = ?");
        values.push(host);
    }
    if let Some(repo) = &filter.repo {
        clauses.push("repo = ?");
        values.push(repo);
    }
    if let Some(app) = &filter.app {
        clauses.push("app = ?");
        values.push(app);
    }
    if let Some(before) = &filter.before {
        clauses.push("seq < (SELECT seq FROM jobs WHERE id = ?)");
        values.push(before);
    }
    let mut sql = format!("SELECT {COLUMNS} FROM jobs");
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    values.push(&filter.limit);
    let jobs = conn
        .prepare_cached(&sql)?
        .query_map(values.as_slice(), from_row)?
        .collect::<Result<_, _>>()?;
    Ok(jobs)
}

pub(super) fn of_hosts(conn: &Connection, hosts: &[String]) -> Result<Vec<HostJobs>, StoreError> {
    let mut current = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs INDEXED BY jobs_one_running_per_host
         WHERE host = ?1 AND status = 'running'"
    ))?;
    let mut last = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs INDEXED BY jobs_by_host
         WHERE host = ?1 AND status IN ('success', 'failed', 'cancelled', 'lost')
           AND started_at IS NOT NULL
         ORDER BY seq DESC LIMIT 1"
    ))?;
    let mut pending = conn.prepare_cached(
        "SELECT count(*) FROM jobs INDEXED BY jobs_pending_by_host
         WHERE host = ?1 AND status = 'pending'",
    )?;
    hosts
        .iter()
        .map(|host| {
            Ok(HostJobs {
                hostname: host.clone(),
                current: current.query_row([host], from_row).optional()?,
                last: last.query_row([host], from_row).optional()?,
                pending: pending
                    .query_row([host], |row| row.get::<_, i64>(0))?
                    .unsigned_abs(),
            })
        })
        .collect()
}

pub(super) fn hosts_with_pending(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let hosts = conn
        .prepare_cached(
            "SELECT DISTINCT host FROM jobs INDEXED BY jobs_pending_by_host
         WHERE status = 'pending'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(hosts)
}
