//! PostgreSQL: a fresh database per test (see `deploybot_test_postgres`
//! for which server, and when the tests are skipped instead).

pub use deploybot_test_postgres::{Database, psql};
