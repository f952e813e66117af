//! [`Store::log_feed`](crate::Store::log_feed) on PostgreSQL: every
//! instance's committed lines, in id order, each exactly once.
//!
//! Log ids are taken, and committed, in one order across instances (the
//! log-append advisory lock), so "every line up to id n" is a well-defined
//! prefix. The feed tracks the newest id it published. A local append that
//! directly follows it (no other instance appended in between) is published
//! as it is, without a read; otherwise, and when another instance says it
//! committed lines (a notification), a task reads the lines after the
//! published id from the database and publishes them, retrying until it
//! can. Either way nothing is skipped or published twice.

use std::sync::Arc;
use std::time::Duration;

use deploybot_wire::LogEntry;
use sqlx::PgPool;
use tokio::sync::{Mutex, MutexGuard, broadcast, watch};

use super::logs;
use crate::{LogFilter, StoreError};

/// Log batches buffered for slow feed receivers (they catch up from the database).
const CAPACITY: usize = 4096;
/// Lines read per step when catching up.
const PAGE: u32 = 1000;
/// Wait before reading again after a failed read.
const RETRY: Duration = Duration::from_millis(500);

/// What is known committed that the feed may not have published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Committed {
    /// The newest line id known committed (by another instance, or by this
    /// one when it could not publish directly).
    pub newest: i64,
    /// Counts the times notifications may have been lost: each one makes
    /// the feed read whatever it has not published, whatever `newest` says.
    pub resyncs: u64,
}

#[derive(Debug)]
pub(super) struct Feed {
    sender: broadcast::Sender<Arc<[LogEntry]>>,
    /// The newest line id published. Held by an append from its first
    /// statement until its lines are published, and by a catch-up while it
    /// reads and publishes: publication follows id order.
    published: Arc<Mutex<i64>>,
    /// The task catches up to it.
    wanted: watch::Sender<Committed>,
    /// The published id again, for those who wait for a line to be out.
    progress: Arc<watch::Sender<i64>>,
}

impl Feed {
    /// A feed starting after the newest stored line. Call once this store
    /// listens for other instances' notifications, so none falls in between;
    /// `wanted` is the sender the listener reports commits to.
    pub(super) async fn start(
        pool: PgPool,
        wanted: watch::Sender<Committed>,
        progress: watch::Sender<i64>,
    ) -> Result<Feed, StoreError> {
        // Subscribed before the read: a commit heard of after it wakes the
        // task even if it was heard of before the task started.
        let told = wanted.subscribe();
        let newest = logs::last_id(&mut *pool.acquire().await?).await?;
        progress.send_replace(newest);
        let feed = Feed {
            sender: broadcast::channel(CAPACITY).0,
            published: Arc::new(Mutex::new(newest)),
            wanted,
            progress: Arc::new(progress),
        };
        tokio::spawn(catch_up_when_told(
            pool,
            feed.sender.clone(),
            feed.published.clone(),
            told,
            feed.progress.clone(),
        ));
        Ok(feed)
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<[LogEntry]>> {
        self.sender.subscribe()
    }

    /// Taken before an append starts; hand it to [`publish`](Self::publish).
    pub(super) async fn lock(&self) -> MutexGuard<'_, i64> {
        self.published.lock().await
    }

    /// Publishes a committed append's `entries`, which followed line
    /// `previous` (the newest line before it). If lines this feed has not
    /// published lie in between, the task reads them all, these included.
    pub(super) fn publish(
        &self,
        published: &mut MutexGuard<'_, i64>,
        previous: i64,
        entries: Vec<LogEntry>,
    ) {
        let Some(newest) = entries.last().map(|entry| entry.id) else {
            return;
        };
        if previous <= **published {
            **published = newest;
            // No receiver is fine: nobody is watching.
            let _ = self.sender.send(entries.into());
            self.progress.send_replace(newest);
        } else {
            self.wanted
                .send_modify(|wanted| wanted.newest = wanted.newest.max(newest));
        }
    }
}

/// Publishes the lines after the published id whenever a newer commit is
/// known, until the store (and so every `wanted` sender) is gone.
async fn catch_up_when_told(
    pool: PgPool,
    sender: broadcast::Sender<Arc<[LogEntry]>>,
    published: Arc<Mutex<i64>>,
    mut wanted: watch::Receiver<Committed>,
    progress: Arc<watch::Sender<i64>>,
) {
    let mut resynced = 0;
    while wanted.changed().await.is_ok() {
        loop {
            let target = *wanted.borrow_and_update();
            let mut published = published.lock().await;
            if *published >= target.newest && resynced == target.resyncs {
                break;
            }
            match read_and_publish(&pool, &sender, &mut published).await {
                // Everything committed so far is out, `target` included.
                Ok(()) => {
                    resynced = target.resyncs;
                    progress.send_replace(*published);
                    break;
                }
                Err(err) => {
                    drop(published);
                    tracing::warn!(error = %err, "cannot read new log lines for the live feed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// Reads and publishes every line after `published`, page by page.
async fn read_and_publish(
    pool: &PgPool,
    sender: &broadcast::Sender<Arc<[LogEntry]>>,
    published: &mut i64,
) -> Result<(), StoreError> {
    loop {
        let page = logs::since(
            &mut *pool.acquire().await?,
            *published,
            &LogFilter::default(),
            PAGE,
        )
        .await?;
        let full = page.len() == PAGE as usize;
        if let Some(last) = page.last() {
            *published = last.id;
            let _ = sender.send(page.into());
        }
        if !full {
            return Ok(());
        }
    }
}
