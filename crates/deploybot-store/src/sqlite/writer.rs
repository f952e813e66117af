//! The writer thread and its group commit.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// Runs once the batch's commit is known, to answer the caller.
type Reply = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;
/// One caller's write: runs inside the batch's transaction and returns its
/// reply, plus whether it failed in a way that may have left partial changes.
type Op = Box<dyn FnOnce(&Connection) -> (Reply, bool) + Send>;

/// The most writes one commit carries. Bounds the latency of the first
/// write in a batch under a flood.
const MAX_BATCH: usize = 512;
/// Writes waiting beyond this make callers wait to enqueue (never fail).
const QUEUE_DEPTH: usize = 8192;

pub(super) struct Writer {
    ops: mpsc::Sender<Op>,
}

impl Writer {
    pub(super) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (ops, queue) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, queue))
            .map_err(|err| StoreError::Setup(format!("cannot start the writer thread: {err}")))?;
        Ok(Writer { ops })
    }

    /// Runs `f` in the writer's next transaction and returns its result once
    /// that transaction is durably committed.
    ///
    /// Contract for `f`: a refusal (`NotFound`, `Conflict`) is decided before
    /// `f` writes anything. Any other error may come after partial writes, so
    /// it rolls back the whole batch and every write in it fails: nothing is
    /// ever half-committed. (Per-write savepoints would allow finer rollback,
    /// but copying each touched page into a savepoint journal was a fifth of
    /// the writer's time.)
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_then(f, |_| {}).await
    }

    /// [`write`](Self::write), and `committed` runs with the result once it
    /// is durable, on the writer thread: successive writes see their
    /// `committed` calls in commit order (which callers, woken in any order,
    /// could not guarantee).
    pub(super) async fn write_then<T, F, C>(&self, f: F, committed: C) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        C: FnOnce(&T) + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = f(conn);
            let poisoned = matches!(
                result,
                Err(StoreError::Database(_) | StoreError::Closed | StoreError::Setup(_))
            );
            let reply: Reply = Box::new(move |commit: &Result<(), StoreError>| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(err) => Err(err.clone()),
                };
                if let Ok(value) = &outcome {
                    committed(value);
                }
                // The caller may have gone away (client disconnected); the
                // write stands either way.
                let _ = answer.send(outcome);
            });
            (reply, poisoned)
        });
        self.ops.send(op).await.map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(conn: Connection, mut queue: mpsc::Receiver<Op>) {
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %err, writes = batch.len(), "cannot begin a write transaction");
            // Dropping an op drops its answer channel: its caller gets an
            // error, and nothing ran outside a transaction.
            batch.clear();
            continue;
        }
        let started = std::time::Instant::now();
        let mut poisoned = false;
        for op in batch.drain(..) {
            let (reply, failed) = op(&conn);
            poisoned |= failed;
            replies.push(reply);
        }
        let ran = started.elapsed();
        let committed = if poisoned {
            let _ = conn.execute_batch("ROLLBACK");
            Err(StoreError::Database(
                "a write in this batch failed; the batch was rolled back".into(),
            ))
        } else {
            conn.execute_batch("COMMIT").map_err(StoreError::from)
        };
        if let Err(err) = &committed {
            tracing::error!(error = %err, writes = replies.len(), "write batch not committed");
            if !poisoned {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        tracing::trace!(writes = replies.len(), ?ran, commit = ?(started.elapsed() - ran), "group commit");
        for reply in replies.drain(..) {
            reply(&committed);
        }
    }
    // All senders are gone: the store was dropped. Fold the WAL back into the
    // main file so a stopped controller leaves one tidy file.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}
