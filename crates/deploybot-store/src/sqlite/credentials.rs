//! SQL for tokens: API and enrollment tokens, and agents' own tokens. Only
//! hashes are stored; callers hash what they are given and look it up.

use deploybot_wire::{TokenInfo, TokenRole};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{from_ms, now_ms, to_ms};
use crate::{AgentCredential, NewToken, StoreError};

const COLUMNS: &str =
    "id, name, role, apps, single_use, created_at, expires_at, used_at, revoked_at, hostname";

fn from_row(row: &Row) -> rusqlite::Result<TokenInfo> {
    let role: String = row.get(2)?;
    let apps: Option<String> = row.get(3)?;
    Ok(TokenInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        // The schema's CHECK admits only known roles; `read` is the safe fallback.
        role: TokenRole::parse(&role).unwrap_or(TokenRole::Read),
        apps: apps.and_then(|apps| serde_json::from_str(&apps).ok()),
        single_use: row.get(4)?,
        created_at: from_ms(row.get(5)?),
        expires_at: row.get::<_, Option<i64>>(6)?.map(from_ms),
        used_at: row.get::<_, Option<i64>>(7)?.map(from_ms),
        revoked_at: row.get::<_, Option<i64>>(8)?.map(from_ms),
        hostname: row.get(9)?,
    })
}

pub(super) fn create(conn: &Connection, token: &NewToken) -> Result<TokenInfo, StoreError> {
    let apps = token.apps.as_ref().map(serde_json::to_string).transpose()?;
    let info = conn
        .prepare_cached(&format!(
            "INSERT INTO tokens (id, hash, name, role, apps, single_use, created_at, expires_at, hostname)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             RETURNING {COLUMNS}"
        ))?
        .query_row(
            params![
                token.id,
                token.hash,
                token.name,
                token.role.as_str(),
                apps,
                token.single_use,
                now_ms(),
                token.expires_at.map(to_ms),
                token.hostname,
            ],
            from_row,
        )?;
    Ok(info)
}

/// Tokens in the order they were made, after the token `after`.
pub(super) fn page(
    conn: &Connection,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<TokenInfo>, StoreError> {
    let tokens = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tokens
             WHERE ?1 IS NULL OR (created_at, id) > (SELECT created_at, id FROM tokens WHERE id = ?1)
             ORDER BY created_at, id LIMIT ?2"
        ))?
        .query_map(params![after, limit], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(tokens)
}

pub(super) fn by_hash(conn: &Connection, hash: &str) -> Result<Option<TokenInfo>, StoreError> {
    let token = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE hash = ?1"))?
        .query_row([hash], from_row)
        .optional()?;
    Ok(token)
}

pub(super) fn revoke(conn: &Connection, id: &str) -> Result<TokenInfo, StoreError> {
    conn.prepare_cached(&format!(
        "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1 RETURNING {COLUMNS}"
    ))?
    .query_row(params![id, now_ms()], from_row)
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("token {id}")))
}

/// Marks a single-use enrollment token used. Refused, before anything is
/// written, when it was used already: two agents racing with one token get
/// one registration.
pub(super) fn use_once(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let used = conn
        .prepare_cached(
            "UPDATE tokens SET used_at = ?2 WHERE id = ?1 AND single_use = 1 AND used_at IS NULL",
        )?
        .execute(params![id, now_ms()])?;
    if used == 0 {
        return Err(StoreError::Conflict(format!(
            "enrollment token {id} was already used"
        )));
    }
    Ok(())
}

pub(super) fn any_admin(conn: &Connection) -> Result<bool, StoreError> {
    let any = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin' AND revoked_at IS NULL)",
        )?
        .query_row([], |row| row.get(0))?;
    Ok(any)
}

pub(super) fn agent_by_token(
    conn: &Connection,
    hash: &str,
) -> Result<Option<AgentCredential>, StoreError> {
    let agent = conn
        .prepare_cached("SELECT id, hostname FROM agents WHERE token_hash = ?1")?
        .query_row([hash], |row| {
            Ok(AgentCredential {
                agent_id: row.get(0)?,
                hostname: row.get(1)?,
            })
        })
        .optional()?;
    Ok(agent)
}

/// Forgets the agent's token. Returns whether the agent exists.
pub(super) fn forget_agent(conn: &Connection, agent_id: &str) -> Result<(), StoreError> {
    let running: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE assigned_agent = ?1 AND status = 'running')",
        )?
        .query_row([agent_id], |row| row.get(0))?;
    if running {
        return Err(StoreError::Conflict(format!(
            "agent {agent_id} holds a running job"
        )));
    }
    let deleted = conn
        .prepare_cached("DELETE FROM agents WHERE id = ?1")?
        .execute([agent_id])?;
    if deleted == 0 {
        return Err(StoreError::NotFound(format!("agent {agent_id}")));
    }
    Ok(())
}

pub(super) fn revoke_agent(conn: &Connection, agent_id: &str) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE agents SET token_hash = NULL, status = 'offline' WHERE id = ?1")?
        .execute([agent_id])?;
    Ok(changed > 0)
}
