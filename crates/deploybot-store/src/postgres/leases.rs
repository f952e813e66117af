//! SQL for a job's life after it is queued: handing it out under a lease,
//! the agent's reports, cancel, retry, and expiry of silent agents' leases.

use deploybot_wire::{Job, JobSource, JobStatus};
use sqlx::{PgConnection, Row};

use super::jobs::{self, EncodedJob, from_row, from_rows, job_columns};
use super::{now_ms, opt_text, text, unique_violation};
use crate::holder::{self, Held, Holder, LeaseRow};
use crate::{Claim, Enqueued, HeldJobs, NewJob, ReportOutcome, StatusReport, StoreError};

/// Hands out the oldest pending job of host `$3` in one statement, and says
/// whether the host had pending jobs (to tell "busy" from "nothing to do").
///
/// Only the host's oldest pending job is a candidate, locked with
/// `FOR UPDATE SKIP LOCKED`: a concurrent claim of the same host, from this
/// instance or another, finds it locked and answers "busy" at once instead
/// of waiting, and never takes a younger job past it (the host could not run
/// both anyway). `NOT EXISTS` keeps a host to one running job; should two
/// claims ever get past it together, the unique index on running jobs
/// refuses the second (see [`claim`]).
const CLAIM: &str = concat!(
    "WITH next AS (
         SELECT seq FROM jobs
         WHERE seq = (SELECT min(seq) FROM jobs WHERE host = $3 AND status = 'pending')
           AND status = 'pending'
         FOR UPDATE SKIP LOCKED
     ), claimed AS (
         UPDATE jobs SET status = 'running', started_at = $1, assigned_agent = $2, lease = $1
         WHERE seq = (SELECT seq FROM next)
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE host = $3 AND status = 'running')
         RETURNING ",
    job_columns!(),
    "
     )
     SELECT claimed.*,
            EXISTS (SELECT 1 FROM jobs WHERE host = $3 AND status = 'pending') AS had_pending
     FROM (VALUES (true)) AS one LEFT JOIN claimed ON true"
);

/// Hands the oldest pending job of `host` to `agent_id`.
///
/// The lease is the claim time in milliseconds: a fencing token that grows
/// with every claim, so a stale holder can always be told apart.
pub(super) async fn claim(
    conn: &mut PgConnection,
    agent_id: &str,
    host: &str,
) -> Result<Claim, StoreError> {
    let row = sqlx::query(CLAIM)
        .bind(now_ms())
        .bind(text(agent_id))
        .bind(text(host))
        .fetch_one(conn)
        .await;
    let row = match row {
        Ok(row) => row,
        // Another claim of this host won the race in the same instant.
        Err(err) if unique_violation(&err) == Some("jobs_one_running_per_host") => {
            return Ok(Claim::HostBusy);
        }
        Err(err) => return Err(err.into()),
    };
    // The agent's own row is not touched: its last-seen time and status
    // come from its heartbeats (saved once a second), not from claims.
    if row.try_get::<Option<String>, _>(0)?.is_some() {
        return Ok(Claim::Job(Box::new(from_row(&row)?)));
    }
    Ok(if row.try_get::<bool, _>("had_pending")? {
        Claim::HostBusy
    } else {
        Claim::NothingPending
    })
}

/// How [`check_holder`] locks the job's row until the transaction ends.
pub(super) enum RowLock {
    /// A status change: nothing else may change the job meanwhile.
    Update,
    /// Log lines: appends of one job may run together; a status change waits.
    Share,
}

/// The job's status, host and app, refusing a writer that does not hold its
/// lease. Locks the job's row, so the status stays as read until the
/// transaction ends.
pub(super) async fn check_holder(
    conn: &mut PgConnection,
    job_id: &str,
    holder: &Holder<'_>,
    row_lock: RowLock,
) -> Result<Held, StoreError> {
    let sql = match row_lock {
        RowLock::Update => {
            "SELECT status, assigned_agent, lease, host, app FROM jobs WHERE id = $1 FOR UPDATE"
        }
        RowLock::Share => {
            "SELECT status, assigned_agent, lease, host, app FROM jobs WHERE id = $1 FOR SHARE"
        }
    };
    type Current = (String, Option<String>, Option<i64>, String, String);
    let current: Option<Current> = sqlx::query_as(sql)
        .bind(text(job_id))
        .fetch_optional(conn)
        .await?;
    let row = current.map(|(status, assigned_agent, lease, host, app)| LeaseRow {
        status,
        assigned_agent,
        lease,
        host,
        app,
    });
    holder::check_holder(job_id, holder, row)
}

/// Applies an agent's report on a job it runs.
pub(super) async fn report(
    conn: &mut PgConnection,
    job_id: &str,
    report: &StatusReport,
) -> Result<ReportOutcome, StoreError> {
    let current = check_holder(conn, job_id, &Holder::of(report), RowLock::Update)
        .await?
        .status;
    if !holder::report_changes(job_id, current, report)? {
        return Ok(ReportOutcome::Unchanged(current));
    }
    // The agent's row is left alone: its status comes from its heartbeats.
    let row = sqlx::query(concat!(
        "UPDATE jobs SET status = $2, completed_at = $3, error = $4, exit_code = $5
         WHERE id = $1 AND status = 'running'
         RETURNING ",
        job_columns!()
    ))
    .bind(text(job_id))
    .bind(report.status.as_str())
    .bind(now_ms())
    .bind(opt_text(report.error.as_deref()))
    .bind(report.exit_code)
    .fetch_one(conn)
    .await?;
    Ok(ReportOutcome::Updated(Box::new(from_row(&row)?)))
}

/// Cancels a pending job at once, or asks the agent of a running one to stop.
pub(super) async fn cancel(conn: &mut PgConnection, job_id: &str) -> Result<Job, StoreError> {
    let status = check_holder(conn, job_id, &Holder::ANYONE, RowLock::Update)
        .await?
        .status;
    let row = match status {
        JobStatus::Pending => {
            sqlx::query(concat!(
                "UPDATE jobs SET status = 'cancelled', completed_at = $2,
                     error = 'cancelled before it ran'
                 WHERE id = $1 AND status = 'pending' RETURNING ",
                job_columns!()
            ))
            .bind(text(job_id))
            .bind(now_ms())
            .fetch_one(conn)
            .await?
        }
        JobStatus::Running => {
            sqlx::query(concat!(
                "UPDATE jobs SET cancel_requested = true WHERE id = $1 AND status = 'running'
                 RETURNING ",
                job_columns!()
            ))
            .bind(text(job_id))
            .fetch_one(conn)
            .await?
        }
        done => {
            return Err(StoreError::Conflict(format!(
                "job {job_id} is already {done}; only pending or running jobs can be cancelled"
            )));
        }
    };
    from_row(&row)
}

/// Queues a new attempt of a finished job, with the same deploy spec.
pub(super) async fn retry(
    conn: &mut PgConnection,
    job_id: &str,
    new_id: &str,
    traceparent: Option<String>,
) -> Result<Enqueued, StoreError> {
    // A finished job never changes again: no lock needed to read it.
    let old = jobs::by_id(conn, job_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
    if !old.status.is_final() {
        return Err(StoreError::Conflict(format!(
            "job {job_id} is still {}; retry it once it has finished (or cancel it)",
            old.status
        )));
    }
    let new = EncodedJob::new(NewJob {
        id: new_id.to_owned(),
        app: old.app,
        repo: old.repo,
        git_ref: old.git_ref,
        sha: old.sha,
        host: old.host,
        metadata: old.metadata,
        source: JobSource::Retry,
        delivery_id: old.delivery_id,
        deploy: old.deploy,
        attempt: old.attempt + 1,
        retry_of: Some(old.id),
        traceparent,
    })?;
    jobs::enqueue(conn, &new).await
}

/// Running jobs of agents silent since before `cutoff_ms` become `lost`.
pub(super) async fn expire(
    conn: &mut PgConnection,
    cutoff_ms: i64,
    reason: &str,
) -> Result<Vec<Job>, StoreError> {
    let rows = sqlx::query(concat!(
        "UPDATE jobs SET status = 'lost', completed_at = $2, error = $3
         WHERE status = 'running'
           AND assigned_agent IN (SELECT id FROM agents WHERE coalesce(last_heartbeat, 0) < $1)
         RETURNING ",
        job_columns!()
    ))
    .bind(cutoff_ms)
    .bind(now_ms())
    .bind(text(reason))
    .fetch_all(conn)
    .await?;
    from_rows(&rows)
}

/// Running jobs of `agent_id` become `lost`: its previous session is gone.
pub(super) async fn lose_jobs_of(
    conn: &mut PgConnection,
    agent_id: &str,
    reason: &str,
) -> Result<Vec<Job>, StoreError> {
    let rows = sqlx::query(concat!(
        "UPDATE jobs SET status = 'lost', completed_at = $2, error = $3
         WHERE status = 'running' AND assigned_agent = $1
         RETURNING ",
        job_columns!()
    ))
    .bind(text(agent_id))
    .bind(now_ms())
    .bind(text(reason))
    .fetch_all(conn)
    .await?;
    from_rows(&rows)
}

/// The running job of `held.host` becomes `lost` if `held.agent_id` has it,
/// claimed before `claimed_before_ms`, and does not list it.
pub(super) async fn lose_unheld(
    conn: &mut PgConnection,
    held: &HeldJobs,
    claimed_before_ms: i64,
) -> Result<Vec<Job>, StoreError> {
    let rows = sqlx::query(concat!(
        "UPDATE jobs SET status = 'lost', completed_at = $5, error = $6
         WHERE host = $1 AND status = 'running' AND assigned_agent = $2
           AND lease < $3 AND NOT (id = ANY($4))
         RETURNING ",
        job_columns!()
    ))
    .bind(text(&held.host))
    .bind(text(&held.agent_id))
    .bind(claimed_before_ms)
    .bind(
        held.running
            .iter()
            .map(|id| text(id).into_owned())
            .collect::<Vec<_>>(),
    )
    .bind(now_ms())
    .bind(text(&held.reason))
    .fetch_all(conn)
    .await?;
    from_rows(&rows)
}

/// The running job of `host` if someone asked to cancel it.
pub(super) async fn cancel_requested(
    conn: &mut PgConnection,
    host: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM jobs WHERE host = $1 AND status = 'running' AND cancel_requested",
    )
    .bind(text(host))
    .fetch_all(conn)
    .await?)
}

/// Hosts whose running job someone asked to cancel (to rebuild hints at start).
pub(super) async fn hosts_with_cancel_requests(
    conn: &mut PgConnection,
) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT host FROM jobs WHERE status = 'running' AND cancel_requested")
            .fetch_all(conn)
            .await?,
    )
}
