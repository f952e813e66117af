//! The writer thread and its group commit.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// Runs once the batch's commit is known, to answer the caller.
type Reply = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;
/// One caller's write: runs inside the batch's transaction, returns its reply.
type Op = Box<dyn FnOnce(&Connection) -> Reply + Send>;

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
    /// that transaction is durably committed. If `f` fails, its changes are
    /// rolled back and the rest of the batch is unaffected.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit: &Result<(), StoreError>| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(err) => Err(err.clone()),
                };
                // The caller may have gone away (client disconnected); the
                // write stands either way.
                let _ = answer.send(outcome);
            })
        });
        self.ops.send(op).await.map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT op")?;
    let result = f(conn);
    let end = if result.is_ok() {
        conn.execute_batch("RELEASE op")
    } else {
        conn.execute_batch("ROLLBACK TO op; RELEASE op")
    };
    match (result, end) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(err), _) => Err(err),
        (Ok(_), Err(err)) => Err(err.into()),
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
        replies.extend(batch.drain(..).map(|op| op(&conn)));
        let committed = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if let Err(err) = &committed {
            tracing::error!(error = %err, writes = replies.len(), "commit failed; rolling back");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies.drain(..) {
            reply(&committed);
        }
    }
    // All senders are gone: the store was dropped. Fold the WAL back into the
    // main file so a stopped controller leaves one tidy file.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}
