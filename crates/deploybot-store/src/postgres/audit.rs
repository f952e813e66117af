//! SQL for the audit log.

use deploybot_wire::AuditEntry;
use sqlx::PgConnection;

use super::{from_ms, now_ms, opt_text, text};
use crate::{NewAudit, StoreError};

pub(super) async fn record(conn: &mut PgConnection, entry: &NewAudit) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, actor, action, target, address, result)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now_ms())
    .bind(text(&entry.actor))
    .bind(text(&entry.action))
    .bind(text(&entry.target))
    .bind(opt_text(entry.address.as_deref()))
    .bind(text(&entry.result))
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first; `before` pages back.
pub(super) async fn recent(
    conn: &mut PgConnection,
    limit: u32,
    before: Option<i64>,
) -> Result<Vec<AuditEntry>, StoreError> {
    type Row = (i64, i64, String, String, String, Option<String>, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, at, actor, action, target, address, result FROM audit
         WHERE id < $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, at, actor, action, target, address, result)| AuditEntry {
                id,
                at: from_ms(at),
                actor,
                action,
                target,
                address,
                result,
            },
        )
        .collect())
}
