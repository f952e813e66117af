//! SQL for tokens: API and enrollment tokens, and agents' own tokens. Only
//! hashes are stored; callers hash what they are given and look it up.

use deploybot_wire::{TokenInfo, TokenRole};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{from_ms, now_ms, text, to_ms};
use crate::{AgentCredential, NewToken, StoreError};

macro_rules! token_columns {
    () => {
        "id, name, role, apps, single_use, created_at, expires_at, used_at, revoked_at, hostname"
    };
}

fn from_row(row: &PgRow) -> Result<TokenInfo, StoreError> {
    let role: String = row.try_get(2)?;
    let apps: Option<String> = row.try_get(3)?;
    Ok(TokenInfo {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        // The schema's CHECK admits only known roles; `read` is the safe fallback.
        role: TokenRole::parse(&role).unwrap_or(TokenRole::Read),
        apps: apps.and_then(|apps| serde_json::from_str(&apps).ok()),
        single_use: row.try_get(4)?,
        created_at: from_ms(row.try_get(5)?),
        expires_at: row.try_get::<Option<i64>, _>(6)?.map(from_ms),
        used_at: row.try_get::<Option<i64>, _>(7)?.map(from_ms),
        revoked_at: row.try_get::<Option<i64>, _>(8)?.map(from_ms),
        hostname: row.try_get(9)?,
    })
}

pub(super) async fn create(
    conn: &mut PgConnection,
    token: &NewToken,
) -> Result<TokenInfo, StoreError> {
    let apps = token.apps.as_ref().map(serde_json::to_string).transpose()?;
    let row = sqlx::query(concat!(
        "INSERT INTO tokens (id, hash, name, role, apps, single_use, created_at, expires_at, hostname)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING ",
        token_columns!()
    ))
    .bind(text(&token.id))
    .bind(text(&token.hash))
    .bind(text(&token.name))
    .bind(token.role.as_str())
    .bind(apps.as_deref().map(text))
    .bind(token.single_use)
    .bind(now_ms())
    .bind(token.expires_at.map(to_ms))
    .bind(token.hostname.as_deref().map(text))
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

/// Tokens in the order they were made, after the token `after`.
pub(super) async fn page(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        token_columns!(),
        // Byte order, as SQLite sorts, whatever the database's locale.
        " FROM tokens
          WHERE $1::text IS NULL
             OR (created_at, id COLLATE \"C\")
                > (SELECT created_at, id COLLATE \"C\" FROM tokens WHERE id = $1)
          ORDER BY created_at, id COLLATE \"C\" LIMIT $2"
    ))
    .bind(after.map(text))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn by_hash(
    conn: &mut PgConnection,
    hash: &str,
) -> Result<Option<TokenInfo>, StoreError> {
    sqlx::query(concat!(
        "SELECT ",
        token_columns!(),
        " FROM tokens WHERE hash = $1"
    ))
    .bind(text(hash))
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub(super) async fn revoke(conn: &mut PgConnection, id: &str) -> Result<TokenInfo, StoreError> {
    sqlx::query(concat!(
        "UPDATE tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING ",
        token_columns!()
    ))
    .bind(text(id))
    .bind(now_ms())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()?
    .ok_or_else(|| StoreError::NotFound(format!("token {id}")))
}

/// Marks a single-use enrollment token used. Refused when it was used
/// already: two agents racing with one token, on any instances, get one
/// registration (the second update waits for the first and then finds the
/// token used).
pub(super) async fn use_once(conn: &mut PgConnection, id: &str) -> Result<(), StoreError> {
    let used = sqlx::query(
        "UPDATE tokens SET used_at = $2 WHERE id = $1 AND single_use AND used_at IS NULL",
    )
    .bind(text(id))
    .bind(now_ms())
    .execute(conn)
    .await?
    .rows_affected();
    if used == 0 {
        return Err(StoreError::Conflict(format!(
            "enrollment token {id} was already used"
        )));
    }
    Ok(())
}

pub(super) async fn any_admin(conn: &mut PgConnection) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin' AND revoked_at IS NULL)",
    )
    .fetch_one(conn)
    .await?)
}

pub(super) async fn agent_by_token(
    conn: &mut PgConnection,
    hash: &str,
) -> Result<Option<AgentCredential>, StoreError> {
    let agent: Option<(String, String)> =
        sqlx::query_as("SELECT id, hostname FROM agents WHERE token_hash = $1")
            .bind(text(hash))
            .fetch_optional(conn)
            .await?;
    Ok(agent.map(|(agent_id, hostname)| AgentCredential { agent_id, hostname }))
}

/// Forgets the agent's token. Returns whether the agent exists.
pub(super) async fn forget_agent(
    conn: &mut PgConnection,
    agent_id: &str,
) -> Result<(), StoreError> {
    let running: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE assigned_agent = $1 AND status = 'running')",
    )
    .bind(text(agent_id))
    .fetch_one(&mut *conn)
    .await?;
    if running {
        return Err(StoreError::Conflict(format!(
            "agent {agent_id} holds a running job"
        )));
    }
    let deleted = sqlx::query("DELETE FROM agents WHERE id = $1")
        .bind(text(agent_id))
        .execute(conn)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(StoreError::NotFound(format!("agent {agent_id}")));
    }
    Ok(())
}

pub(super) async fn revoke_agent(
    conn: &mut PgConnection,
    agent_id: &str,
) -> Result<bool, StoreError> {
    let changed =
        sqlx::query("UPDATE agents SET token_hash = NULL, status = 'offline' WHERE id = $1")
            .bind(text(agent_id))
            .execute(conn)
            .await?
            .rows_affected();
    Ok(changed > 0)
}
