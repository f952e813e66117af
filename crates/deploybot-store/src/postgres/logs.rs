//! SQL for deploy output: idempotent appends, paged reads, the SSE replay,
//! and retention.

use std::collections::{HashMap, HashSet};

use deploybot_wire::{JobStatus, LogEntry, LogLine, LogStream};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::leases::{RowLock, check_holder};
use super::{LockSpace, from_ms, lock, lock_key, text, to_ms};
use crate::holder::{Held, Holder};
use crate::{AppendedLogs, LogFilter, StoreError, output_cap};

/// PostgreSQL integers are signed; line numbers past i64::MAX cannot occur in practice.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Log columns joined with their job's host and app.
macro_rules! log_columns {
    () => {
        "l.id, l.job_id, j.host, j.app, l.line, l.stream, l.at, l.text"
    };
}

fn from_row(row: &PgRow) -> Result<LogEntry, StoreError> {
    let stream: String = row.try_get(5)?;
    Ok(LogEntry {
        id: row.try_get(0)?,
        job_id: row.try_get(1)?,
        host: row.try_get(2)?,
        app: row.try_get(3)?,
        line: row.try_get::<i64, _>(4)?.unsigned_abs(),
        stream: LogStream::parse(&stream).unwrap_or(LogStream::Stdout),
        at: from_ms(row.try_get(6)?),
        text: row.try_get(7)?,
    })
}

/// Stores lines of a running job's output; lines already stored (a retried
/// upload) are skipped. Returns the stored entries in id order, for live
/// subscribers, and the newest line id before them (0 when nothing was
/// stored: then nothing is published either).
///
/// Holds the log-append advisory lock until the transaction ends, so that
/// appends from every instance take their ids, and commit, in one order: a
/// reader that saw id n never later finds a new line below n.
pub(super) async fn append(
    conn: &mut PgConnection,
    job_id: &str,
    agent_id: Option<&str>,
    lease: Option<i64>,
    lines: &[LogLine],
    max_bytes: u64,
) -> Result<(AppendedLogs, i64), StoreError> {
    let Held { status, host, app } = check_holder(
        conn,
        job_id,
        &Holder { agent_id, lease },
        // Appends of one job may run together; a report waits for them.
        RowLock::Share,
    )
    .await?;
    if status != JobStatus::Running {
        return Err(StoreError::Conflict(format!(
            "job {job_id} is {status}; logs are accepted only while it runs"
        )));
    }

    let mut appended = AppendedLogs::default();
    // A line repeated within one upload is a duplicate, as it is in SQLite.
    let mut seen = HashSet::with_capacity(lines.len());
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
    if fresh.is_empty() {
        return Ok((appended, 0));
    }

    lock(conn, &[lock_key(LockSpace::LogAppend, &[])]).await?;
    // Under the lock, which serializes every append: how much of the job's
    // output is stored, and where it was cut.
    let (stored, cut_at): (i64, Option<i64>) =
        sqlx::query_as("SELECT log_bytes, log_cut_at FROM jobs WHERE id = $1")
            .bind(text(job_id))
            .fetch_one(&mut *conn)
            .await?;
    let fit = output_cap::fit(
        &fresh,
        stored.unsigned_abs(),
        cut_at.map(i64::unsigned_abs),
        max_bytes,
    );
    appended.dropped = fit.dropped;
    let fresh: Vec<&LogLine> = fit
        .lines
        .iter()
        .copied()
        .chain(fit.marker.as_ref())
        .collect();
    if fresh.is_empty() {
        return Ok((appended, 0));
    }
    // Every line up to this one is committed, and the lines stored next
    // follow it (the live feed publishes them directly if it has published
    // it).
    let previous = last_id(conn).await?;
    let numbers: Vec<i64> = fresh.iter().map(|l| saturating_i64(l.line)).collect();
    let streams: Vec<&str> = fresh.iter().map(|l| l.stream.as_str()).collect();
    let times: Vec<i64> = fresh.iter().map(|l| to_ms(l.at)).collect();
    let texts: Vec<String> = fresh.iter().map(|l| text(&l.text).into_owned()).collect();
    let inserted: Vec<(i64, i64)> = sqlx::query_as(
        "INSERT INTO job_logs (job_id, line, stream, at, text)
         SELECT $1, l.line, l.stream, l.at, l.text
         FROM unnest($2::int8[], $3::text[], $4::int8[], $5::text[])
              WITH ORDINALITY AS l(line, stream, at, text, n)
         ORDER BY l.n
         ON CONFLICT (job_id, line) DO NOTHING
         RETURNING id, line",
    )
    .bind(text(job_id))
    .bind(&numbers)
    .bind(&streams)
    .bind(&times)
    .bind(&texts)
    .fetch_all(&mut *conn)
    .await?;

    let ids: HashMap<i64, i64> = inserted.into_iter().map(|(id, line)| (line, id)).collect();
    let mut added = 0u64;
    for ((line, number), stored_text) in fresh.into_iter().zip(numbers).zip(texts) {
        let Some(&id) = ids.get(&number) else {
            appended.duplicates += 1;
            continue;
        };
        added += stored_text.len() as u64;
        appended.entries.push(LogEntry {
            id,
            job_id: job_id.to_owned(),
            host: host.clone(),
            app: app.clone(),
            line: line.line,
            stream: line.stream,
            // As stored (milliseconds), so live and replayed lines are equal.
            at: from_ms(to_ms(line.at)),
            text: stored_text,
        });
    }
    appended.entries.sort_by_key(|entry| entry.id);
    if added > 0 || fit.cut_at != cut_at.map(i64::unsigned_abs) {
        sqlx::query("UPDATE jobs SET log_bytes = log_bytes + $2, log_cut_at = $3 WHERE id = $1")
            .bind(text(job_id))
            .bind(saturating_i64(added))
            .bind(fit.cut_at.map(saturating_i64))
            .execute(&mut *conn)
            .await?;
    }
    Ok((appended, previous))
}

/// One job's lines after line `after`, in order.
pub(super) async fn of_job(
    conn: &mut PgConnection,
    job_id: &str,
    after: u64,
    limit: u32,
) -> Result<Vec<LogEntry>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        log_columns!(),
        " FROM job_logs l JOIN jobs j ON j.id = l.job_id
         WHERE l.job_id = $1 AND l.line > $2 ORDER BY l.line LIMIT $3"
    ))
    .bind(text(job_id))
    .bind(saturating_i64(after))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Lines stored after entry `after_id` that match `filter`, in order.
pub(super) async fn since(
    conn: &mut PgConnection,
    after_id: i64,
    filter: &LogFilter,
    limit: u32,
) -> Result<Vec<LogEntry>, StoreError> {
    // Only the filters given appear in the statement, so each combination
    // gets a plan of its own.
    let mut sql = String::from(concat!(
        "SELECT ",
        log_columns!(),
        " FROM job_logs l JOIN jobs j ON j.id = l.job_id WHERE l.id > $1"
    ));
    let mut values: Vec<&str> = Vec::new();
    for (column, value) in [
        ("l.job_id", filter.job_id.as_deref()),
        ("j.host", filter.host.as_deref()),
        ("j.app", filter.app.as_deref()),
    ] {
        if let Some(value) = value {
            values.push(value);
            sql.push_str(&format!(" AND {column} = ${}", values.len() + 1));
        }
    }
    sql.push_str(&format!(" ORDER BY l.id LIMIT ${}", values.len() + 2));
    // Safe: the statement is made of the fixed fragments above; every value is bound.
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(after_id);
    for value in values {
        query = query.bind(text(value));
    }
    let rows = query.bind(i64::from(limit)).fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}

/// The newest log entry id (where a live-only stream starts).
pub(super) async fn last_id(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(id), 0)::int8 FROM job_logs")
            .fetch_one(conn)
            .await?,
    )
}

/// Jobs whose logs retention lets go: finished before `keep_since_ms` and
/// not among the newest `keep_jobs` jobs of their app. Then delete with
/// [`delete_of_job`] in small writes.
pub(super) async fn prunable_jobs(
    conn: &mut PgConnection,
    keep_jobs: u32,
    keep_since_ms: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT j.id FROM (SELECT DISTINCT job_id FROM job_logs) d
         JOIN jobs j ON j.id = d.job_id
         WHERE j.status NOT IN ('pending', 'running')
           AND j.completed_at < $2
           AND j.seq < coalesce((SELECT k.seq FROM jobs k
                                 WHERE k.app = j.app
                                 ORDER BY k.seq DESC LIMIT 1 OFFSET $1 - 1), 0)",
    )
    .bind(i64::from(keep_jobs))
    .bind(keep_since_ms)
    .fetch_all(conn)
    .await?)
}

/// Deletes up to `batch` lines of `job_id`; returns how many went.
pub(super) async fn delete_of_job(
    conn: &mut PgConnection,
    job_id: &str,
    batch: u32,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM job_logs WHERE id IN
             (SELECT id FROM job_logs WHERE job_id = $1 LIMIT $2)",
    )
    .bind(text(job_id))
    .bind(i64::from(batch))
    .execute(conn)
    .await?
    .rows_affected())
}
