//! SQL for agents.

use std::collections::BTreeMap;

use deploybot_wire::{Agent, AgentStatus};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{from_ms, now_ms, text, to_ms};
use crate::{Beat, NewRegistration, StoreError};

macro_rules! agent_columns {
    () => {
        "id, hostname, capabilities, status, registered_at, last_heartbeat"
    };
}

fn from_row(row: &PgRow) -> Result<Agent, StoreError> {
    let capabilities: String = row.try_get(2)?;
    let status: String = row.try_get(3)?;
    Ok(Agent {
        id: row.try_get(0)?,
        hostname: row.try_get(1)?,
        capabilities: serde_json::from_str(&capabilities).unwrap_or_default(),
        status: AgentStatus::parse(&status).unwrap_or(AgentStatus::Online),
        registered_at: from_ms(row.try_get(4)?),
        last_heartbeat: row.try_get::<Option<i64>, _>(5)?.map(from_ms),
    })
}

/// Registers the hostname, or refreshes its registration (keeping its id).
/// Concurrent registrations of one hostname, from any instance, end with one
/// row: the insert waits for the other and then updates it.
pub(super) async fn register(
    conn: &mut PgConnection,
    registration: &NewRegistration,
) -> Result<Agent, StoreError> {
    let capabilities = serde_json::to_string(&registration.capabilities)?;
    let row = sqlx::query(concat!(
        "INSERT INTO agents (id, hostname, capabilities, status, registered_at, last_heartbeat, token_hash)
         VALUES ($1, $2, $3, 'online', $4, $4, $5)
         ON CONFLICT (hostname) DO UPDATE SET
             capabilities = excluded.capabilities,
             status = 'online',
             last_heartbeat = excluded.last_heartbeat,
             token_hash = excluded.token_hash
         RETURNING ",
        agent_columns!()
    ))
    .bind(text(&registration.new_id))
    .bind(text(&registration.hostname))
    .bind(text(&capabilities))
    .bind(now_ms())
    .bind(text(&registration.token_hash))
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

pub(super) async fn all(conn: &mut PgConnection) -> Result<Vec<Agent>, StoreError> {
    // Byte order, as SQLite sorts, whatever the database's locale.
    let rows = sqlx::query(concat!(
        "SELECT ",
        agent_columns!(),
        " FROM agents ORDER BY hostname COLLATE \"C\""
    ))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Agents by hostname, after the host `after`.
pub(super) async fn page(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Agent>, StoreError> {
    // Byte order, as SQLite sorts, whatever the database's locale.
    let rows = sqlx::query(concat!(
        "SELECT ",
        agent_columns!(),
        " FROM agents WHERE $1::text IS NULL OR hostname COLLATE \"C\" > $1
          ORDER BY hostname COLLATE \"C\" LIMIT $2"
    ))
    .bind(after.map(text))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The id of the agent that has `hostname` now (it has a token), if any;
/// its row stays locked until the transaction ends.
pub(super) async fn holder_of(
    conn: &mut PgConnection,
    hostname: &str,
) -> Result<Option<String>, StoreError> {
    let id = sqlx::query_scalar(
        "SELECT id FROM agents WHERE hostname = $1 AND token_hash IS NOT NULL FOR UPDATE",
    )
    .bind(text(hostname))
    .fetch_optional(conn)
    .await?;
    Ok(id)
}

/// The agent, unless it is unknown or revoked.
pub(super) async fn active(
    conn: &mut PgConnection,
    agent_id: &str,
) -> Result<Option<Agent>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        agent_columns!(),
        " FROM agents WHERE id = $1 AND token_hash IS NOT NULL"
    ))
    .bind(text(agent_id))
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Saves last-seen times in one statement. A time never goes back; of
/// several beats of one agent, the newest counts, and a status older than
/// the saved time (another instance saw a newer beat) is not saved.
pub(super) async fn save_heartbeats(
    conn: &mut PgConnection,
    beats: &[Beat],
) -> Result<(), StoreError> {
    let mut latest: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    for beat in beats {
        let at = to_ms(beat.at);
        let status = beat.status.as_str();
        latest
            .entry(&beat.agent_id)
            .and_modify(|newest| {
                if at >= newest.0 {
                    *newest = (at, status);
                }
            })
            .or_insert((at, status));
    }
    if latest.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(latest.len());
    let mut times = Vec::with_capacity(latest.len());
    let mut statuses = Vec::with_capacity(latest.len());
    for (id, (at, status)) in latest {
        ids.push(text(id).into_owned());
        times.push(at);
        statuses.push(status);
    }
    sqlx::query(
        "UPDATE agents AS a
         SET last_heartbeat = greatest(coalesce(a.last_heartbeat, 0), b.at),
             status = CASE WHEN b.at >= coalesce(a.last_heartbeat, 0) THEN b.status ELSE a.status END
         FROM unnest($1::text[], $2::int8[], $3::text[]) AS b(id, at, status)
         WHERE a.id = b.id AND a.token_hash IS NOT NULL",
    )
    .bind(ids)
    .bind(times)
    .bind(statuses)
    .execute(conn)
    .await?;
    Ok(())
}
