//! A small pool of read-only connections, used from blocking tasks.

use std::sync::Mutex;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::StoreError;

pub(super) struct ReadPool {
    idle: std::sync::Arc<Mutex<Vec<Connection>>>,
    available: Semaphore,
}

impl ReadPool {
    pub(super) fn new(conns: Vec<Connection>) -> Self {
        ReadPool {
            available: Semaphore::new(conns.len()),
            idle: std::sync::Arc::new(Mutex::new(conns)),
        }
    }

    /// Runs `f` on an idle connection in a blocking task.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .available
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = self.idle.clone();
        tokio::task::spawn_blocking(move || {
            // A permit guarantees a connection is idle.
            let conn = idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop()
                .ok_or(StoreError::Closed)?;
            let result = f(&conn);
            idle.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|err| StoreError::Database(format!("read task failed: {err}")))?
    }
}
