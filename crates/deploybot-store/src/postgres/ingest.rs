//! Group commit of webhook deliveries.
//!
//! A webhook's transaction holds the advisory locks of its apps on their
//! hosts until it commits, so deliveries of one app, from every instance,
//! run one after the other, each waiting for the previous one's WAL flush.
//! One task per store therefore records all the deliveries that arrived
//! while its previous transaction ran in one transaction of a few round
//! trips (`deploybot_ingest_v1`), commits once and only then answers each
//! caller: under load, many webhooks share a lock, a statement and a flush.
//! Alone, a delivery still commits at once.

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::deliveries::{self, EncodedDelivery};
use super::events::Events;
use crate::{DeliveryOutcome, StoreError};

/// The most deliveries one transaction records: bounds the wait of the
/// first one in a batch under a flood.
const MAX_BATCH: usize = 128;
/// The most advisory locks (one per delivery, one per app on a host) one
/// transaction takes, well within PostgreSQL's shared lock table (64 per
/// allowed connection by default). A larger delivery still goes, alone.
const MAX_LOCKS: usize = 1024;
/// Deliveries waiting beyond this make callers wait to hand theirs in.
const QUEUE_DEPTH: usize = 4096;

struct Request {
    delivery: EncodedDelivery,
    answer: oneshot::Sender<Result<DeliveryOutcome, StoreError>>,
}

/// The sending side; the task ends when the store drops it.
pub(super) struct Ingester {
    queue: mpsc::Sender<Request>,
}

impl Ingester {
    pub(super) fn start(pool: PgPool, events: Arc<Events>) -> Ingester {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(pool, events, requests));
        Ingester { queue }
    }

    /// Records `delivery` and returns what it did once that is committed.
    pub(super) async fn ingest(
        &self,
        delivery: EncodedDelivery,
    ) -> Result<DeliveryOutcome, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Request { delivery, answer })
            .await
            .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

/// Why a batch was not committed.
enum Failure {
    /// The server refused a statement: one delivery may be at fault (a job
    /// id that exists already, say), so each is tried again alone.
    Refused(StoreError),
    /// Anything else (the connection, the commit): trying again would only
    /// make every caller wait longer, or record twice a batch whose commit
    /// went through unheard.
    Failed(StoreError),
}

async fn run(pool: PgPool, events: Arc<Events>, mut requests: mpsc::Receiver<Request>) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    // A delivery that did not fit in the previous batch: first in the next.
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match requests.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut locks = first.delivery.size;
        batch.push(first);
        while batch.len() < MAX_BATCH {
            let Ok(next) = requests.try_recv() else { break };
            if locks + next.delivery.size > MAX_LOCKS {
                carried = Some(next);
                break;
            }
            locks += next.delivery.size;
            batch.push(next);
        }
        let started = Instant::now();
        let deliveries: Vec<&EncodedDelivery> = batch.iter().map(|r| &r.delivery).collect();
        let recorded = record(&pool, &events, &deliveries).await;
        tracing::trace!(deliveries = batch.len(), took = ?started.elapsed(), "group commit");
        match recorded {
            Ok(outcomes) => {
                for (request, outcome) in batch.drain(..).zip(outcomes) {
                    // The caller may have gone away (client disconnected);
                    // the delivery stands either way.
                    let _ = request.answer.send(Ok(outcome));
                }
            }
            Err(Failure::Refused(err)) if batch.len() > 1 => {
                tracing::warn!(error = %err, deliveries = batch.len(),
                    "a batch of deliveries was refused; recording each alone");
                for request in batch.drain(..) {
                    let alone = record(&pool, &events, &[&request.delivery])
                        .await
                        .map_err(|(Failure::Refused(err) | Failure::Failed(err))| err)
                        .and_then(|outcomes| {
                            outcomes.into_iter().next().ok_or_else(|| {
                                StoreError::Database("a delivery was not recorded".into())
                            })
                        });
                    let _ = request.answer.send(alone);
                }
            }
            Err(Failure::Refused(err) | Failure::Failed(err)) => {
                for request in batch.drain(..) {
                    let _ = request.answer.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Records `batch` in one transaction, tells the other instances of the new
/// pending jobs in it, and commits.
async fn record(
    pool: &PgPool,
    events: &Events,
    batch: &[&EncodedDelivery],
) -> Result<Vec<DeliveryOutcome>, Failure> {
    let failed = |err: sqlx::Error| Failure::Failed(err.into());
    let mut tx = pool.begin().await.map_err(failed)?;
    let written = match deliveries::ingest(&mut tx, batch).await {
        Ok(outcomes) => {
            let mut hosts: Vec<String> = Vec::new();
            for host in outcomes.iter().flat_map(|o| &o.hosts_with_new_jobs) {
                if !hosts.contains(host) {
                    hosts.push(host.clone());
                }
            }
            match events.jobs_pending(&mut tx, &hosts).await {
                Ok(()) => Ok(outcomes),
                Err(err) => Err(Failure::Failed(err)),
            }
        }
        Err(err @ sqlx::Error::Database(_)) => Err(Failure::Refused(err.into())),
        Err(err) => Err(failed(err)),
    };
    match written {
        Ok(outcomes) => {
            tx.commit().await.map_err(failed)?;
            Ok(outcomes)
        }
        Err(failure) => {
            // Awaited, not left to the drop: until it runs, the batch's row
            // and advisory locks would hold up claims and other writers.
            let _ = tx.rollback().await;
            Err(failure)
        }
    }
}
