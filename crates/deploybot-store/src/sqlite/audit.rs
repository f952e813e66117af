//! SQL for the audit log.

use deploybot_wire::AuditEntry;
use rusqlite::{Connection, Row, params};

use super::{from_ms, now_ms};
use crate::{NewAudit, StoreError};

fn from_row(row: &Row) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.get(0)?,
        at: from_ms(row.get(1)?),
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        address: row.get(5)?,
        result: row.get(6)?,
    })
}

pub(super) fn record(conn: &Connection, entry: &NewAudit) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, address, result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        now_ms(),
        entry.actor,
        entry.action,
        entry.target,
        entry.address,
        entry.result,
    ])?;
    Ok(())
}

/// Newest first; `before` pages back.
pub(super) fn recent(
    conn: &Connection,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<AuditEntry>, StoreError> {
    let entries = conn
        .prepare_cached(
            "SELECT id, at, actor, action, target, address, result FROM audit
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?
        .query_map(params![before.unwrap_or(i64::MAX), limit], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(entries)
}
