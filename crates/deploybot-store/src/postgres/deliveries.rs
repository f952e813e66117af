//! SQL for webhook deliveries.

use deploybot_wire::{Delivery, DeliveryVerdict};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::jobs::{self, EncodedJob};
use super::{LockSpace, from_ms, lock, lock_key, now_ms, opt_text, text};
use crate::{DeliveryOutcome, NewAudit, NewDelivery, StoreError};

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

/// Records a delivery and its jobs. Redeliveries of one id, and deliveries
/// that enqueue for the same app and host, are decided one after the other
/// across instances: the delivery's advisory lock, then each app-on-host lock
/// in a fixed order (so two deliveries never wait for each other in a cycle).
pub(super) async fn ingest(
    conn: &mut PgConnection,
    delivery: &NewDelivery,
    new_jobs: &[EncodedJob],
) -> Result<DeliveryOutcome, StoreError> {
    lock(
        conn,
        &[lock_key(LockSpace::Delivery, &[&delivery.delivery_id])],
    )
    .await?;
    let seen = sqlx::query(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM deliveries WHERE delivery_id = $1"
    ))
    .bind(text(&delivery.delivery_id))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = seen {
        let first = from_row(&row)?;
        return Ok(DeliveryOutcome {
            job_ids: first.job_ids,
            verdict: first.verdict,
            message: first.message,
            duplicate: true,
            hosts_with_new_jobs: Vec::new(),
        });
    }

    let mut keys: Vec<(i32, i32)> = new_jobs.iter().map(EncodedJob::lock_key).collect();
    keys.sort_unstable();
    keys.dedup();
    lock(conn, &keys).await?;

    let mut job_ids = Vec::with_capacity(new_jobs.len());
    let mut hosts_with_new_jobs = Vec::new();
    for job in new_jobs {
        let new = &job.job;
        if let Some(sha) = &new.sha
            && let Some(done) = jobs::webhook_job_for(conn, &new.app, &new.host, sha).await?
        {
            job_ids.push(done.id);
            continue;
        }
        let enqueued = jobs::enqueue_locked(conn, job).await?;
        if enqueued.created {
            hosts_with_new_jobs.push(enqueued.job.host.clone());
        }
        job_ids.push(enqueued.job.id);
    }
    sqlx::query(
        "INSERT INTO deliveries (delivery_id, event, repo, git_ref, sha, verdict, message, job_ids, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(text(&delivery.delivery_id))
    .bind(text(&delivery.event))
    .bind(opt_text(delivery.repo.as_deref()))
    .bind(opt_text(delivery.git_ref.as_deref()))
    .bind(opt_text(delivery.sha.as_deref()))
    .bind(delivery.verdict.as_str())
    .bind(text(&delivery.message))
    .bind(text(&serde_json::to_string(&job_ids)?))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    if !job_ids.is_empty() {
        // The audit trail of webhook deploys, in the same transaction.
        super::audit::record(
            conn,
            &NewAudit {
                actor: format!("webhook:{}", delivery.delivery_id),
                action: "deploy".to_owned(),
                target: format!(
                    "{}@{}: {} job(s)",
                    delivery.repo.as_deref().unwrap_or("?"),
                    delivery.sha.as_deref().unwrap_or("?"),
                    job_ids.len()
                ),
                address: delivery.address.clone(),
                result: "ok".to_owned(),
            },
        )
        .await?;
    }
    Ok(DeliveryOutcome {
        job_ids,
        verdict: delivery.verdict,
        message: delivery.message.clone(),
        duplicate: false,
        hosts_with_new_jobs,
    })
}

pub(super) async fn recent(
    conn: &mut PgConnection,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM deliveries ORDER BY seq DESC LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}
