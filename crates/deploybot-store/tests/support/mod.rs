//! Opening a fresh store of each backend for one test.
//!
//! PostgreSQL: each test gets a database of its own, created on the server
//! `DEPLOYBOT_TEST_POSTGRES_URL` names (default: the local server,
//! `postgres://postgres@127.0.0.1:5432/test`, which `.ci/postgres.sh`
//! starts) and dropped when the test ends, so tests run in parallel without
//! seeing each other. A server that cannot be reached fails the test with a
//! message saying what to do; `DEPLOYBOT_TEST_POSTGRES=skip` skips the
//! PostgreSQL tests instead.

#![allow(dead_code)] // Each test binary uses a part.

use std::sync::Arc;

use deploybot_store::{NewToken, Store};
use sqlx::Connection;

/// Where the PostgreSQL tests create their databases when the environment
/// says nothing. No TLS on loopback: unoptimized test builds spend most of
/// their time in TLS otherwise.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

pub struct TestStore {
    pub store: Arc<dyn Store>,
    /// Opens the same database again.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/q.db", dir.path().display());
    let store = deploybot_store::open(&url).await.unwrap();
    TestStore {
        store,
        url,
        _dir: Some(dir),
    }
}

/// A store on a fresh PostgreSQL database, and that database (drop it with
/// [`TestDatabase::drop_now`] once the store is gone), or `None` when
/// PostgreSQL tests are skipped.
pub async fn postgres() -> Option<(TestStore, TestDatabase)> {
    let database = TestDatabase::create().await?;
    let url = database.url.clone();
    let store = deploybot_store::open(&url).await.unwrap();
    Some((
        TestStore {
            store,
            url,
            _dir: None,
        },
        database,
    ))
}

/// A database made for one test. [`drop_now`](Self::drop_now) drops it; if
/// the test failed first, `Drop` does.
pub struct TestDatabase {
    /// The database's URL.
    pub url: String,
    server_url: String,
    name: String,
    dropped: bool,
}

impl TestDatabase {
    /// `None` when `DEPLOYBOT_TEST_POSTGRES=skip`.
    pub async fn create() -> Option<TestDatabase> {
        if std::env::var("DEPLOYBOT_TEST_POSTGRES").as_deref() == Ok("skip") {
            eprintln!("DEPLOYBOT_TEST_POSTGRES=skip: not testing the PostgreSQL backend");
            return None;
        }
        let server_url = std::env::var("DEPLOYBOT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let mut admin = sqlx::PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "cannot connect to PostgreSQL at {} for the store's tests: {err}\n\
                     Start the local server with `.ci/postgres.sh`, point \
                     DEPLOYBOT_TEST_POSTGRES_URL at another one, or set \
                     DEPLOYBOT_TEST_POSTGRES=skip to skip the PostgreSQL tests.",
                    deploybot_store::redact_url(&server_url)
                )
            });
        let name = format!("deploybot_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|err| panic!("cannot create the test database {name}: {err}"));
        let _ = admin.close().await;
        Some(TestDatabase {
            url: with_database(&server_url, &name),
            server_url,
            name,
            dropped: false,
        })
    }

    /// Drops the database once the test's connections are gone (a forced
    /// drop of a database in use waits in steps of 100 ms).
    pub async fn drop_now(mut self) {
        drop_database(&self.server_url, &self.name).await.unwrap();
        self.dropped = true;
    }
}

async fn drop_database(server_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = sqlx::PgConnection::connect(server_url).await?;
    for _ in 0..100 {
        let connected: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(name)
                .fetch_one(&mut admin)
                .await?;
        if connected == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread of its own, with a runtime of its own, drops the database.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(sqlx::Error::Io)?
                .block_on(drop_database(&server_url, &name))
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop the test database {}: {err}", self.name);
        }
    }
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &base[..authority_end])
}

/// A token whose hash is `hash-of-{id}`.
pub fn token(id: &str, role: deploybot_wire::TokenRole, single_use: bool) -> NewToken {
    NewToken {
        id: id.into(),
        hash: format!("hash-of-{id}"),
        name: format!("token {id}"),
        role,
        apps: None,
        single_use,
        expires_at: None,
    }
}
