//! Migrations of the PostgreSQL schema.

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use super::now_ms;
use crate::StoreError;

/// Every migration, in order. Append only: a shipped file is never edited.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "trace", include_str!("migrations/0002_trace.sql")),
    (3, "ingest", include_str!("migrations/0003_ingest.sql")),
    (
        4,
        "hardening",
        include_str!("migrations/0004_hardening.sql"),
    ),
];

/// Serializes migrations of controllers starting at once against one database.
const MIGRATION_LOCK: i64 = 0x4442_0000;

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Brings the schema up to date, all in one transaction: PostgreSQL's DDL is
/// transactional, so a failed migration leaves the database as it was.
pub(super) async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let setup = |what: &str, err: sqlx::Error| StoreError::Setup(format!("{what}: {err}"));
    let mut tx = pool
        .begin()
        .await
        .map_err(|err| setup("cannot begin the migration", err))?;

    let encoding: String = sqlx::query_scalar("SHOW server_encoding")
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| setup("cannot read the database encoding", err))?;
    if encoding != "UTF8" {
        return Err(StoreError::Setup(format!(
            "the database's encoding is {encoding}; deploybot needs UTF8 \
             (CREATE DATABASE … ENCODING 'UTF8')"
        )));
    }

    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(|err| setup("cannot lock the schema for migration", err))?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             checksum   TEXT NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(|err| setup("cannot create schema_migrations", err))?;

    let applied: Vec<(i64, String)> =
        sqlx::query("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .map_err(|err| setup("cannot read schema_migrations", err))?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|err| setup("cannot read schema_migrations", err))?;

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
        // Several statements in one file: the simple query protocol runs them all.
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(|err| setup(&format!("migration {version} ({name}) failed"), err))?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(version)
        .bind(name)
        .bind(checksum(sql))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|err| setup("cannot record the migration", err))?;
        tracing::info!(version, name, "applied database migration");
    }
    tx.commit()
        .await
        .map_err(|err| setup("cannot commit the migration", err))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the checksums of shipped migrations: editing one fails this test.
    #[test]
    fn shipped_migrations_are_unchanged() {
        let pinned = [
            (
                1,
                "727afae874d0124d4b5b142bfeb6a14e236e7eda6dc1bb134dce32ade0e56e9e",
            ),
            (
                2,
                "3ec16a482731fa241e3d7faf1b371ed1af70a7dc89040f7b28e63c7195867887",
            ),
            (
                3,
                "d2d4d11747cbdc684443bf2b808712442f96fc58b647649c8ac8fdffe5129018",
            ),
            (
                4,
                "297d4177dd54f9eae08bf58cbb126c8df387b03c8306606fab209e80b531299f",
            ),
        ];
        // A new migration needs its checksum pinned here too.
        assert_eq!(pinned.len(), MIGRATIONS.len(), "pin every migration");
        for ((version, _, sql), (pinned_version, pinned_sum)) in MIGRATIONS.iter().zip(pinned) {
            assert_eq!(*version, pinned_version);
            assert_eq!(checksum(sql), pinned_sum, "migration {version} was edited");
        }
    }
}
