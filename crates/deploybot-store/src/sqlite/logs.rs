//! SQL for deploy output: idempotent appends, paged reads, the SSE replay,
//! and retention.

use deploybot_wire::{JobStatus, LogEntry, LogLine, LogStream};
use rusqlite::{Connection, Row, ToSql, params};

use super::leases::check_holder;
use super::{from_ms, to_ms};
use crate::holder::{Held, Holder};
use crate::{AppendedLogs, LogFilter, StoreError, output_cap};

/// SQLite integers are signed; line numbers past i64::MAX cannot occur in practice.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Log columns joined with their job's host and app.
const COLUMNS: &str = "l.id, l.job_id, j.host, j.app, l.line, l.stream, l.at, l.text";

fn from_row(row: &Row) -> rusqlite::Result<LogEntry> {
    let stream: String = row.get(5)?;
    Ok(LogEntry {
        id: row.get(0)?,
        job_id: row.get(1)?,
        host: row.get(2)?,
        app: row.get(3)?,
        line: row.get::<_, i64>(4)?.unsigned_abs(),
        stream: LogStream::parse(&stream).unwrap_or(LogStream::Stdout),
        at: from_ms(row.get(6)?),
        text: row.get(7)?,
    })
}

/// Stores lines of a running job's output; lines already stored (a retried
/// upload) are skipped. Returns the stored entries, for live subscribers.
pub(super) fn append(
    conn: &Connection,
    job_id: &str,
    agent_id: Option<&str>,
    lease: Option<i64>,
    lines: &[LogLine],
    max_bytes: u64,
) -> Result<AppendedLogs, StoreError> {
    let Held { status, host, app } = check_holder(conn, job_id, &Holder { agent_id, lease })?;
    if status != JobStatus::Running {
        return Err(StoreError::Conflict(format!(
            "job {job_id} is {status}; logs are accepted only while it runs"
        )));
    }
    let (stored, cut_at): (i64, Option<i64>) = conn
        .prepare_cached("SELECT log_bytes, log_cut_at FROM jobs WHERE id = ?1")?
        .query_row([job_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    // A line repeated within one upload is a duplicate.
    let mut seen = std::collections::HashSet::with_capacity(lines.len());
    let mut appended = AppendedLogs::default();
    let fresh: Vec<&LogLine> = lines
        .iter()
        .filter(|line| {
            let first = seen.insert(line.line);
            if !first {
                appended.duplicates += 1;
            }
            first
        })
        .collect();
    let fit = output_cap::fit(
        &fresh,
        stored.unsigned_abs(),
        cut_at.map(i64::unsigned_abs),
        max_bytes,
    );
    appended.dropped = fit.dropped;
    let mut insert = conn.prepare_cached(
        "INSERT INTO job_logs (job_id, line, stream, at, text) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (job_id, line) DO NOTHING",
    )?;
    let mut added = 0u64;
    for line in fit.lines.into_iter().chain(fit.marker.as_ref()) {
        let inserted = insert.execute(params![
            job_id,
            saturating_i64(line.line),
            line.stream.as_str(),
            to_ms(line.at),
            line.text
        ])?;
        if inserted == 0 {
            appended.duplicates += 1;
            continue;
        }
        added += line.text.len() as u64;
        appended.entries.push(LogEntry {
            id: conn.last_insert_rowid(),
            job_id: job_id.to_owned(),
            host: host.clone(),
            app: app.clone(),
            line: line.line,
            stream: line.stream,
            // As stored (milliseconds), so live and replayed lines are equal.
            at: from_ms(to_ms(line.at)),
            text: line.text.clone(),
        });
    }
    if added > 0 || fit.cut_at != cut_at.map(i64::unsigned_abs) {
        conn.prepare_cached(
            "UPDATE jobs SET log_bytes = log_bytes + ?2, log_cut_at = ?3 WHERE id = ?1",
        )?
        .execute(params![
            job_id,
            saturating_i64(added),
            fit.cut_at.map(saturating_i64)
        ])?;
    }
    Ok(appended)
}

/// One job's lines after line `after`, in order.
pub(super) fn of_job(
    conn: &Connection,
    job_id: &str,
    after: u64,
    limit: u32,
) -> Result<Vec<LogEntry>, StoreError> {
    let entries = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM job_logs l JOIN jobs j ON j.id = l.job_id
             WHERE l.job_id = ?1 AND l.line > ?2 ORDER BY l.line LIMIT ?3"
        ))?
        .query_map(params![job_id, saturating_i64(after), limit], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(entries)
}

/// Lines stored after entry `after_id` that match `filter`, in order.
pub(super) fn since(
    conn: &Connection,
    after_id: i64,
    filter: &LogFilter,
    limit: u32,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut sql =
        format!("SELECT {COLUMNS} FROM job_logs l JOIN jobs j ON j.id = l.job_id WHERE l.id > ?");
    let mut values: Vec<&dyn ToSql> = vec![&after_id];
    if let Some(job_id) = &filter.job_id {
        sql.push_str(" AND l.job_id = ?");
        values.push(job_id);
    }
    if let Some(host) = &filter.host {
        sql.push_str(" AND j.host = ?");
        values.push(host);
    }
    if let Some(app) = &filter.app {
        sql.push_str(" AND j.app = ?");
        values.push(app);
    }
    sql.push_str(" ORDER BY l.id LIMIT ?");
    values.push(&limit);
    let entries = conn
        .prepare_cached(&sql)?
        .query_map(values.as_slice(), from_row)?
        .collect::<Result<_, _>>()?;
    Ok(entries)
}

/// The newest log entry id (where a live-only stream starts).
pub(super) fn last_id(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM job_logs")?
        .query_row([], |row| row.get(0))?)
}

/// Jobs whose logs retention lets go: finished before `keep_since_ms` and
/// not among the newest `keep_jobs` jobs of their app. A read: run it on a
/// reader, then delete with [`delete_of_job`] in small writes.
pub(super) fn prunable_jobs(
    conn: &Connection,
    keep_jobs: u32,
    keep_since_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let jobs = conn
        .prepare_cached(
            "SELECT j.id FROM (SELECT DISTINCT job_id FROM job_logs) d
             JOIN jobs j ON j.id = d.job_id
             WHERE j.status NOT IN ('pending', 'running')
               AND j.completed_at < ?2
               AND j.seq < coalesce((SELECT k.seq FROM jobs k INDEXED BY jobs_by_app
                                     WHERE k.app = j.app
                                     ORDER BY k.seq DESC LIMIT 1 OFFSET ?1 - 1), 0)",
        )?
        .query_map(params![keep_jobs, keep_since_ms], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(jobs)
}

/// Deletes up to `batch` lines of `job_id`; returns how many went.
pub(super) fn delete_of_job(
    conn: &Connection,
    job_id: &str,
    batch: u32,
) -> Result<u64, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM job_logs WHERE id IN
                 (SELECT id FROM job_logs WHERE job_id = ?1 LIMIT ?2)",
        )?
        .execute(params![job_id, batch])?;
    Ok(deleted as u64)
}
