//! SQL for pruning old history. (PostgreSQL's autovacuum makes the space
//! of deleted rows reusable; nothing more is needed here.)

use sqlx::PgConnection;

use crate::StoreError;

/// Deletes up to `batch` finished jobs past retention (and their logs),
/// oldest first; returns how many went. Kept whatever their age: the newest
/// `keep_jobs` of each app, anything finished since `keep_since_ms`, and
/// the newest job and newest successful job of each app on each host.
pub(super) async fn delete_old_jobs(
    conn: &mut PgConnection,
    keep_jobs: u32,
    keep_since_ms: i64,
    batch: u32,
) -> Result<u64, StoreError> {
    let deleted: i64 = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM jobs WHERE seq IN (
                 SELECT j.seq FROM jobs j
                 WHERE j.status NOT IN ('pending', 'running')
                   AND coalesce(j.completed_at, j.created_at) < $2
                   AND j.seq < coalesce((SELECT k.seq FROM jobs k
                                         WHERE k.app = j.app
                                         ORDER BY k.seq DESC LIMIT 1 OFFSET $1 - 1), 0)
                   AND j.seq <> (SELECT max(l.seq) FROM jobs l
                                 WHERE l.host = j.host AND l.app = j.app)
                   AND j.seq <> coalesce((SELECT max(s.seq) FROM jobs s
                                          WHERE s.host = j.host AND s.app = j.app
                                            AND s.status = 'success'), 0)
                 ORDER BY j.seq LIMIT $3)
             RETURNING id),
         logs AS (DELETE FROM job_logs WHERE job_id IN (SELECT id FROM gone))
         SELECT count(*) FROM gone",
    )
    .bind(i64::from(keep_jobs.max(1)))
    .bind(keep_since_ms)
    .bind(i64::from(batch))
    .fetch_one(conn)
    .await?;
    Ok(deleted as u64)
}

/// Deletes up to `batch` deliveries received before `keep_since_ms` that
/// are not among the newest `keep`; returns how many went.
pub(super) async fn delete_old_deliveries(
    conn: &mut PgConnection,
    keep: u32,
    keep_since_ms: i64,
    batch: u32,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM deliveries WHERE seq IN (
             SELECT seq FROM deliveries
             WHERE received_at < $2
               AND seq < coalesce((SELECT seq FROM deliveries
                                   ORDER BY seq DESC LIMIT 1 OFFSET $1 - 1), 0)
             ORDER BY seq LIMIT $3)",
    )
    .bind(i64::from(keep.max(1)))
    .bind(keep_since_ms)
    .bind(i64::from(batch))
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes up to `batch` audit entries recorded before `keep_since_ms`
/// that are not among the newest `keep`; returns how many went.
pub(super) async fn delete_old_audit(
    conn: &mut PgConnection,
    keep: u32,
    keep_since_ms: i64,
    batch: u32,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM audit WHERE id IN (
             SELECT id FROM audit
             WHERE at < $2
               AND id < coalesce((SELECT id FROM audit
                                  ORDER BY id DESC LIMIT 1 OFFSET $1 - 1), 0)
             ORDER BY id LIMIT $3)",
    )
    .bind(i64::from(keep.max(1)))
    .bind(keep_since_ms)
    .bind(i64::from(batch))
    .execute(conn)
    .await?
    .rows_affected())
}
