//! Opening a fresh store of each backend for one test.
//!
//! PostgreSQL: each test gets a database of its own, dropped when the test
//! ends, so tests run in parallel without seeing each other. Which server,
//! and when the tests are skipped instead: see `deploybot_test_postgres`.

#![allow(dead_code)] // Each test binary uses a part.

use std::sync::Arc;

use deploybot_store::{NewToken, Store};

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

/// A database made for one test, dropped with [`TestDatabase::drop_now`]
/// (or, if the test failed first, when dropped).
pub struct TestDatabase {
    /// The database's URL.
    pub url: String,
    database: deploybot_test_postgres::Database,
}

impl TestDatabase {
    /// `None` when the PostgreSQL tests are skipped (see
    /// `deploybot_test_postgres`).
    pub async fn create() -> Option<TestDatabase> {
        let database = tokio::task::spawn_blocking(|| {
            deploybot_test_postgres::Database::create("deploybot_test")
        })
        .await
        .unwrap()?;
        Some(TestDatabase {
            url: database.url.clone(),
            database,
        })
    }

    /// Drops the database (and any connection the test left to it).
    pub async fn drop_now(self) {
        let database = self.database;
        tokio::task::spawn_blocking(move || drop(database))
            .await
            .unwrap();
    }
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
        hostname: None,
    }
}
