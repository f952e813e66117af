//! Migrations of the SQLite schema.

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

use crate::StoreError;

/// Every migration, in order. Append only: a shipped file is never edited.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "init", include_str!("migrations/0001_init.sql"))];

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY NOT NULL,
             name       TEXT NOT NULL,
             checksum   TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         ) STRICT",
    )?;
    let applied: Vec<(i64, String)> = conn
        .prepare("SELECT version, checksum FROM schema_migrations ORDER BY version")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;

    for (version, sum) in &applied {
        match MIGRATIONS.iter().find(|(v, _, _)| v == version) {
            None => {
                return Err(StoreError::Setup(format!(
                    "the database has schema version {version}, newer than this deploybot knows; upgrade deploybot"
                )));
            }
            Some((_, name, sql)) if checksum(sql) != *sum => {
                return Err(StoreError::Setup(format!(
                    "migration {version} ({name}) differs from the one applied to this database"
                )));
            }
            Some(_) => {}
        }
    }

    for (version, name, sql) in MIGRATIONS {
        if applied.iter().any(|(v, _)| v == version) {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
            params![version, name, checksum(sql), super::now_ms()],
        )?;
        tx.commit()?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the checksums of shipped migrations: editing one fails this test.
    #[test]
    fn shipped_migrations_are_unchanged() {
        let pinned = [(1, "3d160b9f36ae1c3f")];
        for ((version, _, sql), (pinned_version, pinned_sum)) in MIGRATIONS.iter().zip(pinned) {
            assert_eq!(*version, pinned_version);
            assert!(checksum(sql).starts_with(pinned_sum), "{}", checksum(sql));
        }
    }
}
