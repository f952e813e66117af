//! SQL for webhook deliveries.

use deploybot_wire::{Delivery, DeliveryVerdict};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::jobs::EncodedJob;
use super::{from_ms, jobs, now_ms};
use crate::{DeliveryOutcome, NewAudit, NewDelivery, StoreError};

fn from_row(row: &Row) -> rusqlite::Result<Delivery> {
    let verdict: String = row.get(6)?;
    let job_ids: String = row.get(8)?;
    Ok(Delivery {
        delivery_id: row.get(0)?,
        event: row.get(1)?,
        repo: row.get(2)?,
        git_ref: row.get(3)?,
        sha: row.get(4)?,
        message: row.get(5)?,
        verdict: DeliveryVerdict::parse(&verdict).unwrap_or(DeliveryVerdict::NoMatch),
        received_at: from_ms(row.get(7)?),
        job_ids: serde_json::from_str(&job_ids).unwrap_or_default(),
    })
}

const COLUMNS: &str =
    "delivery_id, event, repo, git_ref, sha, message, verdict, received_at, job_ids";

pub(super) fn ingest(
    conn: &Connection,
    delivery: &NewDelivery,
    new_jobs: &[EncodedJob],
) -> Result<DeliveryOutcome, StoreError> {
    let seen = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries WHERE delivery_id = ?1"
        ))?
        .query_row([&delivery.delivery_id], from_row)
        .optional()?;
    if let Some(first) = seen {
        return Ok(DeliveryOutcome {
            job_ids: first.job_ids,
            verdict: first.verdict,
            message: first.message,
            duplicate: true,
            hosts_with_new_jobs: Vec::new(),
        });
    }

    let mut job_ids = Vec::with_capacity(new_jobs.len());
    let mut hosts_with_new_jobs = Vec::new();
    for job in new_jobs {
        let new = &job.job;
        if let Some(sha) = &new.sha
            && let Some(done) = jobs::webhook_job_for(conn, &new.app, &new.host, sha)?
        {
            job_ids.push(done.id);
            continue;
        }
        let enqueued = jobs::enqueue(conn, job)?;
        if enqueued.created {
            hosts_with_new_jobs.push(enqueued.job.host.clone());
        }
        job_ids.push(enqueued.job.id);
    }
    conn.prepare_cached(
        "INSERT INTO deliveries (delivery_id, event, repo, git_ref, sha, verdict, message, job_ids, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        delivery.delivery_id,
        delivery.event,
        delivery.repo,
        delivery.git_ref,
        delivery.sha,
        delivery.verdict.as_str(),
        delivery.message,
        serde_json::to_string(&job_ids)?,
        now_ms(),
    ])?;
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
        )?;
    }
    Ok(DeliveryOutcome {
        job_ids,
        verdict: delivery.verdict,
        message: delivery.message.clone(),
        duplicate: false,
        hosts_with_new_jobs,
    })
}

pub(super) fn recent(
    conn: &Connection,
    limit: u32,
    before: Option<&str>,
) -> Result<Vec<Delivery>, StoreError> {
    let deliveries = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries
             WHERE ?2 IS NULL OR seq < (SELECT seq FROM deliveries WHERE delivery_id = ?2)
             ORDER BY seq DESC LIMIT ?1"
        ))?
        .query_map(rusqlite::params![limit, before], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(deliveries)
}
