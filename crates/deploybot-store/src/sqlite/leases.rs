//! SQL for a job's life after it is queued: handing it out under a lease,
//! the agent's reports, cancel, retry, and expiry of silent agents' leases.

use deploybot_wire::{Job, JobSource, JobStatus};
use rusqlite::{Connection, OptionalExtension, params};

use super::jobs::{self, COLUMNS, EncodedJob, from_row};
use super::now_ms;
use crate::holder::{self, Held, Holder, LeaseRow};
use crate::{Claim, Enqueued, HeldJobs, NewJob, ReportOutcome, StatusReport, StoreError};

const PENDING_OF_HOST: &str = "SELECT seq FROM jobs INDEXED BY jobs_pending_by_host
     WHERE host = ?1 AND status = 'pending'";

fn claim_sql() -> String {
    format!(
        "UPDATE jobs SET status = 'running', started_at = ?1, assigned_agent = ?2, lease = ?1
         WHERE seq = ?3 AND status = 'pending'
           AND NOT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_one_running_per_host
                           WHERE host = ?4 AND status = 'running')
         RETURNING {COLUMNS}"
    )
}

/// Hands the oldest pending job of `host` to `agent_id`. The update checks
/// again that the job is pending and the host runs nothing, and the partial
/// unique index on running jobs makes a second running job for a host
/// impossible even if those checks were wrong.
///
/// The oldest is picked in Rust from the host's few pending jobs: with
/// `ORDER BY` (or `min()`) the statement would be parsed again on every run
/// (SQLite marks such plans as depending on the bound host, and the
/// statement cache clears bindings after each use).
///
/// The lease is the claim time in milliseconds: a fencing token that grows
/// with every claim, so a stale holder can always be told apart.
pub(super) fn claim(conn: &Connection, agent_id: &str, host: &str) -> Result<Claim, StoreError> {
    let oldest: Option<i64> = conn
        .prepare_cached(PENDING_OF_HOST)?
        .query_map([host], |row| row.get(0))?
        .collect::<Result<Vec<i64>, _>>()?
        .into_iter()
        .min();
    let Some(seq) = oldest else {
        return Ok(Claim::NothingPending);
    };
    let now = now_ms();
    let claimed = conn
        .prepare_cached(&claim_sql())?
        .query_row(params![now, agent_id, seq, host], from_row)
        .optional()?;
    // The agent's own row is not touched: its last-seen time and status
    // come from its heartbeats (saved once a second), not from claims.
    Ok(match claimed {
        Some(job) => Claim::Job(Box::new(job)),
        None => Claim::HostBusy,
    })
}

/// The job's status, host and app, refusing a writer that does not hold its lease.
pub(super) fn check_holder(
    conn: &Connection,
    job_id: &str,
    holder: &Holder,
) -> Result<Held, StoreError> {
    let row = conn
        .prepare_cached("SELECT status, assigned_agent, lease, host, app FROM jobs WHERE id = ?1")?
        .query_row([job_id], |row| {
            Ok(LeaseRow {
                status: row.get(0)?,
                assigned_agent: row.get(1)?,
                lease: row.get(2)?,
                host: row.get(3)?,
                app: row.get(4)?,
            })
        })
        .optional()?;
    holder::check_holder(job_id, holder, row)
}

/// Applies an agent's report on a job it runs.
pub(super) fn report(
    conn: &Connection,
    job_id: &str,
    report: &StatusReport,
) -> Result<ReportOutcome, StoreError> {
    let current = check_holder(conn, job_id, &Holder::of(report))?.status;
    if !holder::report_changes(job_id, current, report)? {
        return Ok(ReportOutcome::Unchanged(current));
    }
    // The agent's row is left alone: its status comes from its heartbeats.
    let job = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET status = ?2, completed_at = ?3, error = ?4, exit_code = ?5
             WHERE id = ?1 AND status = 'running'
             RETURNING {COLUMNS}"
        ))?
        .query_row(
            params![
                job_id,
                report.status.as_str(),
                now_ms(),
                report.error,
                report.exit_code
            ],
            from_row,
        )?;
    Ok(ReportOutcome::Updated(Box::new(job)))
}

/// Cancels a pending job at once, or asks the agent of a running one to stop.
pub(super) fn cancel(conn: &Connection, job_id: &str) -> Result<Job, StoreError> {
    let job =
        jobs::by_id(conn, job_id)?.ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
    let updated = match job.status {
        JobStatus::Pending => conn
            .prepare_cached(&format!(
                "UPDATE jobs SET status = 'cancelled', completed_at = ?2,
                     error = 'cancelled before it ran'
                 WHERE id = ?1 AND status = 'pending' RETURNING {COLUMNS}"
            ))?
            .query_row(params![job_id, now_ms()], from_row)?,
        JobStatus::Running => conn
            .prepare_cached(&format!(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND status = 'running'
                 RETURNING {COLUMNS}"
            ))?
            .query_row([job_id], from_row)?,
        done => {
            return Err(StoreError::Conflict(format!(
                "job {job_id} is already {done}; only pending or running jobs can be cancelled"
            )));
        }
    };
    Ok(updated)
}

/// Queues a new attempt of a finished job, with the same deploy spec.
pub(super) fn retry(
    conn: &Connection,
    job_id: &str,
    new_id: &str,
    traceparent: Option<String>,
) -> Result<Enqueued, StoreError> {
    let old =
        jobs::by_id(conn, job_id)?.ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
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
    jobs::enqueue(conn, &new)
}

/// Running jobs of agents silent since before `cutoff_ms` become `lost`.
pub(super) fn expire(
    conn: &Connection,
    cutoff_ms: i64,
    reason: &str,
) -> Result<Vec<Job>, StoreError> {
    let lost = conn
        .prepare_cached(&format!(
            "UPDATE jobs INDEXED BY jobs_one_running_per_host
             SET status = 'lost', completed_at = ?2, error = ?3
             WHERE status = 'running'
               AND assigned_agent IN (SELECT id FROM agents WHERE coalesce(last_heartbeat, 0) < ?1)
             RETURNING {COLUMNS}"
        ))?
        .query_map(params![cutoff_ms, now_ms(), reason], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(lost)
}

/// Running jobs of `agent_id` become `lost`: its previous session is gone.
pub(super) fn lose_jobs_of(
    conn: &Connection,
    agent_id: &str,
    reason: &str,
) -> Result<Vec<Job>, StoreError> {
    let lost = conn
        .prepare_cached(&format!(
            "UPDATE jobs INDEXED BY jobs_one_running_per_host
             SET status = 'lost', completed_at = ?2, error = ?3
             WHERE status = 'running' AND assigned_agent = ?1
             RETURNING {COLUMNS}"
        ))?
        .query_map(params![agent_id, now_ms(), reason], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(lost)
}

/// The running job of `held.host` if `held.agent_id` has it, claimed
/// before `claimed_before_ms`, and does not list it: its id and lease.
/// A read, so that the check most heartbeats make never waits for the writer.
pub(super) fn unheld(
    conn: &Connection,
    held: &HeldJobs,
    claimed_before_ms: i64,
) -> Result<Option<(String, i64)>, StoreError> {
    let running: Option<(String, Option<String>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, assigned_agent, lease FROM jobs INDEXED BY jobs_one_running_per_host
             WHERE host = ?1 AND status = 'running'",
        )?
        .query_row([&held.host], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    Ok(match running {
        Some((id, Some(agent), Some(lease)))
            if agent == held.agent_id
                && lease < claimed_before_ms
                && !held.running.contains(&id) =>
        {
            Some((id, lease))
        }
        _ => None,
    })
}

/// Job `job_id` becomes `lost`, if it still runs under `lease`.
pub(super) fn lose_job(
    conn: &Connection,
    job_id: &str,
    lease: i64,
    reason: &str,
) -> Result<Vec<Job>, StoreError> {
    let lost = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET status = 'lost', completed_at = ?3, error = ?4
             WHERE id = ?1 AND status = 'running' AND lease = ?2
             RETURNING {COLUMNS}"
        ))?
        .query_map(params![job_id, lease, now_ms(), reason], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(lost)
}

/// The running job of `host` if someone asked to cancel it.
pub(super) fn cancel_requested(conn: &Connection, host: &str) -> Result<Vec<String>, StoreError> {
    let ids = conn
        .prepare_cached(
            "SELECT id FROM jobs INDEXED BY jobs_one_running_per_host
             WHERE host = ?1 AND status = 'running' AND cancel_requested = 1",
        )?
        .query_map([host], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Hosts whose running job someone asked to cancel (to rebuild hints at start).
pub(super) fn hosts_with_cancel_requests(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let hosts = conn
        .prepare_cached(
            "SELECT host FROM jobs INDEXED BY jobs_one_running_per_host
             WHERE status = 'running' AND cancel_requested = 1",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, StatementStatus, params};

    use super::*;

    /// A claim runs on every hand-out: its statements must stay prepared.
    /// (With `ORDER BY` over the host's index they were parsed again on every
    /// run, which was most of the writer's time under dispatch load.)
    #[test]
    fn claims_do_not_reprepare_their_statements() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::configure(&conn).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        for i in 0..8 {
            conn.execute(
                "INSERT INTO jobs (id, app, repo, git_ref, host, status, deploy, source, created_at)
                 VALUES (?1, 'web', 'acme/web', 'main', ?2, 'pending',
                         '{\"command\":[\"x\"],\"timeout_secs\":1}', 'manual', 0)",
                params![format!("j{i}"), format!("h{}", i % 4)],
            )
            .unwrap();
        }
        let mut handed_out = 0;
        for i in 0..8 {
            if let Claim::Job(_) = claim(&conn, "a", &format!("h{}", i % 4)).unwrap() {
                handed_out += 1;
            }
        }
        assert_eq!(handed_out, 4, "one job per host while the first runs");
        for sql in [PENDING_OF_HOST.to_owned(), claim_sql()] {
            let statement = conn.prepare_cached(&sql).unwrap();
            assert_eq!(statement.get_status(StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}
