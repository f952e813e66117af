//! Migrations of the SQLite schema.

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

use crate::StoreError;

/// Every migration, in order. Append only: a shipped file is never edited.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "auth", include_str!("migrations/0002_auth.sql")),
    (3, "trace", include_str!("migrations/0003_trace.sql")),
    (
        4,
        "hardening",
        include_str!("migrations/0004_hardening.sql"),
    ),
];

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
        let pinned = [
            (
                1,
                "037874db8fab02f1209e1695cf483f48923bff290b75a46da59346647ee8e88a",
            ),
            (
                2,
                "2a0de6b73a04b8a7e568004c4882d60e5ae55ddd1b311bdce8da8397a1dcae7c",
            ),
            (
                3,
                "28cccda3ecec93e41fb186e4a91c79ab4143b632438a770c20c8be4a3ca219ce",
            ),
            (
                4,
                "af0081d6df491c16cb4015b236c6f24dd45bbfe4024a6a7d1366ffddb8fb96fd",
            ),
        ];
        // A new migration needs its checksum pinned here too.
        assert_eq!(pinned.len(), MIGRATIONS.len(), "pin every migration");
        for ((version, _, sql), (pinned_version, pinned_sum)) in MIGRATIONS.iter().zip(pinned) {
            assert_eq!(*version, pinned_version);
            // A new migration needs its checksum pinned here too.
            assert_eq!(checksum(sql), pinned_sum, "migration {version} was edited");
        }
    }
}

#[cfg(test)]
mod invariants {
    use rusqlite::Connection;

    fn migrated() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::migrate(&mut conn).unwrap();
        (dir, conn)
    }

    fn insert(conn: &Connection, id: &str, host: &str, status: &str) -> rusqlite::Result<usize> {
        conn.execute(
            "INSERT INTO jobs (id, app, repo, git_ref, host, status, deploy, source, created_at)
             VALUES (?1, 'web', 'acme/web', 'main', ?2, ?3, '{}', 'manual', 0)",
            [id, host, status],
        )
    }

    /// The one-running-job-per-host rule holds even for SQL that bypasses
    /// the store's code.
    #[test]
    fn the_database_refuses_a_second_running_job_on_a_host() {
        let (_dir, conn) = migrated();
        insert(&conn, "a", "h1", "running").unwrap();
        insert(&conn, "b", "h2", "running").unwrap();
        insert(&conn, "c", "h1", "pending").unwrap();
        let second = insert(&conn, "d", "h1", "running");
        assert!(second.is_err(), "{second:?}");
        let promoted = conn.execute("UPDATE jobs SET status = 'running' WHERE id = 'c'", []);
        assert!(promoted.is_err(), "{promoted:?}");
    }

    #[test]
    fn unknown_statuses_are_refused() {
        let (_dir, conn) = migrated();
        assert!(insert(&conn, "a", "h1", "done").is_err());
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let (_dir, mut conn) = migrated();
        super::migrate(&mut conn).unwrap();
        let applied: i64 = conn
            .query_row("SELECT count(*) FROM schema_migrations", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(applied, super::MIGRATIONS.len() as i64);
    }
}
