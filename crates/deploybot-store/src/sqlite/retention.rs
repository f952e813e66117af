//! SQL for pruning old history, and giving the space back to the file
//! system (the database uses `auto_vacuum = INCREMENTAL`, see `mod.rs`).

use rusqlite::{Connection, params};

use crate::StoreError;

/// Deletes up to `batch` finished jobs past retention (and their logs),
/// oldest first; returns how many went. Kept whatever their age: the newest
/// `keep_jobs` of each app, anything finished since `keep_since_ms`, and
/// the newest job and newest successful job of each app on each host.
pub(super) fn delete_old_jobs(
    conn: &Connection,
    keep_jobs: u32,
    keep_since_ms: i64,
    batch: u32,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "DELETE FROM jobs WHERE seq IN (
                 SELECT j.seq FROM jobs j
                 WHERE j.status NOT IN ('pending', 'running')
                   AND coalesce(j.completed_at, j.created_at) < ?2
                   AND j.seq < coalesce((SELECT k.seq FROM jobs k INDEXED BY jobs_by_app
                                         WHERE k.app = j.app
                                         ORDER BY k.seq DESC LIMIT 1 OFFSET ?1 - 1), 0)
                   AND j.seq <> (SELECT max(l.seq) FROM jobs l INDEXED BY jobs_by_host
                                 WHERE l.host = j.host AND l.app = j.app)
                   AND j.seq <> coalesce((SELECT max(s.seq) FROM jobs s INDEXED BY jobs_by_host
                                          WHERE s.host = j.host AND s.app = j.app
                                            AND s.status = 'success'), 0)
                 ORDER BY j.seq LIMIT ?3)
             RETURNING id",
        )?
        .query_map(params![keep_jobs.max(1), keep_since_ms, batch], |row| {
            row.get(0)
        })?
        .collect::<Result<_, _>>()?;
    let mut delete_logs = conn.prepare_cached("DELETE FROM job_logs WHERE job_id = ?1")?;
    for id in &ids {
        delete_logs.execute([id])?;
    }
    Ok(ids.len() as u64)
}

/// Deletes up to `batch` deliveries received before `keep_since_ms` that
/// are not among the newest `keep`; returns how many went.
pub(super) fn delete_old_deliveries(
    conn: &Connection,
    keep: u32,
    keep_since_ms: i64,
    batch: u32,
) -> Result<u64, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM deliveries WHERE seq IN (
                 SELECT seq FROM deliveries
                 WHERE received_at < ?2
                   AND seq < coalesce((SELECT seq FROM deliveries
                                       ORDER BY seq DESC LIMIT 1 OFFSET ?1 - 1), 0)
                 ORDER BY seq LIMIT ?3)",
        )?
        .execute(params![keep.max(1), keep_since_ms, batch])?;
    Ok(deleted as u64)
}

/// Deletes up to `batch` audit entries recorded before `keep_since_ms`
/// that are not among the newest `keep`; returns how many went.
pub(super) fn delete_old_audit(
    conn: &Connection,
    keep: u32,
    keep_since_ms: i64,
    batch: u32,
) -> Result<u64, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM audit WHERE id IN (
                 SELECT id FROM audit
                 WHERE at < ?2
                   AND id < coalesce((SELECT id FROM audit
                                      ORDER BY id DESC LIMIT 1 OFFSET ?1 - 1), 0)
                 ORDER BY id LIMIT ?3)",
        )?
        .execute(params![keep.max(1), keep_since_ms, batch])?;
    Ok(deleted as u64)
}

/// Pages no table uses any more.
pub(super) fn free_pages(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row("PRAGMA freelist_count", [], |row| row.get::<_, i64>(0))? as u64)
}

/// Gives up to `pages` free pages back to the file system.
pub(super) fn vacuum_some(conn: &Connection, pages: u32) -> Result<(), StoreError> {
    // The pragma frees one page per step: step it to the end.
    let mut vacuum = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut steps = vacuum.query([])?;
    while steps.next()?.is_some() {}
    Ok(())
}
