//! SQL for jobs: enqueue (with idempotency and supersede), reads.

use deploybot_wire::{Job, JobStatus};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::{LockSpace, from_ms, lock, lock_key, now_ms, opt_text, text};
use crate::{Enqueued, HostJobs, JobFilter, NewJob, StoreError};

/// The columns [`from_row`] reads, in its order. A macro so that statements
/// can be `concat!`ed into static strings.
macro_rules! job_columns {
    () => {
        "id, app, repo, git_ref, sha, host, status, metadata, deploy, source, delivery_id, \
         attempt, created_at, started_at, completed_at, assigned_agent, exit_code, error, \
         superseded_by, lease, cancel_requested, retry_of, traceparent"
    };
}
pub(super) use job_columns;

/// A stored value the code cannot read: a damaged row surfaces as a database
/// error instead of a panic.
fn bad_value(id: &str, column: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("job {id}: stored {column} is invalid: {err}"))
}

/// Reads a row whose first columns are [`job_columns`].
pub(super) fn from_row(row: &PgRow) -> Result<Job, StoreError> {
    let id: String = row.try_get(0)?;
    let status: String = row.try_get(6)?;
    let metadata: String = row.try_get(7)?;
    let deploy: String = row.try_get(8)?;
    let source: String = row.try_get(9)?;
    let attempt: i64 = row.try_get(11)?;
    Ok(Job {
        app: row.try_get(1)?,
        repo: row.try_get(2)?,
        git_ref: row.try_get(3)?,
        sha: row.try_get(4)?,
        host: row.try_get(5)?,
        status: status
            .parse()
            .map_err(|err| bad_value(&id, "status", err))?,
        metadata: serde_json::from_str(&metadata).map_err(|err| bad_value(&id, "metadata", err))?,
        deploy: serde_json::from_str(&deploy).map_err(|err| bad_value(&id, "deploy", err))?,
        source: source
            .parse()
            .map_err(|err| bad_value(&id, "source", err))?,
        delivery_id: row.try_get(10)?,
        attempt: u32::try_from(attempt).map_err(|err| bad_value(&id, "attempt", err))?,
        created_at: from_ms(row.try_get(12)?),
        started_at: row.try_get::<Option<i64>, _>(13)?.map(from_ms),
        completed_at: row.try_get::<Option<i64>, _>(14)?.map(from_ms),
        assigned_agent: row.try_get(15)?,
        exit_code: row.try_get(16)?,
        error: row.try_get(17)?,
        superseded_by: row.try_get(18)?,
        lease: row.try_get(19)?,
        cancel_requested: row.try_get(20)?,
        pending_reason: None,
        agent_silent_secs: None,
        retry_of: row.try_get(21)?,
        traceparent: row.try_get(22)?,
        id,
    })
}

/// Reads every row as a job.
pub(super) fn from_rows(rows: &[PgRow]) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(from_row).collect()
}

pub(super) async fn by_id(conn: &mut PgConnection, id: &str) -> Result<Option<Job>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = $1"
    ))
    .bind(text(id))
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// A [`NewJob`] with its JSON columns encoded.
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

    /// The job as `deploybot_ingest_v1` reads it (see `deliveries.rs`).
    pub(super) fn to_json(&self) -> serde_json::Value {
        let job = &self.job;
        serde_json::json!({
            "id": text(&job.id),
            "app": text(&job.app),
            "repo": text(&job.repo),
            "git_ref": text(&job.git_ref),
            "sha": opt_text(job.sha.as_deref()),
            "host": text(&job.host),
            "metadata": text(&self.metadata),
            "deploy": text(&self.deploy),
            "source": job.source.as_str(),
            "delivery_id": opt_text(job.delivery_id.as_deref()),
            "attempt": job.attempt,
            "retry_of": opt_text(job.retry_of.as_deref()),
            "traceparent": opt_text(job.traceparent.as_deref()),
        })
    }

    /// The advisory lock under which jobs of this app and host are enqueued.
    pub(super) fn lock_key(&self) -> (i32, i32) {
        lock_key(LockSpace::AppOnHost, &[&self.job.host, &self.job.app])
    }
}

/// Enqueues `new`, unless an open job with the same app, repo, ref, sha and
/// host exists (then that one is returned). A new job supersedes the pending
/// jobs of the same app and host: the newest push wins.
///
/// Takes the app-on-host advisory lock first, so that enqueues of one app on
/// one host, from any instance, check and insert one after the other.
pub(super) async fn enqueue(
    conn: &mut PgConnection,
    encoded: &EncodedJob,
) -> Result<Enqueued, StoreError> {
    lock(conn, &[encoded.lock_key()]).await?;
    let new = &encoded.job;
    // At most one pending and one running job can match; the pending one
    // wins, as in SQLite. Each half reads one partial index (the app's one
    // pending job on the host, the host's one running job), so the cost does
    // not grow with history.
    let existing = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        ", 0 AS preference FROM jobs
         WHERE host = $1 AND status = 'pending' AND app = $2
           AND repo = $3 AND git_ref = $4 AND sha IS NOT DISTINCT FROM $5
         UNION ALL
         SELECT ",
        job_columns!(),
        ", 1 FROM jobs
         WHERE host = $1 AND status = 'running' AND app = $2
           AND repo = $3 AND git_ref = $4 AND sha IS NOT DISTINCT FROM $5
         ORDER BY preference LIMIT 1"
    ))
    .bind(text(&new.host))
    .bind(text(&new.app))
    .bind(text(&new.repo))
    .bind(text(&new.git_ref))
    .bind(opt_text(new.sha.as_deref()))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = existing {
        return Ok(Enqueued {
            job: from_row(&row)?,
            created: false,
            superseded: Vec::new(),
        });
    }

    let now = now_ms();
    let superseded: Vec<String> = sqlx::query_scalar(
        "UPDATE jobs SET status = 'superseded', superseded_by = $1, completed_at = $2,
             error = 'superseded by newer job ' || $1
         WHERE host = $3 AND status = 'pending' AND app = $4
         RETURNING id",
    )
    .bind(text(&new.id))
    .bind(now)
    .bind(text(&new.host))
    .bind(text(&new.app))
    .fetch_all(&mut *conn)
    .await?;

    sqlx::query(
        "INSERT INTO jobs (id, app, repo, git_ref, sha, host, status, metadata, deploy, source,
                           delivery_id, attempt, created_at, retry_of, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(text(&new.id))
    .bind(text(&new.app))
    .bind(text(&new.repo))
    .bind(text(&new.git_ref))
    .bind(opt_text(new.sha.as_deref()))
    .bind(text(&new.host))
    .bind(text(&encoded.metadata))
    .bind(text(&encoded.deploy))
    .bind(new.source.as_str())
    .bind(opt_text(new.delivery_id.as_deref()))
    .bind(i64::from(new.attempt))
    .bind(now)
    .bind(opt_text(new.retry_of.as_deref()))
    .bind(opt_text(new.traceparent.as_deref()))
    .execute(&mut *conn)
    .await?;
    let job = new.pending(from_ms(now));
    Ok(Enqueued {
        job,
        created: true,
        superseded,
    })
}

pub(super) async fn list(
    conn: &mut PgConnection,
    filter: &JobFilter,
) -> Result<Vec<Job>, StoreError> {
    // Only the filters given appear in the statement, so each combination
    // gets a plan that uses its index.
    let mut sql = String::from(concat!("SELECT ", job_columns!(), " FROM jobs WHERE true"));
    let mut values: Vec<&str> = Vec::new();
    let status = filter.status.map(JobStatus::as_str);
    for (column, value) in [
        ("status", status),
        ("host", filter.host.as_deref()),
        ("repo", filter.repo.as_deref()),
        ("app", filter.app.as_deref()),
    ] {
        if let Some(value) = value {
            values.push(value);
            sql.push_str(&format!(" AND {column} = ${}", values.len()));
        }
    }
    if let Some(before) = filter.before.as_deref() {
        values.push(before);
        sql.push_str(&format!(
            " AND seq < (SELECT seq FROM jobs WHERE id = ${})",
            values.len()
        ));
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", values.len() + 1));
    // Safe: the statement is made of the fixed fragments above; every value is bound.
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for value in values {
        query = query.bind(text(value));
    }
    let rows = query.bind(i64::from(filter.limit)).fetch_all(conn).await?;
    from_rows(&rows)
}

pub(super) async fn of_hosts(
    conn: &mut PgConnection,
    hosts: &[String],
) -> Result<Vec<HostJobs>, StoreError> {
    let names: Vec<String> = hosts.iter().map(|h| text(h).into_owned()).collect();
    // Three statements for all hosts, not three per host.
    let running = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE status = 'running' AND host = ANY($1)"
    ))
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    // Each host's newest finished job, found by walking its index backwards.
    let last = sqlx::query(concat!(
        "SELECT j.* FROM unnest($1::text[]) AS h(host)
         CROSS JOIN LATERAL (
             SELECT ",
        job_columns!(),
        " FROM jobs
             WHERE host = h.host AND status IN ('success', 'failed', 'cancelled', 'lost')
               AND started_at IS NOT NULL
             ORDER BY seq DESC LIMIT 1
         ) AS j"
    ))
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let pending: Vec<(String, i64)> = sqlx::query_as(
        "SELECT host, count(*) FROM jobs
         WHERE status = 'pending' AND host = ANY($1) GROUP BY host",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;

    let running = from_rows(&running)?;
    let last = from_rows(&last)?;
    Ok(hosts
        .iter()
        .zip(&names)
        .map(|(host, name)| HostJobs {
            hostname: host.clone(),
            current: running.iter().find(|j| j.host == *name).cloned(),
            last: last.iter().find(|j| j.host == *name).cloned(),
            pending: pending
                .iter()
                .find(|(h, _)| h == name)
                .map_or(0, |(_, n)| n.unsigned_abs()),
        })
        .collect())
}

pub(super) async fn hosts_with_pending(conn: &mut PgConnection) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT host FROM jobs WHERE status = 'pending'")
            .fetch_all(conn)
            .await?,
    )
}
