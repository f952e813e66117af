//! Webhook deliveries.

use deploybot_store::{DeliveryOutcome, NewDelivery, NewJob, StoreError};
use deploybot_wire::DeliveryVerdict;

use super::Queue;

impl Queue {
    /// Records a delivery with the jobs it asks for, in one transaction (a
    /// redelivery creates nothing; the store writes its audit entry). The
    /// outcome's message says what happened, to the sender.
    pub async fn record_delivery(
        &self,
        delivery: NewDelivery,
        jobs: Vec<NewJob>,
    ) -> Result<DeliveryOutcome, StoreError> {
        let sources: Vec<(String, String)> = jobs
            .iter()
            .map(|job| (job.app.clone(), job.host.clone()))
            .collect();
        let delivery_id = delivery.delivery_id.clone();
        let mut outcome = self.store.ingest_delivery(delivery, jobs).await?;
        self.metrics
            .webhook_deliveries
            .get_or_create(&crate::metrics::VerdictLabels {
                verdict: outcome.verdict.as_str().to_owned(),
            })
            .inc();
        for (app, host) in &sources {
            if outcome.hosts_with_new_jobs.contains(host) {
                self.metrics.job_created(app, "webhook");
            }
        }
        for host in &outcome.hosts_with_new_jobs {
            self.dispatch.job_enqueued(host);
        }
        if outcome.duplicate {
            outcome.message = format!(
                "delivery {delivery_id} was already received: {}",
                outcome.message
            );
        } else if outcome.verdict == DeliveryVerdict::Queued
            && outcome.hosts_with_new_jobs.is_empty()
        {
            outcome.message = "nothing new to deploy: this commit already has its jobs (deployed before, from another ref, or a replayed delivery)".to_owned();
        }
        Ok(outcome)
    }
}
