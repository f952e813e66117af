//! PostgreSQL: a fresh database per test, on the server
//! `DEPLOYBOT_TEST_POSTGRES_URL` names (default: this machine's, as
//! `.ci/postgres.sh` sets it up), created and dropped with psql.

use super::*;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

/// A database of its own, dropped at the end of the test.
pub struct Database {
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl Database {
    /// `None` when the PostgreSQL tests are switched off.
    pub fn create() -> Option<Database> {
        if std::env::var("DEPLOYBOT_TEST_POSTGRES").as_deref() == Ok("skip") {
            return None;
        }
        let admin_url = std::env::var("DEPLOYBOT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("deploybot_cli_{}_{nanos}", std::process::id());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        Some(Database {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

pub fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .status()
        .unwrap_or_else(|err| {
            panic!("psql: {err} (is PostgreSQL's client installed? see .ci/postgres.sh)")
        });
    assert!(status.success(), "psql {sql:?} failed against {url}");
}
