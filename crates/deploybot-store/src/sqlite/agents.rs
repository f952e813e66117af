//! SQL for agents.

use deploybot_wire::{Agent, AgentStatus};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{from_ms, now_ms, to_ms};
use crate::{Beat, NewRegistration, StoreError};

const COLUMNS: &str = "id, hostname, capabilities, status, registered_at, last_heartbeat";

fn from_row(row: &Row) -> rusqlite::Result<Agent> {
    let capabilities: String = row.get(2)?;
    let status: String = row.get(3)?;
    Ok(Agent {
        id: row.get(0)?,
        hostname: row.get(1)?,
        capabilities: serde_json::from_str(&capabilities).unwrap_or_default(),
        status: AgentStatus::parse(&status).unwrap_or(AgentStatus::Online),
        registered_at: from_ms(row.get(4)?),
        last_heartbeat: row.get::<_, Option<i64>>(5)?.map(from_ms),
    })
}

pub(super) fn register(
    conn: &Connection,
    registration: &NewRegistration,
) -> Result<Agent, StoreError> {
    let now = now_ms();
    let capabilities = serde_json::to_string(&registration.capabilities)?;
    let agent = conn
        .prepare_cached(&format!(
            "INSERT INTO agents (id, hostname, capabilities, status, registered_at, last_heartbeat, token_hash)
             VALUES (?1, ?2, ?3, 'online', ?4, ?4, ?5)
             ON CONFLICT (hostname) DO UPDATE SET
                 capabilities = excluded.capabilities,
                 status = 'online',
                 last_heartbeat = excluded.last_heartbeat,
                 token_hash = excluded.token_hash
             RETURNING {COLUMNS}"
        ))?
        .query_row(
            params![
                registration.new_id,
                registration.hostname,
                capabilities,
                now,
                registration.token_hash
            ],
            from_row,
        )?;
    Ok(agent)
}

pub(super) fn all(conn: &Connection) -> Result<Vec<Agent>, StoreError> {
    let agents = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM agents ORDER BY hostname"))?
        .query_map([], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(agents)
}

/// Agents by hostname, after the host `after`.
pub(super) fn page(
    conn: &Connection,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Agent>, StoreError> {
    let agents = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM agents WHERE ?1 IS NULL OR hostname > ?1
             ORDER BY hostname LIMIT ?2"
        ))?
        .query_map(params![after, limit], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(agents)
}

/// The id of the agent that has `hostname` now (it has a token), if any.
pub(super) fn holder_of(conn: &Connection, hostname: &str) -> Result<Option<String>, StoreError> {
    let id = conn
        .prepare_cached("SELECT id FROM agents WHERE hostname = ?1 AND token_hash IS NOT NULL")?
        .query_row([hostname], |row| row.get(0))
        .optional()?;
    Ok(id)
}

/// The agent, unless it is unknown or revoked.
pub(super) fn active(conn: &Connection, agent_id: &str) -> Result<Option<Agent>, StoreError> {
    let agent = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM agents WHERE id = ?1 AND token_hash IS NOT NULL"
        ))?
        .query_row([agent_id], from_row)
        .optional()?;
    Ok(agent)
}

/// A time never goes back; a status older than the saved time is not saved.
pub(super) fn save_heartbeats(conn: &Connection, beats: &[Beat]) -> Result<(), StoreError> {
    let mut update = conn.prepare_cached(
        "UPDATE agents SET
             status = CASE WHEN ?2 >= coalesce(last_heartbeat, 0) THEN ?3 ELSE status END,
             last_heartbeat = max(coalesce(last_heartbeat, 0), ?2)
         WHERE id = ?1 AND token_hash IS NOT NULL",
    )?;
    for beat in beats {
        update.execute(params![beat.agent_id, to_ms(beat.at), beat.status.as_str()])?;
    }
    Ok(())
}
