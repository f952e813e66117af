//! SQL for webhook deliveries.

use deploybot_wire::{Delivery, DeliveryVerdict};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::jobs::EncodedJob;
use super::{LockSpace, from_ms, lock_key, now_ms, opt_text, text};
use crate::{DeliveryOutcome, NewDelivery, StoreError};

macro_rules! delivery_columns {
    () => {
        "delivery_id, event, repo, git_ref, sha, message, verdict, received_at, job_ids"
    };
}

fn from_row(row: &PgRow) -> Result<Delivery, StoreError> {
    let verdict: String = row.try_get(6)?;
    let job_ids: String = row.try_get(8)?;
    Ok(Delivery {
        delivery_id: row.try_get(0)?,
        event: row.try_get(1)?,
        repo: row.try_get(2)?,
        git_ref: row.try_get(3)?,
        sha: row.try_get(4)?,
        message: row.try_get(5)?,
        verdict: DeliveryVerdict::parse(&verdict).unwrap_or(DeliveryVerdict::NoMatch),
        received_at: from_ms(row.try_get(7)?),
        job_ids: serde_json::from_str(&job_ids).unwrap_or_default(),
    })
}

/// A delivery to record, encoded by its caller's task, so the writer spends
/// its time on SQL only.
pub(super) struct EncodedDelivery {
    /// The delivery and its jobs, as `deploybot_ingest_v1` reads them.
    json: String,
    /// The advisory locks it needs (see [`ingest`]).
    locks: Vec<(i32, i32)>,
    verdict: DeliveryVerdict,
    message: String,
    /// How many locks and rows it costs, to bound a batch.
    pub(super) size: usize,
}

impl EncodedDelivery {
    pub(super) fn new(delivery: &NewDelivery, jobs: &[EncodedJob]) -> Result<Self, StoreError> {
        let mut locks = vec![lock_key(LockSpace::Delivery, &[&delivery.delivery_id])];
        locks.extend(jobs.iter().map(EncodedJob::lock_key));
        let json = serde_json::json!({
            "id": text(&delivery.delivery_id),
            "event": text(&delivery.event),
            "repo": opt_text(delivery.repo.as_deref()),
            "git_ref": opt_text(delivery.git_ref.as_deref()),
            "sha": opt_text(delivery.sha.as_deref()),
            "verdict": delivery.verdict.as_str(),
            "message": text(&delivery.message),
            "address": opt_text(delivery.address.as_deref()),
            "jobs": jobs.iter().map(EncodedJob::to_json).collect::<Vec<_>>(),
        });
        Ok(EncodedDelivery {
            json: serde_json::to_string(&json)?,
            size: locks.len(),
            locks,
            verdict: delivery.verdict,
            message: delivery.message.clone(),
        })
    }
}

/// Records `batch` in the transaction `conn` is in, in order, each delivery
/// exactly as if it came alone (see `migrations/0003_ingest.sql`), in one
/// statement. The error is sqlx's, so that the caller can tell a refused
/// statement from a lost connection.
///
/// Redeliveries of one id, and deliveries that enqueue for the same app and
/// host, are decided one after the other across instances: the statement
/// first takes the advisory locks of every delivery id and every app on a
/// host in the batch, sorted (delivery ids first, as when they were taken
/// one delivery at a time), so two writers never wait for each other in a
/// cycle.
pub(super) async fn ingest(
    conn: &mut PgConnection,
    batch: &[&EncodedDelivery],
) -> Result<Vec<DeliveryOutcome>, sqlx::Error> {
    let mut locks: Vec<(i32, i32)> = batch.iter().flat_map(|d| d.locks.iter().copied()).collect();
    locks.sort_unstable();
    locks.dedup();
    let (spaces, keys): (Vec<i32>, Vec<i32>) = locks.into_iter().unzip();
    let mut json = String::with_capacity(batch.iter().map(|d| d.json.len() + 1).sum::<usize>() + 1);
    json.push('[');
    for (i, delivery) in batch.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&delivery.json);
    }
    json.push(']');
    let rows = sqlx::query(
        "SELECT duplicate, verdict, message, job_ids, new_hosts
         FROM deploybot_ingest_v1($1, $2, $3::jsonb, $4) ORDER BY ordinal",
    )
    .bind(spaces)
    .bind(keys)
    .bind(json)
    .bind(now_ms())
    .fetch_all(conn)
    .await?;
    if rows.len() != batch.len() {
        return Err(sqlx::Error::Protocol(format!(
            "recording {} deliveries answered {} rows",
            batch.len(),
            rows.len()
        )));
    }
    rows.iter()
        .zip(batch)
        .map(|(row, delivery)| {
            let duplicate: bool = row.try_get(0)?;
            let job_ids: String = row.try_get(3)?;
            let job_ids = serde_json::from_str(&job_ids).unwrap_or_default();
            Ok(if duplicate {
                // As the first reception recorded it.
                let verdict: String = row.try_get(1)?;
                DeliveryOutcome {
                    job_ids,
                    verdict: DeliveryVerdict::parse(&verdict).unwrap_or(DeliveryVerdict::NoMatch),
                    message: row.try_get(2)?,
                    duplicate: true,
                    hosts_with_new_jobs: Vec::new(),
                }
            } else {
                DeliveryOutcome {
                    job_ids,
                    verdict: delivery.verdict,
                    message: delivery.message.clone(),
                    duplicate: false,
                    hosts_with_new_jobs: row.try_get(4)?,
                }
            })
        })
        .collect()
}

pub(super) async fn recent(
    conn: &mut PgConnection,
    limit: u32,
    before: Option<&str>,
) -> Result<Vec<Delivery>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM deliveries
          WHERE $2::text IS NULL
             OR seq < (SELECT seq FROM deliveries WHERE delivery_id = $2)
          ORDER BY seq DESC LIMIT $1"
    ))
    .bind(i64::from(limit))
    .bind(before.map(text))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}
